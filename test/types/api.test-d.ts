// Type tests of the public API: checked by `tsc -p test/types` (npm run test:types, and
// test/types.test.ts in npm test). Each @ts-expect-error line must be an error, so a
// type that became too loose (any, a wider union) fails the check as well.
import {
  type StoredTensor,
  FeatureMap,
  backendInfo,
  favorAttention,
  favorAttentionSync,
  measureFmaPeak,
  setBackend,
  softmaxAttention,
  softmaxAttentionSync,
  tensor,
  fromBert,
  fromPyTorch,
  loadSafetensors,
  loadSafetensorsSync,
  readSafetensors,
  toPyTorch,
  writeSafetensors,
  type Safetensors,
  type BackendInfo,
  type AdaptiveParameters,
  type CodedError,
  type FavorAttentionOptions,
  type FavorAttentionSyncOptions,
  type FeatureKernel,
  type FmaPeak,
  type Isa,
  type MaskLike,
  type SoftmaxAttentionOptions,
  type SoftmaxAttentionSyncOptions,
  type Tensor,
  type TensorLike,
} from '../../lib';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const assertType = <T extends true>(value?: T) => value;

const q: Tensor = tensor(new Float32Array(64), [1, 1, 4, 16]);
const ort: TensorLike = { data: new Float32Array(64), dims: [1, 1, 4, 16] };
const mask: MaskLike = { data: new Uint8Array(4), shape: [1, 4] };

// Results: a Tensor, or a Promise of one.
assertType<Equal<ReturnType<typeof favorAttentionSync>, Tensor>>();
assertType<Equal<ReturnType<typeof favorAttention>, Promise<Tensor>>>();
assertType<Equal<ReturnType<typeof softmaxAttentionSync>, Tensor>>();
assertType<Equal<ReturnType<typeof softmaxAttention>, Promise<Tensor>>>();
assertType<Equal<Tensor['data'], Float32Array>>();

// Options.
const fm = new FeatureMap({ headDim: 16, numFeatures: 32, kernel: 'softmax-hyperbolic', orthogonal: true, normScaling: 'sqrt', seed: 1 });
const favor: FavorAttentionOptions = { featureMap: fm, causal: true, keyPaddingMask: mask, epsilon: 1e-6, chunkSize: 1, out: q };
const exact: SoftmaxAttentionOptions = { causal: false, keyPaddingMask: mask, scale: 0.25, out: q };
favorAttentionSync(q, ort, q, favor);
softmaxAttentionSync(ort, q, q, exact);
favorAttentionSync(q, q, q);

// @ts-expect-error: a plain array is not a tensor
favorAttentionSync([1, 2, 3], q, q);
// @ts-expect-error: data must be a Float32Array
softmaxAttentionSync({ data: new Float64Array(64), shape: [1, 1, 4, 16] }, q, q);
// @ts-expect-error: masks are bytes
favorAttentionSync(q, q, q, { keyPaddingMask: { data: new Float32Array(4), shape: [1, 4] } });
// The polarity forms: { keep } (1 = attend) and { ignore } (PyTorch's key_padding_mask).
favorAttentionSync(q, q, q, { keyPaddingMask: { ignore: mask } });
softmaxAttentionSync(q, q, q, { keyPaddingMask: { keep: { data: new Uint8Array(4), dims: [1, 4] } } });
// @ts-expect-error: the inner mask is bytes too
favorAttentionSync(q, q, q, { keyPaddingMask: { ignore: { data: new Float32Array(4), shape: [1, 4] } } });
// @ts-expect-error: scale is an exact-attention option
favorAttentionSync(q, q, q, { scale: 2 });
// @ts-expect-error: featureMap is a FAVOR+ option
softmaxAttentionSync(q, q, q, { featureMap: fm });
// @ts-expect-error: a misspelt option
softmaxAttentionSync(q, q, q, { casual: true });
// @ts-expect-error: a query and a key are required
favorAttentionSync(q);
// The blocking calls cannot be aborted: their options have no `signal`.
void favorAttention(q, q, q, { signal: new AbortController().signal });
void softmaxAttention(q, q, q, { signal: new AbortController().signal });
// @ts-expect-error: the blocking twin takes no signal
favorAttentionSync(q, q, q, { signal: new AbortController().signal });
// @ts-expect-error: the blocking twin takes no signal
softmaxAttentionSync(q, q, q, { causal: true, signal: new AbortController().signal });
const favorSync: FavorAttentionSyncOptions = { featureMap: fm, causal: true };
favorAttentionSync(q, q, q, favorSync);
assertType<Equal<SoftmaxAttentionSyncOptions, Omit<SoftmaxAttentionOptions, 'signal'>>>();

