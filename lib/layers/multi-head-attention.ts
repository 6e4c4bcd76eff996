/**
 * Multi-head attention with FAVOR+ or exact softmax attention over the same weights.
 * Shape legend: B = batch, Lq = query length, Lk = key (memory) length,
 * D = modelDim, Dk = keyDim, H = numHeads, dh = headDim.
 *   x [B, Lq, D], memory [B, Lk, Dk], keyPaddingMask [B, Lk]  ->  [B, Lq, D]
 */
import { readSignal } from '../async-call';
import {
  DEFAULT_CHUNK_SIZE,
  DEFAULT_FAVOR_EPSILON,
  DEFAULT_KERNEL,
  DEFAULT_KERNEL_EPSILON,
  DEFAULT_NORM_SCALING,
  DEFAULT_ORTHOGONAL,
  defaultSoftmaxScale,
  MAX_CHUNK_SIZE,
  MAX_HEAD_DIM,
  MAX_NUM_FEATURES,
} from '../defaults';
import { rangeError, typeError } from '../errors';
import { defaultNumFeatures, FeatureMap, type FeatureKernel, type FeatureMapOptions, type NormScaling } from '../feature-map';
import type { MaskLike, Tensor, TensorLike } from '../tensor';
import { readBoolean, readEnum, readInteger, readNumber, readOptions } from '../validate';
import { native, type NativeFavorOptions } from '../native';
import { DecodingState } from './decoding';
import { readStepStates, runStep, runStepSync, stepRows, type StepStates } from './decoding-steps';
import { ATTENTION_KINDS, readBatch, readKeyInputs, readKind, readPadding, readSequence } from './layer-inputs';
import { buildModuleBackward, type InputGradients } from './layer-training';
import { LayerBase } from './layer';
import { attentionParameterCount, buildingFromFile, checkModelSize, InitRandom, Linear, type ParamSlot } from './parameters';
import { PlanBuilder } from './plan';

/** Which attention a layer computes: FAVOR+ (linear) or exact softmax (quadratic). */
export type AttentionKind = 'favor' | 'softmax';

/**
 * The random features of a layer's FAVOR+ attention: FeatureMap options (headDim is the
 * layer's; seed defaults to one derived from the layer's seed).
 */
export type LayerFeatureOptions = Pick<FeatureMapOptions, 'numFeatures' | 'kernel' | 'orthogonal' | 'normScaling' | 'seed' | 'kernelEpsilon'>;

/** Options of {@link MultiHeadAttention}. */
export interface MultiHeadAttentionOptions {
  /** D, the width of x and of the output. Required. */
  modelDim: number;
  /** H. Required. */
  numHeads: number;
  /** dh. Default modelDim / numHeads (which must then divide). */
  headDim?: number;
  /** Dk, the width of the memory (keys and values) in cross-attention. Default modelDim. */
  keyDim?: number;
  /**
   * Dv, the width of the value input when keys and values come from separate inputs
   * (forward's `key` and `value`, PyTorch's `vdim`). Default keyDim.
   */
  valueDim?: number;
  /** Default 'favor'; a call may override it. */
  attention?: AttentionKind;
  /** Query i attends key j <= i + (Lk - Lq). Default false. */
  causal?: boolean;
  /** Biases on the four projections. Default true. */
  bias?: boolean;
  /** The FAVOR+ features (also kept while the layer runs softmax, to switch per call). */
  featureMap?: LayerFeatureOptions;
  /** FAVOR only: added to the stabilized features (see favorAttention). Default 0. */
  epsilon?: number;
  /** FAVOR causal only: rows per chunk. Default 32. */
  chunkSize?: number;
  /** Seed of the random initial weights (and, unless featureMap.seed, of the features). Default 0. */
  seed?: number;
}

