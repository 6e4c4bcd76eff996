/**
 * The plans of encoder and decoder layers and stacks: a forward pass (layers in order,
 * then the final norm), a decoder's state (the memory absorbed once per cross-attention)
 * and a decoding step. The block classes and the stacks build their calls from these.
 */
import { readSignal } from '../async-call';
import { rangeError, typeError } from '../errors';
import type { Tensor } from '../tensor';
import { readOptions } from '../validate';
import { DecodingState } from './decoding';
import { readStepStates, runStep, runStepSync, stepRows, type StepStates } from './decoding-steps';
import { favorStateLength, type LayerBase, type StateSpec } from './layer';
import { readBatch, readKind, readPadding, readSequence } from './layer-inputs';
import type { KeySource } from './multi-head-attention';
import type { LayerNorm } from './parameters';
import { PlanBuilder } from './plan';
import type { Block, BlockCall, DecoderForwardOptions, DecoderStateOptions, EncoderForwardOptions } from './blocks';

/** @internal Runs `layers` in order (then the final norm) on x into a new output. */
function planStack(b: PlanBuilder, layers: Block[], finalNorm: LayerNorm | null, x: Float32Array, out: Float32Array, call: Omit<BlockCall, 'x' | 'y' | 'memory' | 'sessions' | 'label'>, perLayer: (i: number) => Pick<BlockCall, 'memory' | 'sessions'>): void {
  const rows = call.batch * call.length;
  const D = out.length / rows;
  let input = x;
  layers.forEach((layer, i) => {
    const last = i === layers.length - 1 && finalNorm === null;
    const y = last ? out : b.acquire(rows * D);
    layer.plan(b, { ...call, ...perLayer(i), x: input, y, label: layers.length > 1 ? `layers.${i}.` : '' });
    if (input !== x) b.release(input);
    input = y;
  });
  if (finalNorm !== null) {
    b.add({ op: 'layerNorm', x: input, y: out, rows, dim: D, gamma: finalNorm.weight, beta: finalNorm.bias, eps: finalNorm.eps });
    if (input !== x) b.release(input);
  }
}

/** @internal */
export function buildEncoder(layers: Block[], finalNorm: LayerNorm | null, x: unknown, options: unknown, fn: string, async: boolean) {
  const o = readOptions<EncoderForwardOptions>(options, `${fn} options`, ['keyPaddingMask', 'attention', ...(async ? ['signal'] : [])]);
  const c = layers[0].config.attention;
  const t = readSequence(x, `${fn} x`, c.modelDim, 'modelDim');
  const [B, L] = t.shape;
  const keyPadding = readPadding(o.keyPaddingMask, `${fn} options.keyPaddingMask`, B, L);
  const attention = readKind(o.attention, `${fn} options.attention`, c.attention);
  const b = new PlanBuilder();
  b.add({ op: 'checkFinite', x: t.data, shape: t.shape, name: `${fn} x` });
  const out = new Float32Array(B * L * c.modelDim);
  const call = { batch: B, length: L, keyPadding, attention, memoryPadding: null };
  planStack(b, layers, finalNorm, t.data, out, call, () => ({ memory: null, sessions: null }));
  b.checkOutput(out, fn);
  return { b, out: { data: out, shape: Object.freeze([B, L, c.modelDim]) } as Tensor, signal: readSignal(o.signal, `${fn} options.signal`) };
}

