/**
 * The steps of a layer plan (plan.ts), one interface per op, with exactly the fields the
 * addon's decoder for that op reads (native/addon: plan_bindings.cc, backward_bindings.cc,
 * grad_plan_ops.cc, model_plan_ops.cc). Optional fields are those the decoder defaults or
 * skips when absent; `| null` where it treats null as absent. Every array is length-checked
 * there.
 */
import type { NativeDims, NativeFavorOptions, NativeSoftmaxOptions } from '../native';

/** @internal A token shift segment's offset: -1 (next token), 0 or 1 (previous token). */
export type TokenShiftOffset = -1 | 0 | 1;

// ---- plan_bindings.cc

/** @internal y = act(x W^T + bias) (+ residual), rows of x every xStride floats; parse_linear. */
export interface LinearStep {
  op: 'linear';
  x: Float32Array;
  xStride?: number;
  rows: number;
  in: number;
  out: number;
  /**
   * W packed: a Float32Array from linearPack (fp32), or from linearPackQuantized an Int8Array
   * (int8, `scales` required) or a Uint16Array (bf16 values, no `scales`).
   */
  packed: Float32Array | Int8Array | Uint16Array;
  /** int8 weights only: the `out` per-output-channel scales of linearQuantize. */
  scales?: Float32Array | null;
  bias?: Float32Array | null;
  residual?: Float32Array | null;
  activation?: 'none' | 'relu' | 'gelu';
  y: Float32Array;
  /**
   * Each row's bits independent of the row count (decoding steps); see PlanBuilder. Quantized
   * weights are always row-stable.
   */
  rowStable?: boolean;
}

/** @internal y = LayerNorm(x) per row (gamma, beta optional); parse_layer_norm. */
export interface LayerNormStep {
  op: 'layerNorm';
  x: Float32Array;
  rows: number;
  dim: number;
  gamma?: Float32Array | null;
  beta?: Float32Array | null;
  eps: number;
  y: Float32Array;
}

/** @internal [batch, len, heads * headDim] rows (every srcStride) -> [batch, heads, len, headDim]; parse_split_heads. */
export interface SplitHeadsStep {
  op: 'splitHeads';
  src: Float32Array;
  srcStride?: number;
  batch: number;
  len: number;
  heads: number;
  headDim: number;
  dst: Float32Array;
}

/** @internal [batch, heads, len, headDim] -> [batch, len, heads * headDim] rows (every dstStride); parse_merge_heads. */
export interface MergeHeadsStep {
  op: 'mergeHeads';
  src: Float32Array;
  batch: number;
  len: number;
  heads: number;
  headDim: number;
  dst: Float32Array;
  dstStride?: number;
}

/** @internal RangeError naming the first NaN / infinity of x (and its index in shape); parse_check_finite. */
export interface CheckFiniteStep {
  op: 'checkFinite';
  x: Float32Array;
  name?: string | null;
  why?: string | null;
  shape?: readonly number[];
  /** Not read by the addon: marks the pass's own output, which PlanBuilder.run does not pin. */
  output?: boolean;
}

/** @internal The arrays of an attention step: q [B, H, Lq, d], k and v [B, H, Lk, ·], out. */
export interface AttentionArrays {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  out: Float32Array;
  dims: NativeDims;
  label?: string | null;
}

/** @internal The arrays of an attention backward step: the forward's inputs, gradOut, and dq, dk, dv written. */
export interface AttentionGradientArrays {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  gradOut: Float32Array;
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
  dims: NativeDims;
  label?: string | null;
}

/**
 * @internal FAVOR+ attention, as favorAttention (keys only with options.absorbInto, queries only
 * with options.keysState: the unused arrays may then be absent); parse_attention_job.
 */
export interface FavorStep {
  op: 'favor';
  q?: Float32Array | null;
  k?: Float32Array | null;
  v?: Float32Array | null;
  out?: Float32Array | null;
  dims: NativeDims;
  options: NativeFavorOptions;
  label?: string | null;
}

/** @internal Exact softmax attention, as softmaxAttention; parse_attention_job. */
export interface SoftmaxStep extends AttentionArrays {
  op: 'softmax';
  options: NativeSoftmaxOptions;
}

// ---- backward_bindings.cc

/** @internal dq, dk, dv (and dprojection) of a favor step for the output gradient gradOut; parse_backward_step. */
export interface FavorBackwardStep extends AttentionGradientArrays {
  op: 'favorBackward';
  dprojection?: Float32Array | null;
  options: NativeFavorOptions;
}

/** @internal dq, dk, dv of a softmax step for the output gradient gradOut; parse_backward_step. */
export interface SoftmaxBackwardStep extends AttentionGradientArrays {
  op: 'softmaxBackward';
  options: NativeSoftmaxOptions;
}

// ---- grad_plan_ops.cc (accumulate: dx-like outputs are added to; parameter gradients always are)

