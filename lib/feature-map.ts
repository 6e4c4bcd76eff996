/**
 * FeatureMap: the random features phi(x) that FAVOR attention uses in place of
 * exp(q.k / sqrt(d)), with their projection W (m x d).
 */
import { randomInt } from 'node:crypto';

import {
  DEFAULT_KERNEL,
  DEFAULT_KERNEL_EPSILON,
  DEFAULT_NORM_SCALING,
  DEFAULT_ORTHOGONAL,
  MAX_HEAD_DIM,
  MAX_NUM_FEATURES,
} from './defaults';
import { describe, rangeError, stateError, typeError } from './errors';
import { native, type NativeFeatureMap } from './native';
import type { Tensor, TensorLike } from './tensor';
import { formatShape, isFloat32Array, readBoolean, readEnum, readInteger, readNumber, readOptions, readTensor } from './validate';

/**
 * The kernel a feature map estimates (or, for the generalized kernels, defines):
 * - `softmax` (FAVOR+, default): positive random features, an unbiased estimator of exp(q.k / sqrt(d)).
 * - `softmax-hyperbolic`: positive features [exp(u), exp(-u)] (2m of them), lower variance.
 * - `trig`: classic random Fourier features [sin u, cos u] (2m); unstable where attention
 *   values are small; kept for comparison.
 * - `relu`, `elu` (elu + 1), `exp`, `abs`: generalized kernels f(W x_hat) + kernelEpsilon;
 *   not estimators of softmax, different attention kernels.
 * - `softmax-opt` (FAVOR++, optimal positive random features): unbiased positive features
 *   D·exp(A‖w‖² + √(1−4A)·w·x̂ − ‖x̂‖²/2) with A ≤ 0 chosen from the data to minimize the
 *   variance; A = 0 is `softmax`. See {@link AdaptiveParameters}.
 * - `softmax-dense` (SDERF, dense exponential features): the same with one A per direction of
 *   an orthogonal basis Q (the eigenvectors of the mean (x̂+ŷ)(x̂+ŷ)ᵀ); lower variance for
 *   anisotropic queries and keys.
 *
 * The adaptive kernels estimate their parameters per (batch, head) at each bidirectional call
 * unless they are fixed ({@link FeatureMap.calibrate}, {@link FeatureMap.setParameters});
 * causal attention requires fixed parameters.
 */
export type FeatureKernel =
  | 'softmax'
  | 'softmax-hyperbolic'
  | 'trig'
  | 'relu'
  | 'elu'
  | 'exp'
  | 'abs'
  | 'softmax-opt'
  | 'softmax-dense';

const KERNELS: readonly FeatureKernel[] = [
  'softmax',
  'softmax-hyperbolic',
  'trig',
  'relu',
  'elu',
  'exp',
  'abs',
  'softmax-opt',
  'softmax-dense',
];
const ADAPTIVE: readonly FeatureKernel[] = ['softmax-opt', 'softmax-dense'];

/**
 * Fixed parameters of the adaptive kernels (`softmax-opt`, `softmax-dense`). With the
 * coefficients a_k (< 1/8) and an orthogonal basis Q, feature f of x̂ = d^(-1/4) x is
 * D·m^(-1/2)·exp(Σ_k a_k w_fk² + Σ_k √(1−4a_k)·w_fk·(Qᵀx̂)_k − ‖x̂‖²/2), D = Π_k (1−4a_k)^(1/4):
 * an unbiased estimator of exp(x̂·ŷ) for any such parameters, with the least variance at
 * the optimum that {@link FeatureMap.calibrate} computes.
 */
