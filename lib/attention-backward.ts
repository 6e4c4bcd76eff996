/**
 * Gradients of the attention functions (reverse mode), on the same native kernels.
 * Shape legend as for the forward calls: query [B, H, Lq, d], key [B, H, Lk, d],
 * value [B, H, Lk, Dv], gradOut (dL/d output) [B, H, Lq, Dv]  ->  gradients of the
 * same shapes as query, key and value (and [m, d] for the projection, on request).
 *
 * Each call recomputes what it needs from the inputs (features, normalizers, softmax
 * statistics) in blocks: extra memory linear in the sequence length, never Lq x Lk or
 * L x m. The forward pass's stabilizers are constants here (they cancel in the output).
 */
import { pinBuffers, runAbortable } from './async-call';
import { favorArgs, softmaxArgs, type FavorAttentionOptions, type SoftmaxAttentionOptions } from './attention';
import { describe, typeError } from './errors';
import { native, type NativeGradients } from './native';
import type { Tensor, TensorLike } from './tensor';
import { newFloat32Array, readBoolean, readOptions } from './validate';

/** Options of {@link favorAttentionBackward}: the forward call's options (no `out`), plus one. */
export interface FavorBackwardOptions extends Omit<FavorAttentionOptions, 'out'> {
  /** Also return the gradient of the feature map's projection W ([m, d], summed over batch and heads). Default false. */
  projectionGradient?: boolean;
}

/** Options of {@link softmaxAttentionBackward}: the forward call's options (no `out`). */
export type SoftmaxBackwardOptions = Omit<SoftmaxAttentionOptions, 'out'>;

/** Gradients with respect to the attention's inputs. */
export interface AttentionGradients {
  /** dL/d query, `[B, H, Lq, d]`. */
  query: Tensor;
  /** dL/d key, `[B, H, Lk, d]`. */
  key: Tensor;
  /** dL/d value, `[B, H, Lk, Dv]`. */
  value: Tensor;
  /** dL/d projection `[m, d]` ({@link favorAttentionBackward} with `projectionGradient`). */
  projection?: Tensor;
}

const FAVOR_KEYS = ['featureMap', 'causal', 'keyPaddingMask', 'epsilon', 'chunkSize', 'projectionGradient'];
const SOFTMAX_KEYS = ['causal', 'keyPaddingMask', 'scale'];

type NativeBackward = (...args: unknown[]) => Promise<unknown>;

function backwardCall(
  kind: 'favor' | 'softmax',
  query: unknown,
  key: unknown,
  value: unknown,
  gradOut: unknown,
  options: unknown,
  fn: string,
  async: boolean,
) {
  const keys = [...(kind === 'favor' ? FAVOR_KEYS : SOFTMAX_KEYS), ...(async ? ['signal'] : [])];
  const o = readOptions<FavorBackwardOptions>(options, `${fn} options`, keys) as Record<string, unknown>;
  const { projectionGradient, ...forward } = o;
  if (gradOut === undefined) throw typeError(`${fn} gradOut: required (dL/d output, the output's shape), received undefined`);
  // gradOut goes where the forward call takes `out`: the same shape and the same no-overlap rule.
  const withOut = { ...forward, out: gradOut };
  const call = kind === 'favor' ? favorArgs(query, key, value, withOut, fn, async, `${fn} gradOut`) : softmaxArgs(query, key, value, withOut, fn, async, `${fn} gradOut`);
  const { p } = call;
  const wantProjection = readBoolean(projectionGradient, `${fn} options.projectionGradient`, false);
  const [B, H, Lq, d] = p.q.shape;
  const Lk = p.k.shape[2];
  const Dv = p.v.shape[3];
  const grads: NativeGradients = {
    query: newFloat32Array(B * H * Lq * d, `${fn} query gradient`),
    key: newFloat32Array(B * H * Lk * d, `${fn} key gradient`),
    value: newFloat32Array(B * H * Lk * Dv, `${fn} value gradient`),
  };
  let projectionShape: readonly number[] = [];
  if (wantProjection) {
    const map = (forward.featureMap ?? null) as { projection: Float32Array | null; numFeatures: number } | null;
    if (map === null || map.projection === null) {
      throw typeError(`${fn} options.projectionGradient: needs a featureMap with a projection, received ${describe(forward.featureMap)}`, 'ERR_INVALID_ARG_VALUE');
    }
    projectionShape = Object.freeze([map.numFeatures, d]);
    grads.projection = newFloat32Array(map.numFeatures * d, `${fn} projection gradient`);
  }
  const [q, k, v, g, dims, nativeOptions] = call.args;
  const result = (): AttentionGradients => {
    const out: AttentionGradients = {
      query: { data: grads.query, shape: p.q.shape },
      key: { data: grads.key, shape: p.k.shape },
      value: { data: grads.value, shape: p.v.shape },
    };
    if (grads.projection !== undefined) out.projection = { data: grads.projection, shape: projectionShape };
    return out;
  };
  return { p, signal: call.signal, args: [q, k, v, g, grads, dims, nativeOptions] as const, result };
}

