/**
 * Running a decoding step on DecodingStates: each state is checked (its model, not in use),
 * marked busy while an async step writes it, advanced only when the step ran, and the
 * step's output checked for float32 overflow. A step of one state is a batched step of
 * one session.
 */
import { describe, rangeError, stateError, typeError } from '../errors';
import type { Tensor } from '../tensor';
import { DecodingState } from './decoding';

/** @internal Rejects a state of another model, or one in use by an async step; `name` names the argument. */
export function checkState(state: unknown, model: string, name: string): asserts state is DecodingState {
  if (!(state instanceof DecodingState)) throw typeError(`${name}: expected a DecodingState, received ${describe(state)}`);
  if (state.model !== model) {
    throw rangeError(`${name}: made by a different model or before its parameters or features changed`, 'ERR_INVALID_ARG_VALUE');
  }
  if (state.busy) throw stateError(`${name}: an async step is using it; await that step first`);
}

/**
 * @internal The states of a batched step: an array (of `kind`) of distinct states, at least
 * one, each passing `check` (given the argument's name, e.g. `fn states[2]`).
 */
export function readStateList<S>(states: unknown, fn: string, kind: string, check: (state: unknown, name: string) => void): S[] {
  if (!Array.isArray(states)) throw typeError(`${fn} states: expected an array of ${kind}, received ${describe(states)}`);
  if (states.length === 0) throw rangeError(`${fn} states: expected at least one state, received none`);
  const seen = new Set<unknown>();
  states.forEach((state, i) => {
    check(state, `${fn} states[${i}]`);
    if (seen.has(state)) throw rangeError(`${fn} states[${i}]: the same state appears twice; each session advances once per step`, 'ERR_INVALID_ARG_VALUE');
    seen.add(state);
  });
  return states as S[];
}

/** @internal How a step takes its states: one (`step`, argument `state`) or many (`stepBatch`, argument `states`). */
export type StepStates = 'state' | 'states';

/** @internal The checked states of a step, as a list. */
export function readStepStates(states: unknown, model: string, fn: string, arg: StepStates): DecodingState[] {
  if (arg === 'states') return readStateList<DecodingState>(states, fn, 'DecodingState', (state, name) => checkState(state, model, name));
  checkState(states, model, `${fn} state`);
  return [states];
}

/** @internal The rows of a step's input: the states' batches, in order. */
export function stepRows(states: readonly DecodingState[]): number {
  return states.reduce((rows, s) => rows + s.batch, 0);
}

/**
 * @internal Runs a step of `states` (their rows in order in `out`); every state advances by
 * n only when the pass runs. The output is checked afterwards: a pass that overflowed
 * float32 has absorbed its tokens (position included), and the step throws a RangeError
 * instead of returning NaN or infinity.
 */
export async function runStep(states: readonly DecodingState[], n: number, out: Tensor, fn: string, run: () => Promise<void>): Promise<void> {
  for (const state of states) state.busy = true;
  try {
    await run();
    for (const state of states) state.position += n;
  } finally {
    for (const state of states) state.busy = false;
  }
  checkStepOutput(out, states, fn);
}

/** @internal */
export function runStepSync(states: readonly DecodingState[], n: number, out: Tensor, fn: string, run: () => void): void {
  run();
  for (const state of states) state.position += n;
  checkStepOutput(out, states, fn);
}

function checkStepOutput(out: Tensor, states: readonly DecodingState[], fn: string): void {
  const d = out.data;
  let probe = 0;
  for (let i = 0; i < d.length; i++) probe += d[i] * 0; // NaN iff some value is not finite
  if (probe === 0) return;
  const i = d.findIndex((v) => !Number.isFinite(v));
  // The session whose rows hold index i (rows of each state in order, batch rows apiece).
  const perRow = d.length / stepRows(states);
  let k = 0;
  let end = states[0].batch * perRow;
  while (i >= end) end += states[++k].batch * perRow;
  const where = states.length === 1 ? '' : ` (states[${k}])`;
  const who = states.length === 1 ? 'the state has' : 'every state of the step has';
  throw rangeError(
    `${fn} output: ${Number.isNaN(d[i]) ? 'NaN' : 'infinity'} at flat index ${i}${where}; the pass overflowed float32 (weights or inputs too large); ` +
      `${who} absorbed the tokens (position ${states[k].position})`,
  );
}
