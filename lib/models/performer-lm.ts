/**
 * A language model trained with performer-pytorch (`PerformerLM`), run here: logits for
 * whole sequences, and generation token by token from a decoding state whose size does
 * not grow with the context. Shape legend: B = batch, L = tokens, V = num_tokens,
 * D = dim.
 *   forward: tokens [B, L] (Int32Array) -> logits [B, L, V]
 *   step:    tokens of one sequence (Int32Array) -> logits of the last one [V]
 */
import { readSignal } from '../async-call';
import { describe, rangeError, stateError, typeError } from '../errors';
import { checkModelSize } from '../layers/parameters';
import { PlanBuilder } from '../layers/plan';
import { readStateList } from '../layers/decoding-steps';
import { deserializeState, type StateArray } from '../layers/decoding';
import type { MaskLike, Tensor } from '../tensor';
import { newFloat32Array, readBoolean, readEnum, readInteger, readMask, readNumber, readOptions } from '../validate';
import { quantizedTrainingError, quantizeOnce, storedTensors, type QuantizedFormat, type WeightFormat } from '../quantization';
import { Linear } from '../layers/parameters';
import { fillAxialTable, inverseFrequencies, type AxialWeights, type PerformerPytorchWeights, type TensorSource } from './checkpoint';
import { readDropoutRates, readLMConfig, type DropoutRates, type LMConfig, type PerformerLMPytorchConfig } from './config';
import { lmStateSpec, makeLMState, PerformerLMState } from './lm-state';
import { modelFingerprint, parameterCopies, readModelOptions, tensorSource, type PerformerPytorchOptions, type RandomModelOptions } from './model-common';
import { readSampler, sample, TokenSampler, type SamplingOptions } from './sampling';
import { readTargets, readTokenList, readTokens } from './tokens';
import { checkTrainable, GradientStore, planTrainingPass, type LMParts, type TrainingAttention, type TrainingCall } from './lm-training';
import { FeatureMap } from '../feature-map';
import { LAYER_NORM_EPS, PerformerStack, takeLinear, weightFormatOf, type LayerState, type Numerics, type RotaryTable, type SessionRow } from './stack';

/** Token ids: `{ data: Int32Array, shape: [B, L] }`. */
export interface TokenTensor {
  /** The ids, row-major. */
  readonly data: Int32Array;
  /** `[B, L]`. */
  readonly shape: readonly number[];
}

/** Token ids of one sequence: Int32Array, Uint8Array (bytes of a byte-level model), Uint16Array or an array. */
export type TokenIds = Int32Array | Uint8Array | Uint16Array | readonly number[];

/** Options of {@link PerformerLM.forward}. */
export interface LMForwardOptions {
  /** `[B, L]` Uint8Array, 1 = keep (performer-pytorch's `mask`, True = keep). Default: every token kept. */
  mask?: MaskLike;
  /** The global heads' attention: 'favor' (default) or exact 'softmax' over the same weights (forward passes only). */
  attention?: TrainingAttention;
  /** Aborting rejects the Promise with an AbortError. */
  signal?: AbortSignal;
}

/** Options of {@link PerformerLM.lossAndGrad}. */
export interface TrainingOptions {
  /** The global heads' attention: 'favor' (default) or exact 'softmax' over the same weights. */
  attention?: TrainingAttention;
  /**
   * Dropout probabilities of this pass (each in [0, 1]; omitted ones from the model's
   * config, `emb_dropout`, `attn_dropout`, `ff_dropout`), or false for none.
   */
  dropout?: Partial<DropoutRates> | false;
  /**
   * Seed of this pass's dropout masks (an integer from 0 to 2^53 - 1). Default: the number
   * of training passes this model has run, so a run from the same start repeats bit for bit.
   */
  seed?: number;
  /** Aborting rejects with an AbortError; the accumulated gradients stay as they were. */
  signal?: AbortSignal;
}

/** Options of {@link PerformerLM.generate}. */
export interface GenerateOptions extends SamplingOptions {
  /** Tokens to generate at most. Required. */
  maxNewTokens: number;
  /** Generation stops after yielding one of these. */
  stopTokens?: readonly number[];
  /** Aborting stops the generation: the iterator rejects with an AbortError. */
  signal?: AbortSignal;
  /**
   * Continue this state (it absorbs the prompt, then every token yielded). Default: a
   * new state, dropped at the end.
   */
  state?: PerformerLMState;
}

/** @internal The LM's position embedding: a sinusoid (table, then formula) or learned rows. */
export type Positions =
  | { kind: 'sinusoid'; table: Float32Array; rows: number; invFreq: Float32Array }
  | { kind: 'learned'; table: Float32Array; rows: number; axial?: AxialWeights };

// Where a quantized model's user finds float32 weights to fine-tune.
const LM_FLOATS = 'toPerformerPytorch({ dequantize: true }) gives float32 weights to load';
const ROOT = 'performer.net.';
const ALIASES: [string, string][] = [[ROOT, 'performer.proj_updater.instance.']];

/**
 * A performer-pytorch `PerformerLM` (1.1.4): token and position embeddings, the
 * Performer stack (FAVOR+ and local heads, every wrapper and feed-forward option),
 * final LayerNorm, logits. With `'performer-pytorch'` numerics (the default) it gives
 * the outputs, and the greedy generations, that the Python package gives.
 */
