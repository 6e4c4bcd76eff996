/**
 * Token ids as the language model takes them: a batch `{ data: Int32Array, shape: [B, L] }`
 * for forward passes, a list (Int32Array, Uint8Array, Uint16Array or array) for steps and
 * prompts. Always copied: a call's worker reads them after the call has returned.
 */
import { describe, rangeError, typeError } from '../errors';
import { formatShape } from '../validate';

/** @internal Reads token ids (an Int32Array, Uint8Array, Uint16Array or array of integers) in [0, numTokens). */
export function readTokenList(value: unknown, name: string, numTokens: number): Int32Array {
  let tokens: Int32Array;
  if (value instanceof Int32Array) {
    tokens = value.slice(); // the worker reads them after the call returns: the caller may change theirs
  } else if (value instanceof Uint8Array || value instanceof Uint16Array) {
    tokens = Int32Array.from(value); // bytes of a byte-level model, or 16-bit ids
  } else if (Array.isArray(value)) {
    tokens = new Int32Array(value.length);
    value.forEach((t, i) => {
      if (typeof t !== 'number' || !Number.isInteger(t)) throw typeError(`${name}[${i}]: expected an integer token id, received ${describe(t)}`);
      tokens[i] = t;
      if (tokens[i] !== t) throw rangeError(`${name}[${i}]: token ${t} is outside [0, ${numTokens})`);
    });
  } else {
    throw typeError(`${name}: expected token ids as an Int32Array, Uint8Array, Uint16Array or array of integers, received ${describe(value)}`);
  }
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] < 0 || tokens[i] >= numTokens) throw rangeError(`${name}[${i}]: token ${tokens[i]} is outside [0, ${numTokens})`);
  }
  return tokens;
}

/** @internal Reads `{ data: Int32Array, shape: [B, L] }` with ids in [0, numTokens). */
export function readTokens(value: unknown, name: string, numTokens: number): { data: Int32Array; shape: [number, number] } {
  const t = value as { data?: unknown; shape?: unknown; dims?: unknown };
  if (value === null || typeof value !== 'object' || !(t.data instanceof Int32Array)) {
    throw typeError(`${name}: expected { data: Int32Array, shape: [batch, length] }, received ${describe(value)}`);
  }
  const shape = (t.shape ?? t.dims) as unknown;
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isInteger(d) && d >= 1)) {
    throw rangeError(`${name}: expected shape [batch, length] with sizes >= 1, received ${Array.isArray(shape) ? formatShape(shape) : describe(shape)}`);
  }
  const [B, L] = shape as number[];
  if (t.data.length !== B * L) throw rangeError(`${name}: data length ${t.data.length} does not match shape ${formatShape(shape)}`);
  const data = t.data.slice(); // the worker reads them after the call returns: the caller may change theirs
  for (let i = 0; i < data.length; i++) {
    if (data[i] < 0 || data[i] >= numTokens) {
      throw rangeError(`${name}: token ${data[i]} at [${Math.floor(i / L)}, ${i % L}] is outside [0, ${numTokens})`);
    }
  }
  return { data, shape: [B, L] };
}

/** @internal Reads next-token targets `{ data: Int32Array, shape: [B, L] }`: ids in [0, numTokens), or negative to leave a position out. */
export function readTargets(value: unknown, name: string, numTokens: number, batch: number, len: number): Int32Array {
  const t = value as { data?: unknown; shape?: unknown; dims?: unknown };
  if (value === null || typeof value !== 'object' || !(t.data instanceof Int32Array)) {
    throw typeError(`${name}: expected { data: Int32Array, shape: [batch, length] }, received ${describe(value)}`);
  }
  const shape = (t.shape ?? t.dims) as unknown;
  if (!Array.isArray(shape) || shape.length !== 2 || shape[0] !== batch || shape[1] !== len || t.data.length !== batch * len) {
    throw rangeError(`${name}: expected shape [${batch}, ${len}] (the tokens' shape), received ${Array.isArray(shape) ? formatShape(shape) : describe(shape)}`);
  }
  const data = t.data.slice();
  for (let i = 0; i < data.length; i++) {
    if (data[i] >= numTokens) throw rangeError(`${name}: target ${data[i]} at [${Math.floor(i / len)}, ${i % len}] is outside [0, ${numTokens}) (negative ids are left out)`);
    if (data[i] < 0) data[i] = -1;
  }
  return data;
}
