// Training a PerformerLM: loss and gradients against PyTorch autograd in float64
// (test/fixtures/training, scripts/fixtures/make_training_fixtures.py), on every kernel
// set; gradient accumulation, AdamW (steps, schedule, clipping, state), errors.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { AdamW, backendInfo, PerformerLM, readSafetensors, setBackend, writeSafetensors, type TokenTensor } from '../lib';
import { relFrobenius } from './helpers/reference';

const DIR = path.join(__dirname, 'fixtures', 'training');
// dropoutSeed: the case drops out with the library's masks of this seed (the config's rates).
const cases = JSON.parse(fs.readFileSync(path.join(DIR, 'cases.json'), 'utf8')) as Record<string, { ctor: Record<string, unknown>; package?: boolean; dropoutSeed?: number }>;
// Models written in plain torch (FAVOR+ in the library's exact numerics, and exact attention)
// and models of the real performer-pytorch package (its own numerics).
const plainCases = Object.keys(cases).filter((n) => !cases[n].package);
const packageCases = Object.keys(cases).filter((n) => cases[n].package);
const ORIGINAL = backendInfo();
afterAll(() => setBackend({ isa: ORIGINAL.isa, threads: ORIGINAL.threads }));

interface Io {
  tokens: TokenTensor;
  targets: TokenTensor;
  expected: Record<string, { loss: number; grads: Map<string, Float64Array> }>;
}

// The io file holds I64 and F64 tensors, which the library's reader does not convert.
function readIo(name: string): Io {
  const bytes = fs.readFileSync(path.join(DIR, `${name}.io.safetensors`));
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.toString('utf8', 8, 8 + n)) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const read = (key: string): { data: number[]; shape: number[] } => {
    const h = header[key];
    const chunk = bytes.subarray(8 + n + h.data_offsets[0], 8 + n + h.data_offsets[1]);
    const count = h.shape.reduce((a, b) => a * b, 1);
    const data = Array.from({ length: count }, (_, i) => (h.dtype === 'I64' ? Number(chunk.readBigInt64LE(8 * i)) : chunk.readDoubleLE(8 * i)));
    return { data, shape: h.shape };
  };
  const ints = (key: string) => {
    const t = read(key);
    return { data: Int32Array.from(t.data), shape: t.shape };
  };
  const expected = {} as Io['expected'];
  for (const kind of ['favor', 'softmax', 'pytorch'].filter((k) => `${k}/loss` in header)) {
    const grads = new Map<string, Float64Array>();
    for (const key of Object.keys(header)) {
      if (key.startsWith(`${kind}/grad/`)) grads.set(key.slice(`${kind}/grad/`.length), Float64Array.from(read(key).data));
    }
    expected[kind] = { loss: read(`${kind}/loss`).data[0], grads };
  }
  return { tokens: ints('inputs/tokens'), targets: ints('inputs/targets'), expected };
}

const load = (name: string) => PerformerLM.fromPerformerPytorch(path.join(DIR, `${name}.state_dict.safetensors`), cases[name].ctor as never, { numerics: 'exact' });

// Loss within 1e-5 and every gradient within 1e-4 of autograd's (relative Frobenius).
function expectGradients(lm: PerformerLM, io: Io, kind: string, loss: number, label: string): void {
          const want = io.expected[kind];
          expect(Math.abs(loss - want.loss) / want.loss).toBeLessThan(1e-5);
          const grads = lm.gradients();
          expect(Object.keys(grads).sort()).toEqual([...want.grads.keys()].sort());
          // A gradient that is zero in exact arithmetic (the key bias under softmax attention:
          // a constant added to every score of a row changes nothing) is measured against the
          // size of all the gradients instead of its own.
          let all = 0;
          for (const g of want.grads.values()) for (const x of g) all += x * x;
          const floor = 1e-4 * Math.sqrt(all);
          for (const [param, g] of want.grads) {
            let num = 0;
            let den = 0;
            grads[param].data.forEach((x, i) => {
              num += (x - g[i]) ** 2;
              den += g[i] ** 2;
            });
            const err = Math.sqrt(num) / Math.max(Math.sqrt(den), floor);
            if (!(err <= 1e-4)) throw new Error(`${label}: gradient of ${param} off by ${err}`);
          }
}

