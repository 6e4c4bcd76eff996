/**
 * Transformer blocks: an encoder layer (self-attention, feed-forward) and a decoder
 * layer (causal self-attention, optional cross-attention, feed-forward), each with
 * residuals and LayerNorm after (post-norm, the default) or before (pre-norm) every
 * part, as PyTorch's nn.TransformerEncoderLayer / nn.TransformerDecoderLayer.
 * Shape legend: B = batch, L = sequence, Lm = memory length, D = modelDim.
 *   x [B, L, D], memory [B, Lm, D]  ->  [B, L, D]
 */
import { DEFAULT_LAYER_NORM_EPS } from '../defaults';
import { typeError } from '../errors';
import type { MaskLike, Tensor, TensorLike } from '../tensor';
import { readBoolean, readEnum, readInteger, readNumber, readOptions } from '../validate';
import { DecodingState } from './decoding';
import { LayerBase } from './layer';
import { buildModuleBackward, type InputGradients } from './layer-training';
import {
  MHA_OPTIONS,
  MultiHeadAttention,
  readAttentionOptions,
  type AttentionKind,
  type KeySource,
  type MultiHeadAttentionConfig,
  type MultiHeadAttentionOptions,
} from './multi-head-attention';
import { blockParameterCount, checkModelSize, InitRandom, LayerNorm, Linear, type ParamSlot } from './parameters';
import { PlanBuilder } from './plan';
import { buildDecoder, buildDecoderState, buildEncoder, decoderStateSpec, runDecoderStep, runDecoderStepSync } from './stack-plans';

// Largest hidden activation block of a feed-forward part (16 MiB).
const FF_CHUNK_FLOATS = 4 * 1024 * 1024;

/** The feed-forward activation: ReLU or GELU (exact, erf form). */
export type Activation = 'relu' | 'gelu';

/** Options of {@link EncoderLayer}. */
export interface EncoderLayerOptions extends Omit<MultiHeadAttentionOptions, 'keyDim' | 'valueDim' | 'causal'> {
  /**
   * Causal self-attention: row i attends rows 0..i, as a GPT-style `nn.TransformerEncoderLayer`
   * run with a causal `src_mask` (or `is_causal=True`). Default false for encoders, true for
   * decoders (a decoder with `causal: false` is one run without `tgt_mask`; it cannot
   * decode token by token).
   */
  causal?: boolean;
  /** Width of the feed-forward part. Default 4 * modelDim. */
  ffDim?: number;
  /** Default 'relu' (as PyTorch). */
  activation?: Activation;
  /** Pre-norm (LayerNorm before each part) instead of post-norm. Default false. */
  normFirst?: boolean;
  /** LayerNorm epsilon. Default 1e-5 (BERT uses 1e-12). */
  layerNormEps?: number;
}

/** Options of {@link DecoderLayer}. */
export interface DecoderLayerOptions extends EncoderLayerOptions {
  /** A cross-attention part over a memory (the encoder's output). Default true. */
  crossAttention?: boolean;
}

/** The resolved options of a block. */
export interface BlockConfig {
  /** Self-attention options (shared by the cross-attention). */
  attention: MultiHeadAttentionConfig;
  /** Feed-forward width. */
  ffDim: number;
  /** Feed-forward activation. */
  activation: Activation;
  /** Pre-norm. */
  normFirst: boolean;
  /** LayerNorm epsilon. */
  layerNormEps: number;
  /** Decoder only: whether there is cross-attention. */
  crossAttention?: boolean;
}

/** Options of an encoder's forward pass. */
export interface EncoderForwardOptions {
  /** `[B, L]` Uint8Array, nonzero = attend: padded positions are no key to any query. */
  keyPaddingMask?: MaskLike;
  /** Overrides the layers' attention for this call. */
  attention?: AttentionKind;
  /** Async call only: aborting rejects with an AbortError. */
  signal?: AbortSignal;
}

/** Options of a decoder's forward pass. */
export interface DecoderForwardOptions extends EncoderForwardOptions {
  /** `[B, Lm, modelDim]`: what the cross-attention attends. Required with cross-attention. */
  memory?: TensorLike;
  /** `[B, Lm]` Uint8Array, nonzero = attend. */
  memoryKeyPaddingMask?: MaskLike;
}

