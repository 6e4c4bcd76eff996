'use strict';
// Line charts written straight to SVG, with no dependency, so that the benchmark draws
// its chart wherever it is installed. Log or linear axes (log axes: ticks at the
// decades, with 2 and 5 labelled too when the range is short), one line with markers
// per series, an optional band (lo … hi) under a line, unjoined crosses for estimated
// points, a legend, and panels side by side sharing their axes. A point an axis cannot
// show (missing, infinite, or not positive on a log axis) is left out, breaks its line,
// and is listed in a note under the chart: no NaN ever reaches the SVG.
const fs = require('node:fs');

// The Tableau 10 palette, and dash patterns for a second, third and fourth mode.
const PALETTE = ['#4c78a8', '#f58518', '#e45756', '#72b7b2', '#54a24b', '#eeca3b', '#b279a2', '#ff9da6', '#9d755d', '#bab0ac'];
const DASHES = [null, '7 4', '2 3', '8 3 2 3'];
const FONT = 'Helvetica, Arial, sans-serif';
const SIZE = { title: 15, subtitle: 11, label: 11, tick: 10, note: 10 };

/** Text for SVG content and attribute values (characters XML 1.0 forbids are dropped). */
function escapeXml(value) {
  return String(value)
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

/** A coordinate: two decimals at most; a non-finite one is a bug here, not a drawing. */
function coord(v) {
  if (!Number.isFinite(v)) throw new Error(`chart: non-finite coordinate ${v}`);
  return String(Math.round(v * 100) / 100);
}

/** Approximate width of a text in the chart's sans-serif font. */
function textWidth(text, size) {
  return String(text).length * size * 0.58;
}

/** A tick label: plain decimals from 0.001 to 999 999, else 1e7-style. */
function formatTick(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e-3 && a < 1e6) return String(Number(v.toPrecision(6)));
  return v.toExponential().replace(/\.?0+e/, 'e').replace('e+', 'e');
}

/** What is wrong with a value for an axis, or null when it can be drawn. */
function problem(value, scale) {
  if (value === null || value === undefined || Number.isNaN(value)) return 'missing';
  if (typeof value !== 'number') return `not a number (${String(value)})`;
  if (!Number.isFinite(value)) return 'infinite';
  if (scale === 'log' && value <= 0) return `${value}, not positive on a log axis`;
  return null;
}

/** 1, 2 or 5 times a power of ten, near span / count. */
function niceStep(span, count) {
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const m = raw / power;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * power;
}

/**
 * A scale over [min, max] of the values to show: domain, map to [0, 1], and ticks
 * ({ value, label } for labelled ones, { value } for minor marks).
 */
function makeScale(axis, min, max) {
  const scale = axis.scale === 'log' ? 'log' : 'linear';
  const explicit = Array.isArray(axis.ticks) ? axis.ticks.filter((t) => problem(t, scale) === null) : null;
  if (explicit && explicit.length) {
    min = Math.min(min, ...explicit);
    max = Math.max(max, ...explicit);
  }
  if (scale === 'log') {
    let lo = Math.log10(min);
    let hi = Math.log10(max);
    if (hi - lo < 1e-9) {
      lo -= 0.5; // one point, or all equal: a decade around it
      hi += 0.5;
    }
    const pad = 0.04 * (hi - lo);
    lo -= pad;
    hi += pad;
    const inside = (v) => Math.log10(v) >= lo - 1e-9 && Math.log10(v) <= hi + 1e-9;
    const marks = (multipliers) => {
      const out = [];
      for (let k = Math.floor(lo); k <= Math.ceil(hi); k++) {
        for (const m of multipliers) {
          const v = Number((m * 10 ** k).toPrecision(12));
          if (inside(v)) out.push(v);
        }
      }
      return out;
    };
    let labelled;
    if (explicit && explicit.length) {
      labelled = [...new Set(explicit)].sort((a, b) => a - b);
    } else {
      labelled = marks([1]);
      if (labelled.length < 3) labelled = marks([1, 2, 5]);
      if (labelled.length < 3) labelled = marks([1, 2, 3, 4, 5, 6, 7, 8, 9]);
      if (labelled.length < 3) {
        // About a factor of two or less: evenly stepped values, when they label more.
        const a = 10 ** lo;
        const b = 10 ** hi;
        const step = niceStep(b - a, 4);
        const stepped = [];
        for (let i = Math.ceil(a / step); i * step <= b; i++) stepped.push(Number((i * step).toPrecision(12)));
        if (stepped.length > labelled.length) labelled = stepped;
      }
    }
    const minor = explicit && explicit.length ? [] : marks([1, 2, 3, 4, 5, 6, 7, 8, 9]).filter((v) => !labelled.includes(v));
    return {
      scale,
      map: (v) => (Math.log10(v) - lo) / (hi - lo),
      ticks: [...labelled.map((value) => ({ value, label: formatTick(value) })), ...(minor.length <= 60 ? minor.map((value) => ({ value })) : [])],
    };
  }
  let lo = min;
  let hi = max;
  if (hi - lo < 1e-12 * Math.max(1, Math.abs(lo))) {
    const half = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= half;
    hi += half;
  }
  const step = niceStep(hi - lo, 6);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  let labelled;
  if (explicit && explicit.length) {
    labelled = [...new Set(explicit)].sort((a, b) => a - b);
  } else {
    labelled = [];
    for (let i = 0; lo + i * step <= hi + step * 1e-9; i++) labelled.push(Number((lo + i * step).toPrecision(12)));
  }
  return { scale, map: (v) => (v - lo) / (hi - lo), ticks: labelled.map((value) => ({ value, label: formatTick(value) })) };
}

