/**
 * Stacks of blocks, as PyTorch's nn.TransformerEncoder / nn.TransformerDecoder:
 * numLayers identical layers (each with its own weights and features) and an
 * optional final LayerNorm. The whole stack runs as one native plan: one async hop
 * per forward pass or decoding step.
 */
import type { Tensor, TensorLike } from '../tensor';
import { rangeError, typeError } from '../errors';
import { readBoolean, readInteger, readNumber, readOptions } from '../validate';
import {
  BLOCK_OPTIONS,
  blockOptions,
  DecoderLayer,
  EncoderLayer,
  readBlockOptions,
  type BlockConfig,
  type DecoderForwardOptions,
  type DecoderLayerOptions,
  type DecoderStateOptions,
  type EncoderForwardOptions,
  type EncoderLayerOptions,
} from './blocks';
import type { DecodingState } from './decoding';
import { LayerBase } from './layer';
import { buildModuleBackward, type InputGradients } from './layer-training';
import type { MultiHeadAttention } from './multi-head-attention';
import { LayerNorm, type ParamSlot } from './parameters';
import { buildDecoder, buildDecoderState, buildEncoder, decoderStateSpec, runDecoderStep, runDecoderStepSync } from './stack-plans';

/** Options of {@link TransformerEncoder}: the layer options plus the stack's. */
export interface TransformerEncoderOptions extends EncoderLayerOptions {
  /** Number of layers. Required. */
  numLayers: number;
  /** A LayerNorm after the last layer (parameters norm.*). Default false. */
  finalNorm?: boolean;
  /** The final LayerNorm's epsilon. Default layerNormEps (PyTorch: the `eps` of the `norm` module given). */
  finalNormEps?: number;
}

/** Options of {@link TransformerDecoder}. */
export interface TransformerDecoderOptions extends DecoderLayerOptions {
  /** Number of layers. Required. */
  numLayers: number;
  /** A LayerNorm after the last layer (parameters norm.*). Default false. */
  finalNorm?: boolean;
  /** The final LayerNorm's epsilon. Default layerNormEps (PyTorch: the `eps` of the `norm` module given). */
  finalNormEps?: number;
}

/** The resolved options of a stack. */
export interface StackConfig extends BlockConfig {
  /** Number of layers. */
  numLayers: number;
  /** Whether a final LayerNorm follows. */
  finalNorm: boolean;
  /** Epsilon of the final LayerNorm. */
  finalNormEps: number;
}

function readStack(options: unknown, fn: string, extra: readonly string[]) {
  const o = readOptions<TransformerDecoderOptions>(options, `${fn} options`, [...BLOCK_OPTIONS, ...extra, 'numLayers', 'finalNorm', 'finalNormEps']);
  if (options === undefined) throw typeError(`${fn} options: expected an object, received undefined`);
  if (o.numLayers === undefined) throw typeError(`${fn} options.numLayers: required, received undefined`);
  const numLayers = readInteger(o.numLayers, `${fn} options.numLayers`, 0, 1, 1024);
  const finalNorm = readBoolean(o.finalNorm, `${fn} options.finalNorm`, false);
  const { numLayers: _n, finalNorm: _f, finalNormEps: _e, ...layer } = o;
  // Every option checked, and the whole stack's size, before the first layer is built.
  const block = readBlockOptions(layer, `${fn} options`, extra.includes('crossAttention'), numLayers);
  const finalNormEps = readNumber(o.finalNormEps, `${fn} options.finalNormEps`, block.layerNormEps, { min: Number.MIN_VALUE });
  if (o.finalNormEps !== undefined && !finalNorm) {
    throw rangeError(`${fn} options.finalNormEps: there is no final norm (finalNorm is false)`, 'ERR_INVALID_ARG_VALUE');
  }
  return { numLayers, finalNorm, finalNormEps, layer };
}

abstract class Stack<L extends EncoderLayer | DecoderLayer> extends LayerBase {
  abstract readonly config: StackConfig;
  /** The layers, in order. */
  readonly layers: readonly L[];
  /** @internal */ readonly norm: LayerNorm | null;

  protected constructor(layers: L[], finalNorm: boolean, finalNormEps: number) {
    super();
    this.layers = Object.freeze(layers);
    this.norm = finalNorm ? new LayerNorm(layers[0].config.attention.modelDim, finalNormEps) : null;
  }

  /** @internal */
  slots(prefix: string, into: Map<string, ParamSlot>): void {
    this.layers.forEach((layer, i) => layer.slots(`${prefix}layers.${i}.`, into));
    if (this.norm !== null) this.norm.slots(`${prefix}norm`, into);
  }

  /** @internal */
  attentionModules(): MultiHeadAttention[] {
    return this.layers.flatMap((layer) => layer.attentionModules());
  }

