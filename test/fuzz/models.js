// The small models the decoding-state and service targets use, read from the files in
// test/fuzz/models/ (written once by test/fuzz/make-corpus.js). Reading them from files
// keeps their fingerprints, and so the committed state seeds, the same on every machine
// (features sampled at construction could differ in the last bits between CPUs).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const lib = require('../../dist');

const DIR = path.join(__dirname, 'models');

/** Configurations of the PerformerLM checkpoints (a configuration is the caller's, not the file's). */
const LM_CONFIGS = {
  // performer-pytorch numerics with FAVOR+ below the top layer: the state keeps the token history.
  'lm-history': { num_tokens: 12, max_seq_len: 16, dim: 8, depth: 2, heads: 2, dim_head: 4, causal: true, nb_features: 6 },
  // local heads (a ring of recent keys and values), token shift, learned absolute positions.
  'lm-local': {
    num_tokens: 12,
    max_seq_len: 16,
    dim: 8,
    depth: 1,
    heads: 2,
    dim_head: 4,
    causal: true,
    nb_features: 6,
    local_attn_heads: 1,
    local_window_size: 4,
    shift_tokens: true,
    rotary_position_emb: false,
  },
};
/** The options of the layer models (written by writeModel). */
const LAYER_OPTIONS = {
  mha: { class: 'MultiHeadAttention', options: { modelDim: 8, numHeads: 2, causal: true, seed: 1, featureMap: { numFeatures: 6 } } },
  decoder: {
    class: 'TransformerDecoder',
    options: { numLayers: 2, modelDim: 8, numHeads: 2, ffDim: 16, seed: 2, featureMap: { numFeatures: 6 }, finalNorm: true },
  },
  'decoder-layer': {
    class: 'DecoderLayer',
    options: { modelDim: 8, numHeads: 2, ffDim: 16, seed: 3, crossAttention: false, featureMap: { numFeatures: 6 } },
  },
  encoder: { class: 'TransformerEncoder', options: { numLayers: 1, modelDim: 4, numHeads: 2, ffDim: 8, seed: 4, featureMap: { numFeatures: 4 } } },
};

const file = (name) => path.join(DIR, `${name}.safetensors`);

function inputs(shape, seed) {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = 0.5 * Math.sin(seed + 1.3 * i);
  return { data, shape };
}

let cache = null;

/**
 * The decoding models: { name, model, fresh(), step(state) } where fresh() makes a
 * state and step(state) advances it by one token (as a loaded state would be used).
 */
function decodingModels() {
  if (cache) return cache;
  const layer = (name) => lib.readModel(fs.readFileSync(file(name)));
  const mha = layer('mha');
  const decoder = layer('decoder');
  const decoderLayer = layer('decoder-layer');
  const lms = Object.entries(LM_CONFIGS).map(([name, config]) => ({
    name,
    model: lib.PerformerLM.fromPerformerPytorch(fs.readFileSync(file(name)), config),
  }));
  const D = 8;
  cache = [
    { name: 'mha', model: mha, fresh: () => mha.createStateSync(2), step: (s) => mha.stepSync(inputs([s.batch, 1, D], s.position), s) },
    {
      name: 'decoder',
      model: decoder,
      fresh: () => decoder.createStateSync(2, { memory: inputs([2, 3, D], 7) }),
      step: (s) => decoder.stepSync(inputs([s.batch, 1, D], s.position), s),
    },
    {
      name: 'decoder-layer',
      model: decoderLayer,
      fresh: () => decoderLayer.createStateSync(1),
      step: (s) => decoderLayer.stepSync(inputs([s.batch, 1, D], s.position), s),
    },
    ...lms.map(({ name, model }) => ({
      name,
      model,
      fresh: () => model.createStateSync(),
      step: (s) => model.stepSync(new Int32Array([(s.position * 5 + 1) % 12]), s),
    })),
  ];
  return cache;
}

module.exports = { DIR, LM_CONFIGS, LAYER_OPTIONS, decodingModels, inputs, file };
