/**
 * Tensors are plain objects: `{ data: Float32Array, shape: readonly number[] }`,
 * row-major, no copies. Objects with `dims` instead of `shape` (onnxruntime-node's
 * tensors) are accepted as inputs.
 */
import { readTensor } from './validate';

/** A float32 tensor: `data` holds the product of `shape` elements, row-major (last index fastest). */
export interface Tensor {
  /** The elements, row-major; used without copies. */
  readonly data: Float32Array;
  /** The dimensions, for example `[B, H, L, d]`. */
  readonly shape: readonly number[];
}

/**
 * An input array with its dimensions, named `shape` or (onnxruntime-node style) `dims`:
 * {@link TensorLike} for float32 tensors, {@link MaskBytes} for masks.
 */
export type Shaped<A> =
  | {
      /** The elements, row-major. */
      readonly data: A;
      /** The dimensions. */
      readonly shape: readonly number[];
    }
  | {
      /** The elements, row-major. */
      readonly data: A;
      /** The dimensions (onnxruntime-node's name for them). */
      readonly dims: readonly number[];
    };

/** What an input tensor may look like: `shape` or (onnxruntime-node style) `dims`. */
export type TensorLike = Shaped<Float32Array>;

/**
 * Mask bytes, one per key, and their shape `[batch, keyLength]`: nonzero = attend (keep),
 * 0 = padding (ignore). This is the opposite of PyTorch's `key_padding_mask` (True =
 * ignore); pass a PyTorch mask as `{ ignore: ... }` (see {@link MaskLike}).
 */
export type MaskBytes = Shaped<Uint8Array>;

/**
 * A key padding mask, `[batch, keyLength]` bytes, in one of three forms:
 * - `{ data, shape }`: nonzero = attend, 0 = padding (the library's convention);
 * - `{ keep: { data, shape } }`: the same, with the polarity spelled out;
 * - `{ ignore: { data, shape } }`: nonzero = padding, 0 = attend, as PyTorch's
 *   `key_padding_mask` (True = ignore): `{ ignore: { data: Uint8Array.from(mask), shape } }`.
 */
export type MaskLike =
  | MaskBytes
  | {
      /** Nonzero = attend, 0 = padding (the library's polarity, spelled out). */
      readonly keep: MaskBytes;
    }
  | {
      /** Nonzero = padding, 0 = attend (PyTorch's `key_padding_mask` polarity). */
      readonly ignore: MaskBytes;
    };

/**
 * Wraps a Float32Array and a shape into a tensor, checking that they agree (no copy).
 * @throws TypeError (`ERR_INVALID_ARG_TYPE`) when `data` is not a Float32Array or `shape` not
 *   an array of integers; RangeError (`ERR_OUT_OF_RANGE`) when the shape's product is not `data.length`.
 */
export function tensor(data: Float32Array, shape: readonly number[]): Tensor {
  return readTensor({ data, shape }, 'tensor');
}
