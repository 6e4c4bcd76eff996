/**
 * Gradients of the layers in module form: `backward(x, gradOut, options)` on
 * MultiHeadAttention, EncoderLayer, DecoderLayer, TransformerEncoder and
 * TransformerDecoder. One native plan recomputes the forward pass keeping the
 * activations the backward pass reads (like activation checkpointing: the caller's
 * earlier forward pass is not needed), then runs the backward pass from gradOut:
 * the gradients of the inputs are returned, those of the parameters accumulate into
 * `gradients()` (keyed like `parameters()`) until `zeroGrad()` or an optimizer step.
 * Shape legend: B batch, L rows, Lm memory rows, D modelDim, Dk keyDim, Dv valueDim, H heads of dh.
 */
import { readSignal } from '../async-call';
import type { NativeDims, NativeFavorOptions, NativeSoftmaxOptions } from '../native';
import { defaultSoftmaxScale } from '../defaults';
import { rangeError, typeError } from '../errors';
import type { Tensor } from '../tensor';
import { readOptions } from '../validate';
import type { Block } from './blocks';
import type { LayerBase, LayerGradients } from './layer';
import { readKeyInputs, readKind, readPadding, readSequence } from './layer-inputs';
import type { KeySource, MultiHeadAttention } from './multi-head-attention';
import type { LayerNorm, Linear } from './parameters';
import { PlanBuilder } from './plan';

/** @internal What one training pass of a module reads. */
export interface ModulePass {
  x: Float32Array; // [B, L, D]
  batch: number;
  len: number;
  keyPadding: Uint8Array | null;
  memory: Float32Array | null; // [B, Lm, Dk]: the keys' input (and the values' unless value)
  value: Float32Array | null; // [B, Lm, Dv]: a separate value input (MultiHeadAttention only)
  memoryLength: number;
  memoryPadding: Uint8Array | null;
  attention: 'favor' | 'softmax';
  gradOut: Float32Array; // [B, L, D]
  dx: Float32Array; // [B, L, D], written
  dmemory: Float32Array | null; // [B, Lm, Dk], written when there is a memory
  dvalue: Float32Array | null; // [B, Lm, Dv], written when there is a separate value input
}

type Owned = { buffer(n: number): Float32Array };

interface MhaSaved {
  m: MultiHeadAttention;
  x: Float32Array;
  src: Float32Array; // the keys' input
  valueSrc: Float32Array; // the values' input
  lq: number;
  lk: number;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  merged: Float32Array;
  attention: SavedAttention;
}

/** The attention call of a MultiHeadAttention pass, as its backward step takes it. */
type SavedAttention =
  | { kind: 'favor'; dims: NativeDims; options: NativeFavorOptions }
  | { kind: 'softmax'; dims: NativeDims; options: NativeSoftmaxOptions };

/** What `backward` returns: dL/d x, and dL/d of the memory or of the key and value inputs when given. */
export interface InputGradients {
  /** dL/d x, `[B, L, modelDim]`. */
  input: Tensor;
  /** dL/d memory, the memory's shape (cross-attention only). */
  memory?: Tensor;
  /** dL/d key, `[B, Lk, keyDim]` (MultiHeadAttention called with key and value). */
  key?: Tensor;
  /** dL/d value, `[B, Lk, valueDim]` (MultiHeadAttention called with key and value). */
  value?: Tensor;
}

/** @internal What a module trains through: an attention module, a block or a stack. */
export type TrainedModule = MultiHeadAttention | Block | { layers: readonly Block[]; norm: LayerNorm | null };

/** Feature kernels whose attention has a backward pass (fixed features, no per-call estimates). */
const DIFFERENTIABLE_KERNELS: readonly string[] = ['softmax', 'softmax-hyperbolic', 'relu', 'elu', 'exp', 'abs'];

/**
 * @internal Reads the arguments of `owner.backward`, plans the pass and returns how to
 * finish it: the pass writes its parameter gradients into a scratch set, added to the
 * owner's after it ran (an aborted or failed pass leaves them as they were).
 */