export interface AdaptiveParameters {
  /** Parameter sets: 1 (shared by every head) or one per attention head H (head h of every batch entry uses set h). */
  heads: number;
  /** a_k per set, heads × headDim; every value finite and below 1/8. For `softmax-opt` the optimum has all a_k of a set equal to A. */
  coefficients: Float64Array;
  /** Q per set, heads × headDim × headDim row-major, eigenvectors in columns (orthogonal); null for `softmax-opt` (Q = I). */
  basis: Float64Array | null;
}
const GENERALIZED: readonly FeatureKernel[] = ['relu', 'elu', 'exp', 'abs'];

/** How projection rows are scaled: `chi` (norm of a fresh Gaussian vector, unbiased) or `sqrt` (norm √d). */
export type NormScaling = 'chi' | 'sqrt';

/** Options of `new FeatureMap(options)`. */
export interface FeatureMapOptions {
  /** d, the width of the query and key rows. Required. */
  headDim: number;
  /** m, the number of random projections (not φ's width: see {@link FeatureMap.outputFeatures}). Default: max(d, round(d ln d)) (266 for d = 64). */
  numFeatures?: number;
  /** Default 'softmax' (FAVOR+). */
  kernel?: FeatureKernel;
  /** Orthogonal random features (blocks of d orthogonal rows). Default true; false: i.i.d. Gaussian rows. */
  orthogonal?: boolean;
  /** Row norms: 'chi' (default, unbiased) or 'sqrt' (every row has norm sqrt(d)). */
  normScaling?: NormScaling;
  /** Integer from 0 to 2^53 - 1. Same seed, same projection bit for bit on every platform. Default: random. */
  seed?: number;
  /** Added to every feature of the generalized kernels (relu, elu, exp, abs). Default 1e-3. */
  kernelEpsilon?: number;
  /**
   * Generalized kernels only: false applies f to x_hat itself (no projection,
   * numFeatures = headDim). Default true.
   */
  randomProjection?: boolean;
  /** `softmax-opt` / `softmax-dense` only: fixed parameters (see {@link FeatureMap.setParameters}). Default: estimated per call. */
  parameters?: AdaptiveParameters;
}

/** Options of {@link FeatureMap.fromProjection}. */
export interface FromProjectionOptions {
  /** d, the projection's columns. Required. */
  headDim: number;
  /** m, the projection's rows. Required. */
  numFeatures: number;
  /** Default 'softmax'. */
  kernel?: FeatureKernel;
  /** Added to the generalized kernels' features. Default 1e-3. */
  kernelEpsilon?: number;
}

/** Options of {@link FeatureMap.features}. */
export interface FeaturesOptions {
  /** Return log|phi(x)| (finite for every finite input of the positive kernels). Default false. */
  logSpace?: boolean;
  /** Adaptive kernels: which fixed parameter set to use. Default 0. */
  head?: number;
}

const MAX_SEED = Number.MAX_SAFE_INTEGER;

/** @internal The default m for a head width d. */
export function defaultNumFeatures(headDim: number): number {
  return Math.max(headDim, Math.round(headDim * Math.log(headDim)));
}

/**
 * Random features φ with φ(q)·φ(k) ≈ exp(q·k/√d), and their projection W (numFeatures × headDim).
 * Pass one to {@link favorAttention} as `featureMap`; reuse it across calls (it is sampled and
 * packed once).
 *
 * `new FeatureMap(options)` samples W from `options.seed` (same seed, same W bit for bit
 * everywhere). Throws TypeError (`ERR_INVALID_ARG_TYPE`) for a missing `headDim` or a wrong
 * type, TypeError (`ERR_INVALID_ARG_VALUE`) for an unknown option, RangeError
 * (`ERR_INVALID_ARG_VALUE`) for an unknown kernel or norm scaling, RangeError (`ERR_OUT_OF_RANGE`) for a number out of range (headDim 1 … 65536, numFeatures 1 … 2²⁰,
 * seed 0 … 2⁵³−1).
 */