/** The resolved options of a {@link MultiHeadAttention}: every default filled in. */
export interface MultiHeadAttentionConfig {
  /** D. */
  modelDim: number;
  /** H. */
  numHeads: number;
  /** dh. */
  headDim: number;
  /** Dk. */
  keyDim: number;
  /** Dv. */
  valueDim: number;
  /** The default attention. */
  attention: AttentionKind;
  /** Whether the attention is causal. */
  causal: boolean;
  /** Whether the projections have biases. */
  bias: boolean;
  /** The features (seed resolved). */
  featureMap: Required<LayerFeatureOptions>;
  /** FAVOR epsilon. */
  epsilon: number;
  /** FAVOR causal chunk rows. */
  chunkSize: number;
  /** Initialization seed. */
  seed: number;
}

/** Options of {@link MultiHeadAttention.forward}. */
export interface AttentionForwardOptions {
  /** Keys and values come from here, [B, Lk, keyDim] (cross-attention). Default: x (self-attention). */
  memory?: TensorLike;
  /**
   * Keys from here, `[B, Lk, keyDim]`, with values from `value`, `[B, Lk, valueDim]`: separate
   * key and value inputs, as PyTorch's `forward(query, key, value)`. Both or neither, and not
   * with `memory`.
   */
  key?: TensorLike;
  /** Values from here, `[B, Lk, valueDim]` (with `key`). */
  value?: TensorLike;
  /** `[B, Lk]` Uint8Array, nonzero = attend. */
  keyPaddingMask?: MaskLike;
  /** Overrides the layer's attention for this call. */
  attention?: AttentionKind;
  /** Async call only: aborting rejects with an AbortError. */
  signal?: AbortSignal;
}

const FEATURE_OPTIONS = ['numFeatures', 'kernel', 'orthogonal', 'normScaling', 'seed', 'kernelEpsilon'] as const;
export const MHA_OPTIONS = [
  'modelDim',
  'numHeads',
  'headDim',
  'keyDim',
  'valueDim',
  'attention',
  'causal',
  'bias',
  'featureMap',
  'epsilon',
  'chunkSize',
  'seed',
] as const;
const MAX_DIM = 1 << 20;

/** @internal Reads the options every attention-bearing module shares. */
export function readAttentionOptions(o: Partial<MultiHeadAttentionOptions>, fn: string): MultiHeadAttentionConfig {
  if (o.modelDim === undefined) throw typeError(`${fn}.modelDim: required, received undefined`);
  if (o.numHeads === undefined) throw typeError(`${fn}.numHeads: required, received undefined`);
  const modelDim = readInteger(o.modelDim, `${fn}.modelDim`, 0, 1, MAX_DIM);
  const numHeads = readInteger(o.numHeads, `${fn}.numHeads`, 0, 1, modelDim * 64);
  if (o.headDim === undefined && modelDim % numHeads !== 0) {
    throw rangeError(`${fn}.numHeads: ${numHeads} does not divide modelDim ${modelDim}; pass headDim`);
  }
  const headDim = readInteger(o.headDim, `${fn}.headDim`, modelDim / numHeads, 1, MAX_HEAD_DIM);
  const keyDim = readInteger(o.keyDim, `${fn}.keyDim`, modelDim, 1, MAX_DIM);
  const seed = readInteger(o.seed, `${fn}.seed`, 0, 0, Number.MAX_SAFE_INTEGER);
  const f = readOptions<LayerFeatureOptions>(o.featureMap, `${fn}.featureMap`, FEATURE_OPTIONS);
  const featureMap = {
    numFeatures: readInteger(f.numFeatures, `${fn}.featureMap.numFeatures`, defaultNumFeatures(headDim), 1, MAX_NUM_FEATURES),
    kernel: (f.kernel ?? DEFAULT_KERNEL) as FeatureKernel,
    orthogonal: readBoolean(f.orthogonal, `${fn}.featureMap.orthogonal`, DEFAULT_ORTHOGONAL),
    normScaling: (f.normScaling ?? DEFAULT_NORM_SCALING) as NormScaling,
    seed: readInteger(f.seed, `${fn}.featureMap.seed`, (seed * 7919) % 2 ** 48, 0, Number.MAX_SAFE_INTEGER),
    kernelEpsilon: readNumber(f.kernelEpsilon, `${fn}.featureMap.kernelEpsilon`, DEFAULT_KERNEL_EPSILON, { min: 0 }),
  };
  const config: MultiHeadAttentionConfig = {
    modelDim,
    numHeads,
    headDim,
    keyDim,
    valueDim: readInteger(o.valueDim, `${fn}.valueDim`, keyDim, 1, MAX_DIM),
    attention: readEnum(o.attention, `${fn}.attention`, 'favor', ATTENTION_KINDS),
    causal: readBoolean(o.causal, `${fn}.causal`, false),
    bias: readBoolean(o.bias, `${fn}.bias`, true),
    featureMap,
    epsilon: readNumber(o.epsilon, `${fn}.epsilon`, DEFAULT_FAVOR_EPSILON, { min: 0 }),
    chunkSize: readInteger(o.chunkSize, `${fn}.chunkSize`, DEFAULT_CHUNK_SIZE, 1, MAX_CHUNK_SIZE),
    seed,
  };
  checkModelSize(attentionParameterCount(config), fn);
  return config;
}

