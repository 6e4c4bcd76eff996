/**
 * Attention functions. Shape legend:
 *   B = batch, H = heads, Lq = query length, Lk = key length, d = head dim, Dv = value dim
 *   query [B, H, Lq, d], key [B, H, Lk, d], value [B, H, Lk, Dv]  ->  output [B, H, Lq, Dv]
 *   keyPaddingMask [B, Lk] (Uint8Array, 1 = attend, 0 = padding)
 */
import { pinBuffers, readSignal, runAsync, type NativeAsync } from './async-call';
import { DEFAULT_CHUNK_SIZE, DEFAULT_FAVOR_EPSILON, defaultSoftmaxScale, MAX_CHUNK_SIZE } from './defaults';
import { describe, rangeError, typeError } from './errors';
import { FeatureMap } from './feature-map';
import { native, type NativeDims } from './native';
import type { MaskLike, Tensor, TensorLike } from './tensor';
import {
  checkNoOverlap,
  formatShape,
  newFloat32Array,
  readBoolean,
  readInteger,
  readMask,
  readNumber,
  readOptions,
  readTensor,
} from './validate';

export interface FavorAttentionOptions {
  /**
   * The features to use. With `softmax-opt` / `softmax-dense` and no fixed parameters, the
   * parameters are estimated per (batch, head) from this call's queries and attended keys
   * (bidirectional only: causal calls need fixed parameters, else RangeError). Default: `new FeatureMap({ headDim: d, seed: 0 })`, made once per d and reused. */
  featureMap?: FeatureMap;
  /** Query i attends key j only when j <= i + (Lk - Lq) (bottom-right aligned). Default false. */
  causal?: boolean;
  /** [B, Lk] Uint8Array, nonzero = attend. A padded key leaves numerator and normalizer alike. */
  keyPaddingMask?: MaskLike;
  /**
   * Added to every stabilized query and key feature (each feature is then at most
   * 1 + epsilon), for models trained with implementations that add 1e-6. Features
   * are stabilized against the keys each query attends (a causal row never depends
   * on later keys). Default 0 (exact).
   */
  epsilon?: number;
  /** Causal only: rows per chunk (1 = the recurrent form). Same result up to rounding. Default 32 (fastest on the machines measured; the work inside a chunk grows with its size). */
  chunkSize?: number;
  /** A preallocated output [B, H, Lq, Dv] to write into (it is also what is returned). */
  out?: TensorLike;
  /**
   * Async call only (the sync twin rejects it with a TypeError, `ERR_INVALID_ARG_VALUE`).
   * Aborting rejects the Promise with an AbortError (name 'AbortError', code 'ABORT_ERR',
   * the signal's reason as `cause`): at once when already aborted; a queued call then skips
   * its work; a running one stops at its next block of rows. `out` may be partly written.
   */
  signal?: AbortSignal;
}

export interface SoftmaxAttentionOptions {
  /** Query i attends key j only when j <= i + (Lk - Lq) (bottom-right aligned). Default false. */
  causal?: boolean;
  /** [B, Lk] Uint8Array, nonzero = attend. */
  keyPaddingMask?: MaskLike;
  /** Multiplies q.k before the softmax. Default 1 / sqrt(d). */
  scale?: number;
  /** A preallocated output [B, H, Lq, Dv] to write into (it is also what is returned). */
  out?: TensorLike;
  /**
   * Async call only (the sync twin rejects it with a TypeError, `ERR_INVALID_ARG_VALUE`).
   * Aborting rejects the Promise with an AbortError (name 'AbortError', code 'ABORT_ERR',
   * the signal's reason as `cause`): at once when already aborted; a queued call then skips
   * its work; a running one stops at its next block of rows. `out` may be partly written.
   */
  signal?: AbortSignal;
}

/** Options of {@link favorAttentionSync}: those of {@link favorAttention} without `signal` (a blocking call cannot be aborted). */
export type FavorAttentionSyncOptions = Omit<FavorAttentionOptions, 'signal'>;
/** Options of {@link softmaxAttentionSync}: those of {@link softmaxAttention} without `signal`. */
export type SoftmaxAttentionSyncOptions = Omit<SoftmaxAttentionOptions, 'signal'>;