  /** Constructor options that rebuild this stack (the parameters are separate). */
  options(): TransformerDecoderOptions {
    const c = this.config;
    // finalNormEps only when it differs: model files of stacks without it read the same.
    return { ...blockOptions(c), numLayers: c.numLayers, finalNorm: c.finalNorm, ...(c.finalNorm && c.finalNormEps !== c.layerNormEps ? { finalNormEps: c.finalNormEps } : {}) };
  }
}

/**
 * A stack of {@link EncoderLayer}s. Parameter names: layers.{i}.selfAttn.*, …, norm.*.
 * Shape legend: x [B, L, modelDim], keyPaddingMask [B, L] -> [B, L, modelDim].
 */
export class TransformerEncoder extends Stack<EncoderLayer> {
  /** The resolved options. */
  readonly config: StackConfig;

  /** @throws TypeError / RangeError for missing or bad options. */
  constructor(options: TransformerEncoderOptions) {
    const { numLayers, finalNorm, finalNormEps, layer } = readStack(options, 'TransformerEncoder', []);
    const layers = Array.from({ length: numLayers }, (_, i) => new EncoderLayer(layer as EncoderLayerOptions, i));
    super(layers, finalNorm, finalNormEps);
    this.config = { ...layers[0].config, numLayers, finalNorm, finalNormEps };
  }

  /**
   * The stack on x, off the event loop (one native call for every layer).
   * @param x `[B, L, modelDim]` float32.
   * @returns `[B, L, modelDim]`.
   * @throws TypeError / RangeError (the Promise rejects) for bad input; AbortError on abort.
   */
  async forward(x: TensorLike, options?: EncoderForwardOptions): Promise<Tensor> {
    const { b, out, signal } = buildEncoder([...this.layers], this.norm, x, options, 'TransformerEncoder.forward', true);
    await b.run(signal);
    return out;
  }

  /** The blocking twin of {@link forward} (no `signal`). */
  forwardSync(x: TensorLike, options?: Omit<EncoderForwardOptions, 'signal'>): Tensor {
    const { b, out } = buildEncoder([...this.layers], this.norm, x, options, 'TransformerEncoder.forwardSync', false);
    b.runSync();
    return out;
  }

  /**
   * dL/d x (and dL/d memory with cross-attention) from dL/d output, the parameter
   * gradients added to {@link gradients}; as {@link MultiHeadAttention.backward}.
   */
  async backward(x: TensorLike, gradOut: TensorLike, options?: EncoderForwardOptions): Promise<InputGradients> {
    const { b, signal, finish } = buildModuleBackward(this, this, x, gradOut, options, 'TransformerEncoder.backward', true);
    await b.run(signal);
    return finish();
  }

  /** The blocking twin of {@link backward} (no `signal`). */
  backwardSync(x: TensorLike, gradOut: TensorLike, options?: Omit<EncoderForwardOptions, 'signal'>): InputGradients {
    const { b, finish } = buildModuleBackward(this, this, x, gradOut, options, 'TransformerEncoder.backwardSync', false);
    b.runSync();
    return finish();
  }
}

/**
 * A stack of {@link DecoderLayer}s with token-by-token decoding: createState (with the
 * memory for cross-attention), then step through a prompt in chunks and token by token.
 * Parameter names: layers.{i}.selfAttn.*, layers.{i}.crossAttn.*, …, norm.*.
 */
export class TransformerDecoder extends Stack<DecoderLayer> {
  /** The resolved options. */
  readonly config: StackConfig;

  /** @throws TypeError / RangeError for missing or bad options. */
  constructor(options: TransformerDecoderOptions) {
    const { numLayers, finalNorm, finalNormEps, layer } = readStack(options, 'TransformerDecoder', ['crossAttention']);
    const layers = Array.from({ length: numLayers }, (_, i) => new DecoderLayer(layer as DecoderLayerOptions, i));
    super(layers, finalNorm, finalNormEps);
    this.config = { ...layers[0].config, numLayers, finalNorm, finalNormEps };
  }

  /**
   * The stack on x (causal self-attention in every layer), off the event loop.
   * @param x `[B, L, modelDim]` float32.
   * @returns `[B, L, modelDim]`.
   */
  async forward(x: TensorLike, options?: DecoderForwardOptions): Promise<Tensor> {
    const { b, out, signal } = buildDecoder([...this.layers], this.norm, x, options, 'TransformerDecoder.forward', true);
    await b.run(signal);
    return out;
  }

  /** The blocking twin of {@link forward}. */
  forwardSync(x: TensorLike, options?: Omit<DecoderForwardOptions, 'signal'>): Tensor {
    const { b, out } = buildDecoder([...this.layers], this.norm, x, options, 'TransformerDecoder.forwardSync', false);
    b.runSync();
    return out;
  }

