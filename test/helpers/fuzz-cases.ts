// Seeded fuzz cases over the whole public API. Run in a child process by
// test/fuzz.test.ts (`node -r ./test/helpers/ts-register.js test/helpers/fuzz-cases.ts
// <seed> <count>`), so that a crash is reported as a failure with the case that
// caused it instead of taking the test runner down.
//
// Every case must end in a correct result (right shape, finite values from finite
// inputs, and for clean small inputs the double-precision reference) or in a
// TypeError / RangeError with a `code`. The child prints one JSON summary line.
import { writeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

import {
  backendInfo,
  favorAttention,
  favorAttentionSync,
  FeatureMap,
  setBackend,
  softmaxAttention,
  softmaxAttentionSync,
  tensor,
  type FeatureKernel,
  type Tensor,
} from '../../lib';
import { allFinite, randn, refFavor, refFeatures, refSoftmax, relFrobenius, Rng, specOf } from './reference';

const TOL = 1e-5;
const KERNELS: FeatureKernel[] = ['softmax', 'softmax-hyperbolic', 'trig', 'relu', 'elu', 'exp', 'abs', 'softmax-opt', 'softmax-dense'];
const SPECIALS = [NaN, Infinity, -Infinity, 1e-40, -1e-42, 1e30, 3e38, -3e38, 1e15, 0, 65504, 1e-7];

export type { FuzzSummary as Summary } from './fuzz-runner';
import type { FuzzSummary as Summary } from './fuzz-runner';

/** What a generated input is, so the oracle knows what outcome is allowed. */
export interface Generated {
  value: unknown;
  /** A well-formed tensor of the declared shape. */
  wellFormed: boolean;
  /** Every element finite. */
  finite: boolean;
  /** Small N(0, 1) values only: the reference comparison applies. */
  clean: boolean;
}

export class Fuzzer {
  readonly rng: Rng;
  readonly summary: Summary;
  /** Kept alive so transferred buffers stay owned while calls that saw them run. */
  protected readonly keep: unknown[] = [];

  constructor(seed: number) {
    this.rng = new Rng(seed);
    this.summary = { seed, cases: 0, results: 0, referenceChecks: 0, errors: {}, failures: [] };
  }

  chance(p: number): boolean {
    return this.rng.uniform() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.rng.int(items.length)];
  }

  dim(): number {
    if (this.chance(0.03)) return 0;
    return this.pick([1, 1, 2, 3, 4, 5, 7, 8, 13, 17, 32]);
  }

  /** Float32 data of n elements: N(0, 1), sometimes scaled or with special values. */
  values(n: number): { data: Float32Array; finite: boolean; clean: boolean } {
    const data = new Float32Array(n);
    const scale = this.chance(0.1) ? this.pick([1e-30, 1e-3, 30, 1e6, 1e12]) : 1;
    for (let i = 0; i < n; i++) data[i] = this.rng.normal() * scale;
    let clean = scale === 1;
    if (n > 0 && this.chance(0.2)) {
      const count = 1 + this.rng.int(Math.min(n, 4));
      for (let c = 0; c < count; c++) data[this.rng.int(n)] = this.pick(SPECIALS);
      if (this.chance(0.2)) data.fill(this.pick(SPECIALS));
      clean = false;
    }
    return { data, finite: allFinite(data), clean };
  }

  /** The data as stored in one of the layouts a caller may hand over. */
  placed(data: Float32Array): { array: Float32Array; detached: boolean } {
    const r = this.rng.uniform();
    if (r < 0.1) {
      // A view at an odd element offset inside a larger buffer.
      const offset = 1 + this.rng.int(5);
      const buf = new ArrayBuffer((data.length + offset + 3) * 4);
      const view = new Float32Array(buf, offset * 4, data.length);
      view.set(data);
      return { array: view, detached: false };
    }
    if (r < 0.18) {
      const view = new Float32Array(new SharedArrayBuffer(Math.max(4, data.length * 4)), 0, data.length);
      view.set(data);
      return { array: view, detached: false };
    }
    if (r < 0.22 && data.length > 0) {
      const copy = Float32Array.from(data);
      this.keep.push(structuredClone(copy, { transfer: [copy.buffer] }));
      return { array: copy, detached: true };
    }
    return { array: data, detached: false };
  }

  /** Something that is not a tensor (or not a well-formed one). */
  junk(shape: number[]): unknown {
    const n = Math.max(0, shape.reduce((a, b) => a * b, 1));
    const small = Math.min(n, 64);
    return this.pick<() => unknown>([
      () => undefined,
      () => null,
      () => 3,
      () => 'query',
      () => [1, 2, 3],
      () => new Float32Array(small),
      () => ({ data: Array.from({ length: small }, () => 1), shape }),
      () => ({ data: new Float64Array(small), shape }),
      () => ({ data: new DataView(new ArrayBuffer(small * 4)), shape }),
      () => ({ data: new Uint8Array(small), shape }),
      () => ({ data: new Float32Array(small) }),
      () => ({ data: new Float32Array(small), shape: 'x' }),
      () => ({ data: new Float32Array(small), shape: shape.map((d) => d + 0.5) }),
      () => ({ data: new Float32Array(small), shape: shape.map((d, i) => (i === 0 ? -d : d)) }),
      () => ({ data: new Float32Array(small), shape: shape.map(() => NaN) }),
      () => ({ data: new Float32Array(4), shape: [2 ** 20, 2 ** 20, 2 ** 10, 64] }),
      () => ({ data: new Float32Array(4), shape: [2 ** 32, 2 ** 32, 2 ** 32, 2 ** 32] }),
      () => ({ data: new Float32Array(4), shape: [2 ** 53, 1, 1, 4] }),
      () => ({ data: new Float32Array(4), shape: [2 ** 31, 2 ** 31, 1, 1] }),
      () => ({ data: new Float32Array(small + 1), shape }),
    ])();
  }

  /** A tensor of `shape`, usually well-formed. */
  tensorOf(shape: number[]): Generated {
    if (this.chance(0.05)) return { value: this.junk(shape), wellFormed: false, finite: true, clean: false };
    const n = shape.reduce((a, b) => a * b, 1);
    const { data, finite, clean } = this.values(n);
    const { array, detached } = this.placed(data);
    const value = this.chance(0.1) ? { data: array, dims: shape } : { data: array, shape };
    const wellFormed = !detached && shape.every((d) => d >= 1);
    return { value, wellFormed, finite, clean: clean && wellFormed };
  }

  featureMap(d: number): FeatureMap | unknown {
    if (this.chance(0.02)) return this.pick([{}, 'softmax', 7, null]);
    const kernel = this.pick(KERNELS);
    if (this.chance(0.15)) {
      const m = this.pick([1, 2, 8, 16]);
      try {
        return FeatureMap.fromProjection(this.values(m * d).data, { headDim: d, numFeatures: m, kernel });
      } catch (error) {
        this.expectCoded(error, 'FeatureMap.fromProjection for attention');
        return undefined;
      }
    }
    const generalized = ['relu', 'elu', 'exp', 'abs'].includes(kernel);
    const options: Record<string, unknown> = { headDim: this.chance(0.03) ? d + 1 : d, kernel, seed: this.rng.int(1000) };
    if (this.chance(0.7)) options.numFeatures = this.pick([1, 2, 3, 8, 16, 33]);
    if (generalized && this.chance(0.3)) {
      options.randomProjection = false;
      delete options.numFeatures;
    }
    if (this.chance(0.2)) options.orthogonal = false;
    if (this.chance(0.2)) options.normScaling = 'sqrt';
    try {
      const map = new FeatureMap(options as never);
      if ((kernel === 'softmax-opt' || kernel === 'softmax-dense') && this.chance(0.5)) {
        // Calibrated on N(0, 1) rows like the attention inputs. Parameters from data of a
        // very different scale (|a| ~ 1e10, so √(1−4a) ~ 1e5) act like inputs scaled by 1e5:
        // finite, but as ill-conditioned in float32 as any such input, so no reference then.
        const rows = this.pick([1, 3]);
        map.calibrate({ data: randn(this.rng, rows * d), shape: [rows, d] }, { data: randn(this.rng, 2 * d), shape: [2, d] });
      }
      return map;
    } catch (error) {
      this.expectCoded(error, 'FeatureMap for attention');
      return undefined;
    }
  }

  expectCoded(error: unknown, label: string, allowed: string[] = ['TypeError', 'RangeError']): void {
    const e = error as { name?: unknown; code?: unknown; message?: unknown };
    if (typeof e !== 'object' || e === null || !allowed.includes(String(e.name)) || typeof e.code !== 'string' || e.code === '') {
      this.fail(`${label}: expected a TypeError / RangeError with a code, got ${String(e?.name)} ${String(e?.code)}: ${String(e?.message ?? e)}`);
      return;
    }
    if (e.code === 'ERR_PERFORMER_INTERNAL') this.fail(`${label}: internal error: ${String(e.message)}`);
    const key = `${String(e.name)} ${e.code}`;
    this.summary.errors[key] = (this.summary.errors[key] ?? 0) + 1;
  }

  fail(message: string): void {
    if (this.summary.failures.length < 50) this.summary.failures.push(`case ${this.summary.cases} (seed ${this.summary.seed}): ${message}`);
  }

  /** Checks a successful output: shape, finiteness, optional reference. */
  checkOutput(label: string, out: Tensor, shape: number[], finiteInputs: boolean, reference?: () => Float64Array): void {
    this.summary.results++;
    if (out.shape.length !== shape.length || out.shape.some((s, i) => s !== shape[i]) || out.data.length !== shape.reduce((a, b) => a * b, 1)) {
      this.fail(`${label}: output shape ${JSON.stringify(out.shape)} (length ${out.data.length}), expected ${JSON.stringify(shape)}`);
      return;
    }
    if (!finiteInputs) {
      this.fail(`${label}: accepted non-finite inputs`);
      return;
    }
    if (!allFinite(out.data)) {
      this.fail(`${label}: non-finite output from finite inputs`);
      return;
    }
    if (reference) {
      this.summary.referenceChecks++;
      const err = relFrobenius(out.data, reference());
      if (!(err <= TOL)) this.fail(`${label}: relative error ${err.toExponential(2)} against the double-precision reference`);
    }
  }

  async attention(): Promise<void> {
    const favor = this.chance(0.6);
    const async = this.chance(0.4);
    const label = `${favor ? 'favor' : 'softmax'}Attention${async ? '' : 'Sync'}`;
    const rank4 = this.chance(0.93);
    const [B, H, Lq, Lk, d, Dv] = [this.dim(), this.dim(), this.dim(), this.dim(), this.dim(), this.dim()];
    const qShape = rank4 ? [B, H, Lq, d] : Array.from({ length: this.rng.int(7) }, () => this.dim());
    const kShape = this.chance(0.05) ? [B, H, Lk, d + 1] : [B, H, Lk, d];
    const vShape = this.chance(0.05) ? [B, H + 1, Lk, Dv] : [B, H, Lk, Dv];
    const q = this.tensorOf(qShape);
    const k = this.tensorOf(kShape);
    const v = this.tensorOf(vShape);
    const options: Record<string, unknown> = {};
    let valid = rank4 && q.wellFormed && k.wellFormed && v.wellFormed && kShape[3] === d && vShape[1] === H;
    if (this.chance(0.4)) options.causal = this.chance(0.95) ? this.chance(0.5) : 'yes';
    if (this.chance(0.2)) {
      const mask = new Uint8Array(B * Lk).map(() => (this.chance(0.7) ? 1 : 0));
      options.keyPaddingMask = this.chance(0.9) ? { data: mask, shape: [B, Lk] } : this.pick([mask, { data: new Float32Array(B * Lk), shape: [B, Lk] }, { data: mask, shape: [Lk, B] }]);
    }
    if (this.chance(0.15)) {
      const outShape = this.chance(0.9) ? [B, H, Lq, Dv] : [B, H, Lq, Dv + 1];
      const n = outShape.reduce((a, b) => a * b, 1);
      options.out = this.chance(0.1) && q.wellFormed ? q.value : { data: this.placed(new Float32Array(n)).array, shape: outShape };
    }
    let map: FeatureMap | undefined;
    if (favor) {
      if (this.chance(0.7)) {
        const m = this.featureMap(d);
        if (m !== undefined) options.featureMap = m;
        if (m instanceof FeatureMap) map = m;
      }
      if (this.chance(0.15)) options.epsilon = this.pick([0, 1e-6, 1e-3, -1, NaN, 'x']);
      if (this.chance(0.15)) options.chunkSize = this.pick([1, 2, 7, 64, 4096, 0, 4097, 2.5]);
    } else if (this.chance(0.2)) {
      options.scale = this.pick([0, 1, 0.125, -2, 1e30, Infinity, NaN, '1']);
    }
    if (this.chance(0.03)) options.typo = true;
    let aborted = false;
    if (async && this.chance(0.1)) {
      const controller = new AbortController();
      options.signal = controller.signal;
      if (this.chance(0.5)) {
        controller.abort();
        aborted = true;
      }
    }
    const call = async (): Promise<Tensor> => {
      const [qv, kv, vv] = [q.value, k.value, v.value] as never[];
      if (favor) return async ? favorAttention(qv, kv, vv, options) : favorAttentionSync(qv, kv, vv, options);
      return async ? softmaxAttention(qv, kv, vv, options) : softmaxAttentionSync(qv, kv, vv, options);
    };
    let out: Tensor;
    try {
      out = await withTimeout(call(), 20000, label);
    } catch (error) {
      if (aborted && (error as { name?: string }).name === 'AbortError') return;
      this.expectCoded(error, label);
      return;
    }
    if (aborted) this.fail(`${label}: an aborted call resolved`);
    if (!valid) {
      this.fail(`${label}: accepted malformed arguments ${JSON.stringify({ qShape, kShape, vShape })}`);
      return;
    }
    valid = valid && q.finite && k.finite && v.finite;
    const clean = q.clean && k.clean && v.clean && B * H * Lq * Lk * (d + Dv) <= 20000;
    const mask = options.keyPaddingMask as { data: Uint8Array } | undefined;
    const refOptions = { causal: options.causal === true, keyPadding: mask?.data ?? null };
    const asTensor = (g: Generated, shape: number[]): Tensor => ({ data: (g.value as Tensor).data, shape });
    const inputs = { q: asTensor(q, qShape), k: asTensor(k, kShape), v: asTensor(v, vShape) };
    const featureMap = map ?? new FeatureMap({ headDim: d, seed: 0 });
    // Adaptive maps without fixed parameters estimate them per call: no reference here.
    const referenceOk = clean && (!favor || (featureMap.kernel !== 'trig' && (!['softmax-opt', 'softmax-dense'].includes(featureMap.kernel) || featureMap.parameters !== null)));
    const reference = referenceOk
      ? favor
        ? () => refFavor(inputs, specOf(featureMap), { ...refOptions, epsilon: (options.epsilon as number | undefined) ?? 0 })
        : () => refSoftmax(inputs, { ...refOptions, scale: options.scale as number | undefined })
      : undefined;
    this.checkOutput(label, out, [B, H, Lq, Dv], valid, reference);
  }

  featureMapApi(): void {
    const label = 'FeatureMap';
    const d = this.pick([1, 2, 3, 8, 16, 64, 65536, 2 ** 31, 0, -1, 1.5, NaN]);
    const options: Record<string, unknown> = { headDim: this.chance(0.95) ? d : String(d) };
    if (this.chance(0.6)) options.numFeatures = this.pick([1, 5, 16, 2 ** 20, 2 ** 20 + 1, 2 ** 40, 0, 2.5, Infinity]);
    if (this.chance(0.5)) options.kernel = this.chance(0.95) ? this.pick(KERNELS) : 'gauss';
    if (this.chance(0.2)) options.seed = this.pick([0, 1, 2 ** 53 - 1, 2 ** 53, -1, 0.5]);
    if (this.chance(0.1)) options.kernelEpsilon = this.pick([0, 1e-3, -1, NaN]);
    if (this.chance(0.1)) options.randomProjection = this.chance(0.5);
    if (this.chance(0.1)) options.orthogonal = this.pick([true, false, 1]);
    if (this.chance(0.05)) options.typo = 1;
    // Sampling costs O(numFeatures · headDim) (orthogonal: · headDim more): the huge sizes
    // go with a huge headDim (an error), or with i.i.d. rows and a small one.
    if (d === 65536) options.orthogonal = false;
    if (d >= 8 && d <= 64 && options.numFeatures === 2 ** 20) options.numFeatures = 16;
    let map: FeatureMap;
    try {
      map = new FeatureMap(options as never);
    } catch (error) {
      this.expectCoded(error, `${label}(${JSON.stringify(options)})`);
      return;
    }
    this.summary.results++;
    const p = map.projection;
    if (p !== null && (p.length !== map.numFeatures * map.headDim || !allFinite(p))) this.fail(`${label}: bad projection`);
    if (map.headDim > 64) return; // big maps: construction was the case
    this.mapMethods(map);
  }

  /** redraw, features, calibrate, setParameters on a map. */
  mapMethods(map: FeatureMap): void {
    const d = map.headDim;
    const adaptive = map.kernel === 'softmax-opt' || map.kernel === 'softmax-dense';
    const op = this.rng.int(4);
    const label = `FeatureMap(${map.kernel}, d=${d}, m=${map.numFeatures}).${['redraw', 'features', 'calibrate', 'setParameters'][op]}`;
    try {
      if (op === 0) {
        map.redraw(this.pick<number | undefined>([undefined, 3, 2 ** 53, -1, 0.5, 'x' as never]));
        this.summary.results++;
      } else if (op === 1) {
        const lead = Array.from({ length: this.rng.int(3) }, () => this.dim());
        const shape = this.chance(0.95) ? [...lead, d] : [...lead, d + 1];
        const x = this.tensorOf(shape);
        const logSpace = this.chance(0.3) ? true : this.chance(0.05) ? 'no' : undefined;
        const out = map.features(x.value as never, { logSpace: logSpace as boolean });
        const rows = x.wellFormed ? lead.reduce((a, b) => a * b, 1) : 0;
        this.summary.results++;
        if (!x.wellFormed || shape[shape.length - 1] !== d) return this.fail(`${label}: accepted a malformed x`);
        if (!x.finite) return this.fail(`${label}: accepted non-finite x`);
        if (out.data.length !== rows * map.featureCount) return this.fail(`${label}: output length ${out.data.length}`);
        // Positive features may overflow to +Infinity (documented); never NaN, and log space is always finite.
        for (const value of out.data) {
          if (Number.isNaN(value) || (logSpace === true && !Number.isFinite(value))) return this.fail(`${label}: ${value} from finite inputs`);
        }
        if (x.clean && logSpace === undefined && rows * map.featureCount <= 4096) {
          const reference = refFeatures(specOf(map), (x.value as Tensor).data, rows, 0);
          // Features beyond float range (a given projection with huge rows) are +Infinity in both.
          if (allFinite(Float32Array.from(reference))) {
            this.summary.referenceChecks++;
            const err = relFrobenius(out.data, reference);
            if (!(err <= TOL)) this.fail(`${label}: relative error ${err.toExponential(2)} against the reference`);
          }
        }
      } else if (op === 2) {
        const L = this.dim();
        const lead = this.chance(0.5) ? [this.dim()] : [];
        const q = this.tensorOf([...lead, L, d]);
        const k = this.tensorOf([...lead, this.dim(), d]);
        const params = map.calibrate(q.value as never, k.value as never);
        this.summary.results++;
        if (!q.wellFormed || !k.wellFormed || !adaptive) return this.fail(`${label}: accepted malformed arguments`);
        if (!q.finite || !k.finite) return this.fail(`${label}: accepted non-finite inputs`);
        if (!allFinite(params.coefficients) || (params.basis !== null && !allFinite(params.basis))) {
          return this.fail(`${label}: non-finite parameters from finite inputs`);
        }
      } else {
        const heads = this.pick([1, 2]);
        const coefficients = new Float64Array(heads * d).map(() => (this.chance(0.05) ? this.pick([NaN, 0.125, 1, -Infinity]) : -0.05 * this.rng.uniform()));
        let basis: Float64Array | null = null;
        if (map.kernel === 'softmax-dense' || this.chance(0.05)) {
          basis = new Float64Array(heads * d * d);
          for (let h = 0; h < heads; h++) for (let i = 0; i < d; i++) basis[h * d * d + i * d + i] = 1;
          if (this.chance(0.1)) basis[0] = this.pick([2, NaN]);
        }
        const parameters = this.chance(0.05) ? this.pick([null, {}, { heads: 0 }, 'x']) : { heads, coefficients, basis };
        map.setParameters(parameters as never);
        this.summary.results++;
      }
    } catch (error) {
      this.expectCoded(error, label, ['TypeError', 'RangeError', ...(op === 0 ? ['Error'] : [])]);
      if (op === 0 && (error as { name?: string }).name === 'Error' && (error as { code?: string }).code !== 'ERR_INVALID_STATE') {
        this.fail(`${label}: unexpected error code`);
      }
    }
  }

  fromProjection(): void {
    const d = this.pick([1, 2, 4, 8, 16]);
    const m = this.pick([1, 3, 8, 2 ** 20, 2 ** 40]);
    const n = this.chance(0.9) ? Math.min(m * d, 4096) : 5;
    const projection = this.chance(0.9) ? this.placed(this.values(n).data).array : this.junk([n]);
    const options: Record<string, unknown> = { headDim: d, numFeatures: m };
    if (this.chance(0.5)) options.kernel = this.pick(KERNELS);
    if (this.chance(0.1)) delete options.numFeatures;
    try {
      const map = FeatureMap.fromProjection(projection as never, options as never);
      this.summary.results++;
      this.mapMethods(map);
    } catch (error) {
      this.expectCoded(error, 'FeatureMap.fromProjection');
    }
  }

  backend(): void {
    const before = backendInfo();
    const options = this.pick<unknown>([
      { isa: this.pick(before.available) },
      { threads: 1 + this.rng.int(4) },
      { isa: this.pick(['scalar', 'avx2', 'avx512', 'neon', 'AVX2', '']) },
      { threads: this.pick([0, -1, 1.5, 1025, NaN, '2', 2 ** 40]) },
      { isa: 3 },
      {},
      null,
      undefined,
      'avx2',
      { cores: 2 },
    ]);
    try {
      const info = setBackend(options as never);
      this.summary.results++;
      if (!info.available.includes(info.isa) || !(info.threads >= 1)) this.fail(`setBackend: bad info ${JSON.stringify(info)}`);
    } catch (error) {
      this.expectCoded(error, `setBackend(${JSON.stringify(options)})`);
    }
  }

  tensorApi(): void {
    const shape = Array.from({ length: this.rng.int(6) }, () => this.dim());
    const n = shape.reduce((a, b) => a * b, 1);
    const args: [unknown, unknown] = this.pick<() => [unknown, unknown]>([
      () => [new Float32Array(n), shape],
      () => [this.placed(new Float32Array(n)).array, shape],
      () => [new Float32Array(n + 1), shape],
      () => [new Float64Array(n), shape],
      () => [Array.from({ length: n }, () => 0), shape],
      () => [new Float32Array(4), [2 ** 20, 2 ** 20, 2 ** 10, 64]],
      () => [new Float32Array(4), [2 ** 60, 2 ** 60]],
      () => [new Float32Array(n), 'shape'],
      () => [null, shape],
      () => [new Float32Array(n), [...shape, NaN]],
    ])();
    try {
      const t = tensor(args[0] as never, args[1] as never);
      this.summary.results++;
      if (t.data !== args[0] || t.data.length !== t.shape.reduce((a, b) => a * b, 1)) this.fail('tensor: inconsistent result');
    } catch (error) {
      this.expectCoded(error, 'tensor');
    }
  }

  async one(): Promise<void> {
    this.summary.cases++;
    const r = this.rng.uniform();
    if (r < 0.55) await this.attention();
    else if (r < 0.72) this.featureMapApi();
    else if (r < 0.8) this.fromProjection();
    else if (r < 0.84) this.backend();
    else this.tensorApi();
    this.keep.length = 0;
  }
}


