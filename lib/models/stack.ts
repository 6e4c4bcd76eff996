/**
 * The layers of a performer-pytorch model (its `Performer` stack) and the native plan
 * of a pass through them. Shape legend: B = batch, L = rows of the call, D = dim,
 * H = heads (the first H - local are global FAVOR+ heads, the rest local), d = dim_head.
 *
 * Each layer is x += A(x) then x += F(x) (reversible: x1 += A(x2), x2 += F(x1), output
 * x1 + x2), where a sub-layer is wrapped by pre-LayerNorm, ScaleNorm or ReZero, and by
 * token shift when configured.
 */
import { DEFAULT_LAYER_NORM_EPS } from '../defaults';
import { rangeError } from '../errors';
import { FeatureMap } from '../feature-map';
import { native, type NativeDims } from '../native';
import { Linear } from '../layers/parameters';
import type { PlanBuilder } from '../layers/plan';
import type { FavorStep, PytorchFavorStep } from '../layers/plan-steps';
import type { QuantizedFormat, WeightFormat } from '../quantization';
import type { TensorSource } from './checkpoint';
import { sublayerPrefix, type PerformerStackConfig } from './config';

/**
 * How the FAVOR+ heads compute: `'performer-pytorch'` reproduces that package's outputs
 * (its 1e-4 / 1e-3 / 1e-6 epsilons, the key maximum over the whole call, masked values
 * zeroed while masked keys stay in the normalizer); `'exact'` is this library's FAVOR+
 * (no epsilons, masked keys removed, causal rows independent of later keys).
 */
export type Numerics = 'performer-pytorch' | 'exact';

/**
 * @internal The epsilons of performer-pytorch's norms, fixed by that package (its configuration
 * has no field for them): nn.LayerNorm's default and its ScaleNorm's `eps`.
 */
export const LAYER_NORM_EPS = DEFAULT_LAYER_NORM_EPS;
/** @internal See LAYER_NORM_EPS. */
export const SCALE_NORM_EPS = 1e-5;
// performer-pytorch's generalized_kernel epsilon (its ReLU features add it).
const RELU_KERNEL_EPSILON = 1e-3;
// Largest block of feed-forward hidden activations (16 MiB): long calls run in row chunks.
const FF_CHUNK_FLOATS = 4 * 1024 * 1024;
// Rows per causal chunk of the library's FAVOR+ ('exact' numerics).
const EXACT_CHUNK = 64;

/** @internal The wrapper of one sub-layer: its norm (or ReZero gain). */
interface Wrapper {
  gamma: Float32Array | null; // LayerNorm weight
  beta: Float32Array | null; // LayerNorm bias
  /** ScaleNorm's or ReZero's gain (the checkpoint's one-element tensor; null with LayerNorm). */
  gain: Float32Array | null;
}

/** @internal One layer's weights. */
export interface StackLayer {
  attnWrap: Wrapper;
  ffWrap: Wrapper;
  /** The checkpoint's projections (their arrays are the parameters). */
  q: Linear;
  k: Linear;
  v: Linear;
  /** q, k and v stacked along their outputs (one pass over x): a copy, rebuilt by refresh(). */
  qkv: Linear;
  out: Linear;
  /** [m, d], the global heads' features (kept even when unused: it is in the checkpoint). */
  projection: Float32Array;
  /** d^-1/4 W^T as the kernels use it (softmax and relu features). */
  packed: Float32Array | null;
  /** The library's FeatureMap of the projection ('exact' numerics, softmax and relu). */
  featureMap: FeatureMap | null;
  /** local-attention's rotary frequencies [d / 2] (layers with local heads). */
  localInvFreq: Float32Array | null;
  localHeads: number;
  w1: Linear;
  w2: Linear;
}

/** @internal Decoding arrays of one layer (batch 1 or more). */
export interface LayerState {
  global: Float32Array | null;
  local: Float32Array | null;
  shiftAttn: Float32Array | null;
  shiftFf: Float32Array | null;
  /** Set by a pass when a global head's key maximum rose ('performer-pytorch' numerics). */
  maxRose: Uint8Array;
}

