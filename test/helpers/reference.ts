/**
 * Float64 reference implementations for the attention tests, written from the
 * math of FAVOR+ and softmax attention (not from the C++ code), plus seeded data generators.
 *
 * Layouts follow the library: q [B, H, Lq, d], k [B, H, Lk, d], v [B, H, Lk, Dv],
 * out [B, H, Lq, Dv], keyPadding [B, Lk] (nonzero = attend), W m x d row-major.
 */
import type { FeatureKernel, FeatureMap, Tensor } from '../../lib';

// Local bindings: looking up Math's members through jest's sandbox global is ~20x slower.
const { exp, log, log1p, sqrt, sin, cos, abs, max, min, pow, floor, PI } = Math;

// ---------------------------------------------------------------------------
// Seeded data

/** Small seeded PRNG (xorshift128 state, seeded through a splitmix-style mixer). */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | null = null;

  constructor(seed: number) {
    let x = (seed >>> 0) ^ 0x9e3779b9;
    const next = (): number => {
      x = (x + 0x6d2b79f5) | 0;
      let t = Math.imul(x ^ (x >>> 15), 1 | x);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return (t ^ (t >>> 14)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next() | 1; // never the all-zero state
  }

  /** Uniform 32-bit unsigned integer. */
  nextUint32(): number {
    let t = this.s3;
    const s = this.s0;
    this.s3 = this.s2;
    this.s2 = this.s1;
    this.s1 = s;
    t ^= t << 11;
    t ^= t >>> 8;
    this.s0 = (t ^ s ^ (s >>> 19)) >>> 0;
    return this.s0;
  }

  /** Uniform in (0, 1): never 0, so log() in Box–Muller stays finite. */
  uniform(): number {
    return (this.nextUint32() + 0.5) / 4294967296;
  }

  /** Standard normal via Box–Muller (the second value is kept for the next call). */
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    const r = sqrt(-2 * log(this.uniform()));
    const a = 2 * PI * this.uniform();
    this.spare = r * sin(a);
    return r * cos(a);
  }

  int(n: number): number {
    return floor(this.uniform() * n);
  }
}

/** n values uniform in [-scale/2, scale/2), from a small LCG seeded with `seed` (same seed, same values). */
export function seededUniform(n: number, seed: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    a[i] = scale * (s / 2147483648 - 0.5);
  }
  return a;
}

/** n samples of N(0, std²) as float32. */
export function randn(rng: Rng, n: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal() * std;
  return out;
}

export interface Dims {
  B: number;
  H: number;
  Lq: number;
  Lk: number;
  d: number;
  Dv: number;
}

/** A tensor of any precision, for the references (library tensors are float32). */
export interface RefTensor {
  data: ArrayLike<number>;
  shape: readonly number[];
}

/** Reference inputs: float32 tensors, or double ones (a layer reference's own projections). */
export interface RefInputs {
  q: RefTensor;
  k: RefTensor;
  v: RefTensor;
}

export interface Inputs {
  q: Tensor;
  k: Tensor;
  v: Tensor;
}

export function makeInputs(
  seed: number,
  dims: Dims,
  std: { q?: number; k?: number; v?: number } = {},
): Inputs {
  const rng = new Rng(seed);
  const { B, H, Lq, Lk, d, Dv } = dims;
  return {
    q: { data: randn(rng, B * H * Lq * d, std.q ?? 1), shape: [B, H, Lq, d] },
    k: { data: randn(rng, B * H * Lk * d, std.k ?? 1), shape: [B, H, Lk, d] },
    v: { data: randn(rng, B * H * Lk * Dv, std.v ?? 1), shape: [B, H, Lk, Dv] },
  };
}

export function dimsOf(q: RefTensor, v: RefTensor): Dims {
  const [B, H, Lq, d] = q.shape;
  return { B, H, Lq, Lk: v.shape[2], d, Dv: v.shape[3] };
}

/** ||a - b||_F / ||b||_F (b is the reference); the absolute norm when b is zero. */
export function relFrobenius(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`relFrobenius: lengths ${a.length} and ${b.length} differ`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const e = a[i] - b[i];
    num += e * e;
    den += b[i] * b[i];
  }
  return den === 0 ? sqrt(num) : sqrt(num / den);
}

export function allFinite(a: ArrayLike<number>): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}

// ---------------------------------------------------------------------------
// Feature maps

