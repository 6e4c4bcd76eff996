// The model behind the service: a TransformerEncoder read from a safetensors file
// (written by writeModel: parameters, class and options; see make-weights.js).
// The server uses only what this module returns:
//   { config, modelDim, forward(x [B, L, modelDim], { attention, signal }) -> Promise<Tensor>, pendingCalls() }
'use strict';
const lib = require('../..');

/** Loads the encoder that writeModel stored in `file` (see make-weights.js). */
async function loadModel(file) {
  const encoder = await lib.loadModel(file);
  if (!(encoder instanceof lib.TransformerEncoder)) {
    throw new Error(`${file}: holds a ${encoder.constructor.name}, the service serves a TransformerEncoder`);
  }
  return {
    config: encoder.options(),
    modelDim: encoder.config.attention.modelDim,
    forward: (x, options) => encoder.forward(x, options),
    pendingCalls: () => lib.pendingCalls(),
  };
}

module.exports = { loadModel };