/**
 * The drawable part of one series: its points sorted by x in runs (a point left out
 * breaks the line), the band in runs of points with a valid lo and hi, and what was
 * left out.
 */
function prepareSeries(series, xKind, yKind) {
  const left = [];
  const points = [];
  for (const p of series.points ?? []) {
    const px = problem(p.x, xKind);
    if (px) {
      left.push(`x = ${px}`);
      continue;
    }
    points.push(p);
  }
  points.sort((a, b) => a.x - b.x);
  const runs = [[]];
  const bandRuns = [[]];
  let bandLeft = 0;
  for (const p of points) {
    const py = problem(p.y, yKind);
    if (py) {
      left.push(`x = ${formatTick(p.x)}: y = ${py}`);
      if (runs[runs.length - 1].length) runs.push([]);
      if (bandRuns[bandRuns.length - 1].length) bandRuns.push([]);
      continue;
    }
    runs[runs.length - 1].push(p);
    if (p.lo === undefined && p.hi === undefined) continue;
    if (problem(p.lo, yKind) || problem(p.hi, yKind) || p.lo > p.hi) {
      bandLeft++;
      if (bandRuns[bandRuns.length - 1].length) bandRuns.push([]);
      continue;
    }
    bandRuns[bandRuns.length - 1].push(p);
  }
  const notes = [];
  if (left.length) notes.push(`"${series.name}": left out ${left.length === 1 ? 'a point' : `${left.length} points`} (${left.join('; ')})`);
  if (bandLeft) notes.push(`"${series.name}": no band at ${bandLeft} point${bandLeft === 1 ? '' : 's'} (lo or hi missing, out of order or not drawable)`);
  return { runs: runs.filter((r) => r.length), bands: bandRuns.filter((r) => r.length), notes };
}

/**
 * One axis's ticks: a labelled tick gets a grid line, a 5 px tick and its label; the
 * others a 3 px tick. at maps a tick value to its position along the axis.
 */
function axisTicks(ticks, at, grid, axis, { gridLine, tick, label }) {
  for (const t of ticks) {
    const p = at(t.value);
    if (t.label !== undefined) {
      grid.push(gridLine(p));
      axis.push(tick(p, 5), label(p, t.label));
    } else {
      axis.push(tick(p, 3));
    }
  }
}

/**
 * The chart as SVG. `chart`:
 *   { title, subtitle?, x: { title, scale: 'log' | 'linear', ticks? }, y: { … },
 *     width?, height? (of each panel's plotting area, default 640 x 400),
 *     panels: [{ title?, series }] or series (one panel) }
 * with series [{ name, color? (legend entry, default name), dash? (0 … 3),
 *   line? (default true), marker? ('circle' default, 'cross'), points: [{ x, y, lo?, hi? }] }].
 * Returns { svg, notes (what was left out), plotted (points drawn) }.
 */
