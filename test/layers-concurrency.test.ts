// The layers under concurrency: hundreds of async forward passes and decoding steps
// interleaved with sync calls give the sequential bits; the layer classes work from
// several worker_threads at once (same seed and parameters, same bits everywhere); a
// worker terminated with async layer calls queued goes away without disturbing the
// other threads.
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import { TransformerDecoder, TransformerEncoder, type DecodingState, type Tensor } from '../lib';
import { Rng } from './helpers/reference';

const DIST = path.resolve(__dirname, '..', 'dist');
const D = 16;

function same(a: Float32Array, b: Float32Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

function sequence(rng: Rng, B: number, L: number): Tensor {
  const data = new Float32Array(B * L * D);
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  return { data, shape: [B, L, D] };
}

test('300 async layer calls (encoder and decoder stacks, FAVOR+ and softmax, decoding steps) interleaved with sync calls equal the sequential results', async () => {
  const rng = new Rng(11);
  const encoder = new TransformerEncoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 32, seed: 3, featureMap: { numFeatures: 16 } });
  const decoder = new TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 32, seed: 4, activation: 'gelu', normFirst: true });
  const problems = Array.from({ length: 8 }, (_, i) => {
    const B = 1 + (i % 2);
    const mask = new Uint8Array(B * (5 + i)).map((_, j) => (j % 4 === 3 ? 0 : 1));
    return { x: sequence(rng, B, 20 + 9 * i), memory: sequence(rng, B, 5 + i), memoryKeyPaddingMask: { data: mask, shape: [B, 5 + i] } };
  });
  const kinds = ['favor', 'softmax'] as const;
  // Sequential results first.
  const expected = problems.map((p) =>
    kinds.map((attention) => ({
      encoder: encoder.forwardSync(p.x, { attention }).data,
      decoder: decoder.forwardSync(p.x, { memory: p.memory, memoryKeyPaddingMask: p.memoryKeyPaddingMask, attention }).data,
    })),
  );
  // Decoding: 12 sessions of 6 steps (a prompt chunk, then tokens), sequential first.
  const sessions = Array.from({ length: 12 }, (_, s) => {
    const p = problems[s % problems.length];
    const B = p.x.shape[0];
    return { p, steps: [sequence(rng, B, 1 + (s % 5)), ...Array.from({ length: 5 }, () => sequence(rng, B, 1))] };
  });
  const newState = (s: (typeof sessions)[number]) => decoder.createStateSync(s.p.x.shape[0], { memory: s.p.memory, memoryKeyPaddingMask: s.p.memoryKeyPaddingMask });
  const expectedSteps = sessions.map((s) => {
    const state = newState(s);
    return s.steps.map((x) => decoder.stepSync(x, state).data);
  });

  const pending: Promise<boolean>[] = [];
  // Each session's steps run in order on its own state; sessions run concurrently with everything else.
  const states: DecodingState[] = await Promise.all(sessions.map((s) => decoder.createState(s.p.x.shape[0], { memory: s.p.memory, memoryKeyPaddingMask: s.p.memoryKeyPaddingMask })));
  sessions.forEach((s, i) => {
    pending.push(
      (async () => {
        let ok = true;
        for (const [j, x] of s.steps.entries()) ok = same((await decoder.step(x, states[i])).data, expectedSteps[i][j]) && ok;
        return ok;
      })(),
    );
  });
  let syncChecks = 0;
  for (let n = 0; n < 300; ++n) {
    const i = n % problems.length;
    const k = (n >> 3) % 2;
    const p = problems[i];
    const attention = kinds[k];
    if (n % 2 === 0) pending.push(encoder.forward(p.x, { attention }).then((r) => same(r.data, expected[i][k].encoder)));
    else pending.push(decoder.forward(p.x, { memory: p.memory, memoryKeyPaddingMask: p.memoryKeyPaddingMask, attention }).then((r) => same(r.data, expected[i][k].decoder)));
    // Sync calls (and a sync decoding session) between the async ones, checked at once.
    if (n % 10 === 0) {
      expect(same(encoder.forwardSync(p.x, { attention }).data, expected[i][k].encoder)).toBe(true);
      const s = sessions[(n / 10) % sessions.length];
      const state = newState(s);
      expect(same(decoder.stepSync(s.steps[0], state).data, expectedSteps[(n / 10) % sessions.length][0])).toBe(true);
      syncChecks += 2;
    }
  }
  const results = await Promise.all(pending);
  expect(results).toHaveLength(300 + sessions.length);
  expect(results.filter((ok) => !ok)).toHaveLength(0);
  expect(syncChecks).toBe(60);
  for (const [i, state] of states.entries()) expect(state.position).toBe(sessions[i].steps.reduce((n, x) => n + x.shape[1], 0));
}, 30000);