/** @internal loss += (sum, count) of the cross-entropy, dlogits = gradScale * its gradient; parse_cross_entropy. */
export interface CrossEntropyStep {
  op: 'crossEntropy';
  logits: Float32Array;
  /** < 0: ignored. */
  targets: Int32Array;
  rows: number;
  classes: number;
  gradScale?: number | null;
  loss: Float64Array;
  dlogits: Float32Array;
}

/** @internal dx, dweight, dbias of a linear step (weight [out, in], not packed); parse_linear_backward. */
export interface LinearBackwardStep {
  op: 'linearBackward';
  rows: number;
  in: number;
  out: number;
  dy: Float32Array;
  x: Float32Array;
  xStride?: number | null;
  weight: Float32Array;
  dx?: Float32Array | null;
  accumulate?: boolean | null;
  dweight?: Float32Array | null;
  dbias?: Float32Array | null;
}

/** @internal dx, dgamma, dbeta of a layerNorm step; parse_layer_norm_backward. */
export interface LayerNormBackwardStep {
  op: 'layerNormBackward';
  rows: number;
  dim: number;
  x: Float32Array;
  gamma?: Float32Array | null;
  eps: number;
  dy: Float32Array;
  dx: Float32Array;
  accumulate?: boolean | null;
  dgamma?: Float32Array | null;
  dbeta?: Float32Array | null;
}

/** @internal y = GELU(x) (y may be x); parse_gelu. */
export interface GeluStep {
  op: 'gelu';
  n: number;
  x: Float32Array;
  y: Float32Array;
}

/** @internal dx = dy * GELU'(pre) (dx may be dy); parse_gelu_backward. */
export interface GeluBackwardStep {
  op: 'geluBackward';
  n: number;
  pre: Float32Array;
  dy: Float32Array;
  dx: Float32Array;
}

/** @internal dx = dy * (pre > 0) (dx may be dy); parse_relu_backward. */
export interface ReluBackwardStep {
  op: 'reluBackward';
  n: number;
  pre: Float32Array;
  dy: Float32Array;
  dx: Float32Array;
}

/** @internal dtable (and dpositions, posRows rows) += the embed step's gradients for dx; parse_embed_backward. */
export interface EmbedBackwardStep {
  op: 'embedBackward';
  tokens: Int32Array;
  rows: number;
  len: number;
  dim: number;
  numTokens: number;
  dx: Float32Array;
  dtable: Float32Array;
  start?: number | null;
  dpositions?: Float32Array | null;
  posRows?: number;
}

/** @internal dh of a gluGelu step for dy; parse_glu_gelu_backward. */
export interface GluGeluBackwardStep {
  op: 'gluGeluBackward';
  rows: number;
  hidden: number;
  h: Float32Array;
  dy: Float32Array;
  dh: Float32Array;
}

/** @internal dx and dg ([1]) of a scaleNorm step; parse_scale_norm_backward. */
export interface ScaleNormBackwardStep {
  op: 'scaleNormBackward';
  rows: number;
  dim: number;
  x: Float32Array;
  g: number;
  eps: number;
  dy: Float32Array;
  dx: Float32Array;
  accumulate?: boolean | null;
  dg: Float32Array;
}

/** @internal dg ([1]) and dx of a scaledAdd step (dx = g dy); parse_scaled_add_backward. */
export interface ScaledAddBackwardStep {
  op: 'scaledAddBackward';
  n: number;
  x: Float32Array;
  dy: Float32Array;
  g: number;
  dg: Float32Array;
  dx?: Float32Array | null;
  accumulate?: boolean | null;
}

/** @internal dx of a tokenShift step (no history); parse_token_shift_backward. */
export interface TokenShiftBackwardStep {
  op: 'tokenShiftBackward';
  batch: number;
  len: number;
  dim: number;
  shifts: readonly TokenShiftOffset[];
  keep?: Uint8Array | null;
  dy: Float32Array;
  dx: Float32Array;
  accumulate?: boolean | null;
}

/** @internal x[0, n) = value (zeroes a reused temporary at run time); parse_fill. */
export interface FillStep {
  op: 'fill';
  x: Float32Array;
  n: number;
  value?: number | null;
}

/** @internal y = (residual +) dropout(x, p), the mask drawn from (seed, stream, index); parse_dropout. */
export interface DropoutStep {
  op: 'dropout';
  n: number;
  x: Float32Array;
  p: number;
  seed: number;
  stream: number;
  residual?: Float32Array | null;
  y: Float32Array;
}

// ---- model_plan_ops.cc (performer-pytorch models)

/** @internal out = token embeddings (+ position embeddings from start); parse_embed. */
export interface EmbedStep {
  op: 'embed';
  tokens: Int32Array;
  rows: number;
  len: number;
  dim: number;
  table: Float32Array;
  numTokens: number;
  start: number;
  out: Float32Array;
  positions?: 'none' | 'sinusoid' | 'learned' | null;
  /** Read unless positions is 'none'. */
  posRows?: number;
  posTable?: Float32Array | null;
  /** Sinusoid positions past the table. */
  invFreq?: Float32Array | null;
}

