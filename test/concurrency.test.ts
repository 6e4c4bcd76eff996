// Hundreds of async calls interleaved with sync ones give the sequential bits; the
// addon works from several worker_threads at once, and a worker terminated with
// calls still queued goes away cleanly while the others keep working.
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import { favorAttention, favorAttentionSync, FeatureMap, softmaxAttention, softmaxAttentionSync } from '../lib';
import { makeInputs } from './helpers/reference';

const DIST = path.resolve(__dirname, '..', 'dist');

function same(a: Float32Array, b: Float32Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

test('300 async calls interleaved with sync calls equal the sequential results', async () => {
  const map = new FeatureMap({ headDim: 16, numFeatures: 32, seed: 9 });
  const problems = Array.from({ length: 10 }, (_, i) => ({
    inputs: makeInputs(100 + i, { B: 1 + (i % 2), H: 1 + (i % 3), Lq: 50 + 37 * i, Lk: 60 + 29 * i, d: 16, Dv: 8 }),
    causal: i % 2 === 0,
  }));
  const expected = problems.map(({ inputs, causal }) => ({
    favor: favorAttentionSync(inputs.q, inputs.k, inputs.v, { featureMap: map, causal }).data,
    softmax: softmaxAttentionSync(inputs.q, inputs.k, inputs.v, { causal }).data,
  }));
  const pending: Promise<boolean>[] = [];
  for (let n = 0; n < 300; ++n) {
    const i = n % problems.length;
    const { inputs, causal } = problems[i];
    if (n % 2 === 0) {
      pending.push(favorAttention(inputs.q, inputs.k, inputs.v, { featureMap: map, causal }).then((r) => same(r.data, expected[i].favor)));
    } else {
      pending.push(softmaxAttention(inputs.q, inputs.k, inputs.v, { causal }).then((r) => same(r.data, expected[i].softmax)));
    }
    // A sync call between async ones, checked at once.
    if (n % 10 === 0) expect(same(softmaxAttentionSync(inputs.q, inputs.k, inputs.v, { causal }).data, expected[i].softmax)).toBe(true);
  }
  const results = await Promise.all(pending);
  expect(results.filter((ok) => !ok)).toHaveLength(0);
});

// A worker that runs `count` async calls on a fixed problem and reports a checksum of the bits.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const pa = require(workerData.dist);
const n = workerData.L * 16;
const q = new Float32Array(n), k = new Float32Array(n), v = new Float32Array(n);
for (let i = 0; i < n; ++i) { q[i] = Math.sin(i); k[i] = Math.cos(i * 1.3); v[i] = Math.sin(i * 0.7); }
const t = (data) => ({ data, shape: [1, 1, workerData.L, 16] });
const calls = [];
for (let c = 0; c < workerData.count; ++c) calls.push(pa.softmaxAttention(t(q), t(k), t(v)));
parentPort.postMessage({ queued: calls.length });
Promise.all(calls).then((rs) => {
  const bits = rs.map((r) => Buffer.from(r.data.buffer).toString('base64'));
  parentPort.postMessage({ done: true, distinct: new Set(bits).size, first: bits[0] });
});
`;

function runWorker(L: number, count: number): { worker: Worker; result: Promise<{ distinct: number; first: string }>; queued: Promise<void> } {
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { dist: DIST, L, count } });
  let onQueued: () => void = () => undefined;
  const queued = new Promise<void>((resolve) => (onQueued = resolve));
  const result = new Promise<{ distinct: number; first: string }>((resolve, reject) => {
    worker.on('message', (m) => (m.queued ? onQueued() : resolve(m)));
    worker.on('error', reject);
  });
  return { worker, result, queued };
}

test('four worker_threads use the addon at once and agree bit for bit', async () => {
  const workers = Array.from({ length: 4 }, () => runWorker(300, 25));
  const results = await Promise.all(workers.map((w) => w.result));
  await Promise.all(workers.map((w) => w.worker.terminate()));
  for (const r of results) {
    expect(r.distinct).toBe(1);
    expect(r.first).toBe(results[0].first);
  }
});

test('a worker terminated with queued calls goes away; other threads keep working', async () => {
  const doomed = runWorker(2048, 40);
  const healthy = runWorker(300, 25);
  await doomed.queued;
  await doomed.worker.terminate();
  const r = await healthy.result;
  expect(r.distinct).toBe(1);
  await healthy.worker.terminate();
  // The main thread's addon still works.
  const inputs = makeInputs(7, { B: 1, H: 1, Lq: 64, Lk: 64, d: 16, Dv: 4 });
  const a = await softmaxAttention(inputs.q, inputs.k, inputs.v);
  expect(same(a.data, softmaxAttentionSync(inputs.q, inputs.k, inputs.v).data)).toBe(true);
});
