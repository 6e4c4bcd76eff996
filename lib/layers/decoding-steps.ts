/**
 * Running a decoding step on a DecodingState: the state is checked (its model, not in use),
 * marked busy while an async step writes it, advanced only when the step ran, and the
 * step's output checked for float32 overflow.
 */
import { describe, rangeError, stateError, typeError } from '../errors';
import type { Tensor } from '../tensor';
import { DecodingState } from './decoding';

/** @internal Rejects a state of another model, or one in use by an async step. */
export function checkState(state: unknown, model: string, fn: string): asserts state is DecodingState {
  if (!(state instanceof DecodingState)) throw typeError(`${fn} state: expected a DecodingState, received ${describe(state)}`);
  if (state.model !== model) {
    throw rangeError(`${fn} state: made by a different model or before its parameters or features changed`, 'ERR_INVALID_ARG_VALUE');
  }
  if (state.busy) throw stateError(`${fn} state: an async step is using it; await that step first`);
}

/**
 * @internal Runs a step; the state advances only when the pass runs. The output is checked
 * afterwards: a pass that overflowed float32 has absorbed its tokens (position included),
 * and the step throws a RangeError instead of returning NaN or infinity.
 */
export async function runStep(state: DecodingState, n: number, out: Tensor, fn: string, run: () => Promise<void>): Promise<void> {
  state.busy = true;
  try {
    await run();
    state.position += n;
  } finally {
    state.busy = false;
  }
  checkStepOutput(out, state, fn);
}

/** @internal */
export function runStepSync(state: DecodingState, n: number, out: Tensor, fn: string, run: () => void): void {
  run();
  state.position += n;
  checkStepOutput(out, state, fn);
}

function checkStepOutput(out: Tensor, state: DecodingState, fn: string): void {
  const d = out.data;
  let probe = 0;
  for (let i = 0; i < d.length; i++) probe += d[i] * 0; // NaN iff some value is not finite
  if (probe === 0) return;
  const i = d.findIndex((v) => !Number.isFinite(v));
  throw rangeError(
    `${fn} output: ${Number.isNaN(d[i]) ? 'NaN' : 'infinity'} at flat index ${i}; the pass overflowed float32 (weights or inputs too large); ` +
      `the state has absorbed the tokens (position ${state.position})`,
  );
}