export class FeatureMap {
  /** d. */
  readonly headDim: number;
  /** m, the number of random projections (φ's width is {@link FeatureMap.outputFeatures}). */
  readonly numFeatures: number;
  /** The kernel (see {@link FeatureKernel}). */
  readonly kernel: FeatureKernel;
  /** Whether W has orthogonal blocks (false for a given projection). */
  readonly orthogonal: boolean;
  /** How W's rows are scaled. */
  readonly normScaling: NormScaling;
  /** Added to the generalized kernels' features. */
  readonly kernelEpsilon: number;
  /** False when a generalized kernel is applied to x̂ without a projection. */
  readonly randomProjection: boolean;
  private _seed: number | undefined;
  private _projection: Float32Array | null;
  private _packed!: Float32Array;
  private _sampled: boolean;
  private _parameters: AdaptiveParameters | null = null;

  constructor(options: FeatureMapOptions) {
    const o = readOptions<FeatureMapOptions>(options, 'FeatureMap options', [
      'headDim',
      'numFeatures',
      'kernel',
      'orthogonal',
      'normScaling',
      'seed',
      'kernelEpsilon',
      'randomProjection',
      'parameters',
    ]);
    if (options === undefined) throw typeError('FeatureMap options: expected an object with headDim, received undefined');
    if (o.headDim === undefined) throw typeError('FeatureMap options.headDim: required, received undefined');
    this.headDim = readInteger(o.headDim, 'FeatureMap options.headDim', 0, 1, MAX_HEAD_DIM);
    this.kernel = readEnum(o.kernel, 'FeatureMap options.kernel', DEFAULT_KERNEL, KERNELS);
    this.randomProjection = readBoolean(o.randomProjection, 'FeatureMap options.randomProjection', true);
    if (!this.randomProjection && !GENERALIZED.includes(this.kernel)) {
      throw rangeError(
        `FeatureMap options.randomProjection: false is only for the generalized kernels (${GENERALIZED.join(', ')}), ` +
          `received kernel '${this.kernel}'`,
        'ERR_INVALID_ARG_VALUE',
      );
    }
    const fallbackM = this.randomProjection ? defaultNumFeatures(this.headDim) : this.headDim;
    this.numFeatures = readInteger(o.numFeatures, 'FeatureMap options.numFeatures', fallbackM, 1, MAX_NUM_FEATURES);
    if (!this.randomProjection && this.numFeatures !== this.headDim) {
      throw rangeError(
        `FeatureMap options.numFeatures: without a random projection there are headDim = ${this.headDim} features, received ${this.numFeatures}`,
      );
    }
    this.orthogonal = readBoolean(o.orthogonal, 'FeatureMap options.orthogonal', DEFAULT_ORTHOGONAL);
    this.normScaling = readEnum(o.normScaling, 'FeatureMap options.normScaling', DEFAULT_NORM_SCALING, ['chi', 'sqrt'] as const);
    this.kernelEpsilon = readNumber(o.kernelEpsilon, 'FeatureMap options.kernelEpsilon', DEFAULT_KERNEL_EPSILON, { min: 0 });
    this._seed = readSeed(o.seed, 'FeatureMap options.seed');
    this._sampled = true;
    this._projection = this.randomProjection ? this._sample(this._seed) : null;
    this._pack();
    if (o.parameters !== undefined) this.setParameters(o.parameters);
  }

  /**
   * The variance-optimal FAVOR++ coefficient A* = −ρ / (d − 2ρ + √((2ρ + d)² + 8dρ)) (≤ 0),
   * for ρ = the mean of ‖x̂ + ŷ‖² over query–key pairs (x̂ = d^(-1/4) q, ŷ = d^(-1/4) k) and
   * d = headDim. Use it to fix `softmax-opt` parameters from known statistics.
   * @throws RangeError for a negative or non-finite ρ or a headDim that is not a positive integer.
   */
  static optimalCoefficient(rho: number, headDim: number): number {
    const r = readNumber(rho, 'rho', 0, { min: 0 });
    const d = readInteger(headDim, 'headDim', 0, 1, MAX_HEAD_DIM);
    return -r / (d - 2 * r + Math.sqrt((2 * r + d) ** 2 + 8 * d * r));
  }

