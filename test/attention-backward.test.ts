// Gradients of favorAttention and softmaxAttention: every kernel set against central
// finite differences of the float64 references (test/helpers/reference.ts), plus
// determinism across thread counts, sync = async, and the errors.
import {
  backendInfo,
  FeatureMap,
  favorAttentionBackward,
  favorAttentionBackwardSync,
  setBackend,
  softmaxAttentionBackward,
  softmaxAttentionBackwardSync,
  type FeatureKernel,
  type Tensor,
} from '../lib';
import { makeInputs, randn, refFavor, refSoftmax, relFrobenius, Rng, specOf, type Dims, type RefFeatureSpec, type RefMaskOptions } from './helpers/reference';

const ORIGINAL = backendInfo();
afterAll(() => setBackend({ isa: ORIGINAL.isa, threads: ORIGINAL.threads }));

// Float32 kernels against float64 finite differences (the bound).
const TOL = 1e-4;
const STEP = 1e-5;

type Loss = (q: Float64Array, k: Float64Array, v: Float64Array, w: Float64Array | null) => number;

/** Central differences of loss with respect to every entry of q, k, v (and w). */
function numericGradients(loss: Loss, q: Float64Array, k: Float64Array, v: Float64Array, w: Float64Array | null) {
  const grad = (x: Float64Array) => {
    const g = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const x0 = x[i];
      x[i] = x0 + STEP;
      const up = loss(q, k, v, w);
      x[i] = x0 - STEP;
      const down = loss(q, k, v, w);
      x[i] = x0;
      g[i] = (up - down) / (2 * STEP);
    }
    return g;
  };
  return { q: grad(q), k: grad(k), v: grad(v), w: w ? grad(w) : null };
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

interface Case {
  dims: Dims;
  causal: boolean;
  mask: boolean;
}

function maskOf(dims: Dims, seed: number): Uint8Array {
  const rng = new Rng(seed);
  // Every batch keeps its first key; about a third of the rest are padding.
  return Uint8Array.from({ length: dims.B * dims.Lk }, (_, i) => (i % dims.Lk === 0 || rng.uniform() > 0.33 ? 1 : 0));
}

function favorCase(kernel: FeatureKernel, c: Case, seed: number, chunkSize: number, bigFirstKey = false) {
  const { dims } = c;
  const inputs = makeInputs(seed, dims, { q: 0.5, k: 0.5, v: 1 });
  // A first key 30 times longer than the rest: its log-features sit hundreds below the
  // others', so the early causal rows' features span far more than e^40.
  if (bigFirstKey) for (let i = 0; i < dims.d; i++) inputs.k.data[i] *= 30;
  const map = new FeatureMap({ headDim: dims.d, numFeatures: 6, kernel, seed: seed + 1 });
  const gradOut: Tensor = { data: randn(new Rng(seed + 2), dims.B * dims.H * dims.Lq * dims.Dv), shape: [dims.B, dims.H, dims.Lq, dims.Dv] };
  const keyPadding = c.mask ? maskOf(dims, seed + 3) : null;
  const options: RefMaskOptions = { causal: c.causal, keyPadding };
  const spec = specOf(map);
  const loss: Loss = (q, k, v, w) => {
    const s: RefFeatureSpec = w ? { ...spec, projection: w as unknown as Float32Array } : spec;
    const out = refFavor({ q: { data: q, shape: inputs.q.shape }, k: { data: k, shape: inputs.k.shape }, v: { data: v, shape: inputs.v.shape } }, s, options);
    return dot(out, gradOut.data);
  };
  const f64 = (t: Tensor) => Float64Array.from(t.data);
  const want = numericGradients(loss, f64(inputs.q), f64(inputs.k), f64(inputs.v), Float64Array.from(map.projection!));
  const got = favorAttentionBackwardSync(inputs.q, inputs.k, inputs.v, gradOut, {
    featureMap: map,
    causal: c.causal,
    keyPaddingMask: keyPadding ? { data: keyPadding, shape: [dims.B, dims.Lk] } : undefined,
    chunkSize,
    projectionGradient: true,
  });
  return { got, want };
}

