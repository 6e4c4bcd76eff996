/**
 * The seeded generator behind every projection, checked against an independent
 * TypeScript model written from the published algorithm definitions and the
 * contract documented in native/core/rng.h and native/core/orthogonal.h:
 *
 *   state     = four successive SplitMix64 outputs from the seed
 *   next()    = xoshiro256** (Blackman & Vigna)
 *   uniform() = (next() >> 11) * 2^-53
 *   normal()  = Marsaglia's polar method on 2*uniform()-1 pairs (first value, then the spare)
 *
 * With orthogonal: false and normScaling 'chi', W is the first m*d normals in
 * row-major order, rounded to float32 once.
 */
import { backendInfo, FeatureMap, setBackend, type Isa } from '../lib';
import { sampleProjectionForTests } from '../lib/feature-map';

const MASK64 = (1n << 64n) - 1n;

function rotl64(x: bigint, k: bigint): bigint {
  return ((x << k) | (x >> (64n - k))) & MASK64;
}

/** SplitMix64 (Steele, Lea & Flood; Vigna's constants): a counter stepped by the golden gamma, then mixed. */
class SplitMix64 {
  private counter: bigint;

  constructor(seed: bigint) {
    this.counter = seed & MASK64;
  }

  next(): bigint {
    this.counter = (this.counter + 0x9e3779b97f4a7c15n) & MASK64;
    let z = this.counter;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    return z ^ (z >> 31n);
  }
}

/** xoshiro256**: output = rotl(s1 * 5, 7) * 9, then the xor/shift/rotate state transition. */
class Xoshiro256StarStar {
  readonly s: bigint[];

  constructor(state: readonly bigint[]) {
    this.s = state.map((w) => w & MASK64);
  }

  static seeded(seed: bigint): Xoshiro256StarStar {
    const mixer = new SplitMix64(seed);
    return new Xoshiro256StarStar([mixer.next(), mixer.next(), mixer.next(), mixer.next()]);
  }

  next(): bigint {
    const [s0, s1, s2, s3] = this.s;
    const out = (rotl64((s1 * 5n) & MASK64, 7n) * 9n) & MASK64;
    const t = (s1 << 17n) & MASK64;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    const n1 = s1 ^ n2;
    const n0 = s0 ^ n3;
    this.s[0] = n0;
    this.s[1] = n1;
    this.s[2] = n2 ^ t;
    this.s[3] = rotl64(n3, 45n);
    return out;
  }
}

/** The documented mappings on top of the bit generator; Math.log stands in for portable_log. */
class ModelRng {
  private readonly bits: Xoshiro256StarStar;
  private spare: number | null = null;

  constructor(seed: bigint) {
    this.bits = Xoshiro256StarStar.seeded(seed);
  }

  uniform(): number {
    // The top 53 bits as an integer (exact in a double), times 2^-53: [0, 1).
    return Number(this.bits.next() >> 11n) / 2 ** 53;
  }

  normal(): number {
    if (this.spare !== null) {
      const value = this.spare;
      this.spare = null;
      return value;
    }
    for (;;) {
      const a = 2 * this.uniform() - 1;
      const b = 2 * this.uniform() - 1;
      const r2 = a * a + b * b;
      if (r2 === 0 || r2 >= 1) continue; // outside the open unit disc: draw a new pair
      const f = Math.sqrt((-2 * Math.log(r2)) / r2);
      this.spare = b * f;
      return a * f;
    }
  }
}

/**
 * A chi norm with d degrees of freedom as orthogonal.h documents it: sqrt(2 G),
 * G ~ Gamma(d/2, 1) by Marsaglia and Tsang's squeeze-and-reject method.
 */