  /** The fixed parameters of an adaptive kernel (a copy), or null when they are estimated per call. */
  get parameters(): AdaptiveParameters | null {
    const p = this._parameters;
    if (p === null) return null;
    return { heads: p.heads, coefficients: Float64Array.from(p.coefficients), basis: p.basis && Float64Array.from(p.basis) };
  }

  /**
   * Fixes the parameters of `softmax-opt` / `softmax-dense` (copied), or with null goes back to
   * estimating them per (batch, head) at each call. Fixed parameters make the features the same
   * from call to call, and are required for causal attention.
   * @throws RangeError (`ERR_INVALID_ARG_VALUE`) for a non-adaptive kernel; TypeError for a wrong
   *   type or an unknown key; RangeError for wrong lengths, a coefficient that is not finite or not
   *   below 1/8, or a basis that is not orthogonal (to 1e-6).
   */
  setParameters(parameters: AdaptiveParameters | null): void {
    if (!ADAPTIVE.includes(this.kernel)) {
      throw rangeError(
        `FeatureMap.setParameters: parameters are for the adaptive kernels (softmax-opt, softmax-dense), this map's kernel is '${this.kernel}'`,
        'ERR_INVALID_ARG_VALUE',
      );
    }
    if (parameters === null) {
      this._parameters = null;
      return;
    }
    this._parameters = readParameters(parameters, 'parameters', this.headDim, this.kernel);
  }

  /**
   * Fixes the parameters of an adaptive kernel to their optimum for a calibration batch (for
   * example a prompt, before causal generation) and returns them. `query` and `key` have shape
   * [B, H, L, d], [H, L, d] or [L, d] (same leading dimensions, lengths may differ); one set per
   * head H, from the statistics of that head over every batch entry. O(L·d) for `softmax-opt`,
   * O(L·d²) plus a d×d eigendecomposition per head for `softmax-dense`.
   * @throws RangeError (`ERR_INVALID_ARG_VALUE`) for a non-adaptive kernel; RangeError for shapes
   *   that do not fit, non-finite values or rows whose squared norm (of d^(-1/4) x) exceeds 1e30.
   */
  calibrate(query: TensorLike, key: TensorLike): AdaptiveParameters {
    if (!ADAPTIVE.includes(this.kernel)) {
      throw rangeError(
        `FeatureMap.calibrate: calibration is for the adaptive kernels (softmax-opt, softmax-dense), this map's kernel is '${this.kernel}'`,
        'ERR_INVALID_ARG_VALUE',
      );
    }
    const q = readTensor(query, 'query');
    const k = readTensor(key, 'key');
    const rank = q.shape.length;
    if (rank < 2 || rank > 4 || k.shape.length !== rank) {
      throw rangeError(
        `query/key: expected rank 2 to 4 ([B, H, L, d], [H, L, d] or [L, d]) and equal ranks, received ${formatShape(q.shape)} and ${formatShape(k.shape)}`,
      );
    }
    if (q.shape[rank - 1] !== this.headDim || k.shape[rank - 1] !== this.headDim) {
      throw rangeError(
        `query/key: expected last dimension headDim = ${this.headDim}, received ${formatShape(q.shape)} and ${formatShape(k.shape)}`,
      );
    }
    for (let i = 0; i < rank - 2; i++) {
      if (q.shape[i] !== k.shape[i]) {
        throw rangeError(`query/key: leading dimensions differ, received ${formatShape(q.shape)} and ${formatShape(k.shape)}`);
      }
    }
    const batch = rank === 4 ? q.shape[0] : 1;
    const heads = rank >= 3 ? q.shape[rank - 3] : 1;
    const dims = { batch, heads, queryLength: q.shape[rank - 2], keyLength: k.shape[rank - 2], headDim: this.headDim };
    if (dims.queryLength === 0 || dims.keyLength === 0 || batch === 0 || heads === 0) {
      throw rangeError(`query/key: calibration needs at least one query and one key, received ${formatShape(q.shape)} and ${formatShape(k.shape)}`);
    }
    const r = native().calibrateFeatures(q.data, k.data, dims, this.kernel);
    this._parameters = { heads, coefficients: r.coefficients, basis: r.basis };
    return this.parameters!;
  }

