// Models trained with performer-pytorch run here with the outputs and generations the
// Python package gives (fixtures made by the real package: test/fixtures/performer-pytorch).
import { backendInfo, Performer, PerformerLM, setBackend, type Tensor } from '../lib';
import { fixtureCases, heldOutBitsPerByte, readRaw, relativeError, weightsPath, type FixtureCase } from './helpers/performer-fixtures';

const cases = fixtureCases();
const names = Object.keys(cases);

function inputs(name: string) {
  const io = readRaw(`${name}.io.safetensors`);
  const mask = io['inputs/mask'] ? { data: io['inputs/mask'].data as Uint8Array, shape: io['inputs/mask'].shape } : undefined;
  return { io, mask };
}

function run(name: string, c: FixtureCase, numerics: 'performer-pytorch' | 'exact'): Tensor {
  const { io, mask } = inputs(name);
  if (c.cls === 'PerformerLM') {
    const lm = PerformerLM.fromPerformerPytorch(weightsPath(name), c.ctor as never, { numerics });
    const t = io['inputs/tokens'];
    return lm.forwardSync({ data: t.data as Int32Array, shape: t.shape }, mask ? { mask } : undefined);
  }
  const p = Performer.fromPerformerPytorch(weightsPath(name), c.ctor as never, { numerics });
  const x = io['inputs/x'];
  return p.forwardSync({ data: x.data as Float32Array, shape: x.shape }, mask ? { mask } : undefined);
}

// The bound: 10x torch's own float32 error against float64, and at most 1e-5.
function limitOf(name: string): number {
  const { io } = inputs(name);
  const torch = relativeError(io['outputs/out'].data, io['outputs64/out'].data);
  return Math.min(10 * torch, 1e-5);
}

describe('every fixture, performer-pytorch numerics', () => {
  const isas = backendInfo().available;
  afterAll(() => setBackend({ isa: isas[isas.length - 1] as never }));
  for (const isa of isas) {
    test.each(names)(`%s on ${isa}: within 10x torch's float32 error of the float64 outputs`, (name) => {
      setBackend({ isa: isa as never });
      const out = run(name, cases[name], 'performer-pytorch');
      const { io } = inputs(name);
      expect(out.shape).toEqual(io['outputs64/out'].shape);
      const err = relativeError(out.data, io['outputs64/out'].data);
      expect(err).toBeLessThanOrEqual(limitOf(name));
    });
  }

  test('forward (async) equals forwardSync bit for bit', async () => {
    const c = cases.lm_variants;
    const lm = PerformerLM.fromPerformerPytorch(weightsPath('lm_variants'), c.ctor as never);
    const t = inputs('lm_variants').io['inputs/tokens'];
    const tokens = { data: t.data as Int32Array, shape: t.shape };
    const [a, b] = [await lm.forward(tokens), lm.forwardSync(tokens)];
    expect(Buffer.from(a.data.buffer).equals(Buffer.from(b.data.buffer))).toBe(true);
    const enc = Performer.fromPerformerPytorch(weightsPath('enc_variants'), cases.enc_variants.ctor as never);
    const { io, mask } = inputs('enc_variants');
    const x = { data: io['inputs/x'].data as Float32Array, shape: io['inputs/x'].shape };
    const [c1, c2] = [await enc.forward(x, { mask }), enc.forwardSync(x, { mask })];
    expect(Buffer.from(c1.data.buffer).equals(Buffer.from(c2.data.buffer))).toBe(true);
  });
});

describe("numerics 'exact' (the library's FAVOR+)", () => {
  test.each(names)('%s: finite outputs of the fixture inputs', (name) => {
    const out = run(name, cases[name], 'exact');
    expect(out.data.every(Number.isFinite)).toBe(true);
  });

  test('the trained model leans on the epsilons: exact numerics move its logits by a lot', () => {
    const exact = run('lm_trained_small', cases.lm_trained_small, 'exact');
    const { io } = inputs('lm_trained_small');
    expect(relativeError(exact.data, io['outputs64/out'].data)).toBeGreaterThan(0.1);
  });

  test('causal rows never depend on later tokens (performer-pytorch numerics do, through the key maximum)', () => {
    const c = cases.lm_softmax_deep_causal;
    const t = inputs('lm_softmax_deep_causal').io['inputs/tokens'];
    const L = t.shape[1];
    const V = c.ctor.num_tokens as number;
    const prefix = 60;
    for (const numerics of ['exact', 'performer-pytorch'] as const) {
      const lm = PerformerLM.fromPerformerPytorch(weightsPath('lm_softmax_deep_causal'), c.ctor as never, { numerics });
      const whole = lm.forwardSync({ data: t.data as Int32Array, shape: [1, L] });
      const part = lm.forwardSync({ data: (t.data as Int32Array).slice(0, prefix), shape: [1, prefix] });
      const err = relativeError(whole.data.subarray(0, prefix * V), part.data);
      if (numerics === 'exact') expect(err).toBeLessThan(1e-5);
      else expect(err).toBeGreaterThan(1e-5);
    }
  });

  test('a masked key is removed: the kept rows equal the sequence without it (encoder, global heads)', () => {
    const config = { dim: 32, depth: 2, heads: 4, dim_head: 8, nb_features: 16 };
    const enc = Performer.random(config, { seed: 3, numerics: 'exact' });
    const L = 20;
    const x = Float32Array.from({ length: L * 32 }, (_, i) => Math.sin(i * 0.37));
    const keep = Uint8Array.from({ length: L }, (_, i) => (i % 4 === 1 ? 0 : 1));
    const masked = enc.forwardSync({ data: x, shape: [1, L, 32] }, { mask: { data: keep, shape: [1, L] } });
    const keptRows = [...keep.keys()].filter((i) => keep[i] === 1);
    const dropped = Float32Array.from(keptRows.flatMap((i) => [...x.subarray(i * 32, (i + 1) * 32)]));
    const short = enc.forwardSync({ data: dropped, shape: [1, keptRows.length, 32] });
    const mine = Float32Array.from(keptRows.flatMap((i) => [...masked.data.subarray(i * 32, (i + 1) * 32)]));
    expect(relativeError(mine, short.data)).toBeLessThan(1e-5);
  });
});

