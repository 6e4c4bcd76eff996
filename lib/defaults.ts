/**
 * The defaults and limits of options that several entry points share (the attention
 * functions, feature maps, the layers, the models): each is defined here once so that
 * they cannot drift apart. The native addon has no defaults for these options: it takes
 * the values these give.
 */

/** Causal FAVOR+ rows per chunk when `chunkSize` is not given (fastest on the machines measured). */
export const DEFAULT_CHUNK_SIZE = 32;
/** Largest causal FAVOR+ `chunkSize` (the native core's `kMaxChunkSize`). */
export const MAX_CHUNK_SIZE = 4096;
/** FAVOR+ `epsilon` when not given: nothing added to the stabilized features (the exact estimator). */
export const DEFAULT_FAVOR_EPSILON = 0;
/** The feature kernel when `kernel` is not given (FAVOR+). */
export const DEFAULT_KERNEL = 'softmax';
/** Orthogonal random features unless `orthogonal: false`. */
export const DEFAULT_ORTHOGONAL = true;
/** Projection row norms when `normScaling` is not given (unbiased). */
export const DEFAULT_NORM_SCALING = 'chi';
/** Largest `numFeatures` (m) of a feature map. */
export const MAX_NUM_FEATURES = 1 << 20;
/** Largest head width d. */
export const MAX_HEAD_DIM = 1 << 16;
/** `kernelEpsilon` when not given: added to every feature of the generalized kernels. */
export const DEFAULT_KERNEL_EPSILON = 1e-3;
/** `layerNormEps` when not given (PyTorch's `nn.LayerNorm` default). */
export const DEFAULT_LAYER_NORM_EPS = 1e-5;

/** The softmax scale when `scale` is not given: 1 / sqrt(headDim). */
export function defaultSoftmaxScale(headDim: number): number {
  return 1 / Math.sqrt(headDim);
}