/** @internal Sin / cos of the global heads' rotary positions: the stored table, then the formula. */
export interface RotaryTable {
  table: Float32Array;
  rows: number;
  invFreq: Float32Array;
}

/** @internal One pass through the stack. */
export interface StackCall {
  x: Float32Array; // [B * L, D], read only
  y: Float32Array; // [B * L, D]
  batch: number;
  len: number;
  keep: Uint8Array | null; // [B, L], nonzero = keep
  start: number; // position of the first row
  rotary: RotaryTable | null;
  states: LayerState[] | null;
  label: string;
  /** The global heads' attention: FAVOR+ (default) or exact softmax over the same weights. */
  attention?: 'favor' | 'softmax';
  /**
   * A batched decoding step: row i (len 1) is session i, with its own states and position
   * (`states`, `start` and `keep` of the call are then unused). The dense ops run once over
   * all rows; the ops that read a state or a position run once per session on its row.
   */
  sessions?: readonly SessionRow[];
}

/** @internal One session of a batched step: its layer states and the position of its token. */
export interface SessionRow {
  states: LayerState[];
  start: number;
}

/** @internal The sequences a state- or position-dependent op runs over, see StackCall.sessions. */
interface SequenceSlice {
  batch: number;
  start: number;
  keep: Uint8Array | null;
  states: LayerState[] | null;
  /** This slice's part of a [batch, ...] buffer holding `perSequence` floats per sequence. */
  at(buffer: Float32Array, perSequence: number): Float32Array;
}

/** @internal The layers of a performer-pytorch stack with their weights. */
export class PerformerStack {
  readonly layers: StackLayer[];

  constructor(
    readonly config: PerformerStackConfig,
    readonly numerics: Numerics,
    reader: TensorSource,
    root: string,
  ) {
    const c = config;
    const inner = c.heads * c.dimHead;
    const D = c.dim;
    const hidden = D * c.ffMult;
    this.layers = [];
    for (let l = 0; l < c.depth; l++) {
      const wrap = (part: 0 | 1): { wrapper: Wrapper; prefix: string } => {
        const p = sublayerPrefix(c, root, l, part);
        const wrapper: Wrapper = { gamma: null, beta: null, gain: null };
        if (c.norm === 'layernorm') {
          wrapper.gamma = reader.take(`${p}norm.weight`, [D]);
          wrapper.beta = reader.take(`${p}norm.bias`, [D]);
        } else {
          wrapper.gain = reader.take(`${p}g`, c.norm === 'scalenorm' ? [1] : []);
        }
        // The wrapped module: fn. (norm wrappers), one more fn. for token shift.
        return { wrapper, prefix: `${p}fn.${c.shiftTokens ? 'fn.' : ''}` };
      };
      const a = wrap(0);
      const f = wrap(1);
      const linear = (name: string, inF: number, outF: number, bias: boolean) => takeLinear(reader, name, inF, outF, bias);
      const q = linear(`${a.prefix}to_q`, D, inner, c.qkvBias);
      const k = linear(`${a.prefix}to_k`, D, inner, c.qkvBias);
      const v = linear(`${a.prefix}to_v`, D, inner, c.qkvBias);
      const out = linear(`${a.prefix}to_out`, inner, D, c.attnOutBias);
      const projection = reader.take(`${a.prefix}fast_attention.projection_matrix`, [c.numFeatures, c.dimHead]);
      const localHeads = c.localHeads[l];
      const localInvFreq = localHeads > 0 ? reader.take(`${a.prefix}local_attn.rel_pos.inv_freq`, [c.dimHead / 2]) : null;
      // Feed-forward: wrapped in Chunk (one more fn.).
      const ff = `${f.prefix}fn.`;
      const w1 = linear(`${ff}w1`, D, c.ffGlu ? 2 * hidden : hidden, true);
      const w2 = linear(`${ff}w2`, hidden, D, true);
      this.layers.push({
        attnWrap: a.wrapper,
        ffWrap: f.wrapper,
        q,
        k,
        v,
        qkv: Linear.stacked([q, k, v]),
        out,
        projection,
        packed: null,
        featureMap: null,
        localInvFreq,
        localHeads,
        w1,
        w2,
      });
    }
  }

