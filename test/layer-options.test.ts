// Layer options PyTorch users reach for (outputs against PyTorch are in torch-parity.test.ts):
// separate key and value inputs with valueDim (kdim != vdim), causal encoders, non-causal
// decoders and the final norm's own epsilon; their gradients, model files and errors.
import {
  DecoderLayer,
  EncoderLayer,
  MultiHeadAttention,
  TransformerDecoder,
  TransformerEncoder,
  readModel,
  writeModel,
  type Tensor,
} from '../lib';
import { expectThrows } from './helpers/errors';
import { relFrobenius, seededUniform } from './helpers/reference';

function filled(shape: number[], seed: number, scale = 1): Tensor {
  return { data: seededUniform(shape.reduce((a, b) => a * b, 1), seed, scale), shape };
}
const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * b[i], 0);
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('MultiHeadAttention with separate key and value inputs', () => {
  const B = 2, Lq = 4, Lk = 6, D = 8, K = 6, V = 10;
  const mha = new MultiHeadAttention({ modelDim: D, numHeads: 2, keyDim: K, valueDim: V, attention: 'softmax', seed: 5 });
  const x = filled([B, Lq, D], 1), key = filled([B, Lk, K], 2), value = filled([B, Lk, V], 3);

  test('the value projection takes valueDim inputs; model files keep it', () => {
    expect(mha.config.valueDim).toBe(V);
    expect(mha.parameters()['v.weight'].shape).toEqual([D, V]);
    expect(mha.parameters()['k.weight'].shape).toEqual([D, K]);
    const copy = readModel(writeModel(mha)) as MultiHeadAttention;
    expect(copy.config.valueDim).toBe(V);
    expect(bits(copy.forwardSync(x, { key, value }).data).equals(bits(mha.forwardSync(x, { key, value }).data))).toBe(true);
  });

  test('the values come from value, the keys from key', () => {
    const y = mha.forwardSync(x, { key, value }).data;
    const otherValue = mha.forwardSync(x, { key, value: filled([B, Lk, V], 9) }).data;
    const otherKey = mha.forwardSync(x, { key: filled([B, Lk, K], 9), value }).data;
    expect(relFrobenius(otherValue, y)).toBeGreaterThan(1e-2);
    expect(relFrobenius(otherKey, y)).toBeGreaterThan(1e-2);
  });

  test('key = value = memory gives the memory call, and its gradients split into the two inputs', () => {
    const same = new MultiHeadAttention({ modelDim: D, numHeads: 2, keyDim: K, seed: 6 });
    const memory = filled([B, Lk, K], 4);
    const viaMemory = same.forwardSync(x, { memory });
    // Equal up to rounding: the memory's keys and values are projected in one fused product.
    expect(relFrobenius(same.forwardSync(x, { key: memory, value: memory }).data, viaMemory.data)).toBeLessThan(1e-6);
    const g = filled([B, Lq, D], 7);
    const m = same.backwardSync(x, g, { memory });
    same.zeroGrad();
    const kv = same.backwardSync(x, g, { key: memory, value: memory });
    expect(kv.memory).toBeUndefined();
    expect(kv.key!.shape).toEqual([B, Lk, K]);
    const sum = kv.key!.data.map((v, i) => v + kv.value!.data[i]);
    expect(relFrobenius(sum, m.memory!.data)).toBeLessThan(1e-5);
    expect(relFrobenius(kv.input.data, m.input.data)).toBeLessThan(1e-6);
  });

  test.each(['softmax', 'favor'] as const)('%s: gradients of key and value agree with finite differences', async (attention) => {
    const loss = (k: Tensor, v: Tensor) => dot(mha.forwardSync(x, { key: k, value: v, attention }).data, g.data);
    const g = filled([B, Lq, D], 8);
    mha.zeroGrad();
    const grads = await mha.backward(x, g, { key, value, attention });
    expect(grads.value!.shape).toEqual([B, Lk, V]);
    for (const [which, t, grad] of [['key', key, grads.key!], ['value', value, grads.value!]] as const) {
      const dir = filled(t.shape as number[], which === 'key' ? 11 : 12);
      const h = 1e-2;
      const plus = { data: t.data.map((v, i) => v + h * dir.data[i]), shape: t.shape };
      const minus = { data: t.data.map((v, i) => v - h * dir.data[i]), shape: t.shape };
      const numeric = which === 'key' ? (loss(plus, value) - loss(minus, value)) / (2 * h) : (loss(key, plus) - loss(key, minus)) / (2 * h);
      const analytic = dot(grad.data, dir.data);
      expect(Math.abs(numeric - analytic)).toBeLessThan(2e-3 * Math.max(1, Math.abs(analytic)));
    }
    // The weights' gradients reach v.weight with valueDim columns.
    expect(mha.gradients()['v.weight'].shape).toEqual([D, V]);
  });

  test('bad combinations say what to pass', () => {
    expectThrows(() => mha.forwardSync(x, { memory: key }), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /options\.memory: keys and values have different widths here \(keyDim 6, valueDim 10\); pass key and value/ });
    expectThrows(() => mha.forwardSync(x, { key }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /options\.value: required with options\.key/ });
    expectThrows(() => mha.forwardSync(x, { value }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /options\.key: required with options\.value/ });
    expectThrows(() => mha.forwardSync(x, { key, value, memory: key }), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /pass either memory or key and value, not both/ });
    expectThrows(() => mha.forwardSync(x, { key, value: filled([B, Lk + 1, V], 3) }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /options\.value: expected 6 rows \(the key's\), received 7/ });
    expectThrows(() => mha.forwardSync(x, { key, value: filled([B, Lk, K], 3) }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /options\.value.*valueDim/ });
    expectThrows(() => mha.forwardSync(x), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /options\.memory: required, since keyDim 6 differs from modelDim 8/ });
    const onlyValue = new MultiHeadAttention({ modelDim: D, numHeads: 2, valueDim: V });
    expectThrows(() => onlyValue.forwardSync(x), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /options\.key and options\.value: required, since valueDim 10 differs from modelDim 8/ });
  });
});

