/**
 * One training pass of a PerformerLM as one native plan: the forward pass keeping the
 * activations each backward step needs, the mean next-token cross-entropy, then the
 * backward pass in reverse, accumulating into gradient buffers keyed like the
 * parameters. Shape legend: B batch, L tokens, N = B L rows, D = dim, H heads of d,
 * inner = H d, F = ff width, V = num_tokens.
 *
 * Covered (checked by checkTrainable): pre-LayerNorm, ScaleNorm or ReZero layers, token
 * shift, GELU or GLU feed-forward, global heads only, rotary or learned absolute
 * positions, tied or separate output embeddings; FAVOR+ with softmax or ReLU features in
 * either numerics, or exact softmax attention over the same weights.
 */
import { rangeError } from '../errors';
import type { Linear } from '../layers/parameters';
import type { PlanBuilder, PlanStep } from '../layers/plan';
import type { AttentionStep, TokenShiftOffset } from '../layers/plan-steps';
import type { NativeDims } from '../native';
import type { TensorSource } from './checkpoint';
import type { LMConfig } from './config';
import { forAxialRows, type AxialWeights } from './checkpoint';
import type { Positions } from './performer-lm';
import { LAYER_NORM_EPS, SCALE_NORM_EPS, type Numerics, type PerformerStack, type RotaryTable, type StackLayer } from './stack';

/** @internal What a training pass reads of a PerformerLM. */
export interface LMParts {
  config: LMConfig;
  numerics: Numerics;
  stack: PerformerStack;
  tokenEmb: Float32Array;
  positions: Positions;
  layerRotary: RotaryTable | null;
  norm: { gamma: Float32Array; beta: Float32Array };
  head: Linear;
}

/** The attention a training pass (or forward) uses for the global heads. */
export type TrainingAttention = 'favor' | 'softmax';

/** @internal Throws a RangeError naming what this model uses that training does not cover yet. */
export function checkTrainable(parts: LMParts, attention: TrainingAttention, fn: string): void {
  const c = parts.config;
  const problems: string[] = [];
  if (attention === 'favor' && c.features === 'noProjection') problems.push('no_projection');
  if (problems.length > 0) {
    throw rangeError(`${fn}: training does not cover ${problems.join(', ')} yet`, 'ERR_INVALID_ARG_VALUE');
  }
}

/** @internal Whether a state_dict tensor is trained (fixed buffers are not). */
export function isTrainable(name: string): boolean {
  return !/(projection_matrix|inv_freq|(^|\.)pos_emb\.emb|layer_pos_emb\.emb)$/.test(name);
}

/**
 * @internal Gradient buffers, one per trainable parameter, keyed by its state_dict name;
 * q, k and v of a layer share one stacked buffer (the pass computes them together).
 */
export class GradientStore {
  readonly byName = new Map<string, Float32Array>();
  private readonly byParam = new Map<Float32Array, Float32Array>();
  private readonly stacked = new Map<StackLayer, { weight: Float32Array; bias: Float32Array | null }>();

  constructor(parts: LMParts, source: TensorSource) {
    const nameOf = new Map<Float32Array, string>();
    for (const [name, t] of source.taken) nameOf.set(t.data, name);
    for (const layer of parts.stack.layers) {
      const rows = layer.q.outFeatures;
      const weight = new Float32Array(3 * layer.q.weight.length);
      const bias = layer.q.bias !== null ? new Float32Array(3 * rows) : null;
      [layer.q, layer.k, layer.v].forEach((linear, i) => {
        this.register(nameOf, linear.weight, weight.subarray(i * linear.weight.length, (i + 1) * linear.weight.length));
        if (bias !== null) this.register(nameOf, linear.bias!, bias.subarray(i * rows, (i + 1) * rows));
      });
      this.stacked.set(layer, { weight, bias });
    }
    for (const [name, t] of source.taken) {
      if (isTrainable(name) && !this.byParam.has(t.data)) this.register(nameOf, t.data, new Float32Array(t.data.length));
    }
    // Axial positions: the pass writes the gradient of the summed table, folded into each
    // axis's weights by finishPass.
    const p = parts.positions;
    if (p.kind === 'learned' && p.axial !== undefined) {
      this.axial = { weights: p.axial, table: new Float32Array(p.table.length) };
      this.byParam.set(p.table, this.axial.table);
    }
  }