/** Options of a decoder's createState. */
export interface DecoderStateOptions {
  /** `[B, Lm, modelDim]`: the memory every step's cross-attention attends. */
  memory?: TensorLike;
  /** `[B, Lm]` Uint8Array, nonzero = attend. */
  memoryKeyPaddingMask?: MaskLike;
  /** Async call only. */
  signal?: AbortSignal;
}

export const BLOCK_OPTIONS = [
  ...MHA_OPTIONS.filter((k) => k !== 'keyDim' && k !== 'valueDim'),
  'ffDim',
  'activation',
  'normFirst',
  'layerNormEps',
] as const;

/** @internal */
export function readBlockOptions(o: Partial<DecoderLayerOptions>, fn: string, decoder: boolean, numLayers = 1): BlockConfig {
  const attention = readAttentionOptions({ ...o, causal: readBoolean(o.causal, `${fn}.causal`, decoder) }, fn);
  const config: BlockConfig = {
    attention,
    ffDim: readInteger(o.ffDim, `${fn}.ffDim`, 4 * attention.modelDim, 1, 1 << 24),
    activation: readEnum(o.activation, `${fn}.activation`, 'relu', ['relu', 'gelu'] as const),
    normFirst: readBoolean(o.normFirst, `${fn}.normFirst`, false),
    layerNormEps: readNumber(o.layerNormEps, `${fn}.layerNormEps`, DEFAULT_LAYER_NORM_EPS, { min: Number.MIN_VALUE }),
  };
  if (decoder) config.crossAttention = readBoolean(o.crossAttention, `${fn}.crossAttention`, true);
  checkModelSize(numLayers * blockParameterCount(attention, config.ffDim, config.crossAttention === true), fn);
  return config;
}

/** @internal BlockConfig back to constructor options. */
export function blockOptions(c: BlockConfig): DecoderLayerOptions {
  const { keyDim: _keyDim, valueDim: _valueDim, ...attention } = structuredClone(c.attention);
  const options: DecoderLayerOptions = { ...attention, ffDim: c.ffDim, activation: c.activation, normFirst: c.normFirst, layerNormEps: c.layerNormEps };
  if (c.crossAttention !== undefined) options.crossAttention = c.crossAttention;
  return options;
}

/** @internal One block's plan inputs. */
export interface BlockCall {
  x: Float32Array;
  batch: number;
  length: number;
  y: Float32Array;
  keyPadding: Uint8Array | null;
  attention: AttentionKind;
  memory: KeySource | null;
  memoryPadding: Uint8Array | null;
  /** A decoding step: the sessions whose rows make up the batch, in order (see AttentionCall.sessions). */
  sessions: readonly BlockSession[] | null;
  /** Parameter-name prefix of this block in errors ('' or 'layers.{i}.'). */
  label: string;
}

/** @internal One decoding session's rows in a block and its states there. */
export interface BlockSession {
  batch: number;
  /** The self-attention's running FAVOR+ state. */
  selfState: Float32Array;
  /** The cross-attention's absorbed memory (KeySource 'state'), when there is one. */
  memoryState: Float32Array | null;
}

/** The parts and plan shared by EncoderLayer and DecoderLayer. */
abstract class Block extends LayerBase {
  abstract readonly config: BlockConfig;
  /** @internal */ readonly selfAttn: MultiHeadAttention;
  /** @internal */ readonly crossAttn: MultiHeadAttention | null;
  /** @internal */ readonly ff1: Linear;
  /** @internal */ readonly ff2: Linear;
  /** @internal */ readonly norms: LayerNorm[];

  // Layer i of a stack has seedOffset i: its weights and features differ from its neighbours'.
  protected constructor(config: BlockConfig, cross: boolean, seedOffset: number) {
    super();
    const a = config.attention;
    const base = 3 * seedOffset;
    const mha = (offset: number, causal: boolean) =>
      new MultiHeadAttention({
        ...a,
        causal,
        featureMap: { ...a.featureMap, seed: a.featureMap.seed + base + offset },
        seed: a.seed + base + offset,
      });
    this.selfAttn = mha(0, a.causal);
    this.crossAttn = cross ? mha(1, false) : null;
    const random = new InitRandom(a.seed + base + 2);
    this.ff1 = Linear.random(a.modelDim, config.ffDim, a.bias, random);
    this.ff2 = Linear.random(config.ffDim, a.modelDim, a.bias, random);
    this.norms = Array.from({ length: cross ? 3 : 2 }, () => new LayerNorm(a.modelDim, config.layerNormEps));
  }