  /**
   * A feature map with a given projection (for example a trained model's), copied.
   * `projection` is m x d row-major: numFeatures * headDim floats.
   * @throws TypeError when `projection` is not a Float32Array or headDim / numFeatures is
   *   missing; RangeError when its length is not numFeatures * headDim, a value is not finite
   *   or a row's squared norm exceeds 1e30.
   */
  static fromProjection(projection: Float32Array, options: FromProjectionOptions): FeatureMap {
    if (!isFloat32Array(projection)) {
      throw typeError(`projection: expected a Float32Array, received ${describe(projection)}`);
    }
    const o = readOptions<FromProjectionOptions>(options, 'FeatureMap.fromProjection options', [
      'headDim',
      'numFeatures',
      'kernel',
      'kernelEpsilon',
    ]);
    if (o.headDim === undefined || o.numFeatures === undefined) {
      throw typeError('FeatureMap.fromProjection options: headDim and numFeatures are required');
    }
    const headDim = readInteger(o.headDim, 'FeatureMap.fromProjection options.headDim', 0, 1, MAX_HEAD_DIM);
    const numFeatures = readInteger(o.numFeatures, 'FeatureMap.fromProjection options.numFeatures', 0, 1, MAX_NUM_FEATURES);
    if (projection.length !== headDim * numFeatures) {
      throw rangeError(
        `projection: expected numFeatures * headDim = ${numFeatures} * ${headDim} = ${numFeatures * headDim} elements, received ${projection.length}`,
      );
    }
    for (let f = 0; f < numFeatures; f++) {
      let norm2 = 0;
      for (let i = f * headDim; i < (f + 1) * headDim; i++) {
        if (!Number.isFinite(projection[i])) {
          throw rangeError(`projection: values must be finite, received ${projection[i]} at index ${i}`);
        }
        norm2 += projection[i] * projection[i];
      }
      // The same bound as on the inputs' rows: w·x̂ and the log-features then stay far from float32 overflow.
      if (norm2 > 1e30) {
        throw rangeError(`projection: row ${f} is too large (squared norm ${norm2.toExponential(2)}, the limit is 1e30)`);
      }
    }
    const map = Object.create(FeatureMap.prototype) as FeatureMap;
    const fields = {
      headDim,
      numFeatures,
      kernel: readEnum(o.kernel, 'FeatureMap.fromProjection options.kernel', DEFAULT_KERNEL, KERNELS),
      orthogonal: false,
      normScaling: 'chi' as NormScaling,
      kernelEpsilon: readNumber(o.kernelEpsilon, 'FeatureMap.fromProjection options.kernelEpsilon', DEFAULT_KERNEL_EPSILON, { min: 0 }),
      randomProjection: true,
    };
    Object.assign(map, fields);
    map._seed = undefined;
    map._sampled = false;
    map._parameters = null;
    map._projection = Float32Array.from(projection);
    map._pack();
    return map;
  }

  /** The seed the projection was sampled with (undefined for a given projection). */
  get seed(): number | undefined {
    return this._seed;
  }

  /** A copy of W, numFeatures x headDim row-major; null without a random projection. */
  get projection(): Float32Array | null {
    return this._projection === null ? null : Float32Array.from(this._projection);
  }

