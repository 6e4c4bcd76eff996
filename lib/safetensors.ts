/**
 * The safetensors file format: an 8-byte little-endian unsigned header length N, N bytes
 * of UTF-8 JSON `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?:
 * { key: string } }`, then the raw little-endian tensor data; offsets are relative to the
 * start of the data and the tensors cover it without gaps or overlaps.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';

import { describe, rangeError, typeError } from './errors';
import type { Tensor, TensorLike } from './tensor';
import { formatShape, readOptions, readTensor } from './validate';

/** The dtypes {@link readSafetensors} converts to float32. */
export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I8';

/** A tensor read from a safetensors file: float32 values, and the dtype the file stores. */
export interface StoredTensor extends Tensor {
  /** The file's dtype. */
  readonly dtype: SafetensorsDtype;
}

/**
 * A tensor to write: float32 values, stored as `dtype` (default 'F32'). 'BF16' rounds each
 * value to nearest even (bf16 values, infinities and NaN stay as they are); 'I8' takes
 * integers from -128 to 127; 'F16' and 'F64' (as read)
 * are written as F32. So what {@link readSafetensors} returns writes back unchanged in value.
 */
export type TensorToWrite = TensorLike & {
  /** How the file stores the values (default 'F32'). */
  readonly dtype?: SafetensorsDtype;
};

/** Tensors and metadata read from a safetensors file. */
export interface Safetensors {
  /** The tensors by name, converted to float32 (each with the dtype of the file). */
  tensors: Record<string, StoredTensor>;
  /** The file's `__metadata__` (string keys and values); `{}` when it has none. */
  metadata: Record<string, string>;
}

/** Options of {@link readSafetensors}, {@link loadSafetensors} and {@link loadSafetensorsSync}. */
export interface ReadSafetensorsOptions {
  /**
   * Which tensors to convert. Tensors left out are still checked (offsets, sizes) but not
   * decoded, so a file may hold dtypes this library does not convert (for example the I64
   * `position_ids` of a BERT checkpoint) as long as they are left out. Default: all.
   */
  include?: (name: string) => boolean;
}

/** Largest header accepted: 100 MB (the format's reference reader has the same limit). */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA = '__metadata__';

// Bytes per element of every dtype of the format; only some are converted.
const ITEM_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};
const CONVERTED = ['F32', 'F16', 'BF16', 'F64', 'I8'];
const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

let halfTable: Float32Array | undefined;

/** float32 value of every IEEE 754 binary16 bit pattern (256 kB, built on first use). */
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) table[h] = sign * mantissa * 2 ** -24; // zero and subnormals
    else if (exponent === 31) table[h] = mantissa ? NaN : sign * Infinity;
    else table[h] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  halfTable = table;
  return table;
}

function formatError(source: string, message: string) {
  return rangeError(`${source}: ${message}`, 'ERR_INVALID_ARG_VALUE');
}

/** The top-level keys of a JSON object text in order, duplicates included (the text is valid JSON). */
function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      const start = i;
      for (i++; json[i] !== '"'; i++) if (json[i] === '\\') i++;
      if (depth === 1) {
        let j = i + 1;
        while (j < json.length && /\s/.test(json[j])) j++;
        if (json[j] === ':') keys.push(JSON.parse(json.slice(start, i + 1)) as string);
      }
    } else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
  }
  return keys;
}

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

