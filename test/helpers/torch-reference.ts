// Plain float64 reference of the transformer layers with exact softmax attention, from
// canonical parameters (PyTorch layout: y = x Wᵀ + b). Written out loop by loop, with no
// code shared with the library, to check fixtures and name mappings.

import { erf } from './layer-reference';

export interface RefTensor {
  data: ArrayLike<number>;
  shape: readonly number[];
}
export type RefParams = Record<string, RefTensor>;

export interface RefLayerConfig {
  modelDim: number;
  numHeads: number;
  activation?: 'relu' | 'gelu';
  normFirst?: boolean;
  layerNormEps?: number;
}

function param(p: RefParams, name: string): ArrayLike<number> {
  const t = p[name];
  if (!t) throw new Error(`reference: missing parameter '${name}'`);
  return t.data;
}

/** rows × outDim = x (rows × inDim) Wᵀ + b. */
function linear(p: RefParams, name: string, x: Float64Array, rows: number): Float64Array {
  const w = p[`${name}.weight`];
  if (!w) throw new Error(`reference: missing parameter '${name}.weight'`);
  const [outDim, inDim] = w.shape;
  const b = p[`${name}.bias`]?.data;
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < outDim; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inDim; i++) s += x[r * inDim + i] * w.data[o * inDim + i];
      y[r * outDim + o] = s;
    }
  return y;
}

function layerNorm(p: RefParams, name: string, x: Float64Array, rows: number, dim: number, eps: number): Float64Array {
  const w = param(p, `${name}.weight`);
  const b = param(p, `${name}.bias`);
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < dim; i++) mean += x[r * dim + i];
    mean /= dim;
    let variance = 0;
    for (let i = 0; i < dim; i++) variance += (x[r * dim + i] - mean) ** 2;
    variance /= dim;
    const inv = 1 / Math.sqrt(variance + eps);
    for (let i = 0; i < dim; i++) y[r * dim + i] = (x[r * dim + i] - mean) * inv * w[i] + b[i];
  }
  return y;
}

/**
 * Multi-head attention: x [B, Lq, E], memory [B, Lk, K]; mask [B, Lk] nonzero = attend;
 * causal: key j attends query i when j <= i + (Lk - Lq).
 */
export function refMha(
  p: RefParams,
  prefix: string,
  numHeads: number,
  x: Float64Array,
  memory: Float64Array,
  batch: number,
  Lq: number,
  Lk: number,
  opts: { mask?: ArrayLike<number>; causal?: boolean } = {},
): Float64Array {
  const q = linear(p, `${prefix}q`, x, batch * Lq);
  const k = linear(p, `${prefix}k`, memory, batch * Lk);
  const v = linear(p, `${prefix}v`, memory, batch * Lk);
  const inner = p[`${prefix}q.weight`].shape[0];
  const dh = inner / numHeads;
  const context = new Float64Array(batch * Lq * inner);
  const scores = new Float64Array(Lk);
  for (let b = 0; b < batch; b++)
    for (let h = 0; h < numHeads; h++)
      for (let i = 0; i < Lq; i++) {
        let max = -Infinity;
        for (let j = 0; j < Lk; j++) {
          const attends = (!opts.mask || opts.mask[b * Lk + j] !== 0) && (!opts.causal || j <= i + Lk - Lq);
          if (!attends) {
            scores[j] = -Infinity;
            continue;
          }
          let s = 0;
          for (let c = 0; c < dh; c++) s += q[(b * Lq + i) * inner + h * dh + c] * k[(b * Lk + j) * inner + h * dh + c];
          scores[j] = s / Math.sqrt(dh);
          max = Math.max(max, scores[j]);
        }
        let total = 0;
        for (let j = 0; j < Lk; j++) total += scores[j] === -Infinity ? 0 : Math.exp(scores[j] - max);
        for (let j = 0; j < Lk; j++) {
          if (scores[j] === -Infinity) continue;
          const weight = Math.exp(scores[j] - max) / total;
          for (let c = 0; c < dh; c++) context[(b * Lq + i) * inner + h * dh + c] += weight * v[(b * Lk + j) * inner + h * dh + c];
        }
      }
  return linear(p, `${prefix}out`, context, batch * Lq);
}

function feedForward(p: RefParams, prefix: string, x: Float64Array, rows: number, activation: 'relu' | 'gelu'): Float64Array {
  const hidden = linear(p, `${prefix}ff1`, x, rows);
  for (let i = 0; i < hidden.length; i++) {
    const t = hidden[i];
    hidden[i] = activation === 'relu' ? Math.max(t, 0) : 0.5 * t * (1 + erf(t / Math.SQRT2));
  }
  return linear(p, `${prefix}ff2`, hidden, rows);
}

const add = (a: Float64Array, b: Float64Array) => a.map((value, i) => value + b[i]);

/**
 * One block: sublayers [f, normName] applied as post-norm `x = norm(x + f(x))` or pre-norm
 * `x = x + f(norm(x))`.
 */
function block(
  p: RefParams,
  prefix: string,
  cfg: RefLayerConfig,
  x: Float64Array,
  rows: number,
  sublayers: [(input: Float64Array) => Float64Array, string][],
): Float64Array {
  const eps = cfg.layerNormEps ?? 1e-5;
  let h = x;
  for (const [f, norm] of sublayers) {
    if (cfg.normFirst) h = add(h, f(layerNorm(p, `${prefix}${norm}`, h, rows, cfg.modelDim, eps)));
    else h = layerNorm(p, `${prefix}${norm}`, add(h, f(h)), rows, cfg.modelDim, eps);
  }
  return h;
}

export function refEncoderLayer(
  p: RefParams,
  prefix: string,
  cfg: RefLayerConfig,
  x: Float64Array,
  batch: number,
  L: number,
  mask?: ArrayLike<number>,
): Float64Array {
  const rows = batch * L;
  return block(p, prefix, cfg, x, rows, [
    [(h) => refMha(p, `${prefix}selfAttn.`, cfg.numHeads, h, h, batch, L, L, { mask }), 'norm1'],
    [(h) => feedForward(p, prefix, h, rows, cfg.activation ?? 'relu'), 'norm2'],
  ]);
}

export function refDecoderLayer(
  p: RefParams,
  prefix: string,
  cfg: RefLayerConfig,
  x: Float64Array,
  memory: Float64Array,
  batch: number,
  L: number,
  Lk: number,
  memoryMask?: ArrayLike<number>,
): Float64Array {
  const rows = batch * L;
  return block(p, prefix, cfg, x, rows, [
    [(h) => refMha(p, `${prefix}selfAttn.`, cfg.numHeads, h, h, batch, L, L, { causal: true }), 'norm1'],
    [(h) => refMha(p, `${prefix}crossAttn.`, cfg.numHeads, h, memory, batch, L, Lk, { mask: memoryMask }), 'norm2'],
    [(h) => feedForward(p, prefix, h, rows, cfg.activation ?? 'relu'), 'norm3'],
  ]);
}

/** A stack: layers.{i}.…, then the final norm `norm.*` when present. */
export function refStack(
  p: RefParams,
  cfg: RefLayerConfig & { numLayers: number },
  x: Float64Array,
  batch: number,
  L: number,
  layer: (prefix: string, h: Float64Array) => Float64Array,
): Float64Array {
  let h = x;
  for (let i = 0; i < cfg.numLayers; i++) h = layer(`layers.${i}.`, h);
  if (p['norm.weight']) h = layerNorm(p, 'norm', h, batch * L, cfg.modelDim, cfg.layerNormEps ?? 1e-5);
  return h;
}