const SHAPES: Case[] = [
  { dims: { B: 1, H: 2, Lq: 7, Lk: 7, d: 4, Dv: 3 }, causal: false, mask: false },
  { dims: { B: 2, H: 1, Lq: 5, Lk: 9, d: 5, Dv: 2 }, causal: false, mask: true },
  { dims: { B: 1, H: 2, Lq: 9, Lk: 9, d: 4, Dv: 3 }, causal: true, mask: false },
  { dims: { B: 2, H: 1, Lq: 8, Lk: 8, d: 3, Dv: 4 }, causal: true, mask: true },
];
const KERNELS: FeatureKernel[] = ['softmax', 'softmax-hyperbolic', 'relu', 'elu', 'exp', 'abs'];

describe('favorAttentionBackward against finite differences of the float64 reference', () => {
  for (const isa of backendInfo().available) {
    test.each(KERNELS)(`%s on ${isa}: q, k, v and the projection, bidirectional and causal, padded or not`, (kernel) => {
      setBackend({ isa: isa as never });
      SHAPES.forEach((c, i) => {
        for (const chunkSize of c.causal ? [1, 3, 64] : [32]) {
          const { got, want } = favorCase(kernel, c, 100 + i, chunkSize);
          const label = `${kernel} ${JSON.stringify(c)} chunk ${chunkSize}`;
          for (const [name, a, b] of [['query', got.query.data, want.q], ['key', got.key.data, want.k], ['value', got.value.data, want.v], ['projection', got.projection!.data, want.w!]] as const) {
            const err = relFrobenius(a, b);
            if (!(err <= TOL)) throw new Error(`${label}: ${name} gradient off by ${err}`);
          }
        }
      });
    });
  }

  test('causal inputs whose features span more than e^40: the chunks split, gradients still match', () => {
    // One large key row makes later features dwarf earlier ones.
    const c: Case = { dims: { B: 1, H: 1, Lq: 12, Lk: 12, d: 4, Dv: 2 }, causal: true, mask: false };
    const { got, want } = favorCase('softmax', c, 7, 12, true);
    for (const [a, b] of [[got.query.data, want.q], [got.key.data, want.k], [got.value.data, want.v]] as const) {
      expect(relFrobenius(a, b)).toBeLessThan(TOL);
    }
  });
});

describe('softmaxAttentionBackward against finite differences of the float64 reference', () => {
  const cases: (Case & { scale?: number })[] = [
    { dims: { B: 1, H: 2, Lq: 6, Lk: 9, d: 4, Dv: 3 }, causal: false, mask: false },
    { dims: { B: 2, H: 1, Lq: 7, Lk: 7, d: 3, Dv: 2 }, causal: true, mask: true },
    { dims: { B: 1, H: 1, Lq: 9, Lk: 5, d: 4, Dv: 3 }, causal: true, mask: false, scale: 0.7 },
  ];
  for (const isa of backendInfo().available) {
    test(`every case on ${isa}`, () => {
      setBackend({ isa: isa as never });
      cases.forEach((c, i) => {
        const { dims } = c;
        const inputs = makeInputs(200 + i, dims);
        const gradOut: Tensor = { data: randn(new Rng(300 + i), dims.B * dims.H * dims.Lq * dims.Dv), shape: [dims.B, dims.H, dims.Lq, dims.Dv] };
        const keyPadding = c.mask ? maskOf(dims, 400 + i) : null;
        const loss: Loss = (q, k, v) =>
          dot(refSoftmax({ q: { data: q, shape: inputs.q.shape }, k: { data: k, shape: inputs.k.shape }, v: { data: v, shape: inputs.v.shape } }, { causal: c.causal, keyPadding, scale: c.scale }), gradOut.data);
        const want = numericGradients(loss, Float64Array.from(inputs.q.data), Float64Array.from(inputs.k.data), Float64Array.from(inputs.v.data), null);
        const got = softmaxAttentionBackwardSync(inputs.q, inputs.k, inputs.v, gradOut, {
          causal: c.causal,
          keyPaddingMask: keyPadding ? { data: keyPadding, shape: [dims.B, dims.Lk] } : undefined,
          scale: c.scale,
        });
        for (const [name, a, b] of [['query', got.query.data, want.q], ['key', got.key.data, want.k], ['value', got.value.data, want.v]] as const) {
          const err = relFrobenius(a, b);
          if (!(err <= TOL)) throw new Error(`${JSON.stringify(c)}: ${name} gradient off by ${err}`);
        }
      });
    });
  }
});

