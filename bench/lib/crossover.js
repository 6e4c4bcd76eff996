'use strict';
// The sequence length where FAVOR+ overtakes exact attention, from measured points.

/**
 * points: [{ L, favorMs, exactMs }] (any order; points missing either time are ignored).
 * Returns the smallest L from which FAVOR+ is faster at every larger measured L:
 *   { status: 'between', L, lower, upper }  crossing between two measured lengths,
 *                                           L interpolated on log L against log(exact/favor);
 *   { status: 'below', L: null, upper }     FAVOR+ already faster at the smallest L measured;
 *   { status: 'above', L: null, lower }     exact still as fast or faster at the largest L measured;
 *   { status: 'none', L: null }             fewer than one usable point.
 * Each returned point carries its speed-up ratio exactMs / favorMs.
 */
function findCrossover(points) {
  const usable = points
    .filter((p) => p && p.L > 0 && p.favorMs > 0 && p.exactMs > 0)
    .map((p) => ({ L: p.L, favorMs: p.favorMs, exactMs: p.exactMs, ratio: p.exactMs / p.favorMs }))
    .sort((a, b) => a.L - b.L);
  if (usable.length === 0) return { status: 'none', L: null };
  // First index j such that FAVOR+ is faster at every point from j on.
  let j = usable.length;
  while (j > 0 && usable[j - 1].ratio > 1) j--;
  if (j === usable.length) return { status: 'above', L: null, lower: usable[usable.length - 1] };
  if (j === 0) return { status: 'below', L: null, upper: usable[0] };
  const lower = usable[j - 1];
  const upper = usable[j];
  const x0 = Math.log(lower.L);
  const x1 = Math.log(upper.L);
  const y0 = Math.log(lower.ratio); // <= 0
  const y1 = Math.log(upper.ratio); // > 0
  const t = y1 === y0 ? 0 : -y0 / (y1 - y0);
  return { status: 'between', L: Math.exp(x0 + t * (x1 - x0)), lower, upper };
}

/** One line describing a crossover result. */
function describeCrossover(c) {
  switch (c.status) {
    case 'between':
      return `L ≈ ${Math.round(c.L)} (between L = ${c.lower.L}, speed-up ${c.lower.ratio.toFixed(2)}x, and L = ${c.upper.L}, ${c.upper.ratio.toFixed(2)}x)`;
    case 'below':
      return `below L = ${c.upper.L} (FAVOR+ already ${c.upper.ratio.toFixed(2)}x faster there)`;
    case 'above':
      return `above L = ${c.lower.L} (exact still ${(1 / c.lower.ratio).toFixed(2)}x as fast there)`;
    default:
      return 'not measured (needs FAVOR+ and exact times at the same lengths)';
  }
}

module.exports = { findCrossover, describeCrossover };
