// Type tests of the layer API (checked with the rest of test/types).
import {
  DecodingState,
  DecoderLayer,
  EncoderLayer,
  MultiHeadAttention,
  TransformerDecoder,
  TransformerEncoder,
  loadModel,
  loadModelSync,
  pendingCalls,
  readModel,
  writeModel,
  type AttentionKind,
  type Model,
  type Tensor,
} from '../../lib';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const assertType = <T extends true>(value?: T) => value;

const x: Tensor = { data: new Float32Array(2 * 5 * 16), shape: [2, 5, 16] };
const mha = new MultiHeadAttention({ modelDim: 16, numHeads: 2, causal: true, featureMap: { numFeatures: 32, seed: 1 } });
assertType<Equal<ReturnType<MultiHeadAttention['forwardSync']>, Tensor>>();
assertType<Equal<ReturnType<MultiHeadAttention['forward']>, Promise<Tensor>>>();
assertType<Equal<AttentionKind, 'favor' | 'softmax'>>();
mha.forwardSync(x, { attention: 'softmax' });
// @ts-expect-error: not an attention kind
mha.forwardSync(x, { attention: 'linear' });
// @ts-expect-error: the sync twin takes no signal
mha.forwardSync(x, { signal: new AbortController().signal });
// Separate key and value inputs (kdim != vdim), causal encoders, the final norm's eps.
const kv = new MultiHeadAttention({ modelDim: 16, numHeads: 2, keyDim: 8, valueDim: 12 });
kv.forwardSync(x, { key: { data: new Float32Array(80), shape: [2, 5, 8] }, value: { data: new Float32Array(120), shape: [2, 5, 12] } });
assertType<Equal<MultiHeadAttention['config']['valueDim'], number>>();
new EncoderLayer({ modelDim: 16, numHeads: 2, causal: true });
new TransformerDecoder({ modelDim: 16, numHeads: 2, numLayers: 1, causal: false, finalNorm: true, finalNormEps: 1e-6 });
// @ts-expect-error: valueDim is a MultiHeadAttention option
new EncoderLayer({ modelDim: 16, numHeads: 2, valueDim: 8 });
// @ts-expect-error: modelDim is required
new EncoderLayer({ numHeads: 2 });
// @ts-expect-error: not an activation
new EncoderLayer({ modelDim: 16, numHeads: 2, activation: 'tanh' });
const enc = new TransformerEncoder({ modelDim: 16, numHeads: 2, numLayers: 2, normFirst: true, finalNorm: true });
const y: Promise<Tensor> = enc.forward(x, { signal: new AbortController().signal });
void y;
// @ts-expect-error: numLayers is required
new TransformerEncoder({ modelDim: 16, numHeads: 2 });
const dec = new TransformerDecoder({ modelDim: 16, numHeads: 2, numLayers: 1, crossAttention: false });
const state: DecodingState = dec.createStateSync(2);
const bytes: Uint8Array = state.serialize();
assertType<Equal<ReturnType<TransformerDecoder['loadState']>, DecodingState>>();
assertType<Equal<ReturnType<DecoderLayer['step']>, Promise<Tensor>>>();
// One convention: createState returns a Promise everywhere, createStateSync the state.
assertType<Equal<ReturnType<MultiHeadAttention['createState']>, Promise<DecodingState>>>();
assertType<Equal<ReturnType<MultiHeadAttention['createStateSync']>, DecodingState>>();
assertType<Equal<ReturnType<TransformerDecoder['createState']>, Promise<DecodingState>>>();
assertType<Equal<ReturnType<DecoderLayer['createStateSync']>, DecodingState>>();
// @ts-expect-error: the sync twins take no signal
enc.forwardSync(x, { signal: new AbortController().signal });
// @ts-expect-error: the sync twins take no signal
dec.createStateSync(2, { signal: new AbortController().signal });
// @ts-expect-error: the sync twins take no signal
dec.backwardSync(x, x, { signal: new AbortController().signal });
dec.stepSync(x, dec.loadState(bytes));
// Many sessions in one pass: the states, then their rows.
assertType<Equal<ReturnType<TransformerDecoder['stepBatch']>, Promise<Tensor>>>();
assertType<Equal<ReturnType<MultiHeadAttention['stepBatchSync']>, Tensor>>();
void new DecoderLayer({ modelDim: 8, numHeads: 2 }).stepBatch([state], x, { signal: new AbortController().signal });
// @ts-expect-error: the sync twins take no signal
dec.stepBatchSync([state], x, { signal: new AbortController().signal });
const params: Record<string, Tensor> = dec.parameters();
dec.loadParameters(params, { strict: false });
dec.loadParameters(params, { keepFeatures: true });
// @ts-expect-error: keepFeatures is a boolean
dec.loadParameters(params, { keepFeatures: 'yes' });
dec.redrawFeatures(3);
const pending: number = pendingCalls();
void pending;

// Model files.
const file: Uint8Array = writeModel(enc, { note: 'x' });
const rebuilt: Model = readModel(file);
assertType<Equal<ReturnType<typeof loadModel>, Promise<Model>>>();
assertType<Equal<ReturnType<typeof loadModelSync>, Model>>();
void rebuilt;
// @ts-expect-error: metadata values are strings
writeModel(enc, { n: 1 });