export function withTimeout<T>(promise: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label}: no result after ${ms} ms (hang)`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A sync call whose SharedArrayBuffer inputs another thread rewrites meanwhile (values
 * stay in [-3, 3]): the call must return finite values or throw a coded error.
 */
async function sharedMutation(fuzzer: Fuzzer, rounds: number): Promise<void> {
  const L = 512;
  const d = 32;
  const sab = new SharedArrayBuffer(3 * L * d * 4);
  const all = new Float32Array(sab);
  for (let i = 0; i < all.length; i++) all[i] = Math.sin(i);
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     const a = new Float32Array(workerData); const flag = new Int32Array(new SharedArrayBuffer(4));
     parentPort.postMessage('ready'); let t = 0;
     for (;;) { for (let i = 0; i < a.length; i += 7) a[i] = 3 * Math.sin(i + t); t++; Atomics.wait(flag, 0, 0, 0); }`,
    { eval: true, workerData: sab },
  );
  await new Promise((resolve) => worker.once('message', resolve));
  const view = (i: number) => ({ data: new Float32Array(sab, i * L * d * 4, L * d), shape: [1, 1, L, d] });
  try {
    for (let r = 0; r < rounds; r++) {
      fuzzer.summary.cases++;
      const favor = r % 2 === 0;
      const label = `${favor ? 'favor' : 'softmax'}AttentionSync on a SharedArrayBuffer rewritten meanwhile`;
      try {
        const out = favor
          ? favorAttentionSync(view(0), view(1), view(2), { causal: r % 4 === 0 })
          : softmaxAttentionSync(view(0), view(1), view(2), { causal: r % 4 === 1 });
        fuzzer.checkOutput(label, out, [1, 1, L, d], true);
      } catch (error) {
        fuzzer.expectCoded(error, label);
      }
    }
  } finally {
    await worker.terminate();
  }
}

export async function runFuzz(seed: number, count: number, onCase?: (i: number) => void): Promise<Summary> {
  const fuzzer = new Fuzzer(seed);
  const initial = backendInfo();
  try {
    for (let i = 0; i < count; i++) {
      onCase?.(i);
      await fuzzer.one();
    }
    await sharedMutation(fuzzer, 40);
  } finally {
    setBackend({ isa: initial.isa, threads: initial.threads });
  }
  return fuzzer.summary;
}

/**
 * The child process's main: runs `count` cases of seed argv[2] (count argv[3]), writing
 * `case N` to stderr before each (so a crash names it) and the summary as one JSON line.
 */
export function fuzzMain(run: (seed: number, count: number, onCase: (i: number) => void) => Promise<unknown>, defaultCount: number): void {
  const seed = Number(process.argv[2] ?? 1);
  const count = Number(process.argv[3] ?? defaultCount);
  run(seed, count, (i) => writeSync(2, `case ${i}\n`)).then(
    (summary) => console.log(JSON.stringify(summary)),
    (error) => {
      console.error(error);
      process.exit(2);
    },
  );
}

if (require.main === module) {
  fuzzMain(runFuzz, 1000);
}