  /**
   * dL/d x (and dL/d memory with cross-attention) from dL/d output, the parameter
   * gradients added to {@link gradients}; as {@link MultiHeadAttention.backward}.
   */
  async backward(x: TensorLike, gradOut: TensorLike, options?: DecoderForwardOptions): Promise<InputGradients> {
    const { b, signal, finish } = buildModuleBackward(this, this, x, gradOut, options, 'TransformerDecoder.backward', true);
    await b.run(signal);
    return finish();
  }

  /** The blocking twin of {@link backward} (no `signal`). */
  backwardSync(x: TensorLike, gradOut: TensorLike, options?: Omit<DecoderForwardOptions, 'signal'>): InputGradients {
    const { b, finish } = buildModuleBackward(this, this, x, gradOut, options, 'TransformerDecoder.backwardSync', false);
    b.runSync();
    return finish();
  }

  /**
   * A decoding state for `batch` sequences: per layer, the running FAVOR+ state of
   * each head (its size does not grow with the context) and, for the cross-attention
   * (memory required when it exists), the memory's keys and values absorbed once into
   * a FAVOR+ state per head: a step then costs the same whatever the memory length, and
   * the state's size depends on the model only.
   * @throws RangeError when the model's attention is not 'favor' or its features are
   *   softmax-opt / softmax-dense (their parameters would be estimated per call);
   *   TypeError / RangeError for a bad memory.
   */
  createStateSync(batch: number, options?: Omit<DecoderStateOptions, 'signal'>): DecodingState {
    const { b, state } = buildDecoderState(this, [...this.layers], batch, options, 'TransformerDecoder.createStateSync', false);
    b.runSync();
    return state;
  }

  /** Async twin of {@link createStateSync} (absorbs the memory off the event loop). */
  async createState(batch: number, options?: DecoderStateOptions): Promise<DecodingState> {
    const { b, state, signal } = buildDecoderState(this, [...this.layers], batch, options, 'TransformerDecoder.createState', true);
    await b.run(signal);
    return state;
  }

  /**
   * Reads a state written by `DecodingState.serialize` (of this model).
   * @throws RangeError (`ERR_INVALID_ARG_VALUE`) for a corrupt buffer, another format
   *   version, or a state of another model (weights, features or configuration).
   */
  loadState(bytes: Uint8Array): DecodingState {
    return this.restoreState(bytes, (B) => decoderStateSpec(this, [...this.layers], B), 'TransformerDecoder.loadState');
  }

  /**
   * The outputs of the next `n` tokens of each sequence, x [B, n, modelDim] (a prompt
   * chunk or one token), attending everything absorbed so far; the state advances by
   * n. Equal to the causal forward pass of the whole sequence up to rounding. Once
   * running, a step is not stopped by `signal` (every layer's state advances, or none).
   * @throws TypeError / RangeError for bad input; Error (`ERR_INVALID_STATE`) while
   *   another async step uses the state.
   */
  async step(x: TensorLike, state: DecodingState, options?: { signal?: AbortSignal }): Promise<Tensor> {
    return runDecoderStep(this, [...this.layers], this.norm, x, state, options, 'TransformerDecoder.step', 'state');
  }

  /** The blocking twin of {@link step}. */
  stepSync(x: TensorLike, state: DecodingState): Tensor {
    return runDecoderStepSync(this, [...this.layers], this.norm, x, state, 'TransformerDecoder.stepSync', 'state');
  }

  /**
   * Advances many independent decoding sessions in one pass, each at its own position: x
   * holds the rows of `states[0]` (its batch), then those of `states[1]`, and so on. The
   * dense ops (projections, feed-forward, norms) read their weights once for all rows; the
   * self-attention of each session reads its own state, its cross-attention its own
   * absorbed memory. Equal bit for bit to stepping each state with {@link stepSync} on its
   * rows (same kernel set). An abort before the pass starts leaves every state as it was;
   * once running it completes.
   * @param states Distinct states of this model, at least one.
   * @param x `[R, n, modelDim]`, R the sum of the states' batches.
   * @returns `[R, n, modelDim]`.
   * @throws TypeError / RangeError for bad input, a state of another model or the same
   *   state twice; Error (`ERR_INVALID_STATE`) while another async step uses a state.
   */
  async stepBatch(states: readonly DecodingState[], x: TensorLike, options?: { signal?: AbortSignal }): Promise<Tensor> {
    return runDecoderStep(this, [...this.layers], this.norm, x, states, options, 'TransformerDecoder.stepBatch', 'states');
  }

  /** The blocking twin of {@link stepBatch}. */
  stepBatchSync(states: readonly DecodingState[], x: TensorLike): Tensor {
    return runDecoderStepSync(this, [...this.layers], this.norm, x, states, 'TransformerDecoder.stepBatchSync', 'states');
  }
}
