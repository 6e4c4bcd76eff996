/**
 * Readers of the inputs every layer's calls share: a decoding batch, [B, L, width]
 * sequences, the attention kind, padding masks, and an attention call's keys and values.
 * Each names the argument in its errors.
 */
import { rangeError, typeError } from '../errors';
import type { Tensor } from '../tensor';
import { formatShape, readEnum, readInteger, readMask, readTensor } from '../validate';
import type { AttentionKind, KeySource, MultiHeadAttentionConfig } from './multi-head-attention';
import type { PlanBuilder } from './plan';

/** @internal The attention kinds a layer computes. */
export const ATTENTION_KINDS: readonly AttentionKind[] = ['favor', 'softmax'];

/** @internal A decoding state's batch: required, 1 to 2^20. */
export function readBatch(value: unknown, name: string): number {
  if (value === undefined) throw typeError(`${name}: required, received undefined`);
  return readInteger(value, name, 0, 1, 1 << 20);
}

/** @internal Reads [B, L, width] (the legend names the dims). */
export function readSequence(value: unknown, name: string, width: number, widthName: string, batch?: number): Tensor {
  const t = readTensor(value, name, 3, `[batch, seq, ${widthName}]`);
  const [B, , W] = t.shape;
  if (W !== width || (batch !== undefined && B !== batch)) {
    const expected = [batch ?? B, t.shape[1], width];
    throw rangeError(`${name}: expected shape ${formatShape(expected)} ([batch, seq, ${widthName}]), received ${formatShape(t.shape)}`);
  }
  return t;
}

/** @internal */
export function readKind(value: unknown, name: string, fallback: AttentionKind): AttentionKind {
  return readEnum(value, name, fallback, ATTENTION_KINDS);
}

/** @internal */
export function readPadding(value: unknown, name: string, batch: number, length: number): Uint8Array | null {
  return value === undefined ? null : readMask(value, name, [batch, length]);
}

/**
 * @internal The keys and values of an attention call: x itself (self-attention), one
 * memory, or separate key and value inputs. Checks widths, batch and lengths, and adds
 * the finiteness checks of the inputs to the plan.
 */
export function readKeyInputs(
  c: MultiHeadAttentionConfig,
  o: { memory?: unknown; key?: unknown; value?: unknown },
  B: number,
  fn: string,
  b: PlanBuilder,
): { keys: KeySource; key: Tensor | null; value: Tensor | null } {
  const read = (value: unknown, name: string, width: number, widthName: string) => {
    const t = readSequence(value, `${fn} options.${name}`, width, widthName, B);
    b.add({ op: 'checkFinite', x: t.data, shape: t.shape, name: `${fn} options.${name}` });
    return t;
  };
  if (o.key !== undefined || o.value !== undefined) {
    if (o.memory !== undefined) throw typeError(`${fn} options: pass either memory or key and value, not both`, 'ERR_INVALID_ARG_VALUE');
    if (o.key === undefined) throw typeError(`${fn} options.key: required with options.value, received undefined`);
    if (o.value === undefined) throw typeError(`${fn} options.value: required with options.key, received undefined`);
    const key = read(o.key, 'key', c.keyDim, 'keyDim');
    const value = read(o.value, 'value', c.valueDim, 'valueDim');
    if (value.shape[1] !== key.shape[1]) {
      throw rangeError(`${fn} options.value: expected ${key.shape[1]} rows (the key's), received ${value.shape[1]} (shape [${value.shape.join(', ')}])`);
    }
    return { keys: { kind: 'pair', key: key.data, value: value.data, length: key.shape[1] }, key, value };
  }
  if (o.memory !== undefined) {
    if (c.keyDim !== c.valueDim) {
      throw rangeError(`${fn} options.memory: keys and values have different widths here (keyDim ${c.keyDim}, valueDim ${c.valueDim}); pass key and value`, 'ERR_INVALID_ARG_VALUE');
    }
    const m = read(o.memory, 'memory', c.keyDim, 'keyDim');
    return { keys: { kind: 'memory', data: m.data, length: m.shape[1] }, key: m, value: null };
  }
  if (c.keyDim !== c.modelDim) throw rangeError(`${fn} options.memory: required, since keyDim ${c.keyDim} differs from modelDim ${c.modelDim}`);
  if (c.valueDim !== c.modelDim) throw rangeError(`${fn} options.key and options.value: required, since valueDim ${c.valueDim} differs from modelDim ${c.modelDim}`);
  return { keys: { kind: 'self' }, key: null, value: null };
}
