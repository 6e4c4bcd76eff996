/**
 * Layer plans: a forward pass is built in TypeScript as a list of native steps
 * (projections, layer norms, head reshapes, attention) and run by the addon in one
 * call, synchronously or off the event loop (one async hop per pass, not per step).
 * Temporaries come from a process-wide cache of Float32Arrays (workspace.ts), so
 * repeated passes of the same shapes touch no fresh pages.
 */
import { pinBuffers, runAbortable } from '../async-call';
import { native } from '../native';
import { newFloat32Array } from '../validate';
import { giveBack, takeCached } from '../workspace';

import type { PlanStep } from './plan-steps';

export type { PlanStep } from './plan-steps';

/**
 * @internal Collects steps and their temporaries. Steps run in the order they are
 * added, so a temporary released after its last use may serve a later step.
 */
export class PlanBuilder {
  readonly steps: PlanStep[] = [];
  private readonly owned: Float32Array[] = [];
  private readonly free = new Map<number, Float32Array[]>();

  /**
   * `rowStable`: a decoding step. Its linear layers sum every row in one order whatever
   * the number of rows, so a step of many sessions gives each the bits of its own step.
   */
  constructor(private readonly options: { rowStable?: boolean } = {}) {}

  add(step: PlanStep): void {
    this.steps.push(step.op === 'linear' && this.options.rowStable ? { ...step, rowStable: true } : step);
  }

  /**
   * Last step of a pass: the output (which the library allocated) must be finite. Finite
   * inputs and weights can still overflow float32 on the way (a LayerNorm gain of 1e38, a
   * residual sum); that is a RangeError, never NaN or infinity handed back.
   */
  checkOutput(out: Float32Array, fn: string): void {
    this.steps.push({ op: 'checkFinite', x: out, name: `${fn} output`, why: 'the pass overflowed float32 (weights or inputs too large)', output: true });
  }

  /** A temporary of `length` floats (contents undefined). */
  acquire(length: number): Float32Array {
    const reused = this.free.get(length)?.pop();
    if (reused !== undefined) return reused;
    const buffer = takeCached(length) ?? newFloat32Array(length, 'pass temporaries');
    this.owned.push(buffer);
    return buffer;
  }

  /** `buffer` is not read or written by any step added after this call. */
  release(buffer: Float32Array): void {
    let list = this.free.get(buffer.length);
    if (list === undefined) this.free.set(buffer.length, (list = []));
    list.push(buffer);
  }

  runSync(): void {
    try {
      native().runPlanSync(this.steps);
    } finally {
      giveBack(this.owned);
    }
  }

  /**
   * Off the event loop. `atomic`: once running, the plan is not stopped by the signal
   * (a multi-layer decoding step must advance every layer's state or none).
   */
  async run(signal: AbortSignal | undefined, atomic = false): Promise<void> {
    // The caller's arrays (checked inputs, masks) stay in the worker's hands until it
    // is done: they must not be transferred away meanwhile (see pinBuffers).
    const caller: ArrayBufferView[] = [];
    for (const step of this.steps) {
      if (step.op === 'checkFinite' && step.output !== true) caller.push(step.x);
      const fields = step as { options?: { keyPadding?: Uint8Array | null; keep?: Uint8Array | null }; keep?: Uint8Array | null; tokens?: Int32Array };
      const options = fields.options;
      // Masks and token ids come from the caller too.
      for (const array of [options?.keyPadding, options?.keep, fields.keep, fields.tokens]) {
        if (ArrayBuffer.isView(array)) caller.push(array);
      }
    }
    pinBuffers(caller);
    try {
      // An atomic plan that started has advanced its states: it resolves even if the
      // signal aborted while it ran (an abort before it starts still rejects).
      await runAbortable((control) => native().runPlanAsync(this.steps, control, atomic), signal, atomic);
    } finally {
      giveBack(this.owned);
    }
  }
}
