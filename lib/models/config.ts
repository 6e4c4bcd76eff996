/**
 * The constructor arguments of performer-pytorch 1.1.4's `PerformerLM` and `Performer`,
 * under their Python names, with that package's defaults (which differ between the two
 * classes), read into one resolved configuration. Unknown keys and values this library
 * does not run are errors naming the key.
 */
import { describe, rangeError, typeError } from '../errors';

/**
 * `Performer(...)` keyword arguments (Python names). `dim`, `depth`, `heads` and
 * `dim_head` are required; the others take performer-pytorch 1.1.4's defaults.
 * Training-only arguments (dropouts, `feature_redraw_interval`, `auto_check_redraw`,
 * `ff_chunks`) are accepted and have no effect on outputs; a PerformerLM's dropouts
 * apply in its training passes (`lossAndGrad`).
 */
export interface PerformerPytorchConfig {
  /** Model width. */
  dim: number;
  /** Layers. */
  depth: number;
  /** Heads per layer (must divide dim, as performer-pytorch requires). */
  heads: number;
  /** Width of a head. */
  dim_head: number;
  /** Local (windowed softmax) heads per layer: one number for every layer, or one per layer. Default 0. */
  local_attn_heads?: number | number[];
  /** Window of the local heads. Default 256. */
  local_window_size?: number;
  /** Default false. */
  causal?: boolean;
  /** Feed-forward width / dim. Default 4. */
  ff_mult?: number;
  /** Random features of the global heads. Default floor(dim_head * ln(dim_head)). */
  nb_features?: number | null;
  /** Reversible layers (two streams, summed at the end). Default false. */
  reversible?: boolean;
  /** GLU feed-forward. Default false. */
  ff_glu?: boolean;
  /** ReLU features (generalized attention). Default false. */
  generalized_attention?: boolean;
  /** Only ReLU is supported: 'ReLU' (or omitted). */
  kernel_fn?: string;
  /** ScaleNorm instead of LayerNorm. Default false (takes precedence over use_rezero, as in performer-pytorch). */
  use_scalenorm?: boolean;
  /** ReZero instead of LayerNorm. Default false. */
  use_rezero?: boolean;
  /** Not supported (cross-attention layers); must be false. */
  cross_attend?: boolean;
  /** Softmax of queries and keys instead of random features. Default false. */
  no_projection?: boolean;
  /** Biases on the q, k, v projections. Performer default true, PerformerLM default false. */
  qkv_bias?: boolean;
  /** Bias on the attention output projection. Performer default true, PerformerLM default false. */
  attn_out_bias?: boolean;
  /** Token shift before each sub-layer. Default false. */
  shift_tokens?: boolean;
  /** Training only (memory of the feed-forward); no effect here. */
  ff_chunks?: number;
  /** Training only (features are fixed by the checkpoint); no effect here. */
  feature_redraw_interval?: number | null;
  /** Training only; no effect here. */
  auto_check_redraw?: boolean;
  /** Dropout probability of the feed-forward hidden activations in `PerformerLM.lossAndGrad` (training); forward passes never drop. Default 0. */
  ff_dropout?: number;
  /** Dropout probability of each attention sub-layer's output in `PerformerLM.lossAndGrad` (training); forward passes never drop. Default 0. */
  attn_dropout?: number;
}

/** `PerformerLM(...)` keyword arguments (Python names): Performer's, plus the language model's own. */
export interface PerformerLMPytorchConfig extends Omit<PerformerPytorchConfig, 'dim_head'> {
  /** Vocabulary size. */
  num_tokens: number;
  /** Rows of the position tables (learned positions end there; rotary ones go on). */
  max_seq_len: number;
  /** Width of a head. Default 64. */
  dim_head?: number;
  /** Logits from the token embedding (no to_out). Default false. */
  tie_embed?: boolean;
  /** Rotary positions (default true; takes precedence over axial_position_emb). */
  rotary_position_emb?: boolean;
  /** Axial learned positions (when rotary_position_emb is false). Default false. */
  axial_position_emb?: boolean;
  /** Axial shape. Default [ceil(max_seq_len / 64), 64]. */
  axial_position_shape?: number[] | null;
  /** Dropout probability of the embeddings (tokens plus positions) in `PerformerLM.lossAndGrad` (training); forward passes never drop. Default 0. */
  emb_dropout?: number;
}

