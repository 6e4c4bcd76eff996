// stepBatch of the layers: many decoding sessions advanced in one pass, each at its own
// position, give the same bits as stepping them one by one (outputs and serialized states),
// with and without cross-attention memory; sessions join and leave between steps; misuse
// is a precise error and moves no state.
import { DecoderLayer, MultiHeadAttention, TransformerDecoder, type DecodingState, type Tensor } from '../lib';
import { expectRejects, expectThrows } from './helpers/errors';
import { randn, Rng } from './helpers/reference';

const D = 8;

function seq(seed: number, B: number, L: number, std = 1): Tensor {
  return { data: randn(new Rng(seed), B * L * D, std), shape: [B, L, D] };
}

const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBits = (a: Float32Array, b: Float32Array) => bytesOf(a).equals(bytesOf(b));
const stateBytes = (s: DecodingState) => Buffer.from(s.serialize());

// What the batched form shares with the single step, for every class.
interface Decoder {
  createStateSync(batch: number, options?: { memory: Tensor }): DecodingState;
  stepSync(x: Tensor, state: DecodingState): Tensor;
  stepBatchSync(states: readonly DecodingState[], x: Tensor): Tensor;
  stepBatch(states: readonly DecodingState[], x: Tensor, options?: { signal?: AbortSignal }): Promise<Tensor>;
  step(x: Tensor, state: DecodingState): Promise<Tensor>;
}

// Rows of several [B_i, n, D] inputs, one after another.
function concat(parts: Tensor[]): Tensor {
  const n = parts[0].shape[1];
  const data = new Float32Array(parts.reduce((len, p) => len + p.data.length, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p.data, at);
    at += p.data.length;
  }
  return { data, shape: [parts.reduce((rows, p) => rows + p.shape[0], 0), n, D] };
}

const models: [string, () => Decoder, boolean][] = [
  ['MultiHeadAttention', () => new MultiHeadAttention({ modelDim: D, numHeads: 2, causal: true, seed: 3 }), false],
  ['DecoderLayer with cross-attention', () => new DecoderLayer({ modelDim: D, numHeads: 2, ffDim: 24, seed: 4 }), true],
  ['DecoderLayer without cross-attention', () => new DecoderLayer({ modelDim: D, numHeads: 2, ffDim: 24, crossAttention: false, normFirst: true, seed: 5 }), false],
  [
    'TransformerDecoder with cross-attention',
    () => new TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 16, activation: 'gelu', finalNorm: true, seed: 6 }),
    true,
  ],
  ['TransformerDecoder without cross-attention', () => new TransformerDecoder({ modelDim: D, numHeads: 4, numLayers: 3, crossAttention: false, normFirst: true, seed: 7 }), false],
];