function readEntry(name: string, value: unknown, dataBytes: number, source: string): Entry {
  const where = `tensor '${name}'`;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw formatError(source, `${where}: expected an object { dtype, shape, data_offsets }, received ${describe(value)}`);
  }
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== 'string' || !(dtype in ITEM_BYTES)) {
    throw formatError(
      source,
      `${where}: unknown dtype ${describe(dtype)}; the format's dtypes are ${Object.keys(ITEM_BYTES).join(', ')}`,
    );
  }
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw formatError(source, `${where}: expected a shape of non-negative integers, received ${JSON.stringify(shape)}`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    offsets.some((o) => !Number.isSafeInteger(o) || o < 0) ||
    offsets[0] > offsets[1]
  ) {
    throw formatError(
      source,
      `${where}: expected data_offsets [begin, end] with 0 <= begin <= end, received ${JSON.stringify(offsets)}`,
    );
  }
  const [begin, end] = offsets as number[];
  if (end > dataBytes) {
    throw formatError(source, `${where}: data_offsets [${begin}, ${end}] reach beyond the ${dataBytes} bytes of data`);
  }
  const itemBytes = ITEM_BYTES[dtype];
  if (begin % itemBytes !== 0) {
    throw formatError(source, `${where}: data offset ${begin} is not a multiple of the ${itemBytes}-byte size of ${dtype}`);
  }
  const elements = (shape as number[]).reduce((a, b) => a * b, 1);
  if (elements * itemBytes !== end - begin) {
    throw formatError(
      source,
      `${where}: shape ${formatShape(shape as number[])} of ${dtype} needs ${elements * itemBytes} bytes, ` +
        `data_offsets [${begin}, ${end}] hold ${end - begin}`,
    );
  }
  return { name, dtype: dtype as SafetensorsDtype, shape: shape as number[], begin, end };
}

function decode(bytes: Uint8Array, start: number, entry: Entry, source: string): Float32Array {
  const count = (entry.end - entry.begin) / ITEM_BYTES[entry.dtype];
  const offset = bytes.byteOffset + start + entry.begin;
  const view = new DataView(bytes.buffer, offset, entry.end - entry.begin);
  switch (entry.dtype) {
    case 'F32': {
      if (LITTLE_ENDIAN_HOST && offset % 4 === 0) return new Float32Array(bytes.buffer, offset, count);
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    }
    case 'F16': {
      const table = halfToFloatTable();
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = table[view.getUint16(2 * i, true)];
      return out;
    }
    case 'BF16': {
      // bfloat16 is the upper half of a float32: exact.
      const out = new Float32Array(count);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true) << 16;
      return out;
    }
    case 'F64': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
      return out;
    }
    case 'I8':
      return Float32Array.from(new Int8Array(bytes.buffer, offset, count));
    default:
      throw typeError(
        `${source}: tensor '${entry.name}' has dtype ${entry.dtype}; only ${CONVERTED.join(', ')} convert to float32 ` +
          `(leave it out with the 'include' option)`,
        'ERR_INVALID_ARG_VALUE',
      );
  }
}

