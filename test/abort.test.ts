// AbortSignal on the async calls: already aborted -> immediate AbortError; a
// queued call skips its work; a running one stops at its next block.
import { favorAttention, favorAttentionSync, FeatureMap, softmaxAttention, softmaxAttentionSync } from '../lib';
import { expectRejects, expectThrows } from './helpers/errors';
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
// Large enough that a full call takes a good fraction of a second.
const big = makeInputs(2, { B: 1, H: 2, Lq: 6144, Lk: 6144, d: 64, Dv: 64 });

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

test('a running softmax call stops at its next block', async () => {
  let t = performance.now();
  await softmaxAttention(big.q, big.k, big.v);
  const full = performance.now() - t;
  const controller = new AbortController();
  t = performance.now();
  const promise = softmaxAttention(big.q, big.k, big.v, { signal: controller.signal });
  setTimeout(() => controller.abort(), 5);
  expectAbortError(await rejection(promise), controller.signal.reason);
  expect(performance.now() - t).toBeLessThan(full / 2);
  // The library still works, and the same arrays give the full result.
  const again = await softmaxAttention(small.q, small.k, small.v);
  expect(again.data).toEqual(softmaxAttentionSync(small.q, small.k, small.v).data);
});

test('a running causal FAVOR call stops at its next block', async () => {
  const map = new FeatureMap({ headDim: 64, numFeatures: 256, seed: 1 });
  const controller = new AbortController();
  const promise = favorAttention(big.q, big.k, big.v, { featureMap: map, causal: true, chunkSize: 1, signal: controller.signal });
  setTimeout(() => controller.abort(), 5);
  expectAbortError(await rejection(promise), controller.signal.reason);
});

test('a queued call is dropped: its output is never written', async () => {
  // Outputs first (filling them takes milliseconds), then the long call, given time to
  // hold the pool; each queued call is aborted as soon as it is made, so none can reach
  // the pool before its abort (which a call made while others are still being built could).
  const outs = Array.from({ length: 6 }, () => new Float32Array(big.q.data.length).fill(7));
  const running = softmaxAttention(big.q, big.k, big.v);
  await new Promise((resolve) => setTimeout(resolve, 20));
  const queued = outs.map((out) => {
    const controller = new AbortController();
    const promise = softmaxAttention(big.q, big.k, big.v, { out: { data: out, shape: big.q.shape }, signal: controller.signal });
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
});