const FAVOR_OPTIONS = ['featureMap', 'causal', 'keyPaddingMask', 'epsilon', 'chunkSize', 'out'] as const;
const SOFTMAX_OPTIONS = ['causal', 'keyPaddingMask', 'scale', 'out'] as const;
// `signal` is known to the async calls only: a sync call cannot be aborted.
const known = (list: readonly string[], async: boolean) => (async ? [...list, 'signal'] : list);

const LEGEND = '[batch, heads, seq, headDim]';

interface Prepared {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  out: Float32Array;
  /** The caller's `out` (null when the library allocated the output). */
  givenOut: Float32Array | null;
  outShape: readonly number[];
  dims: NativeDims;
  causal: boolean;
  keyPadding: Uint8Array | null;
}

// `outName` names o.out in messages (the backward passes hand the output gradient there).
function prepare(fn: string, query: unknown, key: unknown, value: unknown, o: Record<string, unknown>, outName = `${fn} options.out`): Prepared {
  const q = readTensor(query, 'query', 4, LEGEND);
  const k = readTensor(key, 'key', 4, LEGEND);
  const v = readTensor(value, 'value', 4, LEGEND);
  const [B, H, Lq, d] = q.shape;
  const [, , Lk] = k.shape;
  const Dv = v.shape[3];
  const expectedKey = [B, H, k.shape[2], d];
  if (k.shape.some((s, i) => s !== expectedKey[i])) {
    throw rangeError(`key: expected shape ${formatShape(expectedKey)} to match query's batch, heads and headDim, received ${formatShape(k.shape)}`);
  }
  const expectedValue = [B, H, Lk, v.shape[3]];
  if (v.shape.some((s, i) => s !== expectedValue[i])) {
    throw rangeError(`value: expected shape ${formatShape(expectedValue)} to match key's batch, heads and length, received ${formatShape(v.shape)}`);
  }
  const causal = readBoolean(o.causal, `${fn} options.causal`, false);
  const keyPadding =
    o.keyPaddingMask === undefined ? null : readMask(o.keyPaddingMask, `${fn} options.keyPaddingMask`, [B, Lk]);
  const outShape = Object.freeze([B, H, Lq, Dv]);
  let out: Float32Array;
  if (o.out !== undefined) {
    const given = readTensor(o.out, outName, 4, '[batch, heads, queryLength, valueDim]');
    if (given.shape.some((s, i) => s !== outShape[i])) {
      throw rangeError(`${outName}: expected shape ${formatShape(outShape)}, received ${formatShape(given.shape)}`);
    }
    for (const [t, name] of [[q, 'query'], [k, 'key'], [v, 'value']] as const) {
      checkNoOverlap(given.data, outName, t.data, name);
    }
    out = given.data;
  } else {
    // A fresh output costs page faults on first write (milliseconds for large
    // ones): callers that repeat calls should pass `out`.
    out = newFloat32Array(B * H * Lq * Dv, `${fn} output ${formatShape(outShape)}`);
  }
  return {
    q,
    k,
    v,
    out,
    givenOut: o.out !== undefined ? out : null,
    outShape,
    dims: { batch: B, heads: H, queryLength: Lq, keyLength: Lk, headDim: d, valueDim: Dv },
    causal,
    keyPadding,
  };
}

const defaultMaps = new Map<number, FeatureMap>();

