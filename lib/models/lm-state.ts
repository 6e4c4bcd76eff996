/**
 * The decoding state of a PerformerLM (one sequence): per layer the FAVOR+ states of
 * the global heads, the ring of recent keys and values of the local heads and the
 * last rows that token shift reads; the token history when the model needs it to
 * recompute its prefix; and a count of those recomputes. Serializes like every
 * DecodingState (versioned, checksummed, tied to the model's fingerprint).
 */
import { stateError } from '../errors';
import { DecodingState, type StateArray, type StateDtype } from '../layers/decoding';
import type { LayerState, PerformerStack } from './stack';

/** @internal The arrays of a state: names, dtypes and lengths, for a model and position. */
export function lmStateSpec(stack: PerformerStack, keepsHistory: boolean, position: number): { name: string; dtype: StateDtype; length: number }[] {
  const c = stack.config;
  const spec: { name: string; dtype: StateDtype; length: number }[] = [{ name: 'stats', dtype: 'i32', length: 1 }];
  if (keepsHistory) spec.push({ name: 'tokens', dtype: 'i32', length: position });
  stack.layers.forEach((layer, l) => {
    const gh = stack.globalHeads(l);
    if (gh > 0 && c.causal) spec.push({ name: `layers.${l}.global`, dtype: 'f32', length: gh * stack.globalStateFloats() });
    if (layer.localHeads > 0 && c.causal) spec.push({ name: `layers.${l}.local`, dtype: 'f32', length: layer.localHeads * stack.localRingFloats() });
    if (c.shiftTokens && c.causal) {
      spec.push({ name: `layers.${l}.shift.attn`, dtype: 'f32', length: c.dim });
      spec.push({ name: `layers.${l}.shift.ff`, dtype: 'f32', length: c.dim });
    }
  });
  return spec;
}

/**
 * The state of one generation session of a {@link PerformerLM}: what `step` and
 * `generate` advance. Its size does not grow with the context, except for the token
 * history (4 bytes a token) that a model keeps when it must recompute its prefix
 * (performer-pytorch numerics with FAVOR+ heads below the top layer, or a model that
 * is not causal).
 */
export class PerformerLMState extends DecodingState {
  /** @internal Set when a step failed half way: the arrays no longer describe a prefix. */
  broken = false;

  /** Prefix recomputes this session needed (see the README: performer-pytorch numerics). */
  get recomputes(): number {
    return this.array<Int32Array>('stats')[0];
  }

  /** A copy of the tokens absorbed so far, when the model keeps them (else null). */
  get tokens(): Int32Array | null {
    return this.history()?.slice() ?? null;
  }

  /** @internal The token history itself (the plans read it; callers never see it). */
  history(): Int32Array | null {
    const found = this.arrays.find((a) => a.name === 'tokens');
    return found ? (found.data as Int32Array) : null;
  }

  /** @internal Appends tokens to the history (amortized: the array grows by doubling). */
  appendTokens(tokens: Int32Array): void {
    const entry = this.arrays.find((a) => a.name === 'tokens');
    if (entry === undefined) return;
    const old = entry.data as Int32Array;
    const length = old.length + tokens.length;
    let next: Int32Array;
    if (old.byteOffset + length * 4 <= old.buffer.byteLength && old.byteOffset === 0) {
      next = new Int32Array(old.buffer, 0, length);
    } else {
      const buffer = new Int32Array(Math.max(16, 2 * length));
      buffer.set(old);
      next = buffer.subarray(0, length);
    }
    next.set(tokens, old.length);
    entry.data = next;
  }

  /** @internal The layer arrays as the stack's plan uses them. */
  layerStates(stack: PerformerStack): LayerState[] {
    const find = (name: string) => (this.arrays.find((a) => a.name === name)?.data as Float32Array | undefined) ?? null;
    return stack.layers.map((_, l) => ({
      global: find(`layers.${l}.global`),
      local: find(`layers.${l}.local`),
      shiftAttn: find(`layers.${l}.shift.attn`),
      shiftFf: find(`layers.${l}.shift.ff`),
      maxRose: new Uint8Array(1),
    }));
  }

  /** @internal Overwrites the layer arrays with those of `states` (a rebuilt prefix). */
  replaceLayers(states: LayerState[]): void {
    states.forEach((s, l) => {
      const pairs: [string, Float32Array | null][] = [
        [`layers.${l}.global`, s.global],
        [`layers.${l}.local`, s.local],
        [`layers.${l}.shift.attn`, s.shiftAttn],
        [`layers.${l}.shift.ff`, s.shiftFf],
      ];
      for (const [name, data] of pairs) {
        if (data !== null) (this.array<Float32Array>(name)).set(data);
      }
    });
  }

  /** @internal Counts one recompute. */
  countRecompute(): void {
    this.array<Int32Array>('stats')[0]++;
  }

  /** @internal Throws when a failed step left the state unusable (`what` names it, e.g. 'PerformerLM.step state'). */
  checkUsable(what: string): void {
    if (this.broken) {
      throw stateError(`${what}: a step failed part way and left this state unusable; create a new state or load a saved one`);
    }
  }

  /**
   * The state as bytes (see DecodingState.serialize).
   * @throws Error (`ERR_INVALID_STATE`) while a step uses the state, or after a failed step broke it.
   */
  override serialize(): Uint8Array {
    this.checkUsable('PerformerLMState.serialize');
    return super.serialize();
  }

  /**
   * A copy that decodes on independently (see DecodingState.clone).
   * @throws Error (`ERR_INVALID_STATE`) while a step uses the state, or after a failed step broke it.
   */
  override clone(): this {
    this.checkUsable('PerformerLMState.clone');
    return super.clone();
  }
}

/** @internal A fresh state with the given arrays. */
export function makeLMState(model: string, arrays: StateArray[]): PerformerLMState {
  return new PerformerLMState(model, 1, arrays);
}
