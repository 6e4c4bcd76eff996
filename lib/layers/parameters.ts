/**
 * Parameters of the layers: named slots with shapes (PyTorch layout, weight
 * [out, in]), seeded initialization, loading with errors that name every missing,
 * extra or mis-shaped tensor, and a fingerprint that decoding states carry.
 */
import { crc32 } from '../crc32';
import { describe, rangeError, typeError } from '../errors';
import { native } from '../native';
import { QuantizedWeight, type QuantizedFormat, type WeightFormat } from '../quantization';
import type { Tensor, TensorLike } from '../tensor';
import type { LinearStep } from './plan-steps';
import { formatShape, isFloat32Array, newFloat32Array, readBoolean, readOptions } from '../validate';

/** @internal A named parameter: its shape, a view of its values and how to replace them. */
export interface ParamSlot {
  readonly shape: readonly number[];
  get(): Float32Array;
  set(values: Float32Array): void;
  /** The linear layer whose weight this is (what quantize() visits). */
  readonly linear?: Linear;
}

/** Options of `loadParameters`. */
export interface LoadParametersOptions {
  /** Reject names this module does not have. Default true. */
  strict?: boolean;
  /**
   * Absent `features.projection` tensors keep the layer's own FAVOR+ features, the other
   * names stay checked (with `strict`): how a checkpoint without features (PyTorch's,
   * BERT's) loads while a misspelt or unknown name is still an error. Default: `!strict`.
   */
  keepFeatures?: boolean;
}

const FEATURES_HINT =
  " (FAVOR+ features are not in checkpoints from PyTorch or BERT: pass { keepFeatures: true } to keep the layer's own and check every other name)";

/** @internal A small seeded generator (32-bit state steps) for weight initialization. */
export class InitRandom {
  private state: number;
  constructor(seed: number) {
    this.state = (Math.floor(seed) ^ 0x9e3779b9) >>> 0;
  }
  /** Uniform in [-bound, bound). */
  uniform(bound: number): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    return (2 * u - 1) * bound;
  }
  fill(n: number, bound: number): Float32Array {
    const a = newFloat32Array(n, 'layer weights');
    for (let i = 0; i < n; i++) a[i] = this.uniform(bound);
    return a;
  }
}

/**
 * Largest model, in float32 parameters (feature projections included): 2^32 (16 GiB),
 * the library's tensor size limit. Checked before anything is allocated, so that
 * options naming an impossible model fail at once instead of filling memory first.
 */
export const MAX_MODEL_PARAMETERS = 2 ** 32;

/** @internal Parameters of an attention module (projections with biases, feature projection). */
export function attentionParameterCount(c: { modelDim: number; keyDim: number; valueDim?: number; numHeads: number; headDim: number; featureMap: { numFeatures: number } }): number {
  const inner = c.numHeads * c.headDim;
  return (c.modelDim + c.keyDim + (c.valueDim ?? c.keyDim) + 3) * inner + (inner + 1) * c.modelDim + c.featureMap.numFeatures * c.headDim;
}

/** @internal Parameters of an encoder (cross = false) or decoder block with `ffDim` and `modelDim` D. */
export function blockParameterCount(attention: Parameters<typeof attentionParameterCount>[0], ffDim: number, cross: boolean): number {
  const D = attention.modelDim;
  const self = attentionParameterCount({ ...attention, keyDim: D });
  return (cross ? 2 : 1) * self + (2 * D + 1) * ffDim + D + (cross ? 3 : 2) * 2 * D;
}

// Set while a model is built from a file (readModel): the values the file holds.
let fromFile: { source: string; values: number } | null = null;

/**
 * @internal Builds a model whose parameters all come from a file of `values` float32
 * values (`build` must then load them): the model's size is checked against the file
 * before anything is allocated, and the random features are not sampled (see
 * {@link buildingFromFile}), so that options in a small file cannot make the
 * constructor allocate or compute more than the file's own size.
 */
export function buildFromFile<T>(source: string, values: number, build: () => T): T {
  const outer = fromFile;
  fromFile = { source, values };
  try {
    return build();
  } finally {
    fromFile = outer;
  }
}

/** @internal Whether a model is being built by {@link buildFromFile} (its features will be loaded). */
export function buildingFromFile(): boolean {
  return fromFile !== null;
}

/**
 * @internal RangeError (`ERR_MEMORY_ALLOCATION_FAILED`) for a model of more than {@link MAX_MODEL_PARAMETERS}
 * parameters; inside {@link buildFromFile}, RangeError (`ERR_INVALID_ARG_VALUE`) for a model the file's
 * values cannot hold. `count` may count biases a model without them lacks, but every bias has a
 * weight at least as large, so a model needs at least count / 2 values.
 */
