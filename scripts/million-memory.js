#!/usr/bin/env node
// The benchmark's `--suite million` shape (L = 2^20, one head, d = 64, default features):
// one bidirectional and one causal FAVOR call, then the output is dropped and gc() runs.
// Prints resident memory before, at the peak and after, and exits 1 when it does not
// return within the limit (MB, default 8) of the level before the calls.
// Usage: node --expose-gc scripts/million-memory.js [limitMB]   (re-runs itself with the flag)
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

if (typeof global.gc !== 'function') {
  const r = spawnSync(process.execPath, ['--expose-gc', __filename, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const pa = require(path.resolve(__dirname, '..', 'dist'));
const limitMB = Number(process.argv[2] ?? 8);
const L = 1 << 20;
const d = 64;
const MB = 2 ** 20;
const rss = () => process.memoryUsage().rss;

// gc() frees array buffers on a background thread: give it a moment.
async function settle() {
  for (let i = 0; i < 3; i++) {
    global.gc();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return rss();
}

function tensor(seed) {
  const data = new Float32Array(L * d);
  let x = seed;
  for (let i = 0; i < data.length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    data[i] = (x / 4294967296 - 0.5) * 2;
  }
  return { data, shape: [1, 1, L, d] };
}

(async () => {
  const q = tensor(1);
  const k = tensor(2);
  const v = tensor(3);
  // Warm-up at a small size: addon, default feature map, thread pool, workspaces.
  const small = (t) => ({ data: t.data.subarray(0, 256 * d), shape: [1, 1, 256, d] });
  await pa.favorAttention(small(q), small(k), small(v));
  await pa.favorAttention(small(q), small(k), small(v), { causal: true });
  const before = await settle();
  let peak = before;
  const t0 = Date.now();
  for (const causal of [false, true]) {
    let out = await pa.favorAttention(q, k, v, { causal });
    if (!out.data.every(Number.isFinite)) throw new Error('non-finite output');
    peak = Math.max(peak, rss());
    out = null;
  }
  const seconds = (Date.now() - t0) / 1000;
  const after = await settle();
  const report = {
    L,
    headDim: d,
    seconds,
    rssBeforeMB: +(before / MB).toFixed(1),
    rssPeakMB: +(peak / MB).toFixed(1),
    rssAfterMB: +(after / MB).toFixed(1),
    deltaMB: +((after - before) / MB).toFixed(1),
    limitMB,
  };
  console.log(JSON.stringify(report));
  process.exit(after - before <= limitMB * MB ? 0 : 1);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