export class PerformerLM {
  /** The resolved configuration (every default filled in; camelCase names). */
  readonly config: LMConfig;
  /** How the FAVOR+ heads compute (see {@link Numerics}). */
  readonly numerics: Numerics;
  private readonly stack: PerformerStack;
  private readonly source: TensorSource;
  private readonly tokenEmb: Float32Array;
  private readonly positions: Positions;
  private readonly layerRotary: RotaryTable | null;
  private readonly norm: { gamma: Float32Array; beta: Float32Array };
  private head: Linear;
  private grads: GradientStore | null = null;
  private cachedFingerprint: string | null = null;
  /** The config's dropout probabilities (training passes only). */
  readonly dropout: Readonly<DropoutRates>;
  // Training passes run so far: the default dropout seed of the next one.
  private passes = 0;

  private constructor(config: LMConfig, numerics: Numerics, source: TensorSource, fn: string, dropout: DropoutRates) {
    this.config = config;
    this.dropout = Object.freeze(dropout);
    this.numerics = numerics;
    this.source = source;
    const c = config;
    const D = c.dim;
    checkModelSize(parameterCount(c), fn, 'dim, depth, heads, dim_head, ff_mult, nb_features, num_tokens or max_seq_len');
    this.tokenEmb = source.take('token_emb.weight', [c.numTokens, D]);
    if (c.positions === 'rotary') {
      this.positions = { kind: 'sinusoid', table: source.take('pos_emb.emb', [c.maxSeqLen, D]), rows: c.maxSeqLen, invFreq: inverseFrequencies(D) };
      this.layerRotary = { table: source.take('layer_pos_emb.emb', [c.maxSeqLen, c.dimHead]), rows: c.maxSeqLen, invFreq: inverseFrequencies(c.dimHead) };
    } else if (c.positions === 'absolute') {
      this.positions = { kind: 'learned', table: source.take('pos_emb.emb.weight', [c.maxSeqLen, D]), rows: c.maxSeqLen };
      this.layerRotary = null;
    } else {
      this.positions = axialTable(c, source);
      this.layerRotary = null;
    }
    this.stack = new PerformerStack(c, numerics, source, ROOT);
    this.norm = { gamma: source.take('norm.weight', [D]), beta: source.take('norm.bias', [D]) };
    this.head = c.tieEmbed ? new Linear(D, c.numTokens, this.tokenEmb, null) : takeLinear(source, 'to_out', D, c.numTokens, true);
    source.finish(describeConfig(c));
    weightFormatOf(this.quantizable(), fn);
    this.stack.prepare();
  }

  /**
   * Loads a model trained with performer-pytorch 1.1.4.
   * @param weights The `state_dict()`: a safetensors path, its bytes, or tensors by name
   *   (`readSafetensors(...)` or its `.tensors`). Duplicates under `proj_updater.instance.`
   *   are accepted and ignored.
   * @param config The Python constructor's keyword arguments, Python names, e.g.
   *   `{ num_tokens: 256, max_seq_len: 1024, dim: 512, depth: 6, heads: 8, causal: true }`;
   *   omitted keys take PerformerLM's defaults.
   * @throws TypeError / RangeError naming the config key or the tensors that do not fit.
   */
  static fromPerformerPytorch(weights: PerformerPytorchWeights, config: PerformerLMPytorchConfig, options?: PerformerPytorchOptions): PerformerLM {
    const fn = 'PerformerLM.fromPerformerPytorch';
    const c = readLMConfig(config, fn);
    const { numerics } = readModelOptions(options, fn, false);
    return new PerformerLM(c, numerics, tensorSource(weights, fn, ALIASES, null, 'token_emb.weight'), fn, readDropoutRates(config));
  }

  /** A model with random weights of the given configuration (benchmarks, tests). */
  static random(config: PerformerLMPytorchConfig, options?: RandomModelOptions): PerformerLM {
    const fn = 'PerformerLM.random';
    const c = readLMConfig(config, fn);
    const { numerics, seed } = readModelOptions(options, fn, true);
    return new PerformerLM(c, numerics, tensorSource(null, fn, ALIASES, seed), fn, readDropoutRates(config));
  }

  /** Copies of the weights under their state_dict names (without the proj_updater duplicates). */
  parameters(): Record<string, Tensor> {
    return parameterCopies(this.source);
  }

  /**
   * The state_dict as performer-pytorch's PerformerLM has it: parameters() plus the
   * stack's duplicates under `performer.proj_updater.instance.` and the redraw counter, so
   * that `load_state_dict` (strict) takes a model trained here unchanged in form.
   *
   * A quantized model gives its stored weights (see {@link quantize}): each int8 linear
   * weight as integers with `dtype: 'I8'` and its scales under `…weight_scale`, each bf16
   * one with `dtype: 'BF16'`; `writeSafetensors` stores them in those dtypes and
   * `fromPerformerPytorch` loads them back into the same model. With
   * `{ dequantize: true }`, float32 weights only (what PyTorch's `load_state_dict` takes).
   */
  toPerformerPytorch(options?: { dequantize?: boolean }): Record<string, Tensor> {
    const o = readOptions<{ dequantize?: boolean }>(options, 'PerformerLM.toPerformerPytorch options', ['dequantize']);
    const dequantize = readBoolean(o.dequantize, 'PerformerLM.toPerformerPytorch options.dequantize', false);
    const out = this.parameters();
    if (!dequantize) Object.assign(out, storedTensors(this.namedLinears()));
    for (const [name, t] of Object.entries(out)) {
      if (name.startsWith(ROOT)) out[`performer.proj_updater.instance.${name.slice(ROOT.length)}`] = { ...t, data: Float32Array.from(t.data) };
    }
    out['performer.proj_updater.calls_since_last_redraw'] = { data: new Float32Array(1), shape: [] };
    return out;
  }

