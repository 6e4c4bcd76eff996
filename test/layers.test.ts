/**
 * Layers against a plain double-precision reference built from their own parameters;
 * decoding steps against the full causal pass; parameters, features and states
 * saved and restored; errors.
 */
import {
  DecoderLayer,
  EncoderLayer,
  MultiHeadAttention,
  TransformerDecoder,
  TransformerEncoder,
  backendInfo,
  readModel,
  readSafetensors,
  setBackend,
  writeModel,
  writeSafetensors,
  type Tensor,
} from '../lib';
import { expectRejects, expectThrows } from './helpers/errors';
import { blockRef, layerNormRef, mhaRef, type RefBlockConfig } from './helpers/layer-reference';
import { randn, relFrobenius, Rng, type RefFeatureSpec } from './helpers/reference';

const featureSpec = (dh: number, m: number) => (projection: Float32Array): RefFeatureSpec => ({
  kernel: 'softmax',
  headDim: dh,
  numFeatures: m,
  projection,
  kernelEpsilon: 1e-3,
});

function seq(seed: number, B: number, L: number, D: number, std = 1): Tensor {
  return { data: randn(new Rng(seed), B * L * D, std), shape: [B, L, D] };
}

function padding(B: number, L: number, keep: number[]): Uint8Array {
  const m = new Uint8Array(B * L);
  for (let b = 0; b < B; b++) for (let j = 0; j < keep[b]; j++) m[b * L + j] = 1;
  return m;
}

// Rows [t0, t1) of every batch item of x [B, L, D].
function rows(x: Tensor, t0: number, t1: number): Tensor {
  const [B, L, D] = x.shape;
  const out = new Float32Array(B * (t1 - t0) * D);
  for (let b = 0; b < B; b++) out.set(x.data.subarray((b * L + t0) * D, (b * L + t1) * D), b * (t1 - t0) * D);
  return { data: out, shape: [B, t1 - t0, D] };
}

// Runs steps of the given chunk lengths and reassembles [B, L, D].
function decode(step: (x: Tensor) => Tensor, x: Tensor, chunks: number[]): Float32Array {
  const [B, L, D] = x.shape;
  const out = new Float32Array(B * L * D);
  let t = 0;
  for (const n of chunks) {
    const y = step(rows(x, t, t + n));
    for (let b = 0; b < B; b++) out.set(y.data.subarray(b * n * D, (b + 1) * n * D), (b * L + t) * D);
    t += n;
  }
  expect(t).toBe(L);
  return out;
}

