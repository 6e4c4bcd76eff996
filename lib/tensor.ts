/**
 * Tensors are plain objects: `{ data: Float32Array, shape: readonly number[] }`,
 * row-major, no copies. Objects with `dims` instead of `shape` (onnxruntime-node's
 * tensors) are accepted as inputs.
 */
import { readTensor } from './validate';

export interface Tensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
}

/** What an input tensor may look like: `shape` or (onnxruntime-node style) `dims`. */
export type TensorLike =
  | { readonly data: Float32Array; readonly shape: readonly number[] }
  | { readonly data: Float32Array; readonly dims: readonly number[] };

/** A boolean mask stored as bytes: nonzero = attend. Shape `[batch, keyLength]`. */
export type MaskLike =
  | { readonly data: Uint8Array; readonly shape: readonly number[] }
  | { readonly data: Uint8Array; readonly dims: readonly number[] };

/** Wraps a Float32Array and a shape into a tensor, checking that they agree. */
export function tensor(data: Float32Array, shape: readonly number[]): Tensor {
  return readTensor({ data, shape }, 'tensor');
}