  private readonly axial: { weights: AxialWeights; table: Float32Array } | null = null;

  /** After a pass ran: gradients of derived tensors go to the parameters they come from. */
  finishPass(): void {
    if (this.axial === null) return;
    const { weights, table } = this.axial;
    const grads = weights.weights.map((w) => this.of(w));
    forAxialRows(weights, table.length, (t, axis, row, D) => {
      const g = grads[axis];
      for (let j = 0; j < D; j++) g[row * D + j] += table[t * D + j];
    });
  }

  /** The gradient buffer of a parameter array. */
  of(param: Float32Array): Float32Array {
    const g = this.byParam.get(param);
    if (g === undefined) throw new Error('internal: no gradient buffer for this parameter');
    return g;
  }

  /** The stacked q/k/v gradient of a layer (weight [3 inner, D], bias [3 inner]). */
  qkv(layer: StackLayer): { weight: Float32Array; bias: Float32Array | null } {
    return this.stacked.get(layer)!;
  }

  zero(): void {
    for (const g of this.byParam.values()) g.fill(0);
  }

  private register(nameOf: Map<Float32Array, string>, param: Float32Array, grad: Float32Array): void {
    const name = nameOf.get(param);
    if (name === undefined) throw new Error('internal: a parameter without a state_dict name');
    this.byParam.set(param, grad);
    this.byName.set(name, grad);
  }
}

/** @internal The inputs of one training pass. */
export interface TrainingCall {
  tokens: Int32Array; // [B, L]
  targets: Int32Array; // [B, L], < 0 ignored
  batch: number;
  len: number;
  attention: TrainingAttention;
  /** 1 / (number of counted targets): the loss is their mean. */
  gradScale: number;
  /** [sum of -log p, count] (float64, accumulated). */
  loss: Float64Array;
  /** Dropout probabilities and the masks' seed, or null for none. */
  dropout: { emb: number; attn: number; ff: number; seed: number } | null;
}