describe('MultiHeadAttention', () => {
  const D = 24;
  const H = 3;
  const B = 2;

  test.each([
    ['softmax', false, true],
    ['softmax', true, false],
    ['favor', false, true],
    ['favor', true, true],
  ] as const)('self-attention (%s, causal %s, bias %s) equals the double reference', (attention, causal, bias) => {
    const L = 19;
    const mha = new MultiHeadAttention({ modelDim: D, numHeads: H, attention, causal, bias, featureMap: { numFeatures: 32 }, seed: 3 });
    const x = seq(1, B, L, D);
    const pad = causal ? null : padding(B, L, [L, 11]);
    const y = mha.forwardSync(x, pad ? { keyPaddingMask: { data: pad, shape: [B, L] } } : {});
    const p = mha.parameters();
    if (!bias) expect(Object.keys(p).some((k) => k.endsWith('bias'))).toBe(false);
    const ref = mhaRef(p, '', { modelDim: D, numHeads: H, headDim: 8, attention, causal, featureSpec: featureSpec(8, 32) }, x.data, B, L, null, L, pad);
    expect(y.shape).toEqual([B, L, D]);
    expect(relFrobenius(y.data, ref)).toBeLessThan(1e-5);
  });

  test('cross-attention with another key width, head width and lengths equals the reference', () => {
    const mha = new MultiHeadAttention({ modelDim: D, numHeads: 2, headDim: 5, keyDim: 7, attention: 'softmax' });
    const x = seq(2, B, 6, D);
    const memory = seq(3, B, 13, 7);
    const pad = padding(B, 13, [13, 4]);
    for (const attention of ['softmax', 'favor'] as const) {
      const y = mha.forwardSync(x, { memory, keyPaddingMask: { data: pad, shape: [B, 13] }, attention });
      const ref = mhaRef(mha.parameters(), '', { modelDim: D, numHeads: 2, headDim: 5, attention, causal: false, featureSpec: featureSpec(5, mha.featureMap.numFeatures) }, x.data, B, 6, memory.data, 13, pad);
      expect(relFrobenius(y.data, ref)).toBeLessThan(1e-5);
    }
  });

  test('the same weights under FAVOR+ approach softmax as m grows', () => {
    const x = seq(4, 1, 64, 32, 0.5);
    const errors = [16, 256].map((m) => {
      const mha = new MultiHeadAttention({ modelDim: 32, numHeads: 2, featureMap: { numFeatures: m } });
      const exact = mha.forwardSync(x, { attention: 'softmax' });
      return relFrobenius(mha.forwardSync(x).data, exact.data);
    });
    expect(errors[1]).toBeLessThan(errors[0] / 2);
  });

  test('decoding: prefill in chunks then steps equals the causal forward; async equals sync', async () => {
    const L = 41;
    const mha = new MultiHeadAttention({ modelDim: D, numHeads: H, causal: true, featureMap: { numFeatures: 48 } });
    const x = seq(5, B, L, D);
    const full = mha.forwardSync(x).data;
    for (const chunks of [[1, ...Array(40).fill(1)], [16, 9, ...Array(16).fill(1)], [41]]) {
      const state = mha.createStateSync(B);
      expect(relFrobenius(decode((t) => mha.stepSync(t, state), x, chunks), full)).toBeLessThan(1e-5);
      expect(state.position).toBe(L);
    }
    const state = mha.createStateSync(B);
    const a = mha.stepSync(rows(x, 0, 10), state);
    const s2 = mha.createStateSync(B);
    const b = await mha.step(rows(x, 0, 10), s2);
    expect(Buffer.from(b.data.buffer).equals(Buffer.from(a.data.buffer))).toBe(true);
    expect(Buffer.from(s2.serialize()).equals(state.serialize())).toBe(true);
  });

  test('state size does not grow with the context', () => {
    const mha = new MultiHeadAttention({ modelDim: D, numHeads: H, causal: true, featureMap: { numFeatures: 48 } });
    const state = mha.createStateSync(1);
    const bytes = state.byteLength;
    for (let t = 0; t < 50; t++) mha.stepSync(seq(t, 1, 1, D), state);
    expect(state.byteLength).toBe(bytes);
    expect(state.serialize().length).toBe(mha.createStateSync(1).serialize().length);
  });

  test('decoding needs causal FAVOR+ self-attention', async () => {
    const bidirectional = new MultiHeadAttention({ modelDim: 8, numHeads: 2 });
    expectThrows(() => bidirectional.createStateSync(1), {
      name: 'RangeError',
      code: 'ERR_INVALID_ARG_VALUE',
      message: /createStateSync: .*causal self-attention with FAVOR\+/,
    });
    // The Promise form rejects (never throws synchronously), as the decoders' createState.
    const pending = bidirectional.createState(1);
    expect(pending).toBeInstanceOf(Promise);
    await expect(pending).rejects.toMatchObject({ name: 'RangeError', message: expect.stringMatching(/createState: .*causal self-attention/) });
  });

  test('createState returns a Promise of the same state as createStateSync, as the decoders', async () => {
    const mha = new MultiHeadAttention({ modelDim: D, numHeads: H, causal: true, featureMap: { numFeatures: 48, seed: 3 } });
    const pending = mha.createState(B);
    expect(pending).toBeInstanceOf(Promise);
    const state = await pending;
    const sync = mha.createStateSync(B);
    expect(Buffer.from(state.serialize()).equals(Buffer.from(sync.serialize()))).toBe(true);
    const x = seq(2, B, 3, D);
    const a = await mha.step(x, state);
    const b = mha.stepSync(x, sync);
    expect(Buffer.from(a.data.buffer).equals(Buffer.from(b.data.buffer))).toBe(true);
  });
});

