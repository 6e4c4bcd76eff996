// Name mappings from PyTorch and Hugging Face BERT checkpoints to the canonical layer names,
// on synthetic state dicts (the PyTorch fixtures are checked in torch-parity.test.ts).
import { fromBert, fromPyTorch, toPyTorch, type Tensor } from '../lib';
import { expectThrows } from './helpers/errors';

let counter = 0;
/** A tensor whose elements are distinct across the test (so that mix-ups show). */
function t(...shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = ++counter;
  return { data, shape };
}

const shapes = (tensors: Record<string, Tensor>) =>
  Object.fromEntries(Object.entries(tensors).map(([name, x]) => [name, [...x.shape]]).sort(([a], [b]) => (a < b ? -1 : 1)));

const E = 4;
function torchAttention(base: string): Record<string, Tensor> {
  return {
    [`${base}in_proj_weight`]: t(3 * E, E),
    [`${base}in_proj_bias`]: t(3 * E),
    [`${base}out_proj.weight`]: t(E, E),
    [`${base}out_proj.bias`]: t(E),
  };
}
function torchEncoderLayer(base: string, F = 6): Record<string, Tensor> {
  return {
    ...torchAttention(`${base}self_attn.`),
    [`${base}linear1.weight`]: t(F, E),
    [`${base}linear1.bias`]: t(F),
    [`${base}linear2.weight`]: t(E, F),
    [`${base}linear2.bias`]: t(E),
    [`${base}norm1.weight`]: t(E),
    [`${base}norm1.bias`]: t(E),
    [`${base}norm2.weight`]: t(E),
    [`${base}norm2.bias`]: t(E),
  };
}
function torchDecoderLayer(base: string): Record<string, Tensor> {
  return {
    ...torchEncoderLayer(base),
    ...torchAttention(`${base}multihead_attn.`),
    [`${base}norm3.weight`]: t(E),
    [`${base}norm3.bias`]: t(E),
  };
}

const invalid = (message: RegExp) => ({ name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message }) as const;