function renderSvg(chart) {
  const panels = chart.panels ?? [{ series: chart.series ?? [] }];
  const xAxis = chart.x ?? {};
  const yAxis = chart.y ?? {};
  const xScaleName = xAxis.scale === 'log' ? 'log' : 'linear';
  const yScaleName = yAxis.scale === 'log' ? 'log' : 'linear';
  const width = chart.width ?? 640;
  const height = chart.height ?? 400;

  const notes = [];
  const prepared = panels.map((panel) =>
    (panel.series ?? []).map((s) => {
      const p = prepareSeries(s, xScaleName, yScaleName);
      notes.push(...p.notes);
      return { series: s, ...p };
    }),
  );
  const xs = [];
  const ys = [];
  for (const list of prepared) {
    for (const s of list) {
      for (const run of s.runs) for (const p of run) xs.push(p.x), ys.push(p.y);
      for (const run of s.bands) for (const p of run) ys.push(p.lo, p.hi);
    }
  }
  const plotted = prepared.reduce((n, list) => n + list.reduce((m, s) => m + s.runs.reduce((k, r) => k + r.length, 0), 0), 0);
  const range = (values, scale) => {
    if (!values.length) return scale === 'log' ? [1, 10] : [0, 1];
    return values.reduce(([lo, hi], v) => [Math.min(lo, v), Math.max(hi, v)], [Infinity, -Infinity]);
  };
  const xScale = makeScale(xAxis, ...range(xs, xScaleName));
  const yScale = makeScale(yAxis, ...range(ys, yScaleName));

  // Legend: one entry per color key, in order of appearance.
  const entries = new Map();
  for (const list of prepared) {
    for (const { series } of list) {
      const key = series.color ?? series.name;
      const dash = series.dash ?? 0;
      const line = series.line !== false;
      const marker = series.marker === 'cross' ? 'cross' : 'circle';
      const e = entries.get(key);
      if (!e) entries.set(key, { key, color: PALETTE[entries.size % PALETTE.length], dash, line, marker });
      else {
        if (e.dash !== dash) e.dash = 0; // mixed: solid in the legend (the subtitle should say which is which)
        e.line = e.line || line;
        if (line) e.marker = marker;
      }
    }
  }

  // Layout.
  const yLabels = yScale.ticks.filter((t) => t.label !== undefined).map((t) => t.label);
  const yLabelWidth = Math.max(0, ...yLabels.map((l) => textWidth(l, SIZE.tick)));
  const left = 12 + (yAxis.title ? SIZE.label + 10 : 0) + yLabelWidth + 8;
  const gap = yLabelWidth + 28;
  const right = 24;
  const plotsWidth = panels.length * width + (panels.length - 1) * gap;
  const headWidth = Math.max(chart.title ? textWidth(chart.title, SIZE.title) * 1.05 : 0, chart.subtitle ? textWidth(chart.subtitle, SIZE.subtitle) : 0);
  const totalWidth = left + Math.max(plotsWidth, headWidth) + right;
  let y = 14;
  const head = [];
  if (chart.title) {
    y += SIZE.title;
    head.push(`<text class="title" x="${coord(left)}" y="${coord(y)}" font-size="${SIZE.title}" font-weight="bold">${escapeXml(chart.title)}</text>`);
    y += 6;
  }
  if (chart.subtitle) {
    y += SIZE.subtitle;
    head.push(`<text class="subtitle" x="${coord(left)}" y="${coord(y)}" font-size="${SIZE.subtitle}" fill="#555">${escapeXml(chart.subtitle)}</text>`);
    y += 6;
  }
  // Legend rows, wrapped to the chart's width.
  const legend = [];
  if (entries.size) {
    y += 8;
    let lx = left;
    let row = 0;
    for (const e of entries.values()) {
      const w = 26 + textWidth(e.key, SIZE.label) + 18;
      if (lx > left && lx + w > left + plotsWidth) {
        lx = left;
        row++;
      }
      const ly = y + row * 18 + 4;
      const parts = [];
      if (e.line) parts.push(`<line x1="${coord(lx)}" y1="${coord(ly)}" x2="${coord(lx + 20)}" y2="${coord(ly)}" stroke="${e.color}" stroke-width="2"${dashAttr(e.dash)}/>`);
      parts.push(marker(e.marker, lx + 10, ly, e.color));
      parts.push(`<text x="${coord(lx + 26)}" y="${coord(ly + 4)}" font-size="${SIZE.label}">${escapeXml(e.key)}</text>`);
      legend.push(`<g class="legend-entry" data-series="${escapeXml(e.key)}">${parts.join('')}</g>`);
      lx += w;
    }
    y += (row + 1) * 18 + 4;
  }
  const panelTitles = panels.some((p) => p.title);
  if (panelTitles) y += SIZE.label + 6;
  const top = y + 8;
  const bottomOfPlots = top + height;
  let bottom = bottomOfPlots + 8 + SIZE.tick + 6;
  if (xAxis.title) bottom += SIZE.label + 8;
  const noteTop = bottom + 6;
  const noteLines = notes.flatMap((n) => wrap(`Note: ${n}`, Math.max(40, Math.floor((totalWidth - left - right) / (SIZE.note * 0.58)))));
  const totalHeight = noteTop + noteLines.length * (SIZE.note + 5) + 10;

  const body = [];
  panels.forEach((panel, i) => {
    const px = left + i * (width + gap);
    const X = (v) => px + xScale.map(v) * width;
    const Y = (v) => top + (1 - yScale.map(v)) * height;
    const g = [];
    if (panel.title) {
      g.push(`<text class="panel-title" x="${coord(px + width / 2)}" y="${coord(top - 8)}" font-size="${SIZE.label}" font-weight="bold" text-anchor="middle">${escapeXml(panel.title)}</text>`);
    }
    // Grid and ticks.
    const grid = [];
    const axisX = [];
    const axisY = [];
    axisTicks(xScale.ticks, X, grid, axisX, {
      gridLine: (tx) => `<line x1="${coord(tx)}" y1="${coord(top)}" x2="${coord(tx)}" y2="${coord(bottomOfPlots)}"/>`,
      tick: (tx, len) => `<line x1="${coord(tx)}" y1="${coord(bottomOfPlots)}" x2="${coord(tx)}" y2="${coord(bottomOfPlots + len)}"/>`,
      label: (tx, text) => `<text x="${coord(tx)}" y="${coord(bottomOfPlots + 8 + SIZE.tick)}" text-anchor="middle" stroke="none" fill="#333">${escapeXml(text)}</text>`,
    });
    axisTicks(yScale.ticks, Y, grid, axisY, {
      gridLine: (ty) => `<line x1="${coord(px)}" y1="${coord(ty)}" x2="${coord(px + width)}" y2="${coord(ty)}"/>`,
      tick: (ty, len) => `<line x1="${coord(px - len)}" y1="${coord(ty)}" x2="${coord(px)}" y2="${coord(ty)}"/>`,
      label: (ty, text) => `<text x="${coord(px - 8)}" y="${coord(ty + SIZE.tick / 3)}" text-anchor="end" stroke="none" fill="#333">${escapeXml(text)}</text>`,
    });
    g.push(`<g class="grid" stroke="#e6e6e6">${grid.join('')}</g>`);
    g.push(`<rect class="frame" x="${coord(px)}" y="${coord(top)}" width="${coord(width)}" height="${coord(height)}" fill="none" stroke="#999"/>`);
    g.push(`<g class="axis x" stroke="#999" font-size="${SIZE.tick}">${axisX.join('')}</g>`);
    g.push(`<g class="axis y" stroke="#999" font-size="${SIZE.tick}">${axisY.join('')}</g>`);
    if (xAxis.title) {
      g.push(`<text class="axis-title x" x="${coord(px + width / 2)}" y="${coord(bottomOfPlots + 8 + SIZE.tick + 8 + SIZE.label)}" font-size="${SIZE.label}" text-anchor="middle">${escapeXml(xAxis.title)}</text>`);
    }
    if (yAxis.title && i === 0) {
      const tx = 12 + SIZE.label;
      const ty = top + height / 2;
      g.push(`<text class="axis-title y" x="${coord(tx)}" y="${coord(ty)}" font-size="${SIZE.label}" text-anchor="middle" transform="rotate(-90 ${coord(tx)} ${coord(ty)})">${escapeXml(yAxis.title)}</text>`);
    }
    // Series: bands first, then lines and markers.
    for (const s of prepared[i]) {
      const e = entries.get(s.series.color ?? s.series.name);
      const parts = [];
      for (const run of s.bands) {
        if (run.length < 2) continue;
        const upper = run.map((p) => `${coord(X(p.x))},${coord(Y(p.hi))}`);
        const lower = run.slice().reverse().map((p) => `${coord(X(p.x))},${coord(Y(p.lo))}`);
        parts.push(`<path class="band" d="M${upper.join('L')}L${lower.join('L')}Z" fill="${e.color}" fill-opacity="0.15" stroke="none"/>`);
      }
      if (s.series.line !== false) {
        const d = s.runs
          .filter((run) => run.length >= 2)
          .map((run) => `M${run.map((p) => `${coord(X(p.x))},${coord(Y(p.y))}`).join('L')}`)
          .join('');
        if (d) parts.push(`<path class="line" d="${d}" fill="none" stroke="${e.color}" stroke-width="2"${dashAttr(s.series.dash ?? 0)}/>`);
      }
      const kind = s.series.marker === 'cross' ? 'cross' : 'circle';
      const markers = s.runs.flat().map((p) => marker(kind, X(p.x), Y(p.y), e.color, p));
      if (markers.length) parts.push(`<g class="markers">${markers.join('')}</g>`);
      g.push(`<g class="series" data-series="${escapeXml(s.series.name)}">${parts.join('')}</g>`);
    }
    body.push(`<g class="panel">${g.join('')}</g>`);
  });
  const foot = noteLines.map(
    (line, i) => `<text class="note" x="${coord(left)}" y="${coord(noteTop + (i + 1) * (SIZE.note + 5) - 5)}" font-size="${SIZE.note}" fill="#555">${escapeXml(line)}</text>`,
  );
  const W = coord(totalWidth);
  const H = coord(totalHeight);
  const svg = [
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}">`,
    `<rect class="background" width="${W}" height="${H}" fill="white"/>`,
    ...head,
    `<g class="legend">${legend.join('')}</g>`,
    ...body,
    ...foot,
    '</svg>',
    '',
  ].join('\n');
  return { svg, notes, plotted };
}

