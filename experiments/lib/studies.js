'use strict';
// The four studies of the approximation error. Each returns plain data (no
// formatting): the report and the charts are made from it.
const { FeatureMap, favorAttentionSync, softmaxAttentionSync } = require('../..');
const { Rng, attentionInputs, identityValues } = require('./data');
const { relFrobenius, summarize } = require('./stats');

/** The feature variants compared (the paper's figure: i.i.d. vs orthogonal, positive vs hyperbolic vs trig). */
const VARIANTS = [
  { name: 'positive, i.i.d.', kernel: 'softmax', orthogonal: false },
  { name: 'positive, orthogonal', kernel: 'softmax', orthogonal: true },
  { name: 'hyperbolic, orthogonal', kernel: 'softmax-hyperbolic', orthogonal: true },
  { name: 'trig, i.i.d.', kernel: 'trig', orthogonal: false },
  { name: 'trig, orthogonal', kernel: 'trig', orthogonal: true },
];

// Disjoint seed ranges for data and features, so no two draws share a stream.
function dataSeed(base, T, s) {
  return base + 1_000_000 * Math.round(T * 100) + s;
}
function featureSeed(base, T, s, m, variant) {
  return 1e12 + base * 1e6 + Math.round(T * 100) * 1e9 + s * 1e5 + m * 10 + variant;
}

/**
 * FAVOR+ with a new feature map for each variant and m on one draw of q, k, v:
 * appends each relative error against `exact` to errors[key(variant, m)].
 */
function recordErrors(errors, { q, k, v, exact, d, ms, variants }, { seed, key }) {
  const out = { data: new Float32Array(exact.length), shape: [1, 1, q.shape[2], v.shape[3]] };
  variants.forEach((variant, vi) => {
    for (const m of ms) {
      const featureMap = new FeatureMap({
        headDim: d,
        numFeatures: m,
        kernel: variant.kernel,
        orthogonal: variant.orthogonal,
        seed: seed(m, vi),
      });
      favorAttentionSync(q, k, v, { featureMap, out });
      const name = key(variant, m);
      if (!errors.has(name)) errors.set(name, []);
      errors.get(name).push(relFrobenius(out.data, exact));
    }
  });
}

/**
 * Relative Frobenius error against exact softmax attention, per seed, for every
 * (T, variant, m). target 'output': the attention output softmax(q k^T/sqrt d) v;
 * 'matrix': the row-normalized attention matrix itself (values = identity, so
 * FAVOR returns D^-1 phi(Q) phi(K)^T as the library computes it).
 * Each seed draws new q, k, v and, for each variant and m, a new feature map.
 */
function errorVersusM({ L, d, ms, temps, seeds, variants = VARIANTS, target = 'output', seedBase = 0, progress = () => {} }) {
  const cells = [];
  for (const T of temps) {
    const errors = new Map(); // `${variant}|${m}` -> []
    for (let s = 0; s < seeds; s++) {
      const inputs = attentionInputs(dataSeed(seedBase, T, s), { L, d, T });
      const v = target === 'matrix' ? identityValues(L) : inputs.v;
      const exact = softmaxAttentionSync(inputs.q, inputs.k, v).data;
      recordErrors(errors, { q: inputs.q, k: inputs.k, v, exact, d, ms, variants }, {
        seed: (m, vi) => featureSeed(seedBase, T, s, m, vi),
        key: (variant, m) => `${variant.name}|${m}`,
      });
      progress(`T = ${T}: seed ${s + 1}/${seeds}`);
    }
    for (const variant of variants) {
      for (const m of ms) {
        const e = errors.get(`${variant.name}|${m}`);
        cells.push({ T, variant: variant.name, m, ...summarize(e), values: e });
      }
    }
  }
  return { L, d, ms, temps, seeds, target, variants: variants.map((v) => v.name), cells };
}

/** The same m at several sequence lengths: the error should not depend on L. */
function errorVersusLength({ Ls, d, ms, temps, seeds, variants, seedBase = 0, progress = () => {} }) {
  variants = variants ?? VARIANTS.filter((v) => v.kernel === 'softmax');
  const cells = [];
  for (const T of temps) {
    const errors = new Map();
    for (let s = 0; s < seeds; s++) {
      for (const L of Ls) {
        const { q, k, v } = attentionInputs(dataSeed(seedBase, T, s) + 7919 * L, { L, d, T });
        const exact = softmaxAttentionSync(q, k, v).data;
        recordErrors(errors, { q, k, v, exact, d, ms, variants }, {
          seed: (m, vi) => featureSeed(seedBase, T, s, m, vi) + 1e8 * Math.log2(L),
          key: (variant, m) => `${variant.name}|${m}|${L}`,
        });
      }
      progress(`T = ${T}: seed ${s + 1}/${seeds}`);
    }
    for (const variant of variants) {
      for (const m of ms) {
        for (const L of Ls) {
          const e = errors.get(`${variant.name}|${m}|${L}`);
          cells.push({ T, variant: variant.name, m, L, ...summarize(e), values: e });
        }
      }
    }
  }
  return { Ls, d, ms, temps, seeds, variants: variants.map((v) => v.name), cells };
}

// ---------------------------------------------------------------------------
// Lemma 2: closed-form MSE of the positive and trig estimators of exp(x.y)

function dot(a, b) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * A pair in normalized space (x_hat, y_hat: after the d^(-1/4) data normalizer)
 * with given norms and cosine, spread over all d coordinates.
 */