/** @internal Appends the forward pass, the loss and the backward pass of one batch to `b`. */
export function planTrainingPass(b: PlanBuilder, parts: LMParts, grads: GradientStore, call: TrainingCall): void {
  const c = parts.config;
  const D = c.dim;
  const d = c.dimHead;
  const H = c.heads;
  const inner = H * d;
  const hidden = D * c.ffMult;
  const B = call.batch;
  const L = call.len;
  const N = B * L;
  const V = c.numTokens;
  const owned: Float32Array[] = [];
  const buffer = (n: number) => {
    const a = b.acquire(n);
    owned.push(a);
    return a;
  };
  const linear = (x: Float32Array, rows: number, l: Linear, y: Float32Array, residual: Float32Array | null = null) =>
    b.add({ op: 'linear', x, rows, ...l.stepFields, residual, activation: 'none', y });
  const linearBack = (dy: Float32Array, x: Float32Array, rows: number, l: Linear, dx: Float32Array | null, accumulate: boolean, dweight: Float32Array, dbias: Float32Array | null) =>
    b.add({ op: 'linearBackward', rows, in: l.inFeatures, out: l.outFeatures, dy, x, weight: l.weight, dx, accumulate, dweight, dbias });
  const heads = { batch: B, len: L, heads: H, headDim: d };
  const dimsOf = (count: number) => ({ batch: B, heads: count, queryLength: L, keyLength: L, headDim: d, valueDim: d });
  const shifts: TokenShiftOffset[] = c.causal ? [0, 1] : [-1, 0, 1];
  const p = parts.positions;
  // Dropout masks come from (seed, stream, index): the backward pass redraws the forward
  // pass's. Streams: 0 the embeddings, 1 + 2l layer l's attention, 2 + 2l its feed-forward.
  const drop = call.dropout;
  const dropout = (rate: number, stream: number, x: Float32Array, y: Float32Array, residual: Float32Array | null = null) =>
    b.add({ op: 'dropout', n: x.length, x, p: rate, seed: drop!.seed, stream, residual, y });

  // ---- forward, keeping what the backward pass reads
  const x0 = buffer(N * D);
  b.add({
    op: 'embed',
    tokens: call.tokens,
    rows: N,
    len: L,
    dim: D,
    table: parts.tokenEmb,
    numTokens: V,
    start: 0,
    out: x0,
    positions: p.kind,
    posTable: p.table,
    posRows: p.rows,
    invFreq: p.kind === 'sinusoid' ? p.invFreq : null,
  });
  if (drop !== null && drop.emb > 0) dropout(drop.emb, 0, x0, x0);
  // One sub-layer: dst = residual + wrap(part(shift(norm(x)))) (residual = x unless reversible).
  // `saved.input` is what the part read.
  interface Sub {
    wrap: StackLayer['attnWrap'];
    x: Float32Array;
    input: Float32Array;
    out: Float32Array | null; // ReZero: the part's output before the gain
  }
  // Heads [first, first + count) of a layer: the global ones (FAVOR+ or softmax), then the
  // local ones (windowed softmax with local-attention's own rotary positions).
  interface HeadGroup {
    local: boolean;
    first: number;
    count: number;
    q: Float32Array; // [B, count, L, d], rotated
    k: Float32Array;
    v: Float32Array;
  }
  interface Saved {
    attn: Sub;
    ff: Sub;
    groups: HeadGroup[];
    merged: Float32Array;
    pre: Float32Array;
    h: Float32Array;
  }
  const subForward = (
    wrap: StackLayer['attnWrap'],
    x: Float32Array,
    residual: Float32Array,
    part: (input: Float32Array, y: Float32Array, residual: Float32Array | null) => void,
  ): { sub: Sub; y: Float32Array } => {
    let n = x;
    if (c.norm === 'layernorm') {
      n = buffer(N * D);
      b.add({ op: 'layerNorm', x, rows: N, dim: D, gamma: wrap.gamma, beta: wrap.beta, eps: LAYER_NORM_EPS, y: n });
    } else if (c.norm === 'scalenorm') {
      n = buffer(N * D);
      b.add({ op: 'scaleNorm', x, rows: N, dim: D, g: wrap.gain![0], eps: SCALE_NORM_EPS, y: n });
    }
    let input = n;
    if (c.shiftTokens) {
      input = buffer(N * D);
      b.add({ op: 'tokenShift', x: n, batch: B, len: L, dim: D, shifts, keep: null, history: null, y: input });
    }
    const y = buffer(N * D);
    let out: Float32Array | null = null;
    if (c.norm === 'rezero') {
      out = buffer(N * D);
      part(input, out, null);
      b.add({ op: 'scaledAdd', x: out, n: N * D, g: wrap.gain![0], residual, y });
    } else {
      part(input, y, residual);
    }
    return { sub: { wrap, x, input, out }, y };
  };
  const saved: Saved[] = [];
  // Reversible layers keep two streams, both the embeddings at first: x1 += A(x2), then
  // x2 += F(x1); the output is x1 + x2. Otherwise x += A(x), then x += F(x).
  let x = x0;
  let x2 = x0;
  parts.stack.layers.forEach((layer, l) => {
    const s = {} as Saved;
    const attn = subForward(layer.attnWrap, c.reversible ? x2 : x, x, (input, y, residual) => {
      const qkv = b.acquire(N * 3 * inner);
      linear(input, N, layer.qkv, qkv);
      s.merged = buffer(N * inner);
      s.groups = headGroups(H, layer.localHeads).map(({ local, first, count }) => {
        const [q, k, v] = [0, 1, 2].map((which) => {
          const dst = buffer(N * count * d);
          b.add({ op: 'splitHeads', src: qkv.subarray(which * inner + first * d), srcStride: 3 * inner, dst, ...heads, heads: count });
          return dst;
        });
        const group = { local, first, count, q, k, v };
        for (const t of [q, k]) groupRotary(b, parts, layer, group, t, B, L, false);
        const o = b.acquire(N * count * d);
        b.add(groupAttentionStep(parts, l, call.attention, group, o, dimsOf(count)));
        b.add({ op: 'mergeHeads', src: o, dst: s.merged.subarray(first * d), dstStride: inner, ...heads, heads: count });
        b.release(o);
        return group;
      });
      b.release(qkv);
      if (drop !== null && drop.attn > 0) {
        const t = b.acquire(N * D);
        linear(s.merged, N, layer.out, t);
        dropout(drop.attn, 1 + 2 * l, t, y, residual);
        b.release(t);
      } else {
        linear(s.merged, N, layer.out, y, residual);
      }
    });
    s.attn = attn.sub;
    const ff = subForward(layer.ffWrap, attn.y, c.reversible ? x2 : attn.y, (input, y, residual) => {
      s.pre = buffer(N * (c.ffGlu ? 2 * hidden : hidden));
      linear(input, N, layer.w1, s.pre);
      s.h = buffer(N * hidden);
      if (c.ffGlu) b.add({ op: 'gluGelu', h: s.pre, rows: N, hidden, y: s.h });
      else b.add({ op: 'gelu', x: s.pre, n: N * hidden, y: s.h });
      if (drop !== null && drop.ff > 0) dropout(drop.ff, 2 + 2 * l, s.h, s.h);
      linear(s.h, N, layer.w2, y, residual);
    });
    s.ff = ff.sub;
    if (c.reversible) {
      x = attn.y;
      x2 = ff.y;
    } else {
      x = ff.y;
    }
    saved.push(s);
  });
  let top = x;
  if (c.reversible) {
    top = buffer(N * D);
    b.add({ op: 'scaledAdd', x: x2, n: N * D, g: 1, residual: x, y: top });
  }
  const nf = buffer(N * D);
  b.add({ op: 'layerNorm', x: top, rows: N, dim: D, gamma: parts.norm.gamma, beta: parts.norm.beta, eps: LAYER_NORM_EPS, y: nf });
  const logits = buffer(N * V);
  linear(nf, N, parts.head, logits);
  // The loss; the logits become their gradient in place.
  b.add({ op: 'crossEntropy', logits, targets: call.targets, rows: N, classes: V, gradScale: call.gradScale, loss: call.loss, dlogits: logits });

  // ---- backward
  const dx = buffer(N * D); // dL/d (the current sub-layer's output), accumulated in place
  const dn = buffer(N * D);
  linearBack(logits, nf, N, parts.head, dn, false, grads.of(parts.head.weight), parts.head.bias ? grads.of(parts.head.bias) : null);
  b.add({ op: 'layerNormBackward', rows: N, dim: D, x: top, gamma: parts.norm.gamma, eps: LAYER_NORM_EPS, dy: dn, dx, accumulate: false, dgamma: grads.of(parts.norm.gamma), dbeta: grads.of(parts.norm.beta) });
  // dout holds dL/d(sub-layer output), which is also dL/d(residual); adds dL/d(sub-layer
  // input) through the wrapper and part to din (the same array unless reversible).
  const subBackward = (sub: Sub, dout: Float32Array, din: Float32Array, part: (dy: Float32Array, dinput: Float32Array) => void) => {
    let dy = dout;
    if (c.norm === 'rezero') {
      dy = b.acquire(N * D);
      b.add({ op: 'scaledAddBackward', n: N * D, x: sub.out!, dy: dout, g: sub.wrap.gain![0], dg: grads.of(sub.wrap.gain!), dx: dy, accumulate: false });
    }
    const dinput = b.acquire(N * D);
    part(dy, dinput);
    if (dy !== dout) b.release(dy);
    let dnorm = dinput;
    if (c.shiftTokens) {
      dnorm = b.acquire(N * D);
      b.add({ op: 'tokenShiftBackward', batch: B, len: L, dim: D, shifts, keep: null, dy: dinput, dx: dnorm, accumulate: false });
      b.release(dinput);
    }
    if (c.norm === 'layernorm') {
      b.add({ op: 'layerNormBackward', rows: N, dim: D, x: sub.x, gamma: sub.wrap.gamma, eps: LAYER_NORM_EPS, dy: dnorm, dx: din, accumulate: true, dgamma: grads.of(sub.wrap.gamma!), dbeta: grads.of(sub.wrap.beta!) });
    } else if (c.norm === 'scalenorm') {
      b.add({ op: 'scaleNormBackward', rows: N, dim: D, x: sub.x, g: sub.wrap.gain![0], eps: SCALE_NORM_EPS, dy: dnorm, dx: din, accumulate: true, dg: grads.of(sub.wrap.gain!) });
    } else {
      b.add({ op: 'scaledAdd', x: dnorm, n: N * D, g: 1, residual: din, y: din });
    }
    b.release(dnorm);
  };
  // Reversible: dx is dL/d x1 and dx2 dL/d x2 (both dL/d output at the top); the streams
  // meet again at the embeddings.
  let dx2 = dx;
  if (c.reversible) {
    dx2 = buffer(N * D);
    b.add({ op: 'fill', x: dx2, n: N * D, value: 0 });
    b.add({ op: 'scaledAdd', x: dx, n: N * D, g: 1, residual: dx2, y: dx2 });
  }
  for (let l = parts.stack.layers.length - 1; l >= 0; l--) {
    const layer = parts.stack.layers[l];
    const s = saved[l];
    subBackward(s.ff, dx2, dx, (dy, dinput) => {
      const dh = b.acquire(N * hidden);
      linearBack(dy, s.h, N, layer.w2, dh, false, grads.of(layer.w2.weight), grads.of(layer.w2.bias!));
      if (drop !== null && drop.ff > 0) dropout(drop.ff, 2 + 2 * l, dh, dh);
      const dpre = b.acquire(N * (c.ffGlu ? 2 * hidden : hidden));
      if (c.ffGlu) b.add({ op: 'gluGeluBackward', rows: N, hidden, h: s.pre, dy: dh, dh: dpre });
      else b.add({ op: 'geluBackward', pre: s.pre, dy: dh, dx: dpre, n: N * hidden });
      b.release(dh);
      linearBack(dpre, s.ff.input, N, layer.w1, dinput, false, grads.of(layer.w1.weight), grads.of(layer.w1.bias!));
      b.release(dpre);
    });
    subBackward(s.attn, dx, dx2, (dy, dinput) => {
      const dmerged = b.acquire(N * inner);
      let dout0 = dy;
      if (drop !== null && drop.attn > 0) {
        dout0 = b.acquire(N * D);
        dropout(drop.attn, 1 + 2 * l, dy, dout0);
      }
      linearBack(dout0, s.merged, N, layer.out, dmerged, false, grads.of(layer.out.weight), layer.out.bias ? grads.of(layer.out.bias) : null);
      if (dout0 !== dy) b.release(dout0);
      const dqkv = b.acquire(N * 3 * inner);
      for (const group of s.groups) {
        const { first, count } = group;
        const dout = b.acquire(N * count * d);
        b.add({ op: 'splitHeads', src: dmerged.subarray(first * d), srcStride: inner, dst: dout, ...heads, heads: count });
        const [dq, dk, dv] = [0, 1, 2].map(() => b.acquire(N * count * d));
        b.add(groupBackwardStep(parts, l, call.attention, group, dout, dq, dk, dv, dimsOf(count)));
        b.release(dout);
        for (const t of [dq, dk]) groupRotary(b, parts, layer, group, t, B, L, true);
        [dq, dk, dv].forEach((t, which) =>
          b.add({ op: 'mergeHeads', src: t, dst: dqkv.subarray(which * inner + first * d), dstStride: 3 * inner, ...heads, heads: count }),
        );
        for (const t of [dq, dk, dv]) b.release(t);
      }
      b.release(dmerged);
      const stacked = grads.qkv(layer);
      linearBack(dqkv, s.attn.input, N, layer.qkv, dinput, false, stacked.weight, stacked.bias);
      b.release(dqkv);
    });
  }
  if (dx2 !== dx) b.add({ op: 'scaledAdd', x: dx2, n: N * D, g: 1, residual: dx, y: dx });
  if (drop !== null && drop.emb > 0) dropout(drop.emb, 0, dx, dx);
  b.add({
    op: 'embedBackward',
    tokens: call.tokens,
    rows: N,
    len: L,
    dim: D,
    numTokens: V,
    dx,
    dtable: grads.of(parts.tokenEmb),
    start: 0,
    dpositions: p.kind === 'learned' ? grads.of(p.table) : null,
    posRows: p.rows,
  });
  for (const a of owned) b.release(a);
}