/** @internal Keys and values of one attention call. */
export type KeySource =
  | { kind: 'self' }
  | { kind: 'memory'; data: Float32Array; length: number }
  /** Separate key [B, Lk, Dk] and value [B, Lk, Dv] inputs. */
  | { kind: 'pair'; key: Float32Array; value: Float32Array; length: number }
  /** A memory absorbed by {@link MultiHeadAttention.planMemoryState} (FAVOR+, bidirectional): each session's `state`. */
  | { kind: 'state' };

/**
 * @internal The rows of one decoding state in a step (`batch` sequences) and the FAVOR+
 * state their attention uses: the running causal state (self-attention, written) or the
 * absorbed memory (KeySource 'state', read).
 */
export interface AttentionSession {
  batch: number;
  state: Float32Array;
}

/** @internal One attention call inside a plan. */
export interface AttentionCall {
  x: Float32Array; // [B * Lq, D]
  batch: number;
  queryLength: number;
  keys: KeySource;
  y: Float32Array; // [B * Lq, D]
  residual: Float32Array | null;
  keyPadding: Uint8Array | null;
  attention: AttentionKind;
  causal: boolean;
  /**
   * A decoding step: the sessions whose rows make up the batch, in order. The projections
   * run once over all rows, the attention once per session on its rows. null: no state.
   */
  sessions: readonly AttentionSession[] | null;
  /** Names the module in errors from inside the attention, e.g. 'layers.1.selfAttn'. */
  label?: string;
}

/**
 * Multi-head attention: out = concat_h(attention(x Wq_h, m Wk_h, m Wv_h)) Wo (+ biases),
 * with m = x (self-attention) or a memory (cross-attention). The same weights run under
 * FAVOR+ or exact softmax attention (`attention`, per layer or per call). Parameter names:
 * q.weight [H dh, D], q.bias, k.weight [H dh, Dk], k.bias, v.weight [H dh, Dv], v.bias,
 * out.weight [D, H dh], out.bias, features.projection [m, dh].
 */
export class MultiHeadAttention extends LayerBase {
  /** The resolved options. */
  readonly config: MultiHeadAttentionConfig;
  /** @internal */ readonly q: Linear;
  /** @internal */ readonly k: Linear;
  /** @internal */ readonly v: Linear;
  /** @internal */ readonly out: Linear;
  private features: FeatureMap;
  private fused: { qkv: Linear; kv: Linear | null } | null = null;

