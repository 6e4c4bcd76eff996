'use strict';
// Summaries over seeds and the error measure of every attention experiment.

/** ||a - b||_F / ||b||_F, b the exact reference; accumulated in double. */
function relFrobenius(a, b) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    const e = a[i] - b[i];
    num += e * e;
    den += b[i] * b[i];
  }
  return Math.sqrt(num / den);
}

/** mean, sample sd, standard error, min, max and median of a list of numbers. */
function summarize(values) {
  const n = values.length;
  const mean = values.reduce((s, x) => s + x, 0) / n;
  const sd = n > 1 ? Math.sqrt(values.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1)) : 0;
  const sorted = [...values].sort((x, y) => x - y);
  const median = n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  return { n, mean, sd, se: sd / Math.sqrt(n), min: sorted[0], max: sorted[n - 1], median };
}

module.exports = { relFrobenius, summarize };
