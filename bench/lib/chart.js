'use strict';
// The chart: run time against L, log-log, one line per implementation and mode,
// rendered to SVG headlessly with vega-lite -> vega -> View.toSVG(). vega and
// vega-lite are optional (devDependencies): without them the chart is skipped.
const fs = require('node:fs');
const { resolveFrom } = require('./optional');

const HOW_TO_GET =
  'install vega and vega-lite to get it (npm install --no-save vega vega-lite; they are devDependencies of the repository)';

/**
 * series: [{ name, mode?, points: [{ L, ms, estimated? }] }] (estimated points are
 * drawn as separate crosses, not joined). Returns a vega-lite spec (pure data,
 * testable without vega).
 */
function chartSpec(series, { title, subtitle } = {}) {
  const values = [];
  for (const s of series) {
    for (const p of s.points) {
      if (p.ms > 0 && p.L > 0) values.push({ series: s.name, mode: s.mode ?? '', L: p.L, ms: p.ms, estimated: Boolean(p.estimated) });
    }
  }
  // Ticks at the measured lengths (log axes otherwise pick odd values like 2,500).
  const lengths = [...new Set(values.map((v) => v.L))].sort((a, b) => a - b);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title ?? 'Attention time against sequence length', subtitle: subtitle ?? '' },
    width: 640,
    height: 400,
    background: 'white',
    data: { values },
    encoding: {
      x: {
        field: 'L',
        type: 'quantitative',
        title: 'sequence length L',
        scale: { type: 'log', base: 2 },
        axis: lengths.length <= 16 ? { values: lengths, format: 'd', labelOverlap: true } : { tickCount: 12, labelOverlap: true },
      },
      y: { field: 'ms', type: 'quantitative', title: 'time per call (ms, median)', scale: { type: 'log' } },
      color: { field: 'series', type: 'nominal', title: null, legend: { orient: 'top-left', labelLimit: 400 } },
      strokeDash: { field: 'mode', type: 'nominal', title: null, legend: null },
    },
    layer: [
      { mark: { type: 'line', point: { filled: true, size: 40 } }, transform: [{ filter: '!datum.estimated' }] },
      {
        mark: { type: 'point', shape: 'cross', size: 60 },
        transform: [{ filter: 'datum.estimated' }],
      },
    ],
  };
}

async function importOptional(name) {
  const file = resolveFrom(name);
  if (!file) return null;
  const url = require('node:url').pathToFileURL(file).href;
  return import(url);
}

/** Renders the spec to an SVG string, or { skipped } when vega is missing. */
async function renderSvg(spec) {
  let vega;
  let vegaLite;
  try {
    vega = await importOptional('vega');
    vegaLite = await importOptional('vega-lite');
  } catch (e) {
    return { skipped: `vega could not be loaded (${e.message}); ${HOW_TO_GET}` };
  }
  if (!vega || !vegaLite) return { skipped: `vega and vega-lite are not installed; ${HOW_TO_GET}` };
  const compile = vegaLite.compile ?? (vegaLite.default && vegaLite.default.compile);
  const View = vega.View ?? (vega.default && vega.default.View);
  const parse = vega.parse ?? (vega.default && vega.default.parse);
  const compiled = compile(spec).spec;
  const view = new View(parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return { svg };
}

/** Writes the chart to `file`; returns { file } or { skipped }. */
async function writeChart(series, file, labels) {
  const spec = chartSpec(series, labels);
  if (spec.data.values.length === 0) return { skipped: 'no timings to plot' };
  const r = await renderSvg(spec);
  if (r.skipped) return r;
  fs.writeFileSync(file, r.svg);
  return { file };
}

module.exports = { chartSpec, renderSvg, writeChart, HOW_TO_GET };