  /**
   * @throws TypeError for a missing or mistyped option, RangeError for a bad value
   *   (for example numHeads not dividing modelDim without headDim).
   */
  constructor(options: MultiHeadAttentionOptions) {
    const o = readOptions<MultiHeadAttentionOptions>(options, 'MultiHeadAttention options', MHA_OPTIONS);
    super();
    if (options === undefined) throw typeError('MultiHeadAttention options: expected an object, received undefined');
    this.config = readAttentionOptions(o, 'MultiHeadAttention options');
    const c = this.config;
    const inner = c.numHeads * c.headDim;
    const random = new InitRandom(c.seed);
    this.q = Linear.random(c.modelDim, inner, c.bias, random);
    this.k = Linear.random(c.keyDim, inner, c.bias, random);
    this.v = Linear.random(c.valueDim, inner, c.bias, random);
    this.out = Linear.random(inner, c.modelDim, c.bias, random);
    this.features = this.sampleFeatures(c.featureMap.seed);
  }

  /**
   * Attention of x (and of `memory`, for cross-attention), off the event loop.
   * @param x `[B, Lq, modelDim]` float32.
   * @returns `[B, Lq, modelDim]`.
   * @throws TypeError / RangeError (the Promise rejects) for bad shapes, options or
   *   non-finite inputs; AbortError when `signal` aborts.
   */
  async forward(x: TensorLike, options?: AttentionForwardOptions): Promise<Tensor> {
    const { b, out, signal } = this.build(x, options, 'MultiHeadAttention.forward', true);
    await b.run(signal);
    return out;
  }

  /** The blocking twin of {@link forward} (no `signal`). */
  forwardSync(x: TensorLike, options?: Omit<AttentionForwardOptions, 'signal'>): Tensor {
    const { b, out } = this.build(x, options, 'MultiHeadAttention.forwardSync', false);
    b.runSync();
    return out;
  }

  /**
   * Gradients of a loss L through this attention, given dL/d output: returns dL/d x (and
   * dL/d memory with a `memory`); the gradients of the parameters are added to
   * {@link gradients} (until {@link zeroGrad} or an optimizer step). The pass recomputes
   * the forward pass from x (no earlier forward call needed) and runs off the event loop.
   * FAVOR+ attention needs epsilon 0 and a softmax, softmax-hyperbolic, relu, elu, exp or
   * abs kernel; the features themselves are fixed (not trained).
   * @param x the forward pass's input, `[B, L, modelDim]`.
   * @param gradOut dL/d output, `[B, L, modelDim]`.
   * @param options the forward pass's options.
   * @throws TypeError / RangeError (the Promise rejects) as the forward pass, for a gradOut
   *   of another shape or not finite, or for attention without gradients; AbortError
   *   (gradients unchanged) when `signal` aborts.
   */
  async backward(x: TensorLike, gradOut: TensorLike, options?: AttentionForwardOptions): Promise<InputGradients> {
    const { b, signal, finish } = buildModuleBackward(this, this, x, gradOut, options, 'MultiHeadAttention.backward', true);
    await b.run(signal);
    return finish();
  }

  /** The blocking twin of {@link backward} (no `signal`). */
  backwardSync(x: TensorLike, gradOut: TensorLike, options?: Omit<AttentionForwardOptions, 'signal'>): InputGradients {
    const { b, finish } = buildModuleBackward(this, this, x, gradOut, options, 'MultiHeadAttention.backwardSync', false);
    b.runSync();
    return finish();
  }

  private build(x: unknown, options: unknown, fn: string, async: boolean) {
    const o = readOptions<AttentionForwardOptions>(options, `${fn} options`, [
      'memory',
      'key',
      'value',
      'keyPaddingMask',
      'attention',
      ...(async ? ['signal'] : []),
    ]);
    const c = this.config;
    const t = readSequence(x, `${fn} x`, c.modelDim, 'modelDim');
    const [B, Lq] = t.shape;
    const b = new PlanBuilder();
    b.add({ op: 'checkFinite', x: t.data, shape: t.shape, name: `${fn} x` });
    const { keys } = readKeyInputs(c, o, B, fn, b);
    const Lk = keys.kind === 'self' ? Lq : (keys as { length: number }).length;
    const keyPadding = readPadding(o.keyPaddingMask, `${fn} options.keyPaddingMask`, B, Lk);
    const attention = readKind(o.attention, `${fn} options.attention`, c.attention);
    const out = new Float32Array(B * Lq * c.modelDim);
    this.plan(b, { x: t.data, batch: B, queryLength: Lq, keys, y: out, residual: null, keyPadding, attention, causal: c.causal, sessions: null });
    b.checkOutput(out, fn);
    return { b, out: { data: out, shape: Object.freeze([B, Lq, c.modelDim]) } as Tensor, signal: readSignal(o.signal, `${fn} options.signal`) };
  }

