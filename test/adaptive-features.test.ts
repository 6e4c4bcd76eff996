/**
 * FAVOR++ (softmax-opt) and dense exponential features (softmax-dense): exactness
 * against the float64 reference on every ISA, parameter estimation, A = 0 equals
 * FAVOR+, stability at large norms, validation, and Monte-Carlo statistics.
 */
import { backendInfo, favorAttention, favorAttentionSync, FeatureMap, setBackend, type AdaptiveParameters, type FeatureKernel } from '../lib';
import {
  allFinite,
  makeInputs,
  refFavor,
  refOptimalA,
  refPairMoment,
  relFrobenius,
  Rng,
  specOf,
  type Inputs,
} from './helpers/reference';

const TOL = 1e-5;
const ISAS = backendInfo().available;
const ORIGINAL_ISA = backendInfo().isa;
const ADAPTIVE: FeatureKernel[] = ['softmax-opt', 'softmax-dense'];

afterAll(() => {
  setBackend({ isa: ORIGINAL_ISA });
});


/** Anisotropic inputs with a nonzero mean: x = mean + L z, L with a decaying spectrum. */
function anisotropic(seed: number, B: number, H: number, Lq: number, Lk: number, d: number, Dv: number, scale = 1): Inputs {
  const base = makeInputs(seed, { B, H, Lq, Lk, d, Dv });
  const rng = new Rng(seed + 7);
  const mix = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) mix[i * d + j] = (rng.normal() * scale) / Math.sqrt(d * (j + 1));
  const mean = Array.from({ length: d }, () => 0.3 * scale * rng.normal());
  const shape = (t: Float32Array) => {
    const out = new Float32Array(t.length);
    for (let r = 0; r < t.length / d; r++) {
      for (let i = 0; i < d; i++) {
        let s = mean[i];
        for (let j = 0; j < d; j++) s += mix[i * d + j] * t[r * d + j];
        out[r * d + i] = s;
      }
    }
    return out;
  };
  return {
    q: { data: shape(base.q.data), shape: base.q.shape },
    k: { data: shape(base.k.data), shape: base.k.shape },
    v: base.v,
  };
}

function bytesEqual(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe.each(ISAS)('adaptive features equal the float64 reference (isa %s)', (isa) => {
  beforeAll(() => {
    expect(setBackend({ isa }).isa).toBe(isa);
  });

  test.each(ADAPTIVE)('%s: calibrated per head, B=2, H=3, bidirectional and causal (several chunk sizes)', (kernel) => {
    const failures: string[] = [];
    const d = 17;
    const map = new FeatureMap({ headDim: d, numFeatures: 24, kernel, seed: 11 });
    for (const [Lq, Lk] of [[65, 65], [40, 65]]) {
      const inputs = anisotropic(200 + Lq, 2, 3, Lq, Lk, d, 5, 2);
      map.calibrate(inputs.q, inputs.k);
      const spec = specOf(map);
      const check = (label: string, out: Float32Array, ref: Float64Array) => {
        const err = relFrobenius(out, ref);
        if (!allFinite(out) || !(err <= TOL)) failures.push(`${label}: error ${err}`);
      };
      check(`Lq ${Lq} bidirectional`, favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: map }).data, refFavor(inputs, spec));
      const ref = refFavor(inputs, spec, { causal: true });
      for (const chunkSize of [1, 7, 64]) {
        const out = favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: map, causal: true, chunkSize }).data;
        check(`Lq ${Lq} causal chunk ${chunkSize}`, out, ref);
      }
      // One set shared by every head.
      const shared: AdaptiveParameters = {
        heads: 1,
        coefficients: map.parameters!.coefficients.slice(0, d),
        basis: map.parameters!.basis && map.parameters!.basis.slice(0, d * d),
      };
      map.setParameters(shared);
      check(`Lq ${Lq} shared set causal`, favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: map, causal: true, chunkSize: 16 }).data,
        refFavor(inputs, specOf(map), { causal: true }));
    }
    expect(failures).toEqual([]);
  });

  test.each(ADAPTIVE)('%s: parameters estimated per (batch, head) at call time equal calibrating on that head', (kernel) => {
    const d = 16;
    const inputs = anisotropic(31, 1, 2, 50, 70, d, 4, 1.5);
    const estimated = new FeatureMap({ headDim: d, numFeatures: 32, kernel, seed: 5 });
    const fixed = new FeatureMap({ headDim: d, numFeatures: 32, kernel, seed: 5 });
    fixed.calibrate(inputs.q, inputs.k);
    const a = favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: estimated }).data;
    const b = favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: fixed }).data;
    expect(bytesEqual(a, b)).toBe(true);
    expect(relFrobenius(a, refFavor(inputs, specOf(fixed)))).toBeLessThanOrEqual(TOL);
    expect(estimated.parameters).toBeNull();
  });
});

