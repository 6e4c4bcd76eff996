/**
 * What every layer shares: named parameters (parameters / loadParameters), fixed
 * random features (redrawFeatures), a fingerprint, and the decoding-state plumbing.
 */
import { native } from '../native';
import { quantizedTrainingError, quantizeOnce, type QuantizedFormat, type WeightFormat } from '../quantization';
import type { Tensor, TensorLike } from '../tensor';
import { readInteger } from '../validate';
import { DecodingState, deserializeState, type StateArray } from './decoding';
import type { MultiHeadAttention } from './multi-head-attention';
import { fingerprint, load, snapshot, type Linear, type LoadParametersOptions, type ParamSlot } from './parameters';

/** @internal The arrays a decoding state of a model holds, by batch. */
export type StateSpec = StateArraySpec[];

/** @internal One array of a state and its exact length. */
export interface StateArraySpec {
  name: string;
  dtype: 'f32' | 'u8';
  length: number;
}

/** @internal Floats of the FAVOR+ states of one attention module: one per (batch, head). */
export function favorStateLength(m: MultiHeadAttention, batch: number): number {
  return batch * m.config.numHeads * native().favorStateFloats(m.featureMap.outputFeatures, m.config.headDim);
}

// Where a quantized layer's user finds float32 weights to fine-tune.
const LAYER_FLOATS = 'parameters() gives float32 weights to load into a new layer';

// Counts parameter and feature changes of every module in the process.
let parameterEpoch = 0;

/** @internal One gradient buffer per trained parameter (the random features are not trained). */
export class LayerGradients {
  readonly byName = new Map<string, Float32Array>();
  private readonly byParam = new Map<Float32Array, Float32Array>();

  constructor(slots: Map<string, ParamSlot>) {
    for (const [name, slot] of slots) {
      if (isFeatures(name)) continue;
      const g = new Float32Array(slot.get().length);
      this.byName.set(name, g);
      this.byParam.set(slot.get(), g);
    }
  }

  /** The gradient buffer of a parameter array (as the module holds it now). */
  of(param: Float32Array): Float32Array {
    const g = this.byParam.get(param);
    if (g === undefined) throw new Error('internal: no gradient buffer for this parameter');
    return g;
  }
}

function isFeatures(name: string): boolean {
  return name.endsWith('features.projection');
}

/** Base of the layer classes. */
export abstract class LayerBase {
  /** The resolved options (JSON-able). */
  abstract readonly config: object;
  // The fingerprint, valid while no module anywhere has changed its parameters since
  // (a stack's layers can be changed through `layers[i]` without the stack knowing).
  private cachedFingerprint: { epoch: number; value: string } | null = null;
  // Gradients accumulated by backward(), by parameter name (created on first use).
  private grads: Map<string, Float32Array> | null = null;

  /** @internal Named parameter slots. */
  abstract slots(prefix: string, into: Map<string, ParamSlot>): void;
  /** @internal The attention modules, in parameter order. */
  abstract attentionModules(): MultiHeadAttention[];

  /**
   * Constructor options that rebuild this module: the same shapes, and the same initial
   * weights and features for the same seeds (the parameters themselves are separate).
   */
  abstract options(): object;

  /**
   * Copies of every parameter under its name (PyTorch layout: weight [out, in]),
   * the random features included (`…features.projection`).
   */
  parameters(): Record<string, Tensor> {
    const slots = new Map<string, ParamSlot>();
    this.slots('', slots);
    return snapshot(slots);
  }

  /**
   * Replaces the parameters (values are copied). Nothing changes unless every tensor
   * is present, finite and of the right shape. Absent `…features.projection` tensors
   * keep the current features with `{ keepFeatures: true }` (strict about every other
   * name: the way to load a PyTorch or BERT checkpoint) and with `{ strict: false }`.
   * @throws RangeError (`ERR_INVALID_ARG_VALUE`) naming the missing and unexpected
   *   tensors; RangeError naming a mis-shaped or non-finite tensor; TypeError for a
   *   value that is not a Float32Array or tensor.
   */
  loadParameters(tensors: Record<string, TensorLike | Float32Array>, options?: LoadParametersOptions): void {
    const slots = new Map<string, ParamSlot>();
    this.slots('', slots);
    load(slots, tensors, options, `${this.constructor.name}.loadParameters`);
    parameterEpoch++;
  }

  /**
   * Samples new random features for every attention in this layer (module i gets
   * seed + i). Features are otherwise fixed, and saved with the parameters.
   * Decoding states made before no longer fit.
   * @throws RangeError for a seed that is not an integer from 0 to 2^53 - 1.
   */
  redrawFeatures(seed: number): void {
    const s = readInteger(seed, 'redrawFeatures seed', 0, 0, Number.MAX_SAFE_INTEGER - 1024);
    this.attentionModules().forEach((m, i) => m.resample(s + i));
    parameterEpoch++;
  }

  /**
   * Copies of the gradients accumulated by `backward` / `backwardSync` since the last
   * {@link zeroGrad} (or optimizer step), keyed like {@link parameters}; the random
   * features are not trained and have none. Zeros before any backward pass. A stack's
   * gradients are its own: its layers' `gradients()` hold only their own backward calls.
   */
  gradients(): Record<string, Tensor> {
    const slots = this.slotMap();
    const store = this.gradientStore(slots);
    const out: Record<string, Tensor> = {};
    for (const [name, g] of store) out[name] = { data: Float32Array.from(g), shape: Object.freeze([...slots.get(name)!.shape]) };
    return out;
  }

