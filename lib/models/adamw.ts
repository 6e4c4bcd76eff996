/**
 * AdamW (decoupled weight decay, bias-corrected moments) over a model's trained tensors,
 * with gradient clipping by global norm and a learning-rate schedule (linear warm-up, then
 * constant, linear or cosine decay). Arithmetic in double, in a fixed order: the same
 * gradients give the same weights, bit for bit.
 */
import { rangeError, typeError } from '../errors';
import type { Tensor } from '../tensor';
import { readInteger, readNumber, readOptions } from '../validate';

/** What AdamW trains: a model's tensors with their accumulated gradients. */
export interface Trainable {
  /** @internal */
  trainables(): { name: string; param: Float32Array; grad: Float32Array }[];
  /** @internal Called after the parameters changed in place. */
  parametersChanged(): void;
  /** Sets the accumulated gradients to zero. */
  zeroGrad(): void;
  /** New random features (models with FAVOR+ attention). */
  redrawFeatures?(seed: number): void;
}

/** Options of {@link AdamW}. */
export interface AdamWOptions {
  /** Peak learning rate. Default 1e-3. */
  lr?: number;
  /** Exponential decay of the first and second moments. Default [0.9, 0.999]. */
  betas?: [number, number];
  /** Added to the root of the second moment. Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay (p -= lr * weightDecay * p). Default 0.01. */
  weightDecay?: number;
  /** Clip the gradients to this global L2 norm before the update. Default: no clipping. */
  maxGradNorm?: number;
  /** Steps of linear warm-up from 0 to lr. Default 0. */
  warmupSteps?: number;
  /** After warm-up: 'constant' (default), 'linear' or 'cosine' decay to minLr at totalSteps. */
  decay?: 'constant' | 'linear' | 'cosine';
  /** Steps of the whole schedule (required for 'linear' and 'cosine'). */
  totalSteps?: number;
  /** The learning rate at the end of a decay. Default 0. */
  minLr?: number;
  /**
   * Redraw the model's random features after every `every` steps (the paper's practice
   * during training; off by default, and keep it off when fine-tuning). Step t redraws
   * with seed `seed + t`. Default seed 0.
   */
  featureRedraw?: {
    /** Steps between redraws. */
    every: number;
    /** Base seed (step t uses seed + t). Default 0. */
    seed?: number;
  };
}

/** What one {@link AdamW.step} did. */
export interface StepReport {
  /** The steps taken so far (this one included). */
  step: number;
  /** The learning rate used. */
  lr: number;
  /** The gradients' global L2 norm before clipping. */
  gradNorm: number;
}

/** AdamW for a {@link PerformerLM} (or any model exposing its trained tensors). */
export class AdamW {
  private readonly o: Required<Omit<AdamWOptions, 'maxGradNorm' | 'totalSteps' | 'featureRedraw'>> & {
    maxGradNorm: number | null;
    totalSteps: number | null;
    redraw: { every: number; seed: number } | null;
  };
  private readonly moments = new Map<string, { m: Float32Array; v: Float32Array }>();
  private steps = 0;

  /**
   * @throws TypeError / RangeError for a bad option (learning rate, betas in [0, 1), a decay
   *   without totalSteps, ...).
   */
  constructor(
    private readonly model: Trainable,
    options: AdamWOptions = {},
  ) {
    const fn = 'AdamW options';
    const o = readOptions<AdamWOptions>(options, fn, ['lr', 'betas', 'eps', 'weightDecay', 'maxGradNorm', 'warmupSteps', 'decay', 'totalSteps', 'minLr', 'featureRedraw']);
    let redraw: { every: number; seed: number } | null = null;
    if (o.featureRedraw !== undefined) {
      const r = readOptions<{ every: number; seed?: number }>(o.featureRedraw, `${fn}.featureRedraw`, ['every', 'seed']);
      if (r.every === undefined) throw typeError(`${fn}.featureRedraw.every: required, received undefined`);
      if (typeof model.redrawFeatures !== 'function') throw typeError(`${fn}.featureRedraw: this model has no random features to redraw`, 'ERR_INVALID_ARG_VALUE');
      redraw = {
        every: readInteger(r.every, `${fn}.featureRedraw.every`, 1, 1, Number.MAX_SAFE_INTEGER),
        seed: readInteger(r.seed, `${fn}.featureRedraw.seed`, 0, 0, 2 ** 48),
      };
    }
    const betas = o.betas ?? [0.9, 0.999];
    if (!Array.isArray(betas) || betas.length !== 2) throw typeError(`${fn}.betas: expected [beta1, beta2]`);
    betas.forEach((b, i) => readNumber(b, `${fn}.betas[${i}]`, 0, { min: 0, max: 0.999999999 }));
    const decay = o.decay ?? 'constant';
    if (!['constant', 'linear', 'cosine'].includes(decay)) throw rangeError(`${fn}.decay: expected 'constant', 'linear' or 'cosine', received ${String(decay)}`, 'ERR_INVALID_ARG_VALUE');
    const totalSteps = o.totalSteps === undefined ? null : readNumber(o.totalSteps, `${fn}.totalSteps`, 0, { min: 1 });
    if (decay !== 'constant' && totalSteps === null) throw rangeError(`${fn}.totalSteps: required for '${decay}' decay`);
    this.o = {
      lr: readNumber(o.lr, `${fn}.lr`, 1e-3, { min: 0 }),
      betas: [betas[0], betas[1]],
      eps: readNumber(o.eps, `${fn}.eps`, 1e-8, { min: 0, minExclusive: true }),
      weightDecay: readNumber(o.weightDecay, `${fn}.weightDecay`, 0.01, { min: 0 }),
      maxGradNorm: o.maxGradNorm === undefined ? null : readNumber(o.maxGradNorm, `${fn}.maxGradNorm`, 0, { min: 0, minExclusive: true }),
      warmupSteps: readNumber(o.warmupSteps, `${fn}.warmupSteps`, 0, { min: 0 }),
      decay,
      totalSteps,
      minLr: readNumber(o.minLr, `${fn}.minLr`, 0, { min: 0 }),
      redraw,
    };
  }

