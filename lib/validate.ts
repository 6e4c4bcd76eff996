/**
 * Argument validation for the public API. Every check throws a TypeError (wrong
 * type) or RangeError (bad value or shape) whose message names the argument and
 * shows what was expected and what was received.
 */
import { types } from 'node:util';

import { describe, rangeError, typeError } from './errors';
import type { MaskLike, Tensor, TensorLike } from './tensor';

const MAX_ELEMENTS = 2 ** 32; // Float32Array length limit of this library: 16 GiB of data

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function readShape(value: Record<string, unknown>, name: string): number[] {
  const raw = value.shape !== undefined ? value.shape : value.dims;
  const field = value.shape !== undefined ? 'shape' : 'dims';
  if (raw === undefined) {
    throw typeError(`${name}: expected a tensor with a 'shape' (or 'dims') array, received an object without one`);
  }
  if (!Array.isArray(raw) && !ArrayBuffer.isView(raw)) {
    throw typeError(`${name}.${field}: expected an array of integers, received ${describe(raw)}`);
  }
  const shape = Array.from(raw as ArrayLike<unknown>, (d) => (typeof d === 'bigint' ? Number(d) : d));
  shape.forEach((d, i) => {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 1) {
      throw rangeError(`${name}.${field}[${i}]: expected a positive integer, received ${describe(d)}`);
    }
  });
  return shape as number[];
}

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

// util.types checks work for typed arrays made in any realm (the addon's, a vm
// context's), where `instanceof` would not.
const TYPED_CHECKS = { Float32Array: types.isFloat32Array, Uint8Array: types.isUint8Array } as const;

export function isFloat32Array(value: unknown): value is Float32Array {
  return types.isFloat32Array(value);
}

/** Whether `buffer` was detached (a view on it cannot be made then). */
function isDetached(buffer: ArrayBufferLike): boolean {
  try {
    new Uint8Array(buffer, 0, 0);
    return false;
  } catch {
    return true;
  }
}

function readTyped<T extends Float32Array | Uint8Array>(
  value: unknown,
  name: string,
  typeName: 'Float32Array' | 'Uint8Array',
): { data: T; shape: number[] } {
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value) || Array.isArray(value)) {
    throw typeError(`${name}: expected an object { data: ${typeName}, shape: number[] }, received ${describe(value)}`);
  }
  const record = value as Record<string, unknown>;
  const data = record.data;
  if (!TYPED_CHECKS[typeName](data)) {
    throw typeError(`${name}.data: expected a ${typeName}, received ${describe(data)}`);
  }
  if ((data as ArrayBufferView).byteLength === 0 && isDetached((data as ArrayBufferView).buffer)) {
    throw typeError(
      `${name}.data: its ArrayBuffer is detached (transferred away, for example by postMessage or structuredClone); pass an array that owns its memory`,
      'ERR_INVALID_STATE',
    );
  }
  const shape = readShape(record, name);
  const size = product(shape);
  if (size > MAX_ELEMENTS) {
    throw rangeError(`${name}: shape ${formatShape(shape)} has ${size} elements, more than the limit of ${MAX_ELEMENTS}`);
  }
  if (data.length !== size) {
    throw rangeError(
      `${name}: data length ${data.length} does not match shape ${formatShape(shape)} (${size} elements)`,
    );
  }
  return { data: data as T, shape };
}

/** Reads a tensor argument; `rank` (when given) is required. */
export function readTensor(value: unknown, name: string, rank?: number, legend?: string): Tensor {
  const t = readTyped<Float32Array>(value, name, 'Float32Array');
  if (rank !== undefined && t.shape.length !== rank) {
    throw rangeError(
      `${name}: expected a rank-${rank} tensor${legend ? ` ${legend}` : ''}, received shape ${formatShape(t.shape)}`,
    );
  }
  return { data: t.data, shape: Object.freeze(t.shape) };
}

/**
 * A mask in any {@link MaskLike} form as keep-bytes (nonzero = attend). `{ ignore }` masks
 * are inverted into a new array; the other forms are used in place.
 */