/** @internal Reads and checks a FAVOR call's arguments; `outName` as for prepare. */
export function favorArgs(query: unknown, key: unknown, value: unknown, options: unknown, fn: string, async: boolean, outName?: string) {
  const o = readOptions<FavorAttentionOptions>(options, `${fn} options`, known(FAVOR_OPTIONS, async)) as Record<string, unknown>;
  const p = prepare(fn, query, key, value, o, outName);
  let map = o.featureMap as FeatureMap | undefined;
  if (map === undefined) {
    const d = p.dims.headDim;
    map = defaultMaps.get(d);
    if (map === undefined) {
      map = new FeatureMap({ headDim: d, seed: 0 });
      defaultMaps.set(d, map);
    }
  } else if (!(map instanceof FeatureMap)) {
    throw typeError(`${fn} options.featureMap: expected a FeatureMap, received ${describe(map)}`);
  }
  const featureMap = map as FeatureMap;
  if (featureMap.headDim !== p.dims.headDim) {
    throw rangeError(
      `${fn} options.featureMap: headDim ${featureMap.headDim} does not match query and key headDim ${p.dims.headDim}`,
    );
  }
  const epsilon = readNumber(o.epsilon, `${fn} options.epsilon`, DEFAULT_FAVOR_EPSILON, { min: 0 });
  if (epsilon !== 0 && featureMap.kernel === 'trig') {
    throw rangeError(`${fn} options.epsilon: applies to positive feature maps, not to signed 'trig' features`, 'ERR_INVALID_ARG_VALUE');
  }
  const chunkSize = readInteger(o.chunkSize, `${fn} options.chunkSize`, DEFAULT_CHUNK_SIZE, 1, MAX_CHUNK_SIZE);
  if (p.causal && (featureMap.kernel === 'softmax-opt' || featureMap.kernel === 'softmax-dense')) {
    const fixed = featureMap.parameters;
    if (fixed === null) {
      throw rangeError(
        `${fn} options.featureMap: causal attention with '${featureMap.kernel}' needs fixed parameters ` +
          '(featureMap.calibrate on a prefix such as the prompt, or featureMap.setParameters): ' +
          'estimating them from this call would make a row depend on keys it cannot attend',
        'ERR_INVALID_ARG_VALUE',
      );
    }
  }
  const params = featureMap.parameters;
  if (params !== null && params.heads !== 1 && params.heads !== p.dims.heads) {
    throw rangeError(
      `${fn} options.featureMap: its parameters have ${params.heads} sets; expected 1 or one per head (${p.dims.heads})`,
    );
  }
  const nativeOptions = {
    ...featureMap.nativeSpec(),
    causal: p.causal,
    keyPadding: p.keyPadding,
    epsilon,
    chunkSize,
  };
  const signal = readSignal(o.signal, `${fn} options.signal`);
  return { p, signal, args: [p.q.data, p.k.data, p.v.data, p.out, p.dims, nativeOptions] as const };
}

/** @internal Reads and checks a softmax attention call's arguments; `outName` as for prepare. */
export function softmaxArgs(query: unknown, key: unknown, value: unknown, options: unknown, fn: string, async: boolean, outName?: string) {
  const o = readOptions<SoftmaxAttentionOptions>(options, `${fn} options`, known(SOFTMAX_OPTIONS, async)) as Record<string, unknown>;
  const p = prepare(fn, query, key, value, o, outName);
  const scale = readNumber(o.scale, `${fn} options.scale`, defaultSoftmaxScale(p.dims.headDim));
  const nativeOptions = { causal: p.causal, keyPadding: p.keyPadding, scale };
  const signal = readSignal(o.signal, `${fn} options.signal`);
  return { p, signal, args: [p.q.data, p.k.data, p.v.data, p.out, p.dims, nativeOptions] as const };
}

// Runs a checked call on the native worker threads; its arrays stay pinned meanwhile.
async function runPrepared(call: { p: Prepared; args: readonly unknown[]; signal: AbortSignal | undefined }, run: NativeAsync): Promise<Tensor> {
  const { p, args, signal } = call;
  pinBuffers([p.q.data, p.k.data, p.v.data, p.givenOut, p.keyPadding]);
  const data = await runAsync(run, args, signal);
  return { data, shape: p.outShape };
}

/**
 * FAVOR attention (Performer): softmax attention estimated with random features,
 * in time and memory linear in the sequence length. Runs on native worker threads;
 * the event loop stays free. Bad arguments reject the Promise with a TypeError or
 * RangeError. While the Promise is pending the native worker reads the inputs and writes the
 * output in place, without copies: their ArrayBuffers are marked untransferable
 * (`worker_threads.markAsUntransferable`, for good), so transferring one (postMessage or
 * structuredClone with a transfer list), during the call or later, never detaches it (Node 20
 * copies it, Node 21 and later throw a DataCloneError): the worker never uses memory that was
 * handed away. Writing to an input
 * meanwhile (for example through a SharedArrayBuffer) is not detected: the result is then an
 * unspecified mix of old and new values (never a crash). An already detached input is a
 * TypeError (`ERR_INVALID_STATE`).
 * @param query `[B, H, Lq, d]` float32.
 * @param key `[B, H, Lk, d]` float32.
 * @param value `[B, H, Lk, Dv]` float32.
 * @returns `[B, H, Lq, Dv]` float32 (`options.out` when given). A query row that can attend
 *   no key gets zeros.
 * @throws TypeError (`ERR_INVALID_ARG_TYPE`, `ERR_INVALID_ARG_VALUE`) for a wrong type or an
 *   unknown option; RangeError (`ERR_OUT_OF_RANGE`) for mismatched shapes, a bad number, or
 *   NaN / ±Infinity in an input (naming the tensor and the index). The Promise rejects with these.
 */
