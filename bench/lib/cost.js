'use strict';
// The benchmark's cost model (stated in docs/benchmark.md), used for every
// GFLOP/s figure it prints. Counts are per call: (batch * heads) times the per-head count.
//
// FAVOR+ (bidirectional and causal alike), per (batch, head):
//   2*Lq*d*P + 2*Lk*d*P          projections W x of queries and keys (P = projections, m)
//   + 2*Lk*F*(Dv+1)              S = K'^T V and z = K'^T 1          (F = features per row)
//   + 2*Lq*F*(Dv+1)              numerator q' S and denominator q' z
// plus (Lq + Lk) * F exps. For the softmax kernel P = F = m; 'softmax-hyperbolic'
// and 'trig' have P = m projections and F = 2m features. 'softmax-opt' and
// 'softmax-dense' count as softmax: their per-head statistics, eigendecomposition
// and projection packing are overhead the timings include but the count does not.
// Exact softmax attention, per (batch, head): 2 * pairs * (d + Dv) flops and
// `pairs` exps, where pairs = Lq*Lk bidirectional, and the number of
// (query, key) pairs with j <= i + (Lk - Lq) when causal (L(L+1)/2 for Lq = Lk = L).

const DOUBLE_FEATURE_KERNELS = new Set(['softmax-hyperbolic', 'trig']);

function featureCount(numFeatures, kernel = 'softmax') {
  return DOUBLE_FEATURE_KERNELS.has(kernel) ? 2 * numFeatures : numFeatures;
}

function dims(shape) {
  const batch = shape.batch ?? 1;
  const heads = shape.heads ?? 1;
  const Lq = shape.queryLength ?? shape.L;
  const Lk = shape.keyLength ?? shape.L;
  const d = shape.headDim;
  const Dv = shape.valueDim ?? d;
  for (const [name, value] of Object.entries({ batch, heads, Lq, Lk, d, Dv })) {
    if (!Number.isInteger(value) || value < 0) throw new RangeError(`cost model: ${name} must be a non-negative integer, received ${value}`);
  }
  return { batch, heads, Lq, Lk, d, Dv };
}

/** Flops and exps of one FAVOR+ call. */
function favorCost(shape) {
  const { batch, heads, Lq, Lk, d, Dv } = dims(shape);
  const P = shape.numFeatures;
  if (!Number.isInteger(P) || P < 1) throw new RangeError(`cost model: numFeatures must be a positive integer, received ${P}`);
  const F = featureCount(P, shape.kernel);
  const perHead = 2 * Lq * d * P + 2 * Lk * d * P + 2 * Lk * F * (Dv + 1) + 2 * Lq * F * (Dv + 1);
  return { flops: batch * heads * perHead, exps: batch * heads * (Lq + Lk) * F };
}

/** Number of (query, key) pairs attended by one (batch, head). */
function attendedPairs(Lq, Lk, causal) {
  if (!causal) return Lq * Lk;
  // Query i attends keys j <= i + (Lk - Lq): clamp(i + Lk - Lq + 1, 0, Lk) of them.
  let pairs = 0;
  for (let i = 0; i < Lq; i++) pairs += Math.min(Lk, Math.max(0, i + Lk - Lq + 1));
  return pairs;
}

/** Flops and exps of one exact softmax attention call. */
function exactCost(shape) {
  const { batch, heads, Lq, Lk, d, Dv } = dims(shape);
  const pairs = attendedPairs(Lq, Lk, Boolean(shape.causal));
  return { flops: batch * heads * 2 * pairs * (d + Dv), exps: batch * heads * pairs };
}

/** Bytes of q, k, v and the output (float32). */
function ioBytes(shape) {
  const { batch, heads, Lq, Lk, d, Dv } = dims(shape);
  const bh = batch * heads;
  return {
    query: 4 * bh * Lq * d,
    key: 4 * bh * Lk * d,
    value: 4 * bh * Lk * Dv,
    output: 4 * bh * Lq * Dv,
    get total() {
      return this.query + this.key + this.value + this.output;
    },
  };
}

/** GFLOP/s for `flops` done in `ms` milliseconds. */
function gflops(flops, ms) {
  return ms > 0 ? flops / (ms * 1e6) : NaN;
}

module.exports = { favorCost, exactCost, attendedPairs, featureCount, ioBytes, gflops };
