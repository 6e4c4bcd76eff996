#!/usr/bin/env node
'use strict';
// Layer benchmark: per-token decoding latency against the context length and, with
// cross-attention, against the memory length; the size of a decoding state; the
// forward time of an encoder layer with FAVOR+ and with exact attention. Medians of
// repeated runs; ratios come from the same run. --only cross runs the memory table alone.
//   npm run bench:layers -- [--contexts 1000,100000] [--memories 1000,16000] [--seq 4096]
//                           [--steps 200] [--runs 5] [--only cross]
const { performance } = require('node:perf_hooks');
const { EncoderLayer, MultiHeadAttention, DecoderLayer, backendInfo } = require('..');

const { parseFlagsOrExit, parseList, parseLength, integer, oneOf } = require('./lib/args');

const lengths = (text, flag) => parseList(text, flag, 'lengths', parseLength);
const USAGE = 'npm run bench:layers -- [--contexts 1000,100000] [--memories 1000,16000] [--seq 4096] [--steps 200] [--runs 5] [--only cross]';
const { contexts, memories, only, seq, steps, runs } = parseFlagsOrExit('bench:layers', USAGE, process.argv.slice(2), {
  contexts: { value: lengths },
  memories: { value: lengths },
  only: { value: oneOf(['cross']) },
  seq: { value: parseLength },
  steps: { value: integer(1, 1e6) },
  runs: { value: integer(1, 1e6) },
}, { contexts: [1000, 100000], memories: [1000, 16000], only: null, seq: 4096, steps: 200, runs: 5 });
const modelDim = 512, numHeads = 8, numFeatures = 256; // head width 64

let s = 0x9e3779b9;
const uniform = () => {
  s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
  return (s + 0.5) / 4294967296;
};
const gaussian = (n, sigma = 1) => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = sigma * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return a;
};
const median = (xs) => {
  const a = [...xs].sort((x, y) => x - y);
  return a.length % 2 ? a[a.length >> 1] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
};
const time = (fn) => {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
};

console.log(`backend ${backendInfo().isa}, ${backendInfo().threads} threads; modelDim ${modelDim}, ${numHeads} heads (d = 64), m = ${numFeatures}`);

async function decoding(label, model, createState) {
  console.log(`\n${label}: per-token step after a context of C tokens (prompt absorbed in chunks of 2048)`);
  console.log('| context | prefill | step, sync (median) | p90 | step, async (median) | state bytes |');
  console.log('|---|---|---|---|---|---|');
  const token = { data: gaussian(modelDim, 0.5), shape: [1, 1, modelDim] };
  for (const context of contexts) {
    const state = createState();
    const chunk = 2048;
    const prompt = gaussian(chunk * modelDim, 0.5);
    const prefill = time(() => {
      for (let t = 0; t < context; t += chunk) {
        const n = Math.min(chunk, context - t);
        model.stepSync({ data: prompt.subarray(0, n * modelDim), shape: [1, n, modelDim] }, state);
      }
    });
    const sync = [];
    for (let i = 0; i < steps; i++) sync.push(time(() => model.stepSync(token, state)));
    const asyncTimes = [];
    for (let i = 0; i < Math.min(steps, 100); i++) {
      const t0 = performance.now();
      await model.step(token, state);
      asyncTimes.push(performance.now() - t0);
    }
    const p90 = [...sync].sort((a, b) => a - b)[Math.floor(sync.length * 0.9)];
    const us = (ms) => `${(ms * 1000).toFixed(0)} µs`;
    console.log(`| ${context} | ${(prefill / 1000).toFixed(2)} s | ${us(median(sync))} | ${us(p90)} | ${us(median(asyncTimes))} | ${state.serialize().length} |`);
  }
}

// A DecoderLayer with cross-attention: createState absorbs the memory once; a step's
// cost and the state's size should not depend on the memory length.
function crossDecoding() {
  console.log('\nDecoderLayer with cross-attention: per-token step against the memory length (batch 1)');
  console.log('| memory | createState | step, sync (median) | p90 | state bytes |');
  console.log('|---|---|---|---|---|');
  const layer = new DecoderLayer({ modelDim, numHeads, featureMap: { numFeatures } });
  const token = { data: gaussian(modelDim, 0.5), shape: [1, 1, modelDim] };
  for (const length of memories) {
    const memory = { data: gaussian(length * modelDim, 0.5), shape: [1, length, modelDim] };
    let state;
    const create = time(() => (state = layer.createStateSync(1, { memory })));
    for (let i = 0; i < 5; i++) layer.stepSync(token, state);
    const sync = Array.from({ length: steps }, () => time(() => layer.stepSync(token, state)));
    const p90 = [...sync].sort((a, b) => a - b)[Math.floor(sync.length * 0.9)];
    const us = (ms) => `${(ms * 1000).toFixed(0)} µs`;
    console.log(`| ${length} | ${create.toFixed(0)} ms | ${us(median(sync))} | ${us(p90)} | ${state.serialize().length} |`);
  }
}

async function main() {
  if (only === 'cross') return crossDecoding();
  const mha = new MultiHeadAttention({ modelDim, numHeads, causal: true, featureMap: { numFeatures } });
  await decoding('MultiHeadAttention (causal self-attention)', mha, () => mha.createStateSync(1));
  const dec = new DecoderLayer({ modelDim, numHeads, crossAttention: false, featureMap: { numFeatures } });
  await decoding('DecoderLayer (causal self-attention + feed-forward 2048, no cross-attention)', dec, () => dec.createStateSync(1));
  crossDecoding();

  console.log(`\nEncoderLayer forward, L = ${seq}, batch 1, feed-forward 2048, GELU (median of ${runs}, sync)`);
  console.log('| attention | forward | attention part (MultiHeadAttention alone) |');
  console.log('|---|---|---|');
  const layer = new EncoderLayer({ modelDim, numHeads, activation: 'gelu', featureMap: { numFeatures } });
  const attn = new MultiHeadAttention({ modelDim, numHeads, featureMap: { numFeatures } });
  const x = { data: gaussian(seq * modelDim, 0.5), shape: [1, seq, modelDim] };
  const results = {};
  for (const attention of ['favor', 'softmax']) {
    layer.forwardSync(x, { attention });
    const full = median(Array.from({ length: runs }, () => time(() => layer.forwardSync(x, { attention }))));
    const part = median(Array.from({ length: runs }, () => time(() => attn.forwardSync(x, { attention }))));
    results[attention] = full;
    console.log(`| ${attention} | ${full.toFixed(1)} ms | ${part.toFixed(1)} ms |`);
  }
  console.log(`exact / FAVOR+ (layer): ${(results.softmax / results.favor).toFixed(2)}x`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
