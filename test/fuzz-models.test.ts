// Seeded fuzz test of PerformerLM / Performer (see test/helpers/fuzz-model-cases.ts for
// the generators and the oracle). Each seed runs in its own child process so that a
// crash or a hang fails the test and names the case.
import { mergeRuns, runFuzzSeed } from './helpers/fuzz-runner';

const SEEDS = [1, 2];
const CASES_PER_SEED = 1000;

test('model fuzz: every case ends in a correct result or a coded error', async () => {
  const runs = await Promise.all(SEEDS.map((seed) => runFuzzSeed('test/helpers/fuzz-model-cases.ts', seed, CASES_PER_SEED, 60000)));
  const { cases, results, referenceChecks, errors, failures } = mergeRuns(SEEDS, runs);
  expect(failures).toEqual([]);
  console.log(`model fuzz: ${cases} cases (seeds ${SEEDS.join(', ')}): ${results} results (${referenceChecks} step/forward, sync/async or save/load comparisons), errors ${JSON.stringify(errors)}`);
  expect(cases).toBe(SEEDS.length * CASES_PER_SEED);
  // The generators must reach both outcomes often, and the comparisons must run.
  expect(results).toBeGreaterThan(cases / 3);
  expect(referenceChecks).toBeGreaterThan(cases / 5);
  expect(errors['RangeError ERR_INVALID_ARG_VALUE']).toBeGreaterThan(0);
  expect(errors['TypeError ERR_INVALID_ARG_TYPE']).toBeGreaterThan(0);
}, 90000);