describe('per-call estimation', () => {
  /** Rows [b] of a [B, H, L, d] tensor, keeping only rows `keep` of each head. */
  function slice(t: { data: Float32Array; shape: readonly number[] }, b: number, keep: (j: number) => boolean) {
    const [, H, L, d] = t.shape;
    const rows: number[] = [];
    for (let h = 0; h < H; h++) for (let j = 0; j < L; j++) if (keep(j)) rows.push((b * H + h) * L + j);
    const out = new Float32Array(rows.length * d);
    rows.forEach((r, i) => out.set(t.data.subarray(r * d, (r + 1) * d), i * d));
    return { data: out, shape: [1, H, rows.length / H, d] };
  }

  test.each(ADAPTIVE)('%s: per (batch, head), padded keys left out of the statistics; async equals sync', async (kernel) => {
    const d = 8;
    const B = 2;
    const L = 40;
    const inputs = anisotropic(77, B, 2, L, L, d, 3, 1.5);
    const mask = new Uint8Array(B * L).fill(1);
    for (let j = 30; j < L; j++) mask[L + j] = 0; // batch 1: the last 10 keys are padding
    const estimated = new FeatureMap({ headDim: d, numFeatures: 16, kernel, seed: 4 });
    const o = { featureMap: estimated, keyPaddingMask: { data: mask, shape: [B, L] } };
    const out = favorAttentionSync(inputs.q, inputs.k, inputs.v, o).data;
    expect(bytesEqual((await favorAttention(inputs.q, inputs.k, inputs.v, o)).data, out)).toBe(true);
    for (let b = 0; b < B; b++) {
      const fixed = new FeatureMap({ headDim: d, numFeatures: 16, kernel, seed: 4 });
      fixed.calibrate(slice(inputs.q, b, () => true), slice(inputs.k, b, (j) => mask[b * L + j] !== 0));
      const mb = { data: mask.slice(b * L, (b + 1) * L), shape: [1, L] };
      const q = slice(inputs.q, b, () => true);
      const k = slice(inputs.k, b, () => true);
      const v = slice(inputs.v, b, () => true);
      const expected = favorAttentionSync(q, k, v, { featureMap: fixed, keyPaddingMask: mb }).data;
      const got = out.subarray(b * 2 * L * 3, (b + 1) * 2 * L * 3);
      expect(relFrobenius(got, refFavor({ q, k, v }, specOf(fixed), { keyPadding: mb.data }))).toBeLessThanOrEqual(TOL);
      expect(bytesEqual(Float32Array.from(got), expected)).toBe(true);
    }
  });
});

describe('parameter estimation', () => {
  test('softmax-opt: A* from rho = mean ||x_hat + y_hat||^2', () => {
    const d = 12;
    const inputs = anisotropic(3, 1, 2, 30, 45, d, 2, 2);
    const map = new FeatureMap({ headDim: d, numFeatures: 16, kernel: 'softmax-opt', seed: 1 });
    const p = map.calibrate(inputs.q, inputs.k);
    expect(p.heads).toBe(2);
    expect(p.basis).toBeNull();
    for (let h = 0; h < 2; h++) {
      const P = refPairMoment(inputs.q.data, inputs.k.data, d, 30, 45, h * 30, h * 45);
      let rho = 0;
      for (let i = 0; i < d; i++) rho += P[i * d + i];
      const A = refOptimalA(rho, d);
      expect(A).toBeLessThan(0);
      for (let i = 0; i < d; i++) expect(Math.abs(p.coefficients[h * d + i] - A)).toBeLessThanOrEqual(1e-9 * Math.abs(A));
    }
    expect(FeatureMap.optimalCoefficient(0, 64)).toBe(-0);
    expect(FeatureMap.optimalCoefficient(3, 8)).toBeCloseTo(refOptimalA(3, 8), 15);
  });

  test('softmax-dense: Q orthogonal, Q^T P Q diagonal, a_k the 1-d optimum of its eigenvalue', () => {
    for (const d of [1, 2, 5, 32, 128]) {
      const inputs = anisotropic(9 + d, 1, 1, 40, 60, d, 2, 2);
      const map = new FeatureMap({ headDim: d, numFeatures: 8, kernel: 'softmax-dense', seed: 1 });
      const p = map.calibrate(inputs.q, inputs.k);
      const Q = p.basis!;
      const P = refPairMoment(inputs.q.data, inputs.k.data, d, 40, 60);
      let pNorm = 0;
      for (const v of P) pNorm = Math.max(pNorm, Math.abs(v));
      for (let i = 0; i < d; i++) {
        for (let j = 0; j < d; j++) {
          let qq = 0;
          let qpq = 0;
          for (let r = 0; r < d; r++) {
            qq += Q[r * d + i] * Q[r * d + j];
            for (let s = 0; s < d; s++) qpq += Q[r * d + i] * P[r * d + s] * Q[s * d + j];
          }
          // Q comes from a double eigendecomposition; the second moments it decomposes are
          // float32 GEMM sums (blocks of 256 rows), hence float32-level agreement with P.
          expect(Math.abs(qq - (i === j ? 1 : 0))).toBeLessThanOrEqual(1e-12);
          if (i !== j) expect(Math.abs(qpq)).toBeLessThanOrEqual(1e-6 * pNorm);
          else expect(Math.abs(p.coefficients[i] - refOptimalA(qpq, 1))).toBeLessThanOrEqual(1e-6);
        }
      }
    }
  });
});

