// AbortSignal on the async calls: already aborted -> immediate AbortError; a
// queued call skips its work; a running one stops at its next block.
import { backendInfo, favorAttention, favorAttentionSync, FeatureMap, setBackend, softmaxAttention, softmaxAttentionSync } from '../lib';
import { expectRejects, expectThrows } from './helpers/errors';
import { settledFlag, turnsUntil, unwritten, written } from './helpers/progress';
import { makeInputs } from './helpers/reference';

function expectAbortError(error: unknown, reason: unknown): void {
  const e = error as { name?: string; code?: string; cause?: unknown };
  expect({ name: e.name, code: e.code }).toEqual({ name: 'AbortError', code: 'ABORT_ERR' });
  expect(e.cause).toBe(reason);
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

const small = makeInputs(1, { B: 1, H: 2, Lq: 40, Lk: 50, d: 8, Dv: 3 });
// Many blocks of rows per head (32 of the exact call's, 6144 FAVOR chunks of one row), so
// that a call aborted once it has written its first rows leaves most of its output unwritten.
const big = makeInputs(2, { B: 1, H: 2, Lq: 6144, Lk: 6144, d: 64, Dv: 64 });
const bigOut = big.q.shape; // [B, H, Lq, Dv]: Dv = d
const Dv = big.v.shape[3];

test('an already aborted signal rejects at once, for both calls', async () => {
  const reason = new Error('stop');
  const signal = AbortSignal.abort(reason);
  expectAbortError(await rejection(favorAttention(small.q, small.k, small.v, { signal })), reason);
  expectAbortError(await rejection(softmaxAttention(small.q, small.k, small.v, { signal })), reason);
});

test('the sync calls refuse a signal; a non-signal is a TypeError', async () => {
  const signal = new AbortController().signal;
  expectThrows(() => favorAttentionSync(small.q, small.k, small.v, { signal } as never), {
    name: 'TypeError',
    code: 'ERR_INVALID_ARG_VALUE',
    message: /unknown option 'signal'/,
  });
  expectThrows(() => softmaxAttentionSync(small.q, small.k, small.v, { signal } as never), {
    name: 'TypeError',
    code: 'ERR_INVALID_ARG_VALUE',
    message: /unknown option 'signal'/,
  });
  await expectRejects(softmaxAttention(small.q, small.k, small.v, { signal: {} as AbortSignal }), {
    name: 'TypeError',
    code: 'ERR_INVALID_ARG_TYPE',
    message: /options\.signal: expected an AbortSignal/,
  });
});

test('a signal that never aborts changes nothing', async () => {
  const map = new FeatureMap({ headDim: 8, seed: 4 });
  const signal = new AbortController().signal;
  const a = await favorAttention(small.q, small.k, small.v, { featureMap: map, signal });
  expect(a.data).toEqual(favorAttentionSync(small.q, small.k, small.v, { featureMap: map }).data);
  const b = await softmaxAttention(small.q, small.k, small.v, { signal, causal: true });
  expect(b.data).toEqual(softmaxAttentionSync(small.q, small.k, small.v, { causal: true }).data);
});

/**
 * Starts `call` with a NaN-filled output and aborts it once the worker has written part
 * of it. Returns the elements written when the abort was signalled and once the call
 * has settled, and the rejection.
 */
async function abortWhileRunning(
  call: (out: Float32Array, signal: AbortSignal) => Promise<unknown>,
): Promise<{ atAbort: number; atEnd: number; length: number; error: unknown; reason: unknown }> {
  const out = unwritten(big.q.data.length);
  const controller = new AbortController();
  const promise = call(out, controller.signal);
  const flag = settledFlag(promise);
  // Running: its first rows are written (or it settled, which the checks then report).
  await turnsUntil(() => flag.settled || written(out) > 0);
  controller.abort();
  // Counted after abort() returned: whatever is written from here on came after it.
  const atAbort = written(out);
  const error = await rejection(promise);
  return { atAbort, atEnd: written(out), length: out.length, error, reason: controller.signal.reason };
}

test('a running softmax call stops at its next block', async () => {
  const r = await abortWhileRunning((out, signal) => softmaxAttention(big.q, big.k, big.v, { out: { data: out, shape: bigOut }, signal }));
  expectAbortError(r.error, r.reason);
  // It was running when aborted, and wrote at most the block each pool thread had under
  // way (a block: 192 query rows of one head, between two checks of the signal:
  // kGroupRows in native/core/softmax_attention.cc), so most of the output was never computed.
  expect(r.atAbort).toBeGreaterThan(0);
  expect(r.atEnd - r.atAbort).toBeLessThanOrEqual(backendInfo().threads * 192 * Dv);
  expect(r.atEnd).toBeLessThan(r.length / 2);
  // The library still works, and the same arrays give the full result.
  const again = await softmaxAttention(small.q, small.k, small.v);
  expect(again.data).toEqual(softmaxAttentionSync(small.q, small.k, small.v).data);
});

test('a running causal FAVOR call stops at its next block', async () => {
  const map = new FeatureMap({ headDim: 64, numFeatures: 256, seed: 1 });
  const r = await abortWhileRunning((out, signal) =>
    favorAttention(big.q, big.k, big.v, { featureMap: map, causal: true, chunkSize: 1, out: { data: out, shape: bigOut }, signal }),
  );
  expectAbortError(r.error, r.reason);
  // A block is one chunk: with chunkSize 1, one row per pool thread after the abort.
  expect(r.atAbort).toBeGreaterThan(0);
  expect(r.atEnd - r.atAbort).toBeLessThanOrEqual(backendInfo().threads * 1 * Dv);
  expect(r.atEnd).toBeLessThan(r.length / 2);
});

test('a queued call is dropped: its output is never written', async () => {
  // A call is queued behind another while that one holds the pool's parallel region; a
  // pool of one thread has none (its calls run side by side), so this test takes two.
  const threads = backendInfo().threads;
  if (threads < 2) setBackend({ threads: 2 });
  try {
    // Outputs first (filling them takes milliseconds), then the long call, which holds the
    // pool once it has written rows; each queued call is aborted as soon as it is made, so
    // none can reach the pool before its abort (which a call made while others are still
    // being built could).
    const outs = Array.from({ length: 6 }, () => new Float32Array(big.q.data.length).fill(7));
    const runningOut = unwritten(big.q.data.length);
    const running = softmaxAttention(big.q, big.k, big.v, { out: { data: runningOut, shape: bigOut } });
    const flag = settledFlag(running);
    await turnsUntil(() => flag.settled || written(runningOut) > 0);
    expect(flag.settled).toBe(false);
    const queued = outs.map((out) => {
      const controller = new AbortController();
      const promise = softmaxAttention(big.q, big.k, big.v, { out: { data: out, shape: bigOut }, signal: controller.signal });
      controller.abort();
      return { controller, out, promise };
    });
    // Settled together: awaiting one by one would leave the others' rejections unhandled.
    const errors = await Promise.all(queued.map((call) => rejection(call.promise)));
    queued.forEach((call, i) => {
      expectAbortError(errors[i], call.controller.signal.reason);
      expect(call.out.every((x) => x === 7)).toBe(true);
    });
    await running;
    expect(written(runningOut)).toBe(runningOut.length);
  } finally {
    if (threads < 2) setBackend({ threads });
  }
});
