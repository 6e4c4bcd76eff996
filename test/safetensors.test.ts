// The safetensors reader and writer: round trips, float16 / bfloat16 conversion of every
// bit pattern against an independent decoding, and one hand-built file per kind of
// malformed input.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  loadSafetensors,
  loadSafetensorsSync,
  MAX_HEADER_BYTES,
  readSafetensors,
  writeSafetensors,
  type Tensor,
} from '../lib';
import { expectRejects, expectThrows } from './helpers/errors';
import { randn, Rng } from './helpers/reference';

/** A file from a header (object or raw JSON text) and data bytes. */
function file(header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const u16 = (values: number[]) => {
  const bytes = new Uint8Array(2 * values.length);
  values.forEach((v, i) => new DataView(bytes.buffer).setUint16(2 * i, v, true));
  return bytes;
};

const rng = new Rng(7);
const sample: Record<string, Tensor> = {
  'layers.0.selfAttn.q.weight': { data: randn(rng, 12), shape: [3, 4] },
  'a.bias': { data: randn(rng, 5), shape: [5] },
  'z.scalarish': { data: randn(rng, 1), shape: [1] },
  'grid': { data: randn(rng, 24), shape: [2, 3, 4] },
};

describe('round trip', () => {
  test('writeSafetensors then readSafetensors gives the same tensors and metadata', () => {
    const metadata = { config: JSON.stringify({ modelDim: 4 }), format: 'pt' };
    const bytes = writeSafetensors(sample, metadata);
    const { tensors, metadata: meta } = readSafetensors(bytes);
    expect(meta).toEqual(metadata);
    expect(Object.keys(tensors).sort()).toEqual(Object.keys(sample).sort());
    for (const [name, t] of Object.entries(sample)) {
      expect(tensors[name].shape).toEqual(t.shape);
      expect(tensors[name].data).toEqual(t.data);
    }
  });

  test('the header is padded with spaces to a multiple of 8, names sorted, data in that order, F32', () => {
    const bytes = writeSafetensors(sample);
    expect(Buffer.isBuffer(bytes)).toBe(true);
    expect(bytes.byteOffset).toBe(0);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const text = Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8');
    expect(/^ *$/.test(text.slice(text.lastIndexOf('}') + 1))).toBe(true);
    const header = JSON.parse(text) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
    const names = Object.keys(header);
    expect(names).toEqual(Object.keys(sample).sort());
    let offset = 0;
    for (const name of names) {
      expect(header[name].dtype).toBe('F32');
      expect(header[name].data_offsets).toEqual([offset, offset + 4 * sample[name].data.length]);
      offset += 4 * sample[name].data.length;
    }
    expect(bytes.length).toBe(8 + n + offset);
    expect('__metadata__' in header).toBe(false);
  });

  test('aligned F32 data is a view of the input; unaligned data is copied with the same values', () => {
    const bytes = writeSafetensors(sample);
    const aligned = readSafetensors(bytes).tensors.grid;
    expect(aligned.data.buffer).toBe(bytes.buffer);
    for (const shift of [1, 2, 3, 4]) {
      const holder = new Uint8Array(bytes.length + shift);
      holder.set(bytes, shift);
      const view = holder.subarray(shift);
      const grid = readSafetensors(view).tensors.grid;
      expect(grid.data).toEqual(sample.grid.data);
      expect(grid.data.buffer === holder.buffer).toBe(shift === 4);
    }
  });

  test('tensors with dims instead of shape are written; names such as __proto__ survive', () => {
    const data = new Float32Array([1, 2]);
    const weird: Record<string, { data: Float32Array; dims: number[] }> = {};
    Object.defineProperty(weird, '__proto__', { value: { data, dims: [2] }, enumerable: true });
    weird['ünïcode.名前'] = { data, dims: [1, 2] };
    const { tensors } = readSafetensors(writeSafetensors(weird));
    expect(Object.keys(tensors).sort()).toEqual(['__proto__', 'ünïcode.名前']);
    expect(Object.getPrototypeOf(tensors)).toBe(Object.prototype);
    expect(tensors['ünïcode.名前'].shape).toEqual([1, 2]);
  });

  test('an empty file (no tensors) and tensors of shape [] and [0]', () => {
    expect(readSafetensors(writeSafetensors({}))).toEqual({ tensors: {}, metadata: {} });
    const scalar = new Float32Array([2.5]);
    const bytes = file(
      { s: { dtype: 'F32', shape: [], data_offsets: [0, 4] }, e: { dtype: 'F32', shape: [3, 0], data_offsets: [4, 4] } },
      new Uint8Array(scalar.buffer),
    );
    const { tensors } = readSafetensors(bytes);
    expect([...tensors.s.data]).toEqual([2.5]);
    expect(tensors.s.shape).toEqual([]);
    expect(tensors.e.data.length).toBe(0);
  });

  test('loadSafetensors and loadSafetensorsSync read a file; errors name the path', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-st-'));
    try {
      const good = path.join(dir, 'w.safetensors');
      fs.writeFileSync(good, writeSafetensors(sample, { k: 'v' }));
      const a = await loadSafetensors(good);
      const b = loadSafetensorsSync(good);
      expect(a.metadata).toEqual({ k: 'v' });
      expect(b.tensors.grid.data).toEqual(sample.grid.data);
      expect(a.tensors['a.bias'].data).toEqual(sample['a.bias'].data);
      const bad = path.join(dir, 'bad.safetensors');
      fs.writeFileSync(bad, file('{"x": '));
      const expected = { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /bad\.safetensors: the header is not valid UTF-8 JSON/ } as const;
      expectThrows(() => loadSafetensorsSync(bad), expected);
      await expectRejects(loadSafetensors(bad), expected);
      await expect(loadSafetensors(path.join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
      expectThrows(() => loadSafetensorsSync(7 as unknown as string), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /path: expected a string/ });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('conversions', () => {
  // float16 decoded bit by bit into a float64 (a different route from the reader's).
  function halfByBits(h: number): number {
    const sign = BigInt(h >> 15);
    const e = (h >> 10) & 0x1f;
    let m = h & 0x3ff;
    const view = new DataView(new ArrayBuffer(8));
    if (e === 31) return m ? NaN : sign ? -Infinity : Infinity;
    let exponent: number;
    if (e === 0) {
      if (m === 0) return sign ? -0 : 0;
      let p = 9;
      while (!(m & (1 << p))) p--;
      exponent = p - 24; // value = 2^(p-24) · (1.fraction)
      m = (m ^ (1 << p)) << (10 - p);
    } else {
      exponent = e - 15;
    }
    view.setBigUint64(0, (sign << 63n) | (BigInt(exponent + 1023) << 52n) | (BigInt(m) << 42n));
    return view.getFloat64(0);
  }

  // bfloat16 decoded arithmetically (the reader shifts bits).
  function bfloatByArithmetic(h: number): number {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >> 7) & 0xff;
    const m = h & 0x7f;
    if (e === 255) return m ? NaN : sign * Infinity;
    if (e === 0) return sign * (m / 128) * 2 ** -126;
    return sign * (1 + m / 128) * 2 ** (e - 127);
  }

  const all = Array.from({ length: 65536 }, (_, i) => i);

  test.each([
    ['F16', halfByBits],
    ['BF16', bfloatByArithmetic],
  ] as const)('%s: all 65536 bit patterns (subnormals, ±0, ±inf, NaN)', (dtype, decode) => {
    const { tensors } = readSafetensors(file({ t: { dtype, shape: [256, 256], data_offsets: [0, 131072] } }, u16(all)));
    const got = tensors.t.data;
    let mismatches = 0;
    for (const h of all) if (!Object.is(got[h], Math.fround(decode(h)))) mismatches++;
    expect(mismatches).toBe(0);
    expect(tensors.t.shape).toEqual([256, 256]);
  });

  test('F16 landmarks: 1, -2, 65504, smallest subnormal, largest subnormal, smallest normal', () => {
    const { tensors } = readSafetensors(
      file({ t: { dtype: 'F16', shape: [6], data_offsets: [0, 12] } }, u16([0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400])),
    );
    expect([...tensors.t.data]).toEqual([1, -2, 65504, 2 ** -24, 1023 * 2 ** -24, 2 ** -14]);
  });

  test('F64 is rounded to float32; F32 bytes are read little-endian', () => {
    const values = [Math.PI, -1e-40, 1e300, 1 / 3];
    const f64 = new Uint8Array(32);
    values.forEach((v, i) => new DataView(f64.buffer).setFloat64(8 * i, v, true));
    const { tensors } = readSafetensors(file({ d: { dtype: 'F64', shape: [4], data_offsets: [0, 32] } }, f64));
    expect([...tensors.d.data]).toEqual(values.map(Math.fround));
    const f32 = new Uint8Array(4);
    new DataView(f32.buffer).setFloat32(0, -0.15625, true);
    expect([...readSafetensors(file({ f: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32)).tensors.f.data]).toEqual([-0.15625]);
  });

  test('other dtypes: TypeError naming the tensor, unless left out with include', () => {
    const bytes = file(
      {
        ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
        w: { dtype: 'F32', shape: [1], data_offsets: [16, 20] },
        flags: { dtype: 'BOOL', shape: [4], data_offsets: [20, 24] },
      },
      new Uint8Array(24),
    );
    expectThrows(() => readSafetensors(bytes), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /tensor 'ids' has dtype I64; only F32, F16, BF16, F64/ });
    const { tensors } = readSafetensors(bytes, { include: (name) => name === 'w' });
    expect(Object.keys(tensors)).toEqual(['w']);
    expectThrows(() => readSafetensors(bytes, { include: 'w' as unknown as () => boolean }), {
      name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /options.include: expected a function/,
    });
  });
});

describe('malformed files', () => {
  const bad = (message: RegExp) => ({ name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message }) as const;
  const f32 = (begin: number, end: number, shape = [(end - begin) / 4]) => ({ dtype: 'F32', shape, data_offsets: [begin, end] });

  test('not bytes, or shorter than the length field', () => {
    expectThrows(() => readSafetensors('abc' as unknown as Uint8Array), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /bytes: expected a Uint8Array or Buffer, received the string "abc"/ });
    expectThrows(() => readSafetensors(new Uint8Array(5)), bad(/8-byte header length; received 5 bytes/));
  });

  test('header length beyond the file or over 100 MB', () => {
    expectThrows(() => readSafetensors(file({}, new Uint8Array(0), 100n)), bad(/header length 100 reaches beyond the 10-byte file/));
    expectThrows(() => readSafetensors(file({}, new Uint8Array(0), 2n ** 63n)), bad(/header length 9223372036854775808 is over the limit of 100000000 bytes/));
    expect(MAX_HEADER_BYTES).toBe(100_000_000);
  });

  test('a header that is not JSON, not UTF-8 or not an object', () => {
    expectThrows(() => readSafetensors(file('{"a": {"dtype": ')), bad(/the header is not valid UTF-8 JSON/));
    const invalidUtf8 = file('{"a":1}');
    invalidUtf8[10] = 0xff;
    expectThrows(() => readSafetensors(invalidUtf8), bad(/not valid UTF-8 JSON/));
    expectThrows(() => readSafetensors(file('[1, 2]')), bad(/the header must be a JSON object, received an Array/));
  });

  test('duplicate tensor names', () => {
    const text = `{"w": ${JSON.stringify(f32(0, 4))}, "v": ${JSON.stringify(f32(4, 8))}, "w" : ${JSON.stringify(f32(0, 4))}}`;
    expectThrows(() => readSafetensors(file(text, new Uint8Array(8))), bad(/names tensor 'w' more than once/));
    // The same string inside values or as nested keys is not a duplicate.
    const nested = `{"__metadata__": {"w": "w"}, "w": ${JSON.stringify(f32(0, 4))}}`;
    expect(Object.keys(readSafetensors(file(nested, new Uint8Array(4))).tensors)).toEqual(['w']);
    const escaped = `{"a\\"b": ${JSON.stringify(f32(0, 4))}, "a\\u0022b": ${JSON.stringify(f32(4, 8))}}`;
    expectThrows(() => readSafetensors(file(escaped, new Uint8Array(8))), bad(/names tensor 'a"b' more than once/));
  });

  test('entries: not an object, unknown dtype, bad shape, bad offsets', () => {
    expectThrows(() => readSafetensors(file({ w: 3 })), bad(/tensor 'w': expected an object \{ dtype, shape, data_offsets \}/));
    expectThrows(() => readSafetensors(file({ w: { dtype: 'F12', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4))), bad(/tensor 'w': unknown dtype the string "F12"/));
    expectThrows(() => readSafetensors(file({ w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, new Uint8Array(4))), bad(/tensor 'w': expected a shape of non-negative integers/));
    expectThrows(() => readSafetensors(file({ w: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, new Uint8Array(4))), bad(/tensor 'w': expected data_offsets \[begin, end\] with 0 <= begin <= end, received \[4,0\]/));
    expectThrows(() => readSafetensors(file({ w: { dtype: 'F32', shape: [1], data_offsets: [0] } }, new Uint8Array(4))), bad(/tensor 'w': expected data_offsets/));
  });

  test('offsets out of range', () => {
    expectThrows(() => readSafetensors(file({ w: f32(0, 12) }, new Uint8Array(8))), bad(/tensor 'w': data_offsets \[0, 12\] reach beyond the 8 bytes of data/));
  });

  test('overlapping tensors', () => {
    expectThrows(() => readSafetensors(file({ a: f32(0, 8), b: f32(4, 12) }, new Uint8Array(12))), bad(/tensor 'b' overlaps tensor 'a'/));
  });

  test('gaps and data no tensor covers', () => {
    expectThrows(() => readSafetensors(file({ a: f32(0, 4), b: f32(8, 12) }, new Uint8Array(12))), bad(/bytes 4 to 8 of the data belong to no tensor \(before 'b'\)/));
    expectThrows(() => readSafetensors(file({ a: f32(0, 4) }, new Uint8Array(8))), bad(/the tensors cover 4 of the 8 bytes of data/));
  });

  test('misaligned offsets', () => {
    const header = { h: { dtype: 'F16', shape: [1], data_offsets: [0, 2] }, w: f32(2, 6) };
    expectThrows(() => readSafetensors(file(header, new Uint8Array(6))), bad(/tensor 'w': data offset 2 is not a multiple of the 4-byte size of F32/));
  });

  test('shape product not matching the byte length', () => {
    expectThrows(() => readSafetensors(file({ w: f32(0, 16, [2, 3]) }, new Uint8Array(16))), bad(/tensor 'w': shape \[2, 3\] of F32 needs 24 bytes, data_offsets \[0, 16\] hold 16/));
  });

  test('metadata that is not an object of strings', () => {
    expectThrows(() => readSafetensors(file({ __metadata__: { n: 1 } })), bad(/__metadata__\['n'\] must be a string, received the number 1/));
    expectThrows(() => readSafetensors(file({ __metadata__: [] })), bad(/__metadata__ must be an object of strings/));
  });
});

describe('writeSafetensors input checks', () => {
  test('bad tensors, metadata and names', () => {
    expectThrows(() => writeSafetensors(null as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /tensors: expected an object of tensors by name, received null/ });
    expectThrows(() => writeSafetensors({ w: { data: [1, 2] as unknown as Float32Array, shape: [2] } }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /tensors\['w'\].data: expected a Float32Array/ });
    expectThrows(() => writeSafetensors({ w: { data: new Float32Array(3), shape: [2] } }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /tensors\['w'\]: data length 3 does not match shape \[2\]/ });
    expectThrows(() => writeSafetensors({ __metadata__: { data: new Float32Array(1), shape: [1] } }), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /'__metadata__' is reserved/ });
    expectThrows(() => writeSafetensors({}, { n: 1 } as unknown as Record<string, string>), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /metadata\['n'\]: expected a string, received the number 1/ });
  });
});