describe('determinism, async, errors', () => {
  const dims: Dims = { B: 1, H: 3, Lq: 300, Lk: 300, d: 16, Dv: 8 };
  const inputs = makeInputs(5, dims);
  const gradOut: Tensor = { data: randn(new Rng(6), 300 * 3 * 8), shape: [1, 3, 300, 8] };
  const map = new FeatureMap({ headDim: 16, numFeatures: 32, seed: 3 });
  const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

  test('the same bits with 1 and 3 threads, and from the async calls', async () => {
    for (const causal of [false, true]) {
      setBackend({ threads: 1 });
      const a = favorAttentionBackwardSync(inputs.q, inputs.k, inputs.v, gradOut, { featureMap: map, causal, projectionGradient: true });
      const s1 = softmaxAttentionBackwardSync(inputs.q, inputs.k, inputs.v, gradOut, { causal });
      setBackend({ threads: 3 });
      const b = favorAttentionBackwardSync(inputs.q, inputs.k, inputs.v, gradOut, { featureMap: map, causal, projectionGradient: true });
      const s3 = softmaxAttentionBackwardSync(inputs.q, inputs.k, inputs.v, gradOut, { causal });
      const c = await favorAttentionBackward(inputs.q, inputs.k, inputs.v, gradOut, { featureMap: map, causal, projectionGradient: true });
      const s4 = await softmaxAttentionBackward(inputs.q, inputs.k, inputs.v, gradOut, { causal });
      for (const key of ['query', 'key', 'value', 'projection'] as const) {
        expect(same(a[key]!.data, b[key]!.data)).toBe(true);
        expect(same(a[key]!.data, c[key]!.data)).toBe(true);
      }
      for (const key of ['query', 'key', 'value'] as const) {
        expect(same(s1[key].data, s3[key].data)).toBe(true);
        expect(same(s1[key].data, s4[key].data)).toBe(true);
      }
    }
    setBackend({ threads: ORIGINAL.threads });
  });

  test('bad gradOut, unsupported options and kernels are coded errors', async () => {
    const fn = (o: object, g: unknown = gradOut) => () => favorAttentionBackwardSync(inputs.q, inputs.k, inputs.v, g as Tensor, o);
    expect(fn({ featureMap: map }, { data: new Float32Array(3 * 300 * 9), shape: [1, 3, 300, 9] })).toThrow(/gradOut: expected shape \[1, 3, 300, 8\]/);
    expect(() => favorAttentionBackwardSync(inputs.q, inputs.k, inputs.v, undefined as never, { featureMap: map })).toThrow(/gradOut: required/);
    const nan = Float32Array.from(gradOut.data);
    nan[17] = NaN;
    expect(fn({ featureMap: map }, { data: nan, shape: gradOut.shape })).toThrow(/gradOut: NaN at flat index 17/);
    expect(fn({ featureMap: map, epsilon: 1e-6 })).toThrow(/epsilon must be 0/);
    expect(fn({ featureMap: new FeatureMap({ headDim: 16, numFeatures: 8, kernel: 'trig' }) })).toThrow(/kernel must be softmax/);
    expect(fn({ featureMap: new FeatureMap({ headDim: 16, kernel: 'relu', randomProjection: false }), projectionGradient: true })).toThrow(/needs a featureMap with a projection/);
    expect(fn({ featureMap: map, out: gradOut })).toThrow(/unknown option 'out'/);
    expect(fn({ featureMap: map, signal: new AbortController().signal })).toThrow(/unknown option 'signal'/);
    const short = makeInputs(1, { B: 1, H: 3, Lq: 4, Lk: 6, d: 16, Dv: 8 });
    expect(() =>
      favorAttentionBackwardSync(short.q, short.k, short.v, { data: new Float32Array(3 * 4 * 8), shape: [1, 3, 4, 8] }, { featureMap: map, causal: true }),
    ).toThrow(/equal query and key lengths/);
    await expect(favorAttentionBackward(inputs.q, inputs.k, inputs.v, gradOut, { featureMap: map, signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    await expect(softmaxAttentionBackward(inputs.q, inputs.k, inputs.v, gradOut, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
  });
});