  /** How the linear layers' weights are stored: `'float32'`, or the format of {@link quantize}. */
  get weightFormat(): WeightFormat {
    return weightFormatOf(this.quantizable(), 'PerformerLM');
  }

  /**
   * Stores the weights of every linear layer (attention projections, feed-forward, and the
   * output head unless it is tied to the embedding) as `int8` (symmetric, one float32 scale
   * per output channel) or `bf16`, in place. Embeddings, norms, biases and the features stay
   * float32; activations and sums too. Decoding steps read 4x (int8) or 2x (bf16) fewer
   * weight bytes. `parameters()` then gives the dequantized weights,
   * {@link toPerformerPytorch} the stored ones; states made before no longer fit, and
   * training needs the float32 model.
   * @returns this.
   * @throws TypeError for another format; RangeError when already quantized to the other one.
   */
  quantize(format: QuantizedFormat): this {
    quantizeOnce('PerformerLM.quantize', format, this.weightFormat, (f) => {
      this.stack.quantize(f);
      if (!this.config.tieEmbed) this.head.quantize(f);
      this.cachedFingerprint = null;
    });
    return this;
  }

  // The linear layers quantize() stores (a head tied to the embedding stays float32).
  private quantizable(): Linear[] {
    return [...this.stack.linears(), ...(this.config.tieEmbed ? [] : [this.head])];
  }

  // The quantizable linear layers by their weight's state_dict name.
  private namedLinears(): Map<string, Linear> {
    const byWeight = new Map<Float32Array, string>();
    for (const [name, t] of this.source.taken) byWeight.set(t.data, name);
    return new Map(this.quantizable().map((l) => [byWeight.get(l.weight)!, l]));
  }

  /**
   * Mean next-token cross-entropy (nats) over every position with a target >= 0, and its
   * gradients, accumulated into {@link gradients} (call {@link zeroGrad}, or let the
   * optimizer's step clear them). One native pass, off the event loop.
   * @param tokens `{ data: Int32Array, shape: [B, L] }`.
   * @param targets `{ data: Int32Array, shape: [B, L] }`: the token that should follow each
   *   position; -1 (any negative id) leaves a position out.
   * @throws RangeError for configurations training does not cover yet (see the docs), bad
   *   tokens, or targets outside [-1, num_tokens); AbortError (gradients unchanged).
   */
  async lossAndGrad(tokens: TokenTensor, targets: TokenTensor, options?: TrainingOptions): Promise<number> {
    const fn = 'PerformerLM.lossAndGrad';
    const o = readOptions<TrainingOptions>(options, `${fn} options`, ['attention', 'dropout', 'seed', 'signal']);
    const { b, loss } = this.buildTraining(tokens, targets, o, fn);
    // Gradients accumulate only when the whole pass ran: it writes into copies first.
    await b.run(readSignal(o.signal, `${fn} options.signal`));
    this.commitGradients();
    return loss[0] / loss[1];
  }

  /** The blocking twin of {@link lossAndGrad}. */
  lossAndGradSync(tokens: TokenTensor, targets: TokenTensor, options?: Omit<TrainingOptions, 'signal'>): number {
    const fn = 'PerformerLM.lossAndGradSync';
    const o = readOptions<TrainingOptions>(options, `${fn} options`, ['attention', 'dropout', 'seed']);
    const { b, loss } = this.buildTraining(tokens, targets, o, fn);
    b.runSync();
    this.commitGradients();
    return loss[0] / loss[1];
  }

  /** Copies of the accumulated gradients, keyed like {@link parameters} (trained tensors only; zeros before any lossAndGrad). */
  gradients(): Record<string, Tensor> {
    const store = this.gradientStore();
    const out: Record<string, Tensor> = {};
    for (const [name, g] of store.byName) out[name] = { data: Float32Array.from(g), shape: this.source.taken.get(name)!.shape };
    return out;
  }

  /** Sets the accumulated gradients to zero. */
  zeroGrad(): void {
    this.grads?.zero();
  }

  /**
   * New random features for every layer (orthogonal, chi norms, from `seed`), written into
   * the projection matrices: the paper's feature redraw during training. Decoding states
   * made before no longer fit.
   */
  redrawFeatures(seed: number): void {
    const s = readInteger(seed, 'PerformerLM.redrawFeatures seed', 0, 0, Number.MAX_SAFE_INTEGER - 4096);
    const c = this.config;
    this.stack.layers.forEach((layer, l) => {
      layer.projection.set(new FeatureMap({ headDim: c.dimHead, numFeatures: c.numFeatures, seed: s + l }).projection!);
    });
    this.parametersChanged();
  }

  /** @internal The trained tensors with their gradients (the optimizer's view). */
  trainables(): { name: string; param: Float32Array; grad: Float32Array }[] {
    const format = this.weightFormat;
    if (format !== 'float32') throw quantizedTrainingError('PerformerLM optimizer', format, LM_FLOATS);
    const store = this.gradientStore();
    return [...store.byName].map(([name, grad]) => ({ name, param: this.source.taken.get(name)!.data, grad }));
  }

  /** @internal After the parameters changed in place: derived weights rebuilt, old states no longer fit. */
  parametersChanged(): void {
    if (this.positions.kind === 'learned' && this.positions.axial) fillAxialTable(this.positions.axial, this.positions.table);
    this.stack.refresh();
    this.head.weightChanged();
    this.cachedFingerprint = null;
  }