export function buildModuleBackward(owner: LayerBase, module: TrainedModule, x: unknown, gradOut: unknown, options: unknown, fn: string, async: boolean) {
  owner.checkTrainable(fn);
  const kind: 'attention' | 'encoder' | 'decoder' = 'q' in module ? 'attention' : isDecoder(module) ? 'decoder' : 'encoder';
  const keys = ['keyPaddingMask', 'attention', ...(kind !== 'encoder' ? ['memory'] : []), ...(kind === 'attention' ? ['key', 'value'] : []), ...(kind === 'decoder' ? ['memoryKeyPaddingMask'] : []), ...(async ? ['signal'] : [])];
  const o = readOptions<{ memory?: unknown; key?: unknown; value?: unknown; keyPaddingMask?: unknown; memoryKeyPaddingMask?: unknown; attention?: unknown; signal?: unknown }>(options, `${fn} options`, keys);
  const attn = 'q' in module ? module.config : firstBlock(module).config.attention;
  const D = attn.modelDim;
  const t = readSequence(x, `${fn} x`, D, 'modelDim');
  const [B, L] = t.shape;
  if (gradOut === undefined) throw typeError(`${fn} gradOut: required (dL/d output, the output's shape), received undefined`);
  const g = readSequence(gradOut, `${fn} gradOut`, D, 'modelDim', B);
  if (g.shape[1] !== L) throw rangeError(`${fn} gradOut: expected shape [${B}, ${L}, ${D}] (the output's), received [${g.shape.join(', ')}]`);
  const b = new PlanBuilder();
  b.add({ op: 'checkFinite', x: t.data, shape: t.shape, name: `${fn} x` });
  b.add({ op: 'checkFinite', x: g.data, shape: g.shape, name: `${fn} gradOut` });
  let memory: Float32Array | null = null;
  let value: Float32Array | null = null;
  let memoryLength = 0;
  const crossBlocks = kind === 'decoder' && firstBlock(module as Block).crossAttn !== null;
  const memoryDim = kind === 'attention' ? attn.keyDim : D;
  if (kind === 'attention') {
    const inputs = readKeyInputs(attn, o, B, fn, b);
    if (inputs.key !== null) {
      memory = inputs.key.data;
      memoryLength = inputs.key.shape[1];
      value = inputs.value?.data ?? null;
    }
  } else if (crossBlocks) {
    if (o.memory === undefined) throw typeError(`${fn} options.memory: required by the cross-attention, received undefined`);
    const m = readSequence(o.memory, `${fn} options.memory`, memoryDim, 'modelDim', B);
    memory = m.data;
    memoryLength = m.shape[1];
    b.add({ op: 'checkFinite', x: m.data, shape: m.shape, name: `${fn} options.memory` });
  } else if (kind === 'decoder' && (o.memory !== undefined || o.memoryKeyPaddingMask !== undefined)) {
    throw rangeError(`${fn} options.memory: this decoder has no cross-attention (crossAttention: false)`, 'ERR_INVALID_ARG_VALUE');
  }
  // MultiHeadAttention's keyPaddingMask covers its keys: the memory's when there is one.
  const attentionOverMemory = kind === 'attention' && memory !== null;
  const keyPadding = attentionOverMemory ? null : readPadding(o.keyPaddingMask, `${fn} options.keyPaddingMask`, B, L);
  const memoryPadding = attentionOverMemory
    ? readPadding(o.keyPaddingMask, `${fn} options.keyPaddingMask`, B, memoryLength)
    : memory !== null
      ? readPadding(o.memoryKeyPaddingMask, `${fn} options.memoryKeyPaddingMask`, B, memoryLength)
      : null;
  const attention = readKind(o.attention, `${fn} options.attention`, attn.attention);
  const signal = readSignal(o.signal, `${fn} options.signal`);
  const pass: ModulePass = {
    x: t.data,
    batch: B,
    len: L,
    keyPadding,
    memory,
    value,
    memoryLength,
    memoryPadding,
    attention,
    gradOut: g.data,
    dx: new Float32Array(B * L * D),
    dmemory: memory !== null ? new Float32Array(B * memoryLength * memoryDim) : null,
    dvalue: value !== null ? new Float32Array(B * memoryLength * attn.valueDim) : null,
  };
  const pending = owner.gradientSet();
  planModuleTraining(b, module, pass, pending, fn);
  b.checkOutput(pass.dx, `${fn} input gradient`);
  if (pass.dmemory !== null) b.checkOutput(pass.dmemory, `${fn} ${value !== null ? 'key' : 'memory'} gradient`);
  if (pass.dvalue !== null) b.checkOutput(pass.dvalue, `${fn} value gradient`);
  const finish = (): InputGradients => {
    owner.commitGradients(pending);
    const out: InputGradients = { input: { data: pass.dx, shape: Object.freeze([B, L, D]) } };
    if (pass.dvalue !== null) {
      out.key = { data: pass.dmemory!, shape: Object.freeze([B, memoryLength, memoryDim]) };
      out.value = { data: pass.dvalue, shape: Object.freeze([B, memoryLength, attn.valueDim]) };
    } else if (pass.dmemory !== null) {
      out.memory = { data: pass.dmemory, shape: Object.freeze([B, memoryLength, memoryDim]) };
    }
    return out;
  };
  return { b, signal, finish };
}