const blockCases: [string, 'encoder' | 'decoder', boolean, 'relu' | 'gelu', boolean][] = [
  ['encoder post-norm relu', 'encoder', false, 'relu', true],
  ['encoder pre-norm gelu', 'encoder', true, 'gelu', true],
  ['decoder post-norm relu', 'decoder', false, 'relu', true],
  ['decoder pre-norm gelu', 'decoder', true, 'gelu', true],
  ['decoder without cross-attention', 'decoder', false, 'gelu', false],
];

describe.each(blockCases)('%s', (_name, kind, normFirst, activation, crossAttention) => {
  const D = 16;
  const H = 2;
  const B = 2;
  const L = 13;
  const Lm = 9;
  const make = (attention: 'favor' | 'softmax') => {
    const o = { modelDim: D, numHeads: H, ffDim: 40, normFirst, activation, attention, featureMap: { numFeatures: 32 }, seed: 7 };
    return kind === 'encoder' ? new EncoderLayer(o) : new DecoderLayer({ ...o, crossAttention });
  };
  const refConfig = (attention: 'favor' | 'softmax'): RefBlockConfig => ({
    modelDim: D,
    numHeads: H,
    headDim: D / H,
    attention,
    causal: false,
    featureSpec: featureSpec(D / H, 32),
    ffDim: 40,
    activation,
    normFirst,
    layerNormEps: 1e-5,
    decoder: kind === 'decoder',
    crossAttention,
  });
  const x = seq(11, B, L, D);
  const memory = seq(12, B, Lm, D);
  const memPad = padding(B, Lm, [Lm, 5]);
  const keyPad = padding(B, L, [L, 8]);

  test.each(['softmax', 'favor'] as const)('forward (%s) equals the double reference, sync and async', async (attention) => {
    const layer = make(attention);
    const useCross = kind === 'decoder' && crossAttention;
    const options = {
      ...(kind === 'encoder' ? { keyPaddingMask: { data: keyPad, shape: [B, L] } } : {}),
      ...(useCross ? { memory, memoryKeyPaddingMask: { data: memPad, shape: [B, Lm] } } : {}),
    };
    const y = (layer as DecoderLayer).forwardSync(x, options);
    const ref = blockRef(layer.parameters(), '', refConfig(attention), x.data, B, L, {
      keyPadding: kind === 'encoder' ? keyPad : null,
      memory: memory.data,
      memoryLength: Lm,
      memoryPadding: memPad,
    });
    expect(relFrobenius(y.data, ref)).toBeLessThan(1e-5);
    const z = await (layer as DecoderLayer).forward(x, options);
    expect(Buffer.from(z.data.buffer).equals(Buffer.from(y.data.buffer))).toBe(true);
  });

  if (kind === 'decoder') {
    test('steps equal the causal forward; a serialized state resumes bit for bit', () => {
      const layer = make('favor') as DecoderLayer;
      const memOptions = crossAttention ? { memory, memoryKeyPaddingMask: { data: memPad, shape: [B, Lm] } } : {};
      const full = layer.forwardSync(x, memOptions).data;
      const state = layer.createStateSync(B, memOptions);
      const out = decode((t) => layer.stepSync(t, state), x, [5, 1, 1, 6]);
      expect(relFrobenius(out, full)).toBeLessThan(1e-5);
      // Park after 7 tokens, resume from bytes: same outputs as the live state.
      const live = layer.createStateSync(B, memOptions);
      layer.stepSync(rows(x, 0, 7), live);
      const parked = layer.loadState(live.serialize());
      expect(parked.position).toBe(7);
      const a = layer.stepSync(rows(x, 7, 8), live);
      const b = layer.stepSync(rows(x, 7, 8), parked);
      expect(Buffer.from(a.data.buffer).equals(Buffer.from(b.data.buffer))).toBe(true);
    });
  }
});