function modelChi(rng: ModelRng, d: number): number {
  if (d === 1) return Math.abs(rng.normal());
  const shape = d / 2 - 1 / 3;
  const c = 1 / Math.sqrt(9 * shape);
  for (;;) {
    const x = rng.normal();
    let v = 1 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    const u = rng.uniform();
    if (u < 1 - 0.0331 * x ** 4 || (u > 0 && Math.log(u) < 0.5 * x * x + shape * (1 - v + Math.log(v)))) {
      return Math.sqrt(2 * shape * v);
    }
  }
}

/** Distance in float32 ulps between two float32 values of the same sign (or both tiny). */
function ulpDistance(a: number, b: number): number {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat32(0, a);
  view.setFloat32(4, b);
  const ia = view.getInt32(0);
  const ib = view.getInt32(4);
  // Map the sign-magnitude bit patterns onto a monotone integer line.
  const key = (i: number) => (i < 0 ? -(i & 0x7fffffff) : i);
  return Math.abs(key(ia) - key(ib));
}

const SEEDS = [0, 1, Number.MAX_SAFE_INTEGER];

describe('reference model of the generator', () => {
  test('SplitMix64 reproduces its published outputs for seed 0', () => {
    const mixer = new SplitMix64(0n);
    expect([mixer.next(), mixer.next(), mixer.next(), mixer.next()]).toEqual([
      0xe220a8397b1dcdafn,
      0x6e789e6aa1b965f4n,
      0x06c45d188009454fn,
      0xf88bb8a8724c81ecn,
    ]);
  });

  test('xoshiro256** reproduces the reference outputs from state {1, 2, 3, 4}', () => {
    // The vector published with the reference C implementation's ports (e.g. rand_xoshiro).
    const rng = new Xoshiro256StarStar([1n, 2n, 3n, 4n]);
    const got = Array.from({ length: 10 }, () => rng.next());
    expect(got).toEqual([
      11520n,
      0n,
      1509978240n,
      1215971899390074240n,
      1216172134540287360n,
      607988272756665600n,
      16172922978634559625n,
      8476171486693032832n,
      10595114339597558777n,
      2904607092377533576n,
    ]);
  });

  test('the model normal() is standard normal (sanity check of the model itself)', () => {
    const rng = new ModelRng(12345n);
    const n = 20000;
    let s1 = 0;
    let s2 = 0;
    for (let i = 0; i < n; i++) {
      const z = rng.normal();
      s1 += z;
      s2 += z * z;
    }
    // mean ~ N(0, 1/n), mean square ~ N(1, 2/n): 5 standard errors.
    expect(Math.abs(s1 / n)).toBeLessThan(5 / Math.sqrt(n));
    expect(Math.abs(s2 / n - 1)).toBeLessThan(5 * Math.sqrt(2 / n));
  });
});