describe('loss and gradients against PyTorch autograd (float64)', () => {
  for (const isa of backendInfo().available) {
    for (const name of plainCases) {
      test(`${name} on ${isa}: FAVOR+ (exact numerics) and exact softmax attention`, () => {
        setBackend({ isa: isa as never });
        const io = readIo(name);
        const lm = load(name);
        for (const attention of ['favor', 'softmax'] as const) {
          lm.zeroGrad();
          const seed = cases[name].dropoutSeed;
          const loss = lm.lossAndGradSync(io.tokens, io.targets, seed !== undefined ? { attention, seed } : { attention });
          expectGradients(lm, io, attention, loss, `${name} ${attention} ${isa}`);
        }
      });
    }
    for (const name of packageCases) {
      test(`${name} on ${isa}: performer-pytorch's own model and numerics`, () => {
        setBackend({ isa: isa as never });
        const io = readIo(name);
        const lm = PerformerLM.fromPerformerPytorch(path.join(DIR, `${name}.state_dict.safetensors`), cases[name].ctor as never);
        const loss = lm.lossAndGradSync(io.tokens, io.targets);
        expectGradients(lm, io, 'pytorch', loss, `${name} ${isa}`);
      });
    }
  }
});

describe('accumulation, sync and async, errors', () => {
  const name = 'rotary_gelu_softmax_features';
  const io = readIo(name);

  test('gradients accumulate over calls; the async pass equals the sync one; zeroGrad clears', async () => {
    const lm = load(name);
    lm.lossAndGradSync(io.tokens, io.targets);
    const once = lm.gradients();
    await lm.lossAndGrad(io.tokens, io.targets);
    const twice = lm.gradients();
    for (const [param, t] of Object.entries(once)) {
      expect(relFrobenius(twice[param].data, t.data.map((x) => 2 * x))).toBeLessThan(1e-6);
    }
    lm.zeroGrad();
    expect(Object.values(lm.gradients()).every((t) => t.data.every((x) => x === 0))).toBe(true);
  });

  test('an aborted pass leaves the accumulated gradients as they were', async () => {
    const lm = load(name);
    lm.lossAndGradSync(io.tokens, io.targets);
    const before = lm.gradients();
    await expect(lm.lossAndGrad(io.tokens, io.targets, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    const after = lm.gradients();
    for (const [param, t] of Object.entries(before)) expect(after[param].data).toEqual(t.data);
  });

  test('bad targets and untrainable configurations are clear errors', () => {
    const lm = load(name);
    const [B, L] = io.tokens.shape;
    expect(() => lm.lossAndGradSync(io.tokens, { data: new Int32Array(B * L).fill(23), shape: [B, L] })).toThrow(/target 23 at \[0, 0\] is outside \[0, 23\)/);
    expect(() => lm.lossAndGradSync(io.tokens, { data: new Int32Array(B * L).fill(-1), shape: [B, L] })).toThrow(/every target is negative/);
    expect(() => lm.lossAndGradSync(io.tokens, { data: new Int32Array(B * L), shape: [L, B] })).toThrow(/expected shape \[2, 11\]/);
    expect(() => lm.lossAndGradSync(io.tokens, io.targets, { attention: 'linear' as never })).toThrow(/attention: expected one of/);
    const pytorchNumerics = PerformerLM.fromPerformerPytorch(path.join(DIR, `${name}.state_dict.safetensors`), cases[name].ctor as never);
    expect(pytorchNumerics.lossAndGradSync(io.tokens, io.targets, { attention: 'softmax' })).toBeCloseTo(io.expected.softmax.loss, 5);
    const noProjection = PerformerLM.random({ num_tokens: 5, max_seq_len: 8, dim: 8, depth: 1, heads: 2, dim_head: 4, causal: true, no_projection: true });
    const few = { data: new Int32Array(4), shape: [1, 4] };
    expect(() => noProjection.lossAndGradSync(few, few)).toThrow(/does not cover no_projection yet/);
    // Its exact softmax attention has gradients.
    expect(Number.isFinite(noProjection.lossAndGradSync(few, few, { attention: 'softmax' }))).toBe(true);
  });
});

describe('dropout', () => {
  const name = 'rotary_gelu_dropout';
  const io = readIo(name);
  const bits = (lm: PerformerLM) => Object.values(lm.gradients()).map((t) => Buffer.from(t.data.buffer).toString('hex'));

  test('the config rates drop in training only; the default seed counts passes, so a run repeats', () => {
    const a = load(name);
    expect(a.dropout).toEqual({ emb: 0.1, attn: 0.2, ff: 0.3 });
    const first = a.lossAndGradSync(io.tokens, io.targets); // seed 0
    const second = a.lossAndGradSync(io.tokens, io.targets); // seed 1: other masks
    expect(second).not.toBe(first);
    const b = load(name);
    expect(b.lossAndGradSync(io.tokens, io.targets, { seed: 0 })).toBe(first);
    const c = load(name);
    c.lossAndGradSync(io.tokens, io.targets);
    expect(bits(c)).toEqual(bits(b));
    // Forward passes never drop: two of them agree bit for bit.
    const y1 = a.forwardSync(io.tokens).data;
    expect(Buffer.from(a.forwardSync(io.tokens).data.buffer).equals(Buffer.from(y1.buffer))).toBe(true);
  });

  test('dropout: false, zero rates and per-call rates', () => {
    const lm = load(name);
    const off = lm.lossAndGradSync(io.tokens, io.targets, { dropout: false, seed: 5 });
    const zero = lm.lossAndGradSync(io.tokens, io.targets, { dropout: { emb: 0, attn: 0, ff: 0 }, seed: 6 });
    expect(zero).toBe(off);
    const plain = PerformerLM.fromPerformerPytorch(path.join(DIR, `${name}.state_dict.safetensors`), { ...cases[name].ctor, emb_dropout: 0, attn_dropout: 0, ff_dropout: 0 } as never, { numerics: 'exact' });
    expect(plain.lossAndGradSync(io.tokens, io.targets, { seed: 5 })).toBe(off);
    // Only the feed-forward drops: another loss than all three, the same for the same seed.
    const ff = lm.lossAndGradSync(io.tokens, io.targets, { dropout: { emb: 0, attn: 0 }, seed: 9 });
    expect(ff).not.toBe(lm.lossAndGradSync(io.tokens, io.targets, { seed: 9 }));
    expect(lm.lossAndGradSync(io.tokens, io.targets, { dropout: { emb: 0, attn: 0, ff: 0.3 }, seed: 9 })).toBe(ff);
    // Rate 1 drops everything: only the feed-forward output biases reach the final norm, so
    // no gradient reaches the embeddings, the attention or the first feed-forward linears.
    lm.zeroGrad();
    expect(Number.isFinite(lm.lossAndGradSync(io.tokens, io.targets, { dropout: { emb: 1, attn: 1, ff: 1 }, seed: 2 }))).toBe(true);
    const g = lm.gradients();
    for (const param of ['token_emb.weight', 'performer.net.layers.0.0.fn.to_q.weight', 'performer.net.layers.1.1.fn.fn.w1.weight']) {
      expect(g[param].data.every((x) => x === 0)).toBe(true);
    }
    expect(g['to_out.weight'].data.some((x) => x !== 0)).toBe(true);
  });

  test('bad rates and seeds are RangeErrors naming the option', () => {
    const lm = load(name);
    expect(() => lm.lossAndGradSync(io.tokens, io.targets, { dropout: { ff: 1.5 } })).toThrow(/options.dropout.ff/);
    expect(() => lm.lossAndGradSync(io.tokens, io.targets, { dropout: { emb: -0.1 } })).toThrow(/options.dropout.emb/);
    expect(() => lm.lossAndGradSync(io.tokens, io.targets, { dropout: { embedding: 0.1 } as never })).toThrow(/unknown option 'embedding'/);
    expect(() => lm.lossAndGradSync(io.tokens, io.targets, { seed: -1 })).toThrow(/options.seed/);
    expect(() => lm.lossAndGradSync(io.tokens, io.targets, { seed: 0.5 })).toThrow(/options.seed/);
    expect(() => PerformerLM.random({ ...cases[name].ctor, ff_dropout: 2 } as never)).toThrow(/ff_dropout: expected a probability/);
  });
});

describe('AdamW', () => {
  const name = 'rotary_gelu_softmax_features';
  const io = readIo(name);

  test('one step matches a float64 AdamW on the same gradients; decoupled decay; the loss falls', () => {
    const lm = load(name);
    const before = lm.parameters();
    const loss0 = lm.lossAndGradSync(io.tokens, io.targets);
    const grads = lm.gradients();
    const opt = new AdamW(lm, { lr: 1e-2, weightDecay: 0.1 });
    const report = opt.step();
    expect(report.step).toBe(1);
    expect(report.lr).toBe(1e-2);
    const after = lm.parameters();
    for (const [param, g] of Object.entries(grads)) {
      // Step 1: m^ = g, v^ = g^2, so p' = p (1 - lr wd) - lr g / (|g| + eps).
      const want = before[param].data.map((p, i) => p * (1 - 1e-3) - (1e-2 * g.data[i]) / (Math.abs(g.data[i]) + 1e-8));
      expect(relFrobenius(after[param].data, want)).toBeLessThan(1e-6);
    }
    // Buffers do not move; gradients were cleared.
    expect(after['performer.net.layers.0.0.fn.fast_attention.projection_matrix'].data).toEqual(before['performer.net.layers.0.0.fn.fast_attention.projection_matrix'].data);
    expect(Object.values(lm.gradients()).every((t) => t.data.every((x) => x === 0))).toBe(true);
    for (let i = 0; i < 20; i++) {
      lm.lossAndGradSync(io.tokens, io.targets);
      opt.step();
    }
    expect(lm.lossAndGradSync(io.tokens, io.targets)).toBeLessThan(loss0 * 0.7);
  });

  test('warm-up and decay schedules, clipping, state save / load gives the same next step', () => {
    const lm = load(name);
    const schedule = new AdamW(lm, { lr: 1, warmupSteps: 4, decay: 'cosine', totalSteps: 12, minLr: 0.1 });
    expect([1, 2, 4, 8, 12, 20].map((s) => schedule.learningRate(s))).toEqual([0.25, 0.5, 1, 0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * 0.5)), 0.1, 0.1]);
    expect(new AdamW(lm, { lr: 1, decay: 'linear', totalSteps: 10 }).learningRate(5)).toBeCloseTo(0.5, 12);
    const a = load(name);
    const optA = new AdamW(a, { lr: 1e-2, maxGradNorm: 0.5 });
    a.lossAndGradSync(io.tokens, io.targets);
    const r = optA.step();
    expect(r.gradNorm).toBeGreaterThan(0.5); // clipped to 0.5
    // b takes a's weights and optimizer state, then both take the same step.
    const weights = readSafetensors(writeSafetensors(a.parameters())).tensors;
    const bb = PerformerLM.fromPerformerPytorch(weights, cases[name].ctor as never, { numerics: 'exact' });
    const optB = new AdamW(bb, { lr: 1e-2, maxGradNorm: 0.5 });
    optB.loadState(readSafetensors(writeSafetensors(optA.state())).tensors);
    expect(optB.stepCount).toBe(1);
    a.lossAndGradSync(io.tokens, io.targets);
    bb.lossAndGradSync(io.tokens, io.targets);
    optA.step();
    optB.step();
    const pa = a.parameters();
    const pb = bb.parameters();
    for (const param of Object.keys(pa)) expect(pb[param].data).toEqual(pa[param].data);
  });

  test('featureRedraw: new features every N steps, from the seed; off by default', () => {
    const lm = load(name);
    const key = 'performer.net.layers.0.0.fn.fast_attention.projection_matrix';
    const first = lm.parameters()[key].data;
    const opt = new AdamW(lm, { lr: 1e-3, featureRedraw: { every: 2, seed: 5 } });
    lm.lossAndGradSync(io.tokens, io.targets);
    opt.step();
    expect(lm.parameters()[key].data).toEqual(first);
    lm.lossAndGradSync(io.tokens, io.targets);
    opt.step();
    const redrawn = lm.parameters()[key].data;
    expect(redrawn).not.toEqual(first);
    const other = load(name);
    other.redrawFeatures(5 + 2);
    expect(other.parameters()[key].data).toEqual(redrawn);
    expect(() => new AdamW(lm, { featureRedraw: { every: 0 } })).toThrow(/featureRedraw\.every: expected an integer from 1/);
  });

  test('a NaN gradient names the parameter and the step is not applied', () => {
    const lm = load(name);
    lm.lossAndGradSync(io.tokens, io.targets);
    const before = lm.parameters();
    const opt = new AdamW(lm);
    const item = (lm as unknown as { trainables(): { name: string; grad: Float32Array }[] }).trainables().find((t) => t.name === 'norm.bias')!;
    item.grad[3] = NaN;
    expect(() => opt.step()).toThrow(/gradient of norm\.bias is NaN at index 3; the step was not applied/);
    expect(opt.stepCount).toBe(0);
    const after = lm.parameters();
    for (const param of Object.keys(before)) expect(after[param].data).toEqual(before[param].data);
  });

  test('toPerformerPytorch gives the package state_dict in form, duplicates included', () => {
    const lm = load(name);
    const sd = lm.toPerformerPytorch();
    expect(sd['performer.proj_updater.instance.layers.1.1.fn.fn.w2.weight'].data).toEqual(sd['performer.net.layers.1.1.fn.fn.w2.weight'].data);
    expect(sd['performer.proj_updater.calls_since_last_redraw'].shape).toEqual([]);
    const again = PerformerLM.fromPerformerPytorch(sd, cases[name].ctor as never, { numerics: 'exact' });
    expect(again.lossAndGradSync(io.tokens, io.targets)).toBe(lm.lossAndGradSync(io.tokens, io.targets));
  });

  test.each(['pp_axial_positions', 'pp_scalenorm_shift_glu_relu_tied', 'pp_reversible', 'pp_local_heads_bidirectional'])('after steps, %s runs as a model rebuilt from its parameters', (pp) => {
    // Derived weights (the summed axial table, fused projections) follow the updates.
    const ppIo = readIo(pp);
    const lm = PerformerLM.fromPerformerPytorch(path.join(DIR, `${pp}.state_dict.safetensors`), cases[pp].ctor as never);
    const opt = new AdamW(lm, { lr: 1e-2 });
    const before = lm.forwardSync(ppIo.tokens).data;
    for (let i = 0; i < 3; i++) {
      lm.lossAndGradSync(ppIo.tokens, ppIo.targets);
      opt.step();
    }
    const after = lm.forwardSync(ppIo.tokens).data;
    expect(relFrobenius(after, before)).toBeGreaterThan(1e-3);
    const rebuilt = PerformerLM.fromPerformerPytorch(lm.toPerformerPytorch(), cases[pp].ctor as never);
    expect(Buffer.from(rebuilt.forwardSync(ppIo.tokens).data.buffer).equals(Buffer.from(after.buffer))).toBe(true);
  });
});