/** How each sub-layer is wrapped: pre-LayerNorm, ScaleNorm or ReZero. */
export type SublayerNorm = 'layernorm' | 'scalenorm' | 'rezero';
/** Which features the global heads use: softmax (FAVOR+), ReLU (generalized) or none (no_projection). */
export type GlobalFeatures = 'softmax' | 'relu' | 'noProjection';

/** The resolved configuration of a performer-pytorch stack (camelCase, every default filled in). */
export interface PerformerStackConfig {
  /** Model width. */
  dim: number;
  /** Layers. */
  depth: number;
  /** Heads per layer. */
  heads: number;
  /** Width of a head. */
  dimHead: number;
  /** Local heads of each layer (the last heads of the layer; the first ones are global). */
  localHeads: number[];
  /** Window of the local heads. */
  localWindowSize: number;
  /** Causal attention. */
  causal: boolean;
  /** Feed-forward width / dim. */
  ffMult: number;
  /** GLU feed-forward. */
  ffGlu: boolean;
  /** Random features (rows of each projection matrix). */
  numFeatures: number;
  /** Features of the global heads. */
  features: GlobalFeatures;
  /** Sub-layer wrapper. */
  norm: SublayerNorm;
  /** Reversible layers. */
  reversible: boolean;
  /** Biases on q, k, v. */
  qkvBias: boolean;
  /** Bias on the attention output. */
  attnOutBias: boolean;
  /** Token shift. */
  shiftTokens: boolean;
}

/** The positional embedding of a PerformerLM. */
export type PositionKind = 'rotary' | 'absolute' | 'axial';

/** The resolved configuration of a PerformerLM. */
export interface LMConfig extends PerformerStackConfig {
  /** Vocabulary size. */
  numTokens: number;
  /** Rows of the stored position tables. */
  maxSeqLen: number;
  /** Positional embedding. */
  positions: PositionKind;
  /** Axial shape (axial positions only; else empty). */
  axialShape: number[];
  /** Logits from the token embedding. */
  tieEmbed: boolean;
}

const STACK_KEYS = [
  'dim',
  'depth',
  'heads',
  'dim_head',
  'local_attn_heads',
  'local_window_size',
  'causal',
  'ff_mult',
  'nb_features',
  'reversible',
  'ff_glu',
  'generalized_attention',
  'kernel_fn',
  'use_scalenorm',
  'use_rezero',
  'cross_attend',
  'no_projection',
  'qkv_bias',
  'attn_out_bias',
  'shift_tokens',
  'ff_chunks',
  'feature_redraw_interval',
  'auto_check_redraw',
  'ff_dropout',
  'attn_dropout',
] as const;
const LM_KEYS = [...STACK_KEYS, 'num_tokens', 'max_seq_len', 'tie_embed', 'rotary_position_emb', 'axial_position_emb', 'axial_position_shape', 'emb_dropout'] as const;

const MAX_DIM = 1 << 16;

/** Reads a config object: an object whose keys are all known. */
function readObject(value: unknown, fn: string, known: readonly string[]): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw typeError(`${fn} config: expected an object of the Python constructor's keyword arguments, received ${describe(value)}`);
  }
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      const hint = key.includes('_') ? '' : ' (the keys are the Python names, for example dim_head, not dimHead)';
      throw typeError(`${fn} config: unknown key '${key}'${hint}; known keys are ${known.join(', ')}`, 'ERR_INVALID_ARG_VALUE');
    }
  }
  return value as Record<string, unknown>;
}

// A key left out takes the default; null only where Python takes None (read by the caller).
function int(c: Record<string, unknown>, key: string, fn: string, fallback: number | undefined, min: number, max: number): number {
  const value = c[key] === undefined ? fallback : c[key];
  if (value === undefined) throw typeError(`${fn} config.${key}: required, received undefined`);
  if (typeof value !== 'number') throw typeError(`${fn} config.${key}: expected an integer, received ${describe(value)}`);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw rangeError(`${fn} config.${key}: expected an integer from ${min} to ${max}, received ${value}`);
  }
  return value;
}