describe('fromPyTorch', () => {
  test('nn.MultiheadAttention: packed in_proj split in rows into q, k, v (views, no copies)', () => {
    const sd = torchAttention('');
    const out = fromPyTorch(sd);
    expect(shapes(out)).toEqual({
      'k.bias': [E], 'k.weight': [E, E], 'out.bias': [E], 'out.weight': [E, E],
      'q.bias': [E], 'q.weight': [E, E], 'v.bias': [E], 'v.weight': [E, E],
    });
    const w = sd.in_proj_weight.data;
    const b = sd.in_proj_bias.data;
    ['q', 'k', 'v'].forEach((p, i) => {
      expect([...out[`${p}.weight`].data]).toEqual([...w.slice(i * E * E, (i + 1) * E * E)]);
      expect([...out[`${p}.bias`].data]).toEqual([...b.slice(i * E, (i + 1) * E)]);
      expect(out[`${p}.weight`].data.buffer).toBe(w.buffer);
    });
    expect(out['out.weight'].data).toBe(sd['out_proj.weight'].data);
  });

  test('kdim != embed_dim: q/k/v_proj_weight and a packed in_proj_bias', () => {
    const K = 3;
    const sd = {
      q_proj_weight: t(E, E), k_proj_weight: t(E, K), v_proj_weight: t(E, K),
      in_proj_bias: t(3 * E), 'out_proj.weight': t(E, E), 'out_proj.bias': t(E),
    };
    const out = fromPyTorch(sd);
    expect(shapes(out)).toEqual({
      'k.bias': [E], 'k.weight': [E, K], 'out.bias': [E], 'out.weight': [E, E],
      'q.bias': [E], 'q.weight': [E, E], 'v.bias': [E], 'v.weight': [E, K],
    });
    expect(out['k.weight'].data).toBe(sd.k_proj_weight.data);
    const back = toPyTorch(out);
    expect(shapes(back)).toEqual(shapes(sd));
    expect(back.in_proj_bias.data).toEqual(sd.in_proj_bias.data);
  });

  test('an encoder layer, a decoder layer and stacks with a final norm', () => {
    const enc = fromPyTorch(torchEncoderLayer(''));
    expect(Object.keys(enc).sort()).toEqual(
      [
        ...['q', 'k', 'v', 'out'].flatMap((p) => [`selfAttn.${p}.weight`, `selfAttn.${p}.bias`]),
        'ff1.weight', 'ff1.bias', 'ff2.weight', 'ff2.bias', 'norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias',
      ].sort(),
    );
    const dec = fromPyTorch({ ...torchDecoderLayer('layers.0.'), ...torchDecoderLayer('layers.1.'), 'norm.weight': t(E), 'norm.bias': t(E) });
    expect(Object.keys(dec).length).toBe(2 * 26 + 2);
    expect(dec['layers.1.crossAttn.v.bias'].shape).toEqual([E]);
    expect(dec['layers.0.norm3.weight'].shape).toEqual([E]);
    expect(dec['layers.1.ff1.weight'].shape).toEqual([6, E]);
    expect(dec['norm.bias'].shape).toEqual([E]);
  });

  test('a prefix is stripped (with or without its dot) and names outside it are ignored', () => {
    const sd = {
      ...torchEncoderLayer('encoder.layers.0.'), 'encoder.norm.weight': t(E), 'encoder.norm.bias': t(E),
      ...torchDecoderLayer('decoder.layers.0.'), 'generator.weight': t(2, E),
    };
    const a = fromPyTorch(sd, { prefix: 'encoder.' });
    expect(Object.keys(a).every((n) => n.startsWith('layers.0.') || n.startsWith('norm.'))).toBe(true);
    expect(Object.keys(a).length).toBe(16 + 2);
    expect(shapes(fromPyTorch(sd, { prefix: 'encoder' }))).toEqual(shapes(a));
    expect(Object.keys(fromPyTorch(sd, { prefix: 'decoder.' })).length).toBe(26);
  });

  test('unknown names inside the prefix: RangeError listing them all', () => {
    const sd = { ...torchAttention('self_attn.'), 'self_attn.bias_k': t(1, 1, E), 'self_attn.bias_v': t(1, 1, E), 'extra.weight': t(E), 'other.decoder.x': t(1) };
    expectThrows(() => fromPyTorch(sd), invalid(/4 names are not part of nn.MultiheadAttention \/ nn.Transformer\* modules: 'self_attn.bias_k', 'self_attn.bias_v', 'extra.weight', 'other.decoder.x'$/));
    expectThrows(() => fromPyTorch({ 'enc.layers.x.linear1.weight': t(E, E) }, { prefix: 'enc.' }), invalid(/1 name under 'enc.' is not part of .*'enc.layers.x.linear1.weight'/));
  });

  test('two names for one parameter, packed tensors of bad shapes, values that are not tensors', () => {
    expectThrows(() => fromPyTorch({ ...torchAttention(''), q_proj_weight: t(E, E) }), invalid(/'(q_proj_weight|in_proj_weight)' and '(in_proj_weight|q_proj_weight)' both give 'q.weight'/));
    expectThrows(() => fromPyTorch({ in_proj_weight: t(10, E) }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /tensors\['in_proj_weight'\]: expected a first dimension that is a multiple of 3 \(q, k, v\), received shape \[10, 4\]/ });
    expectThrows(() => fromPyTorch({ in_proj_weight: t(3 * E) }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /tensors\['in_proj_weight'\]: expected a rank-2 tensor \[3E, E\], received shape \[12\]/ });
    expectThrows(() => fromPyTorch({ 'linear1.weight': new Float32Array(4) as never }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /tensors\['linear1.weight'\]: expected an object \{ data: Float32Array, shape: number\[\] \}/ });
    expectThrows(() => fromPyTorch([] as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /tensors: expected an object of tensors by name, received an Array/ });
    expectThrows(() => fromPyTorch({}, { prefix: 3 } as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /options.prefix: expected a string, received the number 3/ });
    expectThrows(() => fromPyTorch({}, { prefx: 'a' } as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /unknown option 'prefx'/ });
  });
});

describe('toPyTorch', () => {
  test('inverts fromPyTorch, with a prefix; features.projection is left out', () => {
    const sd: Record<string, Tensor> = { ...torchDecoderLayer('decoder.layers.0.'), ...torchDecoderLayer('decoder.layers.1.'), 'decoder.norm.weight': t(E), 'decoder.norm.bias': t(E) };
    const canonical = fromPyTorch(sd, { prefix: 'decoder.' });
    canonical['layers.0.selfAttn.features.projection'] = t(8, 2);
    const back = toPyTorch(canonical, { prefix: 'decoder.' });
    expect(shapes(back)).toEqual(shapes(sd));
    for (const [name, x] of Object.entries(back)) expect(x.data).toEqual(sd[name].data);
  });

  test('q/k/v of other shapes (no bias, head width != modelDim / H) stay separate', () => {
    const out = toPyTorch({ 'q.weight': t(6, E), 'k.weight': t(6, E), 'v.weight': t(6, E), 'out.weight': t(E, 6) });
    expect(shapes(out)).toEqual({ k_proj_weight: [6, E], 'out_proj.weight': [E, 6], q_proj_weight: [6, E], v_proj_weight: [6, E] });
  });

  test('names that are not canonical: RangeError listing them', () => {
    expectThrows(() => toPyTorch({ 'selfAttn.x.weight': t(1), 'layers.0.q.weight': t(E, E), 'ff1.weight': t(E, E) }), invalid(/2 names are not part of the canonical layer names: 'selfAttn.x.weight', 'layers.0.q.weight'/));
  });
});

