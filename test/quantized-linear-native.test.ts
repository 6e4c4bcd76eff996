/**
 * Weight-only quantized linear layers through the addon: linearQuantize (int8 with
 * per-output-channel scales, bf16), linearPackQuantized, and linear plan steps on the
 * packed values, against float64 references over the dequantized weights; each row of a
 * batched step has the bits it gets alone; the input errors.
 */
import { native } from '../lib/native';
import { expectThrows } from './helpers/errors';
import { erf } from './helpers/layer-reference';
import { seededUniform } from './helpers/reference';

type Activation = 'none' | 'relu' | 'gelu';

/** Arrays made by the addon come from another realm than the test's: `instanceof` fails. */
function typeName(a: object): string {
  return Object.prototype.toString.call(a).slice(8, -1);
}

/** bf16 bits of a finite float: the upper 16 bits rounded to nearest, ties to even. */
function bf16Bits(f: number): number {
  const bits = new Uint32Array(new Float32Array([f]).buffer)[0];
  const lsb = Math.floor(bits / 65536) & 1;
  return Math.floor((bits + 0x7fff + lsb) / 65536) & 0xffff;
}

function bf16Value(h: number): number {
  return new Float32Array(new Uint32Array([h * 65536]).buffer)[0];
}

/** W [out, in] as the kernels see it: q · scale (int8) or the bf16 values. */
function dequantize(values: Int8Array | Uint16Array, scales: Float32Array | null, inF: number): Float64Array {
  const w = new Float64Array(values.length);
  for (let k = 0; k < values.length; k++) {
    w[k] = scales !== null ? values[k] * scales[Math.floor(k / inF)] : bf16Value(values[k]);
  }
  return w;
}

function act(v: number, a: Activation): number {
  if (a === 'relu') return Math.max(0, v);
  if (a === 'gelu') return 0.5 * v * (1 + erf(v / Math.SQRT2));
  return v;
}

interface Quantized {
  values: Int8Array | Uint16Array;
  scales: Float32Array | null;
  packed: Int8Array | Uint16Array;
}

function quantize(w: Float32Array, inF: number, outF: number, format: 'int8' | 'bf16'): Quantized {
  const { values, scales } = native().linearQuantize(w, inF, outF, format);
  const packed = typeName(values) === 'Int8Array' ? native().linearPackQuantized(values as Int8Array, inF, outF) : native().linearPackQuantized(values as Uint16Array, inF, outF);
  return { values, scales, packed };
}

function runLinear(q: Quantized, x: Float32Array, rows: number, inF: number, outF: number, opts: { bias?: Float32Array; residual?: Float32Array; activation?: Activation } = {}): Float32Array {
  const y = new Float32Array(rows * outF);
  native().runPlanSync([{ op: 'linear', x, rows, in: inF, out: outF, packed: q.packed, scales: q.scales, bias: opts.bias ?? null, residual: opts.residual ?? null, activation: opts.activation ?? 'none', y }]);
  return y;
}