export interface RefFeatureSpec {
  kernel: FeatureKernel;
  headDim: number;
  /** Rows of W (m); headDim when projection is null. */
  numFeatures: number;
  /** W, m x d row-major; null = no projection (generalized kernels: f applied to x_hat). */
  projection: Float32Array | null;
  /** Added to the generalized kernels' features. */
  kernelEpsilon: number;
  /** softmax-opt / softmax-dense: fixed parameter sets (a_k per set, Q per set or null = I). */
  adaptive?: { heads: number; coefficients: Float64Array; basis: Float64Array | null };
}

/** The reference spec of a library FeatureMap (its projection and fixed parameters). */
export function specOf(map: FeatureMap): RefFeatureSpec {
  return {
    kernel: map.kernel,
    headDim: map.headDim,
    numFeatures: map.numFeatures,
    projection: map.projection,
    kernelEpsilon: map.kernelEpsilon,
    adaptive: map.parameters ?? undefined,
  };
}

export function featureCount(spec: RefFeatureSpec): number {
  return spec.kernel === 'softmax-hyperbolic' || spec.kernel === 'trig' ? 2 * spec.numFeatures : spec.numFeatures;
}

/** log of the kernel's constant factor (m^-1/2, (2m)^-1/2 or 1); it cancels in attention. */
export function logScale(spec: RefFeatureSpec, set = 0): number {
  const m = spec.numFeatures;
  if (spec.kernel === 'softmax-opt' || spec.kernel === 'softmax-dense') {
    const d = spec.headDim;
    let logD = 0;
    for (let k = 0; k < d; k++) logD += 0.25 * log1p(-4 * spec.adaptive!.coefficients[set * d + k]);
    return -0.5 * log(m) + logD;
  }
  if (spec.kernel === 'softmax' || spec.kernel === 'trig') return -0.5 * log(m);
  if (spec.kernel === 'softmax-hyperbolic') return -0.5 * log(2 * m);
  return 0;
}

/** log(exp(a) + exp(b)) in double. */
function logAddExp(a: number, b: number): number {
  const hi = max(a, b);
  const lo = min(a, b);
  if (lo === -Infinity) return hi;
  return hi + log1p(exp(lo - hi));
}

export interface LogFeatures {
  /** rows x F: log|phi| without the constant scale (-Infinity for a zero feature). */
  z: Float64Array;
  /** rows x F signs (+1/-1), trig only. */
  sign: Int8Array | null;
  F: number;
}

/**
 * Log-magnitudes of phi for `rows` rows of x (starting at row `row0`), in double:
 * phi(x) = exp(logScale) * sign * exp(z), with x_hat = d^(-1/4) x and u = W x_hat.
 */