/** `text` in lines of at most `width` characters, broken at spaces (a longer word keeps its line). */
function wrap(text, width) {
  const lines = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

function dashAttr(dash) {
  const pattern = DASHES[Math.abs(Math.trunc(dash)) % DASHES.length];
  return pattern ? ` stroke-dasharray="${pattern}"` : '';
}

/** A point marker; with `point`, its values in a tooltip. */
function marker(kind, x, y, color, point) {
  const title = point ? `<title>${escapeXml(`${formatTick(point.x)}, ${formatTick(point.y)}`)}</title>` : '';
  if (kind === 'cross') {
    const r = 4.5;
    const d = `M${coord(x - r)},${coord(y - r)}L${coord(x + r)},${coord(y + r)}M${coord(x - r)},${coord(y + r)}L${coord(x + r)},${coord(y - r)}`;
    return `<path class="marker cross" d="${d}" stroke="${color}" stroke-width="2" fill="none">${title}</path>`;
  }
  return `<circle class="marker" cx="${coord(x)}" cy="${coord(y)}" r="3.5" fill="${color}">${title}</circle>`;
}

/**
 * The benchmark's chart: run time against L, log-log, one line per implementation and
 * mode (the first mode solid, the next dashed). series: [{ name, mode?, points: [{ L,
 * ms, estimated? }] }]; estimated points are drawn as crosses, not joined. Returns the
 * chart for {@link renderSvg} (pure data).
 */
function chartSpec(series, { title, subtitle } = {}) {
  const modes = [...new Set(series.map((s) => s.mode ?? ''))];
  const out = [];
  for (const s of series) {
    const dash = Math.max(0, modes.indexOf(s.mode ?? ''));
    const measured = s.points.filter((p) => !p.estimated).map((p) => ({ x: p.L, y: p.ms }));
    const estimated = s.points.filter((p) => p.estimated).map((p) => ({ x: p.L, y: p.ms }));
    if (measured.length) out.push({ name: s.name, dash, points: measured });
    if (estimated.length) out.push({ name: s.name, dash, line: false, marker: 'cross', points: estimated });
  }
  return {
    title: title ?? 'Attention time against sequence length',
    subtitle: subtitle ?? '',
    x: { title: 'sequence length L', scale: 'log' },
    y: { title: 'time per call (ms, median)', scale: 'log' },
    panels: [{ series: out }],
  };
}

/** Writes the chart to `file`: { file, notes } (notes: points left out), or { skipped }. */
function writeChart(series, file, labels) {
  const { svg, notes, plotted } = renderSvg(chartSpec(series, labels));
  if (plotted === 0) return { skipped: `no timings to plot${notes.length ? ` (${notes.join('; ')})` : ''}` };
  fs.writeFileSync(file, svg);
  return { file, notes };
}

module.exports = { chartSpec, renderSvg, writeChart, escapeXml };