  /**
   * After the parameter arrays changed in place (an optimizer step, new features): the
   * stacked q/k/v copy, the packed weights and the feature maps are derived again.
   */
  refresh(): void {
    for (const layer of this.layers) {
      layer.qkv = Linear.stacked([layer.q, layer.k, layer.v]);
      for (const l of [layer.out, layer.w1, layer.w2]) l.weightChanged();
    }
    this.prepare();
  }

  /** The linear layers of every layer (not the stacked q/k/v copies). */
  linears(): Linear[] {
    return this.layers.flatMap((layer) => [layer.q, layer.k, layer.v, layer.out, layer.w1, layer.w2]);
  }

  /** Stores the linear layers as `format` (the stacked q/k/v copies follow). */
  quantize(format: QuantizedFormat): void {
    for (const l of this.linears()) l.quantize(format);
    for (const layer of this.layers) layer.qkv = Linear.stacked([layer.q, layer.k, layer.v]);
  }

  /** Prepares the packed projections and feature maps (after the reader reported no problem). */
  prepare(): void {
    const c = this.config;
    for (const layer of this.layers) {
      if (layer.localHeads === c.heads || c.features === 'noProjection') continue;
      if (this.numerics === 'performer-pytorch') {
        layer.packed = native().packProjection(layer.projection, c.numFeatures, c.dimHead);
      } else {
        layer.featureMap = FeatureMap.fromProjection(layer.projection, {
          headDim: c.dimHead,
          numFeatures: c.numFeatures,
          kernel: c.features === 'softmax' ? 'softmax' : 'relu',
          kernelEpsilon: RELU_KERNEL_EPSILON,
        });
      }
    }
  }

  // The d x d identity: the packed "projection" of features taken from the raw entries.
  private identityCache: Float32Array | null = null;
  private identity(): Float32Array {
    if (this.identityCache === null) {
      const d = this.config.dimHead;
      this.identityCache = new Float32Array(d * d);
      for (let i = 0; i < d; i++) this.identityCache[i * d + i] = 1;
    }
    return this.identityCache;
  }

  /** Global heads of layer l. */
  globalHeads(l: number): number {
    return this.config.heads - this.layers[l].localHeads;
  }

  /** Floats of the FAVOR+ state of one (batch, head) of the global heads. */
  globalStateFloats(): number {
    const c = this.config;
    const F = c.features === 'noProjection' ? c.dimHead : c.numFeatures;
    return this.numerics === 'performer-pytorch' ? native().pytorchFavorStateFloats(F, c.dimHead) : native().favorStateFloats(F, c.dimHead);
  }

  /** Floats of the local heads' ring of one (batch, head). */
  localRingFloats(): number {
    return native().localRingFloats(this.config.localWindowSize, this.config.dimHead, this.config.dimHead);
  }

  /** Fresh decoding arrays for `batch` sequences. */
  createStates(batch: number): LayerState[] {
    const c = this.config;
    return this.layers.map((layer, l) => {
      const gh = this.globalHeads(l);
      let global: Float32Array | null = null;
      if (gh > 0) {
        global = new Float32Array(batch * gh * this.globalStateFloats());
        this.resetGlobal(global, batch * gh);
      }
      return {
        global,
        local: layer.localHeads > 0 ? new Float32Array(batch * layer.localHeads * this.localRingFloats()) : null,
        shiftAttn: c.shiftTokens ? new Float32Array(batch * c.dim) : null,
        shiftFf: c.shiftTokens ? new Float32Array(batch * c.dim) : null,
        maxRose: new Uint8Array(1),
      };
    });
  }

  /** Resets `heads` global-head states in `state`. */
  resetGlobal(state: Float32Array, heads: number): void {
    const c = this.config;
    const F = c.features === 'noProjection' ? c.dimHead : c.numFeatures;
    if (this.numerics === 'performer-pytorch') native().pytorchFavorStateReset(state, heads, F, c.dimHead);
    else native().favorStateReset(state, heads, F, c.dimHead);
  }