export function refLogFeatures(spec: RefFeatureSpec, x: ArrayLike<number>, rows: number, row0 = 0, set = 0): LogFeatures {
  const d = spec.headDim;
  const m = spec.numFeatures;
  const F = featureCount(spec);
  const W = spec.projection;
  const c = pow(d, -0.25);
  const z = new Float64Array(rows * F);
  const sign = spec.kernel === 'trig' ? new Int8Array(rows * F) : null;
  const eps = spec.kernelEpsilon;
  const logEps = log(eps); // -Infinity when eps = 0
  const xh = new Float64Array(d);
  const u = new Float64Array(m);
  const adaptive = spec.kernel === 'softmax-opt' || spec.kernel === 'softmax-dense';
  // Adaptive: z_f = sum_k a_k w_fk^2 + sum_k sqrt(1 - 4 a_k) w_fk (Q^T x_hat)_k - ||x_hat||^2 / 2.
  const a = adaptive ? spec.adaptive!.coefficients.subarray(set * d, (set + 1) * d) : null;
  const Qb = adaptive && spec.adaptive!.basis ? spec.adaptive!.basis.subarray(set * d * d, (set + 1) * d * d) : null;
  const bias = new Float64Array(m);
  if (a !== null) {
    for (let f = 0; f < m; f++) {
      for (let k = 0; k < d; k++) bias[f] += a[k] * W![f * d + k] ** 2;
    }
  }
  const t = new Float64Array(d);
  for (let r = 0; r < rows; r++) {
    const base = (row0 + r) * d;
    let n2 = 0;
    for (let i = 0; i < d; i++) {
      xh[i] = c * x[base + i];
      n2 += xh[i] * xh[i];
    }
    if (a !== null) {
      for (let k = 0; k < d; k++) {
        let s = 0;
        for (let i = 0; i < d; i++) s += (Qb === null ? (i === k ? 1 : 0) : Qb[i * d + k]) * xh[i];
        t[k] = s * Math.sqrt(1 - 4 * a[k]);
      }
    }
    for (let f = 0; f < m; f++) {
      if (a !== null) {
        let s = bias[f];
        for (let k = 0; k < d; k++) s += W![f * d + k] * t[k];
        u[f] = s;
      } else if (W === null) {
        u[f] = xh[f];
      } else {
        let s = 0;
        for (let i = 0; i < d; i++) s += W[f * d + i] * xh[i];
        u[f] = s;
      }
    }
    const zr = r * F;
    for (let f = 0; f < m; f++) {
      const uf = u[f];
      switch (spec.kernel) {
        case 'softmax':
        case 'softmax-opt':
        case 'softmax-dense':
          z[zr + f] = uf - n2 / 2;
          break;
        case 'softmax-hyperbolic':
          z[zr + f] = uf - n2 / 2;
          z[zr + m + f] = -uf - n2 / 2;
          break;
        case 'trig': {
          const s = sin(uf);
          const co = cos(uf);
          z[zr + f] = n2 / 2 + log(abs(s));
          z[zr + m + f] = n2 / 2 + log(abs(co));
          sign![zr + f] = s < 0 ? -1 : 1;
          sign![zr + m + f] = co < 0 ? -1 : 1;
          break;
        }
        case 'relu':
          z[zr + f] = log(max(uf, 0) + eps);
          break;
        case 'elu': // elu(u) + 1: u + 1 for u > 0, exp(u) otherwise
          z[zr + f] = uf > 0 ? log(uf + 1 + eps) : logAddExp(uf, logEps);
          break;
        case 'exp':
          z[zr + f] = logAddExp(uf, logEps);
          break;
        case 'abs':
          z[zr + f] = log(abs(uf) + eps);
          break;
        default:
          throw new Error(`unknown kernel ${spec.kernel as string}`);
      }
    }
  }
  return { z, sign, F };
}

/** phi(x) itself, rows x F, in double (may overflow to Infinity for huge inputs). */
export function refFeatures(spec: RefFeatureSpec, x: ArrayLike<number>, rows: number, set = 0): Float64Array {
  const { z, sign } = refLogFeatures(spec, x, rows, 0, set);
  const ls = logScale(spec, set);
  const out = new Float64Array(z.length);
  for (let i = 0; i < z.length; i++) out[i] = (sign ? sign[i] : 1) * exp(z[i] + ls);
  return out;
}

/** The FAVOR++ optimum A* for rho = mean ||x_hat + y_hat||^2 (double). */
export function refOptimalA(rho: number, d: number): number {
  return -rho / (d - 2 * rho + Math.sqrt((2 * rho + d) ** 2 + 8 * d * rho));
}

/**
 * P = mean over pairs of (x_hat + y_hat)(x_hat + y_hat)^T for one head (rows of q and k,
 * starting at rows q0, k0), in double; rho is its trace.
 */
export function refPairMoment(q: ArrayLike<number>, k: ArrayLike<number>, d: number, Lq: number, Lk: number, q0 = 0, k0 = 0): Float64Array {
  const c = pow(d, -0.5);
  const mq = new Float64Array(d);
  const mk = new Float64Array(d);
  const P = new Float64Array(d * d);
  for (let r = 0; r < Lq; r++) {
    for (let i = 0; i < d; i++) {
      mq[i] += q[(q0 + r) * d + i] / Lq;
      for (let j = 0; j < d; j++) P[i * d + j] += (c * q[(q0 + r) * d + i] * q[(q0 + r) * d + j]) / Lq;
    }
  }
  for (let r = 0; r < Lk; r++) {
    for (let i = 0; i < d; i++) {
      mk[i] += k[(k0 + r) * d + i] / Lk;
      for (let j = 0; j < d; j++) P[i * d + j] += (c * k[(k0 + r) * d + i] * k[(k0 + r) * d + j]) / Lk;
    }
  }
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) P[i * d + j] += c * (mq[i] * mk[j] + mk[i] * mq[j]);
  }
  return P;
}

// ---------------------------------------------------------------------------
// Attention

export interface RefMaskOptions {
  causal?: boolean;
  /** [B, Lk], nonzero = attend. */
  keyPadding?: Uint8Array | null;
}