describe('A = 0 is FAVOR+', () => {
  test.each(ADAPTIVE)('%s with a = 0 (Q = I) gives the softmax kernel bit for bit', (kernel) => {
    const d = 16;
    const zeros = (heads: number): AdaptiveParameters => {
      const basis = new Float64Array(heads * d * d);
      for (let h = 0; h < heads; h++) for (let i = 0; i < d; i++) basis[h * d * d + i * d + i] = 1;
      return { heads, coefficients: new Float64Array(heads * d), basis: kernel === 'softmax-dense' ? basis : null };
    };
    const opt = new FeatureMap({ headDim: d, numFeatures: 40, kernel, seed: 3, parameters: zeros(1) });
    const plus = new FeatureMap({ headDim: d, numFeatures: 40, seed: 3 });
    const inputs = makeInputs(4, { B: 2, H: 2, Lq: 70, Lk: 70, d, Dv: 8 }, { q: 2, k: 2 });
    for (const causal of [false, true]) {
      const a = favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: opt, causal }).data;
      const b = favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: plus, causal }).data;
      expect(bytesEqual(a, b)).toBe(true);
    }
    expect(bytesEqual(opt.features(inputs.q).data, plus.features(inputs.q).data)).toBe(true);
  });
});

describe('stability at large norms', () => {
  test.each(ADAPTIVE)('%s: q, k ~ N(0, 8^2), d = 64 and 128: finite, estimated and calibrated', (kernel) => {
    for (const d of [64, 128]) {
      const inputs = makeInputs(d, { B: 1, H: 2, Lq: 96, Lk: 96, d, Dv: 8 }, { q: 8, k: 8 });
      const map = new FeatureMap({ headDim: d, numFeatures: 128, kernel, seed: 2 });
      expect(allFinite(favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: map }).data)).toBe(true);
      map.calibrate(inputs.q, inputs.k);
      for (const chunkSize of [1, 32]) {
        expect(allFinite(favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: map, causal: true, chunkSize }).data)).toBe(true);
      }
      expect(allFinite(map.features(inputs.q, { logSpace: true }).data)).toBe(true);
    }
  });
});

describe('validation', () => {
  const d = 4;
  const inputs = makeInputs(1, { B: 1, H: 2, Lq: 5, Lk: 5, d, Dv: 2 });
  test('causal attention needs fixed parameters', () => {
    const map = new FeatureMap({ headDim: d, kernel: 'softmax-opt', seed: 1 });
    expect(() => favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: map, causal: true })).toThrow(
      expect.objectContaining({ name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/causal attention with 'softmax-opt' needs fixed parameters/) }),
    );
    expect(() => map.features(inputs.q)).toThrow(/needs fixed parameters here/);
  });
  test('parameters are checked', () => {
    const soft = new FeatureMap({ headDim: d, seed: 1 });
    expect(() => soft.calibrate(inputs.q, inputs.k)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => soft.setParameters(null)).toThrow(/parameters are for the adaptive kernels/);
    const opt = new FeatureMap({ headDim: d, kernel: 'softmax-opt', seed: 1 });
    expect(() => opt.setParameters({ heads: 1, coefficients: new Float64Array([0, 0, 0.125, 0]), basis: null })).toThrow(
      expect.objectContaining({ name: 'RangeError', message: expect.stringMatching(/below 1\/8.*received 0.125 at index 2/) }),
    );
    expect(() => opt.setParameters({ heads: 1, coefficients: new Float64Array(3), basis: null })).toThrow(/expected heads \* headDim = 4 elements, received 3/);
    expect(() => opt.setParameters({ heads: 1, coefficients: [0, 0, 0, 0] as never, basis: null })).toThrow(
      expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }),
    );
    const dense = new FeatureMap({ headDim: d, kernel: 'softmax-dense', seed: 1 });
    const notOrthogonal = new Float64Array(16).fill(0.5);
    expect(() => dense.setParameters({ heads: 1, coefficients: new Float64Array(4), basis: notOrthogonal })).toThrow(/is not orthogonal/);
    opt.setParameters({ heads: 3, coefficients: new Float64Array(12), basis: null });
    expect(() => favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: opt })).toThrow(/its parameters have 3 sets; expected 1 or one per head \(2\)/);
    opt.setParameters(null);
    expect(opt.parameters).toBeNull();
    expect(() => opt.calibrate(inputs.q, makeInputs(1, { B: 1, H: 2, Lq: 5, Lk: 5, d: 3, Dv: 2 }).k)).toThrow(/last dimension headDim = 4/);
  });
});

