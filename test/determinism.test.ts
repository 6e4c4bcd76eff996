// Same inputs, same feature map -> same bits, whatever the thread count and the
// order of concurrent calls. The FAVOR drivers split a head into parts from the
// problem size only (merging partial states is not associative in float32).
import {
  backendInfo,
  favorAttention,
  favorAttentionSync,
  FeatureMap,
  setBackend,
  softmaxAttention,
  softmaxAttentionSync,
} from '../lib';
import { makeInputs } from './helpers/reference';

const ORIGINAL = backendInfo();
afterAll(() => setBackend({ threads: ORIGINAL.threads }));

const d = 16;
// One head of 1100 rows is split into parts; 3 heads of 600 rows also are.
const shapes = [
  { B: 1, H: 1, Lq: 1100, Lk: 1100, d, Dv: 5 },
  { B: 1, H: 3, Lq: 600, Lk: 700, d, Dv: 4 },
];

function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; ++i) if (ua[i] !== ub[i]) return false;
  return true;
}

const kernels = ['softmax', 'softmax-opt'] as const;
describe.each(shapes)('same bits for 1, 2, 3 threads and concurrent calls: B=$B H=$H Lq=$Lq', (dims) => {
  const inputs = makeInputs(21, dims, { q: 1.2, k: 1.2 });
  for (const causal of [false, true]) {
    for (const kernel of kernels) {
      test(`favor ${kernel} ${causal ? 'causal' : 'bidirectional'}`, async () => {
        const map = new FeatureMap({ headDim: d, numFeatures: 24, kernel, seed: 5 });
        if (kernel !== 'softmax') map.calibrate(inputs.q, inputs.k); // fixed parameters
        const opts = { featureMap: map, causal };
        const runs: Float32Array[] = [];
        for (const threads of [1, 2, 3]) {
          setBackend({ threads });
          runs.push(favorAttentionSync(inputs.q, inputs.k, inputs.v, opts).data);
          const concurrent = await Promise.all([0, 1, 2, 3].map(() => favorAttention(inputs.q, inputs.k, inputs.v, opts)));
          for (const r of concurrent) runs.push(r.data);
        }
        for (const r of runs) expect(bitsEqual(r, runs[0])).toBe(true);
      });
    }
    test(`softmax ${causal ? 'causal' : 'bidirectional'}`, async () => {
      const runs: Float32Array[] = [];
      for (const threads of [1, 2, 3]) {
        setBackend({ threads });
        runs.push(softmaxAttentionSync(inputs.q, inputs.k, inputs.v, { causal }).data);
        const concurrent = await Promise.all([0, 1, 2].map(() => softmaxAttention(inputs.q, inputs.k, inputs.v, { causal })));
        for (const r of concurrent) runs.push(r.data);
      }
      for (const r of runs) expect(bitsEqual(r, runs[0])).toBe(true);
    });
  }
  test('favor softmax-opt with per-call estimation', () => {
    const map = new FeatureMap({ headDim: d, numFeatures: 24, kernel: 'softmax-opt', seed: 5 });
    const runs: Float32Array[] = [];
    for (const threads of [1, 2, 3]) {
      setBackend({ threads });
      runs.push(favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: map }).data);
    }
    for (const r of runs) expect(bitsEqual(r, runs[0])).toBe(true);
  });
});
