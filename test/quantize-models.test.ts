// Weight-only quantization of models and layers: quantize('int8' | 'bf16') computes with the
// dequantized weights (checked against a float32 model holding them), costs little accuracy
// (held-out bits per byte of the trained fixture, relative error of layer outputs), keeps
// batched steps bit-equal to single ones, survives a save and load bit for bit, and refuses
// what it cannot do (training, a second format, files that mix formats) with precise errors.
import {
  AdamW,
  DecoderLayer,
  MultiHeadAttention,
  PerformerLM,
  readModel,
  readSafetensors,
  TransformerDecoder,
  TransformerEncoder,
  writeModel,
  writeSafetensors,
  type Tensor,
  type TensorToWrite,
} from '../lib';
import { expectThrows as expectError } from './helpers/errors';
import { fixtureCases, heldOutBitsPerByte, relativeError, weightsPath } from './helpers/performer-fixtures';
import { randn, Rng } from './helpers/reference';

const cases = fixtureCases();
const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBits = (a: Float32Array, b: Float32Array) => bytesOf(a).equals(bytesOf(b));
const formats = ['int8', 'bf16'] as const;

// An error of this class and code whose message contains `text`.
const CODES = { TypeError: 'ERR_INVALID_ARG_TYPE', RangeError: 'ERR_INVALID_ARG_VALUE' };
function expectThrows(fn: () => unknown, kind: typeof TypeError | typeof RangeError, text: string, code?: string): void {
  const name = kind === TypeError ? 'TypeError' : 'RangeError';
  expectError(fn, { name, code: code ?? CODES[name], message: new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) });
}

const LM_CONFIG = { num_tokens: 96, max_seq_len: 64, dim: 48, depth: 2, heads: 3, dim_head: 16, causal: true, ff_glu: true };

function tokens(seed: number, B: number, L: number, vocab: number): { data: Int32Array; shape: number[] } {
  const rng = new Rng(seed);
  return { data: Int32Array.from({ length: B * L }, () => Math.floor(rng.uniform() * vocab)), shape: [B, L] };
}

