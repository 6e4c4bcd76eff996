/**
 * Reading a performer-pytorch state_dict: from a safetensors path, its bytes, or tensors
 * already read. Names are the state_dict's; every problem (a missing, unexpected,
 * mis-shaped or non-finite tensor) is collected and reported in one RangeError that
 * names the tensors and says what was expected.
 */
import { describe, rangeError, typeError } from '../errors';
import { readStoredWeight, scaleName, type QuantizedWeight } from '../quantization';
import { loadSafetensorsSync, readSafetensors } from '../safetensors';
import type { TensorLike } from '../tensor';
import { formatShape, isFloat32Array } from '../validate';

/**
 * What `fromPerformerPytorch` takes as weights: a safetensors path, its bytes, a record of
 * tensors by state_dict name, or what `readSafetensors` returns.
 */
export type PerformerPytorchWeights =
  | string
  | Uint8Array
  | Record<string, TensorLike>
  | {
      /** Tensors by state_dict name. */
      tensors: Record<string, TensorLike>;
      /** The file's metadata (unused). */
      metadata?: Record<string, string>;
    };

// The training-time counter of feature redraws: a buffer of the state_dict, never an input.
const IGNORED = /(^|\.)proj_updater\.calls_since_last_redraw$/;

/**
 * @internal Tensors by state_dict name, as float32 with shapes, and the dtype they were
 * stored in when known (a safetensors file's, or a tensor's `dtype`): 'I8' and 'BF16'
 * linear weights are quantized ones.
 */
export type NamedTensors = Map<string, { data: Float32Array; shape: readonly number[]; dtype?: string }>;

/** @internal Reads the weights argument into named float32 tensors. */
export function readWeights(weights: unknown, fn: string): NamedTensors {
  let record: Record<string, unknown>;
  if (typeof weights === 'string') {
    record = loadSafetensorsSync(weights, { include: (name) => !IGNORED.test(name) }).tensors;
  } else if (weights instanceof Uint8Array) {
    record = readSafetensors(weights, { include: (name) => !IGNORED.test(name) }).tensors;
  } else if (weights !== null && typeof weights === 'object' && !Array.isArray(weights)) {
    const w = weights as { tensors?: unknown };
    record = w.tensors !== null && typeof w.tensors === 'object' && !isFloat32Array(w.tensors) && !('data' in (w.tensors as object))
      ? (w.tensors as Record<string, unknown>)
      : (weights as Record<string, unknown>);
  } else {
    throw typeError(`${fn} weights: expected a safetensors path, its bytes (Uint8Array) or an object of tensors by name, received ${describe(weights)}`);
  }
  const out: NamedTensors = new Map();
  for (const [name, value] of Object.entries(record)) {
    if (IGNORED.test(name)) continue;
    const t = value as { data?: unknown; shape?: unknown; dims?: unknown; dtype?: unknown };
    const shape = t?.shape ?? t?.dims;
    if (value === null || typeof value !== 'object' || !isFloat32Array(t.data) || !Array.isArray(shape)) {
      throw typeError(`${fn} weights['${name}']: expected a tensor { data: Float32Array, shape }, received ${describe(value)}`);
    }
    out.set(name, { data: t.data, shape: shape as number[], ...(typeof t.dtype === 'string' ? { dtype: t.dtype } : {}) });
  }
  return out;
}

/** @internal Where a model's constructor takes its tensors from (a checkpoint, or random initial values). */
export interface TensorSource {
  has(name: string): boolean;
  take(name: string, shape: readonly number[]): Float32Array;
  /** Every tensor taken, by name (the model's parameters under state_dict names). */
  readonly taken: Map<string, { data: Float32Array; shape: readonly number[] }>;
  /**
   * The stored form of a linear weight already taken, when the checkpoint holds it quantized
   * (an 'I8' weight with its `…weight_scale`, or a 'BF16' weight); null for float32.
   */
  storedWeight(name: string, inFeatures: number, outFeatures: number): QuantizedWeight | null;
  /** Reports every problem at once (`hint` describes the config), then lets go of the source. */
  finish(hint: string): void;
}

/**
 * @internal Takes tensors by name from a checkpoint, checking shapes and values, and
 * reports every problem at once. `aliases` maps a name prefix to another under which
 * the same tensors may be stored (performer-pytorch saves each stack tensor twice, under
 * `net.` and `proj_updater.instance.`; a checkpoint written with duplicates removed may
 * keep either).
 */
export class CheckpointReader implements TensorSource {
  readonly taken = new Map<string, { data: Float32Array; shape: readonly number[] }>();
  private readonly used = new Set<string>();
  private readonly missing: string[] = [];
  private readonly problems: string[] = [];

