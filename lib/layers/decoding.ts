/**
 * Token-by-token decoding state: per causal self-attention, the running FAVOR+
 * state of every (batch, head) (S, z, the per-feature maximum and value sums:
 * memory independent of the context length); per cross-attention, the memory
 * absorbed once into the same kind of state (bidirectional: independent of the
 * memory length). Serializes to a Buffer with a version header and a
 * checksum, so a service can park, persist or move a decoding session.
 *
 * Buffer layout (little-endian): 'PAST' | u16 version | u16 0 | u32 header bytes |
 * header JSON | zero padding to 4 bytes | arrays (f32 or u8, each padded to 4 bytes)
 * | u32 CRC-32 of everything before it.
 */
import { describe, stateError, rangeError, typeError } from '../errors';
import { crc32 } from '../crc32';

const MAGIC = 'PAST';
const VERSION = 1;

/** @internal One array of a state. */
export interface StateArray {
  name: string;
  data: Float32Array | Uint8Array | Int32Array;
}

/** @internal The element type of a state array in the serialized form. */
export type StateDtype = 'f32' | 'u8' | 'i32';

function dtypeOf(data: StateArray['data']): StateDtype {
  return data instanceof Float32Array ? 'f32' : data instanceof Int32Array ? 'i32' : 'u8';
}

/**
 * The state of one decoding session (see `createState` / `step` of
 * {@link MultiHeadAttention}, {@link DecoderLayer} and {@link TransformerDecoder}).
 * It belongs to the model that made it: another model (other weights or features)
 * rejects it.
 */
export class DecodingState {
  /** Sequences decoded side by side. */
  readonly batch: number;
  /** Tokens absorbed so far (prompt and steps). */
  position = 0;
  /** @internal */ readonly arrays: StateArray[];
  /** @internal The fingerprint of the model that made it. */
  readonly model: string;
  /** @internal Set while an async step runs. */
  busy = false;

  /** @internal */
  constructor(model: string, batch: number, arrays: StateArray[]) {
    this.model = model;
    this.batch = batch;
    this.arrays = arrays;
  }

  /** Bytes held by the state's arrays (what {@link serialize} writes, without the header). */
  get byteLength(): number {
    return this.arrays.reduce((n, a) => n + a.data.byteLength, 0);
  }

  /** @internal */
  array<T extends Float32Array | Uint8Array | Int32Array>(name: string): T {
    const found = this.arrays.find((a) => a.name === name);
    if (found === undefined) throw stateError(`decoding state: no array '${name}'`);
    return found.data as T;
  }

  /**
   * A copy that decodes on independently (for example to branch a prompt).
   * @throws Error (`ERR_INVALID_STATE`) while an async step is using the state (its arrays are being written).
   */
  clone(): this {
    if (this.busy) throw stateError('DecodingState.clone: an async step is using this state; await it first');
    // The same class (a model's own state type) with copies of the arrays.
    const copy = Object.create(Object.getPrototypeOf(this) as object) as this;
    Object.assign(copy, this, { arrays: this.arrays.map((a) => ({ name: a.name, data: a.data.slice() })), busy: false });
    return copy;
  }

  /**
   * The state as bytes: header (version, model fingerprint, batch, position, array
   * names and sizes), the arrays, a CRC-32. Read back with the model's `loadState`.
   * A Node `Buffer` at run time, typed `Uint8Array` so that the package's types need no
   * `@types/node`.
   * @throws Error (`ERR_INVALID_STATE`) while an async step is using the state.
   */
  serialize(): Uint8Array {
    if (this.busy) throw stateError('DecodingState.serialize: an async step is using this state; await it first');
    const header = Buffer.from(
      JSON.stringify({
        model: this.model,
        batch: this.batch,
        position: this.position,
        arrays: this.arrays.map((a) => ({ name: a.name, dtype: dtypeOf(a.data), length: a.data.length })),
      }),
    );
    const pad4 = (n: number) => (n + 3) & ~3;
    let size = 12 + pad4(header.length);
    for (const a of this.arrays) size += pad4(a.data.byteLength);
    const out = Buffer.alloc(size + 4);
    out.write(MAGIC, 0, 'latin1');
    out.writeUInt16LE(VERSION, 4);
    out.writeUInt32LE(header.length, 8);
    header.copy(out, 12);
    let at = 12 + pad4(header.length);
    for (const a of this.arrays) {
      const bytes = new Uint8Array(a.data.buffer, a.data.byteOffset, a.data.byteLength);
      if (a.data instanceof Float32Array && !isLittleEndian) {
        for (let i = 0; i < a.data.length; i++) out.writeFloatLE(a.data[i], at + 4 * i);
      } else if (a.data instanceof Int32Array && !isLittleEndian) {
        for (let i = 0; i < a.data.length; i++) out.writeInt32LE(a.data[i], at + 4 * i);
      } else {
        out.set(bytes, at);
      }
      at += pad4(a.data.byteLength);
    }
    out.writeUInt32LE(crc32(out.subarray(0, size)), size);
    return out;
  }
}

const isLittleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * @internal Reads a serialized state; `expected` lists the arrays (names, dtypes, lengths)
 * the model needs for a batch and position. `make` builds the model's state class.
 * Every problem is a RangeError (ERR_INVALID_ARG_VALUE) saying what is wrong.
 */
export function deserializeState(
  bytes: unknown,
  model: string,
  expected: (batch: number, position: number) => { name: string; dtype: StateDtype; length: number }[],
  fn: string,
  make: (model: string, batch: number, arrays: StateArray[]) => DecodingState = (m, b, a) => new DecodingState(m, b, a),
): DecodingState {
  if (!(bytes instanceof Uint8Array)) throw typeError(`${fn}: expected a Buffer or Uint8Array, received ${describe(bytes)}`);
  const bad = (why: string) => rangeError(`${fn}: ${why}`, 'ERR_INVALID_ARG_VALUE');
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < 16 || buf.toString('latin1', 0, 4) !== MAGIC) throw bad('not a serialized decoding state (no PAST header)');
  const version = buf.readUInt16LE(4);
  if (version !== VERSION) throw bad(`state format version ${version}; this library reads version ${VERSION}`);
  const size = buf.length - 4;
  if (crc32(buf.subarray(0, size)) !== buf.readUInt32LE(size)) throw bad('corrupt state: checksum mismatch');
  const headerLength = buf.readUInt32LE(8);
  if (12 + headerLength > size) throw bad('corrupt state: header runs past the end');
  let header: { model?: unknown; batch?: unknown; position?: unknown; arrays?: unknown };
  try {
    header = JSON.parse(buf.toString('utf8', 12, 12 + headerLength));
  } catch {
    throw bad('corrupt state: header is not JSON');
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw bad('corrupt state: header is not a JSON object');
  if (header.model !== model) {
    throw bad(`state made by a different model (fingerprint ${String(header.model)}, this model ${model}): weights, features or configuration differ`);
  }
  const batch = header.batch;
  const position = header.position;
  if (!Number.isSafeInteger(batch) || (batch as number) < 1 || !Number.isSafeInteger(position) || (position as number) < 0) {
    throw bad('corrupt state: bad batch or position');
  }
  const want = expected(batch as number, position as number);
  const arraysInfo = header.arrays as { name: string; dtype: string; length: number }[];
  if (!Array.isArray(arraysInfo) || arraysInfo.length !== want.length) throw bad('state arrays do not match this model');
  const pad4 = (n: number) => (n + 3) & ~3;
  let at = 12 + pad4(headerLength);
  const arrays: StateArray[] = [];
  arraysInfo.forEach((info, i) => {
    const w = want[i];
    if (info === null || typeof info !== 'object') throw bad(`corrupt state: array ${i} is described by ${describe(info)}`);
    if (info.name !== w.name || info.dtype !== w.dtype || info.length !== w.length) {
      throw bad(`state array ${i} ('${info.name}', ${info.length} ${info.dtype}) does not match this model ('${w.name}', ${w.length} ${w.dtype})`);
    }
    const byteLength = info.length * (info.dtype === 'u8' ? 1 : 4);
    if (at + byteLength > size) throw bad('corrupt state: arrays run past the end');
    const data = info.dtype === 'f32' ? new Float32Array(info.length) : info.dtype === 'i32' ? new Int32Array(info.length) : new Uint8Array(info.length);
    new Uint8Array(data.buffer).set(buf.subarray(at, at + byteLength));
    if (data instanceof Float32Array && !isLittleEndian) {
      for (let j = 0; j < data.length; j++) data[j] = buf.readFloatLE(at + 4 * j);
    } else if (data instanceof Int32Array && !isLittleEndian) {
      for (let j = 0; j < data.length; j++) data[j] = buf.readInt32LE(at + 4 * j);
    }
    arrays.push({ name: info.name, data });
    at += pad4(byteLength);
  });
  if (at !== size) throw bad('corrupt state: unexpected bytes after the arrays');
  const state = make(model, batch as number, arrays);
  state.position = position as number;
  return state;
}