  /**
   * A decoding state for `batch` sequences: causal self-attention continued token by
   * token with {@link step} (FAVOR+; memory and time per token independent of the context).
   * @throws RangeError when the layer is not causal self-attention with FAVOR+ attention.
   */
  createStateSync(batch: number): DecodingState {
    return this.newState(batch, 'MultiHeadAttention.createStateSync');
  }

  /**
   * The Promise twin of {@link createStateSync}, as every `createState` of the library
   * returns a Promise. A self-attention state is only allocated (zeros): it resolves at
   * once; errors reject it.
   */
  async createState(batch: number): Promise<DecodingState> {
    return this.newState(batch, 'MultiHeadAttention.createState');
  }

  private newState(batch: number, fn: string): DecodingState {
    this.checkDecoding(fn);
    const B = readBatch(batch, `${fn} batch`);
    return new DecodingState(this.fingerprint(), B, this.selfStates(B, [this], () => 'selfAttn.'));
  }

  /**
   * Reads a state written by `DecodingState.serialize` (of this model).
   * @throws RangeError (`ERR_INVALID_ARG_VALUE`) for a corrupt buffer, another format
   *   version, or a state of another model (weights, features or configuration).
   */
  loadState(bytes: Uint8Array): DecodingState {
    return this.restoreState(bytes, (B) => this.selfStateSpec(B, [this], () => 'selfAttn.'), 'MultiHeadAttention.loadState');
  }

  /**
   * The next `n` tokens of each sequence, [B, n, modelDim] (n = 1 for a token, more
   * for a prompt chunk): their outputs, attending every token absorbed so far; the
   * state advances by n. Equal to the causal forward of the whole sequence up to rounding.
   * @throws TypeError / RangeError for bad input; Error (`ERR_INVALID_STATE`) while
   *   another async step uses the state.
   */
  async step(x: TensorLike, state: DecodingState, options?: { signal?: AbortSignal }): Promise<Tensor> {
    const o = readOptions<{ signal?: AbortSignal }>(options, 'MultiHeadAttention.step options', ['signal']);
    const { b, out, n } = this.buildStep(x, state, 'MultiHeadAttention.step', 'state');
    await runStep([state], n, out, 'MultiHeadAttention.step', () => b.run(readSignal(o.signal, 'MultiHeadAttention.step options.signal')));
    return out;
  }

  /** The blocking twin of {@link step}. */
  stepSync(x: TensorLike, state: DecodingState): Tensor {
    const { b, out, n } = this.buildStep(x, state, 'MultiHeadAttention.stepSync', 'state');
    runStepSync([state], n, out, 'MultiHeadAttention.stepSync', () => b.runSync());
    return out;
  }

  /**
   * Advances many independent decoding sessions in one pass, each at its own position: x
   * holds the rows of `states[0]` (its batch), then those of `states[1]`, and so on. The
   * projections read their weights once for all rows; the attention of each session reads
   * its own state. Equal bit for bit to stepping each state with {@link stepSync} on its
   * rows (same kernel set). An abort before the pass starts leaves every state as it was;
   * once running it completes.
   * @param x `[R, n, modelDim]`, R the sum of the states' batches.
   * @returns `[R, n, modelDim]`.
   * @throws TypeError / RangeError for bad input, a state of another model or the same
   *   state twice; Error (`ERR_INVALID_STATE`) while another async step uses a state.
   */
  async stepBatch(states: readonly DecodingState[], x: TensorLike, options?: { signal?: AbortSignal }): Promise<Tensor> {
    const fn = 'MultiHeadAttention.stepBatch';
    const o = readOptions<{ signal?: AbortSignal }>(options, `${fn} options`, ['signal']);
    const { b, out, n, list } = this.buildStep(x, states, fn, 'states');
    await runStep(list, n, out, fn, () => b.run(readSignal(o.signal, `${fn} options.signal`), true));
    return out;
  }

