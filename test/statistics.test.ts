/**
 * Seeded statistical tests of the random features: orthogonality of the blocks,
 * chi-distributed norms, isotropy (the sign fix), unbiasedness, the paper's
 * closed-form MSE, and the orderings the paper claims (more features, orthogonal
 * features and positive features all lower the error).
 *
 * Every test uses fixed seeds, so it is deterministic. Margins are a few standard
 * errors (estimated from the same samples) and were checked offline against many
 * other seed ranges: they are not tuned to the seeds below.
 */
import { FeatureMap, favorAttentionSync, softmaxAttentionSync, type FeatureKernel } from '../lib';
import { sampleProjectionForTests } from '../lib/feature-map';

const SEED_BASE = 0;

interface Moments {
  mean: number;
  sd: number;
  se: number;
}

function moments(values: ArrayLike<number>): Moments {
  const n = values.length;
  let s = 0;
  for (let i = 0; i < n; i++) s += values[i];
  const mean = s / n;
  let q = 0;
  for (let i = 0; i < n; i++) q += (values[i] - mean) ** 2;
  const sd = Math.sqrt(q / (n - 1));
  return { mean, sd, se: sd / Math.sqrt(n) };
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Small seeded generator for test data (Marsaglia's xorshift128 + Box-Muller), independent of the library's. */
class DataRng {
  private x: number;
  private y = 362436069;
  private z = 521288629;
  private w = 88675123;

  constructor(seed: number) {
    this.x = (Math.imul(seed + 1, 0x9e3779b1) ^ 0x2545f491) >>> 0 || 1;
    for (let i = 0; i < 16; i++) this.nextU32(); // let the seed diffuse into all four words
  }

  nextU32(): number {
    const t = this.x ^ (this.x << 11);
    this.x = this.y;
    this.y = this.z;
    this.z = this.w;
    this.w = (this.w ^ (this.w >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    return this.w;
  }

  normal(): number {
    const u = (this.nextU32() + 0.5) / 2 ** 32;
    const v = (this.nextU32() + 0.5) / 2 ** 32;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  normals(n: number, sd: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = sd * this.normal();
    return out;
  }
}

/** A fixed direction in R^d (deterministic, spread over all coordinates) scaled to `norm`. */
function direction(d: number, id: number, norm: number): number[] {
  const rng = new DataRng(1000 + id);
  const v = Array.from({ length: d }, () => rng.normal());
  const n = Math.hypot(...v);
  return v.map((x) => (x * norm) / n);
}

/** A pair (x_hat, y_hat) in normalized space, i.e. after the d^(-1/4) data normalizer. */
interface Pair {
  xh: number[];
  yh: number[];
}

function pairInfo(p: Pair) {
  const sm = Math.exp(dot(p.xh, p.yh)); // SM(x_hat, y_hat) = exp(x.y / sqrt d)
  const s2 = p.xh.reduce((acc, v, i) => acc + (v + p.yh[i]) ** 2, 0); // |x_hat + y_hat|^2
  return { sm, s2 };
}

/** Raw rows [x1, y1, x2, y2, ...] to feed FeatureMap.features (which applies the normalizer itself). */
function rawRows(pairs: Pair[], d: number): Float32Array {
  const c = d ** -0.25;
  const out = new Float32Array(2 * pairs.length * d);
  pairs.forEach((p, k) => {
    for (let i = 0; i < d; i++) {
      out[2 * k * d + i] = p.xh[i] / c;
      out[(2 * k + 1) * d + i] = p.yh[i] / c;
    }
  });
  return out;
}

/** phi(x) . phi(y) for every pair, with one feature map. */
function estimates(map: FeatureMap, rows: Float32Array, numPairs: number): number[] {
  const f = map.features({ data: rows, shape: [2 * numPairs, map.headDim] }).data;
  const n = map.featureCount;
  const out: number[] = [];
  for (let k = 0; k < numPairs; k++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += f[2 * k * n + j] * f[(2 * k + 1) * n + j];
    out.push(s);
  }
  return out;
}

/** Squared errors of phi(x).phi(y) against exp(x_hat.y_hat), one array per pair, over `count` seeds. */
function squaredErrors(
  pairs: Pair[],
  d: number,
  options: { numFeatures: number; orthogonal?: boolean; kernel?: FeatureKernel },
  seed0: number,
  count: number,
): Float64Array[] {
  const rows = rawRows(pairs, d);
  const sms = pairs.map((p) => pairInfo(p).sm);
  const out = pairs.map(() => new Float64Array(count));
  for (let s = 0; s < count; s++) {
    const map = new FeatureMap({ headDim: d, ...options, seed: seed0 + s });
    estimates(map, rows, pairs.length).forEach((e, k) => {
      out[k][s] = (e - sms[k]) ** 2;
    });
  }
  return out;
}

function relativeFrobenius(approx: Float32Array, exact: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < exact.length; i++) {
    num += (approx[i] - exact[i]) ** 2;
    den += exact[i] ** 2;
  }
  return Math.sqrt(num / den);
}

function rowNorms2(w: Float32Array, d: number): number[] {
  const m = w.length / d;
  return Array.from({ length: m }, (_, r) => {
    let n = 0;
    for (let i = 0; i < d; i++) n += w[r * d + i] ** 2;
    return n;
  });
}

describe('orthogonal projections', () => {
  // m not a multiple of d (partial last block) and m < d included.
  const cases: [number, number][] = [
    [16, 16],
    [16, 40],
    [16, 5],
    [7, 30],
    [64, 266],
  ];

  test.each(cases)('each d x d block is orthogonal: W_b W_b^T = diag(norms^2), d = %p, m = %p', (d, m) => {
    for (const normScaling of ['sqrt', 'chi'] as const) {
      for (let s = 0; s < 3; s++) {
        const w = new FeatureMap({ headDim: d, numFeatures: m, normScaling, seed: SEED_BASE + 17 * s }).projection!;
        expect(w.length).toBe(m * d);
        const n2 = rowNorms2(w, d);
        let worst = 0;
        for (let b = 0; b * d < m; b++) {
          const end = Math.min(m, (b + 1) * d);
          for (let i = b * d; i < end; i++) {
            for (let j = b * d; j < i; j++) {
              // Cosine between two rows of one block: float32 rounding alone gives ~1e-7.
              const cos = dot(w.subarray(i * d, (i + 1) * d), w.subarray(j * d, (j + 1) * d)) / Math.sqrt(n2[i] * n2[j]);
              worst = Math.max(worst, Math.abs(cos));
            }
          }
        }
        expect(worst).toBeLessThan(1e-5);
        if (normScaling === 'sqrt') {
          for (const n of n2) expect(Math.abs(n - d)).toBeLessThan(1e-5 * d);
        }
        // Blocks are independent, so rows of different blocks are not orthogonal.
        if (m >= 2 * d) {
          let cross = 0;
          for (let i = 0; i < d; i++) {
            for (let j = d; j < 2 * d; j++) {
              const cos = dot(w.subarray(i * d, (i + 1) * d), w.subarray(j * d, (j + 1) * d)) / Math.sqrt(n2[i] * n2[j]);
              cross = Math.max(cross, Math.abs(cos));
            }
          }
          // the largest of d^2 cosines between independent uniform directions is ~2.5/sqrt(d) or more
          expect(cross).toBeGreaterThan(0.5 / Math.sqrt(d));
        }
      }
    }
  });

  test('chi norms: |w|^2 of orthogonal chi rows has the mean d and variance 2d of a chi-square(d)', () => {
    for (const d of [16, 3]) {
      const m = 4 * d;
      const seeds = 4000 / d; // 16000 rows in all
      const n2: number[] = [];
      for (let s = 0; s < seeds; s++) {
        n2.push(...rowNorms2(new FeatureMap({ headDim: d, numFeatures: m, seed: SEED_BASE + s }).projection!, d));
      }
      const n = n2.length;
      const { mean, sd } = moments(n2);
      // SE of the mean: sqrt(2d / n). SE of the sample variance: sqrt((mu4 - sigma^4) / n),
      // with mu4 = 12 d (d + 4) for a chi-square(d).
      expect(Math.abs(mean - d)).toBeLessThan(4.5 * Math.sqrt((2 * d) / n));
      expect(Math.abs(sd * sd - 2 * d)).toBeLessThan(4.5 * Math.sqrt((12 * d * (d + 4) - 4 * d * d) / n));
    }
  });

  test('sqrt scaling gives every row the norm sqrt(d), chi does not', () => {
    const d = 16;
    const sq = rowNorms2(new FeatureMap({ headDim: d, numFeatures: 64, normScaling: 'sqrt', seed: SEED_BASE }).projection!, d);
    const chi = rowNorms2(new FeatureMap({ headDim: d, numFeatures: 64, normScaling: 'chi', seed: SEED_BASE }).projection!, d);
    expect(Math.max(...sq.map((n) => Math.abs(n - d)))).toBeLessThan(1e-4);
    expect(moments(chi).sd).toBeGreaterThan(2); // chi-square(16) has sd sqrt(32) ~ 5.7
  });
});

describe('isotropy and the sign fix', () => {
  const d = 16;
  const seeds = 300;

  /** Mean over the rows of a block of W[k, k] / |W[k]|: 0 on average for Haar-distributed blocks. */
  function diagonalStatistic(signFix: boolean): Moments {
    const stats: number[] = [];
    for (let s = 0; s < seeds; s++) {
      const w = sampleProjectionForTests({ numFeatures: d, headDim: d, seed: SEED_BASE + s, normScaling: 'sqrt', signFix });
      let t = 0;
      for (let k = 0; k < d; k++) t += w[k * d + k] / Math.sqrt(d);
      stats.push(t / d);
    }
    return moments(stats);
  }

  test('normalized block diagonals average to 0 with the sign fix, and clearly not without it', () => {
    const fixed = diagonalStatistic(true);
    const unfixed = diagonalStatistic(false);
    // Haar: each normalized entry has mean 0, sd 1/sqrt(d); 4 SE.
    expect(Math.abs(fixed.mean)).toBeLessThan(4 * fixed.se);
    // Householder without the fix makes every diagonal entry lean negative (~ -0.16 at d = 16,
    // about 60 SE); demand 15 SE and a visible size so the statistic is shown to catch the bug.
    expect(unfixed.mean).toBeLessThan(-15 * unfixed.se);
    expect(unfixed.mean).toBeLessThan(-0.08);
  });

  test('without the sign fix the softmax estimator is biased; with it, it is not', () => {
    // x_hat = y_hat along (1, ..., 1): every row's diagonal bias pushes w.(x+y) down.
    const m = 16;
    const count = 1000;
    const xh = new Array(d).fill(0.6 / Math.sqrt(d));
    const rows = rawRows([{ xh, yh: xh }], d);
    const sm = Math.exp(0.36);
    const run = (signFix: boolean) => {
      const e: number[] = [];
      for (let s = 0; s < count; s++) {
        // Float32Array.from: the addon's arrays come from another realm under jest (see fromProjection's instanceof)
        const w = Float32Array.from(sampleProjectionForTests({ numFeatures: m, headDim: d, seed: SEED_BASE + s, signFix }));
        e.push(estimates(FeatureMap.fromProjection(w, { headDim: d, numFeatures: m }), rows, 1)[0]);
      }
      return moments(e);
    };
    const fixed = run(true);
    const unfixed = run(false);
    expect(Math.abs(fixed.mean - sm)).toBeLessThan(4 * fixed.se);
    // observed about -18% (16 to 22 SE) over many seed ranges
    expect(unfixed.mean - sm).toBeLessThan(-8 * unfixed.se);
    expect((unfixed.mean - sm) / sm).toBeLessThan(-0.08);
  });
});

describe('feature-level estimators', () => {
  const d = 16;
  // |x_hat + y_hat|^2 from ~0.5 to ~1.4; includes x = y and a negative dot product.
  const pairs: Pair[] = [
    { xh: direction(d, 1, 0.7), yh: direction(d, 2, 0.7) },
    { xh: direction(d, 3, 0.9), yh: direction(d, 4, 0.5).map((v, i) => v - 0.3 * direction(d, 3, 1)[i]) },
    { xh: direction(d, 5, 0.6), yh: direction(d, 5, 0.6) },
  ];

  test.each(['softmax', 'softmax-hyperbolic', 'trig'] as FeatureKernel[])(
    'phi(x).phi(y) is unbiased for exp(x.y / sqrt d): kernel %s',
    (kernel) => {
      const count = 1500;
      const rows = rawRows(pairs, d);
      const e = pairs.map(() => new Float64Array(count));
      for (let s = 0; s < count; s++) {
        const map = new FeatureMap({ headDim: d, numFeatures: 64, kernel, seed: SEED_BASE + s });
        estimates(map, rows, pairs.length).forEach((v, k) => (e[k][s] = v));
      }
      pairs.forEach((p, k) => {
        const { sm } = pairInfo(p);
        const { mean, se } = moments(e[k]);
        // 4.5 SE, plus a float32 floor: trig at x = y is exact (sin^2 + cos^2), SE ~ 0.
        expect(Math.abs(mean - sm)).toBeLessThan(4.5 * se + 1e-5 * sm);
      });
    },
  );

  test("closed-form MSE of i.i.d. positive features: (1/m) e^{|x+y|^2} SM^2 (1 - e^{-|x+y|^2})", () => {
    const m = 16;
    const count = 8000;
    const closed: Pair[] = [
      { xh: direction(d, 11, 0.5), yh: direction(d, 12, 0.5) },
      { xh: direction(d, 13, 0.6), yh: direction(d, 14, 0.4) },
      { xh: direction(d, 15, 0.45), yh: direction(d, 15, 0.45) },
    ];
    const sq = squaredErrors(closed, d, { numFeatures: m, orthogonal: false }, SEED_BASE, count);
    closed.forEach((p, k) => {
      const { sm, s2 } = pairInfo(p);
      const theory = (Math.exp(s2) * sm * sm * (1 - Math.exp(-s2))) / m;
      const { mean, se } = moments(sq[k]);
      // squared errors are skewed; |x+y|^2 <= 0.81 keeps their tail light enough for 4 SE.
      expect(Math.abs(mean - theory)).toBeLessThan(4 * se);
      expect(Math.abs(mean / theory - 1)).toBeLessThan(0.15);
    });
  });

  test('MSE falls as m grows: m = 16, 64, 256', () => {
    const count = 400;
    const mses = [16, 64, 256].map((m) =>
      squaredErrors(pairs, d, { numFeatures: m }, SEED_BASE + 10 * m, count).map((e) => moments(e).mean),
    );
    pairs.forEach((_, k) => {
      // MSE ~ 1/m: each 4x in m should cut it ~4x; demand 2x.
      expect(mses[1][k]).toBeLessThan(0.5 * mses[0][k]);
      expect(mses[2][k]).toBeLessThan(0.5 * mses[1][k]);
    });
  });

  test('orthogonal features have lower MSE than i.i.d. features at m = d', () => {
    const count = 6000;
    // six pairs, |x_hat + y_hat|^2 from 0.59 to 0.82
    const ortho: Pair[] = [0, 1, 2, 3, 4, 5].map((j) => ({ xh: direction(d, 20 + j, 0.6), yh: direction(d, 30 + j, 0.6) }));
    const theory = ortho.map((p) => {
      const { sm, s2 } = pairInfo(p);
      return (Math.exp(s2) * sm * sm * (1 - Math.exp(-s2))) / d;
    });
    // Per seed: the squared error of every pair relative to the i.i.d. closed form, averaged.
    const pooled = (sq: Float64Array[]) =>
      Float64Array.from({ length: count }, (_, s) => sq.reduce((acc, e, k) => acc + e[s] / theory[k], 0) / sq.length);
    const iid = moments(pooled(squaredErrors(ortho, d, { numFeatures: d, orthogonal: false }, SEED_BASE, count)));
    const orth = moments(pooled(squaredErrors(ortho, d, { numFeatures: d, orthogonal: true }, SEED_BASE + count, count)));
    expect(Math.abs(iid.mean - 1)).toBeLessThan(4 * iid.se); // the i.i.d. run matches the closed form
    // observed over 6 seed ranges: ratio 0.80-0.82, difference 12-15 SE
    expect(iid.mean - orth.mean).toBeGreaterThan(6 * Math.hypot(iid.se, orth.se));
    expect(orth.mean / iid.mean).toBeLessThan(0.92);
  });

  test('positive features beat trig where the kernel value is small (x.y strongly negative)', () => {
    const m = 64;
    const count = 400;
    // x_hat.y_hat from -1.08 to -1.32 (SM 0.27-0.34) while e^{|x|^2 + |y|^2} is large: trig's
    // variance grows with that, the positive estimator's only with |x_hat + y_hat|^2 <= 0.18.
    const u = direction(d, 40, 1);
    const neg: Pair[] = [0, 1, 2].map((j) => {
      const v0 = direction(d, 41 + j, 1);
      const along = dot(v0, u);
      const v = v0.map((x, i) => x - along * u[i]); // orthogonal to u
      const vn = Math.hypot(...v);
      return { xh: u.map((x) => 1.2 * x), yh: u.map((x, i) => -(0.9 + 0.1 * j) * x + (0.3 * v[i]) / vn) };
    });
    const pos = squaredErrors(neg, d, { numFeatures: m, kernel: 'softmax' }, SEED_BASE, count);
    const trig = squaredErrors(neg, d, { numFeatures: m, kernel: 'trig' }, SEED_BASE, count);
    neg.forEach((p, k) => {
      const { sm } = pairInfo(p);
      expect(sm).toBeLessThan(0.35);
      const relPos = moments(pos[k]).mean / (sm * sm);
      const relTrig = moments(trig[k]).mean / (sm * sm);
      // expected ratio is in the hundreds; demand 20x
      expect(relTrig).toBeGreaterThan(20 * relPos);
    });
  });
});

describe('attention-level error', () => {
  test('relative Frobenius error of favorAttention vs softmax attention falls with m (L = 256, d = 32)', () => {
    const L = 256;
    const d = 32;
    const H = 2;
    const ms = [32, 64, 128, 256, 512];
    // One feature map serves all heads of a call, so the feature noise averages over seeds
    // only: 48 of them keep every doubling of m visibly better (max step ratio 0.83 over 40
    // seed ranges tried, against the 0.92 demanded below).
    const seeds = 48;
    const errors = ms.map(() => [] as number[]);
    for (let s = 0; s < seeds; s++) {
      const rng = new DataRng(SEED_BASE + s);
      const shape = [1, H, L, d];
      const q = { data: rng.normals(H * L * d, 0.5), shape };
      const k = { data: rng.normals(H * L * d, 0.5), shape };
      const v = { data: rng.normals(H * L * d, 1), shape };
      const exact = softmaxAttentionSync(q, k, v).data;
      ms.forEach((m, j) => {
        const featureMap = new FeatureMap({ headDim: d, numFeatures: m, seed: SEED_BASE + 1000 * s + m });
        errors[j].push(relativeFrobenius(favorAttentionSync(q, k, v, { featureMap }).data, exact));
      });
    }
    const mean = errors.map((e) => moments(e).mean);
    for (let j = 1; j < ms.length; j++) {
      // each doubling of m cuts the error to ~0.75x (observed 0.68-0.83); demand 0.92x
      expect(mean[j]).toBeLessThan(0.92 * mean[j - 1]);
    }
    // 16x the features: observed 0.33-0.36x the error (1/sqrt(16) = 0.25 would be the ideal rate)
    expect(mean[ms.length - 1]).toBeLessThan(0.45 * mean[0]);
  });
});