  /** @internal */
  slots(prefix: string, into: Map<string, ParamSlot>): void {
    this.selfAttn.slots(`${prefix}selfAttn.`, into);
    if (this.crossAttn !== null) this.crossAttn.slots(`${prefix}crossAttn.`, into);
    this.ff1.slots(`${prefix}ff1`, into);
    this.ff2.slots(`${prefix}ff2`, into);
    this.normNames().forEach((name, i) => this.norms[i].slots(`${prefix}${name}`, into));
  }

  /** @internal */
  attentionModules(): MultiHeadAttention[] {
    return this.crossAttn === null ? [this.selfAttn] : [this.selfAttn, this.crossAttn];
  }

  /** Constructor options that rebuild this block (the parameters are separate). */
  options(): DecoderLayerOptions {
    return blockOptions(this.config);
  }

  // PyTorch's names: the decoder's feed-forward norm is norm3 (norm2 follows cross-attention).
  private normNames(): string[] {
    if (this.norms.length === 3) return ['norm1', 'norm2', 'norm3'];
    return this instanceof DecoderLayer ? ['norm1', 'norm3'] : ['norm1', 'norm2'];
  }

  /** @internal Appends this block to a plan: y = block(x). */
  plan(b: PlanBuilder, call: BlockCall): void {
    const c = this.config;
    const D = c.attention.modelDim;
    const rows = call.batch * call.length;
    const norm = (n: LayerNorm, x: Float32Array, y: Float32Array) =>
      b.add({ op: 'layerNorm', x, y, rows, dim: D, gamma: n.weight, beta: n.bias, eps: n.eps });
    const attend = (m: MultiHeadAttention, x: Float32Array, y: Float32Array, residual: Float32Array, keys: KeySource, pad: Uint8Array | null) =>
      m.plan(b, {
        x,
        batch: call.batch,
        queryLength: call.length,
        keys,
        y,
        residual,
        keyPadding: pad,
        attention: call.sessions !== null ? 'favor' : call.attention,
        causal: m.config.causal,
        sessions: call.sessions?.map((s) => ({ batch: s.batch, state: m === this.selfAttn ? s.selfState : s.memoryState! })) ?? null,
        label: `${call.label}${m === this.selfAttn ? 'selfAttn' : 'crossAttn'}`,
      });
    // The hidden activations go through in row chunks: a long sequence then needs at
    // most FF_CHUNK_FLOATS of them at once, not rows x ffDim.
    const feedForward = (x: Float32Array, y: Float32Array, residual: Float32Array) => {
      const chunk = Math.min(rows, Math.max(64, Math.floor(FF_CHUNK_FLOATS / c.ffDim)));
      const h = b.acquire(chunk * c.ffDim);
      for (let r0 = 0; r0 < rows; r0 += chunk) {
        const n = Math.min(chunk, rows - r0);
        const span = (a: Float32Array) => a.subarray(r0 * D, (r0 + n) * D);
        const hidden = h.subarray(0, n * c.ffDim);
        b.add({ op: 'linear', x: span(x), rows: n, ...this.ff1.stepFields, activation: c.activation, y: hidden });
        b.add({ op: 'linear', x: hidden, rows: n, ...this.ff2.stepFields, residual: span(residual), activation: 'none', y: span(y) });
      }
      b.release(h);
    };
    const [n1, n2, n3] = this.norms;
    const ffNorm = this.crossAttn === null ? n2 : n3;
    const a = b.acquire(rows * D);
    if (!c.normFirst) {
      attend(this.selfAttn, call.x, a, call.x, { kind: 'self' }, call.keyPadding);
      norm(n1, a, a);
      if (this.crossAttn !== null) {
        const m = b.acquire(rows * D);
        attend(this.crossAttn, a, m, a, call.memory!, call.memoryPadding);
        norm(n2, m, m);
        b.release(a);
        feedForward(m, call.y, m);
        b.release(m);
      } else {
        feedForward(a, call.y, a);
        b.release(a);
      }
      norm(ffNorm, call.y, call.y);
      return;
    }
    const t = b.acquire(rows * D);
    norm(n1, call.x, t);
    attend(this.selfAttn, t, a, call.x, { kind: 'self' }, call.keyPadding);
    let r = a;
    if (this.crossAttn !== null) {
      norm(n2, a, t);
      r = b.acquire(rows * D);
      attend(this.crossAttn, t, r, a, call.memory!, call.memoryPadding);
      b.release(a);
    }
    norm(ffNorm, r, t);
    feedForward(t, call.y, r);
    b.release(t);
    b.release(r);
  }
}