// FeatureMap.
const kernels: FeatureKernel[] = ['softmax', 'softmax-hyperbolic', 'trig', 'relu', 'elu', 'exp', 'abs', 'softmax-opt', 'softmax-dense'];
void kernels;
// Adaptive kernels: parameters fixed, calibrated, inspected.
const opt = new FeatureMap({ headDim: 4, kernel: 'softmax-opt', parameters: { heads: 1, coefficients: new Float64Array(4), basis: null } });
assertType<Equal<typeof opt.parameters, AdaptiveParameters | null>>();
assertType<Equal<ReturnType<FeatureMap['calibrate']>, AdaptiveParameters>>();
assertType<Equal<ReturnType<typeof FeatureMap.optimalCoefficient>, number>>();
opt.setParameters(null);
// @ts-expect-error: coefficients are a Float64Array
opt.setParameters({ heads: 1, coefficients: new Float32Array(4), basis: null });
// @ts-expect-error: headDim is required
new FeatureMap({ numFeatures: 8 });
// @ts-expect-error: not a kernel
new FeatureMap({ headDim: 8, kernel: 'gelu' });
// @ts-expect-error: not a norm scaling
new FeatureMap({ headDim: 8, normScaling: 'unit' });
// eslint-disable-next-line @typescript-eslint/no-unused-vars -- declared for its type: the assertion below is on typeof given
const given = FeatureMap.fromProjection(new Float32Array(8 * 4), { headDim: 4, numFeatures: 8 });
// @ts-expect-error: fromProjection needs numFeatures
FeatureMap.fromProjection(new Float32Array(8 * 4), { headDim: 4 });
assertType<Equal<typeof given, FeatureMap>>();
assertType<Equal<ReturnType<FeatureMap['features']>, Tensor>>();
assertType<Equal<FeatureMap['projection'], Float32Array | null>>();
assertType<Equal<FeatureMap['featureCount'], number>>();
assertType<Equal<FeatureMap['outputFeatures'], number>>();
fm.redraw();
fm.redraw(7);
fm.features(q, { logSpace: true });
// @ts-expect-error: the options are read-only properties
fm.headDim = 32;

// Backend.
assertType<Equal<ReturnType<typeof backendInfo>, BackendInfo>>();
assertType<Equal<BackendInfo['isa'], Isa>>();
assertType<Equal<Isa, 'scalar' | 'avx2' | 'avx512'>>();
setBackend({ isa: 'avx2', threads: 2 });
// @ts-expect-error: not a kernel set
setBackend({ isa: 'neon' });
assertType<Equal<ReturnType<typeof measureFmaPeak>, FmaPeak>>();

// Weights I/O.
const file = writeSafetensors({ w: q, o: ort }, { note: 'x' });
assertType<Equal<typeof file, Uint8Array>>();
assertType<Equal<ReturnType<typeof readSafetensors>, Safetensors>>();
assertType<Equal<ReturnType<typeof loadSafetensors>, Promise<Safetensors>>>();
assertType<Equal<ReturnType<typeof loadSafetensorsSync>, Safetensors>>();
assertType<Equal<Safetensors['tensors'], Record<string, StoredTensor>>>();
writeSafetensors(readSafetensors(file).tensors);
assertType<Equal<Safetensors['metadata'], Record<string, string>>>();
readSafetensors(file, { include: (name) => name.startsWith('w') });
// @ts-expect-error: metadata values are strings
writeSafetensors({ w: q }, { n: 1 });
assertType<Equal<ReturnType<typeof fromPyTorch>, Record<string, Tensor>>>();
assertType<Equal<ReturnType<typeof fromBert>, Record<string, Tensor>>>();
assertType<Equal<ReturnType<typeof toPyTorch>, Record<string, Tensor>>>();
fromPyTorch({ in_proj_weight: q }, { prefix: 'encoder.' });
// @ts-expect-error: the prefix is a string
fromBert({}, { prefix: 1 });

// Errors carry a Node-style code.
declare const error: CodedError;
const code: string = error.code;
void code;

// Gradients of the attention functions.
import { favorAttentionBackward, favorAttentionBackwardSync, softmaxAttentionBackwardSync, type AttentionGradients } from '../../lib';
const grads: AttentionGradients = favorAttentionBackwardSync(q, q, q, q, { causal: true, projectionGradient: true });
void favorAttentionBackward(q, q, q, q, { signal: new AbortController().signal });
// @ts-expect-error the blocking twin takes no signal
favorAttentionBackwardSync(q, q, q, q, { signal: new AbortController().signal });
// @ts-expect-error the blocking twin takes no signal
softmaxAttentionBackwardSync(q, q, q, q, { signal: new AbortController().signal });
// @ts-expect-error the output gradient is required
softmaxAttentionBackwardSync(q, q, q);
// @ts-expect-error gradients are not written into a given out
softmaxAttentionBackwardSync(q, q, q, q, { out: q });
void grads;