function bool(c: Record<string, unknown>, key: string, fn: string, fallback: boolean): boolean {
  const value = c[key] === undefined ? fallback : c[key];
  if (typeof value !== 'boolean') throw typeError(`${fn} config.${key}: expected a boolean, received ${describe(value)}`);
  return value;
}

/** performer-pytorch's default number of features: int(d * ln d). */
export function defaultPytorchFeatures(dimHead: number): number {
  return Math.floor(dimHead * Math.log(dimHead));
}

function readStack(c: Record<string, unknown>, fn: string, lm: boolean): PerformerStackConfig {
  const dim = int(c, 'dim', fn, undefined, 1, MAX_DIM);
  const depth = int(c, 'depth', fn, undefined, 1, 4096);
  const heads = int(c, 'heads', fn, undefined, 1, MAX_DIM);
  if (dim % heads !== 0) {
    throw rangeError(`${fn} config.heads: ${heads} does not divide dim ${dim} (performer-pytorch requires it)`);
  }
  const dimHead = int(c, 'dim_head', fn, lm ? 64 : undefined, 1, MAX_DIM);
  // local_attn_heads: one number for every layer, or a list with one per layer.
  const rawLocal = c.local_attn_heads === undefined ? 0 : c.local_attn_heads;
  const list = typeof rawLocal === 'number' ? [rawLocal] : rawLocal;
  if (!Array.isArray(list) || list.some((n) => typeof n !== 'number')) {
    throw typeError(`${fn} config.local_attn_heads: expected an integer or a list of integers, received ${describe(rawLocal)}`);
  }
  if (list.length !== 1 && list.length !== depth) {
    throw rangeError(`${fn} config.local_attn_heads: a list must have one entry per layer (depth ${depth}), received ${list.length}`);
  }
  const localHeads = (list.length === 1 ? new Array(depth).fill(list[0]) : list).map((n: number, i: number) => {
    if (!Number.isInteger(n) || n < 0 || n > heads) {
      throw rangeError(`${fn} config.local_attn_heads[${i}]: expected an integer from 0 to heads (${heads}), received ${n}`);
    }
    return n;
  });
  if (localHeads.some((n) => n > 0) && dimHead % 2 !== 0) {
    throw rangeError(`${fn} config.dim_head: local heads rotate pairs of features and need an even dim_head, received ${dimHead}`);
  }
  // A local head's decoding state keeps 2 windows of keys and values.
  const localWindowSize = int(c, 'local_window_size', fn, 256, 1, 1 << 16);
  const kernel = c.kernel_fn;
  if (kernel !== undefined && (typeof kernel !== 'string' || !/^(torch\.)?(nn\.)?relu(\(\))?$/i.test(kernel))) {
    throw rangeError(`${fn} config.kernel_fn: only ReLU is supported ('ReLU'), received ${describe(kernel)}`, 'ERR_INVALID_ARG_VALUE');
  }
  if (bool(c, 'cross_attend', fn, false)) {
    throw rangeError(`${fn} config.cross_attend: cross-attention layers are not supported; cross_attend must be false`, 'ERR_INVALID_ARG_VALUE');
  }
  int(c, 'ff_chunks', fn, 1, 1, 1 << 30);
  bool(c, 'auto_check_redraw', fn, true);
  const redraw = c.feature_redraw_interval;
  if (redraw !== undefined && redraw !== null) int(c, 'feature_redraw_interval', fn, undefined, 0, Number.MAX_SAFE_INTEGER);
  for (const key of ['ff_dropout', 'attn_dropout', 'emb_dropout']) {
    const p = c[key];
    if (p !== undefined && (typeof p !== 'number' || !(p >= 0 && p <= 1))) {
      throw rangeError(`${fn} config.${key}: expected a probability from 0 to 1, received ${describe(p)}`);
    }
  }
  const generalized = bool(c, 'generalized_attention', fn, false);
  const noProjection = bool(c, 'no_projection', fn, false);
  const features: GlobalFeatures = noProjection ? 'noProjection' : generalized ? 'relu' : 'softmax';
  const rawFeatures = c.nb_features;
  const numFeatures =
    rawFeatures === undefined || rawFeatures === null ? defaultPytorchFeatures(dimHead) : int(c, 'nb_features', fn, undefined, 1, 1 << 20);
  if (numFeatures < 1) {
    throw rangeError(`${fn} config.nb_features: the default int(dim_head * ln(dim_head)) is 0 for dim_head ${dimHead}; give nb_features`);
  }
  const scale = bool(c, 'use_scalenorm', fn, false);
  const rezero = bool(c, 'use_rezero', fn, false);
  return {
    dim,
    depth,
    heads,
    dimHead,
    localHeads,
    localWindowSize,
    causal: bool(c, 'causal', fn, false),
    ffMult: int(c, 'ff_mult', fn, 4, 1, 1 << 16),
    ffGlu: bool(c, 'ff_glu', fn, false),
    numFeatures,
    features,
    norm: scale ? 'scalenorm' : rezero ? 'rezero' : 'layernorm',
    reversible: bool(c, 'reversible', fn, false),
    qkvBias: bool(c, 'qkv_bias', fn, !lm),
    attnOutBias: bool(c, 'attn_out_bias', fn, !lm),
    shiftTokens: bool(c, 'shift_tokens', fn, false),
  };
}