function readMemory(layers: Block[], o: { memory?: unknown; memoryKeyPaddingMask?: unknown }, B: number, fn: string, b: PlanBuilder) {
  const cross = layers[0].crossAttn !== null;
  if (!cross) {
    if (o.memory !== undefined || o.memoryKeyPaddingMask !== undefined) {
      throw rangeError(`${fn} options.memory: this decoder has no cross-attention (crossAttention: false)`, 'ERR_INVALID_ARG_VALUE');
    }
    return { memory: null, memoryPadding: null };
  }
  if (o.memory === undefined) throw typeError(`${fn} options.memory: required by the cross-attention, received undefined`);
  const m = readSequence(o.memory, `${fn} options.memory`, layers[0].config.attention.modelDim, 'modelDim', B);
  b.add({ op: 'checkFinite', x: m.data, shape: m.shape, name: `${fn} options.memory` });
  const Lm = m.shape[1];
  return {
    memory: { kind: 'memory', data: m.data, length: Lm } as KeySource,
    memoryPadding: readPadding(o.memoryKeyPaddingMask, `${fn} options.memoryKeyPaddingMask`, B, Lm),
  };
}

/** @internal */
export function buildDecoder(layers: Block[], finalNorm: LayerNorm | null, x: unknown, options: unknown, fn: string, async: boolean) {
  const o = readOptions<DecoderForwardOptions>(options, `${fn} options`, [
    'memory',
    'memoryKeyPaddingMask',
    'keyPaddingMask',
    'attention',
    ...(async ? ['signal'] : []),
  ]);
  const c = layers[0].config.attention;
  const t = readSequence(x, `${fn} x`, c.modelDim, 'modelDim');
  const [B, L] = t.shape;
  const b = new PlanBuilder();
  b.add({ op: 'checkFinite', x: t.data, shape: t.shape, name: `${fn} x` });
  const { memory, memoryPadding } = readMemory(layers, o, B, fn, b);
  const keyPadding = readPadding(o.keyPaddingMask, `${fn} options.keyPaddingMask`, B, L);
  const attention = readKind(o.attention, `${fn} options.attention`, c.attention);
  const out = new Float32Array(B * L * c.modelDim);
  planStack(b, layers, finalNorm, t.data, out, { batch: B, length: L, keyPadding, attention, memoryPadding }, () => ({ memory, sessions: null }));
  b.checkOutput(out, fn);
  return { b, out: { data: out, shape: Object.freeze([B, L, c.modelDim]) } as Tensor, signal: readSignal(o.signal, `${fn} options.signal`) };
}

/**
 * @internal The arrays of a decoder's state: per layer, the causal FAVOR state of the
 * self-attention and (cross-attention) the absorbed memory, both sized by the model only.
 */
export function decoderStateSpec(owner: LayerBase, layers: Block[], batch: number): StateSpec {
  const spec: StateSpec = [];
  layers.forEach((layer, i) => {
    spec.push(...owner.selfStateSpec(batch, [layer.selfAttn], () => `layers.${i}.selfAttn.`));
    if (layer.crossAttn !== null) spec.push({ name: `layers.${i}.crossAttn.memoryState`, dtype: 'f32', length: favorStateLength(layer.crossAttn, batch) });
  });
  return spec;
}

function checkDecoding(layers: Block[], fn: string): void {
  const c = layers[0].config.attention;
  if (!c.causal) {
    throw rangeError(`${fn}: token-by-token decoding needs causal self-attention; this decoder was built with causal: false`, 'ERR_INVALID_ARG_VALUE');
  }
  if (c.attention !== 'favor') {
    throw rangeError(`${fn}: token-by-token decoding runs FAVOR+ attention; this model's attention is '${c.attention}'`, 'ERR_INVALID_ARG_VALUE');
  }
  // A layer's adaptive features have no fixed parameters: each call would estimate its
  // own, while decoding absorbs keys in one call and attends them in later ones.
  if (ADAPTIVE_KERNELS.includes(c.featureMap.kernel)) {
    throw rangeError(
      `${fn}: token-by-token decoding needs features fixed across calls; '${c.featureMap.kernel}' estimates its parameters per call (use 'softmax' or another kernel)`,
      'ERR_INVALID_ARG_VALUE',
    );
  }
}

const ADAPTIVE_KERNELS: readonly string[] = ['softmax-opt', 'softmax-dense'];

