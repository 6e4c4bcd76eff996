// ES module entry point: the same module as the CommonJS build (one addon, one thread
// pool, one FeatureMap class whichever way it is imported), with named exports.
// test/package.test.ts checks that this list matches the CommonJS exports.
import performer from '../dist/index.js';

export const {
  backendInfo,
  DecoderLayer,
  DecodingState,
  EncoderLayer,
  favorAttention,
  favorAttentionBackward,
  favorAttentionBackwardSync,
  favorAttentionSync,
  FeatureMap,
  fromBert,
  fromPyTorch,
  LayerBase,
  loadModel,
  loadModelSync,
  loadSafetensors,
  loadSafetensorsSync,
  MAX_HEADER_BYTES,
  measureFmaPeak,
  MultiHeadAttention,
  Performer,
  PerformerLM,
  PerformerLMState,
  pendingCalls,
  readModel,
  readSafetensors,
  setBackend,
  softmaxAttention,
  softmaxAttentionBackward,
  softmaxAttentionBackwardSync,
  softmaxAttentionSync,
  tensor,
  toPyTorch,
  TransformerDecoder,
  TransformerEncoder,
  writeModel,
  writeSafetensors,
} = performer;
export default performer;