/**
 * Gradients of {@link favorAttention} with respect to query, key and value (and, with
 * `projectionGradient`, the feature map's projection), for the softmax, softmax-hyperbolic,
 * relu, elu, exp and abs kernels, bidirectional or causal (causal: query and key lengths
 * equal), with key padding. Runs off the event loop; the inputs are read in place as for
 * the forward call (their ArrayBuffers become untransferable).
 * @param gradOut dL/d output, `[B, H, Lq, Dv]`.
 * @throws TypeError / RangeError as the forward call, and for `gradOut` of the wrong shape,
 *   NaN or infinity in it, `epsilon` other than 0, or a trig / softmax-opt / softmax-dense
 *   feature map; AbortError when `signal` aborts.
 */
export async function favorAttentionBackward(
  query: TensorLike,
  key: TensorLike,
  value: TensorLike,
  gradOut: TensorLike,
  options?: FavorBackwardOptions,
): Promise<AttentionGradients> {
  const { p, signal, args, result } = backwardCall('favor', query, key, value, gradOut, options, 'favorAttentionBackward', true);
  pinBuffers([p.q.data, p.k.data, p.v.data, p.out, p.keyPadding]);
  const run = native().favorAttentionBackwardAsync as unknown as NativeBackward;
  await runAbortable((control) => (control ? run(...args, control) : run(...args)), signal);
  return result();
}

/** The blocking twin of {@link favorAttentionBackward} (no `signal`). */
export function favorAttentionBackwardSync(
  query: TensorLike,
  key: TensorLike,
  value: TensorLike,
  gradOut: TensorLike,
  options?: Omit<FavorBackwardOptions, 'signal'>,
): AttentionGradients {
  const { args, result } = backwardCall('favor', query, key, value, gradOut, options, 'favorAttentionBackwardSync', false);
  native().favorAttentionBackwardSync(...args);
  return result();
}

/**
 * Gradients of {@link softmaxAttention} with respect to query, key and value, computed
 * blockwise with recomputation (O(Lq + Lk) extra memory), causal and padded as the
 * forward call. Runs off the event loop.
 * @param gradOut dL/d output, `[B, H, Lq, Dv]`.
 * @throws TypeError / RangeError as the forward call, and for `gradOut` of the wrong shape
 *   or NaN / infinity in it; AbortError when `signal` aborts.
 */
export async function softmaxAttentionBackward(
  query: TensorLike,
  key: TensorLike,
  value: TensorLike,
  gradOut: TensorLike,
  options?: SoftmaxBackwardOptions,
): Promise<AttentionGradients> {
  const { p, signal, args, result } = backwardCall('softmax', query, key, value, gradOut, options, 'softmaxAttentionBackward', true);
  pinBuffers([p.q.data, p.k.data, p.v.data, p.out, p.keyPadding]);
  const run = native().softmaxAttentionBackwardAsync as unknown as NativeBackward;
  await runAbortable((control) => (control ? run(...args, control) : run(...args)), signal);
  return result();
}

/** The blocking twin of {@link softmaxAttentionBackward} (no `signal`). */
export function softmaxAttentionBackwardSync(
  query: TensorLike,
  key: TensorLike,
  value: TensorLike,
  gradOut: TensorLike,
  options?: Omit<SoftmaxBackwardOptions, 'signal'>,
): AttentionGradients {
  const { args, result } = backwardCall('softmax', query, key, value, gradOut, options, 'softmaxAttentionBackwardSync', false);
  native().softmaxAttentionBackwardSync(...args);
  return result();
}