  /**
   * Logits of every position, off the event loop.
   * @param tokens `{ data: Int32Array, shape: [B, L] }`, ids in [0, num_tokens).
   * @returns `{ data: Float32Array, shape: [B, L, num_tokens] }`.
   * @throws TypeError / RangeError for bad tokens or mask, or L beyond max_seq_len with
   *   learned (absolute or axial) positions; AbortError when `signal` aborts.
   */
  async forward(tokens: TokenTensor, options?: LMForwardOptions): Promise<Tensor> {
    const { b, out, signal } = this.buildForward(tokens, options, 'PerformerLM.forward', true);
    await b.run(signal);
    return out;
  }

  /** The blocking twin of {@link forward}. */
  forwardSync(tokens: TokenTensor, options?: Omit<LMForwardOptions, 'signal'>): Tensor {
    const { b, out } = this.buildForward(tokens, options, 'PerformerLM.forwardSync', false);
    b.runSync();
    return out;
  }

  /**
   * A new decoding state (one sequence, no tokens yet), as every `createState` of the
   * library: a Promise. The state is only allocated (zeros), so it resolves at once.
   */
  async createState(): Promise<PerformerLMState> {
    return this.createStateSync();
  }

  /** The blocking twin of {@link createState}. */
  createStateSync(): PerformerLMState {
    const arrays: StateArray[] = [];
    const layers = this.config.causal ? this.stack.createStates(1) : [];
    for (const s of lmStateSpec(this.stack, this.keepsHistory(), 0)) {
      const l = s.name.startsWith('layers.') ? Number(s.name.split('.')[1]) : -1;
      const st = l >= 0 ? layers[l] : null;
      const data =
        s.name === 'stats' || s.name === 'tokens'
          ? new Int32Array(s.length)
          : s.name.endsWith('.global')
            ? st!.global!
            : s.name.endsWith('.local')
              ? st!.local!
              : s.name.endsWith('shift.attn')
                ? st!.shiftAttn!
                : st!.shiftFf!;
      arrays.push({ name: s.name, data });
    }
    return makeLMState(this.fingerprint(), arrays);
  }

  /**
   * Reads a state written by `state.serialize()` (of this model, with the same numerics).
   * @throws RangeError (`ERR_INVALID_ARG_VALUE`) for corrupt or truncated bytes, another
   *   format version, or a state of another model.
   */
  loadState(bytes: Uint8Array): PerformerLMState {
    const fn = 'PerformerLM.loadState';
    const state = deserializeState(
      bytes,
      this.fingerprint(),
      (batch, position) => {
        if (batch !== 1) throw rangeError(`${fn}: a PerformerLM state holds one sequence, received batch ${batch}`, 'ERR_INVALID_ARG_VALUE');
        return lmStateSpec(this.stack, this.keepsHistory(), position);
      },
      fn,
      (model, _batch, arrays) => makeLMState(model, arrays),
    ) as PerformerLMState;
    const history = state.history();
    if (history !== null) readTokenList(history, `${fn}: token history`, this.config.numTokens);
    if (state.recomputes < 0) {
      throw rangeError(`${fn}: corrupt state: a negative count of prefix recomputes (${state.recomputes})`, 'ERR_INVALID_ARG_VALUE');
    }
    return state;
  }

  /**
   * Advances `state` by `tokens` (one token, or a whole prompt) and returns the logits of
   * the last one. Off the event loop. A step aborted before it starts leaves the state as
   * it was; once running it completes (and resolves). A prompt longer than 4 096 tokens goes
   * through in chunks of 4 096 when the state keeps no token history (the same result,
   * bounded memory): an abort between chunks leaves the chunks absorbed, `state.position`
   * says how many tokens.
   * @throws TypeError / RangeError for bad tokens, a state of another model, or
   *   positions past learned position embeddings; Error (`ERR_INVALID_STATE`) while
   *   another step uses the state or after a failed step broke it; AbortError.
   */
  async step(tokens: TokenIds, state: PerformerLMState, options?: { signal?: AbortSignal }): Promise<Float32Array> {
    const fn = 'PerformerLM.step';
    const o = readOptions<{ signal?: AbortSignal }>(options, `${fn} options`, ['signal']);
    const signal = readSignal(o.signal, `${fn} options.signal`);
    const t = this.readStep(tokens, state, fn);
    state.busy = true;
    try {
      const logits = new Float32Array(this.config.numTokens);
      if (!this.config.causal) {
        // Nothing in the state changes until the pass is done: it may stop half way.
        await this.wholePass(concat(state.history()!, t), null, logits, fn).run(signal);
        absorbRecomputed(state, t);
        return logits;
      }
      for (const chunk of this.chunks(t)) {
        const layers = state.layerStates(this.stack);
        const b = this.passPlan(chunk, 1, chunk.length, state.position, null, layers, 'last', logits, fn);
        await runGuarded([state], () => b.run(signal, true));
        await this.absorb(state, chunk, layers, logits, fn);
      }
      return logits;
    } finally {
      state.busy = false;
    }
  }

  /** The blocking twin of {@link step}. */
  stepSync(tokens: TokenIds, state: PerformerLMState): Float32Array {
    const fn = 'PerformerLM.stepSync';
    const t = this.readStep(tokens, state, fn);
    const logits = new Float32Array(this.config.numTokens);
    if (!this.config.causal) {
      this.wholePass(concat(state.history()!, t), null, logits, fn).runSync();
      absorbRecomputed(state, t);
      return logits;
    }
    for (const chunk of this.chunks(t)) {
      const layers = state.layerStates(this.stack);
      const b = this.passPlan(chunk, 1, chunk.length, state.position, null, layers, 'last', logits, fn);
      runGuardedSync([state], () => b.runSync());
      this.absorbSync(state, chunk, layers, logits, fn);
    }
    return logits;
  }