// ---------------------------------------------------------------------------
// Monte-Carlo statistics of one feature: X_f = m phi_f(x) phi_f(y) over i.i.d. rows w_f.

/** log E[X^n] for fixed (a, Q) at x_hat, y_hat (s = Q^T (x_hat + y_hat)). */
function logMoment(n: number, a: number[], s: number[], x2: number, y2: number): number {
  let l = (-n * (x2 + y2)) / 2;
  for (let k = 0; k < a.length; k++) {
    l += (n / 2) * Math.log1p(-4 * a[k]); // D^(2n)
    l += -0.5 * Math.log1p(-4 * n * a[k]) + (n * n * (1 - 4 * a[k]) * s[k] * s[k]) / (2 * (1 - 4 * n * a[k]));
  }
  return l;
}

interface Problem {
  x: Float32Array; // raw rows (x_hat = d^(-1/4) x)
  y: Float32Array;
  a: number[];
  basis: Float64Array | null; // d x d, columns = directions
}

function project(p: Problem): { s: number[]; x2: number; y2: number; xy: number } {
  const d = p.x.length;
  const c = d ** -0.25;
  const s: number[] = [];
  let x2 = 0;
  let y2 = 0;
  let xy = 0;
  for (let i = 0; i < d; i++) {
    x2 += (c * p.x[i]) ** 2;
    y2 += (c * p.y[i]) ** 2;
    xy += c * c * p.x[i] * p.y[i];
  }
  for (let k = 0; k < d; k++) {
    let t = 0;
    for (let i = 0; i < d; i++) t += (p.basis ? p.basis[i * d + k] : i === k ? 1 : 0) * c * (p.x[i] + p.y[i]);
    s.push(t);
  }
  return { s, x2, y2, xy };
}

/** The m samples X_f of one i.i.d. map. */
function samples(kernel: FeatureKernel, p: Problem, m: number, seed: number): Float64Array {
  const d = p.x.length;
  const map = new FeatureMap({
    headDim: d,
    numFeatures: m,
    kernel,
    seed,
    orthogonal: false,
    parameters: { heads: 1, coefficients: Float64Array.from(p.a), basis: kernel === 'softmax-dense' ? p.basis : null },
  });
  const xy = new Float32Array(2 * d);
  xy.set(p.x, 0);
  xy.set(p.y, d);
  const phi = map.features({ data: xy, shape: [2, d] }, { logSpace: true }).data;
  const out = new Float64Array(m);
  for (let f = 0; f < m; f++) out[f] = m * Math.exp(phi[f] + phi[m + f]);
  return out;
}

function rotation(d: number, seed: number): Float64Array {
  // Gram-Schmidt of a Gaussian matrix: an orthogonal basis, columns = directions.
  const rng = new Rng(seed);
  const Q = new Float64Array(d * d);
  for (let i = 0; i < d * d; i++) Q[i] = rng.normal();
  for (let k = 0; k < d; k++) {
    for (let j = 0; j < k; j++) {
      let dot = 0;
      for (let i = 0; i < d; i++) dot += Q[i * d + k] * Q[i * d + j];
      for (let i = 0; i < d; i++) Q[i * d + k] -= dot * Q[i * d + j];
    }
    let n = 0;
    for (let i = 0; i < d; i++) n += Q[i * d + k] ** 2;
    for (let i = 0; i < d; i++) Q[i * d + k] /= Math.sqrt(n);
  }
  return Q;
}

