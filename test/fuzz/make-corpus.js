#!/usr/bin/env node
// Writes the fuzz targets' models (test/fuzz/models/) and seed corpora
// (test/fuzz/corpus/<target>/seed-*): valid files made by the library itself and
// hand-made edge cases. Run after `npm run build:ts`; the output is committed.
//   node test/fuzz/make-corpus.js
// Files named seed-* are replaced; other corpus files (regressions, entries merged from
// long runs) are kept. The models are rewritten only with --models (their fingerprints
// are in the committed states, which this script then writes anew).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const lib = require('../../dist');
const { LM_CONFIGS, LAYER_OPTIONS, decodingModels, inputs, file, DIR } = require('./models');
const { unframe } = require('./targets/decoding-state-framed');
const { unframe: unframeModel } = require('./targets/model-file-framed');

const CORPUS = path.join(__dirname, 'corpus');

function writeCorpus(target, entries) {
  const dir = path.join(CORPUS, target);
  fs.mkdirSync(dir, { recursive: true });
  for (const name of fs.readdirSync(dir)) if (name.startsWith('seed-')) fs.rmSync(path.join(dir, name));
  for (const [name, bytes] of Object.entries(entries)) fs.writeFileSync(path.join(dir, `seed-${name}`), bytes);
  console.log(`${target}: ${Object.keys(entries).length} seeds`);
}

// ---- models ----
if (process.argv.includes('--models') || !fs.existsSync(file('mha'))) {
  fs.mkdirSync(DIR, { recursive: true });
  for (const [name, { class: cls, options }] of Object.entries(LAYER_OPTIONS)) {
    fs.writeFileSync(file(name), lib.writeModel(new lib[cls](options)));
  }
  Object.entries(LM_CONFIGS).forEach(([name, config], i) => {
    fs.writeFileSync(file(name), lib.writeSafetensors(lib.PerformerLM.random(config, { seed: 10 + i }).parameters()));
  });
  console.log('models written');
}

// ---- safetensors ----
/** A safetensors file from a header object (or raw header text) and data bytes. */
function safetensors(header, data = Buffer.alloc(0), pad = true) {
  let json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  if (pad && json.length % 8 !== 0) json = Buffer.concat([json, Buffer.alloc(8 - (json.length % 8), 0x20)]);
  const out = Buffer.alloc(8 + json.length + data.length);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  Buffer.from(data).copy(out, 8 + json.length);
  return out;
}
const f32 = (values) => Buffer.from(new Float32Array(values).buffer);
const u16 = (values) => Buffer.from(new Uint16Array(values).buffer);
const f64 = (values) => Buffer.from(new Float64Array(values).buffer);
const special = [0, -0, 1.5, -2, Infinity, -Infinity, NaN, 1e-45, 3.4e38];