/** Keys query i may attend: j <= i + (Lk - Lq) when causal, and not padded. */
function visibleKeys(dims: Dims, b: number, i: number, o: RefMaskOptions): number[] {
  const { Lq, Lk } = dims;
  const last = o.causal ? min(Lk - 1, i + Lk - Lq) : Lk - 1;
  const out: number[] = [];
  for (let j = 0; j <= last; j++) {
    if (!o.keyPadding || o.keyPadding[b * Lk + j] !== 0) out.push(j);
  }
  return out;
}

/** out row = sum_j w_j v_j / sum_j w_j (zeros when the sum is zero or there are no keys). */
function mix(out: Float64Array, outBase: number, v: ArrayLike<number>, vBase: number, Dv: number, keys: number[], w: Float64Array): void {
  let den = 0;
  for (let t = 0; t < keys.length; t++) den += w[t];
  if (keys.length === 0 || den === 0) return; // a row that attends nothing stays zero
  for (let t = 0; t < keys.length; t++) {
    const a = w[t] / den;
    const vb = vBase + keys[t] * Dv;
    for (let e = 0; e < Dv; e++) out[outBase + e] += a * v[vb + e];
  }
}

export interface RefFavorOptions extends RefMaskOptions {
  /** Library definition: added to every stabilized query and key feature (see refFavor). */
  epsilon?: number;
}

/**
 * FAVOR attention in double: out_i = sum_j K(q_i, k_j) v_j / sum_j K(q_i, k_j) with
 * K(q, k) = phi(q) . phi(k) over the visible, unpadded keys.
 *
 * epsilon = 0: exactly the math, evaluated in log space: each term is
 * sign * exp(zq_if + zk_jf - M_i) with M_i the row's largest log-term, so nothing
 * overflows whatever the input norms (constant factors cancel in the ratio).
 *
 * epsilon > 0 follows the library's definition (lib/attention.ts, favor.cc): for
 * query row i, c_f = max of zk_jf over the keys row i attends (all unpadded keys
 * when bidirectional, the visible prefix when causal), key features
 * exp(zk_jf - c_f) + eps, query features exp(zq_if + c_f - max_f(zq_if + c_f)) + eps;
 * padded keys have zero features.
 */
export function refFavor(
  inputs: RefInputs,
  spec: RefFeatureSpec,
  o: RefFavorOptions = {},
): Float64Array {
  const dims = dimsOf(inputs.q, inputs.v);
  const { B, H, Lq, Lk, Dv } = dims;
  const eps = o.epsilon ?? 0;
  const F = featureCount(spec);
  const out = new Float64Array(B * H * Lq * Dv);
  const visible: number[][][] = [];
  for (let b = 0; b < B; b++) {
    visible.push([]);
    for (let i = 0; i < Lq; i++) visible[b].push(visibleKeys(dims, b, i, o));
  }
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const p = b * H + h;
      const set = spec.adaptive && spec.adaptive.heads > 1 ? h : 0;
      const Q = refLogFeatures(spec, inputs.q.data, Lq, p * Lq, set);
      const K = refLogFeatures(spec, inputs.k.data, Lk, p * Lk, set);
      const vBase = p * Lk * Dv;
      if (eps === 0) {
        const qz = Q.z;
        const kz = K.z;
        const qs = Q.sign;
        const ks = K.sign;
        for (let i = 0; i < Lq; i++) {
          const keys = visible[b][i];
          const qi = i * F;
          let M = -Infinity;
          for (let t = 0; t < keys.length; t++) {
            const kj = keys[t] * F;
            for (let f = 0; f < F; f++) {
              const x = qz[qi + f] + kz[kj + f];
              if (x > M) M = x;
            }
          }
          if (M === -Infinity) continue;
          const w = new Float64Array(keys.length);
          for (let t = 0; t < keys.length; t++) {
            const kj = keys[t] * F;
            let s = 0;
            if (qs === null || ks === null) {
              for (let f = 0; f < F; f++) s += exp(qz[qi + f] + kz[kj + f] - M);
            } else {
              for (let f = 0; f < F; f++) s += qs[qi + f] * ks[kj + f] * exp(qz[qi + f] + kz[kj + f] - M);
            }
            w[t] = s;
          }
          mix(out, (p * Lq + i) * Dv, inputs.v.data, vBase, Dv, keys, w);
        }
      } else {
        if (spec.kernel === 'trig') throw new Error('epsilon is defined for positive kernels only');
        // The reference c_f of row i is the max over the keys row i attends
        // (all unpadded keys when bidirectional, its prefix when causal), so a
        // causal row never depends on keys it cannot see.
        const cf = new Float64Array(F);
        const qf = new Float64Array(F);
        for (let i = 0; i < Lq; i++) {
          const keys = visible[b][i];
          cf.fill(-Infinity);
          for (const j of keys) {
            for (let f = 0; f < F; f++) cf[f] = max(cf[f], K.z[j * F + f]);
          }
          let M = -Infinity;
          for (let f = 0; f < F; f++) M = max(M, Q.z[i * F + f] + cf[f]);
          for (let f = 0; f < F; f++) {
            const t = Q.z[i * F + f] + cf[f];
            qf[f] = (M === -Infinity || t === -Infinity ? 0 : exp(t - M)) + eps;
          }
          const w = new Float64Array(keys.length);
          keys.forEach((j, t) => {
            let s = 0;
            for (let f = 0; f < F; f++) {
              const kf = (cf[f] === -Infinity ? 0 : exp(K.z[j * F + f] - cf[f])) + eps;
              s += qf[f] * kf;
            }
            w[t] = s;
          });
          mix(out, (p * Lq + i) * Dv, inputs.v.data, vBase, Dv, keys, w);
        }
      }
    }
  }
  return out;
}

