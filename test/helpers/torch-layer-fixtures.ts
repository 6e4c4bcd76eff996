// PyTorch module fixtures (scripts/fixtures/make_layer_fixtures.py and
// make_layer_grad_fixtures.py): their reader, and the library layer each one describes.
import * as path from 'node:path';

import * as lib from '../../lib';
import { fromBert, fromPyTorch, loadSafetensorsSync, type Tensor } from '../../lib';

export interface FixtureConfig {
  modelDim: number;
  numHeads: number;
  activation?: 'relu' | 'gelu';
  normFirst?: boolean;
  layerNormEps?: number;
  kind: 'MultiHeadAttention' | 'EncoderLayer' | 'DecoderLayer' | 'TransformerEncoder' | 'TransformerDecoder';
  mapping: 'pytorch' | 'bert';
  prefix: string;
  keyDim?: number;
  valueDim?: number;
  /** Self-attention causal (default: false for encoders, true for decoders). */
  causal?: boolean;
  ffDim?: number;
  numLayers?: number;
  finalNorm?: boolean;
  finalNormEps?: number;
  crossAttention?: boolean;
  batch: number;
  queryLength: number;
  keyLength: number;
  weightDtype: 'F32' | 'F16' | 'BF16';
}

export interface Fixture {
  name: string;
  config: FixtureConfig;
  /** The state dict under its PyTorch (or BERT) names. */
  weights: Record<string, Tensor>;
  /** input.* without the prefix. */
  inputs: Record<string, Tensor>;
  y: Tensor;
  /** The weights under the layer API's canonical names. */
  mapped: Record<string, Tensor>;
  /** grad.* without the prefix (gradient fixtures only). */
  grads: Record<string, Tensor>;
}

export function loadFixture(dir: string, file: string): Fixture {
  const { tensors, metadata } = loadSafetensorsSync(path.join(dir, file));
  const config = JSON.parse(metadata.config) as FixtureConfig;
  const weights: Record<string, Tensor> = {};
  const inputs: Record<string, Tensor> = {};
  const grads: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(tensors)) {
    if (name.startsWith('input.')) inputs[name.slice(6)] = t;
    else if (name.startsWith('grad.')) grads[name.slice(5)] = t;
    else if (name !== 'output.y') weights[name] = t;
  }
  const mapped = config.mapping === 'bert' ? fromBert(weights) : fromPyTorch(weights, { prefix: config.prefix });
  return { name: file.replace('.safetensors', ''), config, weights, inputs, y: tensors['output.y'], mapped, grads };
}

export const toMask = (t: Tensor | undefined) => (t ? { data: Uint8Array.from(t.data), shape: t.shape } : undefined);

/** The forward options of a fixture's inputs (memory and masks). */
export function forwardOptions(f: Fixture): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  if (f.inputs.memory) options.memory = f.inputs.memory;
  if (f.inputs.key) options.key = f.inputs.key;
  if (f.inputs.value) options.value = f.inputs.value;
  if (f.inputs.key_padding_mask) options.keyPaddingMask = toMask(f.inputs.key_padding_mask);
  if (f.inputs.memory_key_padding_mask) options.memoryKeyPaddingMask = toMask(f.inputs.memory_key_padding_mask);
  return options;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
const api = lib as unknown as Record<string, any>;
export const layersExported = typeof api.MultiHeadAttention === 'function';

/** The library layer of a fixture's config, with softmax attention. */
export function buildLayer(c: FixtureConfig): any {
  const common = { modelDim: c.modelDim, numHeads: c.numHeads, attention: 'softmax' };
  const block = {
    ...common,
    ffDim: c.ffDim,
    activation: c.activation,
    normFirst: c.normFirst,
    layerNormEps: c.layerNormEps,
    ...(c.causal !== undefined ? { causal: c.causal } : {}),
  };
  const stack = { numLayers: c.numLayers, finalNorm: c.finalNorm, ...(c.finalNormEps !== undefined ? { finalNormEps: c.finalNormEps } : {}) };
  switch (c.kind) {
    case 'MultiHeadAttention':
      return new api.MultiHeadAttention({ ...common, ...(c.keyDim ? { keyDim: c.keyDim } : {}), ...(c.valueDim ? { valueDim: c.valueDim } : {}) });
    case 'EncoderLayer':
      return new api.EncoderLayer(block);
    case 'DecoderLayer':
      return new api.DecoderLayer({ ...block, crossAttention: true });
    case 'TransformerEncoder':
      return new api.TransformerEncoder({ ...block, ...stack });
    case 'TransformerDecoder':
      return new api.TransformerDecoder({ ...block, ...stack, crossAttention: true });
  }
}

/** Loads the fixture's weights into a layer (PyTorch has no FAVOR features: the layer keeps its own). */
export function loadInto(layer: any, f: Fixture): void {
  const own = layer.parameters() as Record<string, Tensor>;
  const features = Object.fromEntries(Object.entries(own).filter(([n]) => n.endsWith('features.projection')));
  layer.loadParameters({ ...features, ...f.mapped });
}
