'use strict';
// Charts of the studies (log-scale error axis), drawn to SVG with the benchmark's
// dependency-free chart writer.
const fs = require('node:fs');
const { renderSvg } = require('../../bench/lib/chart');

/**
 * points: [{ x, color, dash, panel, mean, lo, hi }]. One panel per distinct `panel`
 * (side by side, sharing the axes); one line per (color, dash), mean with a band from
 * lo to hi. Dash values in descending order get solid, then dashed lines ('orthogonal'
 * solid, 'i.i.d.' dashed: say so in the subtitle, the legend shows the colors).
 */
function errorChartSpec(points, { title, subtitle, xTitle, yTitle }) {
  const xs = [...new Set(points.map((p) => p.x))].sort((a, b) => a - b);
  const dashes = [...new Set(points.map((p) => p.dash))].sort().reverse();
  const panels = new Map();
  for (const p of points) {
    if (!panels.has(p.panel)) panels.set(p.panel, { title: p.panel, series: new Map() });
    const series = panels.get(p.panel).series;
    const name = `${p.color}, ${p.dash}`;
    if (!series.has(name)) series.set(name, { name, color: p.color, dash: dashes.indexOf(p.dash), points: [] });
    series.get(name).points.push({ x: p.x, y: p.mean, lo: p.lo, hi: p.hi });
  }
  return {
    title,
    subtitle: subtitle ?? '',
    x: { title: xTitle, scale: 'log', ticks: xs },
    y: { title: yTitle, scale: 'log' },
    width: 300,
    height: 260,
    panels: [...panels.values()].map((panel) => ({ title: panel.title, series: [...panel.series.values()] })),
  };
}

/** Mean line with a band of mean ± sd over seeds (the lower edge kept positive for the log axis). */
function bandPoint(cell, x, color, dash, panel) {
  return { x, color, dash, panel, mean: cell.mean, lo: Math.max(cell.mean - cell.sd, cell.min, 1e-12), hi: cell.mean + cell.sd };
}

/** Writes the chart to `file`: { file, notes } (notes: points left out), or { skipped }. */
function writeChart(chart, file) {
  const { svg, notes, plotted } = renderSvg(chart);
  if (plotted === 0) return { skipped: `nothing to plot${notes.length ? ` (${notes.join('; ')})` : ''}` };
  fs.writeFileSync(file, svg);
  return { file, notes };
}

module.exports = { errorChartSpec, bandPoint, writeChart };
