// ES module entry point: the same module as the CommonJS build (one addon, one thread
// pool, one FeatureMap class whichever way it is imported), with named exports.
// test/package.test.ts checks that this list matches the CommonJS exports.
import performer from '../dist/index.js';

export const {
  FeatureMap,
  MAX_HEADER_BYTES,
  backendInfo,
  favorAttention,
  favorAttentionSync,
  fromBert,
  fromPyTorch,
  loadSafetensors,
  loadSafetensorsSync,
  measureFmaPeak,
  readSafetensors,
  setBackend,
  softmaxAttention,
  softmaxAttentionSync,
  tensor,
  toPyTorch,
  writeSafetensors,
} = performer;
export default performer;
