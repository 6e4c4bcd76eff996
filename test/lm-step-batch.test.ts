// PerformerLM.stepBatch: many sessions advanced in one pass, each at its own position, give
// the same bits as stepping them one by one (logits and states), on every performer-pytorch
// fixture model and both numerics; sessions join and leave between steps; a session that
// must recompute its prefix does so alone; misuse is a precise error.
import { PerformerLM, type PerformerLMState } from '../lib';
import { fixtureCases, weightsPath } from './helpers/performer-fixtures';

const cases = fixtureCases();
const lmNames = Object.keys(cases).filter((name) => cases[name].cls === 'PerformerLM');

const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBits = (a: Float32Array, b: Float32Array) => bytesOf(a).equals(bytesOf(b));

// A deterministic token stream per (session, position).
const tokenAt = (session: number, position: number, vocab: number) => (session * 131 + position * 17 + ((session * position) % 7)) % vocab;

function load(name: string, numerics: 'performer-pytorch' | 'exact'): PerformerLM {
  return PerformerLM.fromPerformerPytorch(weightsPath(name), cases[name].ctor as never, { numerics });
}

describe.each(lmNames)('%s', (name) => {
  const ctor = cases[name].ctor as { num_tokens: number; max_seq_len: number };
  const vocab = ctor.num_tokens;
  test.each(['performer-pytorch', 'exact'] as const)('%s numerics: batched steps equal one-by-one steps bit for bit', (numerics) => {
    const model = load(name, numerics);
    const sessions = 6;
    const prompts = [0, 1, 5, 9, 2, 13];
    const rounds = Math.min(10, ctor.max_seq_len - Math.max(...prompts) - 1);
    const batched: PerformerLMState[] = [];
    const single: PerformerLMState[] = [];
    for (let i = 0; i < sessions; i++) {
      const prompt = Int32Array.from({ length: prompts[i] }, (_, p) => tokenAt(i, p, vocab));
      for (const list of [batched, single]) {
        const s = model.createStateSync();
        if (prompt.length > 0) model.stepSync(prompt, s);
        list.push(s);
      }
    }
    let recomputes = 0;
    for (let round = 0; round < rounds; round++) {
      // Sessions join and leave: each round leaves one out, and the order changes.
      const active = Array.from({ length: sessions }, (_, i) => (i + round) % sessions).filter((i) => i !== round % sessions);
      const tokens = Int32Array.from(active, (i) => tokenAt(i, batched[i].position, vocab));
      const out = model.stepBatchSync(active.map((i) => batched[i]), tokens);
      expect(out.shape).toEqual([active.length, vocab]);
      active.forEach((i, row) => {
        const expected = model.stepSync(Int32Array.of(tokens[row]), single[i]);
        const got = out.data.subarray(row * vocab, (row + 1) * vocab);
        if (!sameBits(got, expected)) throw new Error(`round ${round}, session ${i}: logits differ from a single step`);
      });
    }
    for (let i = 0; i < sessions; i++) {
      expect(batched[i].position).toBe(single[i].position);
      expect(batched[i].recomputes).toBe(single[i].recomputes);
      recomputes += batched[i].recomputes;
      expect(Buffer.from(batched[i].serialize()).equals(Buffer.from(single[i].serialize()))).toBe(true);
    }
    if (name === 'lm_softmax_deep_causal' && numerics === 'performer-pytorch') {
      // This model's lower-layer key maxima rise often: recomputes happened inside batches.
      expect(recomputes).toBeGreaterThan(prompts.length);
    }
  });
});

