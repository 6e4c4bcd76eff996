#!/usr/bin/env node
// FAVOR+ against exact softmax attention on one default input: prints the time of
// each (median of 5 runs) and FAVOR+'s relative error against exact attention.
//   node examples/demo.js [--seq 4096] [--features 256]
'use strict';
const { FeatureMap, backendInfo, favorAttentionSync, softmaxAttentionSync } = require('..');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

const batch = 1, heads = 8, seq = arg('seq', 4096), dim = 64, features = arg('features', 256);

// Seeded Gaussian data (xorshift + Box-Muller), q and k ~ N(0, 0.35^2), v ~ N(0, 1).
let state = 0x9e3779b9;
function uniform() {
  state ^= state << 13; state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5; state >>>= 0;
  return (state + 0.5) / 4294967296;
}
function gaussian(n, sigma) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = sigma * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return a;
}
const shape = [batch, heads, seq, dim];
const n = batch * heads * seq * dim;
const q = { data: gaussian(n, 0.35), shape };
const k = { data: gaussian(n, 0.35), shape };
const v = { data: gaussian(n, 1), shape };
const featureMap = new FeatureMap({ headDim: dim, numFeatures: features, seed: 1 });

function median(fn, runs = 5) {
  const times = [];
  let result;
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    result = fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(runs / 2)], result };
}

const info = backendInfo();
console.log(`performer-attention demo: batch ${batch}, heads ${heads}, seq ${seq}, headDim ${dim}, ${features} features`);
console.log(`kernels: ${info.isa} (available: ${info.available.join(', ')}), threads: ${info.threads}`);
for (const causal of [false, true]) {
  const favor = median(() => favorAttentionSync(q, k, v, { featureMap, causal }));
  const exact = median(() => softmaxAttentionSync(q, k, v, { causal }));
  let num = 0, den = 0;
  for (let i = 0; i < exact.result.data.length; i++) {
    num += (favor.result.data[i] - exact.result.data[i]) ** 2;
    den += exact.result.data[i] ** 2;
  }
  console.log(
    `${causal ? 'causal       ' : 'bidirectional'}  FAVOR+ ${favor.ms.toFixed(1)} ms   exact ${exact.ms.toFixed(1)} ms   ` +
      `speed-up ${(exact.ms / favor.ms).toFixed(2)}x   relative error ${Math.sqrt(num / den).toFixed(4)}`,
  );
}