describe('causal encoders and non-causal decoders', () => {
  const B = 1, L = 6, D = 8;
  const x = filled([B, L, D], 1);

  test('a causal encoder layer: row i does not depend on later rows; model files keep it', () => {
    const enc = new EncoderLayer({ modelDim: D, numHeads: 2, causal: true, seed: 2 });
    expect(enc.config.attention.causal).toBe(true);
    const y = enc.forwardSync(x).data;
    const changed = { data: x.data.slice(), shape: x.shape };
    for (let i = 4 * D; i < L * D; i++) changed.data[i] += 1;
    const y2 = enc.forwardSync(changed).data;
    // Up to rounding: FAVOR+'s stabilizing shift is taken over all keys.
    expect(relFrobenius(y2.subarray(0, 4 * D), y.subarray(0, 4 * D))).toBeLessThan(1e-6);
    expect(relFrobenius(y2.subarray(4 * D), y.subarray(4 * D))).toBeGreaterThan(1e-2);
    const bidirectional = new EncoderLayer({ modelDim: D, numHeads: 2, seed: 2 });
    expect(relFrobenius(bidirectional.forwardSync(x).data.subarray(0, D), y.subarray(0, D))).toBeGreaterThan(1e-3);
    const stack = new TransformerEncoder({ modelDim: D, numHeads: 2, numLayers: 2, causal: true });
    const copy = readModel(writeModel(stack)) as TransformerEncoder;
    expect(copy.config.attention.causal).toBe(true);
    expect(bits(copy.forwardSync(x).data).equals(bits(stack.forwardSync(x).data))).toBe(true);
  });

  test('a non-causal decoder: its first row sees later rows; it does not decode token by token', async () => {
    const memory = filled([B, 3, D], 5);
    const dec = new DecoderLayer({ modelDim: D, numHeads: 2, causal: false, seed: 3 });
    const causal = new DecoderLayer({ modelDim: D, numHeads: 2, seed: 3 });
    expect(relFrobenius(dec.forwardSync(x, { memory }).data.subarray(0, D), causal.forwardSync(x, { memory }).data.subarray(0, D))).toBeGreaterThan(1e-3);
    const stack = new TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 1, causal: false });
    const error = { name: 'RangeError' as const, code: 'ERR_INVALID_ARG_VALUE', message: /token-by-token decoding needs causal self-attention; this decoder was built with causal: false/ };
    expectThrows(() => stack.createStateSync(1, { memory }), error);
    expectThrows(() => dec.createStateSync(1, { memory }), error);
    await expect(stack.createState(1, { memory })).rejects.toMatchObject({ name: 'RangeError' });
    expect((readModel(writeModel(stack)) as TransformerDecoder).config.attention.causal).toBe(false);
  });

  test('training follows the causal option: no gradient flows from a row to earlier rows', () => {
    const enc = new EncoderLayer({ modelDim: D, numHeads: 2, causal: true, attention: 'softmax', seed: 4 });
    const g = { data: new Float32Array(B * L * D), shape: [B, L, D] };
    g.data.fill(1, 0, D); // dL/d y for row 0 only
    const dx = enc.backwardSync(x, g).input.data;
    expect(dx.subarray(D).every((v) => v === 0)).toBe(true);
    expect(dx.subarray(0, D).some((v) => v !== 0)).toBe(true);
  });
});

describe('the final norm of a stack', () => {
  const x = filled([2, 5, 8], 1, 0.05);
  test('has its own epsilon (default layerNormEps); model files keep it', () => {
    const base = { modelDim: 8, numHeads: 2, numLayers: 1, finalNorm: true, layerNormEps: 1e-6, seed: 2 } as const;
    const own = new TransformerEncoder({ ...base, finalNormEps: 0.5 });
    const same = new TransformerEncoder(base);
    expect(own.config.finalNormEps).toBe(0.5);
    expect(same.config.finalNormEps).toBe(1e-6);
    expect(relFrobenius(own.forwardSync(x).data, same.forwardSync(x).data)).toBeGreaterThan(1e-3);
    const copy = readModel(writeModel(own)) as TransformerEncoder;
    expect(copy.config.finalNormEps).toBe(0.5);
    expect(bits(copy.forwardSync(x).data).equals(bits(own.forwardSync(x).data))).toBe(true);
    const dec = new TransformerDecoder({ ...base, finalNormEps: 0.5, crossAttention: false });
    expect((readModel(writeModel(dec)) as TransformerDecoder).config.finalNormEps).toBe(0.5);
  });

  test('finalNormEps without a final norm, or not a positive number, is an error', () => {
    expectThrows(() => new TransformerEncoder({ modelDim: 8, numHeads: 2, numLayers: 1, finalNormEps: 1e-3 }), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /finalNormEps: there is no final norm \(finalNorm is false\)/ });
    expectThrows(() => new TransformerEncoder({ modelDim: 8, numHeads: 2, numLayers: 1, finalNorm: true, finalNormEps: 0 }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /finalNormEps/ });
  });
});
