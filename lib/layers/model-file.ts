/**
 * A model in one safetensors file: its parameters (features included) and, in the
 * metadata key 'performer-attention', the class and constructor options that rebuild
 * it. A service can then load a model from the file alone.
 */
import { describe, rangeError, typeError } from '../errors';
import { readStoredWeight, scaleName, storedTensors } from '../quantization';
import { loadSafetensors, loadSafetensorsSync, readSafetensors, writeSafetensors, type Safetensors } from '../safetensors';
import { DecoderLayer, EncoderLayer } from './blocks';
import type { LayerBase } from './layer';
import { MultiHeadAttention } from './multi-head-attention';
import { buildFromFile } from './parameters';
import { TransformerDecoder, TransformerEncoder } from './stacks';

/** The layer classes a model file can hold. */
export type Model = MultiHeadAttention | EncoderLayer | DecoderLayer | TransformerEncoder | TransformerDecoder;

const METADATA_KEY = 'performer-attention';
const FORMAT = 1;
const CLASSES = { MultiHeadAttention, EncoderLayer, DecoderLayer, TransformerEncoder, TransformerDecoder } as const;

/**
 * The safetensors bytes of a model: its parameters under their names (float32) and, in
 * the metadata, the class and options that rebuild it (see {@link readModel}).
 * A quantized model's linear weights are stored as they are kept: int8 ('I8', with their
 * scales under `…weight_scale`) or bf16 ('BF16'). `metadata` adds other string entries.
 * @throws TypeError when `model` is not one of the layer classes.
 */
export function writeModel(model: Model, metadata: Record<string, string> = {}): Uint8Array {
  const name = Object.keys(CLASSES).find((n) => model instanceof CLASSES[n as keyof typeof CLASSES]);
  if (name === undefined) throw typeError(`model: expected a layer (MultiHeadAttention, …, TransformerDecoder), received ${describe(model)}`);
  const layer = model as LayerBase;
  const options = layer.options();
  const tensors = { ...model.parameters(), ...storedTensors(layer.linears()) };
  return writeSafetensors(tensors, { ...metadata, [METADATA_KEY]: JSON.stringify({ format: FORMAT, class: name, options }) });
}

// Loads the parameters of a file into `model`: float32 ones through loadParameters, then
// the stored form of quantized linear weights (all in one format).
function loadFile(model: Model, file: Safetensors, source: string): void {
  const tensors = { ...file.tensors };
  const stored: string[] = [];
  for (const [name, t] of Object.entries(file.tensors)) {
    if (t.dtype !== 'I8' && t.dtype !== 'BF16') continue;
    stored.push(name);
    delete tensors[scaleName(name)];
  }
  model.loadParameters(tensors);
  const linears = (model as LayerBase).linears();
  const dtypes = new Set(stored.map((name) => file.tensors[name].dtype));
  const floats = [...linears.keys()].filter((name) => !stored.includes(name));
  if (dtypes.size > 1 || (dtypes.size === 1 && floats.length > 0)) {
    throw rangeError(`${source}: the linear weights mix formats (${[...dtypes, ...(floats.length > 0 ? ['F32'] : [])].join(', ')}); a model file keeps them in one`, 'ERR_INVALID_ARG_VALUE');
  }
  for (const name of stored) {
    const l = linears.get(name);
    const t = file.tensors[name];
    if (l === undefined) throw rangeError(`${source}: ${name} is stored as ${t.dtype} but is not a linear layer's weight`, 'ERR_INVALID_ARG_VALUE');
    const scales = file.tensors[scaleName(name)]?.data ?? null;
    l.setQuantized(readStoredWeight(`${source}: ${name}`, t.dtype as 'I8' | 'BF16', l.weight, scales, l.inFeatures, l.outFeatures));
  }
  (model as LayerBase).weightsReplaced();
}

function build(file: Safetensors, source: string): Model {
  const raw = file.metadata[METADATA_KEY];
  if (raw === undefined) {
    throw rangeError(
      `${source}: no '${METADATA_KEY}' metadata, so not a model written by writeModel; build the model and call loadParameters (fromPyTorch / fromBert map checkpoint names)`,
      'ERR_INVALID_ARG_VALUE',
    );
  }
  let entry: { format?: unknown; class?: unknown; options?: unknown };
  try {
    entry = JSON.parse(raw);
  } catch {
    throw rangeError(`${source}: '${METADATA_KEY}' metadata is not JSON`, 'ERR_INVALID_ARG_VALUE');
  }
  if (entry === null || typeof entry !== 'object' || entry.format !== FORMAT) {
    throw rangeError(`${source}: model format ${String(entry?.format)}; this library reads format ${FORMAT}`, 'ERR_INVALID_ARG_VALUE');
  }
  const Class = CLASSES[entry.class as keyof typeof CLASSES];
  if (Class === undefined || !Object.hasOwn(CLASSES, entry.class as string)) {
    throw rangeError(`${source}: unknown model class ${JSON.stringify(entry.class)}`, 'ERR_INVALID_ARG_VALUE');
  }
  // The file must hold every parameter: its size bounds what the constructor may allocate.
  const values = Object.values(file.tensors).reduce((n, t) => n + t.data.length, 0);
  return buildFromFile(source, values, () => {
    const model = new Class(entry.options as never) as Model;
    loadFile(model, file, source);
    return model;
  });
}

/**
 * Rebuilds a model from the bytes {@link writeModel} wrote: same class, options,
 * parameters and features, so it computes the same bits.
 * @throws RangeError (`ERR_INVALID_ARG_VALUE`) for a file without the model metadata, of
 *   another format version or class, or whose options describe a model larger than its
 *   tensors could hold (checked before anything is allocated); the errors of
 *   readSafetensors, the constructor and loadParameters for a malformed file.
 */
export function readModel(bytes: Uint8Array): Model {
  return build(readSafetensors(bytes), 'model');
}

/** {@link readModel} of a file, read off the event loop. */
export async function loadModel(path: string): Promise<Model> {
  return build(await loadSafetensors(path), path);
}

/** {@link readModel} of a file, read synchronously. */
export function loadModelSync(path: string): Model {
  return build(loadSafetensorsSync(path), path);
}
