// Mask polarity: the library's masks are 1 = attend, PyTorch's key_padding_mask is
// True = ignore. The `{ keep }` / `{ ignore }` forms state the polarity; every mask of the
// library reads them the same way, and a PyTorch mask passed as `{ ignore }` gives the
// same result as its inversion passed as bytes.
import {
  DecoderLayer,
  EncoderLayer,
  FeatureMap,
  MultiHeadAttention,
  PerformerLM,
  favorAttention,
  favorAttentionSync,
  softmaxAttentionSync,
  type MaskLike,
} from '../lib';
import { expectThrows } from './helpers/errors';
import { seededUniform } from './helpers/reference';

const B = 2, H = 2, L = 7, D = 8;

const filled = (n: number, seed: number) => seededUniform(n, seed);
const t = (shape: number[], seed: number) => ({ data: filled(shape.reduce((a, b) => a * b, 1), seed), shape });
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

// PyTorch style: True (1) = padding. Sequence 0 pads its last 3 keys, sequence 1 its first 2.
const torchMask = Uint8Array.from([0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]);
const keepBytes = torchMask.map((x) => (x ? 0 : 1));
const forms: [string, MaskLike][] = [
  ['{ ignore } of a PyTorch mask', { ignore: { data: torchMask, shape: [B, L] } }],
  ['{ keep } of the inverted mask', { keep: { data: keepBytes, shape: [B, L] } }],
  ['{ keep } with dims', { keep: { data: keepBytes, dims: [B, L] } }],
];

describe('attention calls', () => {
  const q = t([B, H, L, D], 1), k = t([B, H, L, D], 2), v = t([B, H, L, D], 3);
  const featureMap = new FeatureMap({ headDim: D, numFeatures: 16, seed: 4 });
  const plain = { data: keepBytes, shape: [B, L] };

  test.each(forms)('favorAttention and softmaxAttention: %s equals the bytes mask', async (_, mask) => {
    const want = favorAttentionSync(q, k, v, { featureMap, keyPaddingMask: plain }).data;
    expect(bits(favorAttentionSync(q, k, v, { featureMap, keyPaddingMask: mask }).data).equals(bits(want))).toBe(true);
    expect(bits((await favorAttention(q, k, v, { featureMap, keyPaddingMask: mask })).data).equals(bits(want))).toBe(true);
    const exact = softmaxAttentionSync(q, k, v, { keyPaddingMask: plain }).data;
    expect(bits(softmaxAttentionSync(q, k, v, { keyPaddingMask: mask }).data).equals(bits(exact))).toBe(true);
  });

  test('passing the PyTorch mask as bytes inverts attention: the polarity matters', () => {
    const right = softmaxAttentionSync(q, k, v, { keyPaddingMask: { ignore: { data: torchMask, shape: [B, L] } } }).data;
    const wrong = softmaxAttentionSync(q, k, v, { keyPaddingMask: { data: torchMask, shape: [B, L] } }).data;
    let diff = 0;
    for (let i = 0; i < right.length; i++) diff = Math.max(diff, Math.abs(right[i] - wrong[i]));
    expect(diff).toBeGreaterThan(1e-3);
  });

  test('{ ignore } leaves the caller\'s bytes unchanged', () => {
    const data = torchMask.slice();
    favorAttentionSync(q, k, v, { featureMap, keyPaddingMask: { ignore: { data, shape: [B, L] } } });
    expect(Buffer.from(data).equals(Buffer.from(torchMask))).toBe(true);
  });
});

describe('layers', () => {
  const x = t([B, L, D], 5);
  test.each(forms)('MultiHeadAttention, EncoderLayer and a decoder\'s memory: %s equals the bytes mask', async (_, mask) => {
    const plain = { data: keepBytes, shape: [B, L] };
    const mha = new MultiHeadAttention({ modelDim: D, numHeads: H, seed: 2 });
    expect(bits(mha.forwardSync(x, { keyPaddingMask: mask, attention: 'softmax' }).data).equals(bits(mha.forwardSync(x, { keyPaddingMask: plain, attention: 'softmax' }).data))).toBe(true);
    const enc = new EncoderLayer({ modelDim: D, numHeads: H, seed: 3 });
    expect(bits((await enc.forward(x, { keyPaddingMask: mask })).data).equals(bits(enc.forwardSync(x, { keyPaddingMask: plain }).data))).toBe(true);
    const dec = new DecoderLayer({ modelDim: D, numHeads: H, seed: 4 });
    const memory = t([B, L, D], 6);
    expect(bits(dec.forwardSync(x, { memory, memoryKeyPaddingMask: mask }).data).equals(bits(dec.forwardSync(x, { memory, memoryKeyPaddingMask: plain }).data))).toBe(true);
    const a = dec.stepSync(x, dec.createStateSync(B, { memory, memoryKeyPaddingMask: mask }));
    const b = dec.stepSync(x, dec.createStateSync(B, { memory, memoryKeyPaddingMask: plain }));
    expect(bits(a.data).equals(bits(b.data))).toBe(true);
  });
});

describe('PerformerLM', () => {
  // performer-pytorch's `mask` is 1 = keep too: a PyTorch key_padding_mask goes in as { ignore }.
  const lm = PerformerLM.random({ num_tokens: 16, max_seq_len: 16, dim: D, depth: 1, heads: H, dim_head: 4, causal: false }, { seed: 7 });
  const tokens = { data: Int32Array.from({ length: B * L }, (_, i) => (i * 5) % 16), shape: [B, L] };
  const plain = { data: keepBytes, shape: [B, L] };

  test.each(forms)('forward options.mask: %s equals the bytes mask', async (_, mask) => {
    const want = lm.forwardSync(tokens, { mask: plain }).data;
    expect(bits(lm.forwardSync(tokens, { mask }).data).equals(bits(want))).toBe(true);
    expect(bits((await lm.forward(tokens, { mask })).data).equals(bits(want))).toBe(true);
  });

  test('the PyTorch mask as bytes gives other logits than as { ignore }', () => {
    const right = lm.forwardSync(tokens, { mask: { ignore: { data: torchMask, shape: [B, L] } } }).data;
    const wrong = lm.forwardSync(tokens, { mask: { data: torchMask, shape: [B, L] } }).data;
    let diff = 0;
    for (let i = 0; i < right.length; i++) diff = Math.max(diff, Math.abs(right[i] - wrong[i]));
    expect(diff).toBeGreaterThan(1e-3);
  });
});

describe('bad masks', () => {
  const q = t([1, 1, 3, 4], 1);
  const call = (mask: unknown) => () => softmaxAttentionSync(q, q, q, { keyPaddingMask: mask as MaskLike });
  test('both keep and ignore', () => {
    const m = { data: new Uint8Array(3), shape: [1, 3] };
    expectThrows(call({ keep: m, ignore: m }), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /keyPaddingMask: expected \{ keep: mask \} or \{ ignore: mask \} \(one key\), received an object with keys 'keep', 'ignore'/ });
  });
  test('a wrong shape or type inside names the form', () => {
    expectThrows(call({ ignore: { data: new Uint8Array(4), shape: [1, 4] } }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /keyPaddingMask\.ignore: expected shape \[1, 3\], received \[1, 4\]/ });
    expectThrows(call({ keep: { data: new Float32Array(3), shape: [1, 3] } }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /keyPaddingMask\.keep\.data: expected a Uint8Array, received a Float32Array/ });
    expectThrows(call({ ignore: null }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /keyPaddingMask\.ignore/ });
  });
});