  constructor(
    private readonly tensors: NamedTensors,
    private readonly fn: string,
    private readonly aliases: [string, string][],
  ) {}

  has(name: string): boolean {
    return this.resolve(name) !== null;
  }

  /** The values of `name` (a copy), which must have `shape`; zeros when missing (reported later). */
  take(name: string, shape: readonly number[]): Float32Array {
    const data = this.read(name, shape);
    this.taken.set(name, { data, shape: Object.freeze([...shape]) });
    return data;
  }

  storedWeight(name: string, inFeatures: number, outFeatures: number): QuantizedWeight | null {
    const found = this.resolve(name);
    const t = found === null ? undefined : this.tensors.get(found);
    const values = this.taken.get(name)?.data;
    if (t === undefined || values === undefined || (t.dtype !== 'I8' && t.dtype !== 'BF16')) return null;
    const scales = t.dtype === 'I8' ? this.read(scaleName(found!), [outFeatures]) : null;
    try {
      return readStoredWeight(found!, t.dtype, values, scales, inFeatures, outFeatures);
    } catch (error) {
      this.problems.push((error as Error).message);
      return null;
    }
  }

  private read(name: string, shape: readonly number[]): Float32Array {
    const count = shape.reduce((a, b) => a * b, 1);
    const found = this.resolve(name);
    if (found === null) {
      this.missing.push(`${name} ${formatShape(shape)}`);
      return new Float32Array(count);
    }
    const t = this.tensors.get(found)!;
    this.used.add(found);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      this.problems.push(`${found}: expected shape ${formatShape(shape)}, received ${formatShape(t.shape)}`);
      return new Float32Array(count);
    }
    if (t.data.length !== count) {
      this.problems.push(`${found}: shape ${formatShape(shape)} needs ${count} values, received ${t.data.length}`);
      return new Float32Array(count);
    }
    for (let i = 0; i < count; i++) {
      if (!Number.isFinite(t.data[i])) {
        this.problems.push(`${found}: values must be finite, received ${t.data[i]} at index ${i}`);
        break;
      }
    }
    return Float32Array.from(t.data);
  }

  /** Throws one RangeError listing every missing, unexpected, mis-shaped or non-finite tensor. */
  finish(hint: string): void {
    try {
      this.report(hint);
    } finally {
      // The model keeps copies of what it took; the checkpoint (duplicates and all) can go.
      this.tensors.clear();
    }
  }

  private report(hint: string): void {
    const parts: string[] = [];
    const unexpected = [...this.tensors.keys()].filter((name) => !this.used.has(name) && !this.isAliasCopy(name));
    const prefix = wrapperPrefix(this.missing.map((m) => m.split(' ')[0]), unexpected);
    if (prefix !== null) {
      parts.push(`the names carry a prefix '${prefix}' (the model inside a wrapper?): pass the model's own state_dict, or names without the prefix`);
    }
    if (this.missing.length > 0) parts.push(`missing ${listed(this.missing)}`);
    if (unexpected.length > 0) parts.push(`unexpected ${listed(unexpected)}`);
    parts.push(...this.problems);
    if (parts.length > 0) {
      throw rangeError(`${this.fn}: the weights do not fit the config (${hint}): ${parts.join('; ')}`, 'ERR_INVALID_ARG_VALUE');
    }
  }

  /** The checkpoint's names (before finish). */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  /** Renames every tensor under `prefix` to the name without it (a wrapper's state_dict). */
  stripPrefix(prefix: string): void {
    for (const [name, t] of [...this.tensors]) {
      if (!name.startsWith(prefix)) continue;
      this.tensors.delete(name);
      this.tensors.set(name.slice(prefix.length), t);
    }
  }

  private resolve(name: string): string | null {
    if (this.tensors.has(name)) return name;
    for (const [prefix, alias] of this.aliases) {
      if (name.startsWith(prefix)) {
        const other = alias + name.slice(prefix.length);
        if (this.tensors.has(other)) return other;
      }
    }
    return null;
  }

  // A duplicate under an alias prefix of a tensor that was read under its main name.
  private isAliasCopy(name: string): boolean {
    for (const [prefix, alias] of this.aliases) {
      if (name.startsWith(alias) && this.used.has(prefix + name.slice(alias.length))) return true;
    }
    return false;
  }
}

/**
 * @internal Random initial values under the names a checkpoint would have (for
 * benchmarks and tests): linear weights and biases uniform in +-1/sqrt(in) (PyTorch's
 * Linear), embeddings with unit variance, norms 1 and 0, gains 1, orthogonal random
 * features (chi norms, like performer-pytorch's default), and the fixed sinusoid
 * buffers and rotary frequencies by their formulas.
 */
