'use strict';
// Small statistics helpers for timings: every measurement is a warm-up followed
// by N timed runs, summarized by the median.

function sorted(xs) {
  if (!Array.isArray(xs) || xs.length === 0) throw new RangeError('expected a non-empty array of numbers');
  for (const x of xs) if (typeof x !== 'number' || Number.isNaN(x)) throw new TypeError(`expected numbers, received ${x}`);
  return [...xs].sort((a, b) => a - b);
}

/** Quantile with linear interpolation between order statistics (p in [0, 1]). */
function quantile(xs, p) {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`quantile: p must be in [0, 1], received ${p}`);
  const s = sorted(xs);
  const pos = (s.length - 1) * p;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/** The median (mean of the two middle values for an even count). */
function median(xs) {
  return quantile(xs, 0.5);
}

function mean(xs) {
  return sorted(xs).reduce((a, b) => a + b, 0) / xs.length;
}

/** n, median, min, max, mean, quartiles, and the relative half-IQR spread. */
function summarize(xs) {
  const s = sorted(xs);
  const med = quantile(s, 0.5);
  const p25 = quantile(s, 0.25);
  const p75 = quantile(s, 0.75);
  return {
    n: s.length,
    median: med,
    min: s[0],
    max: s[s.length - 1],
    mean: mean(s),
    p25,
    p75,
    spread: med > 0 ? (p75 - p25) / (2 * med) : 0,
  };
}

/**
 * How many timed runs to make after a warm-up run that took `firstMs`: enough
 * for about `targetMs` of measurement, at least `min`, at most `max`.
 */
function chooseRepeats(firstMs, { targetMs = 1000, min = 3, max = 50 } = {}) {
  if (!(firstMs >= 0)) throw new RangeError(`chooseRepeats: firstMs must be >= 0, received ${firstMs}`);
  const n = firstMs === 0 ? max : Math.ceil(targetMs / firstMs);
  return Math.max(min, Math.min(max, n));
}

/**
 * Run time at `L` extrapolated from a measured point with time ~ L^power
 * (2 for exact attention, 1 for FAVOR+).
 */
function extrapolate(point, L, power = 2) {
  return point.ms * Math.pow(L / point.L, power);
}

/** Slope of log(time) against log(L) between two points (1 = linear, 2 = quadratic). */
function scalingExponent(a, b) {
  return Math.log(b.ms / a.ms) / Math.log(b.L / a.L);
}

module.exports = { quantile, median, mean, summarize, chooseRepeats, extrapolate, scalingExponent };