export function checkModelSize(count: number, fn: string, reduce = 'modelDim, numHeads, headDim, ffDim, numFeatures or numLayers'): void {
  if (fromFile !== null && count > 2 * fromFile.values) {
    throw rangeError(
      `${fromFile.source}: the options describe a model of ${count} parameters (${fn}), too many for the ${fromFile.values} values the file holds`,
      'ERR_INVALID_ARG_VALUE',
    );
  }
  if (count > MAX_MODEL_PARAMETERS) {
    throw rangeError(
      `${fn}: a model of ${count} parameters (${((count * 4) / 2 ** 30).toFixed(1)} GiB) is over the limit of ${MAX_MODEL_PARAMETERS} (16 GiB); ` +
        `reduce ${reduce}`,
      'ERR_MEMORY_ALLOCATION_FAILED',
    );
  }
}

/**
 * @internal y = x W^T + b with W [out, in]; the packed copy for the kernels is made on first
 * use. Quantized (see quantization.ts), `weight` holds the dequantized values and the
 * kernels read the stored int8 or bf16 weights.
 */
export class Linear {
  weight: Float32Array;
  bias: Float32Array | null;
  private packedWeight: Float32Array | null = null;
  private quantized: QuantizedWeight | null = null;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    weight: Float32Array,
    bias: Float32Array | null,
  ) {
    this.weight = weight;
    this.bias = bias;
  }

  /** Glorot-uniform weights; biases as PyTorch's Linear (so tests see nonzero biases). */
  static random(inFeatures: number, outFeatures: number, bias: boolean, random: InitRandom): Linear {
    const weight = random.fill(inFeatures * outFeatures, Math.sqrt(6 / (inFeatures + outFeatures)));
    return new Linear(inFeatures, outFeatures, weight, bias ? random.fill(outFeatures, 1 / Math.sqrt(inFeatures)) : null);
  }

  /** `parts` stacked along their outputs (one pass over x yields q, k and v); a copy, quantized as they are. */
  static stacked(parts: Linear[]): Linear {
    const concat = (arrays: (Float32Array | null)[]) => {
      if (arrays.some((a) => a === null)) return null;
      const out = new Float32Array(arrays.reduce((n, a) => n + a!.length, 0));
      arrays.reduce((at, a) => (out.set(a!, at), at + a!.length), 0);
      return out;
    };
    const outFeatures = parts.reduce((n, p) => n + p.outFeatures, 0);
    const stacked = new Linear(parts[0].inFeatures, outFeatures, concat(parts.map((p) => p.weight))!, concat(parts.map((p) => p.bias)));
    // Parts of mixed formats (a checkpoint being rejected) stack as float32.
    if (parts.every((p) => p.quantized !== null && p.format === parts[0].format)) stacked.quantized = QuantizedWeight.stacked(parts.map((p) => p.quantized!));
    return stacked;
  }

  /** How the kernels read the weights. */
  get format(): WeightFormat {
    return this.quantized?.format ?? 'float32';
  }

  /** Stores the weights as `format` from now on; `weight` becomes their dequantized values. */
  quantize(format: QuantizedFormat): void {
    this.setQuantized(QuantizedWeight.fromFloat(this.weight, this.inFeatures, this.outFeatures, format));
  }

  /** Takes stored weights (read from a file); `weight` becomes their dequantized values. */
  setQuantized(q: QuantizedWeight): void {
    q.dequantizeInto(this.weight);
    this.quantized = q;
    this.packedWeight = null;
  }

  /**
   * After `weight` changed in place (an optimizer step): the packed copy is made again.
   * Quantized weights are never trained, so their stored form stands.
   */
  weightChanged(): void {
    this.packedWeight = null;
  }

  /** The stored weights when quantized (values [out, in], scales). */
  get stored(): QuantizedWeight | null {
    return this.quantized;
  }

  /** What a plan's linear step reads: float32, int8 (with {@link scales}) or bf16. */
  get packed(): Float32Array | Int8Array | Uint16Array {
    if (this.quantized !== null) return this.quantized.packed;
    if (this.packedWeight === null) this.packedWeight = native().linearPack(this.weight, this.inFeatures, this.outFeatures);
    return this.packedWeight;
  }

  /** The int8 weights' per-output-channel scales (null otherwise). */
  get scales(): Float32Array | null {
    return this.quantized?.scales ?? null;
  }

  /** What a plan's linear step takes from this layer: its sizes, weights as the kernels read them, and bias. */
  get stepFields(): Pick<LinearStep, 'in' | 'out' | 'packed' | 'scales' | 'bias'> {
    return { in: this.inFeatures, out: this.outFeatures, packed: this.packed, scales: this.scales, bias: this.bias };
  }

  slots(prefix: string, into: Map<string, ParamSlot>): void {
    into.set(`${prefix}.weight`, {
      shape: [this.outFeatures, this.inFeatures],
      get: () => this.weight,
      set: (v) => {
        // The same array back (parametersChanged): a quantized layer keeps its stored weights.
        if (v === this.weight && this.quantized !== null) return;
        this.weight = v;
        this.packedWeight = null;
        // New values in a quantized layer are stored in its format.
        if (this.quantized !== null) this.quantize(this.quantized.format);
      },
      linear: this,
    });
    if (this.bias !== null) {
      into.set(`${prefix}.bias`, { shape: [this.outFeatures], get: () => this.bias!, set: (v) => (this.bias = v) });
    }
  }
}