function firstBlock(module: Block | { layers: readonly Block[] }): Block {
  return 'layers' in module ? module.layers[0] : module;
}

function isDecoder(module: Block | { layers: readonly Block[] }): boolean {
  return firstBlock(module).config.crossAttention !== undefined;
}

// Plans the forward pass (kept), then the backward pass of a module.
function planModuleTraining(b: PlanBuilder, module: TrainedModule, p: ModulePass, grads: LayerGradients, fn: string): void {
  const owned: Float32Array[] = [];
  const o: Owned = {
    buffer: (n) => {
      const a = b.acquire(n);
      owned.push(a);
      return a;
    },
  };
  const rows = p.batch * p.len;
  // p.dx and p.dmemory are fresh zero arrays: the gradients are added into them.
  if ('q' in module) {
    const y = o.buffer(rows * module.config.modelDim);
    const s = mhaForward(b, o, module, p, p.x, y, null, fn);
    mhaBackward(b, s, p.gradOut, p.dx, p.memory !== null ? p.dmemory! : p.dx, grads, p, p.dvalue);
  } else {
    const blocks = 'layers' in module ? [...module.layers] : [module];
    const norm = 'layers' in module ? module.norm : null;
    const D = blocks[0].config.attention.modelDim;
    const saved: BlockSaved[] = [];
    let x = p.x;
    for (const block of blocks) {
      const fwd = blockForward(b, o, block, p, x, fn);
      saved.push(fwd);
      x = fwd.y;
    }
    // The final norm's output itself is not needed, only its gradient.
    if (norm !== null) {
      b.add({ op: 'layerNormBackward', rows, dim: D, x, gamma: norm.weight, eps: norm.eps, dy: p.gradOut, dx: p.dx, accumulate: false, dgamma: grads.of(norm.weight), dbeta: grads.of(norm.bias) });
    } else {
      b.add({ op: 'scaledAdd', x: p.gradOut, n: rows * D, g: 1, residual: p.dx, y: p.dx });
    }
    for (let i = blocks.length - 1; i >= 0; i--) blockBackward(b, saved[i], p.dx, grads, p);
  }
  for (const a of owned) b.release(a);
}

// A temporary set to zero when the plan runs (a reused one holds an earlier step's values).
function zeroed(b: PlanBuilder, a: Float32Array): Float32Array {
  b.add({ op: 'fill', x: a, n: a.length, value: 0 });
  return a;
}

function layerNorm(b: PlanBuilder, n: LayerNorm, x: Float32Array, rows: number, y: Float32Array): void {
  b.add({ op: 'layerNorm', x, rows, dim: n.dim, gamma: n.weight, beta: n.bias, eps: n.eps, y });
}

function linear(b: PlanBuilder, l: Linear, x: Float32Array, rows: number, y: Float32Array, residual: Float32Array | null = null): void {
  b.add({ op: 'linear', x, rows, ...l.stepFields, residual, activation: 'none', y });
}

function linearBack(b: PlanBuilder, l: Linear, dy: Float32Array, x: Float32Array, rows: number, dx: Float32Array | null, accumulate: boolean, grads: LayerGradients): void {
  b.add({
    op: 'linearBackward',
    rows,
    in: l.inFeatures,
    out: l.outFeatures,
    dy,
    x,
    weight: l.weight,
    dx,
    accumulate,
    dweight: grads.of(l.weight),
    dbias: l.bias !== null ? grads.of(l.bias) : null,
  });
}