  /** Appends a pass through every layer to the plan. */
  plan(b: PlanBuilder, call: StackCall): void {
    const c = this.config;
    const rows = call.batch * call.len;
    const D = c.dim;
    if (!c.reversible) {
      let current = call.x;
      this.layers.forEach((layer, l) => {
        this.sublayer(b, call, l, 0, current, current, call.y);
        current = call.y;
        this.sublayer(b, call, l, 1, call.y, call.y, call.y);
      });
      return;
    }
    // Reversible: two streams, both the input at first.
    const x1 = b.acquire(rows * D);
    const x2 = b.acquire(rows * D);
    this.layers.forEach((layer, l) => {
      this.sublayer(b, call, l, 0, l === 0 ? call.x : x2, l === 0 ? call.x : x1, x1);
      this.sublayer(b, call, l, 1, x1, l === 0 ? call.x : x2, x2);
    });
    b.add({ op: 'scaledAdd', x: x2, n: rows * D, g: 1, residual: x1, y: call.y });
    b.release(x1);
    b.release(x2);
  }

  // dst = residual + wrapped part(input), rows of the call.
  private sublayer(b: PlanBuilder, call: StackCall, l: number, part: 0 | 1, input: Float32Array, residual: Float32Array, dst: Float32Array): void {
    const c = this.config;
    const layer = this.layers[l];
    const wrap = part === 0 ? layer.attnWrap : layer.ffWrap;
    const rows = call.batch * call.len;
    const D = c.dim;
    let n = input;
    const owned: Float32Array[] = [];
    if (c.norm === 'layernorm') {
      n = b.acquire(rows * D);
      owned.push(n);
      b.add({ op: 'layerNorm', x: input, rows, dim: D, gamma: wrap.gamma, beta: wrap.beta, eps: LAYER_NORM_EPS, y: n });
    } else if (c.norm === 'scalenorm') {
      n = b.acquire(rows * D);
      owned.push(n);
      b.add({ op: 'scaleNorm', x: input, rows, dim: D, g: wrap.gain![0], eps: SCALE_NORM_EPS, y: n });
    }
    if (c.shiftTokens) {
      const shifted = b.acquire(rows * D);
      const from = n;
      for (const seq of sequences(call)) {
        const state = seq.states?.[l];
        b.add({
          op: 'tokenShift',
          x: seq.at(from, call.len * D),
          batch: seq.batch,
          len: call.len,
          dim: D,
          shifts: c.causal ? [0, 1] : [-1, 0, 1],
          // The mask reaches the attention's shift only, as in performer-pytorch.
          keep: part === 0 ? seq.keep : null,
          history: state ? (part === 0 ? state.shiftAttn : state.shiftFf) : null,
          y: seq.at(shifted, call.len * D),
        });
      }
      owned.push(shifted);
      n = shifted;
    }
    const rezero = c.norm === 'rezero';
    const target = rezero ? b.acquire(rows * D) : dst;
    const res = rezero ? null : residual;
    if (part === 0) this.attention(b, call, l, n, target, res);
    else this.feedForward(b, layer, rows, n, target, res);
    if (rezero) {
      b.add({ op: 'scaledAdd', x: target, n: rows * D, g: wrap.gain![0], residual, y: dst });
      b.release(target);
    }
    for (const buffer of owned) b.release(buffer);
  }

  private feedForward(b: PlanBuilder, layer: StackLayer, rows: number, x: Float32Array, y: Float32Array, residual: Float32Array | null): void {
    const c = this.config;
    const D = c.dim;
    const hidden = D * c.ffMult;
    const width = c.ffGlu ? 3 * hidden : hidden;
    const chunk = Math.min(rows, Math.max(64, Math.floor(FF_CHUNK_FLOATS / width)));
    const h = b.acquire(chunk * hidden);
    const gate = c.ffGlu ? b.acquire(chunk * 2 * hidden) : null;
    for (let r0 = 0; r0 < rows; r0 += chunk) {
      const n = Math.min(chunk, rows - r0);
      const span = (a: Float32Array) => a.subarray(r0 * D, (r0 + n) * D);
      const hid = h.subarray(0, n * hidden);
      if (gate !== null) {
        const g = gate.subarray(0, n * 2 * hidden);
        b.add({ op: 'linear', x: span(x), rows: n, ...layer.w1.stepFields, activation: 'none', y: g });
        b.add({ op: 'gluGelu', h: g, rows: n, hidden, y: hid });
      } else {
        b.add({ op: 'linear', x: span(x), rows: n, ...layer.w1.stepFields, activation: 'gelu', y: hid });
      }
      b.add({ op: 'linear', x: hid, rows: n, ...layer.w2.stepFields, residual: residual ? span(residual) : null, activation: 'none', y: span(y) });
    }
    b.release(h);
    if (gate !== null) b.release(gate);
  }