  /** The blocking twin of {@link stepBatch}. */
  stepBatchSync(states: readonly DecodingState[], x: TensorLike): Tensor {
    const { b, out, n, list } = this.buildStep(x, states, 'MultiHeadAttention.stepBatchSync', 'states');
    runStepSync(list, n, out, 'MultiHeadAttention.stepBatchSync', () => b.runSync());
    return out;
  }

  private checkDecoding(fn: string): void {
    const c = this.config;
    if (!c.causal || c.keyDim !== c.modelDim || c.attention !== 'favor') {
      throw rangeError(
        `${fn}: token-by-token decoding needs causal self-attention with FAVOR+ (causal: true, attention: 'favor', keyDim = modelDim); ` +
          `this layer has causal ${c.causal}, attention '${c.attention}', keyDim ${c.keyDim}`,
        'ERR_INVALID_ARG_VALUE',
      );
    }
  }

  private buildStep(x: unknown, states: unknown, fn: string, arg: StepStates) {
    this.checkDecoding(fn);
    const list = readStepStates(states, this.fingerprint(), fn, arg);
    const c = this.config;
    const t = readSequence(x, `${fn} x`, c.modelDim, 'modelDim', stepRows(list));
    const [B, n] = t.shape;
    const b = new PlanBuilder({ rowStable: true });
    b.add({ op: 'checkFinite', x: t.data, shape: t.shape, name: `${fn} x` });
    const out = new Float32Array(B * n * c.modelDim);
    this.plan(b, {
      x: t.data,
      batch: B,
      queryLength: n,
      keys: { kind: 'self' },
      y: out,
      residual: null,
      keyPadding: null,
      attention: 'favor',
      causal: true,
      sessions: list.map((s) => ({ batch: s.batch, state: s.array<Float32Array>('selfAttn.state') })),
    });
    return { b, n, list, out: { data: out, shape: Object.freeze([B, n, c.modelDim]) } as Tensor };
  }

  /** @internal */
  attentionModules(): MultiHeadAttention[] {
    return [this];
  }

  /** Constructor options that rebuild this module (the parameters are separate). */
  options(): MultiHeadAttentionOptions {
    return structuredClone(this.config);
  }

  /** The FeatureMap the FAVOR+ attention of this layer uses (fixed until {@link redrawFeatures}). */
  get featureMap(): FeatureMap {
    return this.features;
  }

  /** @internal Samples new features with `seed` (LayerBase.redrawFeatures). */
  resample(seed: number): void {
    this.features = this.sampleFeatures(seed);
    this.config.featureMap.seed = seed;
  }

  private sampleFeatures(seed: number): FeatureMap {
    const f = this.config.featureMap;
    // A model read from a file loads its features from there: sampling them first would
    // cost time and memory that grow with headDim³ (orthogonal blocks), not with the file.
    if (buildingFromFile()) {
      return FeatureMap.fromProjection(new Float32Array(f.numFeatures * this.config.headDim), {
        headDim: this.config.headDim,
        numFeatures: f.numFeatures,
        kernel: f.kernel,
        kernelEpsilon: f.kernelEpsilon,
      });
    }
    return new FeatureMap({
      headDim: this.config.headDim,
      numFeatures: f.numFeatures,
      kernel: f.kernel,
      orthogonal: f.orthogonal,
      normScaling: f.normScaling,
      seed,
      kernelEpsilon: f.kernelEpsilon,
    });
  }

