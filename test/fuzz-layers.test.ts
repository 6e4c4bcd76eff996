// Seeded fuzz test of the Transformer layers, the safetensors reader and the decoding
// states (see test/helpers/fuzz-layer-cases.ts for the generators and the oracle). Each
// seed runs in its own child process so that a crash or a hang fails the test and names
// the case.
import { DecoderLayer, EncoderLayer, MultiHeadAttention, TransformerDecoder, TransformerEncoder } from '../lib';
import { crc32 } from '../lib/crc32';
import { InitRandom } from '../lib/layers/parameters';
import { expectThrows } from './helpers/errors';
import { rebuildState } from './helpers/fuzz-layer-cases';
import { mergeRuns, runFuzzSeed } from './helpers/fuzz-runner';

const SEEDS = [1, 2];
const CASES_PER_SEED = 1500;

test('layer fuzz: every case ends in a correct result or a coded error', async () => {
  const runs = await Promise.all(SEEDS.map((seed) => runFuzzSeed('test/helpers/fuzz-layer-cases.ts', seed, CASES_PER_SEED, 40000)));
  const { cases, results, referenceChecks, errors, failures } = mergeRuns(SEEDS, runs);
  expect(failures).toEqual([]);
  console.log(`layer fuzz: ${cases} cases (seeds ${SEEDS.join(', ')}): ${results} results (${referenceChecks} sync/async, step/forward or save/load comparisons), errors ${JSON.stringify(errors)}`);
  expect(cases).toBe(SEEDS.length * CASES_PER_SEED);
  // The generators must reach both outcomes often, and the comparisons must run.
  expect(results).toBeGreaterThan(cases / 4);
  expect(referenceChecks).toBeGreaterThan(cases / 20);
  expect(errors['Error ERR_INVALID_STATE']).toBeGreaterThan(0);
  expect(errors['RangeError ERR_MEMORY_ALLOCATION_FAILED']).toBeGreaterThan(0);
}, 60000);

/** The state bytes with the header JSON rewritten and the checksum fixed. */
function editHeader(bytes: Uint8Array, edit: (header: Record<string, unknown>) => unknown): Buffer {
  const buf = Buffer.from(bytes);
  const length = buf.readUInt32LE(8);
  const pad4 = (n: number) => (n + 3) & ~3;
  const header = JSON.parse(buf.toString('utf8', 12, 12 + length)) as Record<string, unknown>;
  const edited = edit(header);
  const text = Buffer.from(JSON.stringify(edited === undefined ? header : edited));
  const rest = buf.subarray(12 + pad4(length), buf.length - 4);
  const out = Buffer.alloc(12 + pad4(text.length) + rest.length + 4);
  buf.copy(out, 0, 0, 12);
  out.writeUInt32LE(text.length, 8);
  text.copy(out, 12);
  rest.copy(out, 12 + pad4(text.length));
  out.writeUInt32LE(crc32(out.subarray(0, out.length - 4)), out.length - 4);
  return out;
}