  /** The steps taken so far. */
  get stepCount(): number {
    return this.steps;
  }

  /** The learning rate of step `step` (1-based) under the schedule. */
  learningRate(step: number): number {
    const { lr, warmupSteps, decay, totalSteps, minLr } = this.o;
    if (step <= warmupSteps) return (lr * step) / Math.max(1, warmupSteps);
    if (decay === 'constant' || totalSteps === null) return lr;
    const progress = Math.min(1, (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps));
    const shape = decay === 'linear' ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
    return minLr + (lr - minLr) * shape;
  }

  /**
   * Applies the accumulated gradients (clipped to maxGradNorm), then clears them.
   * @throws RangeError naming the first parameter whose gradient is NaN or infinite; the
   *   step is then not applied (weights, moments and gradients unchanged).
   */
  step(): StepReport {
    const items = this.model.trainables();
    let sum = 0;
    for (const { name, grad } of items) {
      for (let i = 0; i < grad.length; i++) {
        const g = grad[i];
        if (!Number.isFinite(g)) {
          throw rangeError(`AdamW.step: the gradient of ${name} is ${g} at index ${i}; the step was not applied`);
        }
        sum += g * g;
      }
    }
    const gradNorm = Math.sqrt(sum);
    const clip = this.o.maxGradNorm !== null && gradNorm > this.o.maxGradNorm ? this.o.maxGradNorm / gradNorm : 1;
    this.steps++;
    const t = this.steps;
    const lr = this.learningRate(t);
    const [b1, b2] = this.o.betas;
    const c1 = 1 - b1 ** t;
    const c2 = 1 - b2 ** t;
    const { eps, weightDecay } = this.o;
    for (const { name, param, grad } of items) {
      let state = this.moments.get(name);
      if (state === undefined) {
        state = { m: new Float32Array(param.length), v: new Float32Array(param.length) };
        this.moments.set(name, state);
      }
      const { m, v } = state;
      for (let i = 0; i < param.length; i++) {
        const g = grad[i] * clip;
        const mi = b1 * m[i] + (1 - b1) * g;
        const vi = b2 * v[i] + (1 - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const p = param[i] * (1 - lr * weightDecay);
        param[i] = p - (lr * (mi / c1)) / (Math.sqrt(vi / c2) + eps);
      }
    }
    this.model.parametersChanged();
    this.model.zeroGrad();
    const redraw = this.o.redraw;
    if (redraw !== null && t % redraw.every === 0) this.model.redrawFeatures!(redraw.seed + t);
    return { step: t, lr, gradNorm };
  }

  /** The optimizer's state as tensors (save with writeSafetensors): `step`, and per parameter `<name>.exp_avg` and `<name>.exp_avg_sq`. */
  state(): Record<string, Tensor> {
    const out: Record<string, Tensor> = { step: { data: Float32Array.of(this.steps), shape: [] } };
    for (const [name, s] of this.moments) {
      out[`${name}.exp_avg`] = { data: Float32Array.from(s.m), shape: [s.m.length] };
      out[`${name}.exp_avg_sq`] = { data: Float32Array.from(s.v), shape: [s.v.length] };
    }
    return out;
  }

  /**
   * Restores a state written by {@link state} (for the same model).
   * @throws RangeError for a missing step, or moments of an unknown parameter or of the wrong size.
   */
  loadState(tensors: Record<string, { data: Float32Array; shape?: readonly number[] }>): void {
    const fn = 'AdamW.loadState';
    const step = tensors?.step?.data?.[0];
    if (step === undefined || !Number.isInteger(step) || step < 0) throw rangeError(`${fn}: expected a tensor 'step' holding a non-negative integer`);
    const sizes = new Map(this.model.trainables().map((t) => [t.name, t.param.length]));
    const next = new Map<string, { m: Float32Array; v: Float32Array }>();
    for (const [key, t] of Object.entries(tensors)) {
      if (key === 'step') continue;
      const match = /^(.*)\.(exp_avg|exp_avg_sq)$/.exec(key);
      const size = match ? sizes.get(match[1]) : undefined;
      if (match === null || size === undefined) throw rangeError(`${fn}: '${key}' is not a moment of this model's parameters`);
      if (t.data.length !== size) throw rangeError(`${fn}: '${key}' has ${t.data.length} values, its parameter ${size}`);
      const entry = next.get(match[1]) ?? { m: new Float32Array(size), v: new Float32Array(size) };
      (match[2] === 'exp_avg' ? entry.m : entry.v).set(t.data);
      next.set(match[1], entry);
    }
    this.moments.clear();
    for (const [k, v] of next) this.moments.set(k, v);
    this.steps = step;
  }
}