function parse(bytes: unknown, options: unknown, source: string): Safetensors {
  if (!(bytes instanceof Uint8Array)) {
    throw typeError(`${source}: expected a Uint8Array or Buffer, received ${describe(bytes)}`);
  }
  const { include } = readOptions<ReadSafetensorsOptions>(options, 'options', ['include']);
  if (include !== undefined && typeof include !== 'function') {
    throw typeError(`options.include: expected a function (name) => boolean, received ${describe(include)}`);
  }
  if (bytes.byteLength < 8) {
    throw formatError(source, `a safetensors file starts with an 8-byte header length; received ${bytes.byteLength} bytes`);
  }
  const headerBytes = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (headerBytes > BigInt(MAX_HEADER_BYTES)) {
    throw formatError(source, `header length ${headerBytes} is over the limit of ${MAX_HEADER_BYTES} bytes`);
  }
  if (headerBytes > BigInt(bytes.byteLength - 8)) {
    throw formatError(source, `header length ${headerBytes} reaches beyond the ${bytes.byteLength}-byte file`);
  }
  const start = 8 + Number(headerBytes);
  let text: string;
  let header: unknown;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, start));
    header = JSON.parse(text);
  } catch (error) {
    throw formatError(source, `the header is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw formatError(source, `the header must be a JSON object, received ${describe(header)}`);
  }
  const seen = new Set<string>();
  for (const key of topLevelKeys(text)) {
    if (seen.has(key)) throw formatError(source, `the header names tensor '${key}' more than once`);
    seen.add(key);
  }

  const metadata: Record<string, string> = {};
  const rawMetadata = (header as Record<string, unknown>)[METADATA];
  if (rawMetadata !== undefined) {
    if (rawMetadata === null || typeof rawMetadata !== 'object' || Array.isArray(rawMetadata)) {
      throw formatError(source, `${METADATA} must be an object of strings, received ${describe(rawMetadata)}`);
    }
    for (const [key, value] of Object.entries(rawMetadata)) {
      if (typeof value !== 'string') {
        throw formatError(source, `${METADATA}['${key}'] must be a string, received ${describe(value)}`);
      }
      define(metadata, key, value);
    }
  }

  const dataBytes = bytes.byteLength - start;
  const entries = Object.entries(header as Record<string, unknown>)
    .filter(([name]) => name !== METADATA)
    .map(([name, value]) => readEntry(name, value, dataBytes, source));
  // The tensors must tile the data: sorted by offset, each starts where the previous ends.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let position = 0;
  for (const entry of sorted) {
    if (entry.begin < position) {
      const other = sorted.find((e) => e !== entry && e.begin < entry.end && entry.begin < e.end) ?? entry;
      throw formatError(source, `tensor '${entry.name}' overlaps tensor '${other.name}' in the data`);
    }
    if (entry.begin > position) {
      throw formatError(source, `bytes ${position} to ${entry.begin} of the data belong to no tensor (before '${entry.name}')`);
    }
    position = entry.end;
  }
  if (position !== dataBytes) {
    throw formatError(source, `the tensors cover ${position} of the ${dataBytes} bytes of data`);
  }

  const tensors: Record<string, StoredTensor> = {};
  for (const entry of entries) {
    if (include && !include(entry.name)) continue;
    define(tensors, entry.name, { data: decode(bytes, start, entry, source), shape: Object.freeze(entry.shape), dtype: entry.dtype });
  }
  return { tensors, metadata };
}

// Plain objects whose keys may be any string ('__proto__' included).
function define<T>(target: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * Reads a safetensors file held in memory. F32, F16, BF16, F64 and I8 tensors become float32
 * tensors (F16 exactly, subnormals, infinities and NaN included; BF16 and I8 exactly; F64
 * rounded), each with the file's `dtype`. An F32 tensor whose data is 4-byte aligned in memory is a view of `bytes`
 * (no copy; headers written by {@link writeSafetensors} keep it aligned); other tensors are copies.
 * @param bytes The whole file.
 * @throws RangeError (`ERR_INVALID_ARG_VALUE`) for a malformed file: a header length beyond
 *   the file or over 100 MB, a header that is not a JSON object, a duplicate tensor name, an
 *   unknown dtype, offsets out of range, overlapping, leaving gaps or not a multiple of the
 *   element size, a shape that does not match its bytes; TypeError for a tensor of a dtype
 *   that is not converted (I64, BOOL, ...). Messages name the tensor.
 */
export function readSafetensors(bytes: Uint8Array, options?: ReadSafetensorsOptions): Safetensors {
  return parse(bytes, options, 'bytes');
}

/**
 * Reads a safetensors file (asynchronously, with `fs/promises`); see {@link readSafetensors}.
 * @param path The file's path.
 */
export async function loadSafetensors(path: string, options?: ReadSafetensorsOptions): Promise<Safetensors> {
  if (typeof path !== 'string') throw typeError(`path: expected a string, received ${describe(path)}`);
  return parse(await fsp.readFile(path), options, path);
}

/**
 * Reads a safetensors file synchronously; see {@link readSafetensors}.
 * @param path The file's path.
 */
export function loadSafetensorsSync(path: string, options?: ReadSafetensorsOptions): Safetensors {
  if (typeof path !== 'string') throw typeError(`path: expected a string, received ${describe(path)}`);
  return parse(fs.readFileSync(path), options, path);
}

/**
 * Writes tensors as a safetensors file: the data of 4-byte tensors first, then 2-byte, then
 * 1-byte ones, each group sorted by name, so that every tensor starts at a multiple of its
 * element size. The header is padded with spaces so that the data starts at a multiple of
 * 8 bytes.
 * @param tensors Float32 tensors by name (`shape` or `dims`), stored as F32, or as their
 *   `dtype` ('BF16', 'I8'; see {@link TensorToWrite}).
 * @param metadata Optional `__metadata__`: string keys and string values.
 * @returns The file's bytes: a Node `Buffer` of its own (offset 0), typed as `Uint8Array` so
 *   that the package's types need no `@types/node`; pass it to `fs.writeFile` as it is.
 * @throws TypeError for a tensor that is not `{ data: Float32Array, shape }`, an unknown
 *   dtype or metadata that is not strings; RangeError for a data length that does not match
 *   the shape, an 'I8' value that is not an integer from -128 to 127, or the reserved name
 *   `__metadata__`.
 */
export function writeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Uint8Array {
  if (tensors === null || typeof tensors !== 'object' || Array.isArray(tensors)) {
    throw typeError(`tensors: expected an object of tensors by name, received ${describe(tensors)}`);
  }
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) {
      throw typeError(`metadata: expected an object of strings, received ${describe(metadata)}`);
    }
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') throw typeError(`metadata['${key}']: expected a string, received ${describe(value)}`);
    }
    define(header, METADATA, { ...metadata });
  }
  // Wider elements first, then by name: every tensor starts at a multiple of its element
  // size (the data starts at a multiple of 8), which readers that map the file need.
  const width = (name: string) => ((tensors[name] as { dtype?: unknown } | null)?.dtype === 'BF16' ? 2 : (tensors[name] as { dtype?: unknown } | null)?.dtype === 'I8' ? 1 : 4);
  const names = Object.keys(tensors).sort((a, b) => width(b) - width(a) || (a < b ? -1 : a > b ? 1 : 0));
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const name of names) {
    if (name === METADATA) throw rangeError(`tensors: '${METADATA}' is reserved for the metadata`, 'ERR_INVALID_ARG_VALUE');
    const t = readTensor(tensors[name], `tensors['${name}']`);
    const given = (tensors[name] as { dtype?: unknown }).dtype ?? 'F32';
    const data = encode(t.data, given, `tensors['${name}']`);
    const dtype = given === 'BF16' || given === 'I8' ? given : 'F32';
    parts.push(data);
    define(header, name, { dtype, shape: [...t.shape], data_offsets: [offset, offset + data.byteLength] });
    offset += data.byteLength;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);
  const out = Buffer.alloc(8 + json.length + offset);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  let position = 8 + json.length;
  for (const data of parts) {
    out.set(data, position);
    position += data.byteLength;
  }
  return out;
}

// The little-endian bytes of float32 values stored as `dtype`.
function encode(values: Float32Array, dtype: unknown, name: string): Uint8Array {
  if (dtype === 'F32' || dtype === 'F16' || dtype === 'F64') {
    if (LITTLE_ENDIAN_HOST) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    const out = Buffer.alloc(values.byteLength);
    for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i], 4 * i);
    return out;
  }
  if (dtype === 'I8') {
    const out = new Int8Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (!Number.isInteger(v) || v < -128 || v > 127) throw rangeError(`${name}: dtype I8 takes integers from -128 to 127, received ${v} at index ${i}`, 'ERR_INVALID_ARG_VALUE');
      out[i] = v;
    }
    return new Uint8Array(out.buffer);
  }
  if (dtype === 'BF16') {
    const out = Buffer.alloc(2 * values.length);
    // The bits themselves: reading a signaling NaN as a number would quiet it.
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < values.length; i++) {
      const b = bits[i];
      // bf16 values (infinities and NaN payloads included) as they are; others to nearest,
      // ties to even (a finite value past the bf16 range rounds to infinity); a NaN stays one.
      const h = (b & 0xffff) === 0 ? b >>> 16 : (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
      out.writeUInt16LE(h & 0xffff, 2 * i);
    }
    return out;
  }
  throw typeError(`${name}.dtype: expected 'F32', 'BF16' or 'I8' (or 'F16' / 'F64', written as F32), received ${describe(dtype)}`);
}