// y = (residual +) MHA(x over src): the projections, heads and attention, kept for the backward pass.
function mhaForward(b: PlanBuilder, o: Owned, m: MultiHeadAttention, p: ModulePass, x: Float32Array, y: Float32Array, residual: Float32Array | null, fn: string, keys?: KeySource): MhaSaved {
  const c = m.config;
  if (p.attention === 'favor' && c.epsilon !== 0) {
    throw rangeError(`${fn}: gradients need epsilon 0 (this layer's FAVOR+ epsilon is ${c.epsilon})`, 'ERR_INVALID_ARG_VALUE');
  }
  if (p.attention === 'favor' && !DIFFERENTIABLE_KERNELS.includes(c.featureMap.kernel)) {
    throw rangeError(
      `${fn}: gradients need fixed features of the kernels ${DIFFERENTIABLE_KERNELS.join(', ')}; this layer's kernel is '${c.featureMap.kernel}'`,
      'ERR_INVALID_ARG_VALUE',
    );
  }
  const cross = keys !== undefined ? keys.kind === 'memory' : p.memory !== null;
  const src = cross ? p.memory! : x;
  // A separate value input only reaches a MultiHeadAttention trained alone (no keys given).
  const valueSrc = cross && keys === undefined && p.value !== null ? p.value : src;
  const lk = cross ? p.memoryLength : p.len;
  const B = p.batch;
  const inner = c.numHeads * c.headDim;
  const heads = (len: number) => ({ batch: B, len, heads: c.numHeads, headDim: c.headDim });
  const project = (l: Linear, from: Float32Array, len: number) => {
    const t = b.acquire(B * len * inner);
    linear(b, l, from, B * len, t);
    const dst = o.buffer(B * len * inner);
    b.add({ op: 'splitHeads', src: t, srcStride: inner, dst, ...heads(len) });
    b.release(t);
    return dst;
  };
  const q = project(m.q, x, p.len);
  const k = project(m.k, src, lk);
  const v = project(m.v, valueSrc, lk);
  const causal = c.causal;
  const pad = cross ? p.memoryPadding : p.keyPadding;
  const dims: NativeDims = { batch: B, heads: c.numHeads, queryLength: p.len, keyLength: lk, headDim: c.headDim, valueDim: c.headDim };
  const attention: SavedAttention =
    p.attention === 'favor'
      ? { kind: 'favor', dims, options: { ...m.featureMap.nativeSpec(), causal, keyPadding: pad, epsilon: 0, chunkSize: c.chunkSize } }
      : { kind: 'softmax', dims, options: { causal, keyPadding: pad, scale: defaultSoftmaxScale(c.headDim) } };
  const out = b.acquire(B * p.len * inner);
  if (attention.kind === 'favor') b.add({ op: 'favor', q, k, v, out, dims, options: attention.options });
  else b.add({ op: 'softmax', q, k, v, out, dims, options: attention.options });
  const merged = o.buffer(B * p.len * inner);
  b.add({ op: 'mergeHeads', src: out, dst: merged, ...heads(p.len) });
  b.release(out);
  linear(b, m.out, merged, B * p.len, y, residual);
  return { m, x, src, valueSrc, lq: p.len, lk, q, k, v, merged, attention };
}

