// With few heads, one head is split into parts (key and query
// ranges; causal segments joined by a prefix combine of their states). Those
// paths must equal the float64 reference like the one-part path, for 1, 2 and 3
// threads, with key padding, epsilon and Lq != Lk.
import { backendInfo, favorAttentionSync, FeatureMap, setBackend } from '../lib';
import { makeInputs, refFavor, relFrobenius, type RefFeatureSpec } from './helpers/reference';

const ORIGINAL = backendInfo();
afterAll(() => setBackend({ threads: ORIGINAL.threads }));

const d = 16;
const map = new FeatureMap({ headDim: d, numFeatures: 24, seed: 3 });
const spec: RefFeatureSpec = {
  kernel: 'softmax',
  headDim: d,
  numFeatures: map.numFeatures,
  projection: map.projection,
  kernelEpsilon: map.kernelEpsilon,
};

const cases = [
  { name: 'bidirectional', Lq: 900, Lk: 1100, causal: false, epsilon: 0 },
  { name: 'bidirectional with epsilon', Lq: 1100, Lk: 700, causal: false, epsilon: 1e-3 },
  { name: 'causal', Lq: 1100, Lk: 1100, causal: true, epsilon: 0 },
  { name: 'causal with more keys than queries', Lq: 800, Lk: 1000, causal: true, epsilon: 0 },
  { name: 'causal with more queries than keys', Lq: 1000, Lk: 800, causal: true, epsilon: 0 },
  { name: 'causal with epsilon', Lq: 1000, Lk: 1000, causal: true, epsilon: 1e-3 },
];

describe.each(cases)('one head split into parts: $name', ({ Lq, Lk, causal, epsilon }) => {
  const inputs = makeInputs(11, { B: 1, H: 1, Lq, Lk, d, Dv: 5 }, { q: 1.5, k: 1.5 });
  const pad = new Uint8Array(Lk).fill(1);
  for (let j = 5; j < Lk; j += 7) pad[j] = 0;
  const reference = refFavor(inputs, spec, { causal, epsilon, keyPadding: pad });

  test.each([1, 2, 3])('%p threads', (threads) => {
    setBackend({ threads });
    const out = favorAttentionSync(inputs.q, inputs.k, inputs.v, {
      featureMap: map,
      causal,
      epsilon,
      keyPaddingMask: { data: pad, shape: [1, Lk] },
    });
    expect(relFrobenius(out.data, reference)).toBeLessThan(1e-5);
  });
});
