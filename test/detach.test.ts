// Inputs detached before an async call, transferred away or written while it runs.
import { MessageChannel } from 'node:worker_threads';

import { favorAttention, favorAttentionSync, FeatureMap, softmaxAttention, softmaxAttentionSync } from '../lib';
import { expectRejects, expectThrows } from './helpers/errors';
import { allFinite, makeInputs } from './helpers/reference';

const DETACHED = { name: 'TypeError', code: 'ERR_INVALID_STATE', message: /detached/ } as const;

function detach(a: Float32Array): void {
  structuredClone(a, { transfer: [a.buffer as ArrayBuffer] });
}

test('a detached input or output: TypeError ERR_INVALID_STATE, sync and async', async () => {
  for (const which of ['q', 'k', 'v', 'out'] as const) {
    const x = makeInputs(1, { B: 1, H: 2, Lq: 8, Lk: 8, d: 8, Dv: 4 });
    const out = { data: new Float32Array(64), shape: [1, 2, 8, 4] };
    detach(which === 'out' ? out.data : x[which].data);
    expectThrows(() => favorAttentionSync(x.q, x.k, x.v, { out }), DETACHED);
    expectThrows(() => softmaxAttentionSync(x.q, x.k, x.v, { out }), DETACHED);
    await expectRejects(favorAttention(x.q, x.k, x.v, { out }), DETACHED);
    await expectRejects(softmaxAttention(x.q, x.k, x.v, { out }), DETACHED);
  }
});

/** Transfers `a`'s buffer with structuredClone; returns what happened to the original. */
function tryTransfer(a: Float32Array): 'copied' | 'refused' | 'detached' {
  try {
    const clone = structuredClone(a, { transfer: [a.buffer as ArrayBuffer] });
    if (a.length === 0) return 'detached';
    return clone.buffer !== a.buffer ? 'copied' : 'detached';
  } catch (error) {
    // Node >= 21 refuses to transfer an untransferable buffer (DataCloneError).
    expect((error as Error).name).toBe('DataCloneError');
    return 'refused';
  }
}

test('transferring inputs and output while async calls run: the originals stay attached, results are exact', async () => {
  const map = new FeatureMap({ headDim: 64, numFeatures: 128, seed: 3 });
  const x = makeInputs(2, { B: 1, H: 2, Lq: 2048, Lk: 2048, d: 64, Dv: 64 });
  const favorExpected = favorAttentionSync(x.q, x.k, x.v, { featureMap: map }).data;
  const softmaxExpected = softmaxAttentionSync(x.q, x.k, x.v, { causal: true }).data;
  const out = { data: new Float32Array(favorExpected.length), shape: [1, 2, 2048, 64] };
  const favor = favorAttention(x.q, x.k, x.v, { featureMap: map, out });
  const softmax = softmaxAttention(x.q, x.k, x.v, { causal: true });
  // While both are pending: structuredClone with a transfer list, and postMessage with one.
  const outcomes = [tryTransfer(x.q.data), tryTransfer(out.data)];
  const { port1, port2 } = new MessageChannel();
  try {
    port1.postMessage(x.k.data, [x.k.data.buffer as ArrayBuffer]);
    outcomes.push(x.k.data.length === 0 ? 'detached' : 'copied');
  } catch (error) {
    expect((error as Error).name).toBe('DataCloneError');
    outcomes.push('refused');
  } finally {
    port1.close();
    port2.close();
  }
  expect(outcomes.filter((o) => o === 'detached')).toEqual([]);
  const [f, s] = await Promise.all([favor, softmax]);
  expect(f.data).toBe(out.data);
  expect(Buffer.from(f.data.buffer).equals(Buffer.from(favorExpected.buffer))).toBe(true);
  expect(Buffer.from(s.data.buffer).equals(Buffer.from(softmaxExpected.buffer))).toBe(true);
  // After the call the arrays are still usable (a transfer copies or is refused, never detaches).
  expect(tryTransfer(x.v.data)).not.toBe('detached');
  expect(favorAttentionSync(x.q, x.k, x.v, { featureMap: map }).data).toEqual(favorExpected);
});

test('inputs written while an async call runs: no crash, a finite result of the right shape', async () => {
  const x = makeInputs(4, { B: 1, H: 2, Lq: 2048, Lk: 2048, d: 32, Dv: 32 });
  const pending = [favorAttention(x.q, x.k, x.v), softmaxAttention(x.q, x.k, x.v)];
  for (let i = 0; i < x.q.data.length; i += 3) {
    x.q.data[i] = -x.q.data[i];
    x.v.data[i] = 0.5;
  }
  for (const r of await Promise.all(pending)) {
    expect(r.shape).toEqual([1, 2, 2048, 32]);
    expect(allFinite(r.data)).toBe(true);
  }
});

test('SharedArrayBuffer inputs are used in place by async calls (never detachable, not marked)', async () => {
  const x = makeInputs(5, { B: 1, H: 1, Lq: 64, Lk: 64, d: 16, Dv: 16 });
  const shared = (t: { data: Float32Array; shape: readonly number[] }) => {
    const data = new Float32Array(new SharedArrayBuffer(t.data.byteLength));
    data.set(t.data);
    return { data, shape: t.shape };
  };
  const expected = softmaxAttentionSync(x.q, x.k, x.v).data;
  const r = await softmaxAttention(shared(x.q), shared(x.k), shared(x.v));
  expect(r.data).toEqual(expected);
});
