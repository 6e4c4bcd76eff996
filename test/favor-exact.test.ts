/**
 * With a fixed, given W, every FAVOR fast path (bidirectional, causal for several
 * chunk sizes, async, every ISA) equals the float64 reference of the formulas.
 */
import {
  backendInfo,
  favorAttention,
  favorAttentionSync,
  FeatureMap,
  setBackend,
  type FavorAttentionOptions,
  type FeatureKernel,
  type MaskBytes,
  type Tensor,
} from '../lib';
import {
  allFinite,
  makeInputs,
  memo,
  refFavor,
  refFeatures,
  refLogFeatures,
  logScale,
  relFrobenius,
  Rng,
  specOf,
  type Dims,
  type Inputs,
  type RefFavorOptions,
} from './helpers/reference';

const TOL = 1e-5;
const ISAS = backendInfo().available;
const ORIGINAL_ISA = backendInfo().isa;
const KERNELS: FeatureKernel[] = ['softmax', 'softmax-hyperbolic', 'trig', 'relu', 'elu', 'exp', 'abs'];
const GENERALIZED: FeatureKernel[] = ['relu', 'elu', 'exp', 'abs'];

afterAll(() => {
  setBackend({ isa: ORIGINAL_ISA });
});

// One reference per problem, shared by every ISA.
const cachedRef = memo<Float64Array>();


/** A given W: a seeded map's projection handed to fromProjection. */
function givenMap(d: number, m: number, kernel: FeatureKernel, seed: number, kernelEpsilon?: number): FeatureMap {
  const sampled = new FeatureMap({ headDim: d, numFeatures: m, seed });
  const opts = kernelEpsilon === undefined ? { headDim: d, numFeatures: m, kernel } : { headDim: d, numFeatures: m, kernel, kernelEpsilon };
  return FeatureMap.fromProjection(sampled.projection!, opts);
}

function maskOf(B: number, Lk: number, attend: (b: number, j: number) => boolean): MaskBytes {
  const data = new Uint8Array(B * Lk);
  for (let b = 0; b < B; b++) for (let j = 0; j < Lk; j++) data[b * Lk + j] = attend(b, j) ? 1 : 0;
  return { data, shape: [B, Lk] };
}

/** Collects failures so one test reports every bad configuration at once. */
class Checker {
  failures: string[] = [];
  close(label: string, actual: Float32Array, expected: Float64Array, tol = TOL): void {
    if (!allFinite(actual)) {
      this.failures.push(`${label}: non-finite output`);
      return;
    }
    const err = relFrobenius(actual, expected);
    if (!(err <= tol)) this.failures.push(`${label}: relative Frobenius error ${err.toExponential(2)} > ${tol}`);
  }
}

interface Case {
  key: string; // identifies inputs + map for the reference cache
  inputs: Inputs;
  map: FeatureMap;
  mask?: MaskBytes;
  epsilon?: number;
}

/** Runs bidirectional and causal (each chunk size) against the reference. */
function checkPaths(c: Checker, label: string, cs: Case, chunkSizes: number[], bidirectional = true): void {
  const { q, k, v } = cs.inputs;
  const spec = specOf(cs.map);
  const refOpts = (causal: boolean): RefFavorOptions => ({ causal, keyPadding: cs.mask?.data, epsilon: cs.epsilon });
  const libOpts = (causal: boolean, chunkSize?: number): FavorAttentionOptions => {
    const o: FavorAttentionOptions = { featureMap: cs.map, causal };
    if (chunkSize !== undefined) o.chunkSize = chunkSize;
    if (cs.mask) o.keyPaddingMask = cs.mask;
    if (cs.epsilon !== undefined) o.epsilon = cs.epsilon;
    return o;
  };
  if (bidirectional) {
    const ref = cachedRef(`${cs.key}|bi`, () => refFavor(cs.inputs, spec, refOpts(false)));
    c.close(`${label} bidirectional`, favorAttentionSync(q, k, v, libOpts(false)).data, ref);
  }
  if (chunkSizes.length > 0) {
    const ref = cachedRef(`${cs.key}|causal`, () => refFavor(cs.inputs, spec, refOpts(true)));
    for (const chunkSize of chunkSizes) {
      c.close(`${label} causal chunk ${chunkSize}`, favorAttentionSync(q, k, v, libOpts(true, chunkSize)).data, ref);
    }
  }
}

