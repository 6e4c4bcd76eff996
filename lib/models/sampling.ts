/**
 * Choosing the next token from logits: greedy (temperature 0) or sampling with a
 * temperature, top-k and top-p (nucleus) filters, from a seeded generator so that a
 * seed gives the same tokens on every machine.
 */
import { randomInt } from 'node:crypto';

import { describe, rangeError, typeError } from '../errors';
import { readInteger, readNumber } from '../validate';

/** How {@link PerformerLM.generate} picks tokens. */
export interface SamplingOptions {
  /** 0 (default) picks the most likely token (greedy; ties go to the lowest id); above 0 samples from softmax(logits / temperature). */
  temperature?: number;
  /** Sample among the k most likely tokens only. Default: all. */
  topK?: number;
  /** Sample among the most likely tokens whose probabilities sum to at least topP (0 < topP <= 1). Default 1. */
  topP?: number;
  /** Seed of the sampling generator (0 to 2^53 - 1). Default: a random seed. */
  seed?: number;
}

/** @internal Resolved sampling options. */
export interface Sampler {
  temperature: number;
  topK: number;
  topP: number;
  random: () => number;
}

/** Everything a {@link TokenSampler} needs to continue where it stopped (JSON-safe). */
export interface TokenSamplerState {
  /** 0 is greedy; see {@link SamplingOptions.temperature}. */
  temperature: number;
  /** Present when sampling (temperature above 0). */
  topK?: number;
  /** Present when sampling (temperature above 0). */
  topP?: number;
  /** Seed of the sampling generator. */
  seed: number;
  /** Random numbers drawn so far (one per sampled token; greedy draws none). */
  draws: number;
}

/**
 * Picks tokens from logits as {@link PerformerLM.generate} does (same options, same
 * generator), one call at a time: for callers that step sessions themselves, e.g. with
 * `stepBatch`. `state()` is JSON-safe; a sampler made from it continues the same sequence of
 * tokens, in another process too.
 */
export class TokenSampler {
  /** @internal */
  private readonly sampler: Sampler;
  /** @internal */
  private readonly numTokens: number;
  /** @internal */
  private readonly seed: number;
  /** @internal */
  private draws: number;

  /** @internal Use {@link PerformerLM.sampler}. */
  constructor(options: SamplingOptions & { draws?: number }, numTokens: number, fn: string) {
    const seed = options.seed === undefined ? randomInt(2 ** 47) : options.seed;
    this.sampler = readSampler({ ...options, seed }, fn, numTokens);
    this.numTokens = numTokens;
    this.seed = seed;
    const draws = readInteger(options.draws, `${fn} options.draws`, 0, 0, Number.MAX_SAFE_INTEGER);
    const random = this.sampler.random;
    for (let i = 0; i < draws; i++) random();
    this.draws = draws;
    this.sampler.random = () => {
      this.draws++;
      return random();
    };
  }

  /**
   * The next token for `logits` (the numTokens logits of one position).
   * @throws TypeError / RangeError when `logits` is not a Float32Array of numTokens values.
   */
  next(logits: Float32Array): number {
    if (!(logits instanceof Float32Array)) throw typeError(`TokenSampler.next logits: expected a Float32Array, received ${describe(logits)}`);
    if (logits.length !== this.numTokens) {
      throw rangeError(`TokenSampler.next logits: expected ${this.numTokens} values (num_tokens), received ${logits.length}`);
    }
    return sample(logits, this.sampler);
  }

  /** The options, seed and draws so far: pass to `lm.sampler()` to continue. */
  state(): TokenSamplerState {
    const s = this.sampler;
    const filters = s.temperature > 0 ? { topK: s.topK, topP: s.topP } : {};
    return { temperature: s.temperature, ...filters, seed: this.seed, draws: this.draws };
  }
}

/** @internal xoshiro128** on 32-bit words, seeded through splitmix32: uniform doubles in [0, 1). */
export function seededRandom(seed: number): () => number {
  let x = (seed % 2 ** 32) >>> 0;
  const high = Math.floor(seed / 2 ** 32) >>> 0;
  const split = () => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x ^ high;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  const s = [split(), split(), split(), split()];
  if (!s.some((v) => v !== 0)) s[0] = 1;
  const rotl = (v: number, k: number) => ((v << k) | (v >>> (32 - k))) >>> 0;
  const next = () => {
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  };
  return () => (next() * 2 ** 21 + (next() >>> 11)) / 2 ** 53;
}

/** @internal Reads the sampling options (numTokens bounds topK). */
export function readSampler(o: SamplingOptions, fn: string, numTokens: number): Sampler {
  const temperature = readNumber(o.temperature, `${fn} options.temperature`, 0, { min: 0 });
  const topK = readInteger(o.topK, `${fn} options.topK`, numTokens, 1, Number.MAX_SAFE_INTEGER);
  const topP = readNumber(o.topP, `${fn} options.topP`, 1, { min: 0, minExclusive: true, max: 1 });
  const seed = o.seed === undefined ? randomInt(2 ** 47) : readInteger(o.seed, `${fn} options.seed`, 0, 0, Number.MAX_SAFE_INTEGER);
  if (temperature === 0 && (o.topK !== undefined || o.topP !== undefined)) {
    throw rangeError(`${fn} options: topK and topP filter sampling; with temperature 0 (greedy) they have no effect, set a temperature above 0`, 'ERR_INVALID_ARG_VALUE');
  }
  return { temperature, topK: Math.min(topK, numTokens), topP, random: seededRandom(seed) };
}

/** @internal The next token for `logits`. */
export function sample(logits: Float32Array, s: Sampler): number {
  if (s.temperature === 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  // Candidates by decreasing logit (ties by id), cut to top-k.
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b).slice(0, s.topK);
  const max = logits[order[0]];
  const weights = order.map((i) => Math.exp((logits[i] - max) / s.temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  // Nucleus: the shortest prefix whose probability reaches topP.
  let keep = order.length;
  if (s.topP < 1) {
    let sum = 0;
    for (let r = 0; r < order.length; r++) {
      sum += weights[r] / total;
      if (sum >= s.topP) {
        keep = r + 1;
        break;
      }
    }
  }
  const kept = weights.slice(0, keep).reduce((a, b) => a + b, 0);
  let u = s.random() * kept;
  for (let r = 0; r < keep; r++) {
    u -= weights[r];
    if (u < 0) return order[r];
  }
  return order[keep - 1];
}