// A worker that builds the models from a seed, loads the parameters it is given, and runs
// `count` async forward passes (encoder FAVOR+, decoder softmax) and a decoding session on
// fixed inputs; it reports the bits of each kind of result and how many variants it saw.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const pa = require(workerData.dist);
const D = ${D};
const encoder = new pa.TransformerEncoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 32, seed: 3 });
const decoder = new pa.TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 32, seed: 4 });
encoder.loadParameters(workerData.encoderParameters);
decoder.loadParameters(workerData.decoderParameters);
const t = (L, f) => { const a = new Float32Array(L * D); for (let i = 0; i < a.length; ++i) a[i] = f(i); return { data: a, shape: [1, L, D] }; };
const x = t(workerData.L, (i) => Math.sin(i)), memory = t(7, (i) => Math.cos(i * 1.3));
const calls = [];
for (let c = 0; c < workerData.count; ++c) {
  calls.push(encoder.forward(x).then((r) => ['encoder', r]));
  calls.push(decoder.forward(x, { memory, attention: 'softmax' }).then((r) => ['decoder', r]));
}
calls.push((async () => {
  const state = await decoder.createState(1, { memory });
  let last;
  for (let s = 0; s < 8; ++s) last = await decoder.step(t(1, (i) => Math.sin(i + s)), state);
  return ['steps', last];
})());
parentPort.postMessage({ queued: calls.length });
Promise.all(calls).then((rs) => {
  const bits = {};
  for (const [kind, r] of rs) (bits[kind] = bits[kind] || new Set()).add(Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength).toString('base64'));
  const out = {};
  for (const kind of Object.keys(bits)) out[kind] = { distinct: bits[kind].size, first: [...bits[kind]][0] };
  parentPort.postMessage({ done: true, out });
});
`;

type WorkerResult = Record<string, { distinct: number; first: string }>;

function parametersOf(seedEncoder: TransformerEncoder, seedDecoder: TransformerDecoder) {
  return { encoderParameters: seedEncoder.parameters(), decoderParameters: seedDecoder.parameters() };
}

function runWorker(L: number, count: number, parameters: ReturnType<typeof parametersOf>) {
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { dist: DIST, L, count, ...parameters } });
  let onQueued: () => void = () => undefined;
  const queued = new Promise<void>((resolve) => (onQueued = resolve));
  const result = new Promise<WorkerResult>((resolve, reject) => {
    worker.on('message', (m) => (m.queued ? onQueued() : resolve(m.out)));
    worker.on('error', reject);
  });
  return { worker, result, queued };
}

/** What every worker must compute, on the main thread. */
function mainThreadBits(L: number, parameters: ReturnType<typeof parametersOf>): Record<string, string> {
  const encoder = new TransformerEncoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 32, seed: 3 });
  const decoder = new TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 32, seed: 4 });
  encoder.loadParameters(parameters.encoderParameters);
  decoder.loadParameters(parameters.decoderParameters);
  const t = (n: number, f: (i: number) => number): Tensor => ({ data: Float32Array.from({ length: n * D }, (_, i) => f(i)), shape: [1, n, D] });
  const x = t(L, (i) => Math.sin(i));
  const memory = t(7, (i) => Math.cos(i * 1.3));
  const state = decoder.createStateSync(1, { memory });
  let last: Tensor | undefined;
  for (let s = 0; s < 8; ++s) last = decoder.stepSync(t(1, (i) => Math.sin(i + s)), state);
  const b64 = (r: Tensor) => Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength).toString('base64');
  return { encoder: b64(encoder.forwardSync(x)), decoder: b64(decoder.forwardSync(x, { memory, attention: 'softmax' })), steps: b64(last!) };
}

// Parameters that differ from the seeded ones (so loading them matters), made on the main thread.
function trainedParameters() {
  const encoder = new TransformerEncoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 32, seed: 30 });
  const decoder = new TransformerDecoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 32, seed: 40 });
  return parametersOf(encoder, decoder);
}

test('four worker_threads run the layers at once and agree bit for bit with each other and the main thread', async () => {
  const parameters = trainedParameters();
  const workers = Array.from({ length: 4 }, () => runWorker(64, 10, parameters));
  const results = await Promise.all(workers.map((w) => w.result));
  await Promise.all(workers.map((w) => w.worker.terminate()));
  const expected = mainThreadBits(64, parameters);
  for (const r of results) {
    for (const kind of ['encoder', 'decoder', 'steps']) {
      expect({ kind, distinct: r[kind].distinct }).toEqual({ kind, distinct: 1 });
      expect(r[kind].first).toBe(expected[kind]);
    }
  }
}, 30000);

test('a worker terminated with async layer calls queued goes away; the other threads keep working', async () => {
  const parameters = trainedParameters();
  const doomed = runWorker(1024, 30, parameters);
  const healthy = runWorker(64, 10, parameters);
  await doomed.queued;
  await doomed.worker.terminate();
  const r = await healthy.result;
  await healthy.worker.terminate();
  const expected = mainThreadBits(64, parameters);
  for (const kind of ['encoder', 'decoder', 'steps']) {
    expect(r[kind].distinct).toBe(1);
    expect(r[kind].first).toBe(expected[kind]);
  }
  // The main thread's layers still work, async included.
  const encoder = new TransformerEncoder({ modelDim: D, numHeads: 2, numLayers: 2, ffDim: 32, seed: 3 });
  const x = sequence(new Rng(5), 1, 40);
  expect(same((await encoder.forward(x)).data, encoder.forwardSync(x).data)).toBe(true);
}, 30000);
