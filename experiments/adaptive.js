#!/usr/bin/env node
'use strict';
// FAVOR+ vs FAVOR++ (softmax-opt) vs SDERF (softmax-dense): relative Frobenius
// error of the attention output against exact softmax attention, orthogonal
// features, parameters estimated per call (bidirectional). Cases:
//   (a) isotropic q, k ~ N(0, sigma^2), sigma in {0.35, 0.5}, d = 64
//   (b) anisotropic q, k: covariance R diag(lambda) R^T with lambda_i ∝ 1/i (trace d / 4, the
//       total variance of sigma = 0.5), a random rotation R, and nonzero means (norm sqrt(d) / 4,
//       different for q and k), d = 64
//   (c) head dims 16, 32, 64, 128, isotropic sigma = 0.5 and anisotropic
// Flags: --seeds N (default 10), --L N (default 512), --quick, --out DIR (default results/experiments).
// Writes adaptive.md and adaptive.json; the table also goes to stdout.
const fs = require('node:fs');
const path = require('node:path');
const { FeatureMap, favorAttentionSync, softmaxAttentionSync } = require('..');
const { Rng } = require('./lib/data');
const { relFrobenius, summarize } = require('./lib/stats');

const KERNELS = [
  ['FAVOR+', 'softmax'],
  ['FAVOR++', 'softmax-opt'],
  ['SDERF', 'softmax-dense'],
];

function args(argv) {
  const o = { seeds: 10, L: 512, quick: false, out: path.join('results', 'experiments') };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--seeds') o.seeds = Number(argv[++i]);
    else if (argv[i] === '--L') o.L = Number(argv[++i]);
    else if (argv[i] === '--quick') o.quick = true;
    else if (argv[i] === '--out') o.out = argv[++i];
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (o.quick) Object.assign(o, { seeds: 2, L: 64 });
  return o;
}

/** A random orthogonal d x d matrix (Gram-Schmidt of a Gaussian one), row-major. */
function rotation(rng, d) {
  const R = new Float64Array(d * d);
  for (let i = 0; i < d * d; i++) R[i] = rng.normal();
  for (let k = 0; k < d; k++) {
    for (let j = 0; j < k; j++) {
      let dot = 0;
      for (let i = 0; i < d; i++) dot += R[i * d + k] * R[i * d + j];
      for (let i = 0; i < d; i++) R[i * d + k] -= dot * R[i * d + j];
    }
    let n = 0;
    for (let i = 0; i < d; i++) n += R[i * d + k] ** 2;
    for (let i = 0; i < d; i++) R[i * d + k] /= Math.sqrt(n);
  }
  return R;
}

function inputs(seed, { L, d, sigma, anisotropic }) {
  const rng = new Rng(seed);
  const rows = (mean, R, lambda) => {
    const out = new Float32Array(L * d);
    const z = new Float64Array(d);
    for (let r = 0; r < L; r++) {
      for (let i = 0; i < d; i++) z[i] = rng.normal() * (anisotropic ? Math.sqrt(lambda[i]) : sigma);
      for (let i = 0; i < d; i++) {
        let s = mean ? mean[i] : 0;
        if (R) for (let j = 0; j < d; j++) s += R[i * d + j] * z[j];
        else s += z[i];
        out[r * d + i] = s;
      }
    }
    return out;
  };
  let q;
  let k;
  if (anisotropic) {
    const R = rotation(rng, d);
    let h = 0;
    for (let i = 1; i <= d; i++) h += 1 / i;
    const lambda = Array.from({ length: d }, (_, i) => d / 4 / (h * (i + 1)));
    const mean = () => {
      const v = Array.from({ length: d }, () => rng.normal());
      const n = Math.hypot(...v);
      return v.map((x) => (x * Math.sqrt(d)) / 4 / n);
    };
    q = rows(mean(), R, lambda);
    k = rows(mean(), R, lambda);
  } else {
    q = rows(null, null, null);
    k = rows(null, null, null);
  }
  const v = new Float32Array(L * d);
  for (let i = 0; i < v.length; i++) v[i] = rng.normal();
  const t = (data) => ({ data, shape: [1, 1, L, d] });
  return { q: t(q), k: t(k), v: t(v) };
}

function study(o) {
  const cases = [];
  const ds = o.quick ? [16, 32] : [16, 32, 64, 128];
  const d0 = o.quick ? 32 : 64;
  for (const sigma of [0.35, 0.5]) cases.push({ group: '(a) isotropic', label: `σ = ${sigma}, d = ${d0}`, d: d0, sigma, anisotropic: false });
  cases.push({ group: '(b) anisotropic', label: `λ ∝ 1/i, nonzero means, d = ${d0}`, d: d0, anisotropic: true });
  for (const d of ds) cases.push({ group: '(c) head dim', label: `isotropic σ = 0.5, d = ${d}`, d, sigma: 0.5, anisotropic: false });
  for (const d of ds) cases.push({ group: '(c) head dim', label: `anisotropic, d = ${d}`, d, anisotropic: true });
  const rows = [];
  for (const [ci, c] of cases.entries()) {
    for (const m of [64, 256]) {
      const errors = KERNELS.map(() => []);
      for (let s = 0; s < o.seeds; s++) {
        const x = inputs(1000 * ci + s, { L: o.L, d: c.d, sigma: c.sigma, anisotropic: c.anisotropic });
        const exact = softmaxAttentionSync(x.q, x.k, x.v).data;
        KERNELS.forEach(([, kernel], i) => {
          // The same W (seed) for every kernel: the differences are the kernels'.
          const featureMap = new FeatureMap({ headDim: c.d, numFeatures: m, kernel, seed: 7919 * s + m });
          errors[i].push(relFrobenius(favorAttentionSync(x.q, x.k, x.v, { featureMap }).data, exact));
        });
      }
      const stats = errors.map((e) => summarize(e));
      rows.push({ group: c.group, label: c.label, m, stats });
      process.stderr.write(`${c.group} ${c.label} m=${m}: ${stats.map((s) => s.mean.toFixed(4)).join(' / ')}\n`);
    }
  }
  return rows;
}

function markdown(rows, o) {
  const f = (x) => x.toFixed(3);
  const lines = [
    `Relative Frobenius error of favorAttention vs exact softmax attention (mean ± sd over ${o.seeds} seeds, L = ${o.L}, orthogonal features, ` +
      'parameters estimated per call; ratios are mean errors vs FAVOR+).',
    '',
    '| case | m | FAVOR+ | FAVOR++ | SDERF | FAVOR++/FAVOR+ | SDERF/FAVOR+ |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const [p, o2, s] = r.stats;
    lines.push(
      `| ${r.group}: ${r.label} | ${r.m} | ${f(p.mean)} ± ${f(p.sd)} | ${f(o2.mean)} ± ${f(o2.sd)} | ${f(s.mean)} ± ${f(s.sd)} | ` +
        `${f(o2.mean / p.mean)} | ${f(s.mean / p.mean)} |`,
    );
  }
  return lines.join('\n') + '\n';
}

if (require.main === module) {
  const o = args(process.argv.slice(2));
  const rows = study(o);
  const md = markdown(rows, o);
  fs.mkdirSync(o.out, { recursive: true });
  fs.writeFileSync(path.join(o.out, 'adaptive.md'), md);
  fs.writeFileSync(path.join(o.out, 'adaptive.json'), JSON.stringify({ options: o, rows }, null, 2));
  process.stdout.write(md);
}

module.exports = { study, markdown, inputs };