  /** @internal Named parameter slots under `prefix` (with a trailing dot, or ''). */
  slots(prefix: string, into: Map<string, ParamSlot>): void {
    const invalidate = () => (this.fused = null);
    for (const [name, linear] of [['q', this.q], ['k', this.k], ['v', this.v], ['out', this.out]] as const) {
      const own = new Map<string, ParamSlot>();
      linear.slots(`${prefix}${name}`, own);
      for (const [key, slot] of own) into.set(key, { ...slot, set: (v) => (slot.set(v), invalidate()) });
    }
    const f = this.config.featureMap;
    if (this.features.projection !== null) {
      into.set(`${prefix}features.projection`, {
        shape: [f.numFeatures, this.config.headDim],
        get: () => this.features.projection!,
        set: (values) => {
          this.features = FeatureMap.fromProjection(values, {
            headDim: this.config.headDim,
            numFeatures: f.numFeatures,
            kernel: f.kernel,
            kernelEpsilon: f.kernelEpsilon,
          });
        },
      });
    }
  }

  // Fused projections: one pass over x for q, k and v (self) or k and v (memory). Only
  // inputs of one width fuse; separate key and value inputs are projected apart.
  private fusedLinears(): { qkv: Linear; kv: Linear | null } {
    // After quantize() the fused copies are made again, in the parts' format.
    if (this.fused === null || this.fused.qkv.format !== this.q.format) {
      const c = this.config;
      const kvSame = c.keyDim === c.valueDim;
      const sameInput = kvSame && c.keyDim === c.modelDim;
      this.fused = { qkv: sameInput ? Linear.stacked([this.q, this.k, this.v]) : this.q, kv: kvSame ? Linear.stacked([this.k, this.v]) : null };
    }
    return this.fused;
  }

  /** @internal Appends one attention call to a plan. */
  plan(b: PlanBuilder, a: AttentionCall): void {
    const c = this.config;
    const inner = c.numHeads * c.headDim;
    const B = a.batch;
    const Lq = a.queryLength;
    const rows = B * Lq;
    const heads = { batch: B, heads: c.numHeads, headDim: c.headDim };
    const split = (src: Float32Array, srcStride: number, len: number) => {
      const dst = b.acquire(B * len * inner);
      b.add({ op: 'splitHeads', src, srcStride, len, dst, ...heads });
      return dst;
    };
    const fused = this.fusedLinears();
    let q: Float32Array, k: Float32Array | null, v: Float32Array | null;
    let Lk: number;
    if (a.keys.kind === 'self' && fused.qkv !== this.q) {
      Lk = Lq;
      const qkv = b.acquire(rows * 3 * inner);
      this.linear(b, fused.qkv, a.x, rows, qkv, null);
      q = split(qkv, 3 * inner, Lq);
      k = split(qkv.subarray(inner), 3 * inner, Lq);
      v = split(qkv.subarray(2 * inner), 3 * inner, Lq);
      b.release(qkv);
    } else {
      const qp = b.acquire(rows * inner);
      this.linear(b, this.q, a.x, rows, qp, null);
      q = split(qp, inner, Lq);
      b.release(qp);
      if (a.keys.kind === 'state') {
        Lk = 0;
        k = v = null;
      } else if (a.keys.kind === 'pair') {
        Lk = a.keys.length;
        const project = (l: Linear, src: Float32Array) => {
          const t = b.acquire(B * Lk * inner);
          this.linear(b, l, src, B * Lk, t, null);
          const heads = split(t, inner, Lk);
          b.release(t);
          return heads;
        };
        k = project(this.k, a.keys.key);
        v = project(this.v, a.keys.value);
      } else {
        const src = a.keys.kind === 'self' ? a.x : a.keys.data;
        Lk = a.keys.kind === 'self' ? Lq : a.keys.length;
        const kv = b.acquire(B * Lk * 2 * inner);
        this.linear(b, fused.kv!, src, B * Lk, kv, null);
        k = split(kv, 2 * inner, Lk);
        v = split(kv.subarray(inner), 2 * inner, Lk);
        b.release(kv);
      }
    }
    const o = b.acquire(rows * inner);
    const dims = { batch: B, heads: c.numHeads, queryLength: Lq, keyLength: Lk, headDim: c.headDim, valueDim: c.headDim };
    const label = `${a.label ?? 'attention'} (query, key and value here are the layer's projections of its input)`;
    if (a.attention === 'favor') {
      const favor = { ...this.features.nativeSpec(), causal: a.causal, keyPadding: a.keyPadding, epsilon: c.epsilon, chunkSize: c.chunkSize };
      if (a.sessions === null) {
        b.add({ op: 'favor', q, k, v, out: o, dims, options: favor, label });
      } else {
        // The heads are laid out [B, H, L, dh]: a session's rows are one contiguous span.
        let first = 0;
        for (const s of a.sessions) {
          const span = (t: Float32Array | null, len: number) => t && t.subarray(first * c.numHeads * len * c.headDim, (first + s.batch) * c.numHeads * len * c.headDim);
          const options: NativeFavorOptions = { ...favor, state: a.keys.kind === 'state' ? null : s.state, keysState: a.keys.kind === 'state' ? s.state : null };
          b.add({ op: 'favor', q: span(q, Lq), k: span(k, Lk), v: span(v, Lk), out: span(o, Lq), dims: { ...dims, batch: s.batch }, options, label });
          first += s.batch;
        }
      }
    } else {
      // Softmax attention takes its keys and values (KeySource 'state' is FAVOR+ only).
      if (k === null || v === null) throw new Error('internal: an absorbed memory needs FAVOR+ attention');
      b.add({ op: 'softmax', q, k, v, out: o, dims, options: { causal: a.causal, keyPadding: a.keyPadding, scale: defaultSoftmaxScale(c.headDim) }, label });
    }
    b.release(q);
    if (k !== null && v !== null) {
      b.release(k);
      b.release(v);
    }
    const merged = b.acquire(rows * inner);
    b.add({ op: 'mergeHeads', src: o, dst: merged, len: Lq, ...heads });
    b.release(o);
    this.linear(b, this.out, merged, rows, a.y, a.residual);
    b.release(merged);
  }