describe('generation from a decoding state', () => {
  const greedy = names.filter((n) => cases[n].greedy_continuation !== undefined);

  test.each(greedy)('%s: greedy generation equals performer-pytorch\'s, token for token', async (name) => {
    const c = cases[name];
    const lm = PerformerLM.fromPerformerPytorch(weightsPath(name), c.ctor as never);
    const state = lm.createStateSync();
    const out: number[] = [];
    for await (const token of lm.generate(c.greedy_prompt!, { maxNewTokens: c.greedy_continuation!.length, state })) out.push(token);
    expect(out).toEqual(c.greedy_continuation);
    expect(state.position).toBe(c.greedy_prompt!.length + out.length);
  });

  test.each(greedy)('%s: step-by-step logits equal forward over the prefix to 1e-5, both numerics', (name) => {
    const c = cases[name];
    const V = c.ctor.num_tokens as number;
    const seq = [...c.greedy_prompt!, ...c.greedy_continuation!];
    for (const numerics of ['performer-pytorch', 'exact'] as const) {
      const lm = PerformerLM.fromPerformerPytorch(weightsPath(name), c.ctor as never, { numerics });
      const state = lm.createStateSync();
      let logits = lm.stepSync(Int32Array.from(c.greedy_prompt!), state);
      for (let i = 0; i <= c.greedy_continuation!.length; i++) {
        const L = c.greedy_prompt!.length + i;
        const full = lm.forwardSync({ data: Int32Array.from(seq.slice(0, L)), shape: [1, L] });
        expect(relativeError(logits, full.data.subarray((L - 1) * V, L * V))).toBeLessThan(1e-5);
        if (i < c.greedy_continuation!.length) logits = lm.stepSync(Int32Array.of(c.greedy_continuation![i]), state);
      }
      if (numerics === 'exact') expect(state.recomputes).toBe(0);
    }
  });

  test("the deep causal fixture: the key maximum rises in lower layers, the state recomputes its prefix and keeps performer-pytorch's logits", () => {
    const name = 'lm_softmax_deep_causal';
    const c = cases[name];
    const want = readRaw(`${name}.io.safetensors`)['outputs/greedy_logits'].data as Float32Array;
    const V = c.ctor.num_tokens as number;
    const lm = PerformerLM.fromPerformerPytorch(weightsPath(name), c.ctor as never);
    const state = lm.createStateSync();
    let logits = lm.stepSync(Int32Array.from(c.greedy_prompt!), state);
    c.greedy_continuation!.forEach((token, i) => {
      expect(relativeError(logits, want.subarray(i * V, (i + 1) * V))).toBeLessThan(1e-5);
      logits = lm.stepSync(Int32Array.of(token), state);
    });
    expect(state.recomputes).toBeGreaterThan(0);
    expect(state.tokens).toEqual(Int32Array.from([...c.greedy_prompt!, ...c.greedy_continuation!]));
  });

  test('held-out bits per byte of the trained model: performer-pytorch numerics reproduce 2.965, exact numerics lose much', () => {
    const c = cases.lm_trained_small;
    const bits = (numerics: 'performer-pytorch' | 'exact') => heldOutBitsPerByte(PerformerLM.fromPerformerPytorch(weightsPath('lm_trained_small'), c.ctor as never, { numerics }));
    expect(Math.abs(bits('performer-pytorch') - c.heldout_bits_per_byte!)).toBeLessThan(1e-4);
    expect(bits('exact')).toBeGreaterThan(c.heldout_bits_per_byte! + 0.5);
  });

  test('a model that is not causal generates by recomputing every step, like performer-pytorch', async () => {
    const c = cases.lm_reversible_axial;
    const lm = PerformerLM.fromPerformerPytorch(weightsPath('lm_reversible_axial'), c.ctor as never);
    const prompt = [3, 14, 15, 9, 26];
    const state = lm.createStateSync();
    const out: number[] = [];
    for await (const token of lm.generate(prompt, { maxNewTokens: 6, state })) out.push(token);
    // Each token is the argmax of the last row of a forward over everything before it.
    const seq = [...prompt];
    for (const token of out) {
      const full = lm.forwardSync({ data: Int32Array.from(seq), shape: [1, seq.length] });
      const last = full.data.subarray((seq.length - 1) * 50, seq.length * 50);
      expect(token).toBe(last.indexOf(Math.max(...last)));
      seq.push(token);
    }
    expect(state.tokens).toEqual(Int32Array.from(seq));
  });
});