describe('stacks', () => {
  const D = 16;
  const B = 2;
  const L = 17;

  test('TransformerEncoder: layers differ, final norm, equals the reference', () => {
    const enc = new TransformerEncoder({ modelDim: D, numHeads: 4, numLayers: 3, finalNorm: true, attention: 'softmax', ffDim: 24 });
    const p = enc.parameters();
    expect(Object.keys(p)).toContain('layers.2.selfAttn.q.weight');
    expect(Object.keys(p)).toContain('norm.weight');
    expect(relFrobenius(p['layers.0.ff1.weight'].data, p['layers.1.ff1.weight'].data)).toBeGreaterThan(0.5);
    const x = seq(21, B, L, D);
    const cfg: RefBlockConfig = { modelDim: D, numHeads: 4, headDim: 4, attention: 'softmax', causal: false, ffDim: 24, activation: 'relu', normFirst: false, layerNormEps: 1e-5, decoder: false, crossAttention: false };
    let ref: ArrayLike<number> = x.data;
    for (let i = 0; i < 3; i++) ref = blockRef(p, `layers.${i}.`, cfg, ref, B, L);
    ref = layerNormRef(ref, B * L, D, p['norm.weight'], p['norm.bias'], 1e-5);
    expect(relFrobenius(enc.forwardSync(x).data, ref)).toBeLessThan(1e-5);
  });

  test('TransformerDecoder: prompt in chunks, then token by token, equals the causal forward', async () => {
    const dec = new TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 2, finalNorm: true, normFirst: true, featureMap: { numFeatures: 40 } });
    const x = seq(22, B, L, D);
    const memory = seq(23, B, 6, D);
    const full = dec.forwardSync(x, { memory }).data;
    const state = await dec.createState(B, { memory });
    const out = new Float32Array(B * L * D);
    const chunks = [8, 4, 1, 1, 1, 1, 1];
    let t = 0;
    for (const n of chunks) {
      const y = await dec.step(rows(x, t, t + n), state);
      for (let b = 0; b < B; b++) out.set(y.data.subarray(b * n * D, (b + 1) * n * D), (b * L + t) * D);
      t += n;
    }
    expect(relFrobenius(out, full)).toBeLessThan(1e-5);
    expect(state.position).toBe(L);
  });
});

describe('cross-attention decoding: the memory absorbed once into FAVOR+ states', () => {
  const D = 16;
  const B = 2;
  const L = 9;
  const x = seq(71, B, L, D);

  // 600 memory rows: absorbed in two key ranges per head, then merged. Item 0 attends
  // 400 of them, item 1 none (its cross-attention rows are zero).
  test.each([
    ['softmax features, epsilon 0.01', { kernel: 'softmax' }, 0.01],
    ['relu features', { kernel: 'relu' }, 0],
    ['softmax-hyperbolic features', { kernel: 'softmax-hyperbolic' }, 0],
  ] as const)('%s: steps equal the causal forward with the memory, sync and async states alike', async (_name, features, epsilon) => {
    const dec = new TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 2, normFirst: true, epsilon, featureMap: { numFeatures: 24, ...features }, seed: 3 });
    const Lm = 600;
    const memory = seq(72, B, Lm, D);
    const memOptions = { memory, memoryKeyPaddingMask: { data: padding(B, Lm, [400, 0]), shape: [B, Lm] } };
    const full = dec.forwardSync(x, memOptions).data;
    const state = dec.createStateSync(B, memOptions);
    const out = decode((t) => dec.stepSync(t, state), x, [4, 1, 1, 3]);
    expect(relFrobenius(out, full)).toBeLessThan(1e-5);
    // Without the memory's padding the outputs differ: the mask is in the absorbed state.
    const unmasked = dec.createStateSync(B, { memory });
    expect(relFrobenius(decode((t) => dec.stepSync(t, unmasked), x, [L]), full)).toBeGreaterThan(1e-3);
    const fromAsync = await dec.createState(B, memOptions);
    expect(Buffer.from(fromAsync.serialize()).equals(Buffer.from(dec.createStateSync(B, memOptions).serialize()))).toBe(true);
  });

  test('the state size depends on the model only, not on the memory length', () => {
    const options = { modelDim: D, numHeads: 2, numLayers: 2, featureMap: { numFeatures: 24 } };
    const dec = new TransformerDecoder(options);
    const short = dec.createStateSync(B, { memory: seq(73, B, 3, D) });
    const long = dec.createStateSync(B, { memory: seq(74, B, 2000, D) });
    expect(long.byteLength).toBe(short.byteLength);
    expect(long.serialize().length).toBe(short.serialize().length);
    // One FAVOR+ state per head for the memory, as large as the self-attention's.
    const selfOnly = new TransformerDecoder({ ...options, crossAttention: false }).createStateSync(B);
    expect(long.byteLength).toBe(2 * selfOnly.byteLength);
    const bytes = Buffer.from(long.serialize());
    const header = JSON.parse(bytes.toString('utf8', 12, 12 + bytes.readUInt32LE(8))) as { arrays: { name: string }[] };
    expect(header.arrays.map((a) => a.name)).toEqual(['layers.0.selfAttn.state', 'layers.0.crossAttn.memoryState', 'layers.1.selfAttn.state', 'layers.1.crossAttn.memoryState']);
    // A parked long-memory state resumes bit for bit.
    dec.stepSync(rows(x, 0, 2), long);
    const parked = dec.loadState(long.serialize());
    expect(Buffer.from(dec.stepSync(rows(x, 2, 3), parked).data.buffer).equals(Buffer.from(dec.stepSync(rows(x, 2, 3), long).data.buffer))).toBe(true);
  });

  test('features whose parameters are estimated per call (softmax-opt, softmax-dense) cannot decode: createState says so', () => {
    for (const kernel of ['softmax-opt', 'softmax-dense'] as const) {
      const dec = new DecoderLayer({ modelDim: D, numHeads: 2, featureMap: { kernel, numFeatures: 8 } });
      expectThrows(() => dec.createStateSync(B, { memory: seq(75, B, 4, D) }), {
        name: 'RangeError',
        code: 'ERR_INVALID_ARG_VALUE',
        message: new RegExp(`DecoderLayer\\.createStateSync: token-by-token decoding needs features fixed across calls; '${kernel}'`),
      });
    }
  });
});

