// PerformerLM / Performer as a service uses them: loading from every kind of weights,
// config and weight errors, decoding states (serialize, clone, abort, misuse), sampling
// options, positions past max_seq_len.
import * as fs from 'node:fs';

import { Performer, PerformerLM, readSafetensors, writeSafetensors, type Tensor } from '../lib';
import { readSampler, sample, seededRandom } from '../lib/models/sampling';
import { fixtureCases, relativeError, weightsPath } from './helpers/performer-fixtures';

const cases = fixtureCases();
const trained = cases.lm_trained_small;
const trainedConfig = trained.ctor as never;
const lm = PerformerLM.fromPerformerPytorch(weightsPath('lm_trained_small'), trainedConfig);
const prompt = Int32Array.from(trained.greedy_prompt!);

function expectError(fn: () => unknown, type: typeof TypeError | typeof RangeError | typeof Error, message: RegExp, code?: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(type);
  expect((caught as Error).message).toMatch(message);
  if (code !== undefined) expect((caught as { code?: string }).code).toBe(code);
}

const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('loading', () => {
  const tokens = { data: prompt, shape: [1, prompt.length] };
  const reference = lm.forwardSync(tokens).data;

  test('a path, its bytes, readSafetensors() and its tensors give the same model', () => {
    const bytes = fs.readFileSync(weightsPath('lm_trained_small'));
    const read = readSafetensors(bytes);
    for (const weights of [new Uint8Array(bytes), read, read.tensors]) {
      const other = PerformerLM.fromPerformerPytorch(weights, trainedConfig);
      expect(same(other.forwardSync(tokens).data, reference)).toBe(true);
    }
  });

  test('a state_dict saved with duplicates removed under proj_updater.instance. names loads too', () => {
    const { tensors } = readSafetensors(fs.readFileSync(weightsPath('lm_trained_small')));
    const moved: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(tensors)) {
      if (name.startsWith('performer.net.')) continue; // keep only the proj_updater copy
      moved[name] = t;
    }
    const other = PerformerLM.fromPerformerPytorch(moved, trainedConfig);
    expect(same(other.forwardSync(tokens).data, reference)).toBe(true);
  });

  test('parameters() gives the state_dict names without the duplicates, and reloads into the same model', () => {
    const params = lm.parameters();
    expect(Object.keys(params)).toContain('performer.net.layers.1.1.fn.fn.w2.weight');
    expect(Object.keys(params).some((n) => n.includes('proj_updater'))).toBe(false);
    const again = PerformerLM.fromPerformerPytorch(readSafetensors(writeSafetensors(params)), trainedConfig);
    expect(same(again.forwardSync(tokens).data, reference)).toBe(true);
  });

  test('config errors name the key', () => {
    const fn = (config: object) => () => PerformerLM.fromPerformerPytorch(weightsPath('lm_trained_small'), config as never);
    expectError(fn({ ...trained.ctor, dimHead: 32 }), TypeError, /unknown key 'dimHead'.*Python names/, 'ERR_INVALID_ARG_VALUE');
    expectError(fn({ ...trained.ctor, dim: null }), TypeError, /config\.dim: expected an integer, received null/);
    expectError(fn({ ...trained.ctor, local_attn_heads: ['1'] }), TypeError, /local_attn_heads: expected an integer or a list of integers/);
    expectError(fn({ ...trained.ctor, local_attn_heads: [] }), RangeError, /one entry per layer/);
    expectError(fn({ ...trained.ctor, dim: 63, heads: 1 }), RangeError, /config\.dim: rotary positions .* need an even dim, received 63/);
    expectError(fn({ ...trained.ctor, rotary_position_emb: false, axial_position_emb: true, axial_position_shape: [2 ** 20, 2 ** 20] }), RangeError, /axial_position_shape: .*at most 2\^30/);
    expectError(
      () => Performer.random({ dim: 14, depth: 1, heads: 2, dim_head: 7, local_attn_heads: 1 }),
      RangeError,
      /dim_head: local heads rotate pairs of features and need an even dim_head, received 7/,
    );
    expectError(
      fn({ ...trained.ctor, num_tokens: 2 ** 24, dim: 2 ** 16, heads: 1 }),
      RangeError,
      /over the limit .* reduce dim, depth, heads, dim_head, ff_mult, nb_features, num_tokens or max_seq_len/,
      'ERR_MEMORY_ALLOCATION_FAILED',
    );
    expectError(fn({ ...trained.ctor, num_tokens: undefined }), TypeError, /config\.num_tokens: required/);
    expectError(fn({ ...trained.ctor, heads: 3 }), RangeError, /heads: 3 does not divide dim 64/);
    expectError(fn({ ...trained.ctor, kernel_fn: 'GELU' }), RangeError, /kernel_fn: only ReLU/);
    expectError(fn({ ...trained.ctor, cross_attend: true }), RangeError, /cross_attend/);
    expectError(fn({ ...trained.ctor, local_attn_heads: [1, 1, 1] }), RangeError, /one entry per layer \(depth 2\)/);
    expectError(fn({ ...trained.ctor, depth: 1.5 }), RangeError, /config\.depth: expected an integer/);
    expectError(fn({ ...trained.ctor, causal: 'yes' }), TypeError, /config\.causal: expected a boolean/);
    expectError(() => PerformerLM.fromPerformerPytorch(weightsPath('lm_trained_small'), trainedConfig, { numerics: 'fast' as never }), RangeError, /numerics/);
  });

  test('weights that do not fit the config: every missing, unexpected and mis-shaped tensor named', () => {
    const fn = (config: object) => () => PerformerLM.fromPerformerPytorch(weightsPath('lm_trained_small'), config as never);
    // depth 3: the third layer's tensors are missing.
    expectError(fn({ ...trained.ctor, depth: 3 }), RangeError, /missing performer\.net\.layers\.2\.0\.norm\.weight \[64\].*performer\.net\.layers\.2\.1\.fn\.fn\.w2\.bias/);
    // nb_features 64: the projections have 110 rows.
    expectError(fn({ ...trained.ctor, nb_features: 64 }), RangeError, /projection_matrix: expected shape \[64, 32\], received \[110, 32\]/);
    // tie_embed: to_out is unexpected.
    expectError(fn({ ...trained.ctor, tie_embed: true }), RangeError, /unexpected to_out\.weight, to_out\.bias/);
    // qkv_bias: the biases are missing.
    expectError(fn({ ...trained.ctor, qkv_bias: true }), RangeError, /missing performer\.net\.layers\.0\.0\.fn\.to_q\.bias \[64\]/);
    // A Performer's names are not a PerformerLM's.
    expectError(() => Performer.fromPerformerPytorch(weightsPath('lm_trained_small'), { dim: 64, depth: 2, heads: 2, dim_head: 32 }), RangeError, /missing net\.layers\.0\.0\.norm\.weight/);
  });

  test("a wrapper's state_dict (AutoregressiveWrapper: every name under net.) loads without the prefix", () => {
    const { tensors } = readSafetensors(fs.readFileSync(weightsPath('lm_trained_small')));
    const wrapped = Object.fromEntries(Object.entries(tensors).map(([name, t]) => [`net.${name}`, t]));
    const other = PerformerLM.fromPerformerPytorch(wrapped, trainedConfig);
    expect(same(other.forwardSync(tokens).data, reference)).toBe(true);
    // Other prefixes that cannot be stripped whole are named in the error.
    const mixed = { ...wrapped, stray: tensors['norm.bias'] };
    expectError(() => PerformerLM.fromPerformerPytorch(mixed, trainedConfig), RangeError, /names carry a prefix 'net\.'/);
  });

  test('NaN or infinite weights are named', () => {
    const { tensors } = readSafetensors(fs.readFileSync(weightsPath('lm_trained_small')));
    const bad = Float32Array.from(tensors['performer.net.layers.0.1.fn.fn.w1.weight'].data);
    bad[5] = NaN;
    const broken = { ...tensors, 'performer.net.layers.0.1.fn.fn.w1.weight': { data: bad, shape: [256, 64] } };
    expectError(() => PerformerLM.fromPerformerPytorch(broken, trainedConfig), RangeError, /layers\.0\.1\.fn\.fn\.w1\.weight: values must be finite, received NaN at index 5/);
    expectError(() => PerformerLM.fromPerformerPytorch(42 as never, trainedConfig), TypeError, /weights: expected a safetensors path/);
    expectError(() => PerformerLM.fromPerformerPytorch({ a: { data: [1, 2], shape: [2] } } as never, trainedConfig), TypeError, /weights\['a'\]: expected a tensor/);
  });
});