// Regressions the layer fuzz found (each crashed the process, returned NaN / infinity or
// threw an error without a code before).
describe('layer fuzz regressions', () => {
  test('a model too large to allocate: RangeError before anything is allocated (was an uncoded RangeError, or filling memory until the process was killed)', () => {
    const memory = { name: 'RangeError', code: 'ERR_MEMORY_ALLOCATION_FAILED', message: /over the limit of 4294967296/ } as const;
    expectThrows(() => new MultiHeadAttention({ modelDim: 2 ** 20, numHeads: 1 }), memory);
    expectThrows(() => new EncoderLayer({ modelDim: 2 ** 14, numHeads: 1, ffDim: 2 ** 24 }), memory);
    // Layers that fit one by one (1.3e7 parameters each) but not 1024 of them together:
    // refused before the first weight is drawn.
    const draws = jest.spyOn(InitRandom.prototype, 'fill');
    try {
      expectThrows(() => new TransformerEncoder({ modelDim: 1024, numHeads: 8, ffDim: 4096, numLayers: 1024 }), memory);
      expectThrows(() => new TransformerDecoder({ modelDim: 2 ** 14, numHeads: 1, ffDim: 2 ** 24, numLayers: 1024 }), memory);
      expect(draws).not.toHaveBeenCalled();
      // The largest accepted model is unchanged for ordinary sizes (and its weights are drawn
      // through the method watched above).
      expect(new TransformerEncoder({ modelDim: 8, numHeads: 2, numLayers: 1024 }).layers).toHaveLength(1024);
      expect(draws).toHaveBeenCalled();
    } finally {
      draws.mockRestore();
    }
  });

  test('loadParameters with a shape that is not an array: TypeError with a code, nothing changes (was a bare TypeError, or shape: null accepted)', () => {
    const layer = new EncoderLayer({ modelDim: 4, numHeads: 2, seed: 1 });
    const before = layer.parameters();
    for (const shape of [{ length: 1 }, null, 'ab']) {
      const tensors = { ...before, 'ff1.bias': { data: new Float32Array(16), shape } };
      expectThrows(() => layer.loadParameters(tensors as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /ff1\.bias\.shape: expected an array/ });
    }
    expect(layer.parameters()).toEqual(before);
  });

  test('createState without a batch: TypeError (was a state of batch 0)', () => {
    const required = { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /batch: required/ } as const;
    expectThrows(() => new MultiHeadAttention({ modelDim: 4, numHeads: 2, causal: true }).createStateSync(undefined as never), required);
    expectThrows(() => new DecoderLayer({ modelDim: 4, numHeads: 2, crossAttention: false }).createStateSync(undefined as never), required);
    expectThrows(() => new TransformerDecoder({ modelDim: 4, numHeads: 2, numLayers: 1, crossAttention: false }).createStateSync(undefined as never), required);
  });

  test('loadState of a state whose header was edited (checksum fixed): RangeError naming the problem (was a bare TypeError, an unsafe position, or a state that failed at the next step)', () => {
    const decoder = new TransformerDecoder({ modelDim: 4, numHeads: 2, numLayers: 1, seed: 1 });
    const memory = { data: new Float32Array(12).fill(0.5), shape: [1, 3, 4] };
    const state = decoder.createStateSync(1, { memory });
    decoder.stepSync({ data: new Float32Array(4).fill(0.1), shape: [1, 1, 4] }, state);
    const bytes = state.serialize();
    const corrupt = (message: RegExp) => ({ name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message }) as const;
    expectThrows(() => decoder.loadState(editHeader(bytes, () => null)), corrupt(/header is not a JSON object/));
    expectThrows(() => decoder.loadState(editHeader(bytes, (h) => void ((h.arrays as unknown[])[1] = null))), corrupt(/array 1 is described by null/));
    expectThrows(() => decoder.loadState(editHeader(bytes, (h) => void (h.position = 1e300))), corrupt(/bad batch or position/));
    // The absorbed memory resized (header and bytes agree): it no longer fits the model.
    const resize = (name: string, length: number) =>
      rebuildState(bytes, (h, data) => {
        const infos = h.arrays as { name: string; dtype: string; length: number }[];
        const i = infos.findIndex((a) => a.name === name);
        data[i] = new Uint8Array(length * (infos[i].dtype === 'f32' ? 4 : 1));
        infos[i].length = length;
      });
    const memoryState = (h: Record<string, unknown>) => (h.arrays as { name: string; length: number }[])[1];
    expect(memoryState(JSON.parse(Buffer.from(bytes).toString('utf8', 12, 12 + Buffer.from(bytes).readUInt32LE(8)))).name).toBe('layers.0.crossAttn.memoryState');
    const misfit = corrupt(/state array 1 \('layers\.0\.crossAttn\.memoryState', \d+ f32\) does not match this model \('layers\.0\.crossAttn\.memoryState', \d+ f32\)/);
    expectThrows(() => decoder.loadState(resize('layers.0.crossAttn.memoryState', 8)), misfit);
    expectThrows(() => decoder.loadState(resize('layers.0.crossAttn.memoryState', 0)), misfit);
    // The untouched bytes still load and step.
    const loaded = decoder.loadState(bytes);
    expect(loaded.position).toBe(1);
    expect(decoder.stepSync({ data: new Float32Array(4).fill(0.1), shape: [1, 1, 4] }, loaded).shape).toEqual([1, 1, 4]);
  });

  test('finite inputs and weights whose pass overflows float32: RangeError naming the output (was infinity handed back)', async () => {
    for (const layer of [new EncoderLayer({ modelDim: 4, numHeads: 2, seed: 1 }), new TransformerEncoder({ modelDim: 4, numHeads: 2, numLayers: 1, seed: 1, finalNorm: true })]) {
      const params = layer.parameters();
      const name = layer instanceof TransformerEncoder ? 'norm.weight' : 'norm2.weight';
      params[name] = { data: new Float32Array(4).fill(3e38), shape: [4] };
      layer.loadParameters(params);
      const x = { data: Float32Array.from([1, -2, 3, 0.5, 0.25, 1, -1, 2]), shape: [1, 2, 4] };
      const overflow = { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /forwardSync output: infinity at flat index \d+; the pass overflowed float32/ } as const;
      expectThrows(() => layer.forwardSync(x), overflow);
      await expect(layer.forward(x)).rejects.toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: expect.stringMatching(/forward output: infinity/) });
    }
  });

  test('clone while an async step writes the state: ERR_INVALID_STATE (was a copy of half-written arrays)', async () => {
    const decoder = new TransformerDecoder({ modelDim: 4, numHeads: 2, numLayers: 1, seed: 1, crossAttention: false });
    const state = decoder.createStateSync(1);
    const x = { data: new Float32Array(4 * 64).fill(0.25), shape: [1, 64, 4] };
    const running = decoder.step(x, state);
    expectThrows(() => state.clone(), { name: 'Error', code: 'ERR_INVALID_STATE', message: /DecodingState\.clone: an async step is using this state/ });
    await running;
    expect(state.clone().position).toBe(64);
  });

  test('a decoding step whose pass overflows: RangeError after the state absorbed the tokens (position included), not infinity handed back', async () => {
    const decoder = new TransformerDecoder({ modelDim: 4, numHeads: 2, numLayers: 1, seed: 1, crossAttention: false, finalNorm: true });
    const params = decoder.parameters();
    params['norm.weight'] = { data: new Float32Array(4).fill(3e38), shape: [4] };
    decoder.loadParameters(params);
    const state = decoder.createStateSync(1);
    const x = { data: Float32Array.from([1, -2, 3, 0.5, 0.25, 1, -1, 2]), shape: [1, 2, 4] };
    expectThrows(() => decoder.stepSync(x, state), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /stepSync output: infinity at flat index \d+; the pass overflowed float32 .* absorbed the tokens \(position 2\)/ });
    expect(state.position).toBe(2);
    await expect(decoder.step(x, state)).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE', message: expect.stringMatching(/step output: infinity .* \(position 4\)/) });
    expect(state.position).toBe(4);
    expect(state.busy).toBe(false);
  });
});