  private attention(b: PlanBuilder, call: StackCall, l: number, x: Float32Array, y: Float32Array, residual: Float32Array | null): void {
    const c = this.config;
    const layer = this.layers[l];
    const d = c.dimHead;
    const inner = c.heads * d;
    const B = call.batch;
    const L = call.len;
    const rows = B * L;
    const lh = layer.localHeads;
    const gh = c.heads - lh;
    const label = `${call.label}.layers.${l}.attention`;
    const qkv = b.acquire(rows * 3 * inner);
    b.add({ op: 'linear', x, rows, ...layer.qkv.stepFields, activation: 'none', y: qkv });
    const merged = b.acquire(rows * inner);
    // Heads [first, first + count) of q, k and v, as [B, count, L, d].
    const split = (first: number, count: number) =>
      [0, 1, 2].map((which) => {
        const dst = b.acquire(rows * count * d);
        b.add({ op: 'splitHeads', src: qkv.subarray(which * inner + first * d), srcStride: 3 * inner, batch: B, len: L, heads: count, headDim: d, dst });
        return dst;
      });
    const dims = (batch: number, heads: number) => ({ batch, heads, queryLength: L, keyLength: L, headDim: d, valueDim: d });
    if (gh > 0) {
      const [q, k, v] = split(0, gh);
      const o = b.acquire(rows * gh * d);
      const per = gh * L * d;
      for (const seq of sequences(call)) {
        const [sq, sk, sv, so] = [q, k, v, o].map((t) => seq.at(t, per));
        if (call.rotary !== null) {
          for (const t of [sq, sk]) {
            b.add({ op: 'rotary', x: t, heads: seq.batch * gh, len: L, headDim: d, start: seq.start, layout: 'interleaved', table: call.rotary.table, tableRows: call.rotary.rows, invFreq: call.rotary.invFreq });
          }
        }
        b.add(
          call.attention === 'softmax'
            ? { op: 'softmax', q: sq, k: sk, v: sv, out: so, dims: dims(seq.batch, gh), options: { causal: c.causal, keyPadding: seq.keep, scale: 1 / Math.sqrt(d) }, label: `${label} (global heads)` }
            : this.globalAttentionStep(l, sq, sk, sv, so, dims(seq.batch, gh), seq.keep, seq.states?.[l] ?? null, label),
        );
      }
      b.add({ op: 'mergeHeads', src: o, dst: merged, dstStride: inner, batch: B, len: L, heads: gh, headDim: d });
      for (const t of [q, k, v, o]) b.release(t);
    }
    if (lh > 0) {
      const [q, k, v] = split(gh, lh);
      const o = b.acquire(rows * lh * d);
      const per = lh * L * d;
      for (const seq of sequences(call)) {
        const [sq, sk, sv, so] = [q, k, v, o].map((t) => seq.at(t, per));
        for (const t of [sq, sk]) {
          b.add({ op: 'rotary', x: t, heads: seq.batch * lh, len: L, headDim: d, start: seq.start, layout: 'halves', invFreq: layer.localInvFreq });
        }
        b.add({
          op: 'localAttention',
          q: sq,
          k: sk,
          v: sv,
          out: so,
          dims: dims(seq.batch, lh),
          options: {
            window: c.localWindowSize,
            causal: c.causal,
            keep: seq.keep,
            pytorchNumerics: this.numerics === 'performer-pytorch',
            ring: seq.states?.[l]?.local ?? null,
            start: seq.start,
          },
          label: `${label} (local heads)`,
        });
      }
      b.add({ op: 'mergeHeads', src: o, dst: merged.subarray(gh * d), dstStride: inner, batch: B, len: L, heads: lh, headDim: d });
      for (const t of [q, k, v, o]) b.release(t);
    }
    b.release(qkv);
    b.add({ op: 'linear', x: merged, rows, ...layer.out.stepFields, residual, activation: 'none', y });
    b.release(merged);
  }

