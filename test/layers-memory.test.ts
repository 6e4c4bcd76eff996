// 10 000 layer calls (after 10 000 of warm-up) of mixed small sizes (forward of encoder and decoder stacks, sync and
// async, FAVOR+ and softmax, some aborted; decoding steps; serialize / loadState; parameters /
// loadParameters) in a child process: resident memory after warm-up grows under 10 MB.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const DIST = path.resolve(__dirname, '..', 'dist');

const SCRIPT = `
const pa = require(${JSON.stringify(DIST)});
const D = 16;
const encoder = new pa.TransformerEncoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 32, seed: 1 });
const decoder = new pa.TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 32, seed: 2 });
const attention = new pa.MultiHeadAttention({ modelDim: D, numHeads: 4, causal: true, seed: 3 });
const t = (i, B, L) => { const a = new Float32Array(B * L * D); for (let j = 0; j < a.length; ++j) a[j] = Math.sin(i + j); return { data: a, shape: [B, L, D] }; };
let state = null, selfState = null;
async function run(from, to) {
  for (let i = from; i < to; ++i) {
    const B = 1 + (i % 2), L = 1 + (i * 7) % 40, memory = t(i + 1, B, 1 + (i % 9));
    const kind = i % 10;
    if (kind === 0) {
      const c = new AbortController();
      const p = encoder.forward(t(i, B, L), { signal: c.signal, attention: i % 20 ? 'favor' : 'softmax' });
      if (i % 30 === 0) c.abort();
      await p.catch(() => undefined);
    } else if (kind === 1) await decoder.forward(t(i, B, L), { memory, attention: i % 3 ? 'favor' : 'softmax' });
    else if (kind === 2) encoder.forwardSync(t(i, B, L), { attention: i % 4 ? 'favor' : 'softmax' });
    else if (kind === 3) decoder.forwardSync(t(i, B, L), { memory });
    else if (kind === 4) state = decoder.createStateSync(1, { memory: t(i, 1, 1 + (i % 9)) });
    else if (kind === 5 || kind === 6) {
      if (state) await decoder.step(t(i, 1, 1 + (i % 3)), state);
      selfState = selfState && i % 50 ? selfState : attention.createStateSync(2);
      attention.stepSync(t(i, 2, 1), selfState);
    } else if (kind === 7) { if (state) state = decoder.loadState(state.serialize()); }
    else if (kind === 8) attention.forwardSync(t(i, B, L));
    else if (i % 100 === 9) encoder.loadParameters(encoder.parameters());
    else try { decoder.stepSync(t(i, 3, 1), state); } catch (e) { if (!e.code) throw e; } // wrong batch: a coded error
  }
}
(async () => {
  // 8 blocks of 2 500 calls, resident memory after each (collected first). Warm-up (pools,
  // per-thread scratch, plan caches, allocator arenas, JIT) takes the first 10 000 calls;
  // the baseline is the median of the samples after 5 000, 7 500 and 10 000 calls, the end
  // the median of those after 15 000, 17 500 and 20 000 (single samples move by a few MB
  // as the allocator trims and refills its arenas).
  const rss = [];
  const started = Date.now();
  for (let block = 0; block < 8; ++block) {
    await run(block * 2500, (block + 1) * 2500);
    global.gc();
    rss.push(process.memoryUsage().rss);
  }
  const median = (a) => [...a].sort((x, y) => x - y)[1];
  console.log(JSON.stringify({ before: median(rss.slice(1, 4)), after: median(rss.slice(5, 8)), rss, ms: Date.now() - started }));
})();
`;

test('10 000 layer calls after warm-up: resident memory grows under 10 MB', () => {
  const child = spawnSync(process.execPath, ['--expose-gc', '-e', SCRIPT], { encoding: 'utf8', timeout: 60000, env: { ...process.env, PERFORMER_ATTENTION_THREADS: '2' } });
  expect(child.stderr).toBe('');
  expect(child.status).toBe(0);
  const { before, after, rss, ms } = JSON.parse(child.stdout.trim()) as { before: number; after: number; rss: number[]; ms: number };
  const mb = (n: number) => (n / 2 ** 20).toFixed(1);
  console.log(`layer memory: rss ${mb(before)} MB -> ${mb(after)} MB over 10 000 layer calls after 10 000 of warm-up (samples ${rss.map(mb).join(', ')} MB; ${ms} ms in all)`);
  expect(after - before).toBeLessThan(10 * 2 ** 20);
}, 70000);