/** @internal */
export function buildDecoderState(owner: LayerBase, layers: Block[], batch: number, options: unknown, fn: string, async: boolean) {
  checkDecoding(layers, fn);
  const o = readOptions<DecoderStateOptions>(options, `${fn} options`, ['memory', 'memoryKeyPaddingMask', ...(async ? ['signal'] : [])]);
  const B = readBatch(batch, `${fn} batch`);
  const b = new PlanBuilder();
  const { memory, memoryPadding } = readMemory(layers, o, B, fn, b);
  const arrays = [];
  for (const [i, layer] of layers.entries()) {
    arrays.push(...owner.selfStates(B, [layer.selfAttn], () => `layers.${i}.selfAttn.`));
    if (layer.crossAttn !== null && memory !== null && memory.kind === 'memory') {
      const label = `${layers.length > 1 ? `layers.${i}.` : ''}crossAttn`;
      const data = layer.crossAttn.planMemoryState(b, memory.data, B, memory.length, memoryPadding, label);
      arrays.push({ name: `layers.${i}.crossAttn.memoryState`, data });
    }
  }
  const state = new DecodingState(owner.fingerprint(), B, arrays);
  return { b, state, signal: readSignal(o.signal, `${fn} options.signal`) };
}

/**
 * @internal A decoding step of one state (`arg` 'state') or of many sessions at once
 * ('states': x holds each state's rows in turn): the dense ops run once over all rows,
 * the attention of each session on its rows with its own states.
 */
export function buildDecoderStep(owner: LayerBase, layers: Block[], finalNorm: LayerNorm | null, x: unknown, states: unknown, fn: string, arg: StepStates) {
  checkDecoding(layers, fn);
  const list = readStepStates(states, owner.fingerprint(), fn, arg);
  const c = layers[0].config.attention;
  const t = readSequence(x, `${fn} x`, c.modelDim, 'modelDim', stepRows(list));
  const [B, n] = t.shape;
  const b = new PlanBuilder({ rowStable: true });
  b.add({ op: 'checkFinite', x: t.data, shape: t.shape, name: `${fn} x` });
  const out = new Float32Array(B * n * c.modelDim);
  planStack(b, layers, finalNorm, t.data, out, { batch: B, length: n, keyPadding: null, attention: 'favor', memoryPadding: null }, (i) => ({
    sessions: list.map((state) => ({
      batch: state.batch,
      selfState: state.array<Float32Array>(`layers.${i}.selfAttn.state`),
      memoryState: layers[i].crossAttn !== null ? state.array<Float32Array>(`layers.${i}.crossAttn.memoryState`) : null,
    })),
    memory: layers[i].crossAttn !== null ? { kind: 'state' } : null,
  }));
  return { b, n, list, out: { data: out, shape: Object.freeze([B, n, c.modelDim]) } as Tensor };
}

/**
 * @internal A decoder's `step` / `stepBatch`, off the event loop. Once running, the pass is
 * not stopped by the signal: every layer's state of every session advances, or none.
 */
export async function runDecoderStep(owner: LayerBase, layers: Block[], finalNorm: LayerNorm | null, x: unknown, states: unknown, options: unknown, fn: string, arg: StepStates): Promise<Tensor> {
  const o = readOptions<{ signal?: AbortSignal }>(options, `${fn} options`, ['signal']);
  const { b, out, n, list } = buildDecoderStep(owner, layers, finalNorm, x, states, fn, arg);
  await runStep(list, n, out, fn, () => b.run(readSignal(o.signal, `${fn} options.signal`), true));
  return out;
}

/** @internal The blocking twin of {@link runDecoderStep}. */
export function runDecoderStepSync(owner: LayerBase, layers: Block[], finalNorm: LayerNorm | null, x: unknown, states: unknown, fn: string, arg: StepStates): Tensor {
  const { b, out, n, list } = buildDecoderStep(owner, layers, finalNorm, x, states, fn, arg);
  runStepSync(list, n, out, fn, () => b.runSync());
  return out;
}