function bytesEqual(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function rowsAreZero(out: Float32Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (out[i] !== 0) return false;
  return true;
}

describe.each(ISAS)('FAVOR equals the float64 reference (isa %s)', (isa) => {
  beforeAll(() => {
    expect(setBackend({ isa }).isa).toBe(isa);
  });

  test.each(KERNELS)('kernel %s: B=2, H=3, bidirectional and causal, Lq = Lk and Lq != Lk', (kernel) => {
    const c = new Checker();
    const d = 17;
    // Generalized kernels with a non-default kernelEpsilon, to see it honoured.
    const map = givenMap(d, 24, kernel, 11, GENERALIZED.includes(kernel) ? 0.05 : undefined);
    for (const [Lq, Lk] of [[65, 65], [40, 65], [65, 40]]) {
      const dims: Dims = { B: 2, H: 3, Lq, Lk, d, Dv: 5 };
      // trig is ill-conditioned where the kernel is small; keep its inputs moderate.
      const std = kernel === 'trig' ? { q: 0.5, k: 0.5 } : {};
      const inputs = makeInputs(100 + Lq + Lk, dims, std);
      checkPaths(c, `${kernel} Lq ${Lq} Lk ${Lk}`, { key: `kern|${kernel}|${Lq}|${Lk}`, inputs, map }, [1, 7, 64, Lq]);
    }
    expect(c.failures).toEqual([]);
  });

  const ODD: Array<[number, number]> = [];
  for (const d of [1, 3, 17]) for (const L of [1, 5, 63, 65, 130]) ODD.push([d, L]);
  test.each(ODD)('odd sizes d = %i, L = %i: bidirectional and causal chunk 1, 7, 64, L', (d, L) => {
    const c = new Checker();
    const m = { 1: 8, 3: 7, 17: 24 }[d]!;
    const Dv = { 1: 4, 3: 1, 17: 6 }[d]!;
    const map = givenMap(d, m, 'softmax', 7 + d);
    const inputs = makeInputs(1000 + 10 * d + L, { B: 2, H: 3, Lq: L, Lk: L, d, Dv });
    checkPaths(c, `d ${d} L ${L}`, { key: `odd|${d}|${L}`, inputs, map }, [1, 7, 64, L]);
    expect(c.failures).toEqual([]);
  });

  test.each([
    [5, 63],
    [63, 5],
    [1, 64],
    [64, 1],
    [65, 130],
    [130, 65],
    [7, 70],
  ])('causal with Lq = %i, Lk = %i (bottom-right aligned)', (Lq, Lk) => {
    const c = new Checker();
    const d = 8;
    for (const kernel of ['softmax', 'softmax-hyperbolic'] as FeatureKernel[]) {
      const map = givenMap(d, 12, kernel, 5);
      const inputs = makeInputs(2000 + Lq * 7 + Lk, { B: 2, H: 3, Lq, Lk, d, Dv: 3 });
      checkPaths(c, `${kernel} Lq ${Lq} Lk ${Lk}`, { key: `lqlk|${kernel}|${Lq}|${Lk}`, inputs, map }, [1, 7, 64, Lq]);
    }
    expect(c.failures).toEqual([]);
  });

  test('key padding: padded keys leave numerator and normalizer; an all-padded item gives zero rows', () => {
    const c = new Checker();
    const d = 6;
    const Lk = 70;
    const rng = new Rng(31);
    const random = Array.from({ length: Lk }, () => rng.uniform() > 0.3);
    // b0: random, b1: first 12 keys padded (early causal rows see nothing), b2: all padded.
    const mask = maskOf(3, Lk, (b, j) => (b === 0 ? random[j] : b === 1 ? j >= 12 && j % 5 !== 0 : false));
    for (const kernel of ['softmax', 'softmax-hyperbolic', 'relu'] as FeatureKernel[]) {
      const map = givenMap(d, 16, kernel, 9);
      for (const Lq of [70, 45]) {
        const dims: Dims = { B: 3, H: 2, Lq, Lk, d, Dv: 4 };
        const inputs = makeInputs(3000 + Lq, dims);
        const cs = { key: `pad|${kernel}|${Lq}`, inputs, map, mask };
        checkPaths(c, `${kernel} Lq ${Lq} padded`, cs, [1, 7, 64]);
        const rowFloats = Lq * dims.Dv;
        for (const causal of [false, true]) {
          const out = favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: map, causal, keyPaddingMask: mask, chunkSize: 7 }).data;
          // Batch item 2 (both heads) attends nothing.
          if (!rowsAreZero(out, 2 * 2 * rowFloats, 3 * 2 * rowFloats)) c.failures.push(`${kernel} Lq ${Lq} causal ${causal}: all-padded item not zero`);
          if (causal && 12 - (Lk - Lq) > 0) {
            // Batch item 1: query i sees keys j <= i + Lk - Lq, all padded while that is < 12.
            const blind = 12 - (Lk - Lq);
            for (let h = 0; h < 2; h++) {
              const base = (1 * 2 + h) * rowFloats;
              if (!rowsAreZero(out, base, base + blind * dims.Dv)) c.failures.push(`${kernel} Lq ${Lq}: blind causal rows not zero`);
              if (rowsAreZero(out, base + blind * dims.Dv, base + (blind + 1) * dims.Dv)) c.failures.push(`${kernel} Lq ${Lq}: first seeing row is zero`);
            }
          }
        }
      }
    }
    expect(c.failures).toEqual([]);
  });

  test('epsilon > 0 follows its definition (stabilized features + epsilon), with and without padding', () => {
    const c = new Checker();
    const d = 17;
    const Lk = 65;
    const masks: Record<string, MaskBytes | undefined> = {
      none: undefined,
      some: maskOf(2, Lk, (b, j) => b === 0 || (j % 4 !== 1 && j > 3)),
      // Batch item 1 fully padded: no key to take c_f from, zero rows.
      item: maskOf(2, Lk, (b) => b === 0),
    };
    for (const kernel of ['softmax', 'softmax-hyperbolic', 'relu', 'exp'] as FeatureKernel[]) {
      const map = givenMap(d, 24, kernel, 13);
      for (const epsilon of [1e-6, 1e-2]) {
        for (const Lq of [65, 40]) {
          const inputs = makeInputs(4000 + Lq, { B: 2, H: 3, Lq, Lk, d, Dv: 5 });
          for (const [padded, mask] of Object.entries(masks)) {
            const cs: Case = { key: `eps|${kernel}|${epsilon}|${Lq}|${padded}`, inputs, map, epsilon, mask };
            checkPaths(c, `${kernel} eps ${epsilon} Lq ${Lq} padding ${padded}`, cs, [1, 7, 64]);
          }
        }
      }
    }
    // The test has teeth: epsilon = 1e-2 is far from the exact (epsilon = 0) result.
    const map = givenMap(d, 24, 'softmax', 13);
    const inputs = makeInputs(4000 + 65, { B: 2, H: 3, Lq: 65, Lk, d, Dv: 5 });
    const withEps = cachedRef(`eps|softmax|0.01|65|none|bi`, () => refFavor(inputs, specOf(map), { epsilon: 1e-2 }));
    expect(relFrobenius(withEps, refFavor(inputs, specOf(map)))).toBeGreaterThan(100 * TOL);
    expect(c.failures).toEqual([]);
  });

  test('generalized kernels without a projection (f applied to x_hat), incl. kernelEpsilon = 0', () => {
    const c = new Checker();
    const d = 9;
    for (const kernel of GENERALIZED) {
      for (const kernelEpsilon of [1e-3, 0]) {
        const map = new FeatureMap({ headDim: d, kernel, randomProjection: false, kernelEpsilon });
        expect(map.projection).toBeNull();
        const inputs = makeInputs(5000, { B: 2, H: 3, Lq: 33, Lk: 40, d, Dv: 4 });
        checkPaths(c, `${kernel} no projection eps ${kernelEpsilon}`, { key: `noproj|${kernel}|${kernelEpsilon}`, inputs, map }, [1, 7, 64]);
      }
    }
    expect(c.failures).toEqual([]);
  });

  test('a seeded map, fromProjection of its W and the default map agree with the reference', () => {
    const c = new Checker();
    const d = 16;
    const inputs = makeInputs(6000, { B: 2, H: 3, Lq: 50, Lk: 50, d, Dv: 16 });
    const { q, k, v } = inputs;
    const seeded = new FeatureMap({ headDim: d, numFeatures: 40, seed: 77 });
    const given = FeatureMap.fromProjection(seeded.projection!, { headDim: d, numFeatures: 40 });
    for (const causal of [false, true]) {
      const a = favorAttentionSync(q, k, v, { featureMap: seeded, causal }).data;
      const b = favorAttentionSync(q, k, v, { featureMap: given, causal }).data;
      expect(bytesEqual(a, b)).toBe(true);
      const ref = cachedRef(`seeded|${causal}`, () => refFavor(inputs, specOf(seeded), { causal }));
      c.close(`seeded causal ${causal}`, a, ref);
      // No featureMap: documented default FeatureMap({ headDim: d, seed: 0 }).
      const dflt = new FeatureMap({ headDim: d, seed: 0 });
      const refDefault = cachedRef(`default|${causal}`, () => refFavor(inputs, specOf(dflt), { causal }));
      c.close(`default map causal ${causal}`, favorAttentionSync(q, k, v, { causal }).data, refDefault);
    }
    expect(c.failures).toEqual([]);
  });

  test('async favorAttention, and a given out tensor (prefilled with NaN), equal the sync result bit for bit', async () => {
    const d = 17;
    const Lk = 90;
    const inputs = makeInputs(7000, { B: 2, H: 3, Lq: 70, Lk, d, Dv: 6 });
    const mask = maskOf(2, Lk, (b, j) => b === 0 || j % 3 !== 0);
    const cases: FavorAttentionOptions[] = [
      { featureMap: givenMap(d, 24, 'softmax', 3) },
      { featureMap: givenMap(d, 24, 'softmax', 3), causal: true, chunkSize: 7 },
      { featureMap: givenMap(d, 24, 'softmax-hyperbolic', 3), causal: true, chunkSize: 1, keyPaddingMask: mask },
      { featureMap: givenMap(d, 24, 'relu', 3), keyPaddingMask: mask, epsilon: 1e-3 },
      { featureMap: givenMap(d, 24, 'trig', 3), causal: true },
    ];
    for (const o of cases) {
      const sync = favorAttentionSync(inputs.q, inputs.k, inputs.v, o);
      const asyncOut: Tensor = await favorAttention(inputs.q, inputs.k, inputs.v, o);
      expect(asyncOut.shape).toEqual(sync.shape);
      expect(bytesEqual(asyncOut.data, sync.data)).toBe(true);
      // Every output element must be written, not accumulated into.
      const out = { data: new Float32Array(sync.data.length).fill(NaN), shape: sync.shape };
      const given = favorAttentionSync(inputs.q, inputs.k, inputs.v, { ...o, out });
      expect(given.data).toBe(out.data);
      expect(bytesEqual(given.data, sync.data)).toBe(true);
    }
  });

  test('a padded key with poisoned k and v (v = 1e9) changes nothing', () => {
    const c = new Checker();
    const d = 8;
    const Dv = 3;
    const Lk = 33;
    const base = makeInputs(8000, { B: 1, H: 2, Lq: 32, Lk, d, Dv });
    // Replace key `p` (k scaled by 10, v = 1e9) in every head.
    const poison = (p: number): Inputs => {
      const k = Float32Array.from(base.k.data);
      const v = Float32Array.from(base.v.data);
      for (let h = 0; h < 2; h++) {
        for (let e = 0; e < d; e++) k[(h * Lk + p) * d + e] *= 10;
        for (let e = 0; e < Dv; e++) v[(h * Lk + p) * Dv + e] = 1e9;
      }
      return { q: base.q, k: { data: k, shape: base.k.shape }, v: { data: v, shape: base.v.shape } };
    };
    // The same problem with key `p` removed entirely.
    const removed = (p: number): Inputs => {
      const keep = (x: Float32Array, w: number) => {
        const out = new Float32Array(2 * (Lk - 1) * w);
        for (let h = 0; h < 2; h++) {
          let r = 0;
          for (let j = 0; j < Lk; j++) {
            if (j === p) continue;
            out.set(x.subarray((h * Lk + j) * w, (h * Lk + j + 1) * w), (h * (Lk - 1) + r++) * w);
          }
        }
        return out;
      };
      return { q: base.q, k: { data: keep(base.k.data, d), shape: [1, 2, Lk - 1, d] }, v: { data: keep(base.v.data, Dv), shape: [1, 2, Lk - 1, Dv] } };
    };
    // Bidirectional: a key in the middle. Causal: the first key, so that removing it
    // keeps every query's visible set (j <= i + Lk - Lq) the same.
    for (const [causal, p] of [[false, 17], [true, 0]] as Array<[boolean, number]>) {
      const mask = maskOf(1, Lk, (_b, j) => j !== p);
      for (const kernel of ['softmax', 'relu'] as FeatureKernel[]) {
        const map = givenMap(d, 12, kernel, 21);
        for (const epsilon of [0, 1e-3]) {
          for (const chunkSize of causal ? [1, 7, 64] : [64]) {
            const label = `${kernel} causal ${causal} eps ${epsilon} chunk ${chunkSize}`;
            const o: FavorAttentionOptions = { featureMap: map, causal, chunkSize, epsilon, keyPaddingMask: mask };
            const bad = poison(p);
            const poisoned = favorAttentionSync(bad.q, bad.k, bad.v, o).data;
            const clean = favorAttentionSync(base.q, base.k, base.v, o).data;
            // A padded key's values must not be read into any sum: bit-identical.
            if (!bytesEqual(poisoned, clean)) c.failures.push(`${label}: poisoned padded key changed the output`);
            const r = removed(p);
            const without = favorAttentionSync(r.q, r.k, r.v, { featureMap: map, causal, chunkSize, epsilon }).data;
            c.close(`${label} vs key removed`, poisoned, Float64Array.from(without), 1e-6);
            const ref = cachedRef(`poison|${label}`, () => refFavor(r, specOf(map), { causal, epsilon }));
            c.close(`${label} vs reference`, poisoned, ref);
          }
        }
      }
    }
    expect(c.failures).toEqual([]);
  });

  test('FeatureMap.features equals the reference phi (and log phi) for every kernel', () => {
    const c = new Checker();
    const d = 17;
    const rows = 70;
    const x = makeInputs(9000, { B: 1, H: 1, Lq: rows, Lk: 1, d, Dv: 1 }).q.data;
    const maps = KERNELS.map((kernel) => givenMap(d, 24, kernel, 4));
    for (const kernel of GENERALIZED) maps.push(new FeatureMap({ headDim: d, kernel, randomProjection: false }));
    for (const map of maps) {
      const spec = specOf(map);
      const label = `${map.kernel}${map.projection === null ? ' (no projection)' : ''}`;
      const phi = map.features({ data: x, shape: [rows, d] });
      expect(phi.shape).toEqual([rows, map.featureCount]);
      c.close(`${label} features`, phi.data, refFeatures(spec, x, rows));
      if (map.kernel !== 'trig') {
        const logPhi = map.features({ data: x, shape: [rows, d] }, { logSpace: true }).data;
        const { z } = refLogFeatures(spec, x, rows);
        const ls = logScale(spec);
        let worst = 0;
        for (let i = 0; i < z.length; i++) worst = Math.max(worst, Math.abs(logPhi[i] - (z[i] + ls)) / (1 + Math.abs(z[i] + ls)));
        if (!(worst <= TOL)) c.failures.push(`${label} log features: error ${worst.toExponential(2)}`);
      }
    }
    expect(c.failures).toEqual([]);
  });
});