  /**
   * Advances many independent sessions by one token each in one pass: `tokens[i]` joins
   * `states[i]`, each at its own position. The dense layers (projections, feed-forward, the
   * logits) read their weights once for all sessions; the attention of each session reads its
   * own state. Returns the logits of every session's token, `[states.length, numTokens]`,
   * equal bit for bit to stepping the sessions one by one with {@link step} on the same
   * kernel set. Off the event loop; an abort before the pass starts leaves every state as it
   * was, once running it completes.
   *
   * Under performer-pytorch numerics a session whose key maximum rose in a lower layer has its
   * prefix recomputed after the batched pass, for that session alone (as {@link step} does; its
   * `recomputes` counts it); the others are unaffected. A model that is not causal has no
   * decoding state to batch: its sessions are stepped one after another.
   * @param states Distinct states of this model, at least one.
   * @param tokens One token id per state (Int32Array or array).
   * @throws TypeError / RangeError for bad tokens, states of another model, the same state
   *   twice or a length mismatch; Error (`ERR_INVALID_STATE`) while another step uses a state
   *   or after a failed step broke it; AbortError.
   */
  async stepBatch(states: readonly PerformerLMState[], tokens: TokenIds, options?: { signal?: AbortSignal }): Promise<Tensor> {
    const fn = 'PerformerLM.stepBatch';
    const o = readOptions<{ signal?: AbortSignal }>(options, `${fn} options`, ['signal']);
    const signal = readSignal(o.signal, `${fn} options.signal`);
    const { list, t } = this.readBatchStep(states, tokens, fn);
    const V = this.config.numTokens;
    const out = newFloat32Array(list.length * V, `${fn} logits`);
    for (const state of list) state.busy = true;
    try {
      if (!this.config.causal) {
        for (let i = 0; i < list.length; i++) {
          list[i].busy = false;
          try {
            // Only the first may be aborted, so an abort leaves every state as it was.
            out.set(await this.step(t.subarray(i, i + 1), list[i], { signal: i === 0 ? signal : undefined }), i * V);
          } finally {
            list[i].busy = true;
          }
        }
      } else {
        const layers = list.map((state) => state.layerStates(this.stack));
        const b = this.batchPlan(list, layers, t, out, fn);
        await runGuarded(list, () => b.run(signal, true));
        for (let i = 0; i < list.length; i++) await this.absorb(list[i], t.subarray(i, i + 1), layers[i], out.subarray(i * V, (i + 1) * V), fn);
      }
      return { data: out, shape: Object.freeze([list.length, V]) };
    } finally {
      for (const state of list) state.busy = false;
    }
  }

  /** The blocking twin of {@link stepBatch}. */
  stepBatchSync(states: readonly PerformerLMState[], tokens: TokenIds): Tensor {
    const fn = 'PerformerLM.stepBatchSync';
    const { list, t } = this.readBatchStep(states, tokens, fn);
    const V = this.config.numTokens;
    const out = newFloat32Array(list.length * V, `${fn} logits`);
    if (!this.config.causal) {
      list.forEach((state, i) => out.set(this.stepSync(t.subarray(i, i + 1), state), i * V));
    } else {
      const layers = list.map((state) => state.layerStates(this.stack));
      const b = this.batchPlan(list, layers, t, out, fn);
      runGuardedSync(list, () => b.runSync());
      list.forEach((state, i) => this.absorbSync(state, t.subarray(i, i + 1), layers[i], out.subarray(i * V, (i + 1) * V), fn));
    }
    return { data: out, shape: Object.freeze([list.length, V]) };
  }

  /**
   * A token sampler with {@link generate}'s options (greedy by default): for callers that
   * step sessions themselves (`step`, `stepBatch`). `options.draws` (from a sampler's
   * `state()`) continues a sampler's sequence where it stopped.
   * @throws TypeError / RangeError for bad options.
   */
  sampler(options: SamplingOptions & { draws?: number } = {}): TokenSampler {
    const fn = 'PerformerLM.sampler';
    const o = readOptions<SamplingOptions & { draws?: number }>(options, `${fn} options`, ['temperature', 'topK', 'topP', 'seed', 'draws']);
    return new TokenSampler(o, this.config.numTokens, fn);
  }

  /**
   * Generates tokens, streaming: the prompt in one causal pass, then one step per token
   * from the decoding state (O(1) in the context length). Greedy by default
   * (temperature 0). The state (`options.state` or a new one) absorbs the prompt and
   * every token yielded; when the consumer stops early or aborts, `state.position` says
   * how many tokens it holds.
   * @param prompt Token ids (Int32Array or array); may be empty when `options.state` already holds tokens.
   * @throws (synchronously) TypeError / RangeError for bad prompt or options.
   */
  generate(prompt: TokenIds, options: GenerateOptions): AsyncGenerator<number, void, undefined> {
    const fn = 'PerformerLM.generate';
    if (options === undefined) throw typeError(`${fn} options: required ({ maxNewTokens, ... }), received undefined`);
    const o = readOptions<GenerateOptions>(options, `${fn} options`, ['maxNewTokens', 'temperature', 'topK', 'topP', 'seed', 'stopTokens', 'signal', 'state']);
    if (o.maxNewTokens === undefined) throw typeError(`${fn} options.maxNewTokens: required, received undefined`);
    if (typeof o.maxNewTokens !== 'number' || !Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 1) {
      throw rangeError(`${fn} options.maxNewTokens: expected an integer >= 1, received ${describe(o.maxNewTokens)}`);
    }
    const maxNew = o.maxNewTokens;
    const sampler = readSampler(o, fn, this.config.numTokens);
    const stop = new Set(o.stopTokens === undefined ? [] : readTokenList(Array.isArray(o.stopTokens) ? [...o.stopTokens] : o.stopTokens, `${fn} options.stopTokens`, this.config.numTokens));
    const signal = readSignal(o.signal, `${fn} options.signal`);
    const p = readTokenList(prompt, `${fn} prompt`, this.config.numTokens);
    if (o.state !== undefined) this.checkState(o.state, `${fn} options.state`);
    const state = o.state ?? this.createStateSync();
    if (p.length === 0 && state.position === 0) throw rangeError(`${fn} prompt: at least one token is needed to start a generation`);
    if (p.length === 0 && state.history() === null) {
      throw rangeError(`${fn} prompt: empty, and this state keeps no token history to recompute the last logits from; pass at least the next token`);
    }
    this.checkPositions(state.position, p.length + maxNew, fn);
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- an async generator cannot be an arrow function, so it cannot capture `this`
    const self = this;
    async function* run(): AsyncGenerator<number, void, undefined> {
      let logits = p.length > 0 ? await self.step(p, state, { signal }) : await self.lastLogits(state, signal);
      for (let i = 0; i < maxNew; i++) {
        const token = sample(logits, sampler);
        yield token;
        logits = await self.step(Int32Array.of(token), state, { signal });
        if (stop.has(token)) return;
      }
    }
    return run();
  }

