/**
 * FeatureMap: the random features phi(x) that FAVOR attention uses in place of
 * exp(q.k / sqrt(d)), with their projection W (m x d).
 */
import { randomInt } from 'node:crypto';

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
 */
export type FeatureKernel = 'softmax' | 'softmax-hyperbolic' | 'trig' | 'relu' | 'elu' | 'exp' | 'abs';

const KERNELS: readonly FeatureKernel[] = ['softmax', 'softmax-hyperbolic', 'trig', 'relu', 'elu', 'exp', 'abs'];
const GENERALIZED: readonly FeatureKernel[] = ['relu', 'elu', 'exp', 'abs'];

/** How projection rows are scaled: `chi` (norm of a fresh Gaussian vector, unbiased) or `sqrt` (norm √d). */
export type NormScaling = 'chi' | 'sqrt';

/** Options of `new FeatureMap(options)`. */
export interface FeatureMapOptions {
  /** d, the width of the query and key rows. Required. */
  headDim: number;
  /** m, the number of random projections. Default: max(d, round(d ln d)) (266 for d = 64). */
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
}

const MAX_FEATURES = 1 << 20;
const MAX_HEAD_DIM = 1 << 16;
const MAX_SEED = Number.MAX_SAFE_INTEGER;

function defaultNumFeatures(headDim: number): number {
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
  /** m, the number of random projections. */
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
    ]);
    if (options === undefined) throw typeError('FeatureMap options: expected an object with headDim, received undefined');
    if (o.headDim === undefined) throw typeError('FeatureMap options.headDim: required, received undefined');
    this.headDim = readInteger(o.headDim, 'FeatureMap options.headDim', 0, 1, MAX_HEAD_DIM);
    this.kernel = readEnum(o.kernel, 'FeatureMap options.kernel', 'softmax', KERNELS);
    this.randomProjection = readBoolean(o.randomProjection, 'FeatureMap options.randomProjection', true);
    if (!this.randomProjection && !GENERALIZED.includes(this.kernel)) {
      throw rangeError(
        `FeatureMap options.randomProjection: false is only for the generalized kernels (${GENERALIZED.join(', ')}), ` +
          `received kernel '${this.kernel}'`,
        'ERR_INVALID_ARG_VALUE',
      );
    }
    const fallbackM = this.randomProjection ? defaultNumFeatures(this.headDim) : this.headDim;
    this.numFeatures = readInteger(o.numFeatures, 'FeatureMap options.numFeatures', fallbackM, 1, MAX_FEATURES);
    if (!this.randomProjection && this.numFeatures !== this.headDim) {
      throw rangeError(
        `FeatureMap options.numFeatures: without a random projection there are headDim = ${this.headDim} features, received ${this.numFeatures}`,
      );
    }
    this.orthogonal = readBoolean(o.orthogonal, 'FeatureMap options.orthogonal', true);
    this.normScaling = readEnum(o.normScaling, 'FeatureMap options.normScaling', 'chi', ['chi', 'sqrt'] as const);
    this.kernelEpsilon = readNumber(o.kernelEpsilon, 'FeatureMap options.kernelEpsilon', 1e-3, { min: 0 });
    this._seed = readSeed(o.seed, 'FeatureMap options.seed');
    this._sampled = true;
    this._projection = this.randomProjection ? this._sample(this._seed) : null;
    this._pack();
  }

  /**
   * A feature map with a given projection (for example a trained model's), copied.
   * `projection` is m x d row-major: numFeatures * headDim floats.
   * @throws TypeError when `projection` is not a Float32Array or headDim / numFeatures is
   *   missing; RangeError when its length is not numFeatures * headDim or a value is not finite.
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
    const numFeatures = readInteger(o.numFeatures, 'FeatureMap.fromProjection options.numFeatures', 0, 1, MAX_FEATURES);
    if (projection.length !== headDim * numFeatures) {
      throw rangeError(
        `projection: expected numFeatures * headDim = ${numFeatures} * ${headDim} = ${numFeatures * headDim} elements, received ${projection.length}`,
      );
    }
    for (let i = 0; i < projection.length; i++) {
      if (!Number.isFinite(projection[i])) {
        throw rangeError(`projection: values must be finite, received ${projection[i]} at index ${i}`);
      }
    }
    const map = Object.create(FeatureMap.prototype) as FeatureMap;
    const fields = {
      headDim,
      numFeatures,
      kernel: readEnum(o.kernel, 'FeatureMap.fromProjection options.kernel', 'softmax', KERNELS),
      orthogonal: false,
      normScaling: 'chi' as NormScaling,
      kernelEpsilon: readNumber(o.kernelEpsilon, 'FeatureMap.fromProjection options.kernelEpsilon', 1e-3, { min: 0 }),
      randomProjection: true,
    };
    Object.assign(map, fields);
    map._seed = undefined;
    map._sampled = false;
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

  /** Features per row: 2 * numFeatures for 'softmax-hyperbolic' and 'trig', else numFeatures. */
  get featureCount(): number {
    return this.kernel === 'softmax-hyperbolic' || this.kernel === 'trig' ? 2 * this.numFeatures : this.numFeatures;
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
   * phi(x) for x of shape [..., headDim]: a tensor of shape [..., featureCount].
   * The projection and log-features are computed in float32, the final exp in
   * double; positive features of very large inputs can exceed float range
   * (Infinity): use `logSpace` for those.
   * @throws RangeError when the last dimension of `x` is not headDim, for `logSpace` with
   *   `trig`, or for non-finite inputs.
   */
  features(x: TensorLike, options?: FeaturesOptions): Tensor {
    const o = readOptions<FeaturesOptions>(options, 'features options', ['logSpace']);
    const logSpace = readBoolean(o.logSpace, 'features options.logSpace', false);
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
    const data = native().computeFeatures(t.data, rows, this.nativeSpec(), logSpace);
    return { data, shape: Object.freeze([...t.shape.slice(0, -1), this.featureCount]) };
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
    orthogonal: true,
    normScaling: 'chi',
    ...options,
  });
}