  /** Sets the accumulated gradients to zero. */
  zeroGrad(): void {
    if (this.grads !== null) for (const g of this.grads.values()) g.fill(0);
  }

  /**
   * How the linear layers' weights are stored: `'float32'`, or the format of
   * {@link quantize}.
   */
  get weightFormat(): WeightFormat {
    for (const slot of this.slotMap().values()) if (slot.linear !== undefined) return slot.linear.format;
    return 'float32';
  }

  /**
   * Stores every linear layer's weights (projections, feed-forward) as `int8` (symmetric,
   * one float32 scale per output channel) or `bf16`, in place; LayerNorms, biases and the
   * random features stay float32. From then on `parameters()` gives the dequantized
   * weights, `writeModel` saves the stored ones, and decoding states made before no longer
   * fit. Training needs the float32 weights (backward passes are refused).
   * @returns this.
   * @throws TypeError for another format; RangeError when already quantized to the other one.
   */
  quantize(format: QuantizedFormat): this {
    quantizeOnce(`${this.constructor.name}.quantize`, format, this.weightFormat, (f) => {
      for (const slot of this.slotMap().values()) slot.linear?.quantize(f);
      parameterEpoch++;
    });
    return this;
  }

  /** @internal The linear layers by weight name. */
  linears(): Map<string, Linear> {
    const out = new Map<string, Linear>();
    for (const [name, slot] of this.slotMap()) if (slot.linear !== undefined) out.set(name, slot.linear);
    return out;
  }

  /** @internal After weights changed outside the slots (stored weights read from a file). */
  weightsReplaced(): void {
    parameterEpoch++;
  }

  /** @internal Refuses training passes on quantized weights. */
  checkTrainable(fn: string): void {
    const format = this.weightFormat;
    if (format !== 'float32') throw quantizedTrainingError(fn, format, LAYER_FLOATS);
  }

  /** @internal The trained tensors with their gradients (the optimizer's view). */
  trainables(): { name: string; param: Float32Array; grad: Float32Array }[] {
    this.checkTrainable(`${this.constructor.name} optimizer`);
    const slots = this.slotMap();
    const store = this.gradientStore(slots);
    return [...store].map(([name, grad]) => ({ name, param: slots.get(name)!.get(), grad }));
  }

  /** @internal After the parameters changed in place: packed and fused weights rebuilt, old states no longer fit. */
  parametersChanged(): void {
    for (const [name, slot] of this.slotMap()) if (!isFeatures(name)) slot.set(slot.get());
    parameterEpoch++;
  }

  /** @internal A zeroed gradient set for one pass, keyed by the current parameter arrays. */
  gradientSet(): LayerGradients {
    return new LayerGradients(this.slotMap());
  }

  /** @internal Adds one pass's gradients to the accumulated ones. */
  commitGradients(pass: LayerGradients): void {
    const store = this.gradientStore(this.slotMap());
    for (const [name, g] of pass.byName) {
      const into = store.get(name)!;
      for (let i = 0; i < g.length; i++) into[i] += g[i];
    }
  }

  private slotMap(): Map<string, ParamSlot> {
    const slots = new Map<string, ParamSlot>();
    this.slots('', slots);
    return slots;
  }

  private gradientStore(slots: Map<string, ParamSlot>): Map<string, Float32Array> {
    if (this.grads === null) {
      this.grads = new Map();
      for (const [name, slot] of slots) if (!isFeatures(name)) this.grads.set(name, new Float32Array(slot.get().length));
    }
    return this.grads;
  }

  /** @internal CRC-32 of configuration and parameters: decoding states carry it. */
  fingerprint(): string {
    if (this.cachedFingerprint?.epoch !== parameterEpoch) {
      const slots = new Map<string, ParamSlot>();
      this.slots('', slots);
      // The format too: the kernels of int8 or bf16 weights sum in their own order.
      const format = this.weightFormat;
      const config = format === 'float32' ? this.config : { ...this.config, weightFormat: format };
      this.cachedFingerprint = { epoch: parameterEpoch, value: `${this.constructor.name}:${fingerprint(config, slots)}` };
    }
    return this.cachedFingerprint.value;
  }

  /** @internal Causal self-attention states for `modules`, one array each. */
  selfStates(batch: number, modules: MultiHeadAttention[], prefix: (i: number) => string): StateArray[] {
    return modules.map((m, i) => {
      const c = m.config;
      const f = m.featureMap.outputFeatures;
      const data = new Float32Array(favorStateLength(m, batch));
      native().favorStateReset(data, batch * c.numHeads, f, c.headDim);
      return { name: `${prefix(i)}state`, data };
    });
  }

  /** @internal */
  selfStateSpec(batch: number, modules: MultiHeadAttention[], prefix: (i: number) => string): StateSpec {
    return modules.map((m, i) => ({ name: `${prefix(i)}state`, dtype: 'f32' as const, length: favorStateLength(m, batch) }));
  }

  /** @internal */
  restoreState(bytes: Uint8Array, spec: (batch: number) => StateSpec, fn: string): DecodingState {
    return deserializeState(bytes, this.fingerprint(), spec, fn);
  }
}