  private gradientStore(): GradientStore {
    if (this.grads === null) this.grads = new GradientStore(this.parts(), this.source);
    return this.grads;
  }

  private parts(): LMParts {
    return {
      config: this.config,
      numerics: this.numerics,
      stack: this.stack,
      tokenEmb: this.tokenEmb,
      positions: this.positions,
      layerRotary: this.layerRotary,
      norm: this.norm,
      head: this.head,
    };
  }

  // The pass writes its gradients into a scratch store, added to the model's afterwards,
  // so an aborted or failed pass leaves the accumulated gradients as they were.
  private pending: GradientStore | null = null;

  private buildTraining(tokens: unknown, targets: unknown, o: Partial<TrainingOptions>, fn: string) {
    const format = this.weightFormat;
    if (format !== 'float32') throw quantizedTrainingError(fn, format, LM_FLOATS);
    const kind = readEnum<TrainingAttention>(o.attention, `${fn} options.attention`, 'favor', ['favor', 'softmax']);
    const dropout = this.readDropout(o.dropout, o.seed, fn);
    const parts = this.parts();
    checkTrainable(parts, kind, fn);
    const t = readTokens(tokens, `${fn} tokens`, this.config.numTokens);
    const [B, L] = t.shape;
    const y = readTargets(targets, `${fn} targets`, this.config.numTokens, B, L);
    this.checkPositions(0, L, fn);
    let count = 0;
    for (let i = 0; i < y.length; i++) if (y[i] >= 0) count++;
    if (count === 0) throw rangeError(`${fn} targets: every target is negative (ignored); at least one position must count`);
    this.gradientStore();
    if (this.pending === null) this.pending = new GradientStore(parts, this.source);
    this.pending.zero();
    const loss = new Float64Array(2);
    const b = new PlanBuilder();
    planTrainingPass(b, parts, this.pending, { tokens: t.data, targets: y, batch: B, len: L, attention: kind, gradScale: 1 / count, loss, dropout });
    this.passes++;
    return { b, loss };
  }

  private readDropout(value: unknown, seed: unknown, fn: string): TrainingCall['dropout'] {
    const s = readInteger(seed, `${fn} options.seed`, this.passes, 0, Number.MAX_SAFE_INTEGER);
    if (value === false) return null;
    const o = readOptions<DropoutRates>(value, `${fn} options.dropout`, ['emb', 'attn', 'ff']);
    const rate = (key: keyof DropoutRates) => readNumber(o[key], `${fn} options.dropout.${key}`, this.dropout[key], { min: 0, max: 1 });
    const rates = { emb: rate('emb'), attn: rate('attn'), ff: rate('ff') };
    return rates.emb === 0 && rates.attn === 0 && rates.ff === 0 ? null : { ...rates, seed: s };
  }

  private commitGradients(): void {
    this.pending!.finishPass();
    const store = this.grads!;
    for (const [name, g] of this.pending!.byName) {
      const into = store.byName.get(name)!;
      for (let i = 0; i < g.length; i++) into[i] += g[i];
    }
  }

  /** @internal The fingerprint of configuration, numerics and weights (decoding states carry it). */
  fingerprint(): string {
    if (this.cachedFingerprint === null) this.cachedFingerprint = modelFingerprint('PerformerLM', this.config, this.numerics, this.source, this.weightFormat);
    return this.cachedFingerprint;
  }

  // Whether states keep their tokens: a model that is not causal recomputes every step;
  // with performer-pytorch numerics, softmax features below the top layer may need it.
  private keepsHistory(): boolean {
    const c = this.config;
    if (!c.causal) return true;
    return this.numerics === 'performer-pytorch' && c.features === 'softmax' && this.stack.layers.some((_, l) => l < c.depth - 1 && this.stack.globalHeads(l) > 0);
  }

  // A global head's key maximum rose in a layer below the top: the layers above saw keys
  // that performer-pytorch would now compute differently (see docs/performer-pytorch.md).
  // After a pass that advanced `state` by `tokens` (its `layers`): the history takes them and,
  // when a lower layer's key maximum rose (performer-pytorch numerics), the prefix is
  // recomputed into fresh layers, which then replace the state's; `logits` gets its last row.
  private async absorb(state: PerformerLMState, tokens: Int32Array, layers: LayerState[], logits: Float32Array, fn: string): Promise<void> {
    const recompute = this.recomputeAfter(state, tokens, layers, logits, fn);
    if (recompute !== null) {
      await runGuarded([state], () => recompute.plan.run(undefined, true));
      recompute.commit();
    }
    state.position += tokens.length;
  }