export async function favorAttention(
  query: TensorLike,
  key: TensorLike,
  value: TensorLike,
  options?: FavorAttentionOptions,
): Promise<Tensor> {
  return runPrepared(favorArgs(query, key, value, options, 'favorAttention', true), native().favorAttentionAsync as NativeAsync);
}

/**
 * The blocking twin of {@link favorAttention}: same arguments, result and errors (thrown).
 * @param query `[B, H, Lq, d]` float32.
 * @param key `[B, H, Lk, d]` float32.
 * @param value `[B, H, Lk, Dv]` float32.
 * @returns `[B, H, Lq, Dv]` float32 (`options.out` when given). A query row that can attend
 *   no key gets zeros.
 * @throws TypeError (`ERR_INVALID_ARG_TYPE`, `ERR_INVALID_ARG_VALUE`) for a wrong type or an
 *   unknown option; RangeError (`ERR_OUT_OF_RANGE`) for mismatched shapes, a bad number, or
 *   NaN / ±Infinity in an input (naming the tensor and the index).
 */
export function favorAttentionSync(
  query: TensorLike,
  key: TensorLike,
  value: TensorLike,
  options?: FavorAttentionSyncOptions,
): Tensor {
  const { p, args } = favorArgs(query, key, value, options, 'favorAttentionSync', false);
  return { data: native().favorAttentionSync(...args), shape: p.outShape };
}

/**
 * Exact softmax attention, softmax(q k^T * scale) v, computed blockwise with an
 * online softmax: O(Lq * Lk) time, O(block^2) extra memory. Runs on native worker
 * threads; inputs and output are used in place as for {@link favorAttention} (their
 * ArrayBuffers become untransferable; writes during the call give an unspecified mix).
 * @param query `[B, H, Lq, d]` float32.
 * @param key `[B, H, Lk, d]` float32.
 * @param value `[B, H, Lk, Dv]` float32.
 * @returns `[B, H, Lq, Dv]` float32 (`options.out` when given). A query row that can attend
 *   no key gets zeros.
 * @throws TypeError (`ERR_INVALID_ARG_TYPE`, `ERR_INVALID_ARG_VALUE`) for a wrong type or an
 *   unknown option; RangeError (`ERR_OUT_OF_RANGE`) for mismatched shapes, a bad number, or
 *   NaN / ±Infinity in an input (naming the tensor and the index). The Promise rejects with these.
 */
export async function softmaxAttention(
  query: TensorLike,
  key: TensorLike,
  value: TensorLike,
  options?: SoftmaxAttentionOptions,
): Promise<Tensor> {
  return runPrepared(softmaxArgs(query, key, value, options, 'softmaxAttention', true), native().softmaxAttentionAsync as NativeAsync);
}

/**
 * The blocking twin of {@link softmaxAttention}: same arguments, result and errors (thrown).
 * @param query `[B, H, Lq, d]` float32.
 * @param key `[B, H, Lk, d]` float32.
 * @param value `[B, H, Lk, Dv]` float32.
 * @returns `[B, H, Lq, Dv]` float32 (`options.out` when given). A query row that can attend
 *   no key gets zeros.
 * @throws TypeError (`ERR_INVALID_ARG_TYPE`, `ERR_INVALID_ARG_VALUE`) for a wrong type or an
 *   unknown option; RangeError (`ERR_OUT_OF_RANGE`) for mismatched shapes, a bad number, or
 *   NaN / ±Infinity in an input (naming the tensor and the index).
 */
export function softmaxAttentionSync(
  query: TensorLike,
  key: TensorLike,
  value: TensorLike,
  options?: SoftmaxAttentionSyncOptions,
): Tensor {
  const { p, args } = softmaxArgs(query, key, value, options, 'softmaxAttentionSync', false);
  return { data: native().softmaxAttentionSync(...args), shape: p.outShape };
}
