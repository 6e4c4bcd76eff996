/**
 * Name mappings from the checkpoints users have to this library's canonical parameter
 * names (PyTorch layout: weight [out, in], y = x Wᵀ + b):
 *
 *   MultiHeadAttention  q.weight/bias, k.*, v.*, out.*, features.projection
 *   EncoderLayer        selfAttn.*, ff1.*, ff2.*, norm1.*, norm2.*
 *   DecoderLayer        selfAttn.*, crossAttn.*, ff1.*, ff2.*, norm1.*, norm2.*, norm3.*
 *   stacks              layers.{i}.*, norm.* (final norm)
 */
import { describe, rangeError, typeError } from './errors';
import type { Tensor, TensorLike } from './tensor';
import { formatShape, readOptions, readTensor } from './validate';

/** Options of {@link fromPyTorch} and {@link toPyTorch}. */
export interface PyTorchMappingOptions {
  /**
   * The prefix of the module's names in a larger state dict, for example `'encoder.'` or
   * `'decoder.'` in an `nn.Transformer` (the trailing dot may be left out). {@link fromPyTorch}
   * reads only the names under it and strips it; {@link toPyTorch} prepends it. Default `''`.
   */
  prefix?: string;
}

/** Options of {@link fromBert}. */
export interface BertMappingOptions {
  /**
   * The prefix of the encoder's names, for example `'bert.encoder.'` (the trailing dot may be
   * left out). Default: found from the names, the part before `encoder.layer.{i}.` (as in
   * `bert.encoder.` or `encoder.`), when all such names agree on it.
   */
  prefix?: string;
}