/** @internal y = g x / max(||x||, eps) per row; parse_scale_norm. */
export interface ScaleNormStep {
  op: 'scaleNorm';
  x: Float32Array;
  rows: number;
  dim: number;
  g: number;
  eps: number;
  y: Float32Array;
}

/** @internal y = residual + g x; parse_scaled_add. */
export interface ScaledAddStep {
  op: 'scaledAdd';
  x: Float32Array;
  n: number;
  g: number;
  residual: Float32Array;
  y: Float32Array;
}

/** @internal y = x with feature segments shifted along the sequence (history: decoding); parse_token_shift. */
export interface TokenShiftStep {
  op: 'tokenShift';
  x: Float32Array;
  batch: number;
  len: number;
  dim: number;
  shifts: readonly TokenShiftOffset[];
  keep?: Uint8Array | null;
  history?: Float32Array | null;
  y: Float32Array;
}

/** @internal y = a * GELU(gate) of the halves of each row of h; parse_glu_gelu. */
export interface GluGeluStep {
  op: 'gluGelu';
  h: Float32Array;
  rows: number;
  hidden: number;
  y: Float32Array;
}

/** @internal Rotary positions applied to x in place (inverse: rotated back); parse_rotary. */
export interface RotaryStep {
  op: 'rotary';
  x: Float32Array;
  heads: number;
  len: number;
  headDim: number;
  start: number;
  layout: 'interleaved' | 'halves';
  table?: Float32Array | null;
  /** Read with table. */
  tableRows?: number;
  invFreq?: Float32Array | null;
  inverse?: boolean | null;
}

/** @internal Options of pytorchFavor / pytorchFavorBackward steps (parse_pytorch_favor_options). */
export interface PytorchFavorStepOptions {
  features?: 'softmax' | 'relu' | 'noProjection' | null;
  /** Read unless features is 'noProjection' (then headDim). */
  numFeatures?: number;
  /** Read unless features is 'noProjection', and must then be a Float32Array (null: TypeError). */
  packedProjection?: Float32Array | null;
  causal?: boolean | null;
  keep?: Uint8Array | null;
  dropMaskedKeys?: boolean | null;
  state?: Float32Array | null;
  maxRose?: Uint8Array | null;
  /** The unpacked projection (used by the backward pass). */
  projection?: Float32Array | null;
}

/** @internal FAVOR attention with performer-pytorch's numerics; parse_pytorch_favor. */
export interface PytorchFavorStep extends AttentionArrays {
  op: 'pytorchFavor';
  options: PytorchFavorStepOptions;
}

/** @internal dq, dk, dv of a pytorchFavor step for gradOut; parse_pytorch_favor_backward. */
export interface PytorchFavorBackwardStep extends AttentionGradientArrays {
  op: 'pytorchFavorBackward';
  options: PytorchFavorStepOptions;
}

/** @internal Options of localAttention / localAttentionBackward steps (parse_local_options). */
export interface LocalAttentionStepOptions {
  window: number;
  causal?: boolean | null;
  keep?: Uint8Array | null;
  pytorchNumerics?: boolean | null;
  /** Decoding: the (batch, head) rings of past keys and values. */
  ring?: Float32Array | null;
  /** Read with ring. */
  start?: number;
}

/** @internal Windowed softmax attention (local heads); parse_local_attention. */
export interface LocalAttentionStep extends AttentionArrays {
  op: 'localAttention';
  options: LocalAttentionStepOptions;
}

/** @internal dq, dk, dv of a localAttention step (no ring) for gradOut; parse_local_attention_backward. */
export interface LocalAttentionBackwardStep extends AttentionGradientArrays {
  op: 'localAttentionBackward';
  /** As the forward step's; ring must be unset (RangeError otherwise). */
  options: LocalAttentionStepOptions;
}

/** @internal One native step of a plan. */
export type PlanStep =
  | LinearStep
  | LayerNormStep
  | SplitHeadsStep
  | MergeHeadsStep
  | CheckFiniteStep
  | FavorStep
  | SoftmaxStep
  | FavorBackwardStep
  | SoftmaxBackwardStep
  | CrossEntropyStep
  | LinearBackwardStep
  | LayerNormBackwardStep
  | GeluStep
  | GeluBackwardStep
  | ReluBackwardStep
  | EmbedBackwardStep
  | GluGeluBackwardStep
  | ScaleNormBackwardStep
  | ScaledAddBackwardStep
  | TokenShiftBackwardStep
  | FillStep
  | DropoutStep
  | EmbedStep
  | ScaleNormStep
  | ScaledAddStep
  | TokenShiftStep
  | GluGeluStep
  | RotaryStep
  | PytorchFavorStep
  | PytorchFavorBackwardStep
  | LocalAttentionStep
  | LocalAttentionBackwardStep;

/** @internal The steps of attention forward passes, as the stack builds them. */
export type AttentionStep = FavorStep | SoftmaxStep | PytorchFavorStep | LocalAttentionStep;