describe('fromBert', () => {
  function bertLayer(base: string, F = 8, old = false): Record<string, Tensor> {
    const [w, b] = old ? ['gamma', 'beta'] : ['weight', 'bias'];
    const out: Record<string, Tensor> = {};
    for (const p of ['query', 'key', 'value']) {
      out[`${base}attention.self.${p}.weight`] = t(E, E);
      out[`${base}attention.self.${p}.bias`] = t(E);
    }
    Object.assign(out, {
      [`${base}attention.output.dense.weight`]: t(E, E),
      [`${base}attention.output.dense.bias`]: t(E),
      [`${base}attention.output.LayerNorm.${w}`]: t(E),
      [`${base}attention.output.LayerNorm.${b}`]: t(E),
      [`${base}intermediate.dense.weight`]: t(F, E),
      [`${base}intermediate.dense.bias`]: t(F),
      [`${base}output.dense.weight`]: t(E, F),
      [`${base}output.dense.bias`]: t(E),
      [`${base}output.LayerNorm.${w}`]: t(E),
      [`${base}output.LayerNorm.${b}`]: t(E),
    });
    return out;
  }
  const outside = () => ({ 'bert.embeddings.word_embeddings.weight': t(5, E), 'bert.pooler.dense.weight': t(E, E), 'cls.predictions.bias': t(5) });

  test('maps a BERT encoder to TransformerEncoder names; embeddings and pooler are ignored', () => {
    const sd: Record<string, Tensor> = { ...bertLayer('bert.encoder.layer.0.'), ...bertLayer('bert.encoder.layer.1.'), ...outside() };
    const out = fromBert(sd);
    const layer = (i: number) => ({
      ...Object.fromEntries(['q', 'k', 'v', 'out'].flatMap((p) => [[`layers.${i}.selfAttn.${p}.weight`, [E, E]], [`layers.${i}.selfAttn.${p}.bias`, [E]]])),
      [`layers.${i}.norm1.weight`]: [E], [`layers.${i}.norm1.bias`]: [E], [`layers.${i}.norm2.weight`]: [E], [`layers.${i}.norm2.bias`]: [E],
      [`layers.${i}.ff1.weight`]: [8, E], [`layers.${i}.ff1.bias`]: [8], [`layers.${i}.ff2.weight`]: [E, 8], [`layers.${i}.ff2.bias`]: [E],
    });
    expect(shapes(out)).toEqual(Object.fromEntries(Object.entries({ ...layer(0), ...layer(1) }).sort(([a], [b]) => (a < b ? -1 : 1))));
    expect(out['layers.1.selfAttn.k.weight'].data).toBe(sd['bert.encoder.layer.1.attention.self.key.weight'].data);
    expect(out['layers.0.norm1.bias'].data).toBe(sd['bert.encoder.layer.0.attention.output.LayerNorm.bias'].data);
    expect(out['layers.0.ff2.weight'].data).toBe(sd['bert.encoder.layer.0.output.dense.weight'].data);
    expect(out['layers.0.norm2.weight'].data).toBe(sd['bert.encoder.layer.0.output.LayerNorm.weight'].data);
  });

  test('auto-detects encoder. and roberta.encoder.; reads gamma / beta; an explicit prefix', () => {
    expect(Object.keys(fromBert(bertLayer('encoder.layer.0.'))).length).toBe(16);
    const old = fromBert(bertLayer('roberta.encoder.layer.3.', 8, true));
    expect(old['layers.3.norm1.weight'].shape).toEqual([E]);
    expect(old['layers.3.norm2.bias'].shape).toEqual([E]);
    expect(Object.keys(fromBert(bertLayer('layer.0.'), { prefix: '' })).length).toBe(16);
    expect(Object.keys(fromBert({ ...bertLayer('m.encoder.layer.0.'), ...bertLayer('n.encoder.layer.0.') }, { prefix: 'n.encoder' })).length).toBe(16);
  });

  test('no encoder, or two: RangeError asking for a prefix', () => {
    expectThrows(() => fromBert(outside()), invalid(/no names of the form '…encoder.layer.\{i\}.…'.*pass options.prefix/));
    expectThrows(() => fromBert({ ...bertLayer('m.encoder.layer.0.'), ...bertLayer('n.encoder.layer.0.') }), invalid(/several encoders \('m.encoder.', 'n.encoder.'\); choose one with options.prefix/));
  });

  test('unknown names inside the prefix: RangeError listing them', () => {
    const sd = { ...bertLayer('bert.encoder.layer.0.'), 'bert.encoder.layer.0.attention.self.distance_embedding.weight': t(3, E), 'bert.encoder.rel_embeddings.weight': t(2, E) };
    expectThrows(() => fromBert(sd), invalid(/2 names under 'bert.encoder.' are not part of a BERT encoder layer: 'bert.encoder.layer.0.attention.self.distance_embedding.weight', 'bert.encoder.rel_embeddings.weight'/));
    expectThrows(() => fromBert({ ...bertLayer('encoder.layer.0.'), 'encoder.layer.0.attention.output.LayerNorm.gamma': t(E) }), invalid(/both give 'layers.0.norm1.weight'/));
  });
});