describe.each(formats)('PerformerLM.quantize(%s)', (format) => {
  test('parameters() are the dequantized weights, and the model computes with them', () => {
    const fp32 = PerformerLM.random(LM_CONFIG, { seed: 1 });
    const before = fp32.parameters();
    const lm = PerformerLM.random(LM_CONFIG, { seed: 1 });
    expect(lm.quantize(format)).toBe(lm);
    expect(lm.weightFormat).toBe(format);
    const after = lm.parameters();
    const stored = lm.toPerformerPytorch();
    for (const name of ['performer.net.layers.0.0.fn.to_q.weight', 'performer.net.layers.1.1.fn.fn.w2.weight', 'to_out.weight']) {
      const w = after[name].data;
      const [out, inF] = after[name].shape;
      expect(w).not.toEqual(before[name].data);
      if (format === 'int8') {
        const q = stored[name].data;
        const scales = stored[`${name}_scale`].data;
        for (let o = 0; o < out; o++) {
          let amax = 0;
          for (let i = 0; i < inF; i++) amax = Math.max(amax, Math.abs(before[name].data[o * inF + i]));
          expect(scales[o]).toBe(Math.fround(amax / 127));
          for (let i = 0; i < inF; i++) {
            expect(Number.isInteger(q[o * inF + i]) && Math.abs(q[o * inF + i]) <= 127).toBe(true);
            expect(w[o * inF + i]).toBe(Math.fround(q[o * inF + i] * scales[o]));
            expect(Math.abs(w[o * inF + i] - before[name].data[o * inF + i])).toBeLessThanOrEqual(scales[o] / 2 + 1e-12);
          }
        }
      } else {
        // bf16: the value rounded to 8 significant bits, nearest even.
        const bits = new Uint32Array(w.buffer, w.byteOffset, w.length);
        expect(bits.every((b) => (b & 0xffff) === 0)).toBe(true);
        for (let i = 0; i < w.length; i++) expect(Math.abs(w[i] - before[name].data[i])).toBeLessThanOrEqual(Math.abs(before[name].data[i]) * 2 ** -8);
      }
    }
    // Embeddings, norms and biases are untouched.
    for (const name of ['token_emb.weight', 'norm.weight', 'to_out.bias', 'performer.net.layers.0.1.fn.fn.w1.bias']) {
      expect(sameBits(after[name].data, before[name].data)).toBe(true);
    }
    // A float32 model holding the dequantized weights computes the same function.
    const reference = PerformerLM.fromPerformerPytorch(lm.toPerformerPytorch({ dequantize: true }), LM_CONFIG);
    expect(reference.weightFormat).toBe('float32');
    const x = tokens(2, 2, 20, LM_CONFIG.num_tokens);
    const got = lm.forwardSync(x).data;
    expect(relativeError(got, reference.forwardSync(x).data)).toBeLessThan(2e-6);
    expect(relativeError(got, fp32.forwardSync(x).data)).toBeGreaterThan(1e-5);
  });

  test('held-out bits per byte of the trained fixture within 1 % of float32', () => {
    const c = cases.lm_trained_small;
    const fp32 = heldOutBitsPerByte(PerformerLM.fromPerformerPytorch(weightsPath('lm_trained_small'), c.ctor as never));
    const quantized = heldOutBitsPerByte(PerformerLM.fromPerformerPytorch(weightsPath('lm_trained_small'), c.ctor as never).quantize(format));
    expect(Math.abs(fp32 - c.heldout_bits_per_byte!)).toBeLessThan(1e-4);
    expect(Math.abs(quantized - fp32) / fp32).toBeLessThan(0.01);
  });

  test('batched steps equal single steps bit for bit, and a step equals forward', () => {
    const lm = PerformerLM.random(LM_CONFIG, { seed: 3, numerics: 'exact' }).quantize(format);
    const V = LM_CONFIG.num_tokens;
    const sessions = 9;
    const batched = Array.from({ length: sessions }, () => lm.createStateSync());
    const single = Array.from({ length: sessions }, () => lm.createStateSync());
    const stream = tokens(4, sessions, 6, V);
    const fed: number[][] = [];
    for (let i = 0; i < sessions; i++) {
      const prompt = stream.data.subarray(i * 6, i * 6 + (i % 4));
      fed.push([...prompt]);
      if (prompt.length > 0) {
        lm.stepSync(prompt, batched[i]);
        lm.stepSync(prompt, single[i]);
      }
    }
    let last: Float32Array = new Float32Array(0);
    for (let round = 0; round < 3; round++) {
      const next = Int32Array.from({ length: sessions }, (_, i) => (i * 7 + round * 11) % V);
      const out = lm.stepBatchSync(batched, next);
      for (let i = 0; i < sessions; i++) {
        fed[i].push(next[i]);
        const alone = lm.stepSync(Int32Array.of(next[i]), single[i]);
        expect(sameBits(out.data.subarray(i * V, (i + 1) * V), alone)).toBe(true);
        if (i === sessions - 1) last = alone;
      }
    }
    // The last session's step logits are the last row of forward over what it was fed.
    const seq = Int32Array.from(fed[sessions - 1]);
    const full = lm.forwardSync({ data: seq, shape: [1, seq.length] }).data;
    expect(relativeError(last, full.subarray((seq.length - 1) * V))).toBeLessThan(1e-5);
  });

  test('saved with writeSafetensors and loaded back: the same format, bits and fingerprint', () => {
    const lm = PerformerLM.random(LM_CONFIG, { seed: 5 }).quantize(format);
    const file = readSafetensors(writeSafetensors(lm.toPerformerPytorch()));
    const name = 'performer.net.layers.0.0.fn.to_v.weight';
    expect(file.tensors[name].dtype).toBe(format === 'int8' ? 'I8' : 'BF16');
    expect(file.tensors['token_emb.weight'].dtype).toBe('F32');
    const back = PerformerLM.fromPerformerPytorch(file, LM_CONFIG);
    expect(back.weightFormat).toBe(format);
    const x = tokens(6, 1, 12, LM_CONFIG.num_tokens);
    expect(sameBits(back.forwardSync(x).data, lm.forwardSync(x).data)).toBe(true);
    // States move between the two.
    const state = lm.createStateSync();
    lm.stepSync(Int32Array.of(1, 2, 3), state);
    const moved = back.loadState(state.serialize());
    expect(sameBits(back.stepSync(Int32Array.of(4), moved), lm.stepSync(Int32Array.of(4), state))).toBe(true);
    // The file is smaller than the float32 one.
    const plain = writeSafetensors(PerformerLM.random(LM_CONFIG, { seed: 5 }).toPerformerPytorch());
    expect(writeSafetensors(lm.toPerformerPytorch()).byteLength).toBeLessThan(plain.byteLength * (format === 'int8' ? 0.55 : 0.7));
  });

  test('training, a second format and float32 states are refused; the same format again is a no-op', () => {
    const lm = PerformerLM.random(LM_CONFIG, { seed: 7 });
    const fp32State = lm.createStateSync();
    lm.stepSync(Int32Array.of(1), fp32State);
    const bytes = fp32State.serialize();
    lm.quantize(format);
    expect(lm.quantize(format)).toBe(lm);
    const other = format === 'int8' ? 'bf16' : 'int8';
    expectThrows(() => lm.quantize(other), RangeError, `PerformerLM.quantize: the weights are already ${format}; quantize the float32 model to ${other} instead`);
    expectThrows(() => lm.quantize('fp16' as never), RangeError, "PerformerLM.quantize format: expected 'int8' or 'bf16', received 'fp16'");
    const t = tokens(8, 1, 8, LM_CONFIG.num_tokens);
    expectThrows(() => lm.lossAndGradSync(t, t), RangeError, `PerformerLM.lossAndGradSync: the linear weights are quantized (${format}); fine-tune the float32 model, then quantize it`);
    expectThrows(() => new AdamW(lm).step(), RangeError, 'quantized');
    expectThrows(() => lm.loadState(bytes), RangeError, 'PerformerLM.loadState: state made by a different model');
  });
});

