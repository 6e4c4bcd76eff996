/**
 * Watching an async call's progress through its output, without clocks: the caller
 * passes an `out` filled with NaN (attention of finite inputs is finite), so the
 * elements that are no longer NaN are the ones the native worker has written so far.
 */

/** An output for a call whose progress is watched: every element NaN. */
export function unwritten(length: number): Float32Array {
  return new Float32Array(length).fill(NaN);
}

/** Elements of an {@link unwritten} output that the call has written. */
export function written(out: Float32Array): number {
  let n = 0;
  for (let i = 0; i < out.length; i++) if (out[i] === out[i]) n++;
  return n;
}

/** A flag that turns true once `promise` has settled (and handles its rejection). */
export function settledFlag(promise: Promise<unknown>): { settled: boolean } {
  const flag = { settled: false };
  const settle = () => void (flag.settled = true);
  promise.then(settle, settle);
  return flag;
}

/** One turn of the event loop (timers, I/O and other immediates get their turn first). */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Turns of the event loop until `condition()` holds. */
export async function turnsUntil(condition: () => boolean): Promise<void> {
  while (!condition()) await nextTurn();
}