  private absorbSync(state: PerformerLMState, tokens: Int32Array, layers: LayerState[], logits: Float32Array, fn: string): void {
    const recompute = this.recomputeAfter(state, tokens, layers, logits, fn);
    if (recompute !== null) {
      runGuardedSync([state], () => recompute.plan.runSync());
      recompute.commit();
    }
    state.position += tokens.length;
  }

  private recomputeAfter(state: PerformerLMState, tokens: Int32Array, layers: LayerState[], logits: Float32Array, fn: string) {
    state.appendTokens(tokens);
    if (!this.mustRecompute(layers)) return null;
    const fresh = this.stack.createStates(1);
    return {
      plan: this.wholePass(state.history()!, fresh, logits, fn),
      commit: () => {
        state.replaceLayers(fresh);
        state.countRecompute();
      },
    };
  }

  private mustRecompute(layers: LayerState[]): boolean {
    if (!this.keepsHistory()) return false;
    return layers.some((s, l) => l < this.config.depth - 1 && s.maxRose[0] !== 0);
  }

  // The whole token sequence in one pass, as performer-pytorch recomputes it: into fresh
  // states (a rebuilt prefix) or none (a model that is not causal).
  private wholePass(tokens: Int32Array, fresh: LayerState[] | null, logits: Float32Array, fn: string): PlanBuilder {
    return this.passPlan(tokens, 1, tokens.length, 0, null, fresh, 'last', logits, fn);
  }

  // A step's tokens in chunks of PREFILL_CHUNK when the state keeps no history (the same
  // result: a state continues exactly); whole otherwise (a chunk could raise the key
  // maximum of a lower layer, and the recompute would then be a whole pass anyway).
  private chunks(tokens: Int32Array): Int32Array[] {
    if (this.keepsHistory() || tokens.length <= PREFILL_CHUNK) return [tokens];
    const out: Int32Array[] = [];
    for (let i = 0; i < tokens.length; i += PREFILL_CHUNK) out.push(tokens.subarray(i, i + PREFILL_CHUNK));
    return out;
  }

  // Logits of the last token a state holds (a generation that starts from a state with
  // no new prompt), recomputed from its token history.
  private async lastLogits(state: PerformerLMState, signal: AbortSignal | undefined): Promise<Float32Array> {
    const logits = new Float32Array(this.config.numTokens);
    // generate() checked that the state keeps its history.
    await this.wholePass(state.history()!, null, logits, 'PerformerLM.generate').run(signal);
    return logits;
  }

  private checkState(state: unknown, fn: string): asserts state is PerformerLMState {
    if (!(state instanceof PerformerLMState)) throw typeError(`${fn}: expected a PerformerLMState (from createState or loadState), received ${describe(state)}`);
    if (state.model !== this.fingerprint()) {
      throw rangeError(`${fn}: made by a different model (other weights, configuration or numerics)`, 'ERR_INVALID_ARG_VALUE');
    }
    if (state.busy) throw stateError(`${fn}: another step is using this state; await it first`);
    state.checkUsable(fn);
  }

  private readBatchStep(states: unknown, tokens: unknown, fn: string): { list: PerformerLMState[]; t: Int32Array } {
    const list = readStateList<PerformerLMState>(states, fn, 'PerformerLMState', (state, name) => {
      this.checkState(state, name);
      this.checkPositions(state.position, 1, name);
    });
    const t = readTokenList(tokens, `${fn} tokens`, this.config.numTokens);
    if (t.length !== list.length) {
      throw rangeError(`${fn} tokens: expected one token per state (${list.length}), received ${t.length}`);
    }
    return { list, t };
  }

  // One pass over every session's token: row i is session i (see StackCall.sessions).
  private batchPlan(list: PerformerLMState[], layers: LayerState[][], tokens: Int32Array, out: Float32Array, fn: string): PlanBuilder {
    const sessions = list.map((state, i) => ({ states: layers[i], start: state.position }));
    return this.passPlan(tokens, list.length, 1, 0, null, null, 'all', out, fn, 'favor', sessions);
  }

  private readStep(tokens: unknown, state: PerformerLMState, fn: string): Int32Array {
    this.checkState(state, `${fn} state`);
    const t = readTokenList(tokens, `${fn} tokens`, this.config.numTokens);
    if (t.length === 0) throw rangeError(`${fn} tokens: expected at least one token, received none`);
    this.checkPositions(state.position, t.length, fn);
    return t;
  }

  private checkPositions(start: number, count: number, fn: string): void {
    const p = this.positions;
    if (p.kind === 'learned' && start + count > p.rows) {
      throw rangeError(
        `${fn}: positions ${start} to ${start + count - 1} go past the model's learned ${this.config.positions} position embeddings, ` +
          `which cover positions 0 to ${p.rows - 1} (max_seq_len ${this.config.maxSeqLen}; rotary positions have no such limit)`,
      );
    }
  }

  private buildForward(tokens: unknown, options: unknown, fn: string, async: boolean) {
    const o = readOptions<LMForwardOptions>(options, `${fn} options`, async ? ['mask', 'attention', 'signal'] : ['mask', 'attention']);
    const attention = readEnum<TrainingAttention>(o.attention, `${fn} options.attention`, 'favor', ['favor', 'softmax']);
    const t = readTokens(tokens, `${fn} tokens`, this.config.numTokens);
    const [B, L] = t.shape;
    this.checkPositions(0, L, fn);
    const keep = o.mask === undefined ? null : readMask(o.mask, `${fn} options.mask`, [B, L]);
    const V = this.config.numTokens;
    const out = newFloat32Array(B * L * V, `${fn} logits`);
    const b = this.passPlan(t.data, B, L, 0, keep, null, 'all', out, fn, attention);
    return { b, out: { data: out, shape: Object.freeze([B, L, V]) } as Tensor, signal: readSignal(o.signal, `${fn} options.signal`) };
  }