// dx += d/dx and dsrc += d/dsrc of the attention for dL/dy = dy (dsrc may be dx: self-attention);
// the values' part goes to dvalue when the values had their own input.
function mhaBackward(b: PlanBuilder, s: MhaSaved, dy: Float32Array, dx: Float32Array, dsrc: Float32Array, grads: LayerGradients, p: ModulePass, dvalue: Float32Array | null = null): void {
  const c = s.m.config;
  const B = p.batch;
  const inner = c.numHeads * c.headDim;
  const heads = (len: number) => ({ batch: B, len, heads: c.numHeads, headDim: c.headDim });
  const dmerged = b.acquire(B * s.lq * inner);
  linearBack(b, s.m.out, dy, s.merged, B * s.lq, dmerged, false, grads);
  const dout = b.acquire(B * s.lq * inner);
  b.add({ op: 'splitHeads', src: dmerged, srcStride: inner, dst: dout, ...heads(s.lq) });
  b.release(dmerged);
  const dq = b.acquire(B * s.lq * inner);
  const dk = b.acquire(B * s.lk * inner);
  const dv = b.acquire(B * s.lk * inner);
  const a = s.attention;
  if (a.kind === 'favor') b.add({ op: 'favorBackward', q: s.q, k: s.k, v: s.v, gradOut: dout, dq, dk, dv, dims: a.dims, options: a.options });
  else b.add({ op: 'softmaxBackward', q: s.q, k: s.k, v: s.v, gradOut: dout, dq, dk, dv, dims: a.dims, options: a.options });
  b.release(dout);
  const merge = (t: Float32Array, len: number) => {
    const m = b.acquire(B * len * inner);
    b.add({ op: 'mergeHeads', src: t, dst: m, ...heads(len) });
    b.release(t);
    return m;
  };
  const dqp = merge(dq, s.lq);
  linearBack(b, s.m.q, dqp, s.x, B * s.lq, dx, true, grads);
  b.release(dqp);
  const dkp = merge(dk, s.lk);
  linearBack(b, s.m.k, dkp, s.src, B * s.lk, dsrc, true, grads);
  b.release(dkp);
  const dvp = merge(dv, s.lk);
  linearBack(b, s.m.v, dvp, s.valueSrc, B * s.lk, dvalue ?? dsrc, true, grads);
  b.release(dvp);
}

interface BlockSaved {
  block: Block;
  x: Float32Array;
  y: Float32Array;
  self: MhaSaved;
  cross: MhaSaved | null;
  // post-norm: the sums before each norm; pre-norm: the inputs of each norm
  normIn: Float32Array[];
  ffIn: Float32Array;
  pre: Float32Array;
  act: Float32Array;
}

function blockForward(b: PlanBuilder, o: Owned, block: Block, p: ModulePass, x: Float32Array, fn: string): BlockSaved {
  const c = block.config;
  const D = c.attention.modelDim;
  const rows = p.batch * p.len;
  const [n1, n2, n3] = block.norms;
  const ffNorm = block.crossAttn === null ? n2 : n3;
  const feedForward = (input: Float32Array, y: Float32Array, residual: Float32Array) => {
    // ReLU: the fused activation; its gradient reads the output (positive where the input was).
    const act = o.buffer(rows * c.ffDim);
    let pre = act;
    if (c.activation === 'gelu') {
      pre = o.buffer(rows * c.ffDim);
      linear(b, block.ff1, input, rows, pre);
      b.add({ op: 'gelu', x: pre, n: rows * c.ffDim, y: act });
    } else {
      b.add({ op: 'linear', x: input, rows, ...block.ff1.stepFields, residual: null, activation: 'relu', y: act });
    }
    linear(b, block.ff2, act, rows, y, residual);
    return { pre, act };
  };
  const normIn: Float32Array[] = [];
  if (!c.normFirst) {
    const a = o.buffer(rows * D);
    const self = mhaForward(b, o, block.selfAttn, p, x, a, x, fn, { kind: 'self' });
    normIn.push(a);
    let h = o.buffer(rows * D);
    layerNorm(b, n1, a, rows, h);
    let cross: MhaSaved | null = null;
    if (block.crossAttn !== null) {
      const s2 = o.buffer(rows * D);
      cross = mhaForward(b, o, block.crossAttn, p, h, s2, h, fn, { kind: 'memory', data: p.memory!, length: p.memoryLength });
      normIn.push(s2);
      h = o.buffer(rows * D);
      layerNorm(b, n2, s2, rows, h);
    }
    const f = o.buffer(rows * D);
    const ff = feedForward(h, f, h);
    normIn.push(f);
    const y = o.buffer(rows * D);
    layerNorm(b, ffNorm, f, rows, y);
    return { block, x, y, self, cross, normIn, ffIn: h, ...ff };
  }
  const t1 = o.buffer(rows * D);
  layerNorm(b, n1, x, rows, t1);
  normIn.push(x);
  const a = o.buffer(rows * D);
  const self = mhaForward(b, o, block.selfAttn, p, t1, a, x, fn, { kind: 'self' });
  let r = a;
  let cross: MhaSaved | null = null;
  if (block.crossAttn !== null) {
    const t2 = o.buffer(rows * D);
    layerNorm(b, n2, a, rows, t2);
    normIn.push(a);
    r = o.buffer(rows * D);
    cross = mhaForward(b, o, block.crossAttn, p, t2, r, a, fn, { kind: 'memory', data: p.memory!, length: p.memoryLength });
  }
  const t3 = o.buffer(rows * D);
  layerNorm(b, ffNorm, r, rows, t3);
  normIn.push(r);
  const y = o.buffer(rows * D);
  const ff = feedForward(t3, y, r);
  return { block, x, y, self, cross, normIn, ffIn: t3, ...ff };
}

