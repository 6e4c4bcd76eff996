/**
 * Running native async calls: pinning the caller's buffers while a worker uses them,
 * cancelling through an AbortSignal, and reading that signal from options. Every async
 * entry point (attention functions, backward passes, layer and model plans) goes through here.
 */
import { isSharedArrayBuffer } from 'node:util/types';
import { markAsUntransferable } from 'node:worker_threads';

import { abortError, describe, typeError } from './errors';

/**
 * @internal An options' `signal`: undefined or an AbortSignal, duck-typed (an AbortSignal
 * from another realm, jest's or a vm's, fails instanceof). `name` names it in the error.
 */
export function readSignal(value: unknown, name: string): AbortSignal | undefined {
  if (value === undefined) return undefined;
  const s = value as { aborted?: unknown; addEventListener?: unknown };
  if (value === null || typeof value !== 'object' || typeof s.aborted !== 'boolean' || typeof s.addEventListener !== 'function') {
    throw typeError(`${name}: expected an AbortSignal, received ${describe(value)}`);
  }
  return value as AbortSignal;
}

/** @internal */
export type NativeAsync = (...args: never[]) => Promise<Float32Array>;

/**
 * The native worker reads the inputs and writes `out` in place while the Promise is pending.
 * Transferring one of their ArrayBuffers away then (postMessage or structuredClone with a
 * transfer list) would let its new owner free memory the worker still uses. Marking the
 * buffers untransferable (O(1), no copy) makes Node copy them instead whenever they are
 * transferred, during the call or later (Node 21 and later refuse instead); SharedArrayBuffers
 * are never detached. Outputs the library allocates are nobody else's until the Promise
 * settles, so only the caller's own arrays are marked.
 * @internal
 */
export function pinBuffers(arrays: readonly (ArrayBufferView | null)[]): void {
  for (const a of arrays) {
    if (a !== null && !isSharedArrayBuffer(a.buffer)) markAsUntransferable(a.buffer);
  }
}

/**
 * @internal Runs a native async call under an optional signal: `start` receives the
 * control object that gets cancel() from the addon, called on abort. The addon keeps
 * every array alive until its worker finishes, aborted or not. `committed`: a call that
 * completes has changed state the caller keeps (an atomic plan, which the addon stops only
 * before it starts), so its completion stands even when the signal aborted meanwhile.
 */
export async function runAbortable<T>(
  start: (control?: { cancel?: () => void }) => Promise<T>,
  signal: AbortSignal | undefined,
  committed = false,
): Promise<T> {
  if (signal === undefined) return start();
  if (signal.aborted) throw abortError(signal.reason);
  const control: { cancel?: () => void } = {};
  const promise = start(control);
  const onAbort = () => control.cancel?.();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const result = await promise;
    // Aborted after the last check: the result is complete, but the caller asked to abort.
    if (signal.aborted && !committed) throw abortError(signal.reason);
    return result;
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ABORT_ERR' || signal.aborted) throw abortError(signal.reason);
    throw error;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** @internal */
export function runAsync(call: NativeAsync, args: readonly unknown[], signal: AbortSignal | undefined): Promise<Float32Array> {
  const fn = call as (...a: unknown[]) => Promise<Float32Array>;
  return runAbortable((control) => (control ? fn(...args, control) : fn(...args)), signal);
}
