/**
 * Gradients of the layer classes (module form): backward / backwardSync against central
 * finite differences of the plain double-precision reference (every input entry, a
 * sample of every parameter), against PyTorch autograd on PyTorch's own modules
 * (test/fixtures/layer-grads, scripts/fixtures/make_layer_grad_fixtures.py) on every kernel
 * set, accumulation, an optimizer step seen by the next forward pass, and errors.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AdamW, backendInfo, DecoderLayer, EncoderLayer, fromPyTorch, MultiHeadAttention, setBackend, TransformerDecoder, TransformerEncoder, type InputGradients, type Tensor } from '../lib';
import { docBlock, runSnippet } from './helpers/doc-snippets';
import { expectThrows } from './helpers/errors';
import { blockRef, layerNormRef, mhaRef, type RefBlockConfig } from './helpers/layer-reference';
import { randn, relFrobenius, Rng, type RefFeatureSpec, type RefTensor } from './helpers/reference';
import { buildLayer, forwardOptions, loadFixture, loadInto } from './helpers/torch-layer-fixtures';

type Params = Record<string, RefTensor>;
type Kind = 'favor' | 'softmax';

const B = 2;
const L = 6;
const Lm = 5;
const D = 8;
const H = 2;
const FF = 12;
const M = 16;

const featureSpec = (dh: number, m: number) => (projection: Float32Array): RefFeatureSpec => ({ kernel: 'softmax', headDim: dh, numFeatures: m, projection, kernelEpsilon: 1e-3 });

function seq(seed: number, len: number, width: number): Tensor {
  return { data: randn(new Rng(seed), B * len * width), shape: [B, len, width] };
}

function padding(len: number, keep: number[]): Uint8Array {
  const m = new Uint8Array(B * len);
  keep.forEach((k, b) => m.fill(1, b * len, b * len + k));
  return m;
}

interface Case {
  name: string;
  module: { parameters(): Record<string, Tensor>; gradients(): Record<string, Tensor>; backwardSync(x: Tensor, g: Tensor, o?: object): InputGradients };
  options: object;
  // The layer's output in double from parameters p, input x and memory m.
  ref: (p: Params, x: ArrayLike<number>, m: ArrayLike<number> | null) => Float64Array;
  memory: Tensor | null;
}

const blockConfig = (attention: Kind, o: Partial<RefBlockConfig>): RefBlockConfig => ({
  modelDim: D,
  numHeads: H,
  headDim: D / H,
  attention,
  causal: false,
  featureSpec: featureSpec(D / H, M),
  ffDim: FF,
  activation: 'relu',
  normFirst: false,
  layerNormEps: 1e-5,
  decoder: false,
  crossAttention: false,
  ...o,
});

const layerOptions = (attention: Kind, o: object) => ({ modelDim: D, numHeads: H, ffDim: FF, attention, featureMap: { numFeatures: M }, seed: 5, ...o });

function cases(): Case[] {
  const out: Case[] = [];
  const keyPad = padding(L, [L, 4]);
  const memPad = padding(Lm, [Lm, 3]);
  for (const attention of ['favor', 'softmax'] as const) {
    for (const causal of [false, true]) {
      const m = new MultiHeadAttention({ modelDim: D, numHeads: H, attention, causal, featureMap: { numFeatures: M }, seed: 2 });
      const pad = causal ? null : keyPad;
      out.push({
        name: `MultiHeadAttention self (${attention}, causal ${causal})`,
        module: m,
        options: pad ? { keyPaddingMask: { data: pad, shape: [B, L] } } : {},
        ref: (p, x) => mhaRef(p, '', { modelDim: D, numHeads: H, headDim: D / H, attention, causal, featureSpec: featureSpec(D / H, M) }, x, B, L, null, L, pad),
        memory: null,
      });
    }
    const cross = new MultiHeadAttention({ modelDim: D, numHeads: H, keyDim: 6, attention, featureMap: { numFeatures: M }, seed: 3 });
    out.push({
      name: `MultiHeadAttention over a memory of keyDim 6 (${attention})`,
      module: cross,
      options: { keyPaddingMask: { data: memPad, shape: [B, Lm] } },
      ref: (p, x, mem) => mhaRef(p, '', { modelDim: D, numHeads: H, headDim: D / H, attention, causal: false, featureSpec: featureSpec(D / H, M) }, x, B, L, mem, Lm, memPad),
      memory: seq(31, Lm, 6),
    });
    for (const [normFirst, activation] of [[false, 'relu'], [true, 'gelu']] as const) {
      const cfg = blockConfig(attention, { normFirst, activation });
      out.push({
        name: `EncoderLayer (${attention}, normFirst ${normFirst}, ${activation})`,
        module: new EncoderLayer(layerOptions(attention, { normFirst, activation })),
        options: { keyPaddingMask: { data: keyPad, shape: [B, L] } },
        ref: (p, x) => blockRef(p, '', cfg, x, B, L, { keyPadding: keyPad }),
        memory: null,
      });
      const dcfg = blockConfig(attention, { normFirst, activation: 'gelu', decoder: true, crossAttention: true });
      out.push({
        name: `DecoderLayer with cross-attention (${attention}, normFirst ${normFirst})`,
        module: new DecoderLayer(layerOptions(attention, { normFirst, activation: 'gelu' })),
        options: { memoryKeyPaddingMask: { data: memPad, shape: [B, Lm] } },
        ref: (p, x, mem) => blockRef(p, '', dcfg, x, B, L, { memory: mem!, memoryLength: Lm, memoryPadding: memPad }),
        memory: seq(32, Lm, D),
      });
    }
    const ncfg = blockConfig(attention, { decoder: true });
    out.push({
      name: `DecoderLayer without cross-attention (${attention})`,
      module: new DecoderLayer(layerOptions(attention, { crossAttention: false })),
      options: {},
      ref: (p, x) => blockRef(p, '', ncfg, x, B, L),
      memory: null,
    });
    const ecfg = blockConfig(attention, {});
    out.push({
      name: `TransformerEncoder, 2 layers, final norm (${attention})`,
      module: new TransformerEncoder({ ...layerOptions(attention, {}), numLayers: 2, finalNorm: true }),
      options: { keyPaddingMask: { data: keyPad, shape: [B, L] } },
      ref: (p, x) => {
        let y: ArrayLike<number> = x;
        for (let i = 0; i < 2; i++) y = blockRef(p, `layers.${i}.`, ecfg, y, B, L, { keyPadding: keyPad });
        return layerNormRef(y, B * L, D, p['norm.weight'], p['norm.bias'], 1e-5);
      },
      memory: null,
    });
    const tcfg = blockConfig(attention, { normFirst: true, decoder: true, crossAttention: true });
    out.push({
      name: `TransformerDecoder, 2 pre-norm layers, no final norm (${attention})`,
      module: new TransformerDecoder({ ...layerOptions(attention, { normFirst: true }), numLayers: 2 }),
      options: {},
      ref: (p, x, mem) => {
        let y: ArrayLike<number> = x;
        for (let i = 0; i < 2; i++) y = blockRef(p, `layers.${i}.`, tcfg, y, B, L, { memory: mem!, memoryLength: Lm });
        return Float64Array.from(y);
      },
      memory: seq(33, Lm, D),
    });
  }
  return out;
}

// Central differences of sum(gradOut * ref) in double, step h.
const H_STEP = 1e-5;
function objective(c: Case, p: Params, x: ArrayLike<number>, m: ArrayLike<number> | null, g: Float32Array): number {
  const y = c.ref(p, x, m);
  let s = 0;
  for (let i = 0; i < y.length; i++) s += y[i] * g[i];
  return s;
}

function numericGradient(f: (values: Float64Array) => number, values: ArrayLike<number>, indices: number[]): Float64Array {
  const v = Float64Array.from(values);
  return Float64Array.from(indices, (i) => {
    const keep = v[i];
    v[i] = keep + H_STEP;
    const up = f(v);
    v[i] = keep - H_STEP;
    const down = f(v);
    v[i] = keep;
    return (up - down) / (2 * H_STEP);
  });
}

// Six spread indices of a tensor (all of a small one).
function sample(n: number, seed: number): number[] {
  if (n <= 6) return Array.from({ length: n }, (_, i) => i);
  const rng = new Rng(seed);
  return Array.from({ length: 6 }, () => Math.floor(rng.uniform() * n));
}

describe.each(cases().map((c) => [c.name, c] as const))('%s', (_name, c) => {
  const x = seq(21, L, D);
  const gradOut = seq(22, L, D);

  test('backward equals finite differences of the double reference (inputs and parameters)', () => {
    const options = c.memory !== null ? { ...c.options, memory: c.memory } : c.options;
    const r = c.module.backwardSync(x, gradOut, options);
    const p: Params = c.module.parameters();
    const all = (n: number) => Array.from({ length: n }, (_, i) => i);
    const m = c.memory?.data ?? null;
    const dx = numericGradient((v) => objective(c, p, v, m, gradOut.data), x.data, all(x.data.length));
    expect(r.input.shape).toEqual([B, L, D]);
    expect(relFrobenius(r.input.data, dx)).toBeLessThan(1e-4);
    if (c.memory !== null) {
      const dm = numericGradient((v) => objective(c, p, x.data, v, gradOut.data), c.memory.data, all(c.memory.data.length));
      expect(r.memory!.shape).toEqual(c.memory.shape);
      expect(relFrobenius(r.memory!.data, dm)).toBeLessThan(1e-4);
    } else {
      expect(r.memory).toBeUndefined();
    }
    const grads = c.module.gradients();
    expect(Object.keys(grads).sort()).toEqual(Object.keys(p).filter((k) => !k.endsWith('features.projection')).sort());
    let seed = 100;
    const analytic: number[] = [];
    const numeric: number[] = [];
    for (const [name, g] of Object.entries(grads)) {
      expect(g.shape).toEqual(p[name].shape);
      const idx = sample(g.data.length, seed++);
      const fd = numericGradient((v) => objective(c, { ...p, [name]: { data: v, shape: p[name].shape } }, x.data, m, gradOut.data), p[name].data, idx);
      idx.forEach((i, j) => {
        analytic.push(g.data[i]);
        numeric.push(fd[j]);
      });
    }
    expect(relFrobenius(analytic, numeric)).toBeLessThan(1e-4);
  });

  test('gradients accumulate, zeroGrad clears them; async equals sync', async () => {
    const options = c.memory !== null ? { ...c.options, memory: c.memory } : c.options;
    const module = c.module as Case['module'] & { zeroGrad(): void; backward(x: Tensor, g: Tensor, o?: object): Promise<InputGradients> };
    module.zeroGrad();
    const first = module.backwardSync(x, gradOut, options);
    const once = module.gradients();
    const second = await module.backward(x, gradOut, options);
    expect(Buffer.from(second.input.data.buffer).equals(Buffer.from(first.input.data.buffer))).toBe(true);
    const twice = module.gradients();
    for (const [name, g] of Object.entries(once)) {
      expect(relFrobenius(twice[name].data, Float32Array.from(g.data, (v) => 2 * v))).toBeLessThan(1e-6);
    }
    module.zeroGrad();
    for (const g of Object.values(module.gradients())) expect(g.data.every((v) => v === 0)).toBe(true);
  });
});

describe('against PyTorch autograd (nn.MultiheadAttention, nn.Transformer* modules, softmax attention)', () => {
  const dir = path.join(__dirname, 'fixtures', 'layer-grads');
  const fixtures = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort().map((file) => loadFixture(dir, file));
  const original = backendInfo();
  afterAll(() => setBackend({ isa: original.isa, threads: original.threads }));

  test('the fixtures cover attention, encoder and decoder layers and stacks', () => {
    expect(fixtures.map((f) => f.config.kind).sort()).toEqual(['DecoderLayer', 'EncoderLayer', 'EncoderLayer', 'MultiHeadAttention', 'MultiHeadAttention', 'TransformerDecoder', 'TransformerEncoder']);
  });

  for (const isa of backendInfo().available) {
    test.each(fixtures.map((f) => [f.name, f] as const))(`%s on ${isa}`, (_name, f) => {
      setBackend({ isa: isa as never });
      const layer = buildLayer(f.config);
      loadInto(layer, f);
      const options = forwardOptions(f);
      const r = layer.backwardSync(f.inputs.x, f.inputs.grad_out, options) as InputGradients;
      expect(relFrobenius(r.input.data, f.grads.x.data)).toBeLessThan(1e-4);
      if (f.grads.memory) expect(relFrobenius(r.memory!.data, f.grads.memory.data)).toBeLessThan(1e-4);
      else expect(r.memory).toBeUndefined();
      // PyTorch's gradients under the layer's names (the same mapping as the weights).
      const want = fromPyTorch(Object.fromEntries(Object.entries(f.grads).filter(([n]) => n !== 'x' && n !== 'memory')), { prefix: f.config.prefix });
      const got = layer.gradients() as Record<string, Tensor>;
      expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
      // Every gradient within 1e-4 relative, except the key bias's, which is zero in exact
      // arithmetic (a constant added to a row of scores changes nothing): it must stay at
      // float32 rounding noise, 1e-6 of the size of all the gradients.
      let all = 0;
      for (const t of Object.values(want)) for (const v of t.data) all += v * v;
      for (const [name, t] of Object.entries(want)) {
        let num = 0;
        let den = 0;
        let norm = 0;
        t.data.forEach((v, i) => {
          num += (got[name].data[i] - v) ** 2;
          den += v * v;
          norm += got[name].data[i] ** 2;
        });
        if (Math.sqrt(den) <= 1e-9 * Math.sqrt(all)) {
          expect(name).toMatch(/k\.bias$/);
          if (!(Math.sqrt(norm) <= 1e-6 * Math.sqrt(all))) throw new Error(`${f.name} on ${isa}: gradient of ${name} is not zero: norm ${Math.sqrt(norm)}`);
        } else if (!(Math.sqrt(num / den) <= 1e-4)) {
          throw new Error(`${f.name} on ${isa}: gradient of ${name} off by ${Math.sqrt(num / den)}`);
        }
      }
    });
  }
});

describe('training layers', () => {
  test('AdamW fits an encoder layer to a target; forward passes see every step', () => {
    const layer = new EncoderLayer(layerOptions('favor', { normFirst: true }));
    const x = seq(41, L, D);
    const target = seq(42, L, D);
    const loss = () => {
      const y = layer.forwardSync(x).data;
      let s = 0;
      for (let i = 0; i < y.length; i++) s += (y[i] - target.data[i]) ** 2;
      return s / y.length;
    };
    const opt = new AdamW(layer, { lr: 1e-2, weightDecay: 0 });
    const start = loss();
    for (let step = 0; step < 60; step++) {
      const y = layer.forwardSync(x).data;
      const g = Float32Array.from(y, (v, i) => (2 * (v - target.data[i])) / y.length);
      layer.backwardSync(x, { data: g, shape: x.shape });
      opt.step();
    }
    expect(loss()).toBeLessThan(0.5 * start);
    // The forward pass runs the updated weights (no stale packed or fused copies).
    const ref = blockRef(layer.parameters(), '', blockConfig('favor', { normFirst: true }), x.data, B, L);
    expect(relFrobenius(layer.forwardSync(x).data, ref)).toBeLessThan(1e-5);
    expect(Object.values(layer.gradients()).every((g) => g.data.every((v) => v === 0))).toBe(true);
  });

  test("the docs' layer example runs and lowers its loss", () => {
    const output = runSnippet(docBlock('docs/training.md', '## Layers'));
    const mse = [...output.matchAll(/^step (\d+) mse (\d+\.\d+)$/gm)].map((m) => Number(m[2]));
    expect(mse).toHaveLength(3);
    expect(mse[2]).toBeLessThan(0.7 * mse[0]);
  });

  test('a stack trains through its own gradients, its layers keep theirs', () => {
    const enc = new TransformerEncoder({ ...layerOptions('softmax', {}), numLayers: 2 });
    const x = seq(43, L, D);
    enc.backwardSync(x, seq(44, L, D));
    const stack = enc.gradients();
    expect(stack['layers.1.ff2.weight'].data.some((v) => v !== 0)).toBe(true);
    expect(Object.values(enc.layers[1].gradients()).every((g) => g.data.every((v) => v === 0))).toBe(true);
  });

  test('loadParameters keeps the gradient names; the next pass uses the new weights', () => {
    const a = new MultiHeadAttention({ modelDim: D, numHeads: H, attention: 'softmax', seed: 1 });
    const b2 = new MultiHeadAttention({ modelDim: D, numHeads: H, attention: 'softmax', seed: 9 });
    const x = seq(45, L, D);
    const g = seq(46, L, D);
    a.loadParameters(b2.parameters());
    const ra = a.backwardSync(x, g);
    const rb = b2.backwardSync(x, g);
    expect(Buffer.from(ra.input.data.buffer).equals(Buffer.from(rb.input.data.buffer))).toBe(true);
    expect(Buffer.from(a.gradients()['q.weight'].data.buffer).equals(Buffer.from(b2.gradients()['q.weight'].data.buffer))).toBe(true);
  });
});

describe('layer backward errors', () => {
  const x = seq(51, L, D);
  const g = seq(52, L, D);
  const range = (message: RegExp, code = 'ERR_OUT_OF_RANGE') => ({ name: 'RangeError' as const, code, message });

  test('gradOut: required, of the output shape, finite', () => {
    const m = new MultiHeadAttention({ modelDim: D, numHeads: H });
    expectThrows(() => m.backwardSync(x, undefined as unknown as Tensor), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /gradOut: required/ });
    expectThrows(() => m.backwardSync(x, seq(1, L + 1, D)), range(/gradOut: expected shape \[2, 6, 8\]/));
    expectThrows(() => m.backwardSync(x, { data: new Float32Array(B * L * 4), shape: [B, L, 4] }), range(/gradOut: expected shape/));
    const bad = Float32Array.from(g.data);
    bad[7] = NaN;
    expectThrows(() => m.backwardSync(x, { data: bad, shape: g.shape }), range(/gradOut.*NaN/));
  });

  test('attention without gradients is a RangeError naming the reason', () => {
    const eps = new MultiHeadAttention({ modelDim: D, numHeads: H, epsilon: 1e-3 });
    expectThrows(() => eps.backwardSync(x, g), range(/epsilon 0/, 'ERR_INVALID_ARG_VALUE'));
    // The same layer under softmax attention has gradients.
    expect(eps.backwardSync(x, g, { attention: 'softmax' }).input.data.length).toBe(x.data.length);
    const trig = new EncoderLayer({ modelDim: D, numHeads: H, featureMap: { kernel: 'trig' } });
    expectThrows(() => trig.backwardSync(x, g), range(/kernel is 'trig'/, 'ERR_INVALID_ARG_VALUE'));
    expect(Object.values(trig.gradients()).every((t) => t.data.every((v) => v === 0))).toBe(true);
  });

  test('memory: required by cross-attention, refused without it', () => {
    const dec = new DecoderLayer({ modelDim: D, numHeads: H });
    expectThrows(() => dec.backwardSync(x, g), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /options.memory: required/ });
    const self = new DecoderLayer({ modelDim: D, numHeads: H, crossAttention: false });
    expectThrows(() => self.backwardSync(x, g, { memory: seq(1, Lm, D) }), range(/no cross-attention/, 'ERR_INVALID_ARG_VALUE'));
    const enc = new EncoderLayer({ modelDim: D, numHeads: H });
    expectThrows(() => enc.backwardSync(x, g, { memory: seq(1, Lm, D) } as object), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /unknown option 'memory'/ });
  });

  test('an aborted backward rejects and leaves the gradients unchanged', async () => {
    const enc = new TransformerEncoder({ modelDim: D, numHeads: H, numLayers: 2 });
    const controller = new AbortController();
    controller.abort();
    const error = await enc.backward(x, g, { signal: controller.signal }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(Object.values(enc.gradients()).every((t) => t.data.every((v) => v === 0))).toBe(true);
  });
});
