// Parity with PyTorch: test/fixtures/layers/*.safetensors hold small PyTorch modules (and a
// BERT-style encoder under Hugging Face names), their inputs and their float64 outputs,
// written once by scripts/fixtures/make_layer_fixtures.py. Here:
//  - the mappings give exactly the canonical names and shapes of the layer API;
//  - a float64 reference of the layers run on the mapped weights reproduces PyTorch's
//    outputs (this checks the fixtures, the masks' polarity and the mappings);
//  - the library's layers with exact softmax attention reproduce them to 1e-5 relative.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { toPyTorch, type Tensor } from '../lib';
import { blockRef, layerNormRef, mhaRef, type RefBlockConfig } from './helpers/layer-reference';
import { relFrobenius } from './helpers/reference';
import { buildLayer, forwardOptions, layersExported, loadFixture, type Fixture, type FixtureConfig } from './helpers/torch-layer-fixtures';

const dir = path.join(__dirname, 'fixtures', 'layers');
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
const fixtures = files.map((file) => loadFixture(dir, file));

// The canonical names and shapes of the layer API (without features.projection, which a
// PyTorch checkpoint does not have).
function expectedShapes(c: FixtureConfig): Record<string, number[]> {
  const E = c.modelDim;
  const F = c.ffDim ?? 4 * E;
  const out: Record<string, number[]> = {};
  const mha = (base: string, keyDim: number, valueDim = keyDim) => {
    for (const p of ['q', 'k', 'v']) {
      out[`${base}${p}.weight`] = [E, p === 'q' ? E : p === 'k' ? keyDim : valueDim];
      out[`${base}${p}.bias`] = [E];
    }
    out[`${base}out.weight`] = [E, E];
    out[`${base}out.bias`] = [E];
  };
  const linearAndNorms = (base: string, norms: string[]) => {
    Object.assign(out, {
      [`${base}ff1.weight`]: [F, E],
      [`${base}ff1.bias`]: [F],
      [`${base}ff2.weight`]: [E, F],
      [`${base}ff2.bias`]: [E],
    });
    for (const n of norms) Object.assign(out, { [`${base}${n}.weight`]: [E], [`${base}${n}.bias`]: [E] });
  };
  const encoder = (base: string) => {
    mha(`${base}selfAttn.`, E);
    linearAndNorms(base, ['norm1', 'norm2']);
  };
  const decoder = (base: string) => {
    mha(`${base}selfAttn.`, E);
    mha(`${base}crossAttn.`, E);
    linearAndNorms(base, ['norm1', 'norm2', 'norm3']);
  };
  if (c.kind === 'MultiHeadAttention') mha('', c.keyDim ?? E, c.valueDim ?? c.keyDim ?? E);
  else if (c.kind === 'EncoderLayer') encoder('');
  else if (c.kind === 'DecoderLayer') decoder('');
  else {
    for (let i = 0; i < c.numLayers!; i++) (c.kind === 'TransformerEncoder' ? encoder : decoder)(`layers.${i}.`);
    if (c.finalNorm) Object.assign(out, { 'norm.weight': [E], 'norm.bias': [E] });
  }
  return out;
}

const shapesOf = (tensors: Record<string, Tensor>) =>
  Object.fromEntries(Object.entries(tensors).map(([name, t]) => [name, [...t.shape]]));

