/**
 * The performer-pytorch fixtures (test/fixtures/performer-pytorch): cases made by the
 * real package (see that folder's README). The io files hold I64 tokens, BOOL masks
 * and F64 outputs, which the library's reader does not convert: this reads them raw.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const FIXTURES = path.join(__dirname, '..', 'fixtures', 'performer-pytorch');

export interface FixtureCase {
  cls: 'PerformerLM' | 'Performer';
  ctor: Record<string, unknown>;
  inputs: Record<string, number[]>;
  torch_f32_rel_error?: number;
  heldout_targets?: number[][];
  heldout_bits_per_byte?: number;
  greedy_prompt?: number[];
  greedy_continuation?: number[];
}

export function fixtureCases(): Record<string, FixtureCase> {
  const read = (file: string) => JSON.parse(fs.readFileSync(path.join(FIXTURES, file), 'utf8')) as Record<string, FixtureCase>;
  return { ...read('cases.json'), ...read('generated-cases.json') };
}

export type RawTensor =
  | { dtype: 'F32'; shape: number[]; data: Float32Array }
  | { dtype: 'F64'; shape: number[]; data: Float64Array }
  | { dtype: 'I64'; shape: number[]; data: Int32Array }
  | { dtype: 'BOOL'; shape: number[]; data: Uint8Array };

/** Every tensor of a safetensors file, I64 narrowed to int32 (token ids fit). */
export function readRaw(file: string): Record<string, RawTensor> {
  const bytes = fs.readFileSync(path.join(FIXTURES, file));
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.toString('utf8', 8, 8 + n)) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const base = 8 + n;
  const out: Record<string, RawTensor> = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = info.data_offsets;
    const chunk = bytes.subarray(base + begin, base + end);
    const count = info.shape.reduce((a, b) => a * b, 1);
    if (info.dtype === 'F32') {
      const data = new Float32Array(count);
      for (let i = 0; i < count; i++) data[i] = chunk.readFloatLE(4 * i);
      out[name] = { dtype: 'F32', shape: info.shape, data };
    } else if (info.dtype === 'F64') {
      const data = new Float64Array(count);
      for (let i = 0; i < count; i++) data[i] = chunk.readDoubleLE(8 * i);
      out[name] = { dtype: 'F64', shape: info.shape, data };
    } else if (info.dtype === 'I64') {
      const data = new Int32Array(count);
      for (let i = 0; i < count; i++) data[i] = Number(chunk.readBigInt64LE(8 * i));
      out[name] = { dtype: 'I64', shape: info.shape, data };
    } else if (info.dtype === 'BOOL') {
      out[name] = { dtype: 'BOOL', shape: info.shape, data: Uint8Array.from(chunk) };
    } else {
      throw new Error(`${file}: ${name} has dtype ${info.dtype}`);
    }
  }
  return out;
}

/** The state_dict file's path. */
export function weightsPath(name: string): string {
  return path.join(FIXTURES, `${name}.state_dict.safetensors`);
}

/** Relative Frobenius error of `a` against the reference `ref`. */
export function relativeError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (a[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/**
 * Held-out bits per byte of the trained fixture (lm_trained_small) under `lm`: the mean
 * next-byte cross-entropy in bits over the fixture's held-out targets.
 */
export function heldOutBitsPerByte(lm: { forwardSync(tokens: { data: Int32Array; shape: number[] }): { data: Float32Array } }): number {
  const c = fixtureCases().lm_trained_small;
  const t = readRaw('lm_trained_small.io.safetensors')['inputs/tokens'];
  const logits = lm.forwardSync({ data: t.data as Int32Array, shape: [...t.shape] }).data;
  const V = (c.ctor as { num_tokens: number }).num_tokens;
  let total = 0;
  let count = 0;
  c.heldout_targets!.forEach((row, b) =>
    row.forEach((target, i) => {
      const l = logits.subarray((b * t.shape[1] + i) * V, (b * t.shape[1] + i + 1) * V);
      const max = Math.max(...l);
      const lse = Math.log(l.reduce((s, v) => s + Math.exp(v - max), 0)) + max;
      total += (lse - l[target]) / Math.LN2;
      count++;
    }),
  );
  return total / count;
}
