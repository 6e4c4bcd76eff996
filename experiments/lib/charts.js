'use strict';
// Vega-lite charts of the studies (log-scale error axis), rendered to SVG with the
// benchmark's headless renderer (vega and vega-lite are devDependencies).
const fs = require('node:fs');
const { renderSvg } = require('../../bench/lib/chart');

/**
 * points: [{ x, series, panel, mean, lo, hi }]. One panel per distinct `panel`
 * (side by side), mean lines with a band from lo to hi.
 */
function errorChartSpec(points, { title, subtitle, xTitle, yTitle }) {
  const xs = [...new Set(points.map((p) => p.x))].sort((a, b) => a - b);
  const x = { field: 'x', type: 'quantitative', title: xTitle, scale: { type: 'log', base: 2 }, axis: { values: xs, format: 'd' } };
  const y = { field: 'mean', type: 'quantitative', title: yTitle, scale: { type: 'log' } };
  const color = { field: 'series', type: 'nominal', title: null, legend: { orient: 'bottom', columns: 3, labelLimit: 300 } };
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
        { mark: { type: 'area', opacity: 0.15 }, encoding: { x, y: { ...y, field: 'lo' }, y2: { field: 'hi' }, color } },
        { mark: { type: 'line', point: { filled: true, size: 30 } }, encoding: { x, y, color } },
      ],
    },
  };
}

/** Mean line with a band of mean ± sd over seeds (the lower edge kept positive for the log axis). */
function bandPoint(cell, x, series, panel) {
  return { x, series, panel, mean: cell.mean, lo: Math.max(cell.mean - cell.sd, cell.min, 1e-12), hi: cell.mean + cell.sd };
}

async function writeChart(spec, file) {
  const r = await renderSvg(spec);
  if (r.skipped) return r;
  fs.writeFileSync(file, r.svg);
  return { file };
}

module.exports = { errorChartSpec, bandPoint, writeChart };