describe('forward input errors', () => {
  test('tokens outside [0, num_tokens), non-integer tokens, bad shapes and masks', () => {
    const fn = (tokens: unknown, options?: object) => () => lm.forwardSync(tokens as never, options as never);
    expectError(fn({ data: Int32Array.of(1, 128), shape: [1, 2] }), RangeError, /token 128 at \[0, 1\] is outside \[0, 128\)/);
    expectError(fn({ data: Int32Array.of(-1), shape: [1, 1] }), RangeError, /token -1 at \[0, 0\]/);
    expectError(fn({ data: Float32Array.of(1.5), shape: [1, 1] }), TypeError, /expected \{ data: Int32Array/);
    expectError(fn({ data: Int32Array.of(1, 2, 3), shape: [1, 2] }), RangeError, /does not match shape \[1, 2\]/);
    expectError(fn({ data: Int32Array.of(1, 2), shape: [2] }), RangeError, /expected shape \[batch, length\]/);
    expectError(fn({ data: Int32Array.of(1, 2), shape: [1, 2] }, { mask: { data: Uint8Array.of(1), shape: [1, 1] } }), RangeError, /mask: expected shape \[1, 2\]/);
    expectError(fn({ data: Int32Array.of(1, 2), shape: [1, 2] }, { signal: new AbortController().signal }), TypeError, /unknown option 'signal'/);
    expectError(() => lm.stepSync([1.5] as never, lm.createStateSync()), TypeError, /tokens\[0\]: expected an integer token id, received the number 1\.5/);
  });

  test('learned positions end at max_seq_len (a RangeError that says so); rotary positions go on', () => {
    const c = cases.lm_variants.ctor as { max_seq_len: number };
    const abs = PerformerLM.fromPerformerPytorch(weightsPath('lm_variants'), cases.lm_variants.ctor as never);
    const long = new Int32Array(c.max_seq_len + 1);
    expectError(() => abs.forwardSync({ data: long, shape: [1, long.length] }), RangeError, /learned absolute position embeddings, which cover positions 0 to 159 \(max_seq_len 160/);
    const state = abs.createStateSync();
    abs.stepSync(new Int32Array(c.max_seq_len), state);
    expectError(() => abs.stepSync(Int32Array.of(1), state), RangeError, /positions 160 to 160 go past/);
    expectError(() => abs.generate(Int32Array.of(1, 2), { maxNewTokens: c.max_seq_len }), RangeError, /go past/);
    // Rotary: the trained model (max_seq_len 256) continues past 256 with finite logits.
    const s = lm.createStateSync();
    lm.stepSync(new Int32Array(250).fill(32), s);
    for (let i = 0; i < 12; i++) expect(lm.stepSync(Int32Array.of(101), s).every(Number.isFinite)).toBe(true);
    expect(s.position).toBe(262);
    const past = lm.forwardSync({ data: new Int32Array(300).fill(32), shape: [1, 300] });
    expect(past.data.every(Number.isFinite)).toBe(true);
  });
});

test('createState returns a Promise of a fresh state, createStateSync the state itself', async () => {
  const pending = lm.createState();
  expect(pending).toBeInstanceOf(Promise);
  const state = await pending;
  expect(state.position).toBe(0);
  const sync = lm.createStateSync();
  expect(Buffer.from(state.serialize()).equals(Buffer.from(sync.serialize()))).toBe(true);
  expect(same(lm.stepSync(Int32Array.from(prompt), state), lm.stepSync(Int32Array.from(prompt), sync))).toBe(true);
});

describe('inputs changed or aborted while a call runs', () => {
  test('token ids changed during an async forward or step: the call uses the ids it was given', async () => {
    const data = Int32Array.from(prompt);
    const want = lm.forwardSync({ data: Int32Array.from(prompt), shape: [1, prompt.length] });
    const running = lm.forward({ data, shape: [1, prompt.length] });
    data.fill(1 << 30);
    expect(same((await running).data, want.data)).toBe(true);
    const s = lm.createStateSync();
    const ids = Int32Array.from(prompt);
    const stepping = lm.step(ids, s);
    ids.fill(-5);
    expect(relativeError(await stepping, want.data.subarray((prompt.length - 1) * 128))).toBeLessThan(1e-5);
    // The history handed out is a copy.
    s.tokens!.fill(0);
    expect(s.tokens).toEqual(prompt);
  });

  test('an abort while a step runs: either it never started (AbortError) or it completes; the state stays consistent', async () => {
    for (const numerics of ['performer-pytorch', 'exact'] as const) {
      const model = PerformerLM.fromPerformerPytorch(weightsPath('lm_trained_small'), trainedConfig, { numerics });
      const s = model.createStateSync();
      const long = Int32Array.from({ length: 600 }, (_, i) => 32 + (i % 90));
      model.stepSync(long.subarray(0, 20), s);
      const controller = new AbortController();
      const running = model.step(long.subarray(20), s, { signal: controller.signal });
      setImmediate(() => controller.abort());
      await running.catch((error) => expect(error.name).toBe('AbortError'));
      expect([20, 600]).toContain(s.position);
      const held = long.subarray(0, s.position);
      const next = model.stepSync(Int32Array.of(65), s);
      const full = model.forwardSync({ data: Int32Array.from([...held, 65]), shape: [1, held.length + 1] });
      expect(relativeError(next, full.data.subarray(held.length * 128))).toBeLessThan(1e-5);
    }
  });

  test('a model that is not causal: an aborted step leaves history and position alone; every step counts a recompute', async () => {
    const c = cases.lm_reversible_axial;
    const model = PerformerLM.fromPerformerPytorch(weightsPath('lm_reversible_axial'), c.ctor as never);
    const s = model.createStateSync();
    model.stepSync([1, 2, 3], s);
    await expect(model.step([4], s, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    expect(s.position).toBe(3);
    expect(s.tokens).toEqual(Int32Array.of(1, 2, 3));
    expect(model.loadState(s.serialize()).position).toBe(3);
    model.stepSync([4], s);
    expect(s.recomputes).toBe(2);
  });

  test('a step that fails part way (float32 overflow) breaks the state: no more steps, serialize or clone', () => {
    // The final norm outputs ones; token 5's logit sums 64 times 3e38.
    const params = lm.parameters();
    params['norm.weight'].data.fill(0);
    params['norm.bias'].data.fill(1);
    params['to_out.weight'].data.fill(3e38, 5 * 64, 6 * 64);
    const bad = PerformerLM.fromPerformerPytorch(params, trainedConfig);
    const s = bad.createStateSync();
    const input = Int32Array.from({ length: 4 }, () => 5);
    let thrown: unknown;
    try {
      bad.stepSync(input, s);
    } catch (error) {
      thrown = error;
    }
    // The addon's errors come from the main realm: compare names, not classes.
    expect((thrown as Error).name).toBe('RangeError');
    expect((thrown as Error).message).toMatch(/overflowed float32/);
    expectError(() => bad.stepSync(Int32Array.of(1), s), Error, /PerformerLM\.stepSync state: a step failed part way/, 'ERR_INVALID_STATE');
    expectError(() => s.serialize(), Error, /PerformerLMState\.serialize: a step failed part way/, 'ERR_INVALID_STATE');
    expectError(() => s.clone(), Error, /PerformerLMState\.clone: a step failed part way/, 'ERR_INVALID_STATE');
  });
});

describe('decoding states', () => {
  test('serialize / loadState continues exactly; clone branches; position and size reported', () => {
    const a = lm.createStateSync();
    lm.stepSync(prompt, a);
    const bytes = a.serialize();
    const b = lm.loadState(bytes);
    const c = a.clone();
    expect(b.position).toBe(prompt.length);
    expect(b.recomputes).toBe(a.recomputes);
    expect(b.tokens).toEqual(prompt);
    for (const token of [101, 102, 32]) {
      const la = lm.stepSync(Int32Array.of(token), a);
      expect(same(lm.stepSync(Int32Array.of(token), b), la)).toBe(true);
      expect(same(lm.stepSync(Int32Array.of(token), c), la)).toBe(true);
    }
    expect(a.byteLength).toBeLessThan(200_000);
  });

  test('a prompt longer than one pass (4096 tokens) goes through in passes with the same logits', () => {
    const config = { num_tokens: 50, max_seq_len: 64, dim: 32, depth: 2, heads: 2, dim_head: 16, causal: true, local_attn_heads: 1, local_window_size: 64, shift_tokens: true };
    const model = PerformerLM.random(config, { seed: 4, numerics: 'exact' });
    const long = Int32Array.from({ length: 5000 }, (_, i) => (i * 7919) % 50);
    const s = model.createStateSync();
    const logits = model.stepSync(long, s);
    const full = model.forwardSync({ data: long, shape: [1, long.length] });
    expect(relativeError(logits, full.data.subarray(4999 * 50))).toBeLessThan(1e-5);
    expect(s.position).toBe(5000);
    const next = model.stepSync(Int32Array.of(3), s);
    const fuller = model.forwardSync({ data: Int32Array.from([...long, 3]), shape: [1, 5001] });
    expect(relativeError(next, fuller.data.subarray(5000 * 50))).toBeLessThan(1e-5);
  });

  test("a state's arrays do not grow with the context (exact numerics keep no token history)", () => {
    const exact = PerformerLM.fromPerformerPytorch(weightsPath('lm_trained_small'), trainedConfig, { numerics: 'exact' });
    const s = exact.createStateSync();
    exact.stepSync(Int32Array.of(1, 2, 3), s);
    const before = s.byteLength;
    exact.stepSync(new Int32Array(200).fill(7), s);
    expect(s.byteLength).toBe(before);
    expect(s.tokens).toBeNull();
  });

  test('foreign, corrupt and truncated states are rejected with RangeErrors that say why', () => {
    const s = lm.createStateSync();
    lm.stepSync(Int32Array.of(1, 2, 3), s);
    const bytes = Buffer.from(s.serialize());
    const exact = PerformerLM.fromPerformerPytorch(weightsPath('lm_trained_small'), trainedConfig, { numerics: 'exact' });
    expectError(() => exact.loadState(bytes), RangeError, /different model/, 'ERR_INVALID_ARG_VALUE');
    expectError(() => exact.stepSync(Int32Array.of(1), s), RangeError, /different model/);
    const flipped = Buffer.from(bytes);
    flipped[bytes.length - 40] ^= 1;
    expectError(() => lm.loadState(flipped), RangeError, /checksum/);
    expectError(() => lm.loadState(bytes.subarray(0, 100)), RangeError, /checksum|past the end/);
    expectError(() => lm.loadState(Buffer.from('nope')), RangeError, /not a serialized decoding state/);
    expectError(() => lm.loadState('x' as never), TypeError, /expected a Buffer or Uint8Array/);
    expectError(() => lm.stepSync(Int32Array.of(1), {} as never), TypeError, /expected a PerformerLMState/);
    expectError(() => lm.stepSync(new Int32Array(0), s), RangeError, /at least one token/);
  });

  test('one step at a time per state; an aborted step leaves the state usable', async () => {
    const s = lm.createStateSync();
    lm.stepSync(prompt, s);
    const running = lm.step(Int32Array.of(5), s);
    expectError(() => lm.stepSync(Int32Array.of(6), s), Error, /another step is using this state/, 'ERR_INVALID_STATE');
    await running;
    const controller = new AbortController();
    controller.abort();
    await expect(lm.step(Int32Array.of(7), s, { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(s.position).toBe(prompt.length + 1);
    // The state continues as if the aborted step never happened.
    const fresh = lm.createStateSync();
    lm.stepSync(Int32Array.from([...prompt, 5]), fresh);
    expect(relativeError(lm.stepSync(Int32Array.of(9), s), lm.stepSync(Int32Array.of(9), fresh))).toBeLessThan(1e-6);
  });
});

describe('generate', () => {
  test('invalid options are errors at the call', () => {
    const gen = (options: unknown, p: unknown = [1, 2]) => () => lm.generate(p as never, options as never);
    expectError(gen(undefined), TypeError, /options: required/);
    expectError(gen({}), TypeError, /maxNewTokens: required/);
    expectError(gen({ maxNewTokens: 0 }), RangeError, /maxNewTokens: expected an integer >= 1/);
    expectError(gen({ maxNewTokens: 2, temperature: -1 }), RangeError, /temperature/);
    expectError(gen({ maxNewTokens: 2, temperature: 1, topP: 0 }), RangeError, /topP/);
    expectError(gen({ maxNewTokens: 2, temperature: 1, topK: 0 }), RangeError, /topK/);
    expectError(gen({ maxNewTokens: 2, topK: 5 }), RangeError, /temperature 0 \(greedy\)/);
    expectError(gen({ maxNewTokens: 2, stopTokens: [999] }), RangeError, /stopTokens\[0\]: token 999/);
    expectError(gen({ maxNewTokens: 2, seed: -1, temperature: 1 }), RangeError, /seed/);
    expectError(gen({ maxNewTokens: 2, top_k: 5 }), TypeError, /unknown option 'top_k'/);
    expectError(gen({ maxNewTokens: 2 }, []), RangeError, /at least one token/);
    expectError(gen({ maxNewTokens: 2 }, [1, 300]), RangeError, /prompt\[1\]: token 300/);
    expectError(gen({ maxNewTokens: 2, state: {} }), TypeError, /expected a PerformerLMState/);
    const exact = PerformerLM.fromPerformerPytorch(weightsPath('lm_trained_small'), trainedConfig, { numerics: 'exact' });
    const held = exact.createStateSync();
    exact.stepSync(Int32Array.of(1, 2), held);
    expectError(() => exact.generate([], { maxNewTokens: 2, state: held }), RangeError, /keeps no token history/);
  });

  test('seeded sampling repeats; stop tokens end the stream; topK 1 is greedy', async () => {
    const collect = async (options: object) => {
      const out: number[] = [];
      for await (const t of lm.generate(prompt, { maxNewTokens: 20, ...options })) out.push(t);
      return out;
    };
    const a = await collect({ temperature: 0.9, topP: 0.95, seed: 7 });
    expect(await collect({ temperature: 0.9, topP: 0.95, seed: 7 })).toEqual(a);
    expect(await collect({ temperature: 1, topK: 1, seed: 3 })).toEqual(trained.greedy_continuation!.slice(0, 20));
    const stop = trained.greedy_continuation![4];
    const stopped = await collect({ stopTokens: [stop] });
    expect(stopped).toEqual(trained.greedy_continuation!.slice(0, trained.greedy_continuation!.indexOf(stop) + 1));
  });

  test('a state passed in absorbs the prompt and every token yielded; generation continues from it', async () => {
    const state = lm.createStateSync();
    const first: number[] = [];
    for await (const t of lm.generate(prompt.subarray(0, 40), { maxNewTokens: 5, state })) first.push(t);
    expect(state.position).toBe(45);
    const more: number[] = [];
    for await (const t of lm.generate([], { maxNewTokens: 3, state })) more.push(t);
    const whole: number[] = [];
    for await (const t of lm.generate(prompt.subarray(0, 40), { maxNewTokens: 8 })) whole.push(t);
    expect([...first, ...more]).toEqual(whole);
  });

  test('an aborted generation rejects with AbortError and leaves a usable state', async () => {
    const controller = new AbortController();
    const state = lm.createStateSync();
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const t of lm.generate(prompt, { maxNewTokens: 50, state, signal: controller.signal })) {
          seen.push(t);
          if (seen.length === 3) controller.abort();
        }
      })(),
    ).rejects.toMatchObject({ name: 'AbortError' });
    expect(seen).toEqual(trained.greedy_continuation!.slice(0, 3));
    // The state holds the prompt and the tokens absorbed before the abort took effect: position says how many.
    expect([prompt.length + 2, prompt.length + 3]).toContain(state.position);
    const next = lm.stepSync(Int32Array.of(trained.greedy_continuation![state.position - prompt.length]), state);
    expect(next.every(Number.isFinite)).toBe(true);
  });
});

describe('sampling', () => {
  test('the seeded generator is uniform and reproducible', () => {
    const r = seededRandom(12345);
    const values = Array.from({ length: 20000 }, r);
    expect(values.every((v) => v >= 0 && v < 1)).toBe(true);
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    expect(Array.from({ length: 5 }, seededRandom(12345))).toEqual(values.slice(0, 5));
    expect(Array.from({ length: 5 }, seededRandom(12346))).not.toEqual(values.slice(0, 5));
  });

  test('frequencies follow softmax(logits / T); topK and topP cut the tail', () => {
    const logits = Float32Array.of(2, 1, 0, -1, 0.5);
    const draws = 40000;
    const counts = (options: object) => {
      const s = readSampler({ seed: 1, ...options }, 'test', logits.length);
      const c = new Array(logits.length).fill(0);
      for (let i = 0; i < draws; i++) c[sample(logits, s)]++;
      return c.map((n) => n / draws);
    };
    const T = 0.8;
    const w = [...logits].map((l) => Math.exp(l / T));
    const z = w.reduce((a, b) => a + b, 0);
    counts({ temperature: T }).forEach((f, i) => expect(Math.abs(f - w[i] / z)).toBeLessThan(0.01));
    const top2 = counts({ temperature: T, topK: 2 });
    expect(top2[2] + top2[3] + top2[4]).toBe(0);
    expect(Math.abs(top2[0] - w[0] / (w[0] + w[1]))).toBeLessThan(0.01);
    // topP 0.5 keeps token 0 only (its probability is above 0.5).
    expect(w[0] / z).toBeGreaterThan(0.5);
    expect(counts({ temperature: T, topP: 0.5 })[0]).toBe(1);
  });
});