describe('linearQuantize', () => {
  const inF = 37;
  const outF = 21;
  const w = seededUniform(inF * outF, 5, 4);
  w.fill(0, 2 * inF, 3 * inF); // an all-zero row: scale 0, values 0

  test('int8: values in [-127, 127], scale = max|row| / 127, error <= scale / 2', () => {
    const { values, scales } = native().linearQuantize(w, inF, outF, 'int8');
    expect(typeName(values)).toBe('Int8Array');
    expect(values.length).toBe(inF * outF);
    expect(scales.length).toBe(outF);
    for (let o = 0; o < outF; o++) {
      let amax = 0;
      for (let i = 0; i < inF; i++) amax = Math.max(amax, Math.abs(w[o * inF + i]));
      expect(scales[o]).toBe(Math.fround(amax / 127));
      for (let i = 0; i < inF; i++) {
        const k = o * inF + i;
        expect(Math.abs(values[k])).toBeLessThanOrEqual(127);
        expect(Math.abs(values[k] * scales[o] - w[k])).toBeLessThanOrEqual(scales[o] / 2);
      }
    }
    expect(scales[2]).toBe(0);
    expect(Array.from(values.subarray(2 * inF, 3 * inF)).every((v) => v === 0)).toBe(true);
  });

  test('bf16: the bits of rounding to nearest even, scales null', () => {
    const ties = new Float32Array(new Uint32Array([0x3f808000, 0x3f818000, 0xbf818000, 0x3f808001, 0x3f807fff]).buffer);
    const wt = Float32Array.from([...w.subarray(0, inF * outF - ties.length), ...ties]);
    const { values, scales } = native().linearQuantize(wt, inF, outF, 'bf16');
    expect(typeName(values)).toBe('Uint16Array');
    expect(scales).toBeNull();
    expect(Array.from(values)).toEqual(Array.from(wt, bf16Bits));
    expect(Array.from(values.subarray(values.length - ties.length))).toEqual([0x3f80, 0x3f82, 0xbf82, 0x3f81, 0x3f80]);
  });

  test('packing keeps the type and has the padded length', () => {
    for (const format of ['int8', 'bf16'] as const) {
      const q = quantize(w, inF, outF, format);
      expect(typeName(q.packed)).toBe(typeName(q.values));
      expect(q.packed.length).toBe(inF * 32); // 21 columns padded to 32
    }
  });
});

describe('quantized linear plan steps', () => {
  const cases: [number, number][] = [
    [16, 16],
    [15, 17],
    [64, 64],
    [63, 65],
  ];
  const activations: Activation[] = ['none', 'relu', 'gelu'];

  for (const format of ['int8', 'bf16'] as const) {
    test(`${format}: x · W'^T + bias (+ residual), each activation, within 1e-5 of float64`, () => {
      let seed = 100;
      for (const [inF, outF] of cases) {
        const w = seededUniform(inF * outF, seed++, 2);
        const q = quantize(w, inF, outF, format);
        const wd = dequantize(q.values, q.scales, inF);
        const bias = seededUniform(outF, seed++, 2);
        for (const rows of [1, 3, 8, 65]) {
          const x = seededUniform(rows * inF, seed++, 2);
          const residual = seededUniform(rows * outF, seed++, 2);
          activations.forEach((activation, a) => {
            const withResidual = a !== 1;
            const y = runLinear(q, x, rows, inF, outF, { bias, residual: withResidual ? residual : undefined, activation });
            let worst = 0;
            for (let r = 0; r < rows; r++) {
              for (let o = 0; o < outF; o++) {
                let sum = bias[o];
                let mag = Math.abs(bias[o]);
                for (let i = 0; i < inF; i++) {
                  sum += x[r * inF + i] * wd[o * inF + i];
                  mag += Math.abs(x[r * inF + i] * wd[o * inF + i]);
                }
                const res = withResidual ? residual[r * outF + o] : 0;
                const want = act(sum, activation) + res;
                worst = Math.max(worst, Math.abs(y[r * outF + o] - want) / (mag + Math.abs(res)));
              }
            }
            expect({ format, inF, outF, rows, activation, ok: worst <= 1e-5 }).toEqual({ format, inF, outF, rows, activation, ok: true });
          });
        }
      }
    });

    test(`${format}: each row of a 9-row step has the bits it gets alone`, () => {
      for (const [inF, outF] of cases) {
        const w = seededUniform(inF * outF, 7, 2);
        const q = quantize(w, inF, outF, format);
        const bias = seededUniform(outF, 8, 2);
        const x = seededUniform(9 * inF, 9, 2);
        const all = runLinear(q, x, 9, inF, outF, { bias, activation: 'gelu' });
        for (let r = 0; r < 9; r++) {
          const alone = runLinear(q, x.slice(r * inF, (r + 1) * inF), 1, inF, outF, { bias, activation: 'gelu' });
          expect(new Uint32Array(all.buffer, r * outF * 4, outF)).toEqual(new Uint32Array(alone.buffer));
        }
      }
    });
  }

  test('async plans run quantized steps too', async () => {
    const w = seededUniform(16 * 24, 11, 2);
    const x = seededUniform(2 * 16, 12, 2);
    const q = quantize(w, 16, 24, 'int8');
    const want = runLinear(q, x, 2, 16, 24);
    const y = new Float32Array(2 * 24);
    await native().runPlanAsync([{ op: 'linear', x, rows: 2, in: 16, out: 24, packed: q.packed, scales: q.scales, activation: 'none', y }]);
    expect(y).toEqual(want);
  });
});

