// 100 000 calls of mixed small sizes (sync and async, FAVOR and softmax, some
// aborted) in a child process: resident memory after warm-up grows under 10 MB.
// The warm-up is 40 000 calls: resident memory still climbs ~5 MB between 20 000
// and 40 000 calls (allocator arenas reaching their working size) and is flat
// after that, so a shorter warm-up counts that one-time climb as growth.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const DIST = path.resolve(__dirname, '..', 'dist');

const SCRIPT = `
const pa = require(${JSON.stringify(DIST)});
const maps = [8, 16].map((d) => new pa.FeatureMap({ headDim: d, numFeatures: 16, seed: 1 }));
function inputs(i) {
  const d = i % 2 ? 16 : 8, L = 1 + (i * 7) % 48, H = 1 + (i % 3);
  const t = (n) => { const a = new Float32Array(H * L * n); for (let j = 0; j < a.length; ++j) a[j] = Math.sin(i + j); return { data: a, shape: [1, H, L, n] }; };
  return { q: t(d), k: t(d), v: t(4), map: maps[i % 2] };
}
async function run(from, to) {
  for (let i = from; i < to; ++i) {
    const x = inputs(i);
    if (i % 10 === 0) {
      const c = new AbortController();
      const p = pa.softmaxAttention(x.q, x.k, x.v, { signal: c.signal });
      if (i % 20 === 0) c.abort();
      await p.catch(() => undefined);
    } else if (i % 2) pa.favorAttentionSync(x.q, x.k, x.v, { featureMap: x.map, causal: i % 4 === 1 });
    else pa.softmaxAttentionSync(x.q, x.k, x.v, { causal: i % 4 === 0 });
  }
}
(async () => {
  await run(0, 40000); // warm-up: pools, scratch, JIT, allocator arenas
  global.gc(); const before = process.memoryUsage().rss;
  await run(40000, 140000);
  global.gc(); const after = process.memoryUsage().rss;
  console.log(JSON.stringify({ before, after }));
})();
`;

test('100 000 calls after warm-up: resident memory grows under 10 MB', () => {
  const child = spawnSync(process.execPath, ['--expose-gc', '-e', SCRIPT], { encoding: 'utf8', timeout: 60000 });
  expect(child.status).toBe(0);
  const { before, after } = JSON.parse(child.stdout.trim()) as { before: number; after: number };
  console.log(`memory: rss ${(before / 2 ** 20).toFixed(1)} MB -> ${(after / 2 ** 20).toFixed(1)} MB over 100 000 calls`);
  expect(after - before).toBeLessThan(10 * 2 ** 20);
}, 70000);
