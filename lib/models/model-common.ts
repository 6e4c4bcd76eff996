/**
 * What PerformerLM and Performer share: options, reading a checkpoint into a stack,
 * parameters under state_dict names, the fingerprint that decoding states carry.
 */
import { rangeError } from '../errors';
import { FeatureMap } from '../feature-map';
import { readEnum, readOptions } from '../validate';
import { crc32 } from '../crc32';
import type { WeightFormat } from '../quantization';
import type { Tensor } from '../tensor';
import { CheckpointReader, RandomSource, readWeights, type TensorSource } from './checkpoint';
import type { Numerics } from './stack';

/** Options of `fromPerformerPytorch`. */
export interface PerformerPytorchOptions {
  /**
   * `'performer-pytorch'` (default): the outputs performer-pytorch gives, epsilons and all
   * (models trained there lean on them). `'exact'`: this library's FAVOR+.
   */
  numerics?: Numerics;
}

/** Options of `random` (models with random weights, for benchmarks and tests). */
export interface RandomModelOptions extends PerformerPytorchOptions {
  /** Seed of the weights and features. Default 0. */
  seed?: number;
}

const NUMERICS: readonly Numerics[] = ['performer-pytorch', 'exact'];

/** @internal */
export function readModelOptions(options: unknown, fn: string, random: boolean): { numerics: Numerics; seed: number } {
  const o = readOptions<RandomModelOptions>(options, `${fn} options`, random ? ['numerics', 'seed'] : ['numerics']);
  const numerics = readEnum(o.numerics, `${fn} options.numerics`, 'performer-pytorch', NUMERICS);
  const seed = o.seed ?? 0;
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw rangeError(`${fn} options.seed: expected an integer from 0 to 2^53 - 1, received ${String(seed)}`);
  }
  return { numerics, seed };
}

/**
 * @internal A source of tensors: the checkpoint (with its aliases), or random values. A
 * checkpoint whose names all carry one prefix before `anchor` (a wrapper's state_dict,
 * e.g. AutoregressiveWrapper's `net.`) is read without it.
 */
export function tensorSource(weights: unknown, fn: string, aliases: [string, string][], seed: number | null, anchor?: string): TensorSource {
  if (seed !== null) {
    return new RandomSource(seed, (rows, cols, s) => new FeatureMap({ headDim: cols, numFeatures: rows, seed: s }).projection!);
  }
  const reader = new CheckpointReader(readWeights(weights, fn), fn, aliases);
  if (anchor !== undefined && !reader.has(anchor)) {
    const names = reader.names();
    const found = names.filter((n) => n.endsWith(`.${anchor}`));
    const prefix = found.length === 1 ? found[0].slice(0, -anchor.length) : '';
    if (prefix !== '' && names.every((n) => n.startsWith(prefix))) reader.stripPrefix(prefix);
  }
  return reader;
}

/** @internal Copies of the tensors a model took, under their state_dict names. */
export function parameterCopies(source: TensorSource): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, t] of source.taken) out[name] = { data: Float32Array.from(t.data), shape: t.shape };
  return out;
}

/** @internal CRC-32 of a configuration, the numerics and every tensor. */
export function modelFingerprint(kind: string, config: object, numerics: Numerics, source: TensorSource, format: WeightFormat): string {
  // The format too: the kernels of int8 or bf16 weights sum in their own order.
  let c = crc32(Buffer.from(JSON.stringify({ kind, config, numerics, ...(format !== 'float32' ? { format } : {}) })));
  for (const [name, t] of [...source.taken].sort(([a], [b]) => (a < b ? -1 : 1))) {
    c = crc32(Buffer.from(name), c);
    c = crc32(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), c);
  }
  return `${kind}:${c.toString(16).padStart(8, '0')}`;
}