export function readMask(value: unknown, name: string, expected: readonly number[]): Uint8Array {
  if (value !== null && typeof value === 'object' && !('data' in value) && ('keep' in value || 'ignore' in value)) {
    const keys = Object.keys(value);
    if (keys.length !== 1) {
      throw typeError(`${name}: expected { keep: mask } or { ignore: mask } (one key), received an object with keys ${keys.map((k) => `'${k}'`).join(', ')}`, 'ERR_INVALID_ARG_VALUE');
    }
    const polarity = keys[0] as 'keep' | 'ignore';
    const bytes = readMaskBytes((value as Record<string, unknown>)[polarity], `${name}.${polarity}`, expected);
    if (polarity === 'keep') return bytes;
    const keep = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) keep[i] = bytes[i] === 0 ? 1 : 0;
    return keep;
  }
  return readMaskBytes(value, name, expected);
}

function readMaskBytes(value: unknown, name: string, expected: readonly number[]): Uint8Array {
  const m = readTyped<Uint8Array>(value, name, 'Uint8Array');
  if (m.shape.length !== expected.length || m.shape.some((d, i) => d !== expected[i])) {
    throw rangeError(`${name}: expected shape ${formatShape(expected)}, received ${formatShape(m.shape)}`);
  }
  return m.data;
}

/** Checks that `options` is an object (or undefined) with only the known keys. */
export function readOptions<T extends object>(value: unknown, name: string, known: readonly string[]): Partial<T> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw typeError(`${name}: expected an object, received ${describe(value)}`);
  }
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      throw typeError(
        `${name}: unknown option '${key}'; known options are ${known.map((k) => `'${k}'`).join(', ')}`,
        'ERR_INVALID_ARG_VALUE',
      );
    }
  }
  return value as Partial<T>;
}

export function readBoolean(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw typeError(`${name}: expected a boolean, received ${describe(value)}`);
  return value;
}

export function readNumber(
  value: unknown,
  name: string,
  fallback: number,
  range: { min?: number; max?: number; minExclusive?: boolean } = {},
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw typeError(`${name}: expected a number, received ${describe(value)}`);
  const { min = -Infinity, max = Infinity, minExclusive = false } = range;
  if (!Number.isFinite(value) || value > max || (minExclusive ? value <= min : value < min)) {
    const lower = min === -Infinity ? '' : `${minExclusive ? '>' : '>='} ${min}`;
    const upper = max === Infinity ? '' : `<= ${max}`;
    const bounds = [lower, upper].filter(Boolean).join(' and ');
    throw rangeError(`${name}: expected a finite number${bounds ? ` ${bounds}` : ''}, received ${value}`);
  }
  return value;
}

export function readInteger(value: unknown, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw typeError(`${name}: expected an integer, received ${describe(value)}`);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw rangeError(`${name}: expected an integer from ${min} to ${max}, received ${value}`);
  }
  return value;
}

export function readEnum<T extends string>(value: unknown, name: string, fallback: T, allowed: readonly T[]): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string') throw typeError(`${name}: expected a string, received ${describe(value)}`);
  if (!(allowed as readonly string[]).includes(value)) {
    throw rangeError(
      `${name}: expected one of ${allowed.map((a) => `'${a}'`).join(', ')}, received '${value}'`,
      'ERR_INVALID_ARG_VALUE',
    );
  }
  return value as T;
}

/** A new Float32Array, or a RangeError (`ERR_MEMORY_ALLOCATION_FAILED`) naming `name` when it cannot be allocated. */
export function newFloat32Array(length: number, name: string): Float32Array {
  try {
    return new Float32Array(length);
  } catch {
    throw rangeError(`${name}: cannot allocate ${length} elements (${((length * 4) / 2 ** 30).toFixed(1)} GiB)`, 'ERR_MEMORY_ALLOCATION_FAILED');
  }
}

/** Throws when two typed arrays share memory (an output must not overwrite an input). */
export function checkNoOverlap(a: ArrayBufferView, aName: string, b: ArrayBufferView, bName: string): void {
  if (a.buffer !== b.buffer) return;
  const aEnd = a.byteOffset + a.byteLength;
  const bEnd = b.byteOffset + b.byteLength;
  if (a.byteOffset < bEnd && b.byteOffset < aEnd) {
    throw rangeError(`${aName}: must not share memory with ${bName}`, 'ERR_INVALID_ARG_VALUE');
  }
}

export type { MaskLike, TensorLike };