export class RandomSource implements TensorSource {
  readonly taken = new Map<string, { data: Float32Array; shape: readonly number[] }>();
  private state: number;

  constructor(
    seed: number,
    private readonly projection: (rows: number, cols: number, seed: number) => Float32Array,
  ) {
    this.state = (seed ^ 0x5bd1e995) >>> 0;
  }

  has(): boolean {
    return false;
  }

  take(name: string, shape: readonly number[]): Float32Array {
    const data = this.make(name, shape);
    this.taken.set(name, { data, shape: Object.freeze([...shape]) });
    return data;
  }

  storedWeight(): null {
    return null;
  }

  finish(): void {}

  private uniform(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  private make(name: string, shape: readonly number[]): Float32Array {
    const count = shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(count);
    const last = name.slice(name.lastIndexOf('.') + 1);
    if (name.endsWith('projection_matrix')) return this.projection(shape[0], shape[1], Math.floor(this.uniform() * 2 ** 32));
    if (name.endsWith('inv_freq')) return inverseFrequencies(2 * shape[0]);
    if (/(^|\.)(pos_emb|layer_pos_emb)\.emb$/.test(name)) return sinusoidTable(shape[0], shape[1]);
    if (last === 'g' || (name.endsWith('norm.weight'))) return out.fill(1);
    if (name.endsWith('norm.bias')) return out;
    // Embedding tables (unit variance) and linear layers (+-1/sqrt(in); a bias takes the
    // in-width of its module's weight).
    const module = name.slice(0, name.lastIndexOf('.'));
    const inWidth = shape.length === 2 ? shape[1] : (this.taken.get(`${module}.weight`)?.shape[1] ?? 1);
    const bound = name.includes('emb') ? Math.sqrt(3) : 1 / Math.sqrt(inWidth);
    for (let i = 0; i < count; i++) out[i] = (2 * this.uniform() - 1) * bound;
    return out;
  }
}

// A prefix that most missing names appear under among the unexpected ones, or null.
function wrapperPrefix(missing: string[], unexpected: string[]): string | null {
  if (missing.length === 0) return null;
  const first = unexpected.find((u) => u.endsWith(`.${missing[0]}`));
  if (first === undefined) return null;
  const prefix = first.slice(0, first.length - missing[0].length);
  const present = new Set(unexpected);
  return missing.filter((m) => present.has(prefix + m)).length * 2 > missing.length ? prefix : null;
}

// Names in a message: the first 24, then how many more.
function listed(names: string[]): string {
  return names.length <= 24 ? names.join(', ') : `${names.slice(0, 24).join(', ')} and ${names.length - 24} more`;
}

/** @internal 1 / 10000^(2i / width) for i < width / 2, in float32 steps as PyTorch computes it. */
export function inverseFrequencies(width: number): Float32Array {
  const out = new Float32Array(width / 2);
  for (let i = 0; i < width / 2; i++) out[i] = Math.fround(1 / Math.fround(Math.pow(10000, Math.fround((2 * i) / width))));
  return out;
}

/** @internal performer-pytorch's fixed sinusoid buffer [rows, width]: all sines, then all cosines. */
export function sinusoidTable(rows: number, width: number): Float32Array {
  const f = inverseFrequencies(width);
  const half = width / 2;
  const out = new Float32Array(rows * width);
  for (let t = 0; t < rows; t++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(t * f[i]);
      out[t * width + i] = Math.sin(angle);
      out[t * width + half + i] = Math.cos(angle);
    }
  }
  return out;
}

/** @internal Axial positions: the table is the sum over axes of each axis's weights [size, D], broadcast. */
export interface AxialWeights {
  shape: number[];
  weights: Float32Array[];
}

/** @internal table[t] = sum over axes of the axis's row for position t (again after training steps). */
export function fillAxialTable(axial: AxialWeights, table: Float32Array): void {
  table.fill(0);
  forAxialRows(axial, table.length, (t, axis, row, D) => {
    const w = axial.weights[axis];
    for (let j = 0; j < D; j++) table[t * D + j] += w[row * D + j];
  });
}

/** @internal Calls fn(t, axis, row of that axis, D) for every position t and axis, axis by axis. */
export function forAxialRows(axial: AxialWeights, tableLength: number, fn: (t: number, axis: number, row: number, D: number) => void): void {
  const rows = axial.shape.reduce((a, b) => a * b, 1);
  const D = tableLength / rows;
  // Performer-pytorch sums the axes in float32, axis by axis; so does this.
  axial.shape.forEach((size, axis) => {
    const inner = axial.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    for (let t = 0; t < rows; t++) fn(t, axis, Math.floor(t / inner) % size, D);
  });
}
