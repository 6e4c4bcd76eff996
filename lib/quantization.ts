/**
 * Weight-only quantization of the linear layers: `int8` (symmetric, one float32 scale per
 * output channel) or `bf16` storage. Activations, sums, biases and everything else stay
 * float32; the kernels widen the stored weights in registers. A quantized layer's float32
 * weights (what `parameters()` shows) are the dequantized values, so every other path of
 * the library computes with exactly the weights the kernels use.
 */
import { describe, rangeError, typeError } from './errors';
import type { Linear } from './layers/parameters';
import { native } from './native';
import type { Tensor } from './tensor';

/** How a model's linear weights are stored. */
export type WeightFormat = 'float32' | 'int8' | 'bf16';

/** The formats {@link WeightFormat} that `quantize()` takes. */
export type QuantizedFormat = Exclude<WeightFormat, 'float32'>;

/** Checks a `quantize()` argument. */
function readQuantizedFormat(value: unknown, name: string): QuantizedFormat {
  if (typeof value !== 'string') throw typeError(`${name}: expected 'int8' or 'bf16', received ${describe(value)}`);
  if (value !== 'int8' && value !== 'bf16') throw rangeError(`${name}: expected 'int8' or 'bf16', received '${value}'`, 'ERR_INVALID_ARG_VALUE');
  return value;
}

/**
 * @internal The rule of every quantize(): the same format again changes nothing, another one
 * is an error (the float32 weights are gone); otherwise `store` quantizes the weights.
 */
export function quantizeOnce(fn: string, format: unknown, current: WeightFormat, store: (format: QuantizedFormat) => void): void {
  const f = readQuantizedFormat(format, `${fn} format`);
  if (current === f) return;
  if (current !== 'float32') throw rangeError(`${fn}: the weights are already ${current}; quantize the float32 model to ${f} instead`, 'ERR_INVALID_ARG_VALUE');
  store(f);
}

/** @internal The error of a training call on a quantized model. */
export function quantizedTrainingError(fn: string, format: QuantizedFormat, howToGetFloats: string): Error {
  return rangeError(`${fn}: the linear weights are quantized (${format}); fine-tune the float32 model, then quantize it (${howToGetFloats})`, 'ERR_INVALID_ARG_VALUE');
}

/**
 * @internal The stored weights of one linear layer W [out, in]: `values` row-major (int8
 * values with `scales`, or bf16 bits), and the kernels' packed copy made on first use.
 */
export class QuantizedWeight {
  private packedValues: Int8Array | Uint16Array | null = null;

  private constructor(
    readonly format: QuantizedFormat,
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly values: Int8Array | Uint16Array,
    readonly scales: Float32Array | null,
  ) {}

  /** Quantizes float32 weights [out, in] (finite). */
  static fromFloat(weight: Float32Array, inFeatures: number, outFeatures: number, format: QuantizedFormat): QuantizedWeight {
    const { values, scales } = native().linearQuantize(weight, inFeatures, outFeatures, format);
    return new QuantizedWeight(format, inFeatures, outFeatures, values, scales);
  }

  /** int8 values [out, in] and their per-output-channel scales (checked by the caller). */
  static int8(values: Int8Array, scales: Float32Array, inFeatures: number, outFeatures: number): QuantizedWeight {
    return new QuantizedWeight('int8', inFeatures, outFeatures, values, scales);
  }

  /** bf16 bits [out, in]. */
  static bf16(bits: Uint16Array, inFeatures: number, outFeatures: number): QuantizedWeight {
    return new QuantizedWeight('bf16', inFeatures, outFeatures, bits, null);
  }

  /** `parts` (one format, one input width) stacked along their outputs: per-channel scales stack with their rows. */
  static stacked(parts: QuantizedWeight[]): QuantizedWeight {
    const format = parts[0].format;
    if (parts.some((p) => p.format !== format)) throw new Error('internal: stacking linear weights of different formats');
    const out = parts.reduce((n, p) => n + p.outFeatures, 0);
    const values = format === 'int8' ? new Int8Array(out * parts[0].inFeatures) : new Uint16Array(out * parts[0].inFeatures);
    const scales = format === 'int8' ? new Float32Array(out) : null;
    let row = 0;
    for (const p of parts) {
      values.set(p.values, row * p.inFeatures);
      if (scales !== null) scales.set(p.scales!, row);
      row += p.outFeatures;
    }
    return new QuantizedWeight(format, parts[0].inFeatures, out, values, scales);
  }