test('a wide feed-forward part runs in row chunks (64 rows of 65536) and equals the reference', () => {
  const layer = new EncoderLayer({ modelDim: 4, numHeads: 1, ffDim: 65536, attention: 'softmax' });
  const x = seq(61, 1, 130, 4);
  const cfg: RefBlockConfig = { modelDim: 4, numHeads: 1, headDim: 4, attention: 'softmax', causal: false, ffDim: 65536, activation: 'relu', normFirst: false, layerNormEps: 1e-5, decoder: false, crossAttention: false };
  expect(relFrobenius(layer.forwardSync(x).data, blockRef(layer.parameters(), '', cfg, x.data, 1, 130))).toBeLessThan(1e-5);
});

test('layer temporaries are kept between calls up to setBackend({ workspaceLimit })', () => {
  const before = backendInfo().workspace.limitBytes;
  try {
    const enc = new EncoderLayer({ modelDim: 16, numHeads: 2 });
    enc.forwardSync(seq(62, 1, 33, 16));
    expect(backendInfo().workspace.bytes).toBeGreaterThan(0);
    expect(setBackend({ workspaceLimit: 0 }).workspace).toEqual({ bytes: 0, limitBytes: 0 });
    enc.forwardSync(seq(62, 1, 33, 16));
    expect(backendInfo().workspace.bytes).toBe(0);
    expectThrows(() => setBackend({ workspaceLimit: -1 }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /workspaceLimit/ });
  } finally {
    setBackend({ workspaceLimit: before });
  }
});