function define<T>(target: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function readTensors(tensors: unknown, name: string): Record<string, unknown> {
  if (tensors === null || typeof tensors !== 'object' || Array.isArray(tensors) || ArrayBuffer.isView(tensors)) {
    throw typeError(`${name}: expected an object of tensors by name, received ${describe(tensors)}`);
  }
  return tensors as Record<string, unknown>;
}

function readPrefix(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw typeError(`${name}: expected a string, received ${describe(value)}`);
  return value === '' || value.endsWith('.') ? value : value + '.';
}

function unknownNames(names: string[], what: string, prefix: string): RangeError {
  const shown = names.slice(0, 20).map((n) => `'${n}'`).join(', ');
  const more = names.length > 20 ? ` and ${names.length - 20} more` : '';
  return rangeError(
    `tensors: ${names.length} name${names.length === 1 ? '' : 's'}${prefix ? ` under '${prefix}'` : ''} ` +
      `${names.length === 1 ? 'is' : 'are'} not part of ${what}: ${shown}${more}`,
    'ERR_INVALID_ARG_VALUE',
  );
}

class Collector {
  readonly out: Record<string, Tensor> = {};
  private readonly source: Record<string, string> = {};
  add(canonical: string, value: Tensor, from: string): void {
    if (Object.prototype.hasOwnProperty.call(this.out, canonical)) {
      throw rangeError(
        `tensors: '${from}' and '${this.source[canonical]}' both give '${canonical}'`,
        'ERR_INVALID_ARG_VALUE',
      );
    }
    define(this.out, canonical, value);
    this.source[canonical] = from;
  }
}

/** Rows [part·n/3, (part+1)·n/3) of a packed [3E, ...] tensor, as a view (no copy). */
function third(t: Tensor, part: number): Tensor {
  const rows = t.shape[0] / 3;
  const size = t.data.length / 3;
  return { data: t.data.subarray(part * size, (part + 1) * size), shape: Object.freeze([rows, ...t.shape.slice(1)]) };
}

const LINEAR = /^(weight|bias)$/;

// ---- PyTorch ----

// nn.MultiheadAttention's own names -> canonical, or null when unknown.
function mapTorchAttention(rest: string): { split: 'weight' | 'bias' } | { name: string } | null {
  if (rest === 'in_proj_weight') return { split: 'weight' };
  if (rest === 'in_proj_bias') return { split: 'bias' };
  const separate = /^([qkv])_proj_weight$/.exec(rest);
  if (separate) return { name: `${separate[1]}.weight` };
  const out = /^out_proj\.(weight|bias)$/.exec(rest);
  if (out) return { name: `out.${out[1]}` };
  return null;
}

const TORCH_LAYER_PARTS: Record<string, string> = {
  self_attn: 'selfAttn',
  multihead_attn: 'crossAttn',
  linear1: 'ff1',
  linear2: 'ff2',
  norm1: 'norm1',
  norm2: 'norm2',
  norm3: 'norm3',
};

/**
 * Maps a PyTorch state dict to canonical names. Accepts the names of
 * `nn.MultiheadAttention`, `nn.TransformerEncoderLayer`, `nn.TransformerDecoderLayer`,
 * `nn.TransformerEncoder` and `nn.TransformerDecoder` (`layers.{i}.…`, final `norm.…`):
 *
 * - `self_attn.` → `selfAttn.`, `multihead_attn.` → `crossAttn.`
 * - packed `in_proj_weight` [3E, E] / `in_proj_bias` [3E] → `q`, `k`, `v` `.weight` / `.bias`
 *   (split in rows: views of the input, no copies)
 * - `q_proj_weight`, `k_proj_weight`, `v_proj_weight` (modules built with `kdim` / `vdim`) →
 *   `q.weight`, `k.weight`, `v.weight`
 * - `out_proj.` → `out.`, `linear1.` → `ff1.`, `linear2.` → `ff2.`; `norm1/2/3.`, `norm.`
 *   and `layers.{i}.` unchanged.
 *
 * The modules' options carry over as: `batch_first=True` inputs `[B, L, E]`; `norm_first`
 * → `normFirst`; `activation` `'relu'`/`'gelu'` → `activation`; `layer_norm_eps` →
 * `layerNormEps`; `dim_feedforward` → `ffDim`; `kdim` → `keyDim`; `vdim` → `valueDim`
 * (then call with `key` and `value`); a causal `src_mask` → `causal: true` on an encoder; no
 * `tgt_mask` → `causal: false` on a decoder; the final `norm`'s eps → `finalNormEps`. The FAVOR features
 * (`features.projection`) are not in a PyTorch checkpoint: the layers' own are kept.
 * Masks do not carry over as they are: PyTorch's `key_padding_mask` is True = ignore, the
 * layers' `keyPaddingMask` 1 = attend; pass a PyTorch mask as `{ ignore: mask }`.
 * @param tensors The state dict, for example `(await loadSafetensors(file)).tensors`.
 * @returns Canonical tensors (the same data, no copies).
 * @throws RangeError (`ERR_INVALID_ARG_VALUE`) listing the names under the prefix that are
 *   not of these modules (for example `bias_k` of `add_bias_kv`), or when two names give the
 *   same canonical one; RangeError (`ERR_OUT_OF_RANGE`) for a packed tensor whose first
 *   dimension is not a multiple of 3; TypeError for a value that is not a tensor.
 */
export function fromPyTorch(tensors: Record<string, TensorLike>, options?: PyTorchMappingOptions): Record<string, Tensor> {
  const input = readTensors(tensors, 'tensors');
  const opts = readOptions<PyTorchMappingOptions>(options, 'options', ['prefix']);
  const prefix = readPrefix(opts.prefix, 'options.prefix') ?? '';
  const collector = new Collector();
  const unknown: string[] = [];
  for (const [full, value] of Object.entries(input)) {
    if (!full.startsWith(prefix)) continue;
    const name = full.slice(prefix.length);
    const layer = /^(layers\.\d+\.)(.*)$/.exec(name);
    const base = layer ? layer[1] : '';
    const rest = layer ? layer[2] : name;
    const what = `tensors['${full}']`;
    if (!layer && /^norm\.(weight|bias)$/.test(rest)) {
      collector.add(rest, readTensor(value, what), full);
      continue;
    }
    const dot = rest.indexOf('.');
    const part = dot < 0 ? '' : rest.slice(0, dot);
    const inner = rest.slice(dot + 1);
    let attention: ReturnType<typeof mapTorchAttention> = null;
    let canonicalBase = base;
    if (part === 'self_attn' || part === 'multihead_attn') {
      attention = mapTorchAttention(inner);
      canonicalBase += TORCH_LAYER_PARTS[part] + '.';
    } else if (part in TORCH_LAYER_PARTS && LINEAR.test(inner)) {
      collector.add(`${base}${TORCH_LAYER_PARTS[part]}.${inner}`, readTensor(value, what), full);
      continue;
    } else if (!layer) {
      attention = mapTorchAttention(rest); // a bare nn.MultiheadAttention
    }
    if (attention === null) {
      unknown.push(full);
    } else if ('name' in attention) {
      const weight = attention.name.endsWith('weight');
      collector.add(canonicalBase + attention.name, readTensor(value, what, weight ? 2 : 1, weight ? '[out, in]' : '[out]'), full);
    } else {
      const rank = attention.split === 'weight' ? 2 : 1;
      const packed = readTensor(value, what, rank, rank === 2 ? '[3E, E]' : '[3E]');
      if (packed.shape[0] % 3 !== 0) {
        throw rangeError(`${what}: expected a first dimension that is a multiple of 3 (q, k, v), received shape ${formatShape(packed.shape)}`);
      }
      ['q', 'k', 'v'].forEach((p, i) => collector.add(`${canonicalBase}${p}.${attention.split}`, third(packed, i), full));
    }
  }
  if (unknown.length) throw unknownNames(unknown, 'nn.MultiheadAttention / nn.Transformer* modules', prefix);
  return collector.out;
}

/**
 * The inverse of {@link fromPyTorch}: canonical names to PyTorch state-dict names. `q`, `k`,
 * `v` are packed into `in_proj_weight` (when their weights all have the shape [E, E]) and
 * `in_proj_bias` (when all three biases are there, of one length), otherwise written as
 * `q_proj_weight`, `k_proj_weight`, `v_proj_weight` (PyTorch's layout with `kdim` / `vdim`)
 * and separate biases. `features.projection` has no PyTorch counterpart and is left out.
 * @param canonical Canonical tensors, for example a layer's `parameters()`.
 * @returns The state dict (packed tensors are copies, the others the same data).
 * @throws RangeError (`ERR_INVALID_ARG_VALUE`) listing names that are not canonical.
 */
export function toPyTorch(canonical: Record<string, TensorLike>, options?: PyTorchMappingOptions): Record<string, Tensor> {
  const input = readTensors(canonical, 'canonical');
  const opts = readOptions<PyTorchMappingOptions>(options, 'options', ['prefix']);
  const prefix = readPrefix(opts.prefix, 'options.prefix') ?? '';
  const out: Record<string, Tensor> = {};
  const unknown: string[] = [];
  // Attention blocks by their base ('', 'selfAttn.', 'layers.0.crossAttn.'): q/k/v tensors.
  const blocks = new Map<string, { torchBase: string; parts: Record<string, Tensor> }>();
  const reverse: Record<string, string> = {};
  for (const [torch, ours] of Object.entries(TORCH_LAYER_PARTS)) reverse[ours] = torch;
  for (const [name, value] of Object.entries(input)) {
    const what = `canonical['${name}']`;
    const m = /^((?:layers\.\d+\.)?)(?:(selfAttn|crossAttn)\.)?(.*)$/.exec(name)!;
    const [, layer, attention, rest] = m;
    const torchBase = layer + (attention ? reverse[attention] + '.' : '');
    if (!attention && /^(ff1|ff2|norm1|norm2|norm3)\.(weight|bias)$/.test(rest)) {
      const [part, kind] = rest.split('.');
      define(out, `${prefix}${layer}${reverse[part]}.${kind}`, readTensor(value, what));
    } else if (!attention && !layer && /^norm\.(weight|bias)$/.test(rest)) {
      define(out, prefix + rest, readTensor(value, what));
    } else if (/^features\.projection$/.test(rest) && (attention || !layer)) {
      readTensor(value, what);
    } else if (/^out\.(weight|bias)$/.test(rest) && (attention || !layer)) {
      define(out, `${prefix}${torchBase}out_proj.${rest.slice(4)}`, readTensor(value, what));
    } else if (/^[qkv]\.(weight|bias)$/.test(rest) && (attention || !layer)) {
      const key = layer + (attention ? attention + '.' : '');
      if (!blocks.has(key)) blocks.set(key, { torchBase, parts: {} });
      blocks.get(key)!.parts[rest] = readTensor(value, what);
    } else {
      unknown.push(name);
    }
  }
  if (unknown.length) throw unknownNames(unknown, 'the canonical layer names', '');
  for (const { torchBase, parts } of blocks.values()) {
    const base = prefix + torchBase;
    const weights = ['q', 'k', 'v'].map((p) => parts[`${p}.weight`]);
    const square = (t: Tensor | undefined) =>
      t !== undefined && t.shape.length === 2 && t.shape[0] === t.shape[1] && t.shape[0] === weights[0]!.shape[0];
    if (weights.every(square)) {
      define(out, base + 'in_proj_weight', concat(weights as Tensor[]));
    } else {
      ['q', 'k', 'v'].forEach((p, i) => weights[i] && define(out, `${base}${p}_proj_weight`, weights[i]!));
    }
    const biases = ['q', 'k', 'v'].map((p) => parts[`${p}.bias`]);
    if (biases.every((b) => b !== undefined && b.shape.length === 1 && b.shape[0] === biases[0]!.shape[0])) {
      define(out, base + 'in_proj_bias', concat(biases as Tensor[]));
    } else {
      ['q', 'k', 'v'].forEach((p, i) => biases[i] && define(out, `${base}${p}_proj_bias`, biases[i]!));
    }
  }
  return out;
}

function concat(parts: Tensor[]): Tensor {
  const data = new Float32Array(parts.reduce((n, t) => n + t.data.length, 0));
  let offset = 0;
  for (const t of parts) {
    data.set(t.data, offset);
    offset += t.data.length;
  }
  return { data, shape: Object.freeze([parts.reduce((n, t) => n + t.shape[0], 0), ...parts[0].shape.slice(1)]) };
}

// ---- BERT (Hugging Face names) ----

const BERT_PARTS: [RegExp, string][] = [
  [/^attention\.self\.query\.(weight|bias)$/, 'selfAttn.q.$1'],
  [/^attention\.self\.key\.(weight|bias)$/, 'selfAttn.k.$1'],
  [/^attention\.self\.value\.(weight|bias)$/, 'selfAttn.v.$1'],
  [/^attention\.output\.dense\.(weight|bias)$/, 'selfAttn.out.$1'],
  [/^attention\.output\.LayerNorm\.(weight|gamma)$/, 'norm1.weight'],
  [/^attention\.output\.LayerNorm\.(bias|beta)$/, 'norm1.bias'],
  [/^intermediate\.dense\.(weight|bias)$/, 'ff1.$1'],
  [/^output\.dense\.(weight|bias)$/, 'ff2.$1'],
  [/^output\.LayerNorm\.(weight|gamma)$/, 'norm2.weight'],
  [/^output\.LayerNorm\.(bias|beta)$/, 'norm2.bias'],
];

function detectBertPrefix(names: string[]): string {
  const found = new Set<string>();
  for (const name of names) {
    const m = /^(.*?)layer\.\d+\./.exec(name);
    if (m && (m[1] === 'encoder.' || m[1].endsWith('.encoder.'))) found.add(m[1]);
  }
  if (found.size === 1) return [...found][0];
  throw rangeError(
    found.size === 0
      ? `tensors: no names of the form '…encoder.layer.{i}.…' to find the BERT encoder's prefix; pass options.prefix`
      : `tensors: several encoders (${[...found].map((p) => `'${p}'`).join(', ')}); choose one with options.prefix`,
    'ERR_INVALID_ARG_VALUE',
  );
}

/**
 * Maps a Hugging Face BERT-style encoder (BERT, RoBERTa, ELECTRA, ... checkpoints) to the
 * canonical names of a `TransformerEncoder`:
 *
 * - `layer.{i}.attention.self.query|key|value.{weight,bias}` → `layers.{i}.selfAttn.q|k|v.…`
 * - `attention.output.dense` → `selfAttn.out`, `attention.output.LayerNorm` → `norm1`
 * - `intermediate.dense` → `ff1`, `output.dense` → `ff2`, `output.LayerNorm` → `norm2`
 *   (LayerNorm `gamma`/`beta` of older checkpoints are read as `weight`/`bias`).
 *
 * Names outside the prefix (embeddings, pooler, heads) are ignored. Such an encoder is a
 * `TransformerEncoder` with the options `{ normFirst: false, activation: 'gelu',
 * layerNormEps: 1e-12 }` (BERT's post-norm, exact erf GELU and LayerNorm epsilon),
 * `numHeads` and `ffDim` (`intermediate_size`) from the model's config, no final norm.
 * @param tensors The checkpoint's tensors, for example `(await loadSafetensors(file, { include:
 *   (n) => n.startsWith('bert.encoder.') })).tensors`.
 * @returns Canonical tensors (the same data, no copies).
 * @throws RangeError (`ERR_INVALID_ARG_VALUE`) listing the names under the prefix that are not
 *   of a BERT encoder layer, or when no prefix (or more than one) can be found.
 */
export function fromBert(tensors: Record<string, TensorLike>, options?: BertMappingOptions): Record<string, Tensor> {
  const input = readTensors(tensors, 'tensors');
  const opts = readOptions<BertMappingOptions>(options, 'options', ['prefix']);
  const prefix = readPrefix(opts.prefix, 'options.prefix') ?? detectBertPrefix(Object.keys(input));
  const collector = new Collector();
  const unknown: string[] = [];
  for (const [full, value] of Object.entries(input)) {
    if (!full.startsWith(prefix)) continue;
    const m = /^layer\.(\d+)\.(.*)$/.exec(full.slice(prefix.length));
    const rule = m && BERT_PARTS.find(([pattern]) => pattern.test(m[2]));
    if (!m || !rule) {
      unknown.push(full);
      continue;
    }
    const canonical = `layers.${m[1]}.${m[2].replace(rule[0], rule[1])}`;
    collector.add(canonical, readTensor(value, `tensors['${full}']`), full);
  }
  if (unknown.length) throw unknownNames(unknown, 'a BERT encoder layer', prefix);
  return collector.out;
}
