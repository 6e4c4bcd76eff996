// Fuzz target: model files. The input is a safetensors file read two ways:
//   readModel           a model written by writeModel (class and options in the metadata,
//                       parameters checked by loadParameters);
//   PerformerLM.fromPerformerPytorch
//                       a performer-pytorch state_dict, for the fixed configurations of
//                       the seed checkpoints (a configuration is the caller's, not the file's).
// A clean outcome is a documented error, or a model that holds exactly the file's
// tensors, writes back to a file that reads to the same model, and computes: a forward
// pass on a small input returns finite values of the right shape or a documented error.
'use strict';
const lib = require('../../../dist');
const { attempt, check, sameBits, aligned } = require('../oracle');

const { readModel, writeModel, readSafetensors, PerformerLM } = lib;
const CLASSES = ['MultiHeadAttention', 'EncoderLayer', 'DecoderLayer', 'TransformerEncoder', 'TransformerDecoder'];

const LM_CONFIGS = Object.values(require('../models').LM_CONFIGS);

function input(shape, seed) {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(seed + 1.7 * i);
  return { data, shape };
}

function checkOutput(result, shape, what) {
  if (!result.ok) return;
  const out = result.value;
  check(JSON.stringify(out.shape) === JSON.stringify(shape), `${what}: output shape ${JSON.stringify(out.shape)}, expected ${JSON.stringify(shape)}`);
  check(out.data.length === shape.reduce((a, b) => a * b, 1), `${what}: output length ${out.data.length}`);
  check(out.data.every(Number.isFinite), `${what}: non-finite output without an error`);
}

function fuzzModel(data) {
  const read = attempt(() => readModel(data), 'readModel');
  if (!read.ok) return;
  const model = read.value;
  const name = CLASSES.find((n) => model instanceof lib[n]);
  check(name !== undefined, `readModel returned ${Object.prototype.toString.call(model)}`);

  // Exactly the file's tensors, bit for bit: the parameters of a float32 model; the stored
  // form (quantized weights and their scales) of any model.
  const file = readSafetensors(data).tensors;
  if (model.weightFormat === 'float32') {
    const params = model.parameters();
    check(JSON.stringify(Object.keys(params).sort()) === JSON.stringify(Object.keys(file).sort()), `${name}: parameters differ from the file's tensors`);
    for (const [key, t] of Object.entries(params)) {
      check(sameBits(t.data, aligned(file[key].data)), `${name}: parameter ${key} differs from the file`);
    }
  }
  const stored = readSafetensors(writeModel(model)).tensors;
  check(JSON.stringify(Object.keys(stored).sort()) === JSON.stringify(Object.keys(file).sort()), `${name}: stored tensors differ from the file's`);
  for (const [key, t] of Object.entries(stored)) {
    check(sameBits(t.data, aligned(file[key].data)), `${name}: stored tensor ${key} differs from the file`);
  }
  // Written back, it reads to the same model.
  const again = readModel(writeModel(model));
  check(again.constructor === model.constructor, `${name}: round trip changed the class`);
  check(again.fingerprint() === model.fingerprint(), `${name}: round trip changed the fingerprint`);

  // It computes (or refuses with a documented error).
  const c = model.config;
  const a = c.attention && typeof c.attention === 'object' ? c.attention : c;
  const x = input([1, 3, a.modelDim], 1);
  const options = {};
  if (name === 'MultiHeadAttention' && a.keyDim !== a.modelDim) options.memory = input([1, 2, a.keyDim], 2);
  if (c.crossAttention === true) options.memory = input([1, 2, a.modelDim], 2);
  checkOutput(attempt(() => model.forwardSync(x, options), `${name}.forwardSync`), x.shape, `${name}.forwardSync`);
}

function fuzzCheckpoint(data) {
  LM_CONFIGS.forEach((config, i) => {
    const read = attempt(() => PerformerLM.fromPerformerPytorch(data, config), `fromPerformerPytorch config ${i}`);
    if (!read.ok) return;
    const lm = read.value;
    // The file's tensors (without the ignored redraw counter and the proj_updater copies) are
    // the model's, in their stored form (quantized weights as the file holds them).
    const params = lm.toPerformerPytorch();
    const file = readSafetensors(data).tensors;
    for (const [key, t] of Object.entries(params)) {
      if (key.startsWith('performer.proj_updater.')) continue;
      const f = file[key] ?? file[key.replace(/^performer\.net\./, 'performer.proj_updater.instance.')];
      if (f === undefined) continue; // a prefix-stripped wrapper's names
      check(sameBits(t.data, aligned(f.data)), `fromPerformerPytorch config ${i}: parameter ${key} differs from the file`);
    }
    const state = lm.createStateSync();
    const step = attempt(() => lm.stepSync(new Int32Array([1, 2]), state), `PerformerLM config ${i} stepSync`);
    if (step.ok) {
      check(step.value.length === config.num_tokens, `stepSync: ${step.value.length} logits`);
      check(step.value.every(Number.isFinite), 'stepSync: non-finite logits without an error');
    }
  });
}

function fuzz(data) {
  fuzzModel(data);
  fuzzCheckpoint(data);
}

module.exports = { fuzz };