describe('parameters, features and states', () => {
  const D = 16;
  const make = (seed = 0) => new TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 2, seed, featureMap: { numFeatures: 24 } });
  const x = seq(31, 1, 9, D);
  const memory = seq(32, 1, 5, D);

  test('a model loading another one\'s parameters (features included) computes the same bits', () => {
    const a = make(1);
    const b = make(2);
    expect(relFrobenius(b.forwardSync(x, { memory }).data, a.forwardSync(x, { memory }).data)).toBeGreaterThan(1e-2);
    b.loadParameters(a.parameters());
    expect(Buffer.from(b.forwardSync(x, { memory }).data.buffer).equals(Buffer.from(a.forwardSync(x, { memory }).data.buffer))).toBe(true);
  });

  test('redrawFeatures changes FAVOR+ outputs only, and invalidates states', () => {
    const m = make();
    const favor = m.forwardSync(x, { memory }).data;
    const exact = m.forwardSync(x, { memory, attention: 'softmax' }).data;
    const state = m.createStateSync(1, { memory });
    const bytes = state.serialize();
    m.redrawFeatures(99);
    expect(relFrobenius(m.forwardSync(x, { memory }).data, favor)).toBeGreaterThan(1e-3);
    expect(Buffer.from(m.forwardSync(x, { memory, attention: 'softmax' }).data.buffer).equals(Buffer.from(exact.buffer))).toBe(true);
    expectThrows(() => m.stepSync(rows(x, 0, 1), state), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /different model/ });
    expectThrows(() => m.loadState(bytes), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /different model/ });
  });

  test('missing, extra and mis-shaped tensors are named; nothing changes on error', () => {
    const m = make();
    const before = m.forwardSync(x, { memory }).data;
    const p = m.parameters();
    const { ['layers.1.ff2.bias']: _dropped, ...missing } = p;
    expectThrows(() => m.loadParameters({ ...missing, 'layers.0.extra': p['norm.weight'] ?? p['layers.0.norm1.weight'] }), {
      name: 'RangeError',
      code: 'ERR_INVALID_ARG_VALUE',
      message: /missing layers\.1\.ff2\.bias; unexpected layers\.0\.extra/,
    });
    expectThrows(() => m.loadParameters({ ...p, 'layers.0.selfAttn.q.weight': { data: new Float32Array(16 * 15), shape: [15, 16] } }), {
      name: 'RangeError',
      code: 'ERR_OUT_OF_RANGE',
      message: /layers\.0\.selfAttn\.q\.weight: expected shape \[16, 16\], received \[15, 16\]/,
    });
    const nan = Float32Array.from(p['layers.0.ff1.bias'].data);
    nan[3] = NaN;
    expectThrows(() => m.loadParameters({ ...p, 'layers.0.ff1.bias': nan }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /ff1\.bias: values must be finite, received NaN at index 3/ });
    expect(Buffer.from(m.forwardSync(x, { memory }).data.buffer).equals(Buffer.from(before.buffer))).toBe(true);
    // Non-strict: extra names ignored, features kept when absent.
    const noFeatures = Object.fromEntries(Object.entries(p).filter(([k]) => !k.endsWith('features.projection')));
    m.loadParameters({ ...noFeatures, extra: p['layers.0.ff1.bias'] }, { strict: false });
    expect(Buffer.from(m.forwardSync(x, { memory }).data.buffer).equals(Buffer.from(before.buffer))).toBe(true);
    // Strict but for the features: a checkpoint without them loads, an unknown name does not.
    const missingFeatures = /missing layers\.0\.selfAttn\.features\.projection, .* \(FAVOR\+ features are not in checkpoints from PyTorch or BERT: pass \{ keepFeatures: true \}/;
    expectThrows(() => m.loadParameters(noFeatures), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: missingFeatures });
    expectThrows(() => m.loadParameters({ ...noFeatures, 'layers.0.ff1.bais': p['layers.0.ff1.bias'] }, { keepFeatures: true }), {
      name: 'RangeError',
      code: 'ERR_INVALID_ARG_VALUE',
      message: /: unexpected layers\.0\.ff1\.bais$/,
    });
    const { ['layers.1.ff2.weight']: _ff2, ...noFf2 } = noFeatures;
    expectThrows(() => m.loadParameters(noFf2, { keepFeatures: true }), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /: missing layers\.1\.ff2\.weight$/ });
    m.loadParameters(noFeatures, { keepFeatures: true });
    expect(Buffer.from(m.forwardSync(x, { memory }).data.buffer).equals(Buffer.from(before.buffer))).toBe(true);
    // keepFeatures: false makes strict: false still require the projections.
    expectThrows(() => m.loadParameters(noFeatures, { strict: false, keepFeatures: false }), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: missingFeatures });
    expectThrows(() => m.loadParameters(p, { keepFeatures: 'yes' as never }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /options\.keepFeatures: expected a boolean/ });
  });

  test('corrupt, truncated, foreign and future-version state buffers are rejected clearly', () => {
    const m = make();
    const state = m.createStateSync(1, { memory });
    m.stepSync(rows(x, 0, 3), state);
    const bytes = state.serialize();
    const flipped = Buffer.from(bytes);
    flipped[bytes.length >> 1] ^= 1;
    const reject = (b: Uint8Array, message: RegExp) => expectThrows(() => m.loadState(b), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message });
    reject(flipped, /checksum mismatch/);
    reject(bytes.subarray(0, 100), /checksum|past the end|no PAST header/);
    reject(Buffer.from('hello world, not a state'), /no PAST header/);
    const future = Buffer.from(bytes);
    future.writeUInt16LE(2, 4);
    reject(future, /version 2; this library reads version 1/);
    reject(make(5).createStateSync(1, { memory }).serialize(), /different model/);
    expectThrows(() => m.loadState('abc' as unknown as Uint8Array), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /Buffer or Uint8Array/ });
    const restored = m.loadState(bytes);
    expect(restored.position).toBe(3);
    expect(Buffer.from(restored.serialize()).equals(bytes)).toBe(true);
  });

  test('a state in use by an async step cannot be stepped or serialized', async () => {
    const m = make();
    const state = m.createStateSync(1, { memory });
    const pending = m.step(rows(x, 0, 4), state);
    expectThrows(() => m.stepSync(rows(x, 4, 5), state), { name: 'Error', code: 'ERR_INVALID_STATE', message: /async step is using it/ });
    expectThrows(() => state.serialize(), { name: 'Error', code: 'ERR_INVALID_STATE', message: /async step/ });
    await pending;
    expect(state.position).toBe(4);
  });
});

