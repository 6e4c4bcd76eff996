#!/usr/bin/env node
// `npm run test:leak`: node under valgrind --leak-check=full running a small JS
// workload of the attention calls and layers (sync, async, aborted, decoding steps,
// serialized states); fails on any definitely
// lost block or memory error. About 10 s. Needs valgrind and a built dist/.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const dist = path.resolve(__dirname, '..', 'dist');
const workload = `
const pa = require(${JSON.stringify(dist)});
const t = (n, L) => ({ data: new Float32Array(L * n).map((_, j) => Math.sin(j)), shape: [1, 1, L, n] });
(async () => {
  for (let i = 0; i < 30; ++i) {
    const q = t(8, 20 + i), k = t(8, 20 + i), v = t(4, 20 + i);
    pa.favorAttentionSync(q, k, v);
    pa.softmaxAttentionSync(q, k, v, { causal: true });
    await pa.favorAttention(q, k, v);
    const c = new AbortController();
    c.abort();
    await pa.softmaxAttention(q, k, v, { signal: c.signal }).catch(() => 0);
  }
  const dec = new pa.TransformerDecoder({ modelDim: 16, numHeads: 2, numLayers: 2, featureMap: { numFeatures: 16 } });
  const x = { data: new Float32Array(3 * 16).fill(0.1), shape: [1, 3, 16] };
  const memory = { data: new Float32Array(5 * 16).fill(0.2), shape: [1, 5, 16] };
  for (let i = 0; i < 10; ++i) {
    dec.forwardSync(x, { memory, attention: i % 2 ? 'softmax' : 'favor' });
    await dec.forward(x, { memory });
    const state = await dec.createState(1, { memory });
    dec.stepSync(x, state);
    await dec.step(x, state);
    dec.loadState(state.serialize());
    const c = new AbortController();
    c.abort();
    await dec.forward(x, { memory, signal: c.signal }).catch(() => 0);
  }
})();
`;
const run = spawnSync(
  'valgrind',
  ['--leak-check=full', '--errors-for-leak-kinds=definite', '--error-exitcode=99', process.execPath, '-e', workload],
  { encoding: 'utf8' },
);
if (run.error) {
  console.error(`valgrind could not run: ${run.error.message}`);
  process.exit(1);
}
const summary = run.stderr.split('\n').filter((l) => /definitely lost|ERROR SUMMARY/.test(l));
console.log(summary.join('\n'));
process.exit(run.status === 0 ? 0 : 1);
