/**
 * Plain double-precision references of the layers, from their parameters
 * (canonical names) and the formulas: projections, attention (exact, or FAVOR+ with
 * the layer's own features through refFavor), LayerNorm, ReLU / exact GELU,
 * residuals, post- or pre-norm.
 */
import { refFavor, refSoftmax, type RefFeatureSpec, type RefTensor } from './reference';

type Params = Record<string, RefTensor>;

/** erf in double: series below 2.5, continued fraction for erfc above (|error| < 1e-14). */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))), evaluated bottom-up.
  let f = ax;
  for (let n = 60; n >= 1; n--) f = ax + n / 2 / f;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

export function linearRef(x: ArrayLike<number>, rows: number, w: RefTensor, b: RefTensor | undefined): Float64Array {
  const [out, inn] = w.shape;
  const y = new Float64Array(rows * out);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < out; o++) {
      let s = b ? b.data[o] : 0;
      for (let i = 0; i < inn; i++) s += x[r * inn + i] * w.data[o * inn + i];
      y[r * out + o] = s;
    }
  }
  return y;
}

export function layerNormRef(x: ArrayLike<number>, rows: number, dim: number, g: RefTensor, b: RefTensor, eps: number): Float64Array {
  const y = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let i = 0; i < dim; i++) m += x[r * dim + i];
    m /= dim;
    let v = 0;
    for (let i = 0; i < dim; i++) v += (x[r * dim + i] - m) ** 2;
    v /= dim;
    const inv = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < dim; i++) y[r * dim + i] = (x[r * dim + i] - m) * inv * g.data[i] + b.data[i];
  }
  return y;
}

export interface RefAttentionConfig {
  modelDim: number;
  numHeads: number;
  headDim: number;
  attention: 'favor' | 'softmax';
  causal: boolean;
  /** FAVOR only: the layer's features (kernel softmax). */
  featureSpec?: (projection: Float32Array) => RefFeatureSpec;
}

// [B, L, H dh] -> [B, H, L, dh], kept in double.
function toHeads(x: Float64Array, B: number, L: number, H: number, dh: number): RefTensor {
  const out = new Float64Array(B * H * L * dh);
  for (let b = 0; b < B; b++)
    for (let l = 0; l < L; l++)
      for (let h = 0; h < H; h++)
        for (let e = 0; e < dh; e++) out[((b * H + h) * L + l) * dh + e] = x[(b * L + l) * H * dh + h * dh + e];
  return { data: out, shape: [B, H, L, dh] };
}

/** Multi-head attention of x [B, Lq, D] over memory [B, Lk, Dk] (x itself when null). */
export function mhaRef(
  p: Params,
  prefix: string,
  c: RefAttentionConfig,
  x: ArrayLike<number>,
  B: number,
  Lq: number,
  memory: ArrayLike<number> | null,
  Lk: number,
  keyPadding: Uint8Array | null,
  value: ArrayLike<number> | null = null,
): Float64Array {
  const H = c.numHeads;
  const dh = c.headDim;
  const src = memory ?? x;
  const q = linearRef(x, B * Lq, p[`${prefix}q.weight`], p[`${prefix}q.bias`]);
  const k = linearRef(src, B * Lk, p[`${prefix}k.weight`], p[`${prefix}k.bias`]);
  const v = linearRef(value ?? src, B * Lk, p[`${prefix}v.weight`], p[`${prefix}v.bias`]);
  const inputs = { q: toHeads(q, B, Lq, H, dh), k: toHeads(k, B, Lk, H, dh), v: toHeads(v, B, Lk, H, dh) };
  const mask = { causal: c.causal, keyPadding };
  const o =
    c.attention === 'softmax'
      ? refSoftmax(inputs, mask)
      : refFavor(inputs, c.featureSpec!(p[`${prefix}features.projection`].data as Float32Array), mask);
  const merged = new Float64Array(B * Lq * H * dh);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let l = 0; l < Lq; l++)
        for (let e = 0; e < dh; e++) merged[(b * Lq + l) * H * dh + h * dh + e] = o[((b * H + h) * Lq + l) * dh + e];
  return linearRef(merged, B * Lq, p[`${prefix}out.weight`], p[`${prefix}out.bias`]);
}

export interface RefBlockConfig extends RefAttentionConfig {
  ffDim: number;
  activation: 'relu' | 'gelu';
  normFirst: boolean;
  layerNormEps: number;
  decoder: boolean;
  crossAttention: boolean;
  /** Self-attention causal; default: decoder. */
  selfCausal?: boolean;
}

function add(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  return Float64Array.from(a as ArrayLike<number>, (v, i) => v + b[i]);
}

/** One encoder or decoder block on x [B, L, D]. */
export function blockRef(
  p: Params,
  prefix: string,
  c: RefBlockConfig,
  x: ArrayLike<number>,
  B: number,
  L: number,
  o: { keyPadding?: Uint8Array | null; memory?: ArrayLike<number>; memoryLength?: number; memoryPadding?: Uint8Array | null } = {},
): Float64Array {
  const D = c.modelDim;
  const rows = B * L;
  const ln = (name: string, t: ArrayLike<number>) => layerNormRef(t, rows, D, p[`${prefix}${name}.weight`], p[`${prefix}${name}.bias`], c.layerNormEps);
  const sa = (t: ArrayLike<number>) => mhaRef(p, `${prefix}selfAttn.`, { ...c, causal: c.selfCausal ?? c.decoder }, t, B, L, null, L, o.keyPadding ?? null);
  const ca = (t: ArrayLike<number>) =>
    mhaRef(p, `${prefix}crossAttn.`, { ...c, causal: false }, t, B, L, o.memory!, o.memoryLength!, o.memoryPadding ?? null);
  const ff = (t: ArrayLike<number>) => {
    const h = linearRef(t, rows, p[`${prefix}ff1.weight`], p[`${prefix}ff1.bias`]);
    for (let i = 0; i < h.length; i++) h[i] = c.activation === 'relu' ? Math.max(0, h[i]) : 0.5 * h[i] * (1 + erf(h[i] / Math.SQRT2));
    return linearRef(h, rows, p[`${prefix}ff2.weight`], p[`${prefix}ff2.bias`]);
  };
  const cross = c.decoder && c.crossAttention;
  const ffNorm = c.decoder ? 'norm3' : 'norm2';
  if (!c.normFirst) {
    let h = ln('norm1', add(x, sa(x)));
    if (cross) h = ln('norm2', add(h, ca(h)));
    return ln(ffNorm, add(h, ff(h)));
  }
  let h = add(x, sa(ln('norm1', x)));
  if (cross) h = add(h, ca(ln('norm2', h)));
  return add(h, ff(ln(ffNorm, h)));
}
