'use strict';
// A minimal protocol-buffers wire-format writer (and a reader, used by the tests
// and to check models): enough to build ONNX models without a dependency.
// Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.

class ProtoWriter {
  constructor() {
    this.chunks = [];
    this.length = 0;
  }

  _push(bytes) {
    this.chunks.push(bytes);
    this.length += bytes.length;
    return this;
  }

  /** Unsigned varint of a non-negative integer or BigInt (negative int64: two's complement, 10 bytes). */
  varint(value) {
    let v = typeof value === 'bigint' ? value : BigInt(value);
    if (v < 0n) v = BigInt.asUintN(64, v);
    const out = [];
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) byte |= 0x80;
      out.push(byte);
    } while (v !== 0n);
    return this._push(Uint8Array.from(out));
  }

  tag(field, wireType) {
    return this.varint(field * 8 + wireType);
  }

  /** int32 / int64 / enum / bool field. */
  int(field, value) {
    return this.tag(field, 0).varint(value);
  }

  /** float field (fixed32, little-endian). */
  float(field, value) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    return this.tag(field, 5)._push(b);
  }

  /** bytes field. */
  bytes(field, data) {
    const b = data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return this.tag(field, 2).varint(b.length)._push(b);
  }

  string(field, text) {
    return this.bytes(field, Buffer.from(text, 'utf8'));
  }

  /** Embedded message: build(writer) fills a fresh writer. */
  message(field, build) {
    const inner = new ProtoWriter();
    build(inner);
    return this.bytes(field, inner.finish());
  }

  /** Packed repeated varints (int64 lists). */
  packedInts(field, values) {
    const inner = new ProtoWriter();
    for (const v of values) inner.varint(v);
    return this.bytes(field, inner.finish());
  }

  finish() {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

/**
 * Decodes one message level into { field: [values] }: varints as BigInt,
 * fixed32 and fixed64 as raw little-endian bytes, length-delimited as Uint8Array.
 */
function decodeMessage(bytes) {
  const fields = {};
  let pos = 0;
  const readVarint = () => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= bytes.length) throw new RangeError('truncated varint');
      const b = bytes[pos++];
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 63n) throw new RangeError('varint too long');
    }
  };
  while (pos < bytes.length) {
    const key = Number(readVarint());
    const field = key >>> 3;
    const wire = key & 7;
    let value;
    if (wire === 0) value = readVarint();
    else if (wire === 1) {
      value = bytes.subarray(pos, pos + 8);
      pos += 8;
    } else if (wire === 2) {
      const n = Number(readVarint());
      if (pos + n > bytes.length) throw new RangeError('truncated bytes field');
      value = bytes.subarray(pos, pos + n);
      pos += n;
    } else if (wire === 5) {
      value = bytes.subarray(pos, pos + 4);
      pos += 4;
    } else throw new RangeError(`unsupported wire type ${wire}`);
    (fields[field] ??= []).push(value);
  }
  return fields;
}

module.exports = { ProtoWriter, decodeMessage };
