// Seeded fuzz test of the whole public API (see test/helpers/fuzz-cases.ts for the
// generators and the oracle). Each seed runs in its own child process so that a
// crash or a hang fails the test, naming the case, instead of killing jest.
import { FeatureMap } from '../lib';
import { expectThrows } from './helpers/errors';
import { mergeRuns, runFuzzSeed } from './helpers/fuzz-runner';

const SEEDS = [1, 2];
const CASES_PER_SEED = 2500;

test('fuzz: every case ends in a correct result or a coded TypeError / RangeError', async () => {
  const runs = await Promise.all(SEEDS.map((seed) => runFuzzSeed('test/helpers/fuzz-cases.ts', seed, CASES_PER_SEED, 40000)));
  const { cases, results, referenceChecks: references, errors, failures } = mergeRuns(SEEDS, runs);
  expect(failures).toEqual([]);
  console.log(`fuzz: ${cases} cases (seeds ${SEEDS.join(', ')}): ${results} results (${references} checked against double-precision references), errors ${JSON.stringify(errors)}`);
  expect(cases).toBeGreaterThanOrEqual(SEEDS.length * CASES_PER_SEED);
  // The generators must reach both outcomes often.
  expect(results).toBeGreaterThan(cases / 5);
  expect(references).toBeGreaterThan(100);
}, 60000);

// Regressions the fuzz found (each crashed the process or returned NaN before).
describe('fuzz regressions', () => {
  test('a projection or features too large to allocate: RangeError, not a process abort', () => {
    const memory = { name: 'RangeError', code: 'ERR_MEMORY_ALLOCATION_FAILED', message: /cannot allocate/ } as const;
    expectThrows(() => new FeatureMap({ headDim: 65536, numFeatures: 2 ** 20, orthogonal: false, seed: 1 }), memory);
    const wide = new FeatureMap({ headDim: 1, numFeatures: 2 ** 20, orthogonal: false, seed: 1 });
    expectThrows(() => wide.features({ data: new Float32Array(2 ** 16), shape: [2 ** 16, 1] }), memory);
  });

  test('features of rows whose squared norms overflow float32: RangeError, not NaN', () => {
    const map = new FeatureMap({ headDim: 4, numFeatures: 8, seed: 1 });
    const x = { data: new Float32Array([1, 2, 3, 4, 3e38, 0, 0, 0]), shape: [2, 4] };
    expectThrows(() => map.features(x), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /x: row 1 is too large/ });
    const trig = new FeatureMap({ headDim: 4, numFeatures: 8, seed: 1, kernel: 'trig' });
    expectThrows(() => trig.features(x), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /x: row 1 is too large/ });
    // Rows just inside the limit still give features (finite in log space).
    const inside = { data: new Float32Array([1e15, 0, 0, 0]), shape: [1, 4] };
    expect(Array.from(map.features(inside, { logSpace: true }).data).every(Number.isFinite)).toBe(true);
  });

  test('calibrate on rows whose squared norms overflow float32: RangeError, not NaN parameters', () => {
    for (const kernel of ['softmax-opt', 'softmax-dense'] as const) {
      const map = new FeatureMap({ headDim: 4, numFeatures: 8, seed: 1, kernel });
      const big = { data: new Float32Array(8).fill(1e20), shape: [2, 4] };
      const ok = { data: new Float32Array(8).fill(0.5), shape: [2, 4] };
      expectThrows(() => map.calibrate(big, ok), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /query: row 0 is too large/ });
      expectThrows(() => map.calibrate(ok, big), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /key: row 0 is too large/ });
      expect(map.parameters).toBeNull();
    }
  });

  test('fromProjection with rows whose squared norms exceed 1e30: RangeError, not Infinity / NaN features', () => {
    const projection = new Float32Array([0.5, 0, -3e38, 1]);
    expectThrows(() => FeatureMap.fromProjection(projection, { headDim: 2, numFeatures: 2 }), {
      name: 'RangeError',
      code: 'ERR_OUT_OF_RANGE',
      message: /projection: row 1 is too large/,
    });
    expect(FeatureMap.fromProjection(new Float32Array([0.5, 0, 9e14, 1]), { headDim: 2, numFeatures: 2 }).numFeatures).toBe(2);
  });
});