  /** @internal The native step of the global heads' attention for this layer's features and numerics. */
  globalAttentionStep(
    l: number,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    out: Float32Array,
    dims: NativeDims,
    keep: Uint8Array | null,
    state: LayerState | null,
    label: string,
  ): FavorStep | PytorchFavorStep {
    const c = this.config;
    const layer = this.layers[l];
    const base = { q, k, v, out, dims, label: `${label} (global heads)` };
    if (this.numerics === 'performer-pytorch') {
      return {
        op: 'pytorchFavor',
        ...base,
        options: {
          features: c.features,
          packedProjection: layer.packed,
          numFeatures: c.numFeatures,
          causal: c.causal,
          keep,
          state: state?.global ?? null,
          maxRose: state?.maxRose ?? null,
          projection: layer.projection, // length-checked here, read by the backward pass
        },
      };
    }
    if (c.features === 'noProjection') {
      if (!c.causal) {
        // softmax over the kept keys, per entry: not a kernel, so not the library's FAVOR+ driver.
        return { op: 'pytorchFavor', ...base, options: { features: 'noProjection', numFeatures: c.dimHead, causal: false, keep, dropMaskedKeys: true } };
      }
      // exp(q) . exp(k) with per-feature stabilization: the 'exp' kernel on the raw entries.
      return {
        op: 'favor',
        ...base,
        options: {
          kernel: 'exp',
          headDim: c.dimHead,
          numProjections: c.dimHead,
          projection: null,
          packedProjection: this.identity(),
          kernelEpsilon: 0,
          causal: true,
          keyPadding: keep,
          epsilon: 0,
          chunkSize: EXACT_CHUNK,
          state: state?.global ?? null,
        },
      };
    }
    return {
      op: 'favor',
      ...base,
      options: {
        ...layer.featureMap!.nativeSpec(),
        causal: c.causal,
        keyPadding: keep,
        epsilon: 0,
        chunkSize: EXACT_CHUNK,
        state: state?.global ?? null,
      },
    };
  }
}

/**
 * @internal A linear layer `name` ([out, in] weight, optional bias) from a checkpoint, in the
 * format the checkpoint stores it (float32, or int8 / bf16 weights).
 */
export function takeLinear(source: TensorSource, name: string, inF: number, outF: number, bias: boolean): Linear {
  const linear = new Linear(inF, outF, source.take(`${name}.weight`, [outF, inF]), bias ? source.take(`${name}.bias`, [outF]) : null);
  const stored = source.storedWeight(`${name}.weight`, inF, outF);
  if (stored !== null) linear.setQuantized(stored);
  return linear;
}

/**
 * @internal The one format of a model's linear layers, or a RangeError naming the layers that
 * differ (a checkpoint that mixes formats).
 */
export function weightFormatOf(linears: Linear[], fn: string): WeightFormat {
  const format = linears[0]?.format ?? 'float32';
  const other = linears.findIndex((l) => l.format !== format);
  if (other >= 0) {
    throw rangeError(`${fn}: the linear weights mix formats (${format} and ${linears[other].format}); store them all as float32, int8 or bf16`, 'ERR_INVALID_ARG_VALUE');
  }
  return format;
}

// The whole call as one slice, or (a batched step) one slice per session on its row.
function sequences(call: StackCall): SequenceSlice[] {
  if (call.sessions === undefined) {
    return [{ batch: call.batch, start: call.start, keep: call.keep, states: call.states, at: (buffer) => buffer }];
  }
  return call.sessions.map((session, i) => ({
    batch: 1,
    start: session.start,
    keep: null,
    states: session.states,
    at: (buffer, perSequence) => buffer.subarray(i * perSequence, (i + 1) * perSequence),
  }));
}