  // Embeddings, the stack, the final norm and the logits of every row or of the last one.
  private passPlan(
    tokens: Int32Array,
    batch: number,
    len: number,
    start: number,
    keep: Uint8Array | null,
    states: LayerState[] | null,
    rows: 'all' | 'last',
    out: Float32Array,
    fn: string,
    attention: TrainingAttention = 'favor',
    sessions?: readonly SessionRow[],
  ): PlanBuilder {
    const c = this.config;
    const D = c.dim;
    // A pass that advances decoding states is a step (or a recompute inside one).
    const b = new PlanBuilder({ rowStable: states !== null || sessions !== undefined });
    const x = b.acquire(batch * len * D);
    const p = this.positions;
    // A batched step embeds each session's token at its own position.
    const parts = sessions === undefined ? [{ first: 0, rows: batch * len, start }] : sessions.map((session, i) => ({ first: i, rows: 1, start: session.start }));
    for (const part of parts) {
      b.add({
        op: 'embed',
        tokens: tokens.subarray(part.first, part.first + part.rows),
        rows: part.rows,
        len,
        dim: D,
        table: this.tokenEmb,
        numTokens: c.numTokens,
        start: part.start,
        out: x.subarray(part.first * D, (part.first + part.rows) * D),
        positions: p.kind,
        posTable: p.table,
        posRows: p.rows,
        invFreq: p.kind === 'sinusoid' ? p.invFreq : null,
      });
    }
    const y = b.acquire(batch * len * D);
    this.stack.plan(b, { x, y, batch, len, keep, start, rotary: this.layerRotary, states, label: fn, attention, sessions });
    b.release(x);
    const n = rows === 'all' ? batch * len : 1;
    const last = rows === 'all' ? y : y.subarray((len - 1) * D, len * D);
    const normed = b.acquire(n * D);
    b.add({ op: 'layerNorm', x: last, rows: n, dim: D, gamma: this.norm.gamma, beta: this.norm.beta, eps: LAYER_NORM_EPS, y: normed });
    b.add({ op: 'linear', x: normed, rows: n, ...this.head.stepFields, activation: 'none', y: out });
    b.release(normed);
    b.release(y);
    b.checkOutput(out, fn);
    return b;
  }
}

// Rows of a prompt per pass when the state keeps no history (bounds the temporaries).
const PREFILL_CHUNK = 4096;

// Runs a pass that advances states: if it fails, every one is marked broken (its arrays
// may hold part of the pass). An atomic pass only rejects with AbortError before it starts.
async function runGuarded(states: PerformerLMState[], run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (error) {
    if ((error as { name?: string }).name !== 'AbortError') for (const state of states) state.broken = true;
    throw error;
  }
}

// A model that is not causal: the tokens join the history once its whole pass succeeded.
function absorbRecomputed(state: PerformerLMState, tokens: Int32Array): void {
  state.appendTokens(tokens);
  state.countRecompute();
  state.position += tokens.length;
}

function concat(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function runGuardedSync(states: PerformerLMState[], run: () => void): void {
  try {
    run();
  } catch (error) {
    for (const state of states) state.broken = true;
    throw error;
  }
}

// The axial table [prod(shape), D]: position t sums one row of each axis's table.
function axialTable(c: LMConfig, source: TensorSource): Positions {
  const shape = c.axialShape;
  const rows = shape.reduce((a, b) => a * b, 1);
  const weights = shape.map((size, axis) => {
    const dims = [1, ...shape.map((s, i) => (i === axis ? s : 1)), c.dim];
    // axial-positional-embedding 0.2 names weights_0, 0.3 names weights.0.
    return source.take(source.has(`pos_emb.weights.${axis}`) ? `pos_emb.weights.${axis}` : `pos_emb.weights_${axis}`, dims);
  });
  const axial = { shape, weights };
  const table = new Float32Array(rows * c.dim);
  fillAxialTable(axial, table);
  return { kind: 'learned', table, rows, axial };
}

function parameterCount(c: LMConfig): number {
  const inner = c.heads * c.dimHead;
  const hidden = c.dim * c.ffMult;
  const layer = 4 * c.dim * inner + 3 * inner + c.dim + c.dim * hidden * (c.ffGlu ? 3 : 2) + 3 * hidden + c.numFeatures * c.dimHead + 4 * c.dim;
  const axial = c.positions === 'axial' ? c.axialShape.reduce((a, b) => a + b, 0) * c.dim + c.axialShape.reduce((a, b) => a * b, 1) * c.dim : 0;
  return c.depth * layer + 2 * c.numTokens * c.dim + c.maxSeqLen * (c.dim + c.dimHead) + axial;
}

function describeConfig(c: LMConfig): string {
  return `dim ${c.dim}, depth ${c.depth}, heads ${c.heads}, dim_head ${c.dimHead}, nb_features ${c.numFeatures}, positions ${c.positions}, norm ${c.norm}` +
    `${c.reversible ? ', reversible' : ''}${c.shiftTokens ? ', shift_tokens' : ''}${c.ffGlu ? ', ff_glu' : ''}${c.tieEmbed ? ', tie_embed' : ''}`;
}
