/**
 * The defaults and limits of options that several entry points share (the attention
 * functions, the layers, the models): each is defined here once so that the public
 * functions, the layers and their docs cannot drift apart. The native addon takes every
 * one of these values as given (it has no defaults of its own).
 */

/** Causal FAVOR+ rows per chunk when `chunkSize` is not given (fastest on the machines measured). */
export const DEFAULT_CHUNK_SIZE = 32;
/** Largest causal FAVOR+ `chunkSize` (the native core's `kMaxChunkSize`). */
export const MAX_CHUNK_SIZE = 4096;
/** `kernelEpsilon` when not given: added to every feature of the generalized kernels. */
export const DEFAULT_KERNEL_EPSILON = 1e-3;
/** `layerNormEps` when not given (PyTorch's `nn.LayerNorm` default). */
export const DEFAULT_LAYER_NORM_EPS = 1e-5;

/** The softmax scale when `scale` is not given: 1 / sqrt(headDim). */
export function defaultSoftmaxScale(headDim: number): number {
  return 1 / Math.sqrt(headDim);
}
