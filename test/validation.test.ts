// Every bad input gets a TypeError or RangeError that names the argument and says
// what was expected and received, with a Node-style code; never a crash or a
// silently wrong number. One test per case.
import {
  FeatureMap,
  favorAttention,
  favorAttentionSync,
  setBackend,
  softmaxAttention,
  softmaxAttentionSync,
  tensor,
} from '../lib';
import { runInNewContext } from 'node:vm';

import { expectRejects, expectThrows, type ExpectedError } from './helpers/errors';
import { seededUniform } from './helpers/reference';

const B = 2;
const H = 3;
const L = 5;
const D = 4;

const filled = (n: number, seed = 1) => seededUniform(n, seed);

function t(shape: number[], seed = 1) {
  return { data: filled(shape.reduce((a, b) => a * b, 1), seed), shape };
}

const q = t([B, H, L, D], 1);
const k = t([B, H, L, D], 2);
const v = t([B, H, L, D], 3);
const fm = new FeatureMap({ headDim: D, numFeatures: 8, seed: 1 });

const typeErr = (message: RegExp): ExpectedError => ({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message });
const rangeErr = (message: RegExp): ExpectedError => ({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message });
const unknownOption = (message: RegExp): ExpectedError => ({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message });

describe('tensor arguments', () => {
  test('Float64Array data is a TypeError naming the argument', () => {
    expectThrows(() => favorAttentionSync({ data: new Float64Array(q.data.length) as never, shape: q.shape }, k, v), typeErr(/^query\.data: expected a Float32Array, received a Float64Array$/));
  });
  test('a plain array as data is a TypeError', () => {
    expectThrows(() => softmaxAttentionSync(q, { data: Array.from(k.data) as never, shape: k.shape }, v), typeErr(/^key\.data: expected a Float32Array, received an Array of length 120$/));
  });
  test('a bare Float32Array instead of a tensor is a TypeError', () => {
    expectThrows(() => favorAttentionSync(q, k, v.data as never), typeErr(/^value: expected an object \{ data: Float32Array, shape: number\[\] \}, received a Float32Array$/));
  });
  test('a tensor without shape is a TypeError', () => {
    expectThrows(() => favorAttentionSync({ data: q.data } as never, k, v), typeErr(/^query: expected a tensor with a 'shape' \(or 'dims'\) array/));
  });
  test('wrong rank is a RangeError with the shape legend', () => {
    expectThrows(() => favorAttentionSync({ data: q.data, shape: [B * H, L, D] }, k, v), rangeErr(/^query: expected a rank-4 tensor \[batch, heads, seq, headDim\], received shape \[6, 5, 4\]$/));
  });
  test('mismatched batch is a RangeError with expected vs received', () => {
    expectThrows(() => favorAttentionSync(q, t([1, H, L, D]), t([1, H, L, D])), rangeErr(/^key: expected shape \[2, 3, 5, 4\] to match query's batch, heads and headDim, received \[1, 3, 5, 4\]$/));
  });
  test('mismatched heads is a RangeError', () => {
    expectThrows(() => softmaxAttentionSync(q, t([B, 2, L, D]), v), rangeErr(/^key: expected shape \[2, 3, 5, 4\] .* received \[2, 2, 5, 4\]$/));
  });
  test('mismatched headDim is a RangeError', () => {
    expectThrows(() => favorAttentionSync(q, t([B, H, L, 3]), v), rangeErr(/^key: expected shape \[2, 3, 5, 4\] .* received \[2, 3, 5, 3\]$/));
  });
  test('keys and values of different lengths are a RangeError', () => {
    expectThrows(() => favorAttentionSync(q, k, t([B, H, L + 1, D])), rangeErr(/^value: expected shape \[2, 3, 5, 4\] to match key's batch, heads and length, received \[2, 3, 6, 4\]$/));
  });
  test('data length not matching the shape is a RangeError', () => {
    expectThrows(() => favorAttentionSync({ data: new Float32Array(7), shape: [B, H, L, D] }, k, v), rangeErr(/^query: data length 7 does not match shape \[2, 3, 5, 4\] \(120 elements\)$/));
  });
  test('a zero-size dimension is a RangeError', () => {
    expectThrows(() => favorAttentionSync({ data: new Float32Array(0), shape: [B, H, 0, D] }, k, v), rangeErr(/^query\.shape\[2\]: expected a positive integer, received the number 0$/));
  });
  test('a negative dimension is a RangeError', () => {
    expectThrows(() => softmaxAttentionSync({ data: q.data, shape: [B, H, -L, -D] }, k, v), rangeErr(/^query\.shape\[2\]: expected a positive integer, received the number -5$/));
  });
  test('a fractional dimension is a RangeError', () => {
    expectThrows(() => softmaxAttentionSync({ data: q.data, shape: [B, H, 2.5, 16] }, k, v), rangeErr(/^query\.shape\[2\]: expected a positive integer, received the number 2\.5$/));
  });
  test('onnxruntime-style tensors with dims are accepted', () => {
    const viaDims = favorAttentionSync({ data: q.data, dims: q.shape }, k, v, { featureMap: fm });
    const viaShape = favorAttentionSync(q, k, v, { featureMap: fm });
    expect(viaDims.data).toEqual(viaShape.data);
  });
  test('typed arrays from another realm (a vm context, the addon) are accepted', () => {
    const foreign = runInNewContext('new Float32Array(16).fill(0.25)') as Float32Array;
    const shape = [1, 1, 4, 4];
    expect(softmaxAttentionSync({ data: foreign, shape }, { data: foreign, shape }, { data: foreign, shape }).data[0]).toBeCloseTo(0.25, 6);
    const map = FeatureMap.fromProjection(runInNewContext('new Float32Array(32).fill(0.5)') as Float32Array, { headDim: 4, numFeatures: 8 });
    const phi = map.features({ data: foreign, shape: [4, 4] });
    expect(map.features({ data: phi.data.subarray(0, 8), shape: [2, 4] }).shape).toEqual([2, 8]);
  });
  test('tensor() checks its arguments', () => {
    expectThrows(() => tensor(new Float32Array(5), [2, 3]), rangeErr(/^tensor: data length 5 does not match shape \[2, 3\] \(6 elements\)$/));
  });
});

describe('non-finite and oversized values', () => {
  test('NaN in the query is a RangeError naming the tensor and index', () => {
    const bad = Float32Array.from(q.data);
    bad[17] = NaN;
    expectThrows(() => favorAttentionSync({ data: bad, shape: q.shape }, k, v, { featureMap: fm }), rangeErr(/^query: values must be finite, received NaN at flat index 17$/));
  });
  test('Infinity in the value is a RangeError', () => {
    const bad = Float32Array.from(v.data);
    bad[3] = -Infinity;
    expectThrows(() => softmaxAttentionSync(q, k, { data: bad, shape: v.shape }), rangeErr(/^value: values must be finite, received -Infinity at flat index 3$/));
  });
  test('NaN in the key rejects the async call', async () => {
    const bad = Float32Array.from(k.data);
    bad[0] = NaN;
    await expectRejects(favorAttention(q, { data: bad, shape: k.shape }, v, { featureMap: fm }), rangeErr(/^key: values must be finite/));
  });
  test('scores that would overflow float32 are a RangeError, not NaN', () => {
    const huge = Float32Array.from(q.data, (x) => x * 1e20);
    expectThrows(() => softmaxAttentionSync({ data: huge, shape: q.shape }, { data: huge, shape: k.shape }, v), rangeErr(/overflow float32/));
  });
  test('feature-map inputs whose squared norm overflows are a RangeError', () => {
    const huge = Float32Array.from(q.data, (x) => x * 1e18);
    expectThrows(() => favorAttentionSync({ data: huge, shape: q.shape }, k, v, { featureMap: fm }), rangeErr(/overflow the feature map/));
  });
  test('values whose sums could overflow are a RangeError', () => {
    const huge = Float32Array.from(v.data, () => 3e38);
    expectThrows(() => favorAttentionSync(q, k, { data: huge, shape: v.shape }, { featureMap: fm }), rangeErr(/^value: magnitudes up to .* could overflow/));
  });
});

describe('options', () => {
  test('unknown favorAttention option is a TypeError listing the known ones', () => {
    expectThrows(() => favorAttentionSync(q, k, v, { casual: true } as never), unknownOption(/^favorAttentionSync options: unknown option 'casual'; known options are 'featureMap', 'causal'/));
  });
  test('unknown softmaxAttention option is a TypeError', () => {
    expectThrows(() => softmaxAttentionSync(q, k, v, { mask: 1 } as never), unknownOption(/^softmaxAttentionSync options: unknown option 'mask'/));
  });
  test('unknown FeatureMap option is a TypeError', () => {
    expectThrows(() => new FeatureMap({ headDim: 4, nbFeatures: 8 } as never), unknownOption(/^FeatureMap options: unknown option 'nbFeatures'/));
  });
  test('options that are not an object are a TypeError', () => {
    expectThrows(() => favorAttentionSync(q, k, v, 5 as never), typeErr(/^favorAttentionSync options: expected an object, received the number 5$/));
  });
  test('causal must be a boolean', () => {
    expectThrows(() => softmaxAttentionSync(q, k, v, { causal: 1 as never }), typeErr(/^softmaxAttentionSync options\.causal: expected a boolean, received the number 1$/));
  });
  test('featureMap must be a FeatureMap', () => {
    expectThrows(() => favorAttentionSync(q, k, v, { featureMap: { headDim: D } as never }), typeErr(/^favorAttentionSync options\.featureMap: expected a FeatureMap, received an object$/));
  });
  test('a featureMap for another headDim is a RangeError', () => {
    expectThrows(() => favorAttentionSync(q, k, v, { featureMap: new FeatureMap({ headDim: 8, numFeatures: 8, seed: 0 }) }), rangeErr(/^favorAttentionSync options\.featureMap: headDim 8 does not match query and key headDim 4$/));
  });
  test('negative epsilon is a RangeError', () => {
    expectThrows(() => favorAttentionSync(q, k, v, { featureMap: fm, epsilon: -1e-6 }), rangeErr(/^favorAttentionSync options\.epsilon: expected a finite number >= 0, received -0\.000001$/));
  });
  test('epsilon with signed trig features is a RangeError', () => {
    const trig = new FeatureMap({ headDim: D, numFeatures: 8, kernel: 'trig', seed: 0 });
    expectThrows(() => favorAttentionSync(q, k, v, { featureMap: trig, epsilon: 1e-6 }), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /epsilon: applies to positive feature maps/ });
  });
  test('chunkSize out of range is a RangeError', () => {
    expectThrows(() => favorAttentionSync(q, k, v, { featureMap: fm, causal: true, chunkSize: 0 }), rangeErr(/^favorAttentionSync options\.chunkSize: expected an integer from 1 to 4096, received 0$/));
  });
  test('a NaN scale is a RangeError', () => {
    expectThrows(() => softmaxAttentionSync(q, k, v, { scale: NaN }), rangeErr(/^softmaxAttentionSync options\.scale: expected a finite number, received NaN$/));
  });
  test('a key padding mask of the wrong shape is a RangeError', () => {
    expectThrows(() => favorAttentionSync(q, k, v, { featureMap: fm, keyPaddingMask: { data: new Uint8Array(L), shape: [1, L] } }), rangeErr(/^favorAttentionSync options\.keyPaddingMask: expected shape \[2, 5\], received \[1, 5\]$/));
  });
  test('a key padding mask of the wrong type is a TypeError', () => {
    expectThrows(() => softmaxAttentionSync(q, k, v, { keyPaddingMask: { data: new Float32Array(B * L), shape: [B, L] } as never }), typeErr(/^softmaxAttentionSync options\.keyPaddingMask\.data: expected a Uint8Array, received a Float32Array$/));
  });
  test('an out tensor of the wrong shape is a RangeError', () => {
    expectThrows(() => softmaxAttentionSync(q, k, v, { out: t([B, H, L, D + 1]) }), rangeErr(/^softmaxAttentionSync options\.out: expected shape \[2, 3, 5, 4\], received \[2, 3, 5, 5\]$/));
  });
  test('an out tensor sharing memory with an input is a RangeError', () => {
    expectThrows(() => favorAttentionSync(q, k, v, { featureMap: fm, out: q }), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /^favorAttentionSync options\.out: must not share memory with query$/ });
  });
  test('a given out tensor receives the result', () => {
    const out = t([B, H, L, D], 9);
    const result = softmaxAttentionSync(q, k, v, { out });
    expect(result.data).toBe(out.data);
    expect(Array.from(result.data)).toEqual(Array.from(softmaxAttentionSync(q, k, v).data));
  });
  test('the async variants reject instead of throwing', async () => {
    await expectRejects(softmaxAttention(q, k, v, { causal: 'yes' as never }), typeErr(/^softmaxAttention options\.causal: expected a boolean/));
    await expectRejects(favorAttention(q, t([B, H, L, 3]), v), rangeErr(/^key: expected shape/));
  });
});

describe('FeatureMap arguments', () => {
  test('missing options is a TypeError', () => {
    expectThrows(() => new FeatureMap(undefined as never), typeErr(/^FeatureMap options: expected an object with headDim, received undefined$/));
  });
  test('numFeatures < 1 is a RangeError', () => {
    expectThrows(() => new FeatureMap({ headDim: 4, numFeatures: 0 }), rangeErr(/^FeatureMap options\.numFeatures: expected an integer from 1 to 1048576, received 0$/));
  });
  test('a fractional numFeatures is a RangeError', () => {
    expectThrows(() => new FeatureMap({ headDim: 4, numFeatures: 2.5 }), rangeErr(/^FeatureMap options\.numFeatures: expected an integer/));
  });
  test('a non-integer seed is a RangeError', () => {
    expectThrows(() => new FeatureMap({ headDim: 4, seed: 1.5 }), rangeErr(/^FeatureMap options\.seed: expected an integer from 0 to 2\^53 - 1, received 1\.5$/));
  });
  test('a NaN seed is a RangeError', () => {
    expectThrows(() => new FeatureMap({ headDim: 4, seed: NaN }), rangeErr(/^FeatureMap options\.seed: expected an integer from 0 to 2\^53 - 1, received NaN$/));
  });
  test('a string seed is a TypeError', () => {
    expectThrows(() => new FeatureMap({ headDim: 4, seed: '7' as never }), typeErr(/^FeatureMap options\.seed: expected an integer, received the string "7"$/));
  });
  test('a seed beyond 2^53 - 1 is a RangeError', () => {
    expectThrows(() => new FeatureMap({ headDim: 4, seed: 2 ** 53 }), rangeErr(/received 9007199254740992$/));
  });
  test('an unknown kernel is a RangeError listing the kernels', () => {
    expectThrows(() => new FeatureMap({ headDim: 4, kernel: 'gaussian' as never }), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /^FeatureMap options\.kernel: expected one of 'softmax', 'softmax-hyperbolic', 'trig', 'relu', 'elu', 'exp', 'abs', 'softmax-opt', 'softmax-dense', received 'gaussian'$/ });
  });
  test('randomProjection: false with the softmax kernel is a RangeError', () => {
    expectThrows(() => new FeatureMap({ headDim: 4, randomProjection: false }), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /randomProjection: false is only for the generalized kernels/ });
  });
  test('a projection of the wrong size is a RangeError', () => {
    expectThrows(() => FeatureMap.fromProjection(new Float32Array(10), { headDim: 4, numFeatures: 3 }), rangeErr(/^projection: expected numFeatures \* headDim = 3 \* 4 = 12 elements, received 10$/));
  });
  test('a projection that is not a Float32Array is a TypeError', () => {
    expectThrows(() => FeatureMap.fromProjection(new Float64Array(12) as never, { headDim: 4, numFeatures: 3 }), typeErr(/^projection: expected a Float32Array, received a Float64Array$/));
  });
  test('a projection with NaN is a RangeError', () => {
    const w = new Float32Array(12);
    w[5] = NaN;
    expectThrows(() => FeatureMap.fromProjection(w, { headDim: 4, numFeatures: 3 }), rangeErr(/^projection: values must be finite, received NaN at index 5$/));
  });
  test('redraw on a given projection is an invalid-state Error', () => {
    const given = FeatureMap.fromProjection(new Float32Array(12), { headDim: 4, numFeatures: 3 });
    expectThrows(() => given.redraw(1), { name: 'Error', code: 'ERR_INVALID_STATE', message: /holds a given projection/ });
  });
  test('features() of rows of the wrong width is a RangeError', () => {
    expectThrows(() => fm.features(t([3, 5])), rangeErr(/^x: expected shape \[\.\.\., 4\] \(last dimension headDim\), received \[3, 5\]$/));
  });
});

describe('backend', () => {
  test('an unknown ISA is a RangeError', () => {
    expectThrows(() => setBackend({ isa: 'sse9' as never }), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message: /^setBackend options\.isa: expected one of 'scalar', 'avx2', 'avx512', received 'sse9'$/ });
  });
  test('a thread count of 0 is a RangeError', () => {
    expectThrows(() => setBackend({ threads: 0 }), rangeErr(/^setBackend options\.threads: expected an integer from 1 to 1024, received 0$/));
  });
});