describe('stepBatch (async) and errors', () => {
  const model = load('lm_variants', 'exact');
  const vocab = (cases.lm_variants.ctor as { num_tokens: number }).num_tokens;

  test('the Promise form gives the same logits and states as the blocking form', async () => {
    const a = [model.createStateSync(), model.createStateSync()];
    model.stepSync([1, 2, 3], a[1]);
    const b = a.map((s) => s.clone());
    for (let round = 0; round < 4; round++) {
      const tokens = Int32Array.of(round + 4, round + 9);
      const x = await model.stepBatch(a, tokens);
      const y = model.stepBatchSync(b, tokens);
      expect(sameBits(x.data, y.data)).toBe(true);
    }
    expect(Buffer.from(a[1].serialize()).equals(Buffer.from(b[1].serialize()))).toBe(true);
  });

  test('an abort before the pass starts leaves every state as it was', async () => {
    const states = [model.createStateSync(), model.createStateSync()];
    model.stepSync([7, 8], states[0]);
    const before = states.map((s) => Buffer.from(s.serialize()));
    await expect(model.stepBatch(states, [1, 2], { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    states.forEach((s, i) => expect(Buffer.from(s.serialize()).equals(before[i])).toBe(true));
    expect(states.map((s) => s.position)).toEqual([2, 0]);
  });

  test('bad states and tokens are errors that name the argument', async () => {
    const s = model.createStateSync();
    const t = model.createStateSync();
    const other = load('lm_trained_small', 'exact').createStateSync();
    expect(() => model.stepBatchSync([], [])).toThrow(/PerformerLM\.stepBatchSync states: expected at least one state, received none/);
    expect(() => model.stepBatchSync(s as never, [1])).toThrow(/states: expected an array of PerformerLMState/);
    expect(() => model.stepBatchSync([s, s], [1, 2])).toThrow(/states\[1\]: the same state appears twice/);
    expect(() => model.stepBatchSync([s, t], [1])).toThrow(/tokens: expected one token per state \(2\), received 1/);
    expect(() => model.stepBatchSync([s, other], [1, 2])).toThrow(/states\[1\]: made by a different model/);
    expect(() => model.stepBatchSync([s, {} as never], [1, 2])).toThrow(/states\[1\]: expected a PerformerLMState/);
    expect(() => model.stepBatchSync([s, t], [1, vocab])).toThrow(RangeError);
    const running = model.stepBatch([s], [1]);
    expect(() => model.stepBatchSync([t, s], [1, 2])).toThrow(/states\[1\]: another step is using this state/);
    await running;
    expect([s.position, t.position]).toEqual([1, 0]);
  });

  test('learned positions: a session at the end of its table is named, and no state moves', () => {
    const maxSeqLen = (cases.lm_variants.ctor as { max_seq_len: number }).max_seq_len;
    const full = model.createStateSync();
    model.stepSync(Int32Array.from({ length: maxSeqLen }, (_, i) => i % vocab), full);
    const fresh = model.createStateSync();
    expect(() => model.stepBatchSync([fresh, full], [1, 2])).toThrow(/states\[1\]: positions 160 to 160 go past the model's learned/);
    expect([fresh.position, full.position]).toEqual([0, maxSeqLen]);
  });
});

describe('TokenSampler (lm.sampler)', () => {
  const model = load('lm_trained_small', 'exact');
  const prompt = Int32Array.from(cases.lm_trained_small.greedy_prompt!);

  test("picks generate's tokens, and a sampler made from state() continues the same sequence", async () => {
    for (const options of [{}, { temperature: 0.9, seed: 11 }, { temperature: 1.3, topK: 20, topP: 0.9, seed: 5 }]) {
      const expected: number[] = [];
      for await (const token of model.generate(prompt, { maxNewTokens: 24, ...options })) expected.push(token);
      const state = model.createStateSync();
      let sampler = model.sampler(options);
      let logits = model.stepSync(prompt, state);
      const got: number[] = [];
      for (let i = 0; i < 24; i++) {
        if (i === 10) sampler = model.sampler(JSON.parse(JSON.stringify(sampler.state()))); // moved mid-way
        const token = sampler.next(logits);
        got.push(token);
        logits = model.stepSync(Int32Array.of(token), state);
      }
      expect(got).toEqual(expected);
      if ('temperature' in options) expect(sampler.state().draws).toBe(24);
    }
  });

  test('bad options and logits are errors', () => {
    expect(() => model.sampler({ temperature: -1 })).toThrow(/PerformerLM\.sampler options\.temperature/);
    expect(() => model.sampler({ draws: -1, seed: 1 })).toThrow(/PerformerLM\.sampler options\.draws/);
    expect(() => model.sampler({ temprature: 1 } as never)).toThrow(/PerformerLM\.sampler options: unknown option 'temprature'/);
    expect(() => model.sampler().next(new Float32Array(3))).toThrow(/expected 128 values \(num_tokens\), received 3/);
    expect(() => model.sampler().next([1, 2] as never)).toThrow(/expected a Float32Array/);
  });
});