  /**
   * F, the width of φ(x): the features per row that attention sums over. Not the same as
   * `numFeatures` (m, the projections): 'softmax-hyperbolic' and 'trig' give two features
   * per projection (F = 2m), the other kernels one (F = m).
   */
  get outputFeatures(): number {
    return this.kernel === 'softmax-hyperbolic' || this.kernel === 'trig' ? 2 * this.numFeatures : this.numFeatures;
  }

  /** @deprecated The same as {@link FeatureMap.outputFeatures}, whose name says it is φ's width, not `numFeatures`. */
  get featureCount(): number {
    return this.outputFeatures;
  }

  /**
   * Samples a new projection (with `seed`, or a random one). Not for maps made by fromProjection.
   * @throws Error (`ERR_INVALID_STATE`) on a map made by fromProjection; RangeError for a bad seed.
   */
  redraw(seed?: number): void {
    if (!this._sampled) {
      throw stateError('FeatureMap.redraw: this map holds a given projection; build a new FeatureMap to sample one');
    }
    const s = readSeed(seed, 'seed');
    this._seed = s;
    if (this.randomProjection) {
      this._projection = this._sample(s);
      this._pack();
    }
  }

  /**
   * phi(x) for x of shape [..., headDim]: a tensor of shape [..., outputFeatures].
   * The projection and log-features are computed in float32, the final exp in
   * double; positive features of very large inputs can exceed float range
   * (Infinity): use `logSpace` for those.
   * @throws RangeError when the last dimension of `x` is not headDim, for `logSpace` with
   *   `trig`, for non-finite inputs or rows whose squared norm (of d^(-1/4) x) exceeds 1e30
   *   (as in attention); RangeError (`ERR_MEMORY_ALLOCATION_FAILED`) when the output cannot be allocated.
   */
  features(x: TensorLike, options?: FeaturesOptions): Tensor {
    const o = readOptions<FeaturesOptions>(options, 'features options', ['logSpace', 'head']);
    const logSpace = readBoolean(o.logSpace, 'features options.logSpace', false);
    let head = 0;
    if (ADAPTIVE.includes(this.kernel)) {
      if (this._parameters === null) {
        throw rangeError(
          `FeatureMap.features: kernel '${this.kernel}' needs fixed parameters here (calibrate or setParameters); attention estimates them per call`,
          'ERR_INVALID_ARG_VALUE',
        );
      }
      head = readInteger(o.head, 'features options.head', 0, 0, this._parameters.heads - 1);
    } else if (o.head !== undefined) {
      throw rangeError(`features options.head: only for the adaptive kernels, this map's kernel is '${this.kernel}'`, 'ERR_INVALID_ARG_VALUE');
    }
    if (logSpace && this.kernel === 'trig') {
      throw rangeError("features options.logSpace: trig features are signed; log space is for positive kernels", 'ERR_INVALID_ARG_VALUE');
    }
    const t = readTensor(x, 'x');
    const last = t.shape[t.shape.length - 1];
    if (last !== this.headDim) {
      throw rangeError(
        `x: expected shape [..., ${this.headDim}] (last dimension headDim), received ${formatShape(t.shape)}`,
      );
    }
    const rows = t.data.length / this.headDim;
    const data = native().computeFeatures(t.data, rows, { ...this.nativeSpec(), adaptiveHead: head }, logSpace);
    return { data, shape: Object.freeze([...t.shape.slice(0, -1), this.outputFeatures]) };
  }

  /** @internal What the addon needs (the projection is passed without a copy). */
  nativeSpec(): NativeFeatureMap {
    return {
      kernel: this.kernel,
      headDim: this.headDim,
      numProjections: this.numFeatures,
      projection: this._projection,
      packedProjection: this._packed,
      kernelEpsilon: this.kernelEpsilon,
      adaptiveHeads: this._parameters ? this._parameters.heads : 0,
      adaptiveCoefficients: this._parameters ? this._parameters.coefficients : null,
      adaptiveBasis: this._parameters ? this._parameters.basis : null,
    };
  }

