/**
 * The exact (blockwise, online-softmax) attention equals a naive float64 softmax on
 * every ISA, at lengths around vector widths and block sizes.
 */
import {
  backendInfo,
  setBackend,
  softmaxAttention,
  softmaxAttentionSync,
  type MaskBytes,
  type SoftmaxAttentionOptions,
} from '../lib';
import { allFinite, makeInputs, memo, refSoftmax, relFrobenius, Rng, type Inputs, type RefSoftmaxOptions } from './helpers/reference';

const TOL = 1e-5;
const ISAS = backendInfo().available;
const ORIGINAL_ISA = backendInfo().isa;
// Around SIMD widths (8, 16) and the query/key block sizes (64, 128).
const LENGTHS = [1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 127, 128, 129, 200];
const HEAD_DIMS = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 128];

afterAll(() => {
  setBackend({ isa: ORIGINAL_ISA });
});

const cachedRef = memo<Float64Array>();

class Checker {
  failures: string[] = [];
  close(label: string, actual: Float32Array, expected: Float64Array): void {
    if (!allFinite(actual)) {
      this.failures.push(`${label}: non-finite output`);
      return;
    }
    const err = relFrobenius(actual, expected);
    if (!(err <= TOL)) this.failures.push(`${label}: relative Frobenius error ${err.toExponential(2)} > ${TOL}`);
  }
}

function maskOf(B: number, Lk: number, attend: (b: number, j: number) => boolean): MaskBytes {
  const data = new Uint8Array(B * Lk);
  for (let b = 0; b < B; b++) for (let j = 0; j < Lk; j++) data[b * Lk + j] = attend(b, j) ? 1 : 0;
  return { data, shape: [B, Lk] };
}

function run(c: Checker, label: string, key: string, inputs: Inputs, o: SoftmaxAttentionOptions = {}): Float32Array {
  const refOpts: RefSoftmaxOptions = { causal: o.causal, scale: o.scale, keyPadding: (o.keyPaddingMask as MaskBytes | undefined)?.data as Uint8Array | undefined };
  const ref = cachedRef(key, () => refSoftmax(inputs, refOpts));
  const out = softmaxAttentionSync(inputs.q, inputs.k, inputs.v, o).data;
  c.close(label, out, ref);
  return out;
}