/**
 * An encoder layer: self-attention and a feed-forward part (ff2(act(ff1(x)))), each
 * with a residual and a LayerNorm (post-norm by default, pre-norm with normFirst).
 * Parameter names as PyTorch's after `fromPyTorch`: selfAttn.*, ff1.*, ff2.*, norm1.*, norm2.*.
 */
export class EncoderLayer extends Block {
  /** The resolved options. */
  readonly config: BlockConfig;

  /** @throws TypeError / RangeError for missing or bad options. */
  constructor(options: EncoderLayerOptions, /** @internal */ seedOffset = 0) {
    const o = readOptions<EncoderLayerOptions>(options, 'EncoderLayer options', BLOCK_OPTIONS);
    if (options === undefined) throw typeError('EncoderLayer options: expected an object, received undefined');
    const config = readBlockOptions(o, 'EncoderLayer options', false);
    super(config, false, seedOffset);
    this.config = config;
  }

  /**
   * The layer on x, off the event loop.
   * @param x `[B, L, modelDim]` float32.
   * @returns `[B, L, modelDim]`.
   * @throws TypeError / RangeError (the Promise rejects) for bad input; AbortError on abort.
   */
  async forward(x: TensorLike, options?: EncoderForwardOptions): Promise<Tensor> {
    const { b, out, signal } = buildEncoder([this], null, x, options, 'EncoderLayer.forward', true);
    await b.run(signal);
    return out;
  }

  /** The blocking twin of {@link forward} (no `signal`). */
  forwardSync(x: TensorLike, options?: Omit<EncoderForwardOptions, 'signal'>): Tensor {
    const { b, out } = buildEncoder([this], null, x, options, 'EncoderLayer.forwardSync', false);
    b.runSync();
    return out;
  }

  /**
   * dL/d x (and dL/d memory with cross-attention) from dL/d output, the parameter
   * gradients added to {@link gradients}; as {@link MultiHeadAttention.backward}.
   */
  async backward(x: TensorLike, gradOut: TensorLike, options?: EncoderForwardOptions): Promise<InputGradients> {
    const { b, signal, finish } = buildModuleBackward(this, this, x, gradOut, options, 'EncoderLayer.backward', true);
    await b.run(signal);
    return finish();
  }

  /** The blocking twin of {@link backward} (no `signal`). */
  backwardSync(x: TensorLike, gradOut: TensorLike, options?: Omit<EncoderForwardOptions, 'signal'>): InputGradients {
    const { b, finish } = buildModuleBackward(this, this, x, gradOut, options, 'EncoderLayer.backwardSync', false);
    b.runSync();
    return finish();
  }
}

/**
 * A decoder layer: causal self-attention (unless causal is false), cross-attention over a
 * memory (unless crossAttention is false) and a feed-forward part, each with a residual
 * and a LayerNorm. Decodes token by token with createState / step (causal only). Parameter names:
 * selfAttn.*, crossAttn.*, ff1.*, ff2.*, norm1.*, norm2.* (cross-attention), norm3.*.
 */
export class DecoderLayer extends Block {
  /** The resolved options. */
  readonly config: BlockConfig;

