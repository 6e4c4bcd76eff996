// The model behind the service: a TransformerEncoder read from a safetensors file
// (the file's metadata carries the encoder's config, see make-weights.js).
// The server uses only what this module returns:
//   { config, modelDim, forward(x [B, L, modelDim], { attention, signal }) -> Promise<Tensor>, pendingCalls() }
'use strict';
const lib = require('../..');

const HAVE_LAYERS = typeof lib.TransformerEncoder === 'function' && typeof lib.loadSafetensors === 'function';

/**
 * Loads the encoder stored in `file`. `config` (the TransformerEncoder options) is read
 * from the file's metadata unless given.
 */
async function loadModel(file, { config } = {}) {
  if (!HAVE_LAYERS) return loadStandIn(file);
  const { tensors, metadata } = await lib.loadSafetensors(file);
  const options = config || (metadata && metadata.config ? JSON.parse(metadata.config) : undefined);
  if (!options) throw new Error(`${file}: no encoder config (metadata 'config') in the file and none given`);
  const encoder = new lib.TransformerEncoder(options);
  encoder.loadParameters(tensors); // strict: a missing, extra or mis-shaped tensor is a RangeError
  return {
    config: encoder.config,
    modelDim: encoder.config.modelDim,
    forward: (x, options) => encoder.forward(x, options),
    pendingCalls: () => lib.pendingCalls(),
  };
}

// ---------------------------------------------------------------------------------
// Stand-in used only while the layer API is not in the library: one self-attention
// with q = k = v = x split into heads, through the library's async attention calls.
const STAND_IN = { modelDim: 256, numHeads: 4, numLayers: 1 };

async function loadStandIn() {
  const { modelDim, numHeads } = STAND_IN;
  const dh = modelDim / numHeads;
  const featureMap = new lib.FeatureMap({ headDim: dh, seed: 1 });
  const split = (x) => {
    const [B, L] = x.shape;
    const out = new Float32Array(x.data.length);
    for (let b = 0; b < B; b++)
      for (let i = 0; i < L; i++)
        for (let h = 0; h < numHeads; h++)
          out.set(x.data.subarray((b * L + i) * modelDim + h * dh, (b * L + i) * modelDim + (h + 1) * dh), ((b * numHeads + h) * L + i) * dh);
    return { data: out, shape: [B, numHeads, L, dh] };
  };
  const merge = (y, B, L) => {
    const out = new Float32Array(y.data.length);
    for (let b = 0; b < B; b++)
      for (let h = 0; h < numHeads; h++)
        for (let i = 0; i < L; i++)
          out.set(y.data.subarray(((b * numHeads + h) * L + i) * dh, ((b * numHeads + h) * L + i + 1) * dh), (b * L + i) * modelDim + h * dh);
    return { data: out, shape: [B, L, modelDim] };
  };
  return {
    config: { ...STAND_IN, standIn: true },
    modelDim,
    async forward(x, { attention = 'favor', signal } = {}) {
      const heads = split(x);
      const y =
        attention === 'softmax'
          ? await lib.softmaxAttention(heads, heads, heads, { signal })
          : await lib.favorAttention(heads, heads, heads, { featureMap, signal });
      return merge(y, x.shape[0], x.shape[1]);
    },
    pendingCalls: () => (typeof lib.pendingCalls === 'function' ? lib.pendingCalls() : NaN),
  };
}

module.exports = { loadModel, HAVE_LAYERS };
