'use strict';
// Number formatting and plain-text tables.

/** A number with `digits` significant digits, without exponent notation for usual sizes. */
function sig(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  if (!Number.isFinite(x)) return x > 0 ? '∞' : '-∞';
  if (x === 0) return '0';
  const magnitude = Math.floor(Math.log10(Math.abs(x)));
  const decimals = Math.max(0, digits - 1 - magnitude);
  if (magnitude >= 9 || magnitude < -4) return x.toExponential(digits - 1);
  return x.toFixed(decimals);
}

/** Milliseconds: "0.123", "12.3", "1234" (no unit). */
function ms(x) {
  return sig(x, 3);
}

/** A duration with a unit: 850 µs, 12.3 ms, 4.56 s, 2.1 min, 1.5 h. */
function duration(msValue) {
  if (msValue === null || msValue === undefined || Number.isNaN(msValue)) return '–';
  if (msValue < 1) return `${sig(msValue * 1000, 3)} µs`;
  if (msValue < 1000) return `${sig(msValue, 3)} ms`;
  if (msValue < 120e3) return `${sig(msValue / 1000, 3)} s`;
  if (msValue < 7200e3) return `${sig(msValue / 60e3, 3)} min`;
  return `${sig(msValue / 3600e3, 3)} h`;
}

/** Bytes as MiB (or KiB below 1 MiB, GiB above 10 GiB). */
function bytes(b) {
  if (b === null || b === undefined || Number.isNaN(b)) return '–';
  const sign = b < 0 ? '-' : '';
  const a = Math.abs(b);
  if (a < 1024 * 1024) return `${sign}${sig(a / 1024, 3)} KiB`;
  if (a < 10 * 1024 ** 3) return `${sign}${sig(a / 1024 ** 2, 3)} MiB`;
  return `${sign}${sig(a / 1024 ** 3, 3)} GiB`;
}

function percent(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  return `${x.toFixed(x < 10 ? 1 : 0)}%`;
}

function ratio(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  return `${sig(x, 3)}x`;
}

/**
 * A plain-text table. columns: [{ title, align?: 'left' | 'right' }], rows: arrays
 * of strings (null/undefined print as "–"). Returns the table as one string
 * (no trailing newline): a header, a rule, then the rows.
 */
function table(columns, rows) {
  const cells = rows.map((row) => columns.map((_, i) => (row[i] === null || row[i] === undefined ? '–' : String(row[i]))));
  const widths = columns.map((c, i) => Math.max(width(c.title), ...cells.map((r) => width(r[i]))));
  const line = (values) =>
    values
      .map((v, i) => (columns[i].align === 'left' ? padEnd(v, widths[i]) : padStart(v, widths[i])))
      .join('  ')
      .replace(/\s+$/, '');
  const out = [line(columns.map((c) => c.title)), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const r of cells) out.push(line(r));
  return out.join('\n');
}

// Display width: every code point counts 1 (the table uses only narrow symbols).
function width(s) {
  return [...s].length;
}
function padStart(s, w) {
  return ' '.repeat(Math.max(0, w - width(s))) + s;
}
function padEnd(s, w) {
  return s + ' '.repeat(Math.max(0, w - width(s)));
}

module.exports = { sig, ms, duration, bytes, percent, ratio, table };