  /**
   * @internal Absorbs a memory (decoding): projects its keys and values and sums them into
   * one bidirectional FAVOR+ state per (batch, head), B * H * favorStateFloats(F, dh)
   * floats; steps then emit against it (KeySource 'state') whatever the memory length.
   */
  planMemoryState(b: PlanBuilder, memory: Float32Array, batch: number, length: number, padding: Uint8Array | null, label: string): Float32Array {
    const c = this.config;
    const inner = c.numHeads * c.headDim;
    const kv = b.acquire(batch * length * 2 * inner);
    this.linear(b, this.fusedLinears().kv!, memory, batch * length, kv, null);
    const k = b.acquire(batch * length * inner);
    const v = b.acquire(batch * length * inner);
    const heads = { batch, heads: c.numHeads, headDim: c.headDim, len: length, srcStride: 2 * inner };
    b.add({ op: 'splitHeads', src: kv, dst: k, ...heads });
    b.add({ op: 'splitHeads', src: kv.subarray(inner), dst: v, ...heads });
    b.release(kv);
    const f = this.features.outputFeatures;
    const state = new Float32Array(batch * c.numHeads * native().favorStateFloats(f, c.headDim));
    b.add({
      op: 'favor',
      k,
      v,
      dims: { batch, heads: c.numHeads, queryLength: 0, keyLength: length, headDim: c.headDim, valueDim: c.headDim },
      options: { ...this.features.nativeSpec(), causal: false, keyPadding: padding, epsilon: c.epsilon, chunkSize: c.chunkSize, absorbInto: state },
      label: `${label} (key and value here are the layer's projections of the memory)`,
    });
    b.release(k);
    b.release(v);
    return state;
  }

  private linear(b: PlanBuilder, l: Linear, x: Float32Array, rows: number, y: Float32Array, residual: Float32Array | null): void {
    b.add({
      op: 'linear',
      x,
      rows,
      ...l.stepFields,
      residual,
      activation: 'none',
      y,
    });
  }
}