function makePair(d, { nx, ny, cos }, id = 0) {
  const rng = new Rng(424242 + id);
  const a = Array.from({ length: d }, () => rng.normal());
  const b0 = Array.from({ length: d }, () => rng.normal());
  const na = Math.hypot(...a);
  const u = a.map((x) => x / na);
  const along = dot(b0, u);
  const b = b0.map((x, i) => x - along * u[i]);
  const nb = Math.hypot(...b);
  const w = b.map((x) => x / nb);
  const xh = u.map((x) => nx * x);
  const yh = u.map((x, i) => ny * (cos * x + Math.sqrt(1 - cos * cos) * w[i]));
  return { xh, yh };
}

/** SM = exp(x.y) and the paper's closed forms for m i.i.d. features (x, y already normalized). */
function lemma2(xh, yh, m) {
  let s2 = 0;
  let d2 = 0;
  for (let i = 0; i < xh.length; i++) {
    s2 += (xh[i] + yh[i]) ** 2;
    d2 += (xh[i] - yh[i]) ** 2;
  }
  const sm = Math.exp(dot(xh, yh));
  return {
    sm,
    sumNorm2: s2,
    diffNorm2: d2,
    positive: (Math.exp(s2) * sm * sm * (1 - Math.exp(-s2))) / m,
    trig: (Math.exp(s2) * (1 - Math.exp(-d2)) ** 2) / (2 * m * sm * sm),
  };
}

/**
 * Monte-Carlo squared errors of phi(x).phi(y) against exp(x_hat.y_hat) for `count`
 * independent draws of m features. One map with count * m projections is split
 * into count groups of m rows: i.i.d. rows are independent, and orthogonal maps
 * are independent blocks of d rows, so groups of m = (multiple of) d are
 * independent orthogonal draws of their own.
 */
function squaredErrors(xh, yh, { d, m, count, kernel, orthogonal, seed }) {
  if (orthogonal && m % d !== 0) throw new RangeError('orthogonal groups need m to be a multiple of d');
  const c = Math.pow(d, -0.25);
  const rows = new Float32Array(2 * d);
  for (let i = 0; i < d; i++) {
    rows[i] = xh[i] / c; // features() applies the normalizer itself
    rows[d + i] = yh[i] / c;
  }
  const sm = Math.exp(dot(xh, yh));
  const out = new Float64Array(count);
  // maps of at most ~65k projections (the library caps m at 2^20), one seed each
  const perMap = Math.max(1, Math.floor(65536 / m));
  for (let g0 = 0, chunk = 0; g0 < count; g0 += perMap, chunk++) {
    const groups = Math.min(perMap, count - g0);
    const M = m * groups;
    const map = new FeatureMap({ headDim: d, numFeatures: M, kernel, orthogonal, seed: seed + 1e6 * chunk });
    const f = map.features({ data: rows, shape: [2, d] }).data;
    const F = map.featureCount;
    const halves = F / M; // 2 for trig ([sin..., cos...]), 1 for softmax
    for (let g = 0; g < groups; g++) {
      let s = 0;
      for (let h = 0; h < halves; h++) {
        const base = h * M + g * m;
        for (let j = base; j < base + m; j++) s += f[j] * f[F + j];
      }
      // features carry M^(-1/2) each: rescale the group's sum to an m-feature estimate
      out[g0 + g] = ((M / m) * s - sm) ** 2;
    }
  }
  return out;
}

const LEMMA_PAIRS = [
  { nx: 0.5, ny: 0.5, cos: 0.5 },
  { nx: 0.7, ny: 0.7, cos: 0 },
  { nx: 0.7, ny: 0.7, cos: -0.6 },
  { nx: 0.9, ny: 0.9, cos: -0.8 },
];

/** Monte-Carlo MSE of both estimators against Lemma 2, with 95 % confidence intervals. */
function lemma2Check({ d = 16, ms = [16, 64], count = 20000, pairs = LEMMA_PAIRS, seedBase = 0, progress = () => {} }) {
  const rows = [];
  pairs.forEach((spec, p) => {
    const { xh, yh } = makePair(d, spec, p);
    for (const m of ms) {
      const theory = lemma2(xh, yh, m);
      for (const [kernel, key] of [
        ['softmax', 'positive'],
        ['trig', 'trig'],
      ]) {
        const seed = seedBase * 1000 + p * 100 + m + (kernel === 'trig' ? 50 : 0);
        const iid = summarize(Array.from(squaredErrors(xh, yh, { d, m, count, kernel, orthogonal: false, seed })));
        const orth =
          m % d === 0 ? summarize(Array.from(squaredErrors(xh, yh, { d, m, count, kernel, orthogonal: true, seed: seed + 1e7 }))) : null;
        rows.push({
          pair: { ...spec, xDotY: Math.log(theory.sm) },
          sm: theory.sm,
          sumNorm2: theory.sumNorm2,
          diffNorm2: theory.diffNorm2,
          m,
          estimator: key,
          theory: theory[key],
          mc: iid.mean,
          se: iid.se,
          ci95: [iid.mean - 1.96 * iid.se, iid.mean + 1.96 * iid.se],
          z: (iid.mean - theory[key]) / iid.se,
          orthogonalMc: orth ? orth.mean : null,
          orthogonalSe: orth ? orth.se : null,
        });
      }
      progress(`pair ${p + 1}/${pairs.length}, m = ${m}`);
    }
  });
  return { d, ms, count, rows };
}

module.exports = { VARIANTS, errorVersusM, errorVersusLength, lemma2, lemma2Check, makePair, squaredErrors, LEMMA_PAIRS };