describe('errors', () => {
  const enc = new EncoderLayer({ modelDim: 8, numHeads: 2 });
  const dec = new DecoderLayer({ modelDim: 8, numHeads: 2 });
  const x = seq(41, 1, 5, 8);

  test('bad options and shapes', () => {
    expectThrows(() => new EncoderLayer({ modelDim: 8, numHeads: 3 }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /numHeads: 3 does not divide modelDim 8/ });
    expectThrows(() => new EncoderLayer({ modelDim: 8, numHeads: 2, activaton: 'gelu' } as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /unknown option 'activaton'/ });
    expectThrows(() => new TransformerEncoder({ modelDim: 8, numHeads: 2 } as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /numLayers: required/ });
    expectThrows(() => enc.forwardSync(seq(1, 1, 5, 7)), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /expected shape \[1, 5, 8\] \(\[batch, seq, modelDim\]\), received \[1, 5, 7\]/ });
    expectThrows(() => enc.forwardSync({ data: new Float32Array(40), shape: [5, 8] }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /rank-3/ });
    expectThrows(() => enc.forwardSync(x, { keyPaddingMask: { data: new Uint8Array(4), shape: [1, 4] } }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /keyPaddingMask: expected shape \[1, 5\]/ });
    expectThrows(() => enc.forwardSync(x, { attention: 'linear' as never }), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /attention/ });
    expectThrows(() => enc.forwardSync(x, { signal: new AbortController().signal } as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /unknown option 'signal'/ });
    expectThrows(() => dec.forwardSync(x), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /memory: required by the cross-attention/ });
    expectThrows(() => new DecoderLayer({ modelDim: 8, numHeads: 2, attention: 'softmax' }).createStateSync(1, { memory: x }), {
      name: 'RangeError',
      code: 'ERR_INVALID_ARG_VALUE',
      message: /decoding runs FAVOR\+ attention/,
    });
  });

  test('non-finite inputs are named', async () => {
    const bad = Float32Array.from(x.data);
    bad[17] = Infinity;
    expectThrows(() => enc.forwardSync({ data: bad, shape: [1, 5, 8] }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /EncoderLayer\.forwardSync x: infinity at \[0, 2, 1\] \(flat index 17\)/ });
    await expectRejects(enc.forward({ data: bad, shape: [1, 5, 8] }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /infinity at \[0, 2, 1\] \(flat index 17\)/ });
  });

  test('a finite input that overflows inside a layer is named by the layer it overflows in', () => {
    const stack = new TransformerEncoder({ modelDim: 8, numHeads: 2, numLayers: 2 });
    const huge = { data: new Float32Array(5 * 8).fill(1e19), shape: [1, 5, 8] };
    expectThrows(() => stack.forwardSync(huge), {
      name: 'RangeError',
      code: 'ERR_OUT_OF_RANGE',
      message: /^layers\.0\.selfAttn \(query, key and value here are the layer's projections of its input\): query: values near .* are too large/,
    });
  });

  test('abort: an aborted signal rejects with an AbortError', async () => {
    const big = new TransformerEncoder({ modelDim: 64, numHeads: 4, numLayers: 4 });
    const controller = new AbortController();
    const p = big.forward(seq(3, 1, 2048, 64), { signal: controller.signal });
    const reason = new Error('client left');
    controller.abort(reason);
    const error = await p.then(() => null, (e: unknown) => e as { name: string; code: string; cause: unknown });
    expect(error).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(error!.cause).toBe(reason);
  });
});