function headGroups(heads: number, localHeads: number): { local: boolean; first: number; count: number }[] {
  const groups = [
    { local: false, first: 0, count: heads - localHeads },
    { local: true, first: heads - localHeads, count: localHeads },
  ];
  return groups.filter((g) => g.count > 0);
}

// The group's positions on its q or k (inverse: rotated back, for the gradients).
function groupRotary(b: PlanBuilder, parts: LMParts, layer: StackLayer, g: { local: boolean; count: number }, x: Float32Array, batch: number, len: number, inverse: boolean): void {
  const d = parts.config.dimHead;
  if (g.local) {
    b.add({ op: 'rotary', x, heads: batch * g.count, len, headDim: d, start: 0, layout: 'halves', invFreq: layer.localInvFreq, inverse });
  } else if (parts.layerRotary !== null) {
    const r = parts.layerRotary;
    b.add({ op: 'rotary', x, heads: batch * g.count, len, headDim: d, start: 0, layout: 'interleaved', table: r.table, tableRows: r.rows, invFreq: r.invFreq, inverse });
  }
}

function groupAttentionStep(parts: LMParts, l: number, attention: TrainingAttention, g: HeadGroupArrays, out: Float32Array, dims: NativeDims): AttentionStep {
  const c = parts.config;
  if (g.local) {
    const options = { window: c.localWindowSize, causal: c.causal, keep: null, pytorchNumerics: parts.numerics === 'performer-pytorch', ring: null, start: 0 };
    return { op: 'localAttention', q: g.q, k: g.k, v: g.v, out, dims, options, label: `layers.${l}.attention (local heads)` };
  }
  if (attention === 'softmax') {
    return { op: 'softmax', q: g.q, k: g.k, v: g.v, out, dims, options: { causal: c.causal, keyPadding: null, scale: 1 / Math.sqrt(c.dimHead) } };
  }
  return parts.stack.globalAttentionStep(l, g.q, g.k, g.v, out, dims, null, null, `layers.${l}.attention`);
}

function groupBackwardStep(
  parts: LMParts,
  l: number,
  attention: TrainingAttention,
  g: HeadGroupArrays,
  gradOut: Float32Array,
  dq: Float32Array,
  dk: Float32Array,
  dv: Float32Array,
  dims: NativeDims,
): PlanStep {
  const forward = groupAttentionStep(parts, l, attention, g, gradOut, dims);
  const common = { q: g.q, k: g.k, v: g.v, gradOut, dq, dk, dv, dims, label: forward.label ?? `layers.${l}.attention` };
  switch (forward.op) {
    case 'softmax':
      return { op: 'softmaxBackward', ...common, options: forward.options };
    case 'favor':
      return { op: 'favorBackward', ...common, options: forward.options };
    case 'pytorchFavor':
      return { op: 'pytorchFavorBackward', ...common, options: forward.options };
    case 'localAttention':
      return { op: 'localAttentionBackward', ...common, options: forward.options };
  }
}

/** The arrays and kind of a group of heads. */
interface HeadGroupArrays {
  local: boolean;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
}