describe('quantized linear errors', () => {
  const inF = 8;
  const outF = 5;
  const w = seededUniform(inF * outF, 3, 2);
  const x = new Float32Array(inF);
  const y = new Float32Array(outF);
  const int8 = quantize(w, inF, outF, 'int8');
  const bf16 = quantize(w, inF, outF, 'bf16');
  const step = (fields: object): void => native().runPlanSync([{ op: 'linear', x, rows: 1, in: inF, out: outF, activation: 'none', y, ...fields }]);

  test('linearQuantize', () => {
    const bad = Float32Array.from(w);
    bad[13] = NaN;
    expectThrows(() => native().linearQuantize(bad, inF, outF, 'int8'), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /NaN at index 13/ });
    bad[13] = -Infinity;
    expectThrows(() => native().linearQuantize(bad, inF, outF, 'bf16'), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /infinity at index 13/ });
    bad[13] = 3.4e38; // finite, but rounds to infinity in bf16
    expectThrows(() => native().linearQuantize(bad, inF, outF, 'bf16'), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /beyond bf16 at index 13/ });
    expect(() => native().linearQuantize(bad, inF, outF, 'int8')).not.toThrow();
    expectThrows(() => native().linearQuantize(w, inF, outF + 1, 'int8'), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /weight: expected 6 x 8 = 48 elements, received 40/ });
    expectThrows(() => native().linearQuantize(new Float32Array(0), 0, outF, 'int8'), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /inFeatures: expected an integer >= 1/ });
    expectThrows(() => native().linearQuantize(w, inF, outF, 'fp8' as 'int8'), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /format: expected 'int8' or 'bf16'/ });
    expectThrows(() => native().linearQuantize(Float64Array.from(w) as unknown as Float32Array, inF, outF, 'int8'), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /weight: expected a Float32Array/ });
  });

  test('linearPackQuantized', () => {
    expectThrows(() => native().linearPackQuantized(int8.values.slice(1) as Int8Array, inF, outF), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /values: expected 5 x 8 = 40 elements, received 39/ });
    expectThrows(() => native().linearPackQuantized(new Float32Array(40) as unknown as Int8Array, inF, outF), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /values: expected an Int8Array/ });
    expectThrows(() => native().linearPackQuantized(bf16.values as Uint16Array, inF, 0), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /outFeatures: expected an integer >= 1/ });
  });

  test('plan steps: missing or stray scales, wrong lengths and types', () => {
    expect(() => step({ packed: int8.packed, scales: int8.scales })).not.toThrow();
    expect(() => step({ packed: bf16.packed })).not.toThrow();
    expectThrows(() => step({ packed: int8.packed }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /int8 weights need scales, a Float32Array of 5 floats/ });
    expectThrows(() => step({ packed: bf16.packed, scales: int8.scales }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /scales are for int8 weights only/ });
    expectThrows(() => step({ packed: int8.packed.subarray(1), scales: int8.scales }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /packed: expected 128 elements, received 127/ });
    expectThrows(() => step({ packed: new Uint16Array(129) }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /packed: expected 128 elements, received 129/ });
    expectThrows(() => step({ packed: int8.packed, scales: new Float32Array(4) }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /scales: expected at least 5 elements, received 4/ });
    expectThrows(() => step({ packed: int8.packed, scales: new Float64Array(5) }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /scales: expected a Float32Array/ });
    expectThrows(() => step({ packed: new Int16Array(128) }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /packed: expected a Float32Array/ });
  });
});
