/**
 * A performer-pytorch `Performer` (the bare stack, an encoder or a causal stack over
 * vectors), run here with the outputs it gives in Python. Shape legend: B = batch,
 * L = rows, D = dim.
 *   forward: x [B, L, D], mask [B, L] (1 = keep)  ->  [B, L, D]
 */
import { readSignal } from '../async-call';
import { checkModelSize } from '../layers/parameters';
import { PlanBuilder } from '../layers/plan';
import { readSequence } from '../layers/layer-inputs';
import type { MaskLike, Tensor, TensorLike } from '../tensor';
import { readMask, readOptions } from '../validate';
import { quantizeOnce, type QuantizedFormat, type WeightFormat } from '../quantization';
import type { PerformerPytorchWeights, TensorSource } from './checkpoint';
import { readPerformerConfig, type PerformerPytorchConfig, type PerformerStackConfig } from './config';
import { parameterCopies, readModelOptions, tensorSource, type PerformerPytorchOptions, type RandomModelOptions } from './model-common';
import { PerformerStack, weightFormatOf, type Numerics } from './stack';

/** Options of {@link Performer.forward}. */
export interface PerformerForwardOptions {
  /**
   * `[B, L]` Uint8Array, 1 = keep: performer-pytorch's `mask` (True = keep), the opposite
   * of PyTorch's `key_padding_mask` (True = ignore). Default: every row kept.
   */
  mask?: MaskLike;
  /** Aborting rejects the Promise with an AbortError. */
  signal?: AbortSignal;
}

const ROOT = 'net.';
const ALIASES: [string, string][] = [[ROOT, 'proj_updater.instance.']];

/**
 * A performer-pytorch `Performer` (1.1.4): the stack of FAVOR+ (and local) attention and
 * feed-forward layers, without embeddings or positions (its local heads rotate their own
 * queries and keys, as in Python).
 */
export class Performer {
  /** The resolved configuration (every default filled in; camelCase names). */
  readonly config: PerformerStackConfig;
  /** How the FAVOR+ heads compute. */
  readonly numerics: Numerics;
  private readonly stack: PerformerStack;
  private readonly source: TensorSource;

  private constructor(config: PerformerStackConfig, numerics: Numerics, source: TensorSource, fn: string) {
    this.config = config;
    this.numerics = numerics;
    this.source = source;
    const inner = config.heads * config.dimHead;
    const hidden = config.dim * config.ffMult;
    checkModelSize(
      config.depth * (4 * config.dim * inner + config.dim * hidden * (config.ffGlu ? 3 : 2) + config.numFeatures * config.dimHead),
      fn,
      'dim, depth, heads, dim_head, ff_mult or nb_features',
    );
    this.stack = new PerformerStack(config, numerics, source, ROOT);
    source.finish(`dim ${config.dim}, depth ${config.depth}, heads ${config.heads}, dim_head ${config.dimHead}, nb_features ${config.numFeatures}, norm ${config.norm}`);
    weightFormatOf(this.stack.linears(), fn);
    this.stack.prepare();
  }

  /**
   * Loads a `Performer` trained with performer-pytorch 1.1.4.
   * @param weights Its `state_dict()`: a safetensors path, its bytes, or tensors by name.
   * @param config The constructor's keyword arguments, Python names (`dim`, `depth`,
   *   `heads`, `dim_head` required); omitted keys take Performer's defaults (which differ
   *   from PerformerLM's: qkv_bias and attn_out_bias default to true).
   * @throws TypeError / RangeError naming the config key or the tensors that do not fit.
   */
  static fromPerformerPytorch(weights: PerformerPytorchWeights, config: PerformerPytorchConfig, options?: PerformerPytorchOptions): Performer {
    const fn = 'Performer.fromPerformerPytorch';
    const c = readPerformerConfig(config, fn);
    const { numerics } = readModelOptions(options, fn, false);
    return new Performer(c, numerics, tensorSource(weights, fn, ALIASES, null), fn);
  }

  /** A stack with random weights of the given configuration (benchmarks, tests). */
  static random(config: PerformerPytorchConfig, options?: RandomModelOptions): Performer {
    const fn = 'Performer.random';
    const c = readPerformerConfig(config, fn);
    const { numerics, seed } = readModelOptions(options, fn, true);
    return new Performer(c, numerics, tensorSource(null, fn, ALIASES, seed), fn);
  }

  /** Copies of the weights under their state_dict names (dequantized ones when quantized). */
  parameters(): Record<string, Tensor> {
    return parameterCopies(this.source);
  }

  /** How the linear layers' weights are stored: `'float32'`, or the format of {@link quantize}. */
  get weightFormat(): WeightFormat {
    return weightFormatOf(this.stack.linears(), 'Performer');
  }

  /**
   * Stores every linear layer's weights as `int8` or `bf16`, in place, as
   * `PerformerLM.quantize` does.
   * @returns this.
   * @throws TypeError for another format; RangeError when already quantized to the other one.
   */
  quantize(format: QuantizedFormat): this {
    quantizeOnce('Performer.quantize', format, this.weightFormat, (f) => this.stack.quantize(f));
    return this;
  }

  /**
   * The stack's output, off the event loop.
   * @param x `[B, L, dim]` float32.
   * @throws TypeError / RangeError for bad shapes, mask or non-finite values; AbortError.
   */
  async forward(x: TensorLike, options?: PerformerForwardOptions): Promise<Tensor> {
    const { b, out, signal } = this.build(x, options, 'Performer.forward', true);
    await b.run(signal);
    return out;
  }

  /** The blocking twin of {@link forward}. */
  forwardSync(x: TensorLike, options?: Omit<PerformerForwardOptions, 'signal'>): Tensor {
    const { b, out } = this.build(x, options, 'Performer.forwardSync', false);
    b.runSync();
    return out;
  }

  private build(x: unknown, options: unknown, fn: string, async: boolean) {
    const o = readOptions<PerformerForwardOptions>(options, `${fn} options`, async ? ['mask', 'signal'] : ['mask']);
    const D = this.config.dim;
    const t = readSequence(x, `${fn} x`, D, 'dim');
    const [B, L] = t.shape;
    const keep = o.mask === undefined ? null : readMask(o.mask, `${fn} options.mask`, [B, L]);
    const b = new PlanBuilder();
    b.add({ op: 'checkFinite', x: t.data, shape: t.shape, name: `${fn} x` });
    const out = new Float32Array(B * L * D);
    this.stack.plan(b, { x: t.data, y: out, batch: B, len: L, keep, start: 0, rotary: null, states: null, label: fn });
    b.checkOutput(out, fn);
    return { b, out: { data: out, shape: Object.freeze([B, L, D]) } as Tensor, signal: readSignal(o.signal, `${fn} options.signal`) };
  }
}