describe('PerformerLM quantized checkpoints', () => {
  const lm = () => PerformerLM.random(LM_CONFIG, { seed: 11 }).quantize('int8');

  test('a head tied to the embedding stays float32', () => {
    const config = { ...LM_CONFIG, tie_embed: true };
    const tied = PerformerLM.random(config, { seed: 12 });
    const emb = tied.parameters()['token_emb.weight'].data;
    tied.quantize('int8');
    expect(tied.weightFormat).toBe('int8');
    expect(sameBits(tied.parameters()['token_emb.weight'].data, emb)).toBe(true);
    const back = PerformerLM.fromPerformerPytorch(writeSafetensors(tied.toPerformerPytorch()), config);
    const x = tokens(13, 1, 9, config.num_tokens);
    expect(sameBits(back.forwardSync(x).data, tied.forwardSync(x).data)).toBe(true);
  });

  test('an int8 weight without its scales, values out of range and mixed formats are errors naming the tensor', () => {
    const name = 'performer.net.layers.1.0.fn.to_k.weight';
    const noScale = lm().toPerformerPytorch();
    delete noScale[`${name}_scale`];
    delete noScale[`${name.replace('performer.net.', 'performer.proj_updater.instance.')}_scale`];
    expectThrows(() => PerformerLM.fromPerformerPytorch(writeSafetensors(noScale), LM_CONFIG), RangeError, `missing ${name}_scale [48]`);
    const outOfRange = lm().toPerformerPytorch();
    (outOfRange[name].data as Float32Array)[3] = 0.5;
    expectThrows(() => PerformerLM.fromPerformerPytorch(outOfRange, LM_CONFIG), RangeError, `${name}: dtype I8 but value 0.5 at index 3 is not an integer from -128 to 127`);
    const negative = lm().toPerformerPytorch();
    (negative[`${name}_scale`].data as Float32Array)[2] = -1;
    expectThrows(() => PerformerLM.fromPerformerPytorch(negative, LM_CONFIG), RangeError, `${name}_scale: scales must be finite and >= 0, received -1 at index 2`);
    const mixed = lm().toPerformerPytorch();
    mixed[name] = lm().parameters()[name];
    delete mixed[`${name}_scale`];
    delete mixed[name.replace('performer.net.', 'performer.proj_updater.instance.')];
    delete mixed[`${name.replace('performer.net.', 'performer.proj_updater.instance.')}_scale`];
    expectThrows(() => PerformerLM.fromPerformerPytorch(mixed, LM_CONFIG), RangeError, 'the linear weights mix formats (int8 and float32)');
    const stray = PerformerLM.random(LM_CONFIG, { seed: 11 }).toPerformerPytorch();
    stray[`${name}_scale`] = { data: new Float32Array(48), shape: [48] };
    expectThrows(() => PerformerLM.fromPerformerPytorch(stray, LM_CONFIG), RangeError, `unexpected ${name}_scale`);
  });
});