  private _pack(): void {
    this._packed = native().packProjection(this._projection, this.numFeatures, this.headDim);
  }

  private _sample(seed: number): Float32Array {
    return native().sampleProjection({
      numFeatures: this.numFeatures,
      headDim: this.headDim,
      seed,
      orthogonal: this.orthogonal,
      normScaling: this.normScaling,
    });
  }
}

function readParameters(value: unknown, name: string, d: number, kernel: FeatureKernel): AdaptiveParameters {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw typeError(`${name}: expected an object with heads, coefficients and basis, received ${describe(value)}`);
  }
  const o = readOptions<AdaptiveParameters>(value, name, ['heads', 'coefficients', 'basis']);
  if (o.heads === undefined) throw typeError(`${name}.heads: required, received undefined`);
  const heads = readInteger(o.heads, `${name}.heads`, 1, 1, 1 << 16);
  if (!(o.coefficients instanceof Float64Array)) {
    throw typeError(`${name}.coefficients: expected a Float64Array, received ${describe(o.coefficients)}`);
  }
  if (o.coefficients.length !== heads * d) {
    throw rangeError(`${name}.coefficients: expected heads * headDim = ${heads * d} elements, received ${o.coefficients.length}`);
  }
  for (let i = 0; i < o.coefficients.length; i++) {
    const a = o.coefficients[i];
    if (!Number.isFinite(a) || !(a < 0.125)) {
      throw rangeError(`${name}.coefficients: values must be finite and below 1/8 (finite variance), received ${a} at index ${i}`);
    }
  }
  let basis: Float64Array | null = null;
  if (kernel === 'softmax-dense') {
    if (!(o.basis instanceof Float64Array)) {
      throw typeError(`${name}.basis: expected a Float64Array for 'softmax-dense', received ${describe(o.basis)}`);
    }
    if (o.basis.length !== heads * d * d) {
      throw rangeError(`${name}.basis: expected heads * headDim² = ${heads * d * d} elements, received ${o.basis.length}`);
    }
    for (let h = 0; h < heads; h++) {
      const Q = o.basis.subarray(h * d * d, (h + 1) * d * d);
      for (let i = 0; i < d; i++) {
        for (let j = i; j < d; j++) {
          let s = 0;
          for (let k = 0; k < d; k++) s += Q[k * d + i] * Q[k * d + j];
          if (!(Math.abs(s - (i === j ? 1 : 0)) <= 1e-6)) {
            throw rangeError(`${name}.basis: set ${h} is not orthogonal (column ${i} · column ${j} = ${s})`);
          }
        }
      }
    }
    basis = Float64Array.from(o.basis);
  } else if (o.basis !== undefined && o.basis !== null) {
    throw rangeError(`${name}.basis: 'softmax-opt' uses Q = I; expected null, received ${describe(o.basis)}`, 'ERR_INVALID_ARG_VALUE');
  }
  return { heads, coefficients: Float64Array.from(o.coefficients), basis };
}

function readSeed(value: unknown, name: string): number {
  if (value === undefined) return randomInt(0, 2 ** 47);
  if (typeof value !== 'number') throw typeError(`${name}: expected an integer, received ${describe(value)}`);
  if (!Number.isInteger(value) || value < 0 || value > MAX_SEED) {
    throw rangeError(`${name}: expected an integer from 0 to 2^53 - 1, received ${value}`);
  }
  return value;
}

/** @internal Samples a projection with options tests need (signFix: false shows what the sign fix prevents). */
export function sampleProjectionForTests(options: {
  numFeatures: number;
  headDim: number;
  seed: number;
  orthogonal?: boolean;
  normScaling?: NormScaling;
  signFix?: boolean;
}): Float32Array {
  return native().sampleProjection({
    orthogonal: DEFAULT_ORTHOGONAL,
    normScaling: DEFAULT_NORM_SCALING,
    ...options,
  });
}
