// The model behind the service: a TransformerEncoder read from a safetensors file
// (the file's metadata carries the encoder's constructor options, see make-weights.js).
// The server uses only what this module returns:
//   { config, modelDim, forward(x [B, L, modelDim], { attention, signal }) -> Promise<Tensor>, pendingCalls() }
'use strict';
const lib = require('../..');

/**
 * Loads the encoder stored in `file`. `config` (the TransformerEncoder constructor options)
 * is read from the file's metadata (key 'config', JSON) unless given.
 */
async function loadModel(file, { config } = {}) {
  const { tensors, metadata } = await lib.loadSafetensors(file);
  const options = config || (metadata && metadata.config ? JSON.parse(metadata.config) : undefined);
  if (!options) throw new Error(`${file}: no encoder config (metadata 'config') in the file and none given`);
  const encoder = new lib.TransformerEncoder(options);
  encoder.loadParameters(tensors); // strict: a missing, extra or mis-shaped tensor is a RangeError
  return {
    config: options,
    modelDim: encoder.config.attention.modelDim,
    forward: (x, options) => encoder.forward(x, options),
    pendingCalls: () => lib.pendingCalls(),
  };
}

module.exports = { loadModel };