describe('writeSafetensors dtypes', () => {
  test('BF16 rounds to nearest even, I8 takes integers; both read back exactly', () => {
    const values = Float32Array.of(1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, 65504.5);
    const file = readSafetensors(
      writeSafetensors({
        b: { data: values, shape: [5], dtype: 'BF16' },
        i: { data: Float32Array.of(-128, 0, 127), shape: [3], dtype: 'I8' },
        f: { data: Float32Array.of(0.1), shape: [1] },
      }),
    );
    expect(Array.from(file.tensors.b.data)).toEqual([1, 1, 1 + 4 * 2 ** -8, -2.5, 65536]);
    expect(file.tensors.b.dtype).toBe('BF16');
    expect(Array.from(file.tensors.i.data)).toEqual([-128, 0, 127]);
    expect(file.tensors.i.dtype).toBe('I8');
    expect(file.tensors.f.dtype).toBe('F32');
    expectThrows(() => writeSafetensors({ i: { data: Float32Array.of(128), shape: [1], dtype: 'I8' } }), RangeError, "tensors['i']: dtype I8 takes integers from -128 to 127, received 128 at index 0");
    // Infinities and NaN (payloads of bf16 NaNs included) stay as they are.
    const special = new Float32Array(new Uint32Array([0x7f800000, 0xff800000, 0x7f810000, 0xffc00000, 0x7fc00001]).buffer);
    const back = readSafetensors(writeSafetensors({ s: { data: special, shape: [5], dtype: 'BF16' } })).tensors.s.data;
    expect(Array.from(new Uint32Array(back.buffer, back.byteOffset, 5))).toEqual([0x7f800000, 0xff800000, 0x7f810000, 0xffc00000, 0x7fc00000]);
    expectThrows(() => writeSafetensors({ h: { data: Float32Array.of(1), shape: [1], dtype: 'U8' as never } }), TypeError, "tensors['h'].dtype: expected 'F32', 'BF16' or 'I8' (or 'F16' / 'F64', written as F32), received the string \"U8\"");
  });
});