/** @internal LayerNorm over the last dimension: weight (gamma) and bias (beta). */
export class LayerNorm {
  weight: Float32Array;
  bias: Float32Array;
  constructor(
    readonly dim: number,
    readonly eps: number,
  ) {
    this.weight = new Float32Array(dim).fill(1);
    this.bias = new Float32Array(dim);
  }
  slots(prefix: string, into: Map<string, ParamSlot>): void {
    into.set(`${prefix}.weight`, { shape: [this.dim], get: () => this.weight, set: (v) => (this.weight = v) });
    into.set(`${prefix}.bias`, { shape: [this.dim], get: () => this.bias, set: (v) => (this.bias = v) });
  }
}

function readValues(name: string, value: unknown, shape: readonly number[]): Float32Array {
  const count = shape.reduce((a, b) => a * b, 1);
  let data: Float32Array;
  if (isFloat32Array(value)) {
    data = value;
  } else if (value !== null && typeof value === 'object' && isFloat32Array((value as { data?: unknown }).data)) {
    const t = value as { data: Float32Array; shape?: readonly number[]; dims?: readonly number[] };
    const given: unknown = t.shape !== undefined ? t.shape : t.dims;
    if (given !== undefined && !Array.isArray(given)) {
      throw typeError(`${name}.shape: expected an array of integers, received ${describe(given)}`);
    }
    if (given !== undefined && (given.length !== shape.length || given.some((d, i) => d !== shape[i]))) {
      throw rangeError(`${name}: expected shape ${formatShape(shape)}, received ${formatShape(Array.from(given))}`);
    }
    data = t.data;
  } else {
    throw typeError(`${name}: expected a Float32Array or a tensor { data, shape }, received ${describe(value)}`);
  }
  if (data.length !== count) {
    throw rangeError(`${name}: expected shape ${formatShape(shape)} (${count} values), received ${data.length} values`);
  }
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) throw rangeError(`${name}: values must be finite, received ${data[i]} at index ${i}`);
  }
  return Float32Array.from(data);
}

/** @internal parameters() of a slot map: copies, with frozen shapes. */
export function snapshot(slots: Map<string, ParamSlot>): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, slot] of slots) out[name] = { data: Float32Array.from(slot.get()), shape: Object.freeze([...slot.shape]) };
  return out;
}

/** @internal loadParameters() of a slot map: checks everything before changing anything. */
export function load(
  allSlots: Map<string, ParamSlot>,
  tensors: Record<string, TensorLike | Float32Array>,
  options: LoadParametersOptions | undefined,
  fn: string,
): void {
  const o = readOptions<LoadParametersOptions>(options, `${fn} options`, ['strict', 'keepFeatures']);
  const strict = readBoolean(o.strict, `${fn} options.strict`, true);
  const keepFeatures = readBoolean(o.keepFeatures, `${fn} options.keepFeatures`, !strict);
  let slots = allSlots;
  if (tensors === null || typeof tensors !== 'object' || Array.isArray(tensors) || ArrayBuffer.isView(tensors)) {
    throw typeError(`${fn}: expected an object of named tensors, received ${describe(tensors)}`);
  }
  const isFeatures = (name: string) => name.endsWith('features.projection');
  // Absent feature projections keep the current features: their slots are left out.
  if (keepFeatures) slots = new Map([...slots].filter(([name]) => !isFeatures(name) || name in tensors));
  const missing = [...slots.keys()].filter((name) => !(name in tensors));
  const extra = Object.keys(tensors).filter((name) => !slots.has(name));
  if (missing.length > 0 || (strict && extra.length > 0)) {
    const parts: string[] = [];
    if (missing.length > 0) parts.push(`missing ${missing.join(', ')}${missing.some(isFeatures) ? FEATURES_HINT : ''}`);
    if (strict && extra.length > 0) parts.push(`unexpected ${extra.join(', ')}`);
    throw rangeError(`${fn}: ${parts.join('; ')}`, 'ERR_INVALID_ARG_VALUE');
  }
  const values = new Map<string, Float32Array>();
  for (const [name, slot] of slots) values.set(name, readValues(`${fn}: ${name}`, tensors[name], slot.shape));
  for (const [name, slot] of slots) slot.set(values.get(name)!);
}


/** @internal A fingerprint of a configuration and its parameters (states made by one model fit only it). */
export function fingerprint(config: object, slots: Map<string, ParamSlot>): string {
  let c = crc32(Buffer.from(JSON.stringify(config)));
  for (const [name, slot] of [...slots].sort(([a], [b]) => (a < b ? -1 : 1))) {
    c = crc32(Buffer.from(name), c);
    const v = slot.get();
    c = crc32(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), c);
  }
  return c.toString(16).padStart(8, '0');
}
