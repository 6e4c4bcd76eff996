/**
 * performer-attention: FAVOR+ (Performer) linear attention and exact blockwise
 * softmax attention for Node.js, on C++ SIMD kernels.
 */
export {
  favorAttention,
  favorAttentionSync,
  softmaxAttention,
  softmaxAttentionSync,
  type FavorAttentionOptions,
  type SoftmaxAttentionOptions,
} from './attention';
export {
  backendInfo,
  measureFmaPeak,
  setBackend,
  type BackendInfo,
  type BackendOptions,
  type FmaPeak,
  type FmaPeakOptions,
  type Isa,
} from './backend';
export type { CodedError, ErrorCode } from './errors';
export {
  FeatureMap,
  type AdaptiveParameters,
  type FeatureKernel,
  type FeatureMapOptions,
  type FeaturesOptions,
  type FromProjectionOptions,
  type NormScaling,
} from './feature-map';
export {
  MAX_HEADER_BYTES,
  loadSafetensors,
  loadSafetensorsSync,
  readSafetensors,
  writeSafetensors,
  type ReadSafetensorsOptions,
  type Safetensors,
} from './safetensors';
export { tensor, type MaskLike, type Tensor, type TensorLike } from './tensor';
export {
  fromBert,
  fromPyTorch,
  toPyTorch,
  type BertMappingOptions,
  type PyTorchMappingOptions,
} from './weights';