describe.each(formats)('layers quantize(%s)', (format) => {
  const D = 32;
  const seq = (seed: number, B: number, L: number): Tensor => ({ data: randn(new Rng(seed), B * L * D, 1), shape: [B, L, D] });

  test('TransformerDecoder: the dequantized weights computed, output error small, saved and loaded bit for bit', () => {
    const make = () => new TransformerDecoder({ modelDim: D, numHeads: 4, numLayers: 2, ffDim: 64, seed: 21 });
    const fp32 = make();
    const model = make().quantize(format);
    expect(model.weightFormat).toBe(format);
    expect(fp32.weightFormat).toBe('float32');
    const x = seq(22, 2, 10);
    const memory = seq(23, 2, 7);
    const got = model.forwardSync(x, { memory }).data;
    const reference = make();
    reference.loadParameters(model.parameters());
    expect(relativeError(got, reference.forwardSync(x, { memory }).data)).toBeLessThan(2e-6);
    // The accuracy cost on a layer's outputs.
    const err = relativeError(got, fp32.forwardSync(x, { memory }).data);
    expect(err).toBeGreaterThan(1e-5);
    expect(err).toBeLessThan(format === 'int8' ? 2e-2 : 1e-2);
    const back = readModel(writeModel(model)) as TransformerDecoder;
    expect(back.weightFormat).toBe(format);
    expect(sameBits(back.forwardSync(x, { memory }).data, got)).toBe(true);
    // Batched decoding steps stay bit-equal to single ones.
    const states = Array.from({ length: 5 }, () => model.createStateSync(1, { memory: seq(24, 1, 7) }));
    const alone = Array.from({ length: 5 }, () => model.createStateSync(1, { memory: seq(24, 1, 7) }));
    const step = seq(25, 5, 1);
    const out = model.stepBatchSync(states, step);
    for (let i = 0; i < 5; i++) {
      const one = model.stepSync({ data: step.data.subarray(i * D, (i + 1) * D), shape: [1, 1, D] }, alone[i]);
      expect(sameBits(out.data.subarray(i * D, (i + 1) * D), one.data)).toBe(true);
    }
    expectThrows(() => model.backwardSync(x, x, { memory }), RangeError, `TransformerDecoder.backwardSync: the linear weights are quantized (${format})`);
  });

  test('MultiHeadAttention and TransformerEncoder: loadParameters keeps the format; the fused projections follow it', () => {
    const mha = new MultiHeadAttention({ modelDim: D, numHeads: 4, seed: 31 });
    const x = seq(32, 1, 6);
    mha.forwardSync(x); // builds the fused float32 projections first
    mha.quantize(format);
    const reference = new MultiHeadAttention({ modelDim: D, numHeads: 4, seed: 31 });
    reference.loadParameters(mha.parameters());
    expect(relativeError(mha.forwardSync(x).data, reference.forwardSync(x).data)).toBeLessThan(2e-6);
    const enc = new TransformerEncoder({ modelDim: D, numHeads: 2, numLayers: 1, ffDim: 48, seed: 33 });
    const fresh = new TransformerEncoder({ modelDim: D, numHeads: 2, numLayers: 1, ffDim: 48, seed: 34 }).parameters();
    enc.quantize(format);
    enc.loadParameters(fresh);
    expect(enc.weightFormat).toBe(format);
    const w = enc.parameters()['layers.0.ff1.weight'].data;
    expect(w).not.toEqual(fresh['layers.0.ff1.weight'].data);
    expect(relativeError(w, fresh['layers.0.ff1.weight'].data)).toBeLessThan(format === 'int8' ? 1e-2 : 5e-3);
    expectThrows(() => new DecoderLayer({ modelDim: D, numHeads: 2, ffDim: 8, seed: 1 }).quantize('int4' as never), RangeError, "DecoderLayer.quantize format: expected 'int8' or 'bf16', received 'int4'");
  });
});

test('a model file that mixes formats, or stores a norm as I8, is an error', () => {
  const model = new TransformerEncoder({ modelDim: 16, numHeads: 2, numLayers: 1, ffDim: 16, seed: 41 }).quantize('int8');
  const file = readSafetensors(writeModel(model));
  const tensors: Record<string, TensorToWrite> = { ...file.tensors };
  tensors['layers.0.ff2.weight'] = { ...tensors['layers.0.ff2.weight'], dtype: 'F32' };
  delete tensors['layers.0.ff2.weight_scale'];
  expectThrows(() => readModel(writeSafetensors(tensors as never, file.metadata)), RangeError, 'model: the linear weights mix formats (I8, F32); a model file keeps them in one');
  const norm = { ...file.tensors, 'layers.0.norm1.bias': { data: new Float32Array(16), shape: [16], dtype: 'I8' as const } };
  expectThrows(() => readModel(writeSafetensors(norm as never, file.metadata)), RangeError, 'model: layers.0.norm1.bias is stored as I8 but is not a linear layer');
});