describe('model files', () => {
  const x = seq(51, 2, 7, 16);
  const memory = seq(52, 2, 4, 16);
  const models: [string, () => { forwardSync(x: Tensor, o?: object): Tensor }, object][] = [
    ['MultiHeadAttention', () => new MultiHeadAttention({ modelDim: 16, numHeads: 2, causal: true, featureMap: { numFeatures: 24 }, seed: 4 }), {}],
    ['EncoderLayer', () => new EncoderLayer({ modelDim: 16, numHeads: 4, activation: 'gelu', normFirst: true, layerNormEps: 1e-6, seed: 5 }), {}],
    ['DecoderLayer', () => new DecoderLayer({ modelDim: 16, numHeads: 2, ffDim: 20, bias: false, seed: 6 }), { memory }],
    ['TransformerEncoder', () => new TransformerEncoder({ modelDim: 16, numHeads: 2, numLayers: 3, finalNorm: true, seed: 7 }), {}],
    ['TransformerDecoder', () => new TransformerDecoder({ modelDim: 16, numHeads: 2, numLayers: 2, crossAttention: false, seed: 8 }), {}],
  ];

  test.each(models)('%s: writeModel / readModel rebuild the same class, options and bits', (name, make, options) => {
    const model = make();
    (model as unknown as { redrawFeatures(s: number): void }).redrawFeatures(77); // features differ from the seeded ones
    const bytes = writeModel(model as never, { note: 'kept' });
    const copy = readModel(bytes);
    expect(copy.constructor.name).toBe(name);
    expect(readSafetensors(bytes).metadata.note).toBe('kept');
    for (const attention of ['favor', 'softmax']) {
      const a = model.forwardSync(x, { ...options, attention });
      const b = (copy as unknown as typeof model).forwardSync(x, { ...options, attention });
      expect(Buffer.from(b.data.buffer).equals(Buffer.from(a.data.buffer))).toBe(true);
    }
  });

  test('a file without model metadata, of another format or class is rejected clearly', () => {
    const params = new EncoderLayer({ modelDim: 8, numHeads: 2 }).parameters();
    const reject = (metadata: Record<string, string>, message: RegExp) =>
      expectThrows(() => readModel(writeSafetensors(params, metadata)), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message });
    reject({}, /no 'performer-attention' metadata/);
    reject({ 'performer-attention': '{' }, /not JSON/);
    reject({ 'performer-attention': JSON.stringify({ format: 2, class: 'EncoderLayer', options: {} }) }, /model format 2; this library reads format 1/);
    reject({ 'performer-attention': JSON.stringify({ format: 1, class: 'toString', options: {} }) }, /unknown model class "toString"/);
    expectThrows(() => writeModel({} as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /expected a layer/ });
  });
});

test('a state stops fitting a stack when one of its layers changes through stack.layers', () => {
  const dec = new TransformerDecoder({ modelDim: 8, numHeads: 2, numLayers: 2, crossAttention: false, featureMap: { numFeatures: 8 } });
  const state = dec.createStateSync(1);
  dec.layers[1].redrawFeatures(5);
  expectThrows(() => dec.stepSync(seq(71, 1, 1, 8), state), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /different model/ });
});