export interface RefSoftmaxOptions extends RefMaskOptions {
  /** Multiplies q.k; default 1/sqrt(d). */
  scale?: number;
}

/** Exact softmax attention in double (max-subtracted); rows with no visible key are zeros. */
export function refSoftmax(inputs: RefInputs, o: RefSoftmaxOptions = {}): Float64Array {
  const dims = dimsOf(inputs.q, inputs.v);
  const { B, H, Lq, Lk, d, Dv } = dims;
  const scale = o.scale ?? 1 / sqrt(d);
  const q = inputs.q.data;
  const k = inputs.k.data;
  const out = new Float64Array(B * H * Lq * Dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const p = b * H + h;
      for (let i = 0; i < Lq; i++) {
        const keys = visibleKeys(dims, b, i, o);
        const s = new Float64Array(keys.length);
        let M = -Infinity;
        keys.forEach((j, t) => {
          let dot = 0;
          for (let e = 0; e < d; e++) dot += q[(p * Lq + i) * d + e] * k[(p * Lk + j) * d + e];
          s[t] = dot * scale;
          M = max(M, s[t]);
        });
        for (let t = 0; t < s.length; t++) s[t] = exp(s[t] - M);
        mix(out, (p * Lq + i) * Dv, inputs.v.data, p * Lk * Dv, Dv, keys, s);
      }
    }
  }
  return out;
}

/**
 * Checks that every output row lies in the per-column [min, max] of the value rows
 * it averages (a convex combination). Returns the first violation, or null.
 */
export function convexViolation(
  out: ArrayLike<number>,
  inputs: RefInputs,
  o: RefMaskOptions,
  relTol = 1e-5,
): string | null {
  const dims = dimsOf(inputs.q, inputs.v);
  const { B, H, Lq, Lk, Dv } = dims;
  const v = inputs.v.data;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const p = b * H + h;
      for (let i = 0; i < Lq; i++) {
        const keys = visibleKeys(dims, b, i, o);
        for (let e = 0; e < Dv; e++) {
          const x = out[(p * Lq + i) * Dv + e];
          if (keys.length === 0) {
            if (x !== 0) return `row ${i} attends no key but has ${x}`;
            continue;
          }
          let lo = Infinity;
          let hi = -Infinity;
          for (const j of keys) {
            lo = min(lo, v[(p * Lk + j) * Dv + e]);
            hi = max(hi, v[(p * Lk + j) * Dv + e]);
          }
          const tol = relTol * max(hi - lo, abs(hi), abs(lo)) + 1e-30;
          if (!(x >= lo - tol && x <= hi + tol)) {
            return `b ${b} h ${h} row ${i} col ${e}: ${x} outside [${lo}, ${hi}]`;
          }
        }
      }
    }
  }
  return null;
}

/** A cache so that one reference serves every ISA path. */
export function memo<T>(): (key: string, make: () => T) => T {
  const cache = new Map<string, T>();
  return (key, make) => {
    let value = cache.get(key);
    if (value === undefined) {
      value = make();
      cache.set(key, value);
    }
    return value;
  };
}
