#!/usr/bin/env node
// Backward compatibility: the weights of a softmax Transformer run unchanged with
// FAVOR+ attention. Builds a small encoder stack with random weights (fixed seed),
// runs it with exact attention, then loads the same weights into models whose
// attention has m random features, and prints how far their outputs are from the
// exact ones (relative Frobenius deviation, mean over feature seeds), for inputs
// x ~ N(0, sigma^2): the larger the attention logits, the harder FAVOR+'s job.
//   node examples/backward-compat.js [--seq 1024] [--seeds 3] [--features 64,128,256,512,1024] [--sigma 0.5,1] [--layers 2]
'use strict';
const { TransformerEncoder } = require('..');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const seq = Number(arg('seq', 1024));
const seeds = Number(arg('seeds', 3));
const featureCounts = String(arg('features', '64,128,256,512,1024')).split(',').map(Number);
const sigmas = String(arg('sigma', '0.5,1')).split(',').map(Number);
const config = { modelDim: 256, numHeads: 4, numLayers: Number(arg('layers', 2)), ffDim: 512, activation: 'gelu', seed: 1 };

// Seeded Gaussian input (xorshift + Box-Muller), entries ~ N(0, 1), scaled per sigma.
let s = 0x2545f491;
const uniform = () => {
  s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
  return (s + 0.5) / 4294967296;
};
const noise = new Float32Array(seq * config.modelDim);
for (let i = 0; i < noise.length; i++) noise[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
const inputs = sigmas.map((sigma) => ({ data: noise.map((v) => v * sigma), shape: [1, seq, config.modelDim] }));

const softmaxModel = new TransformerEncoder({ ...config, attention: 'softmax' });
// A softmax checkpoint has no random features: drop ours, keep every trained weight.
const weights = Object.fromEntries(Object.entries(softmaxModel.parameters()).filter(([name]) => !name.endsWith('features.projection')));
const exact = inputs.map((x) => softmaxModel.forwardSync(x).data);

function deviation(a, b) {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

console.log(`encoder: ${config.numLayers} layers, modelDim ${config.modelDim}, ${config.numHeads} heads, L = ${seq}; mean (min-max) over ${seeds} feature seeds`);
console.log(`| m | ${sigmas.map((sigma) => `sigma = ${sigma}`).join(' | ')} |`);
console.log(`|---|${sigmas.map(() => '---|').join('')}`);
for (const m of featureCounts) {
  const cells = inputs.map((x, i) => {
    const values = [];
    for (let seed = 0; seed < seeds; seed++) {
      const favor = new TransformerEncoder({ ...config, featureMap: { numFeatures: m, seed: 1000 * seed + 1 } });
      // The softmax model's weights, unchanged; the FAVOR+ model keeps its own
      // features (strict: false lets the projections be absent).
      favor.loadParameters(weights, { strict: false });
      values.push(deviation(favor.forwardSync(x).data, exact[i]));
    }
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    return `${mean.toFixed(4)} (${Math.min(...values).toFixed(3)}-${Math.max(...values).toFixed(3)})`;
  });
  console.log(`| ${m} | ${cells.join(' | ')} |`);
}