  /** The dequantized weights, written into `into` [out, in]: float(q) * scale, or the bf16 value (both exact as the kernels compute them). */
  dequantizeInto(into: Float32Array): void {
    const n = this.inFeatures;
    if (this.format === 'int8') {
      const q = this.values as Int8Array;
      const scales = this.scales!;
      for (let o = 0; o < this.outFeatures; o++) {
        const s = scales[o];
        // A product of an 8-bit integer and a float is exact in double: one rounding, as in float.
        for (let i = o * n; i < (o + 1) * n; i++) into[i] = Math.fround(q[i] * s);
      }
    } else {
      // bf16 is the upper half of a float32.
      const bits = new Uint32Array(into.buffer, into.byteOffset, into.length);
      const h = this.values as Uint16Array;
      for (let i = 0; i < h.length; i++) bits[i] = h[i] << 16;
    }
  }

  /** The layout the kernels read. */
  get packed(): Int8Array | Uint16Array {
    if (this.packedValues === null) this.packedValues = native().linearPackQuantized(this.values, this.inFeatures, this.outFeatures);
    return this.packedValues;
  }
}

/** @internal The name of an int8 weight's per-output-channel scales in a file. */
export function scaleName(weightName: string): string {
  return `${weightName}_scale`;
}

/**
 * @internal The stored form of quantized linear layers (by weight name), as files keep it:
 * int8 values as integers (dtype 'I8') with their scales, bf16 values (dtype 'BF16').
 */
export function storedTensors(linears: Map<string, Linear>): Record<string, Tensor & { dtype?: 'I8' | 'BF16' }> {
  const out: Record<string, Tensor & { dtype?: 'I8' | 'BF16' }> = {};
  for (const [name, l] of linears) {
    const q = l.stored;
    if (q === null) continue;
    const shape = Object.freeze([l.outFeatures, l.inFeatures]);
    if (q.format === 'int8') {
      out[name] = { data: Float32Array.from(q.values), shape, dtype: 'I8' };
      out[scaleName(name)] = { data: Float32Array.from(q.scales!), shape: Object.freeze([l.outFeatures]) };
    } else {
      out[name] = { data: Float32Array.from(l.weight), shape, dtype: 'BF16' };
    }
  }
  return out;
}

/**
 * @internal The stored weights of a linear layer read from a file: `values` [out, in] as
 * float32 (integers of an 'I8' weight, bf16 values of a 'BF16' one) and the int8 scales.
 * @throws RangeError naming `name` for values the dtype cannot hold or bad scales.
 */
export function readStoredWeight(name: string, dtype: 'I8' | 'BF16', values: Float32Array, scales: Float32Array | null, inFeatures: number, outFeatures: number): QuantizedWeight {
  if (dtype === 'BF16') {
    const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
    const bits = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) {
      if ((words[i] & 0xffff) !== 0) throw rangeError(`${name}: dtype BF16 but value ${values[i]} at index ${i} is not a bfloat16`, 'ERR_INVALID_ARG_VALUE');
      bits[i] = words[i] >>> 16;
    }
    return QuantizedWeight.bf16(bits, inFeatures, outFeatures);
  }
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isInteger(v) || v < -128 || v > 127) throw rangeError(`${name}: dtype I8 but value ${v} at index ${i} is not an integer from -128 to 127`, 'ERR_INVALID_ARG_VALUE');
  }
  if (scales === null || scales.length !== outFeatures) {
    throw rangeError(`${scaleName(name)}: an int8 weight needs its ${outFeatures} scales (one per output channel)`, 'ERR_INVALID_ARG_VALUE');
  }
  const bad = scales.findIndex((s) => !(s >= 0) || s === Infinity);
  if (bad >= 0) throw rangeError(`${scaleName(name)}: scales must be finite and >= 0, received ${scales[bad]} at index ${bad}`, 'ERR_INVALID_ARG_VALUE');
  return QuantizedWeight.int8(Int8Array.from(values), Float32Array.from(scales), inFeatures, outFeatures);
}