writeCorpus('safetensors', {
  empty: lib.writeSafetensors({}),
  f32: lib.writeSafetensors({ w: { data: new Float32Array(special.slice(0, 6)), shape: [2, 3] } }),
  'f32-special-metadata': lib.writeSafetensors({ a: { data: new Float32Array(special), shape: [9] }, s: { data: new Float32Array([7]), shape: [] } }, { format: 'pt', note: 'ü' }),
  'zero-size': safetensors({ e: { dtype: 'F32', shape: [0, 4], data_offsets: [0, 0] }, z: { dtype: 'BF16', shape: [0], data_offsets: [0, 0] } }),
  'f32-unaligned': safetensors({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, f32([1, 2]), false),
  f16: safetensors({ h: { dtype: 'F16', shape: [2, 2], data_offsets: [0, 8] } }, u16([0x3c00, 0x8001, 0x7c00, 0x7e00])),
  bf16: safetensors({ b: { dtype: 'BF16', shape: [3], data_offsets: [0, 6] } }, u16([0x3f80, 0xff80, 0x0001])),
  f64: safetensors({ d: { dtype: 'F64', shape: [2], data_offsets: [0, 16] } }, f64([1e300, -1e-300])),
  'mixed-i64': safetensors(
    { __metadata__: { k: 'v' }, ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] }, w: { dtype: 'F32', shape: [1], data_offsets: [16, 20] } },
    Buffer.concat([Buffer.alloc(16), f32([3])]),
  ),
  'proto-names': safetensors(
    '{"__proto__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"constructor":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"__metadata__":{"__proto__":"x"}}',
    f32([1, 2]),
  ),
  'duplicate-name': safetensors('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32([1])),
  gap: safetensors({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, f32([1, 2])),
  overlap: safetensors({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, f32([1, 2])),
  'shape-mismatch': safetensors({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32([1, 2])),
  'not-object': safetensors('[1,2]'),
  'huge-header-length': Buffer.from('ffffffffffffffff7b7d', 'hex'),
  truncated: lib.writeSafetensors({ w: { data: new Float32Array([1, 2, 3]), shape: [3] } }).subarray(0, 20),
  short: Buffer.from([1, 0, 0]),
});

// ---- model files ----
const modelFiles = {};
for (const name of Object.keys(LAYER_OPTIONS)) modelFiles[name] = fs.readFileSync(file(name));
modelFiles['encoder-layer-gelu'] = lib.writeModel(
  new lib.EncoderLayer({ modelDim: 4, numHeads: 1, ffDim: 4, activation: 'gelu', normFirst: true, seed: 5, featureMap: { numFeatures: 3, kernel: 'relu' } }),
);
modelFiles['mha-cross-softmax'] = lib.writeModel(
  new lib.MultiHeadAttention({ modelDim: 4, numHeads: 2, headDim: 3, keyDim: 6, bias: false, attention: 'softmax', seed: 6, featureMap: { numFeatures: 2, orthogonal: false } }),
);
for (const [name, config] of Object.entries(LM_CONFIGS)) {
  modelFiles[name] = fs.readFileSync(file(name));
  // performer-pytorch's own form: duplicates under proj_updater.instance. and the redraw counter.
  const lm = lib.PerformerLM.fromPerformerPytorch(fs.readFileSync(file(name)), config);
  modelFiles[`${name}-state-dict`] = lib.writeSafetensors(lm.toPerformerPytorch());
  // Quantized weights: I8 with their scales, and BF16.
  modelFiles[`${name}-int8`] = lib.writeSafetensors(lib.PerformerLM.fromPerformerPytorch(fs.readFileSync(file(name)), config).quantize('int8').toPerformerPytorch());
  modelFiles[`${name}-bf16`] = lib.writeSafetensors(lm.quantize('bf16').toPerformerPytorch());
}
modelFiles['encoder-int8'] = lib.writeModel(new lib.TransformerEncoder({ modelDim: 4, numHeads: 1, numLayers: 1, ffDim: 4, seed: 7, featureMap: { numFeatures: 3 } }).quantize('int8'));
modelFiles['no-metadata'] = lib.writeSafetensors({ 'q.weight': { data: new Float32Array(4), shape: [2, 2] } });
writeCorpus('model-file', modelFiles);
writeCorpus('model-file-framed', Object.fromEntries(Object.entries(modelFiles).map(([name, bytes]) => [name, unframeModel(bytes)])));

// ---- decoding states ----
const states = {};
for (const { name, fresh, step } of decodingModels()) {
  const state = fresh();
  states[`${name}-fresh`] = Buffer.from(state.serialize());
  for (let i = 0; i < 3; i++) step(state);
  states[`${name}-3`] = Buffer.from(state.serialize());
}
writeCorpus('decoding-state', states);
writeCorpus('decoding-state-framed', Object.fromEntries(Object.entries(states).map(([name, bytes]) => [name, unframe(bytes)])));

// ---- service requests ----
const text = (head, body) => Buffer.concat([Buffer.from(`${head}\n\n`), Buffer.isBuffer(body) ? body : Buffer.from(body)]);
const rows = (B, L) => Array.from({ length: B }, (_, b) => Array.from({ length: L }, (_, i) => [0.5, -1, b + i / 4, 2e-3]));
const floats = (n) => Buffer.from(inputs([n], 3).data.buffer);
writeCorpus('service', {
  'json-rows': Buffer.from(JSON.stringify({ sequence: rows(1, 3)[0] })),
  'json-batch-full': text('type: application/json', JSON.stringify({ sequence: rows(2, 2), full: true, attention: 'softmax' })),
  'json-flat': text('type: application/json', JSON.stringify({ sequence: { data: Array.from({ length: 8 }, (_, i) => i / 8), shape: [2, 4] }, full: '1' })),
  'json-flat-batch': text('type: application/json', JSON.stringify({ sequence: { data: Array.from({ length: 12 }, (_, i) => -i), shape: [3, 1, 4] } })),
  'json-errors': text('type: application/json', '{"sequence":[[1,2,3,"4"]],"attention":"fast","extra":1}'),
  'json-empty': text('type: application/json', ''),
  'binary-query': text('type: application/octet-stream\nquery: shape=2,4&full=1', floats(8)),
  'binary-header-batch': text('type: application/octet-stream\nx-shape: 3,1,4\nx-attention: softmax\naccept: application/octet-stream', floats(12)),
  'binary-both': text('type: application/octet-stream\nquery: shape=1,4\nx-shape: 1,4\nx-full: true', floats(4)),
  'binary-nan': text('type: application/octet-stream\nquery: shape=1,4', Buffer.from(new Float32Array([1, NaN, 2, 3]).buffer)),
  'binary-too-long': text('type: application/octet-stream\nquery: shape=9,4', floats(36)),
  'text-plain': text('type: text/plain', 'hello'),
  'no-type': text('x-shape: 1,4', floats(4)),
});