// dx holds dL/d(block output) and becomes dL/d(block input).
function blockBackward(b: PlanBuilder, s: BlockSaved, dx: Float32Array, grads: LayerGradients, p: ModulePass): void {
  const block = s.block;
  const c = block.config;
  const D = c.attention.modelDim;
  const rows = p.batch * p.len;
  const [n1, n2, n3] = block.norms;
  const ffNorm = block.crossAttn === null ? n2 : n3;
  const normBack = (n: LayerNorm, x: Float32Array, dy: Float32Array, out: Float32Array, accumulate: boolean) =>
    b.add({ op: 'layerNormBackward', rows, dim: D, x, gamma: n.weight, eps: n.eps, dy, dx: out, accumulate, dgamma: grads.of(n.weight), dbeta: grads.of(n.bias) });
  // dinput += d/d(ff input) of ff2(act(ff1(input))) for dL/d(ff output) = dy.
  const ffBack = (dy: Float32Array, dinput: Float32Array, accumulate: boolean) => {
    const dact = b.acquire(rows * c.ffDim);
    linearBack(b, block.ff2, dy, s.act, rows, dact, false, grads);
    b.add({ op: c.activation === 'gelu' ? 'geluBackward' : 'reluBackward', pre: s.pre, dy: dact, dx: dact, n: rows * c.ffDim });
    linearBack(b, block.ff1, dact, s.ffIn, rows, dinput, accumulate, grads);
    b.release(dact);
  };
  const dmem = p.dmemory;
  if (!c.normFirst) {
    // y = LN(f), f = h + FF(h): dh = df + FF'(df)
    const dh = b.acquire(rows * D);
    normBack(ffNorm, s.normIn[s.normIn.length - 1], dx, dh, false);
    ffBack(dh, dh, true);
    let da = dh;
    if (s.cross !== null) {
      // h = LN2(s2), s2 = h1 + CA(h1): dh1 = ds2 + CA'(ds2)
      const ds2 = b.acquire(rows * D);
      normBack(n2, s.normIn[1], dh, ds2, false);
      mhaBackward(b, s.cross, ds2, ds2, dmem!, grads, p);
      b.release(dh);
      da = ds2;
    }
    // h1 = LN1(a), a = x + SA(x): dx = da' + SA'(da')
    normBack(n1, s.normIn[0], da, dx, false);
    b.release(da);
    mhaBackward(b, s.self, dx, dx, dx, grads, p);
    return;
  }
  // y = r + FF(LN(r)): dr = dy + LN'(FF'(dy))
  const dt = b.acquire(rows * D);
  ffBack(dx, dt, false);
  normBack(ffNorm, s.normIn[s.normIn.length - 1], dt, dx, true);
  if (s.cross !== null) {
    // r = a + CA(LN2(a)): da = dr + LN2'(CA'(dr))
    const dt2 = zeroed(b, b.acquire(rows * D));
    mhaBackward(b, s.cross, dx, dt2, dmem!, grads, p);
    normBack(n2, s.normIn[1], dt2, dx, true);
    b.release(dt2);
  }
  // a = x + SA(LN1(x)): dx = da + LN1'(SA'(da))
  const dt1 = zeroed(b, b.acquire(rows * D));
  mhaBackward(b, s.self, dx, dt1, dt1, grads, p);
  normBack(n1, s.normIn[0], dt1, dx, true);
  b.release(dt1);
  b.release(dt);
}