  /** @throws TypeError / RangeError for missing or bad options. */
  constructor(options: DecoderLayerOptions, /** @internal */ seedOffset = 0) {
    const o = readOptions<DecoderLayerOptions>(options, 'DecoderLayer options', [...BLOCK_OPTIONS, 'crossAttention']);
    if (options === undefined) throw typeError('DecoderLayer options: expected an object, received undefined');
    const config = readBlockOptions(o, 'DecoderLayer options', true);
    super(config, config.crossAttention!, seedOffset);
    this.config = config;
  }

  /**
   * The layer on x (causal self-attention unless built with causal: false), off the event loop.
   * @param x `[B, L, modelDim]` float32.
   * @returns `[B, L, modelDim]`.
   */
  async forward(x: TensorLike, options?: DecoderForwardOptions): Promise<Tensor> {
    const { b, out, signal } = buildDecoder([this], null, x, options, 'DecoderLayer.forward', true);
    await b.run(signal);
    return out;
  }

  /** The blocking twin of {@link forward}. */
  forwardSync(x: TensorLike, options?: Omit<DecoderForwardOptions, 'signal'>): Tensor {
    const { b, out } = buildDecoder([this], null, x, options, 'DecoderLayer.forwardSync', false);
    b.runSync();
    return out;
  }

  /**
   * dL/d x (and dL/d memory with cross-attention) from dL/d output, the parameter
   * gradients added to {@link gradients}; as {@link MultiHeadAttention.backward}.
   */
  async backward(x: TensorLike, gradOut: TensorLike, options?: DecoderForwardOptions): Promise<InputGradients> {
    const { b, signal, finish } = buildModuleBackward(this, this, x, gradOut, options, 'DecoderLayer.backward', true);
    await b.run(signal);
    return finish();
  }

  /** The blocking twin of {@link backward} (no `signal`). */
  backwardSync(x: TensorLike, gradOut: TensorLike, options?: Omit<DecoderForwardOptions, 'signal'>): InputGradients {
    const { b, finish } = buildModuleBackward(this, this, x, gradOut, options, 'DecoderLayer.backwardSync', false);
    b.runSync();
    return finish();
  }

  /** A decoding state (see {@link TransformerDecoder.createStateSync}). */
  createStateSync(batch: number, options?: Omit<DecoderStateOptions, 'signal'>): DecodingState {
    const { b, state } = buildDecoderState(this, [this], batch, options, 'DecoderLayer.createStateSync', false);
    b.runSync();
    return state;
  }

  /** Async twin of {@link createStateSync} (absorbs the memory off the event loop). */
  async createState(batch: number, options?: DecoderStateOptions): Promise<DecodingState> {
    const { b, state, signal } = buildDecoderState(this, [this], batch, options, 'DecoderLayer.createState', true);
    await b.run(signal);
    return state;
  }

  /** Reads a serialized state of this model (see {@link TransformerDecoder.loadState}). */
  loadState(bytes: Uint8Array): DecodingState {
    return this.restoreState(bytes, (B) => decoderStateSpec(this, [this], B), 'DecoderLayer.loadState');
  }

  /** The next tokens [B, n, modelDim] (see {@link TransformerDecoder.step}). */
  async step(x: TensorLike, state: DecodingState, options?: { signal?: AbortSignal }): Promise<Tensor> {
    return runDecoderStep(this, [this], null, x, state, options, 'DecoderLayer.step', 'state');
  }

  /** The blocking twin of {@link step}. */
  stepSync(x: TensorLike, state: DecodingState): Tensor {
    return runDecoderStepSync(this, [this], null, x, state, 'DecoderLayer.stepSync', 'state');
  }

  /** Many sessions advanced in one pass (see {@link TransformerDecoder.stepBatch}). */
  async stepBatch(states: readonly DecodingState[], x: TensorLike, options?: { signal?: AbortSignal }): Promise<Tensor> {
    return runDecoderStep(this, [this], null, x, states, options, 'DecoderLayer.stepBatch', 'states');
  }

  /** The blocking twin of {@link stepBatch}. */
  stepBatchSync(states: readonly DecodingState[], x: TensorLike): Tensor {
    return runDecoderStepSync(this, [this], null, x, states, 'DecoderLayer.stepBatchSync', 'states');
  }
}

export { Block };
