'use strict';
// What int8 and bf16 weights cost in accuracy, against the float32 model:
// - the trained performer-pytorch test model (byte-level, dim 64, depth 2): held-out bits per
//   byte, relative error of the logits, and how many greedy tokens (of 64) match before the first difference;
// - layer outputs: TransformerDecoder (dim 512, 8 heads, 2 layers, ff 2048, seeded random
//   weights) and a dim-512, depth-6 PerformerLM (random weights): relative Frobenius error
//   of the outputs over seeds (median and worst).
//   node experiments/quantization.js [--seeds 5]
const fs = require('node:fs');
const path = require('node:path');
const { PerformerLM, TransformerDecoder } = require('..');
const { Rng } = require('./lib/data');
const { relFrobenius: relativeError, summarize } = require('./lib/stats');

const seeds = Number(process.argv[process.argv.indexOf('--seeds') + 1]) || 5;
const FIXTURES = path.join(__dirname, '..', 'test', 'fixtures', 'performer-pytorch');
const FORMATS = ['float32', 'bf16', 'int8'];

const randn = (seed, n) => new Rng(seed).normals(n, 1);

// Held-out tokens and targets of the trained model (its fixture's io file and cases.json).
function trainedCase() {
  const cases = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'cases.json'), 'utf8'));
  const c = cases.lm_trained_small;
  const bytes = fs.readFileSync(path.join(FIXTURES, 'lm_trained_small.io.safetensors'));
  // The io file keeps tokens as I64 next to float tensors: read them by hand.
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const entry = header['inputs/tokens'];
  const start = 8 + headerLength + entry.data_offsets[0];
  const count = entry.shape.reduce((a, b) => a * b, 1);
  const tokens = Int32Array.from({ length: count }, (_, i) => Number(bytes.readBigInt64LE(start + 8 * i)));
  return { c, tokens: { data: tokens, shape: entry.shape } };
}

function bitsPerByte(logits, targets, L, V) {
  let total = 0;
  let count = 0;
  targets.forEach((row, b) =>
    row.forEach((target, i) => {
      const l = logits.subarray((b * L + i) * V, (b * L + i + 1) * V);
      const max = Math.max(...l);
      const lse = Math.log(l.reduce((sum, v) => sum + Math.exp(v - max), 0)) + max;
      total += (lse - l[target]) / Math.LN2;
      count++;
    }),
  );
  return total / count;
}

function greedy(lm, prompt, n) {
  const state = lm.createStateSync();
  let logits = lm.stepSync(prompt, state);
  const out = [];
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
    out.push(best);
    logits = lm.stepSync(Int32Array.of(best), state);
  }
  return out;
}


console.log('Trained performer-pytorch test model (lm_trained_small), both numerics:');
console.log('| numerics | weights | held-out bits per byte | vs float32 | logits rel. error | greedy tokens equal to float32 before the first difference (of 64) |');
console.log('|---|---|---:|---:|---:|---:|');
const { c, tokens } = trainedCase();
const [, L] = tokens.shape;
const V = c.ctor.num_tokens;
const prompt = Int32Array.from(c.greedy_prompt ?? Array.from(Buffer.from('def ')));
for (const numerics of ['performer-pytorch', 'exact']) {
  let base = null;
  for (const format of FORMATS) {
    const lm = PerformerLM.fromPerformerPytorch(path.join(FIXTURES, 'lm_trained_small.state_dict.safetensors'), c.ctor, { numerics });
    if (format !== 'float32') lm.quantize(format);
    const logits = lm.forwardSync(tokens).data;
    const bits = bitsPerByte(logits, c.heldout_targets, L, V);
    const tokensOut = greedy(lm, prompt, 64);
    if (base === null) base = { bits, logits, tokensOut };
    const differs = tokensOut.findIndex((t, i) => t !== base.tokensOut[i]);
    const same = differs < 0 ? tokensOut.length : differs;
    console.log(
      `| ${numerics} | ${format} | ${bits.toFixed(4)} | ${format === 'float32' ? '-' : `${(((bits - base.bits) / base.bits) * 100).toFixed(2)} %`} | ` +
        `${format === 'float32' ? '-' : relativeError(logits, base.logits).toExponential(2)} | ${format === 'float32' ? '-' : same} |`,
    );
  }
}

console.log(`\nLayer outputs, relative Frobenius error against float32 weights (${seeds} seeds: median / worst):`);
console.log('| model | bf16 | int8 |');
console.log('|---|---:|---:|');
const errors = (make, run) => {
  const byFormat = { bf16: [], int8: [] };
  for (let seed = 1; seed <= seeds; seed++) {
    const ref = run(make(seed), seed);
    for (const format of ['bf16', 'int8']) byFormat[format].push(relativeError(run(make(seed).quantize(format), seed), ref));
  }
  return ['bf16', 'int8'].map((f) => `${summarize(byFormat[f]).median.toExponential(2)} / ${summarize(byFormat[f]).max.toExponential(2)}`);
};
const D = 512;
const decoder = errors(
  (seed) => new TransformerDecoder({ modelDim: D, numHeads: 8, numLayers: 2, ffDim: 2048, seed }),
  (model, seed) => model.forwardSync({ data: randn(seed, 64 * D), shape: [1, 64, D] }, { memory: { data: randn(seed + 99, 32 * D), shape: [1, 32, D] } }).data,
);
console.log(`| TransformerDecoder (dim 512, 2 layers, ff 2048), 64 tokens, 32 memory | ${decoder.join(' | ')} |`);
const lmConfig = { num_tokens: 256, max_seq_len: 4096, dim: 512, depth: 6, heads: 8, dim_head: 64, causal: true };
const lmErrors = errors(
  (seed) => PerformerLM.random(lmConfig, { seed, numerics: 'exact' }),
  (lm, seed) => lm.forwardSync({ data: Int32Array.from(randn(seed, 64), (v) => Math.abs(Math.floor(v * 80)) % 256), shape: [1, 64] }).data,
);
console.log(`| PerformerLM (dim 512, depth 6, random weights) logits, 64 tokens | ${lmErrors.join(' | ')} |`);