describe.each(models)('%s', (_name, make, cross) => {
  const model = make();
  // Session i: its batch, prompt length and (cross-attention) memory length.
  const batches = [1, 2, 1, 1, 3];
  const prompts = [0, 3, 1, 6, 2];
  const memoryOf = (i: number) => (cross ? { memory: seq(100 + i, batches[i], 2 + 3 * i) } : undefined);
  const input = (i: number, position: number, n: number) => seq(1000 * i + position, batches[i], n);

  function sessions(): DecodingState[][] {
    const batched: DecodingState[] = [];
    const single: DecodingState[] = [];
    batches.forEach((B, i) => {
      for (const list of [batched, single]) {
        const s = model.createStateSync(B, memoryOf(i));
        if (prompts[i] > 0) model.stepSync(input(i, 0, prompts[i]), s);
        list.push(s);
      }
    });
    return [batched, single];
  }

  test('batched steps equal one-by-one steps bit for bit, outputs and states, as sessions join and leave', () => {
    const [batched, single] = sessions();
    const lengths = [1, 1, 2, 1, 1, 3, 1];
    lengths.forEach((n, round) => {
      // Each round leaves one session out, and the order changes.
      const active = batches.map((_, i) => (i + round) % batches.length).filter((i) => i !== round % batches.length);
      const parts = active.map((i) => input(i, batched[i].position, n));
      const out = model.stepBatchSync(
        active.map((i) => batched[i]),
        concat(parts),
      );
      expect(out.shape).toEqual([active.reduce((rows, i) => rows + batches[i], 0), n, D]);
      let at = 0;
      active.forEach((i, k) => {
        const expected = model.stepSync(parts[k], single[i]);
        const got = out.data.subarray(at, at + expected.data.length);
        if (!sameBits(got, expected.data)) throw new Error(`round ${round}, session ${i}: the output differs from its own step`);
        at += expected.data.length;
      });
    });
    batches.forEach((_, i) => {
      expect(batched[i].position).toBe(single[i].position);
      expect(stateBytes(batched[i]).equals(stateBytes(single[i]))).toBe(true);
    });
  });

  test('the Promise form gives the same outputs and states as the blocking form', async () => {
    const [a, b] = sessions();
    for (let round = 0; round < 3; round++) {
      const x = concat(batches.map((_, i) => input(i, a[i].position, 1)));
      const p = await model.stepBatch(a, x);
      const q = model.stepBatchSync(b, x);
      expect(sameBits(p.data, q.data)).toBe(true);
    }
    a.forEach((s, i) => expect(stateBytes(s).equals(stateBytes(b[i]))).toBe(true));
    expect(a.every((s) => !s.busy)).toBe(true);
  });

  test('an abort before the pass starts leaves every state as it was', async () => {
    const [states] = sessions();
    const before = states.map(stateBytes);
    const x = concat(batches.map((_, i) => input(i, 0, 1)));
    await expect(model.stepBatch(states, x, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    states.forEach((s, i) => expect(stateBytes(s).equals(before[i])).toBe(true));
    expect(states.map((s) => s.position)).toEqual(prompts);
  });
});

describe('stepBatch errors', () => {
  const dec = new TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 2, seed: 1 });
  const memory = seq(7, 1, 4);
  const x2 = seq(8, 2, 1);

  test('bad states are errors that name the argument, and no state moves', async () => {
    const s = dec.createStateSync(1, { memory });
    const t = dec.createStateSync(1, { memory });
    const other = new TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 2, seed: 2 }).createStateSync(1, { memory });
    const arg = (message: RegExp) => ({ name: 'RangeError' as const, code: 'ERR_INVALID_ARG_VALUE', message });
    expectThrows(() => dec.stepBatchSync(s as never, x2), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /stepBatchSync states: expected an array of DecodingState/ });
    expectThrows(() => dec.stepBatchSync([], x2), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /stepBatchSync states: expected at least one state, received none/ });
    expectThrows(() => dec.stepBatchSync([s, s], x2), arg(/stepBatchSync states\[1\]: the same state appears twice/));
    expectThrows(() => dec.stepBatchSync([s, other], x2), arg(/stepBatchSync states\[1\]: made by a different model/));
    expectThrows(() => dec.stepBatchSync([s, {} as never], x2), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /states\[1\]: expected a DecodingState/ });
    const running = dec.step(seq(9, 1, 3), s);
    expectThrows(() => dec.stepBatchSync([t, s], x2), { name: 'Error', code: 'ERR_INVALID_STATE', message: /states\[1\]: an async step is using it/ });
    await running;
    expect([s.position, t.position, other.position]).toEqual([3, 0, 0]);
  });

  test('an input whose rows are not the states\' batches, or of another width, is a RangeError', () => {
    const s = dec.createStateSync(1, { memory });
    const t = dec.createStateSync(2, { memory: seq(10, 2, 3) });
    const before = [stateBytes(s), stateBytes(t)];
    expectThrows(() => dec.stepBatchSync([s, t], x2), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /stepBatchSync x: expected shape \[3, 1, 8\]/ });
    expectThrows(() => dec.stepBatchSync([s], { data: new Float32Array(4), shape: [1, 1, 4] }), {
      name: 'RangeError',
      code: 'ERR_OUT_OF_RANGE',
      message: /x: expected shape \[1, 1, 8\] \(\[batch, seq, modelDim\]\), received \[1, 1, 4\]/,
    });
    expect(stateBytes(s).equals(before[0]) && stateBytes(t).equals(before[1])).toBe(true);
    expect([s.position, t.position]).toEqual([0, 0]);
  });

  test('a non-finite input is rejected before any state moves', async () => {
    const s = dec.createStateSync(1, { memory });
    const t = dec.createStateSync(1, { memory });
    const bad = seq(11, 2, 1);
    bad.data[D + 3] = NaN;
    expect(() => dec.stepBatchSync([s, t], bad)).toThrow(/stepBatchSync x/);
    await expect(dec.stepBatch([s, t], bad)).rejects.toThrow(/stepBatch x/);
    expect([s.position, t.position, s.busy, t.busy]).toEqual([0, 0, false, false]);
  });

  test('a pass that overflows float32: every state absorbed its tokens, the session is named', async () => {
    const decoder = new TransformerDecoder({ modelDim: 4, numHeads: 2, numLayers: 1, seed: 1, crossAttention: false, finalNorm: true });
    const params = decoder.parameters();
    params['norm.weight'] = { data: new Float32Array(4).fill(3e38), shape: [4] };
    decoder.loadParameters(params);
    const states = [decoder.createStateSync(1), decoder.createStateSync(2)];
    const x = { data: Float32Array.from({ length: 12 }, (_, i) => (i % 5) - 2), shape: [3, 1, 4] };
    expectThrows(() => decoder.stepBatchSync(states, x), {
      name: 'RangeError',
      code: 'ERR_OUT_OF_RANGE',
      message: /stepBatchSync output: infinity at flat index \d+ \(states\[0\]\); the pass overflowed float32 .* every state of the step has absorbed the tokens \(position 1\)/,
    });
    expect(states.map((s) => s.position)).toEqual([1, 1]);
    await expectRejects(decoder.stepBatch(states, x), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /stepBatch output: infinity .*\(position 2\)/ });
    expect(states.map((s) => [s.position, s.busy])).toEqual([
      [2, false],
      [2, false],
    ]);
  });

  test('stepBatch needs a layer that decodes token by token', () => {
    const bidirectional = new MultiHeadAttention({ modelDim: D, numHeads: 2 });
    expectThrows(() => bidirectional.stepBatchSync([], x2), {
      name: 'RangeError',
      code: 'ERR_INVALID_ARG_VALUE',
      message: /MultiHeadAttention\.stepBatchSync: token-by-token decoding needs causal self-attention/,
    });
  });
});
