#!/usr/bin/env node
// `npm run test:leak`: node under valgrind --leak-check=full running a small JS
// workload of the attention calls (sync, async, aborted); fails on any definitely
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