function bytesEqual(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe.each(ISAS)('softmax attention equals the float64 reference (isa %s)', (isa) => {
  beforeAll(() => {
    expect(setBackend({ isa }).isa).toBe(isa);
  });

  test.each(LENGTHS.map((L, i) => [L, i]))('L = %i: bidirectional and causal, two head sizes', (L, i) => {
    const c = new Checker();
    // One head size from the list (d = 1 with L = 1), Dv != d; and d = Dv = 16.
    const shapes: Array<[number, number]> = [
      [HEAD_DIMS[i], HEAD_DIMS[(i + 5) % HEAD_DIMS.length]],
      [16, 16],
    ];
    for (const [d, Dv] of shapes) {
      const inputs = makeInputs(100 + L * 13 + d, { B: 2, H: 2, Lq: L, Lk: L, d, Dv });
      for (const causal of [false, true]) {
        run(c, `L ${L} d ${d} Dv ${Dv} causal ${causal}`, `len|${L}|${d}|${Dv}|${causal}`, inputs, { causal });
      }
    }
    expect(c.failures).toEqual([]);
  });

  test.each([
    [1, 200],
    [200, 1],
    [7, 129],
    [129, 7],
    [64, 65],
    [65, 64],
    [63, 128],
  ])('Lq = %i, Lk = %i: bidirectional and causal (bottom-right aligned)', (Lq, Lk) => {
    const c = new Checker();
    const inputs = makeInputs(200 + Lq * 3 + Lk, { B: 2, H: 2, Lq, Lk, d: 9, Dv: 5 });
    for (const causal of [false, true]) {
      const out = run(c, `Lq ${Lq} Lk ${Lk} causal ${causal}`, `lqlk|${Lq}|${Lk}|${causal}`, inputs, { causal });
      if (causal && Lq > Lk) {
        // The first Lq - Lk queries see no key: zero rows.
        for (let p = 0; p < 4; p++) {
          const rows = out.subarray(p * Lq * 5, (p * Lq + Lq - Lk) * 5);
          if (rows.some((x) => x !== 0)) c.failures.push(`Lq ${Lq} Lk ${Lk}: blind rows not zero`);
        }
      }
    }
    expect(c.failures).toEqual([]);
  });

  test('key padding, incl. a fully masked batch item (zero rows), alone and with causal', () => {
    const c = new Checker();
    const Lk = 130;
    const rng = new Rng(5);
    const random = Array.from({ length: Lk }, () => rng.uniform() > 0.4);
    // b0: random, b1: a single key (j = 100), b2: nothing.
    const mask = maskOf(3, Lk, (b, j) => (b === 0 ? random[j] : b === 1 ? j === 100 : false));
    for (const Lq of [130, 70]) {
      const Dv = 6;
      const inputs = makeInputs(300 + Lq, { B: 3, H: 2, Lq, Lk, d: 16, Dv });
      for (const causal of [false, true]) {
        const out = run(c, `Lq ${Lq} causal ${causal} masked`, `mask|${Lq}|${causal}`, inputs, { causal, keyPaddingMask: mask });
        const item = 2 * Lq * Dv; // floats per batch item (2 heads)
        if (out.subarray(2 * item, 3 * item).some((x) => x !== 0)) c.failures.push(`Lq ${Lq} causal ${causal}: masked item not zero`);
        if (!causal) {
          // b1 attends exactly one key: its rows are that key's value row.
          for (let h = 0; h < 2; h++) {
            const vRow = inputs.v.data.subarray(((2 + h) * Lk + 100) * Dv, ((2 + h) * Lk + 101) * Dv);
            const oRow = out.subarray((2 + h) * Lq * Dv, ((2 + h) * Lq + 1) * Dv);
            if (!oRow.every((x, e) => Math.abs(x - vRow[e]) <= 1e-6 * Math.abs(vRow[e]))) c.failures.push('single-key row is not the value row');
          }
        }
      }
    }
    expect(c.failures).toEqual([]);
  });

  test('custom scale (incl. 0: the plain mean, and negative)', () => {
    const c = new Checker();
    const inputs = makeInputs(400, { B: 1, H: 3, Lq: 65, Lk: 129, d: 17, Dv: 3 });
    for (const scale of [0, 0.05, -0.3, 1, 2.5]) {
      for (const causal of [false, true]) {
        run(c, `scale ${scale} causal ${causal}`, `scale|${scale}|${causal}`, inputs, { scale, causal });
      }
    }
    expect(c.failures).toEqual([]);
  });

  test('a masked key with v = 1e9 is never read into a sum', () => {
    const inputs = makeInputs(500, { B: 1, H: 2, Lq: 40, Lk: 90, d: 8, Dv: 4 });
    const mask = maskOf(1, 90, (_b, j) => j !== 33);
    const v = Float32Array.from(inputs.v.data);
    for (let h = 0; h < 2; h++) v.fill(1e9, (h * 90 + 33) * 4, (h * 90 + 34) * 4);
    for (const causal of [false, true]) {
      const clean = softmaxAttentionSync(inputs.q, inputs.k, inputs.v, { keyPaddingMask: mask, causal }).data;
      const poisoned = softmaxAttentionSync(inputs.q, inputs.k, { data: v, shape: inputs.v.shape }, { keyPaddingMask: mask, causal }).data;
      expect(bytesEqual(clean, poisoned)).toBe(true);
    }
  });

  test('async softmaxAttention, and a given out tensor (prefilled with NaN), equal the sync result bit for bit', async () => {
    const inputs = makeInputs(600, { B: 2, H: 2, Lq: 129, Lk: 200, d: 33, Dv: 7 });
    const mask = maskOf(2, 200, (b, j) => b === 0 || j % 3 !== 0);
    const cases: SoftmaxAttentionOptions[] = [{}, { causal: true }, { keyPaddingMask: mask, scale: 0.7 }, { causal: true, keyPaddingMask: mask }];
    for (const o of cases) {
      const sync = softmaxAttentionSync(inputs.q, inputs.k, inputs.v, o);
      const asyncOut = await softmaxAttention(inputs.q, inputs.k, inputs.v, o);
      expect(asyncOut.shape).toEqual(sync.shape);
      expect(bytesEqual(asyncOut.data, sync.data)).toBe(true);
      // Every output element must be written, not accumulated into.
      const out = { data: new Float32Array(sync.data.length).fill(NaN), shape: sync.shape };
      const given = softmaxAttentionSync(inputs.q, inputs.k, inputs.v, { ...o, out });
      expect(given.data).toBe(out.data);
      expect(bytesEqual(given.data, sync.data)).toBe(true);
    }
  });
});