/** @internal Reads `Performer(...)`'s arguments. */
export function readPerformerConfig(value: unknown, fn: string): PerformerStackConfig {
  return readStack(readObject(value, fn, STACK_KEYS), fn, false);
}

/** Dropout probabilities applied by training passes (`*_dropout` of the config). */
export interface DropoutRates {
  /** After the embeddings. */
  emb: number;
  /** On each attention sub-layer's output (before the residual). */
  attn: number;
  /** On the feed-forward hidden activations (before the second linear). */
  ff: number;
}

/** @internal The config's dropout probabilities (already checked by readLMConfig). */
export function readDropoutRates(config: PerformerLMPytorchConfig): DropoutRates {
  return { emb: config.emb_dropout ?? 0, attn: config.attn_dropout ?? 0, ff: config.ff_dropout ?? 0 };
}

/** @internal Reads `PerformerLM(...)`'s arguments. */
export function readLMConfig(value: unknown, fn: string): LMConfig {
  const c = readObject(value, fn, LM_KEYS);
  const stack = readStack(c, fn, true);
  const numTokens = int(c, 'num_tokens', fn, undefined, 1, 1 << 24);
  const maxSeqLen = int(c, 'max_seq_len', fn, undefined, 1, 1 << 30);
  const rotary = bool(c, 'rotary_position_emb', fn, true);
  const axial = bool(c, 'axial_position_emb', fn, false);
  const positions: PositionKind = rotary ? 'rotary' : axial ? 'axial' : 'absolute';
  if (positions === 'rotary' && (stack.dimHead % 2 !== 0 || stack.dim % 2 !== 0)) {
    const [key, value] = stack.dimHead % 2 !== 0 ? ['dim_head', stack.dimHead] : ['dim', stack.dim];
    throw rangeError(`${fn} config.${key}: rotary positions (sines and cosines in pairs) need an even ${key}, received ${value}`);
  }
  let axialShape: number[] = [];
  if (positions === 'axial') {
    const raw = c.axial_position_shape ?? [Math.ceil(maxSeqLen / 64), 64];
    if (!Array.isArray(raw) || raw.length === 0 || raw.some((n) => typeof n !== 'number')) {
      throw typeError(`${fn} config.axial_position_shape: expected a list of integers, received ${describe(raw)}`);
    }
    if (raw.some((n) => !Number.isInteger(n) || n < 1) || raw.reduce((a, b) => a * b, 1) > 1 << 30) {
      throw rangeError(`${fn} config.axial_position_shape: expected positive integers whose product is at most 2^30, received ${JSON.stringify(raw)}`);
    }
    axialShape = raw as number[];
  }
  return { ...stack, numTokens, maxSeqLen, positions, axialShape, tieEmbed: bool(c, 'tie_embed', fn, false) };
}

/** @internal The sub-layer prefix of one layer's attention (0) or feed-forward (1) under `root` ('performer.net.' or 'net.'). */
export function sublayerPrefix(c: PerformerStackConfig, root: string, layer: number, part: 0 | 1): string {
  return c.reversible ? `${root}blocks.${layer}.${part === 0 ? 'f' : 'g'}.net.` : `${root}layers.${layer}.${part}.`;
}