// The double-precision layer reference (test/helpers/layer-reference.ts) on the mapped weights.
function reference(f: Fixture): Float64Array {
  const c = f.config;
  const p = f.mapped;
  const B = c.batch;
  const x = f.inputs.x.data;
  const memory = f.inputs.memory?.data;
  const mask = f.inputs.key_padding_mask ? Uint8Array.from(f.inputs.key_padding_mask.data) : null;
  const memoryMask = f.inputs.memory_key_padding_mask ? Uint8Array.from(f.inputs.memory_key_padding_mask.data) : null;
  const Lq = c.queryLength;
  const Lk = c.keyLength;
  const decoder = c.kind === 'DecoderLayer' || c.kind === 'TransformerDecoder';
  const block: RefBlockConfig = {
    modelDim: c.modelDim,
    numHeads: c.numHeads,
    headDim: c.modelDim / c.numHeads,
    attention: 'softmax',
    causal: false,
    ffDim: c.ffDim ?? 4 * c.modelDim,
    activation: c.activation ?? 'relu',
    normFirst: c.normFirst ?? false,
    layerNormEps: c.layerNormEps ?? 1e-5,
    decoder,
    crossAttention: decoder,
    selfCausal: c.causal,
  };
  const layer = (prefix: string, h: ArrayLike<number>) =>
    blockRef(p, prefix, block, h, B, Lq, { keyPadding: mask, memory, memoryLength: Lk, memoryPadding: memoryMask });
  switch (c.kind) {
    case 'MultiHeadAttention':
      return mhaRef(p, '', block, x, B, Lq, memory ?? f.inputs.key?.data ?? null, Lk, mask, f.inputs.value?.data ?? null);
    case 'EncoderLayer':
    case 'DecoderLayer':
      return layer('', x);
    default: {
      let h: ArrayLike<number> = x;
      for (let i = 0; i < c.numLayers!; i++) h = layer(`layers.${i}.`, h);
      return c.finalNorm ? layerNormRef(h, B * Lq, c.modelDim, p['norm.weight'], p['norm.bias'], c.finalNormEps ?? block.layerNormEps) : Float64Array.from(h);
    }
  }
}

test('the fixtures cover every case and stay small', () => {
  expect(fixtures.map((f) => f.name)).toEqual([
    'bert_2layers',
    'decoder_2layers_bf16',
    'decoder_layer_noncausal',
    'decoder_layer_post_relu',
    'decoder_layer_pre_gelu',
    'encoder_2layers_final_norm',
    'encoder_2layers_final_norm_eps',
    'encoder_layer_causal',
    'encoder_layer_f16',
    'encoder_layer_post_relu',
    'encoder_layer_pre_gelu',
    'mha_cross',
    'mha_cross_kdim',
    'mha_kdim_vdim',
    'mha_self_padding',
  ]);
  const bytes = files.reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
  expect(bytes).toBeLessThan(400_000);
  expect(fixtures.map((f) => f.config.weightDtype).sort()).toEqual([...Array(13).fill('F32'), 'BF16', 'F16'].sort());
});

describe.each(fixtures.map((f) => [f.name, f] as const))('%s', (_name, f) => {
  test('the mapping gives exactly the canonical names and shapes', () => {
    expect(shapesOf(f.mapped)).toEqual(expectedShapes(f.config));
  });

  test('a float64 reference on the mapped weights reproduces the PyTorch output', () => {
    expect(f.y.shape).toEqual([f.config.batch, f.config.queryLength, f.config.modelDim]);
    // The only difference: output.y was rounded to float32 (relative 2^-24 per element).
    expect(relFrobenius(reference(f), f.y.data)).toBeLessThan(1e-7);
  });

  if (f.config.mapping === 'pytorch') {
    test('toPyTorch gives back the state dict', () => {
      const back = toPyTorch(f.mapped, { prefix: f.config.prefix });
      expect(shapesOf(back)).toEqual(shapesOf(f.weights));
      for (const [name, t] of Object.entries(back)) expect(t.data).toEqual(f.weights[name].data);
    });
  }
});

// ---- the library's layers (softmax attention) against PyTorch ----

(layersExported ? describe : describe.skip)(
  layersExported ? 'layers with softmax attention match PyTorch' : 'layers match PyTorch: SKIPPED, MultiHeadAttention is not exported yet',
  () => {
    test.each(fixtures.map((f) => [f.name, f] as const))('%s', (_name, f) => {
      const layer = buildLayer(f.config);
      // PyTorch has no FAVOR features: keep the layer's own, load everything else strictly.
      const own = layer.parameters() as Record<string, Tensor>;
      const features = Object.fromEntries(Object.entries(own).filter(([n]) => n.endsWith('features.projection')));
      expect(Object.keys(own).sort()).toEqual([...Object.keys(f.mapped), ...Object.keys(features)].sort());
      layer.loadParameters({ ...features, ...f.mapped });
      const y = layer.forwardSync(f.inputs.x, forwardOptions(f)) as Tensor;
      expect([...y.shape]).toEqual([...f.y.shape]);
      expect(relFrobenius(y.data, f.y.data)).toBeLessThan(1e-5);
    });
  },
);
