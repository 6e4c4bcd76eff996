'use strict';
// Vega-lite charts of the studies (log-scale error axis), rendered to SVG with the
// benchmark's headless renderer (vega and vega-lite are devDependencies).
const fs = require('node:fs');
const { renderSvg } = require('../../bench/lib/chart');

/**
 * points: [{ x, color, dash, panel, mean, lo, hi }]. One panel per distinct `panel`
 * (side by side); one line per (color, dash), mean with a band from lo to hi.
 */
function errorChartSpec(points, { title, subtitle, xTitle, yTitle }) {
  const xs = [...new Set(points.map((p) => p.x))].sort((a, b) => a - b);
  const x = { field: 'x', type: 'quantitative', title: xTitle, scale: { type: 'log', base: 2 }, axis: { values: xs, format: 'd' } };
  const y = { field: 'mean', type: 'quantitative', title: yTitle, scale: { type: 'log' } };
  const legend = { orient: 'bottom', labelLimit: 300, symbolType: 'stroke', symbolStrokeWidth: 2.5, symbolOpacity: 1, symbolSize: 300 };
  const color = { field: 'color', type: 'nominal', title: null, legend };
  // descending: 'orthogonal' gets the solid line, 'i.i.d.' the dashed one (said in the subtitle:
  // rsvg and browsers draw vega's dash legend symbols inconsistently)
  const strokeDash = { field: 'dash', type: 'nominal', title: null, sort: 'descending', legend: null };
  const detail = { field: 'dash', type: 'nominal' };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title, subtitle: subtitle ?? '' },
    background: 'white',
    data: { values: points },
    facet: { column: { field: 'panel', type: 'nominal', title: null } },
    spec: {
      width: 300,
      height: 260,
      layer: [
        { mark: { type: 'area', opacity: 0.15 }, encoding: { x, y: { ...y, field: 'lo' }, y2: { field: 'hi' }, color, detail } },
        { mark: { type: 'line', point: { filled: true, size: 30 } }, encoding: { x, y, color, strokeDash } },
      ],
    },
  };
}

/** Mean line with a band of mean ± sd over seeds (the lower edge kept positive for the log axis). */
function bandPoint(cell, x, color, dash, panel) {
  return { x, color, dash, panel, mean: cell.mean, lo: Math.max(cell.mean - cell.sd, cell.min, 1e-12), hi: cell.mean + cell.sd };
}

async function writeChart(spec, file) {
  const r = await renderSvg(spec);
  if (r.skipped) return r;
  fs.writeFileSync(file, r.svg);
  return { file };
}

module.exports = { errorChartSpec, bandPoint, writeChart };