function problems(): Array<{ kernel: FeatureKernel; label: string; p: Problem }> {
  const d = 4;
  const x = Float32Array.from([0.5, -0.3, 0.4, 0.2]);
  const y = Float32Array.from([0.3, 0.2, 0.5, -0.4]);
  const { s } = project({ x, y, a: [0, 0, 0, 0], basis: null });
  const rho = s.reduce((t, v) => t + v * v, 0);
  const A = refOptimalA(rho, d);
  const Q = rotation(d, 77);
  return [
    { kernel: 'softmax-opt', label: 'A = 0', p: { x, y, a: [0, 0, 0, 0], basis: null } },
    { kernel: 'softmax-opt', label: 'A = A*', p: { x, y, a: [A, A, A, A], basis: null } },
    { kernel: 'softmax-opt', label: 'A = -0.2', p: { x, y, a: [-0.2, -0.2, -0.2, -0.2], basis: null } },
    { kernel: 'softmax-dense', label: 'a = (-0.3, -0.1, 0, 0.05), rotated', p: { x, y, a: [-0.3, -0.1, 0, 0.05], basis: Q } },
  ];
}

const SEED_RANGES = Array.from({ length: 10 }, (_, i) => 1000 * (i + 1));
const M = 20000;

describe('Monte-Carlo statistics of the adaptive features (10 seed ranges)', () => {
  test.each(problems())('$kernel $label: unbiased for exp(x_hat . y_hat)', ({ kernel, p }) => {
    const { s, x2, y2, xy } = project(p);
    const variance = Math.exp(logMoment(2, p.a, s, x2, y2)) - Math.exp(2 * xy);
    const failures: string[] = [];
    for (const seed of SEED_RANGES) {
      const X = samples(kernel, p, M, seed);
      const mean = X.reduce((t, v) => t + v, 0) / M;
      // 5 standard errors of the mean of M i.i.d. samples.
      if (!(Math.abs(mean - Math.exp(xy)) <= 5 * Math.sqrt(variance / M))) failures.push(`seed ${seed}: mean ${mean} vs ${Math.exp(xy)}`);
    }
    expect(failures).toEqual([]);
  });

  test.each(problems())('$kernel $label: variance of one feature matches the closed form', ({ kernel, p }) => {
    const { s, x2, y2, xy } = project(p);
    const mu = Math.exp(xy);
    // Check the closed form of the issue for the OPRF case: exp(2xy)[(1-4A)^d (1-8A)^(-d/2) exp(rho/(1-8A)) - 1].
    const variance = Math.exp(logMoment(2, p.a, s, x2, y2)) - mu * mu;
    if (kernel === 'softmax-opt') {
      const A = p.a[0];
      const d = p.a.length;
      const rho = s.reduce((t, v) => t + v * v, 0);
      const closed = Math.exp(2 * xy) * ((1 - 4 * A) ** d * (1 - 8 * A) ** (-d / 2) * Math.exp(rho / (1 - 8 * A)) - 1);
      expect(Math.abs(variance - closed)).toBeLessThanOrEqual(1e-12 * closed);
    }
    // Central fourth moment from raw moments, for the standard error of the sample variance.
    const r = [1, 2, 3, 4].map((n) => Math.exp(logMoment(n, p.a, s, x2, y2)));
    const mu4 = r[3] - 4 * mu * r[2] + 6 * mu * mu * r[1] - 3 * mu ** 4;
    const se = Math.sqrt((mu4 - variance * variance) / M);
    const failures: string[] = [];
    for (const seed of SEED_RANGES) {
      const X = samples(kernel, p, M, seed);
      const mean = X.reduce((t, v) => t + v, 0) / M;
      const sampleVar = X.reduce((t, v) => t + (v - mean) ** 2, 0) / (M - 1);
      if (!(Math.abs(sampleVar - variance) <= 5 * se)) failures.push(`seed ${seed}: variance ${sampleVar} vs ${variance} (se ${se})`);
    }
    expect(failures).toEqual([]);
  });

  test('the optimal A lowers the measured variance against A = 0 (on average over seeds)', () => {
    const [plus, opt] = problems();
    let vPlus = 0;
    let vOpt = 0;
    for (const seed of SEED_RANGES) {
      for (const [prob, add] of [[plus, (v: number) => (vPlus += v)], [opt, (v: number) => (vOpt += v)]] as const) {
        const X = samples(prob.kernel, prob.p, M, seed);
        const mean = X.reduce((t, v) => t + v, 0) / M;
        add(X.reduce((t, v) => t + (v - mean) ** 2, 0) / (M - 1));
      }
    }
    expect(vOpt).toBeLessThan(vPlus);
  });
});