describe('library projection against the model', () => {
  const m = 48;
  const d = 40; // 1920 normals: exercises many rejections and the spare of the polar method

  test.each(SEEDS)('i.i.d. chi projection = float32 of the model normals, seed %p', (seed) => {
    const w = new FeatureMap({ headDim: d, numFeatures: m, orthogonal: false, normScaling: 'chi', seed }).projection!;
    const rng = new ModelRng(BigInt(seed));
    let exact = 0;
    let worst = 0;
    for (let i = 0; i < m * d; i++) {
      const want = Math.fround(rng.normal());
      if (want === w[i]) exact++;
      worst = Math.max(worst, ulpDistance(want, w[i]));
    }
    // The only difference is Math.log vs the library's portable_log (both ~1 ulp of
    // double), which can flip the float32 rounding of a value by 1 ulp, very rarely.
    expect(worst).toBeLessThanOrEqual(2);
    expect(exact).toBeGreaterThanOrEqual(m * d - 2);
  });

  test.each(SEEDS)('orthogonal draw order: first row of each block and chi norms follow the contract, seed %p', (seed) => {
    // Contract (orthogonal.h): all d x d Gaussian blocks first, each filled column by
    // column, then one chi norm per row (Marsaglia-Tsang Gamma(d/2)). Householder QR
    // with the sign fix makes Q's first column a_0 / |a_0| (R_00 = |a_0| > 0), so the
    // first row of every block is the direction of the block's first d normals.
    // Without the sign fix (alpha = -sign(a_00) |a_0|) it is -sign(a_00) a_0 / |a_0|.
    const dd = 8;
    const mm = 20; // 3 blocks, the last one partial
    const blocks = Math.ceil(mm / dd);
    for (const signFix of [true, false]) {
      const w = sampleProjectionForTests({ numFeatures: mm, headDim: dd, seed, orthogonal: true, normScaling: 'chi', signFix });
      const rng = new ModelRng(BigInt(seed));
      const firstColumns: number[][] = [];
      for (let b = 0; b < blocks; b++) {
        const block = Array.from({ length: dd * dd }, () => rng.normal());
        firstColumns.push(block.slice(0, dd));
      }
      const chi: number[] = [];
      for (let r = 0; r < mm; r++) chi.push(modelChi(rng, dd));
      for (let r = 0; r < mm; r++) {
        let n2 = 0;
        for (let i = 0; i < dd; i++) n2 += w[r * dd + i] ** 2;
        expect(Math.abs(Math.sqrt(n2) - chi[r])).toBeLessThan(1e-6 * chi[r]);
      }
      for (let b = 0; b < blocks; b++) {
        const a = firstColumns[b];
        const norm = Math.hypot(...a);
        const sign = signFix ? 1 : -Math.sign(a[0]);
        for (let i = 0; i < dd; i++) {
          const want = (sign * a[i] * chi[b * dd]) / norm;
          expect(Math.abs(w[b * dd * dd + i] - want)).toBeLessThan(1e-6 * chi[b * dd]);
        }
      }
    }
  });
});

describe('bitwise reproducibility of the library', () => {
  const original = backendInfo();

  afterAll(() => {
    setBackend({ isa: original.isa, threads: original.threads });
  });

  test.each(SEEDS)('same seed, same bits: two calls, every ISA and thread count, seed %p', (seed) => {
    const configs: { orthogonal: boolean; normScaling: 'chi' | 'sqrt'; numFeatures: number; headDim: number }[] = [
      { orthogonal: false, normScaling: 'chi', numFeatures: 48, headDim: 40 },
      { orthogonal: true, normScaling: 'chi', numFeatures: 100, headDim: 32 },
      { orthogonal: true, normScaling: 'sqrt', numFeatures: 70, headDim: 16 },
    ];
    for (const config of configs) {
      const reference = new FeatureMap({ ...config, seed }).projection!;
      const bits = new Uint32Array(reference.buffer);
      expect(new Uint32Array(new FeatureMap({ ...config, seed }).projection!.buffer)).toEqual(bits);
      const redrawn = new FeatureMap({ ...config, seed: seed === 0 ? 1 : 0 });
      redrawn.redraw(seed);
      expect(new Uint32Array(redrawn.projection!.buffer)).toEqual(bits);
      for (const isa of original.available as Isa[]) {
        for (const threads of [1, 2, 3]) {
          setBackend({ isa, threads });
          const again = new FeatureMap({ ...config, seed }).projection!;
          expect(new Uint32Array(again.buffer)).toEqual(bits);
        }
      }
      setBackend({ isa: original.isa, threads: original.threads });
    }
  });

  test('different seeds give different projections', () => {
    const a = new FeatureMap({ headDim: 16, numFeatures: 16, seed: 0 }).projection!;
    const b = new FeatureMap({ headDim: 16, numFeatures: 16, seed: 1 }).projection!;
    const c = new FeatureMap({ headDim: 16, numFeatures: 16, seed: Number.MAX_SAFE_INTEGER }).projection!;
    expect(a).not.toEqual(b);
    expect(a).not.toEqual(c);
    expect(b).not.toEqual(c);
  });
});
