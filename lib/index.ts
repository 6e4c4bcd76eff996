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
  type FavorAttentionSyncOptions,
  type SoftmaxAttentionOptions,
  type SoftmaxAttentionSyncOptions,
} from './attention';
export {
  favorAttentionBackward,
  favorAttentionBackwardSync,
  softmaxAttentionBackward,
  softmaxAttentionBackwardSync,
  type AttentionGradients,
  type FavorBackwardOptions,
  type SoftmaxBackwardOptions,
} from './attention-backward';
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
  type SafetensorsDtype,
  type StoredTensor,
  type TensorToWrite,
} from './safetensors';
export type { QuantizedFormat, WeightFormat } from './quantization';
export { tensor, type MaskBytes, type MaskLike, type Shaped, type Tensor, type TensorLike } from './tensor';
export {
  MultiHeadAttention,
  type AttentionForwardOptions,
  type AttentionKind,
  type LayerFeatureOptions,
  type MultiHeadAttentionConfig,
  type MultiHeadAttentionOptions,
} from './layers/multi-head-attention';
export {
  DecoderLayer,
  EncoderLayer,
  type Activation,
  type BlockConfig,
  type DecoderForwardOptions,
  type DecoderLayerOptions,
  type DecoderStateOptions,
  type EncoderForwardOptions,
  type EncoderLayerOptions,
} from './layers/blocks';
export {
  TransformerDecoder,
  TransformerEncoder,
  type StackConfig,
  type TransformerDecoderOptions,
  type TransformerEncoderOptions,
} from './layers/stacks';
export { DecodingState } from './layers/decoding';
export { LayerBase } from './layers/layer';
export type { LoadParametersOptions } from './layers/parameters';
export type { InputGradients } from './layers/layer-training';
export { pendingCalls } from './backend';
export {
  fromBert,
  fromPyTorch,
  toPyTorch,
  type BertMappingOptions,
  type PyTorchMappingOptions,
} from './weights';
export { loadModel, loadModelSync, readModel, writeModel, type Model } from './layers/model-file';
export { AdamW, type AdamWOptions, type StepReport, type Trainable } from './models/adamw';
export type { TrainingAttention } from './models/lm-training';
export { PerformerLM, type TrainingOptions, type GenerateOptions, type LMForwardOptions, type TokenIds, type TokenTensor } from './models/performer-lm';
export { Performer, type PerformerForwardOptions } from './models/performer';
export { PerformerLMState } from './models/lm-state';
export type { PerformerPytorchOptions, RandomModelOptions } from './models/model-common';
export type { DropoutRates, GlobalFeatures, LMConfig, PerformerLMPytorchConfig, PerformerPytorchConfig, PerformerStackConfig, PositionKind, SublayerNorm } from './models/config';
export type { Numerics } from './models/stack';
export type { PerformerPytorchWeights } from './models/checkpoint';
export { TokenSampler, type SamplingOptions, type TokenSamplerState } from './models/sampling';
