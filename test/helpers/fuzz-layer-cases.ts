// Seeded fuzz cases over the Transformer layers, the safetensors reader and the
// decoding states. Run in a child process by test/fuzz-layers.test.ts (`node -r
// ./test/helpers/ts-register.js test/helpers/fuzz-layer-cases.ts <seed> <count>`), so
// that a crash or a hang fails the test and names the case.
//
// Every case must end in a correct result (finite output of the right shape from
// finite inputs; sync and async bits equal; decoding step by step equal to the causal
// forward pass; nothing changed by a rejected loadParameters) or in a TypeError /
// RangeError / Error with a `code`. The child prints one JSON summary line.

import {
  DecoderLayer,
  DecodingState,
  EncoderLayer,
  MultiHeadAttention,
  readSafetensors,
  TransformerDecoder,
  TransformerEncoder,
  writeSafetensors,
  type Tensor,
} from '../../lib';
import { crc32 } from '../../lib/crc32';
import { Fuzzer, fuzzMain, withTimeout } from './fuzz-cases';
import { allFinite, randn, relFrobenius } from './reference';

/** Step-by-step decoding against the causal forward pass (README: tested to 1e-5). */
const DECODE_TOL = 1e-5;
const ERROR_NAMES = ['TypeError', 'RangeError'];
const STATE_ERROR_NAMES = ['TypeError', 'RangeError', 'Error'];

type Kind = 'mha' | 'mhaCausal' | 'mhaCross' | 'encoder' | 'decoder' | 'encoderStack' | 'decoderStack';
type AnyLayer = MultiHeadAttention | EncoderLayer | DecoderLayer | TransformerEncoder | TransformerDecoder;
// The union's methods have different option types; cases call them through this shape.
type Callable = {
  forward(x: unknown, options?: unknown): Promise<Tensor>;
  forwardSync(x: unknown, options?: unknown): Tensor;
  createState?(batch: unknown, options?: unknown): Promise<DecodingState>;
  createStateSync?(batch: unknown, options?: unknown): DecodingState;
  step(x: unknown, state: unknown, options?: unknown): Promise<Tensor>;
  stepSync(x: unknown, state: unknown): Tensor;
  loadState(bytes: unknown): DecodingState;
  loadParameters(tensors: unknown, options?: unknown): void;
  parameters(): Record<string, Tensor>;
  redrawFeatures(seed: unknown): void;
};

interface Model {
  kind: Kind;
  layer: AnyLayer;
  /** modelDim */
  D: number;
  /** Width of the memory: keyDim for attention, modelDim for decoders. */
  memoryWidth: number;
  /** Takes a memory (MHA: optional unless keyDim differs; decoders with cross-attention: required). */
  acceptsMemory: boolean;
  needsMemory: boolean;
  /** createState / step work. */
  decodes: boolean;
  /** A decoder block or stack (memoryKeyPaddingMask, createState options). */
  decoder: boolean;
}

const call = (m: Model) => m.layer as unknown as Callable;

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** An own property even for '__proto__' (as a file's tensor names may be). */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/** `{ data: mask, shape }` where mask has `attend` probability of ones. */
function maskData(fuzzer: Fuzzer, n: number): Uint8Array {
  return new Uint8Array(n).map(() => (fuzzer.chance(0.7) ? 1 : 0));
}

/** The state bytes with the header (and optionally the arrays) rewritten and the CRC fixed. */
export function rebuildState(bytes: Uint8Array, edit: (header: Record<string, unknown>, arrays: Uint8Array[]) => unknown): Buffer {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const pad4 = (n: number) => (n + 3) & ~3;
  const headerLength = buf.readUInt32LE(8);
  const header = JSON.parse(buf.toString('utf8', 12, 12 + headerLength)) as { arrays: { dtype: string; length: number }[] };
  let at = 12 + pad4(headerLength);
  const arrays = header.arrays.map((a) => {
    const n = a.length * (a.dtype === 'f32' ? 4 : 1);
    const part = Uint8Array.from(buf.subarray(at, at + n));
    at += pad4(n);
    return part;
  });
  const edited = edit(header as unknown as Record<string, unknown>, arrays);
  const text = Buffer.from(JSON.stringify(edited === undefined ? header : edited));
  const size = 12 + pad4(text.length) + arrays.reduce((n, a) => n + pad4(a.length), 0);
  const out = Buffer.alloc(size + 4);
  buf.copy(out, 0, 0, 12);
  out.writeUInt32LE(text.length, 8);
  text.copy(out, 12);
  let to = 12 + pad4(text.length);
  for (const a of arrays) {
    out.set(a, to);
    to += pad4(a.length);
  }
  out.writeUInt32LE(crc32(out.subarray(0, size)), size);
  return out;
}

/** A safetensors file of mixed dtypes written here (the library writes F32 only). */
function mixedSafetensors(fuzzer: Fuzzer): { bytes: Buffer; expected: Record<string, Tensor>; convertible: Set<string> } {
  const dtypes = ['F32', 'F16', 'BF16', 'F64', 'I64', 'U8'] as const;
  const header: Record<string, unknown> = {};
  const parts: Buffer[] = [];
  const expected: Record<string, Tensor> = {};
  const convertible = new Set<string>();
  const entries: { name: string; dtype: string; shape: number[]; part: Buffer; itemBytes: number }[] = [];
  let offset = 0;
  const count = 1 + fuzzer.rng.int(4);
  for (let t = 0; t < count; t++) {
    const name = `t${t}.${fuzzer.pick(['weight', 'bias', 'x'])}`;
    const dtype = fuzzer.pick(dtypes);
    const shape = Array.from({ length: fuzzer.rng.int(3) }, () => fuzzer.pick([0, 1, 2, 3, 5]));
    const n = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    let part: Buffer;
    if (dtype === 'F32' || dtype === 'F64') {
      for (let i = 0; i < n; i++) values[i] = fuzzer.rng.normal();
      part = Buffer.alloc(n * (dtype === 'F32' ? 4 : 8));
      for (let i = 0; i < n; i++) {
        if (dtype === 'F32') part.writeFloatLE(values[i], 4 * i);
        else part.writeDoubleLE(values[i], 8 * i);
      }
    } else if (dtype === 'F16' || dtype === 'BF16') {
      // Values exactly representable in both 16-bit formats: small integers and halves.
      part = Buffer.alloc(2 * n);
      for (let i = 0; i < n; i++) {
        values[i] = (fuzzer.rng.int(64) - 32) / 2;
        const bits = new Uint32Array(new Float32Array([values[i]]).buffer)[0];
        if (dtype === 'BF16') part.writeUInt16LE(bits >>> 16, 2 * i);
        else {
          const sign = (bits >>> 16) & 0x8000;
          const v = Math.abs(values[i]);
          if (v === 0) part.writeUInt16LE(sign, 2 * i);
          else {
            const e = Math.floor(Math.log2(v));
            const mantissa = Math.round((v / 2 ** e - 1) * 1024);
            part.writeUInt16LE(sign | ((e + 15) << 10) | mantissa, 2 * i);
          }
        }
      }
    } else {
      part = Buffer.alloc(n * (dtype === 'I64' ? 8 : 1), 1);
    }
    if (name in expected) continue;
    entries.push({ name, dtype, shape, part, itemBytes: n === 0 ? 8 : part.length / n });
    expected[name] = { data: values, shape };
    if (['F32', 'F16', 'BF16', 'F64'].includes(dtype)) convertible.add(name);
  }
  // Wider dtypes first, as the format's reference writer orders them: every tensor's data
  // offset is then a multiple of its element size, which this reader requires.
  entries.sort((a, b) => b.itemBytes - a.itemBytes);
  for (const e of entries) {
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + e.part.length] };
    offset += e.part.length;
    parts.push(e.part);
  }
  if (fuzzer.chance(0.3)) header.__metadata__ = { format: 'pt', note: 'x' };
  return { bytes: withHeader(JSON.stringify(header), Buffer.concat(parts)), expected, convertible };
}

function withHeader(json: string, data: Uint8Array, length?: bigint): Buffer {
  const text = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + text.length + data.length);
  out.writeBigUInt64LE(length ?? BigInt(text.length), 0);
  text.copy(out, 8);
  out.set(data, 8 + text.length);
  return out;
}

class LayerFuzzer extends Fuzzer {
  readonly pool: Model[];
  private readonly timeoutMs = 20000;

  constructor(seed: number) {
    super(seed);
    this.pool = this.buildPool();
  }

  /** Small models of every class (weights and features seeded), some pre-norm, GELU, bias-free or softmax by default. */
  private buildPool(): Model[] {
    const models: Model[] = [];
    const common = () => {
      const D = this.pick([4, 6, 8, 12]);
      const numHeads = this.pick([1, 2].filter((h) => D % h === 0));
      const o: Record<string, unknown> = { modelDim: D, numHeads, seed: this.rng.int(1000) };
      if (this.chance(0.5)) o.featureMap = { numFeatures: this.pick([2, 4, 8, 16]), kernel: this.pick(['softmax', 'softmax', 'relu', 'softmax-hyperbolic']) };
      if (this.chance(0.2)) o.bias = false;
      if (this.chance(0.2)) o.chunkSize = this.pick([1, 3]);
      return { D, o };
    };
    const block = (o: Record<string, unknown>) => {
      if (this.chance(0.5)) o.ffDim = this.pick([4, 16]);
      if (this.chance(0.4)) o.activation = 'gelu';
      if (this.chance(0.4)) o.normFirst = true;
      return o;
    };
    for (let round = 0; round < 2; round++) {
      {
        const { D, o } = common();
        models.push({ kind: 'mha', layer: new MultiHeadAttention({ ...o, attention: round ? 'softmax' : 'favor' } as never), D, memoryWidth: D, acceptsMemory: true, needsMemory: false, decodes: false, decoder: false });
      }
      {
        const { D, o } = common();
        models.push({ kind: 'mhaCausal', layer: new MultiHeadAttention({ ...o, causal: true } as never), D, memoryWidth: D, acceptsMemory: true, needsMemory: false, decodes: true, decoder: false });
      }
      {
        const { D, o } = common();
        const keyDim = D + 1 + this.rng.int(5);
        models.push({ kind: 'mhaCross', layer: new MultiHeadAttention({ ...o, keyDim } as never), D, memoryWidth: keyDim, acceptsMemory: true, needsMemory: true, decodes: false, decoder: false });
      }
      {
        const { D, o } = common();
        models.push({ kind: 'encoder', layer: new EncoderLayer(block(o) as never), D, memoryWidth: D, acceptsMemory: false, needsMemory: false, decodes: false, decoder: false });
      }
      for (const cross of [true, false]) {
        const { D, o } = common();
        models.push({ kind: 'decoder', layer: new DecoderLayer({ ...block(o), crossAttention: cross } as never), D, memoryWidth: D, acceptsMemory: cross, needsMemory: cross, decodes: true, decoder: true });
      }
      {
        const { D, o } = common();
        models.push({ kind: 'encoderStack', layer: new TransformerEncoder({ ...block(o), numLayers: 2, finalNorm: this.chance(0.5) } as never), D, memoryWidth: D, acceptsMemory: false, needsMemory: false, decodes: false, decoder: false });
      }
      for (const cross of [true, false]) {
        const { D, o } = common();
        const attention = round === 1 && cross ? 'softmax' : 'favor';
        const layer = new TransformerDecoder({ ...block(o), numLayers: 2, finalNorm: this.chance(0.5), crossAttention: cross, attention } as never);
        models.push({ kind: 'decoderStack', layer, D, memoryWidth: D, acceptsMemory: cross, needsMemory: cross, decodes: attention === 'favor', decoder: true });
      }
    }
    return models;
  }

  /** A mask argument for [B, Lk]: usually well-formed (sometimes in shared or offset memory). */
  mask(B: number, Lk: number): { value: unknown; ok: boolean } {
    const n = B * Lk;
    const data = maskData(this, n);
    const r = this.rng.uniform();
    if (r < 0.85) {
      let array = data;
      if (this.chance(0.15)) {
        array = new Uint8Array(new SharedArrayBuffer(n + 3), 1 + this.rng.int(2), n);
        array.set(data);
      }
      return { value: { data: array, shape: [B, Lk] }, ok: true };
    }
    const wrong = this.pick<() => unknown>([
      () => data,
      () => ({ data: new Float32Array(n), shape: [B, Lk] }),
      () => ({ data: Array.from(data), shape: [B, Lk] }),
      () => ({ data: new Uint8Array(n + 1), shape: [B, Lk] }),
      () => ({ data, shape: [B, Lk, 1] }),
      () => ({ data, shape: [Lk + 1, B] }),
      () => null,
      () => 'mask',
    ])();
    return { value: wrong, ok: false };
  }

  /** Expects a coded error (and records it); AbortError only when the call was aborted. */
  private expectError(error: unknown, label: string, aborted: boolean, names = ERROR_NAMES): void {
    const e = error as { name?: string };
    if (aborted && e?.name === 'AbortError') {
      this.expectCoded(error, label, ['AbortError']);
      return;
    }
    this.expectCoded(error, label, names);
  }

  /** Runs a call with the hang timer. */
  private run<T>(label: string, f: () => T | Promise<T>): Promise<T> {
    return withTimeout(Promise.resolve().then(f), this.timeoutMs, label);
  }

  async forward(): Promise<void> {
    const m = this.pick(this.pool);
    const async = this.chance(0.4);
    const label = `${m.kind}.forward${async ? '' : 'Sync'}`;
    const B = this.dim();
    const L = this.dim();
    let xShape = [B, L, m.D];
    let valid = B > 0 && L > 0;
    const r = this.rng.uniform();
    if (r < 0.04) xShape = [B, L, m.D + 1];
    else if (r < 0.08) xShape = Array.from({ length: this.pick([0, 1, 2, 4, 5]) }, () => this.dim());
    if (r < 0.08) valid = false;
    const x = this.tensorOf(xShape);
    valid &&= x.wellFormed;
    let finite = x.finite;
    let clean = x.clean;
    const options: Record<string, unknown> = {};
    let Lk = L;
    if (m.needsMemory ? this.chance(0.95) : this.chance(m.acceptsMemory ? 0.3 : 0.03)) {
      const Lm = this.dim();
      const width = this.chance(0.05) ? m.memoryWidth + 1 : m.memoryWidth;
      const batch = this.chance(0.04) ? B + 1 : B;
      const memory = this.tensorOf([batch, Lm, width]);
      options.memory = memory.value;
      valid &&= m.acceptsMemory && memory.wellFormed && Lm > 0 && width === m.memoryWidth && batch === B;
      finite &&= memory.finite;
      clean &&= memory.clean;
      if (!m.decoder) Lk = Lm;
      if (m.decoder && this.chance(0.3)) {
        const mask = this.mask(B, Lm);
        options.memoryKeyPaddingMask = mask.value;
        valid &&= mask.ok;
      }
    } else if (m.needsMemory) {
      valid = false;
    }
    if (this.chance(0.25)) {
      const mask = this.mask(B, Lk);
      options.keyPaddingMask = mask.value;
      valid &&= mask.ok;
    }
    if (this.chance(0.3)) {
      const attention = this.pick<unknown>(['favor', 'softmax', 'softmax', 'exact', 3, null]);
      options.attention = attention;
      valid &&= attention === 'favor' || attention === 'softmax';
    }
    if (this.chance(0.03)) {
      options[this.pick(['typo', 'mask', 'causal', async ? 'out' : 'signal'])] = true;
      valid = false;
    }
    let aborted = false;
    if (async && this.chance(0.1)) {
      const controller = new AbortController();
      options.signal = controller.signal;
      if (this.chance(0.5)) controller.abort();
      else setImmediate(() => controller.abort());
      aborted = true;
    }
    const layer = call(m);
    let out: Tensor;
    try {
      out = await this.run(label, () => (async ? layer.forward(x.value, options) : layer.forwardSync(x.value, options)));
    } catch (error) {
      if (valid && clean && !aborted) this.fail(`${label}: rejected valid clean input: ${String((error as Error)?.message ?? error)}`);
      this.expectError(error, label, aborted);
      return;
    }
    if (!valid) {
      this.fail(`${label}: accepted malformed arguments (x shape ${JSON.stringify(xShape)}, options ${Object.keys(options).join(', ')})`);
      return;
    }
    this.checkOutput(label, out, [B, L, m.D], finite);
    if (finite && this.chance(0.3)) {
      // The other twin gives the same bits.
      delete options.signal;
      const again = async ? layer.forwardSync(x.value, options) : await this.run(label, () => layer.forward(x.value, options));
      this.summary.referenceChecks++;
      if (!sameBits(out.data, again.data)) this.fail(`${label}: sync and async results differ`);
    }
  }

  /** A decodable (or sometimes not) model, a state, then steps of random chunks. */
  async decode(): Promise<void> {
    const candidates = this.pool.filter((m) => (this.chance(0.9) ? m.decodes : typeof call(m).createState === 'function'));
    const m = this.pick(candidates);
    const layer = call(m);
    const label = `${m.kind}.decode`;
    let B: unknown = 1 + this.rng.int(3);
    let valid = m.decodes;
    if (this.chance(0.08)) {
      B = this.pick([0, -1, 1.5, '2', 2 ** 21, NaN, undefined, null]);
      valid = false;
    }
    const batch = typeof B === 'number' && Number.isInteger(B) && B >= 1 && B <= 4 ? B : 1;
    const stateOptions: Record<string, unknown> = {};
    let memoryTensor: Tensor | undefined;
    let memoryMask: Uint8Array | undefined;
    let clean = true;
    if (m.decoder && (m.needsMemory ? this.chance(0.95) : this.chance(0.03))) {
      const Lm = this.dim();
      const width = this.chance(0.04) ? m.D + 1 : m.D;
      const memory = this.tensorOf([batch, Lm, width]);
      stateOptions.memory = memory.value;
      valid &&= m.acceptsMemory && memory.wellFormed && memory.finite && Lm > 0 && width === m.D;
      clean &&= memory.clean;
      if (memory.wellFormed) memoryTensor = memory.value as Tensor;
      if (this.chance(0.3)) {
        const mask = this.mask(batch, Lm);
        stateOptions.memoryKeyPaddingMask = mask.value;
        valid &&= mask.ok;
        if (mask.ok) memoryMask = (mask.value as { data: Uint8Array }).data;
      }
    } else if (m.needsMemory) {
      valid = false;
    }
    const asyncCreate = m.decoder && this.chance(0.4);
    let state: DecodingState;
    try {
      state = await this.run(`${label} createState`, () => {
        if (!m.decoder) return layer.createStateSync!(B);
        return asyncCreate ? layer.createState!(B, stateOptions) : layer.createStateSync!(B, stateOptions);
      });
    } catch (error) {
      if (valid && clean) this.fail(`${label} createState: rejected valid input: ${String((error as Error)?.message ?? error)}`);
      this.expectError(error, `${label} createState`, false);
      return;
    }
    if (!valid) {
      this.fail(`${label} createState: accepted invalid arguments (batch ${String(B)}, options ${Object.keys(stateOptions).join(', ')})`);
      return;
    }
    this.summary.results++;
    if (state.batch !== batch || state.position !== 0) this.fail(`${label}: new state has batch ${state.batch}, position ${state.position}`);

    // Steps: the outputs of the clean ones are compared with the causal forward pass.
    const xs: Float32Array[] = [];
    const outs: Float32Array[] = [];
    let comparable = clean;
    let position = 0;
    const steps = 1 + this.rng.int(4);
    for (let s = 0; s < steps; s++) {
      const n = this.chance(0.5) ? 1 : this.dim();
      let xShape = [batch, n, m.D];
      let stepValid = n > 0;
      const r = this.rng.uniform();
      if (r < 0.04) xShape = [batch + 1, n, m.D];
      else if (r < 0.08) xShape = [batch, n, m.D + 1];
      if (r < 0.08) stepValid = false;
      const x = this.tensorOf(xShape);
      stepValid &&= x.wellFormed && x.finite;
      let target: unknown = state;
      let staleModel = false;
      const t = this.rng.uniform();
      if (t < 0.03) target = this.pick([{}, null, 'state', state.serialize()]);
      else if (t < 0.06) {
        const other = this.pick(this.pool.filter((o) => o !== m && o.decodes && !o.needsMemory));
        target = call(other).createStateSync!.call(other.layer, batch) as DecodingState;
      } else if (t < 0.08) {
        // New features: the model changes, so every state it made is stale.
        layer.redrawFeatures(this.rng.int(1000));
        staleModel = true;
      }
      if (target !== state || staleModel) stepValid = false;
      const mode = this.rng.uniform();
      const async = mode < 0.4;
      const stepLabel = `${label} step ${s} (${async ? 'async' : 'sync'}, n ${n})`;
      let out: Tensor;
      try {
        if (async && mode < 0.1 && target === state) {
          // Two steps on one state at once: the second is refused, so is serialize or a sync step meanwhile.
          const first = layer.step(x.value, state);
          first.catch(() => undefined);
          const refused = async (f: () => unknown, what: string) => {
            if (!state.busy) return; // the first step was refused or is done already
            try {
              await f();
              this.fail(`${stepLabel}: ${what} during an async step succeeded`);
            } catch (error) {
              this.expectCoded(error, `${stepLabel} ${what}`, STATE_ERROR_NAMES);
            }
          };
          await refused(() => layer.step(x.value, state), 'a second async step');
          await refused(() => layer.stepSync(x.value, state), 'a sync step');
          await refused(() => state.serialize(), 'serialize');
          await refused(() => state.clone(), 'clone');
          out = await this.run(stepLabel, () => first);
        } else {
          out = await this.run(stepLabel, () => (async ? layer.step(x.value, target) : layer.stepSync(x.value, target)));
        }
      } catch (error) {
        if (stepValid && x.clean && clean) this.fail(`${stepLabel}: rejected valid input: ${String((error as Error)?.message ?? error)}`);
        this.expectError(error, stepLabel, false, STATE_ERROR_NAMES);
        // A pass that overflowed has absorbed its tokens (and says so); any other failure leaves the state alone.
        if (/the state has absorbed the tokens/.test(String((error as Error)?.message))) {
          position += n;
          comparable = false;
        }
        if (state.position !== position) this.fail(`${stepLabel}: a failed step moved the state from ${position} to ${state.position}`);
        if (staleModel) return;
        continue;
      }
      if (!stepValid) {
        this.fail(`${stepLabel}: accepted invalid arguments (x shape ${JSON.stringify(xShape)}, ${target === state ? 'own state' : 'another state'})`);
        return;
      }
      this.checkOutput(stepLabel, out, [batch, n, m.D], true);
      position += n;
      if (state.position !== position) this.fail(`${stepLabel}: position ${state.position}, expected ${position}`);
      comparable &&= x.clean;
      xs.push((x.value as Tensor).data);
      outs.push(out.data);
    }
    if (position > 0 && this.chance(0.3)) await this.roundTrip(m, state, batch);
    if (!comparable || position === 0) return;
    // The steps equal the causal forward pass over the whole sequence.
    const gather = (parts: Float32Array[]) => {
      const all = new Float32Array(batch * position * m.D);
      let t0 = 0;
      for (const p of parts) {
        const n = p.length / (batch * m.D);
        for (let b = 0; b < batch; b++) all.set(p.subarray(b * n * m.D, (b + 1) * n * m.D), (b * position + t0) * m.D);
        t0 += n;
      }
      return all;
    };
    const options: Record<string, unknown> = {};
    if (memoryTensor !== undefined) {
      options.memory = memoryTensor;
      if (memoryMask !== undefined) options.memoryKeyPaddingMask = { data: memoryMask, shape: [batch, memoryMask.length / batch] };
    }
    if (m.kind !== 'mhaCausal') options.attention = 'favor';
    const whole = layer.forwardSync({ data: gather(xs), shape: [batch, position, m.D] }, options);
    const stepped = gather(outs);
    this.summary.referenceChecks++;
    const err = relFrobenius(stepped, Float64Array.from(whole.data));
    if (!(err <= DECODE_TOL)) this.fail(`${label}: ${outs.length} steps (${position} tokens) differ from the causal forward pass by ${err.toExponential(2)}`);
  }

  /** serialize → loadState continues with the same bits as the original. */
  private async roundTrip(m: Model, state: DecodingState, batch: number): Promise<void> {
    const layer = call(m);
    const label = `${m.kind} serialize / loadState`;
    try {
      const loaded = layer.loadState(this.placedBytes(state.serialize()));
      const x = { data: randn(this.rng, batch * m.D), shape: [batch, 1, m.D] };
      const a = layer.stepSync(x, state.clone());
      const b = await this.run(label, () => layer.step(x, loaded));
      this.summary.referenceChecks++;
      if (!sameBits(a.data, b.data)) this.fail(`${label}: a loaded state steps differently from the original`);
    } catch (error) {
      this.fail(`${label}: ${String((error as Error)?.message ?? error)}`);
    }
  }

  /** Bytes as a Buffer, a Uint8Array at an odd offset, or in shared memory. */
  placedBytes(bytes: Uint8Array): Uint8Array {
    const r = this.rng.uniform();
    if (r < 0.15) {
      const offset = 1 + this.rng.int(7);
      const view = new Uint8Array(new ArrayBuffer(bytes.length + offset + 5), offset, bytes.length);
      view.set(bytes);
      return view;
    }
    if (r < 0.25) {
      const view = new Uint8Array(new SharedArrayBuffer(bytes.length + 8), this.rng.int(2) * 4, bytes.length);
      view.set(bytes);
      return view;
    }
    return bytes;
  }

  /** Constructors with random options, wrong ones and sizes that cannot be allocated. */
  construct(): void {
    const cls = this.pick(['MultiHeadAttention', 'EncoderLayer', 'DecoderLayer', 'TransformerEncoder', 'TransformerDecoder'] as const);
    const D = this.pick([1, 2, 3, 4, 6, 8]);
    const o: Record<string, unknown> = { modelDim: D, numHeads: this.pick([1, 2, 3].filter((h) => D % h === 0)), seed: this.rng.int(100) };
    if (cls.startsWith('Transformer')) o.numLayers = 1 + this.rng.int(2);
    // [value, valid?] per option; null: either outcome (depends on the other options).
    const block = cls !== 'MultiHeadAttention';
    const table: Record<string, [unknown, boolean | null][]> = {
      modelDim: [[0, false], [-4, false], [2.5, false], ['8', false], [NaN, false], [Infinity, false], [null, false], [2 ** 20 + 1, false], [2 ** 31, false], [16, null]],
      numHeads: [[0, false], [-1, false], [1.5, false], ['x', false], [5, null], [1, true]],
      headDim: [[0, false], [1, true], [7, true], [2 ** 16 + 1, false], [1.5, false]],
      featureMap: [[{ numFeatures: 0 }, false], [{ kernel: 'bogus' }, false], [{ kernel: 'relu', numFeatures: 4 }, true], [{ typo: 1 }, false], ['softmax', false], [{ normScaling: 'x' }, false], [{ seed: -1 }, false], [{ kernelEpsilon: -1 }, false], [{ orthogonal: false, numFeatures: 3 }, true]],
      attention: [['exact', false], [0, false], ['softmax', true]],
      epsilon: [[-1, false], [NaN, false], [1e-6, true]],
      chunkSize: [[0, false], [4097, false], [1, true], [7, true]],
      seed: [[-1, false], [1.5, false], [2 ** 53, false], [7, true]],
      bias: [['no', false], [false, true]],
      [this.pick(['typo', 'modeldim', 'heads'])]: [[1, false]],
    };
    if (cls === 'MultiHeadAttention') {
      table.keyDim = [[0, false], [3, true], [2 ** 21, false]];
      table.causal = [['yes', false], [true, true]];
    } else {
      table.ffDim = [[0, false], [1, true], [2 ** 25, false], [2.5, false]];
      table.activation = [['tanh', false], [3, false], ['gelu', true]];
      table.normFirst = [['yes', false], [true, true]];
      table.layerNormEps = [[0, false], [-1, false], [NaN, false], [1e-12, true]];
      table.keyDim = [[4, false]];
    }
    if (cls.includes('Decoder')) table.crossAttention = [['yes', false], [false, true]];
    if (cls.startsWith('Transformer')) {
      table.numLayers = [[0, false], [1025, false], [2.5, false], [undefined, false]];
      table.finalNorm = [[1, false], [true, true]];
    }
    const verdicts = new Map<string, boolean | null>(); // per option: the last value set decides
    const mutations = this.rng.int(3);
    for (let i = 0; i < mutations; i++) {
      const key = this.pick(Object.keys(table));
      const [value, ok] = this.pick(table[key]);
      o[key] = value;
      verdicts.set(key, ok);
    }
    let valid: boolean | null = [...verdicts.values()].includes(false) ? false : [...verdicts.values()].includes(null) ? null : true;
    let arg: unknown = o;
    if (this.chance(0.05)) {
      // Sizes no machine can allocate (each at least one array of 2^36 floats).
      arg = this.pick<Record<string, unknown>>([
        { modelDim: 2 ** 20, numHeads: 1 },
        { modelDim: 2 ** 14, numHeads: 2 ** 9, headDim: 2 ** 16 },
        { modelDim: 8, numHeads: 2, headDim: 2 ** 16, featureMap: { numFeatures: 2 ** 20 } },
        ...(block ? [{ modelDim: 2 ** 14, numHeads: 1, ffDim: 2 ** 24 }] : []),
      ]);
      if (cls.startsWith('Transformer')) (arg as Record<string, unknown>).numLayers = 1024;
      valid = false;
    } else if (this.chance(0.03)) {
      arg = this.pick([undefined, null, 8, 'x', [], new Float32Array(2)]);
      valid = false;
    }
    const label = `new ${cls}(${JSON.stringify(arg)})`;
    let layer: AnyLayer;
    try {
      const classes = { MultiHeadAttention, EncoderLayer, DecoderLayer, TransformerEncoder, TransformerDecoder };
      layer = new classes[cls](arg as never);
    } catch (error) {
      if (valid === true) this.fail(`${label}: rejected valid options: ${String((error as Error)?.message ?? error)}`);
      this.expectCoded(error, label);
      return;
    }
    if (valid === false) {
      this.fail(`${label}: accepted invalid options`);
      return;
    }
    // A model that was built runs.
    const c = (layer as unknown as { config: { modelDim?: number; keyDim?: number; crossAttention?: boolean; attention: { modelDim: number } | string } }).config;
    const width = typeof c.attention === 'string' ? c.modelDim! : c.attention.modelDim;
    const x = { data: randn(this.rng, 2 * width), shape: [1, 2, width] };
    const options: Record<string, unknown> = {};
    if (cls === 'MultiHeadAttention' && c.keyDim !== width) options.memory = { data: randn(this.rng, 3 * c.keyDim!), shape: [1, 3, c.keyDim!] };
    if (cls.includes('Decoder') && c.crossAttention !== false) options.memory = { data: randn(this.rng, 3 * width), shape: [1, 3, width] };
    try {
      this.checkOutput(`${label}.forwardSync`, (layer as unknown as Callable).forwardSync(x, options), [1, 2, width], true);
    } catch (error) {
      this.fail(`${label}.forwardSync: ${String((error as Error)?.message ?? error)}`);
    }
  }

  /** loadParameters with junk: nothing changes unless everything is right. */
  loadParameters(): void {
    const m = this.pick(this.pool);
    const layer = call(m);
    const before = layer.parameters();
    const names = Object.keys(before);
    const tensors: Record<string, unknown> = {};
    const scale = this.chance(0.3) ? 1 + 2 ** -10 : 1;
    for (const name of names) {
      const data = before[name].data.map((v) => v * scale);
      const r = this.rng.uniform();
      tensors[name] = r < 0.1 ? data : r < 0.2 ? { data, dims: before[name].shape } : r < 0.3 ? { data } : { data, shape: before[name].shape };
      if (this.chance(0.05)) {
        const placed = this.placed(data);
        if (!placed.detached) tensors[name] = { data: placed.array, shape: before[name].shape };
      }
    }
    let strict: unknown = this.chance(0.7) ? undefined : this.chance(0.9) ? this.chance(0.5) : 'no';
    let options: unknown = strict === undefined ? undefined : { strict };
    let validOptions = strict === undefined || typeof strict === 'boolean';
    let valid = validOptions;
    let extraNames = false;
    if (this.chance(0.03)) {
      options = this.pick([{ typo: true }, 'strict', 3]);
      validOptions = false;
      strict = undefined;
    }
    const lenient = strict === false;
    const mutations = this.chance(0.3) ? 0 : 1 + this.rng.int(3);
    const kept = new Set<string>(); // absent projections that keep their values (strict: false)
    const done: string[] = [];
    const broken = new Set<string>(); // names whose last mutation made them invalid
    for (let i = 0; i < mutations; i++) {
      const name = this.pick(names);
      const shape = before[name].shape;
      const n = before[name].data.length;
      const what = this.rng.int(13);
      done.push(`${what} on ${name}`);
      kept.delete(name);
      broken.delete(name);
      if (what === 0) {
        delete tensors[name];
        if (lenient && name.endsWith('features.projection')) kept.add(name);
        else broken.add(name);
      } else if (what === 1) {
        setOwn(tensors, this.pick(['extra.weight', `${name}.x`, '__proto__', 'layers.9.q.bias']), { data: new Float32Array(2), shape: [2] });
        if (!lenient) extraNames = true;
      } else if (what === 2) {
        tensors[name] = { data: new Float32Array(n + 1), shape: [n + 1] };
        broken.add(name);
      } else if (what === 3) {
        tensors[name] = { data: new Float32Array(n), shape: [...shape].reverse().concat(shape.length === 1 ? [1] : []) };
        if (shape.length !== 1 && shape[0] === shape[1]) tensors[name] = { data: new Float32Array(n), shape: [n, 1, 1] };
        broken.add(name);
      } else if (what === 4) {
        const data = Float32Array.from(before[name].data);
        data[this.rng.int(n)] = this.pick([NaN, Infinity, -Infinity]);
        tensors[name] = { data, shape };
        broken.add(name);
      } else if (what === 5) {
        tensors[name] = { data: Float64Array.from(before[name].data), shape };
        broken.add(name);
      } else if (what === 6) {
        tensors[name] = Array.from(before[name].data);
        broken.add(name);
      } else if (what === 7) {
        tensors[name] = this.pick([null, undefined, 3, 'w']);
        broken.add(name);
      } else if (what === 8) {
        tensors[name] = { data: Float32Array.from(before[name].data), shape: this.pick<unknown>(['ab', { length: shape.length }, 5, [NaN], null]) };
        broken.add(name);
      } else if (what === 9) {
        const data = Float32Array.from(before[name].data);
        structuredClone(data, { transfer: [data.buffer] });
        tensors[name] = { data, shape };
        broken.add(name);
      } else if (what === 10) {
        tensors[name] = { data: Float32Array.from(before[name].data).map((v) => v + 0.5), shape };
      } else if (what === 11) {
        const data = Float32Array.from(before[name].data);
        data[this.rng.int(n)] = this.pick([1e-40, -1e-42, 3e38]);
        tensors[name] = { data, shape };
      } else {
        tensors[name] = { data: new Uint8Array(n), shape };
        broken.add(name);
      }
    }
    valid = validOptions && !extraNames && broken.size === 0;
    let arg: unknown = tensors;
    if (this.chance(0.03)) {
      arg = this.pick([null, [], 'tensors', new Float32Array(4), new Map()]);
      valid = false;
    }
    const label = `${m.kind}.loadParameters (mutations ${done.join(', ') || 'none'}${lenient ? ', strict false' : ''})`;
    try {
      layer.loadParameters(arg, options);
    } catch (error) {
      if (valid) this.fail(`${label}: rejected valid tensors: ${String((error as Error)?.message ?? error)}`);
      this.expectCoded(error, label);
      const after = layer.parameters();
      if (names.some((name) => !sameBits(after[name].data, before[name].data))) this.fail(`${label}: a rejected load changed the parameters`);
      return;
    }
    this.summary.results++;
    if (!valid) {
      this.fail(`${label}: accepted invalid tensors`);
      return;
    }
    const after = layer.parameters();
    for (const name of names) {
      const given = tensors[name] as Float32Array | { data: Float32Array } | undefined;
      const expected = kept.has(name) || given === undefined ? before[name].data : given instanceof Float32Array ? given : given.data;
      if (!sameBits(after[name].data, expected)) this.fail(`${label}: ${name} does not hold the loaded values`);
    }
    const x = { data: randn(this.rng, 2 * m.D), shape: [1, 2, m.D] };
    const options2 = m.needsMemory ? { memory: { data: randn(this.rng, 2 * m.memoryWidth), shape: [1, 2, m.memoryWidth] } } : {};
    try {
      this.checkOutput(`${label} then forwardSync`, layer.forwardSync(x, options2), [1, 2, m.D], true);
    } catch (error) {
      // Values like 3e38 in a weight may overflow; that must be a coded error.
      this.expectCoded(error, `${label} then forwardSync`);
    }
    // The pool's model gets its own weights back (loaded values such as 3e38 would poison later cases).
    layer.loadParameters(before);
  }

  /** readSafetensors on valid files, their mutations and random bytes. */
  safetensors(): void {
    let bytes: Buffer;
    let expected: Record<string, Tensor> | null = null;
    let convertible: Set<string> | null = null;
    const source = this.rng.uniform();
    if (source < 0.4) {
      const tensors: Record<string, Tensor> = {};
      for (let t = 0, n = this.rng.int(4); t < n; t++) {
        const shape = Array.from({ length: this.rng.int(4) }, () => this.pick([1, 2, 3, 4]));
        tensors[this.pick(['a', 'b.weight', 'c.bias', 'ünï', `t${t}`])] = { data: randn(this.rng, shape.reduce((a, b) => a * b, 1)), shape };
      }
      bytes = Buffer.from(writeSafetensors(tensors, this.chance(0.3) ? { k: 'v', '': 'x' } : undefined));
      expected = tensors;
    } else if (source < 0.75) {
      const made = mixedSafetensors(this);
      bytes = made.bytes;
      expected = made.expected;
      convertible = made.convertible;
    } else if (source < 0.9) {
      const m = this.pick(this.pool);
      expected = call(m).parameters();
      bytes = Buffer.from(writeSafetensors(expected));
    } else {
      bytes = Buffer.from(Array.from({ length: this.rng.int(200) }, () => this.rng.int(256)));
      if (bytes.length >= 8 && this.chance(0.5)) bytes.writeBigUInt64LE(BigInt(this.rng.int(bytes.length)), 0);
    }
    const mutation = expected !== null && this.chance(0.15) ? 'none' : this.mutateSafetensors(bytes);
    if (mutation !== 'none' && typeof mutation !== 'string') bytes = mutation.bytes;
    const how = typeof mutation === 'string' ? mutation : mutation.how;
    let include: ((name: string) => boolean) | undefined;
    let mustRead = how === 'none';
    const some = this.chance(0.3);
    if (convertible !== null) {
      if (this.chance(0.1)) {
        // No include: a file with I64 / U8 tensors is a TypeError.
        if (Object.keys(expected!).some((name) => !convertible!.has(name))) mustRead = false;
      } else include = (name) => convertible!.has(name) && (!some || name.length % 2 === 0);
    } else if (some) include = (name) => name.length % 2 === 0;
    let options: unknown = include ? { include } : undefined;
    if (this.chance(0.03)) {
      options = this.pick([{ include: 'a' }, { typo: 1 }, 'x']);
      mustRead = false;
    }
    const label = `readSafetensors (${how})`;
    let result: ReturnType<typeof readSafetensors>;
    try {
      result = readSafetensors(this.placedBytes(bytes), options as never);
    } catch (error) {
      if (mustRead) this.fail(`${label}: rejected a valid file: ${String((error as Error)?.message ?? error)}`);
      this.expectCoded(error, label);
      return;
    }
    this.summary.results++;
    for (const [name, t] of Object.entries(result.tensors)) {
      const n = Array.isArray(t.shape) && t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) ? t.shape.reduce((a, b) => a * b, 1) : -1;
      if (!(t.data instanceof Float32Array) || t.data.length !== n) this.fail(`${label}: tensor '${name}' has ${t.data?.length} values for shape ${JSON.stringify(t.shape)}`);
    }
    if (typeof result.metadata !== 'object' || Object.values(result.metadata).some((v) => typeof v !== 'string')) this.fail(`${label}: metadata is not strings`);
    if (how === 'none' && expected !== null && options !== undefined && typeof options !== 'object') this.fail(`${label}: accepted options ${String(options)}`);
    if (mustRead && expected !== null) {
      for (const [name, t] of Object.entries(expected)) {
        if (include && !include(name)) continue;
        const got = result.tensors[name];
        if (got === undefined || !sameBits(got.data, t.data) || JSON.stringify(got.shape) !== JSON.stringify(t.shape)) this.fail(`${label}: tensor '${name}' does not read back`);
      }
    }
  }

  /** A random edit of a safetensors file: bits, length, header length or header JSON. */
  private mutateSafetensors(bytes: Buffer): { bytes: Buffer; how: string } {
    const kind = this.rng.int(8);
    if (kind === 0 && bytes.length > 0) {
      const out = Buffer.from(bytes);
      for (let i = 0, n = 1 + this.rng.int(4); i < n; i++) out[this.rng.int(out.length)] ^= 1 << this.rng.int(8);
      return { bytes: out, how: 'bit flips' };
    }
    if (kind === 1) return { bytes: bytes.subarray(0, this.rng.int(bytes.length + 1)), how: 'truncated' };
    if (kind === 2) return { bytes: Buffer.concat([bytes, Buffer.alloc(1 + this.rng.int(9), this.rng.int(256))]), how: 'extended' };
    if (kind === 3 && bytes.length >= 8) {
      const out = Buffer.from(bytes);
      const old = out.readBigUInt64LE(0);
      out.writeBigUInt64LE(this.pick([0n, 1n, old - 1n, old + 1n, old + 8n, 2n ** 64n - 1n, 2n ** 63n, 2n ** 53n + 1n, 2n ** 32n + old, 100_000_001n]) & (2n ** 64n - 1n), 0);
      return { bytes: out, how: 'header length' };
    }
    // Header JSON edits.
    if (bytes.length < 8) return { bytes, how: 'short' };
    const length = Number(bytes.readBigUInt64LE(0));
    if (length > bytes.length - 8) return { bytes, how: 'unparsable' };
    const text = bytes.toString('utf8', 8, 8 + length);
    const data = bytes.subarray(8 + length);
    let header: Record<string, Record<string, unknown>>;
    try {
      header = JSON.parse(text);
    } catch {
      return { bytes, how: 'unparsable' };
    }
    const names = Object.keys(header).filter((n) => n !== '__metadata__');
    if (kind === 4 && names.length > 0) {
      // A raw number in the text replaced by one JSON cannot carry exactly.
      const numbers = [...text.matchAll(/-?\d+(\.\d+)?([eE][-+]?\d+)?/g)];
      if (numbers.length > 0) {
        const hit = this.pick(numbers);
        const replacement = this.pick(['18446744073709551615', '18446744073709551616', '9007199254740993', '1e400', '-0', '-1', '1.5', '4e0', '0x10']);
        const edited = text.slice(0, hit.index) + replacement + text.slice(hit.index! + hit[0].length);
        return { bytes: withHeader(edited, data), how: `number ${hit[0]} -> ${replacement}` };
      }
    }
    if (kind === 5) {
      const raw = this.pick([
        '[]', 'null', '1', '"s"', '{}', '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        '\ufeff{}', '{"__metadata__":{"a":1}}', '{"__metadata__":[]}', '{"__metadata__":{"__proto__":"x"}}', '{"__proto__":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}',
        '{"x":{"dtype":"F32","shape":[1e400],"data_offsets":[0,0]}}', '{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}',
        '{"x":{"dtype":"F32","shape":[0,9007199254740991],"data_offsets":[0,0]}}', '{"x":{"dtype":"F32","shape":[3,3002399751580331],"data_offsets":[0,36]}}',
      ]);
      return { bytes: withHeader(raw, data.subarray(0, this.chance(0.5) ? 4 : data.length)), how: `header ${raw.slice(0, 40)}` };
    }
    if (kind === 6) {
      const bad = Buffer.from(text, 'utf8');
      if (bad.length > 0) bad[this.rng.int(bad.length)] = this.pick([0xff, 0xc3, 0x80, 0x00, 0x22, 0x7b]);
      return { bytes: Buffer.concat([bytes.subarray(0, 8), bad, data]), how: 'header byte' };
    }
    if (names.length === 0) return { bytes, how: 'no tensors' };
    const name = this.pick(names);
    const entry = header[name];
    const field = this.rng.int(6);
    let how: string;
    if (field === 0) {
      entry.data_offsets = this.pick<unknown>([[0, 2 ** 64], [-1, 3], [1.5, 4], [2, 6], [4, 0], ['0', '4'], [0], null, [2 ** 53, 2 ** 53 + 4], [0, data.length + 4], [0, data.length]]);
      how = `offsets ${JSON.stringify(entry.data_offsets)}`;
    } else if (field === 1) {
      entry.dtype = this.pick<unknown>(['F32', 'F16', 'BF16', 'F64', 'I64', 'U8', 'BOOL', 'F8_E5M2', 'I32', 'f32', 'X', null, 7]);
      how = `dtype ${String(entry.dtype)}`;
    } else if (field === 2) {
      const shape = entry.shape as number[];
      const n = shape.reduce((a, b) => a * b, 1);
      entry.shape = this.pick<unknown>([[], [0], [2 ** 53], [2 ** 32, 2 ** 32], [-1], [1.5], 'x', null, [1, [2]], [...shape].reverse(), [2 * n], [n, 1, 1, 1, 1, 1, 1, 1], [2 ** 31, 2 ** 31, 0]]);
      how = `shape ${JSON.stringify(entry.shape)}`;
    } else if (field === 3) {
      delete header[name];
      how = 'entry deleted';
    } else if (field === 4) {
      header[`${name}.copy`] = { ...entry };
      how = 'entry duplicated';
    } else {
      setOwn(header, this.pick(['__proto__', 'constructor', '', name + '\u0000']), entry);
      delete header[name];
      how = 'entry renamed';
    }
    const json = JSON.stringify(header);
    const declared = this.chance(0.9) ? undefined : BigInt(json.length + this.pick([-1, 1, 7]));
    return { bytes: withHeader(json, data, declared), how };
  }

  /** loadState on valid states, their mutations, other models' states and junk. */
  async loadState(): Promise<void> {
    const m = this.pick(this.pool.filter((p) => p.decodes));
    const layer = call(m);
    const batch = 1 + this.rng.int(2);
    const options = m.needsMemory
      ? { memory: { data: randn(this.rng, batch * 3 * m.D), shape: [batch, 3, m.D] }, ...(this.chance(0.5) ? { memoryKeyPaddingMask: { data: new Uint8Array(batch * 3).fill(1).map((v, i) => (i % 3 === 1 ? 0 : v)), shape: [batch, 3] } } : {}) }
      : undefined;
    const state = m.decoder ? layer.createStateSync!(batch, options) : layer.createStateSync!(batch);
    for (let s = 0, n = this.rng.int(3); s < n; s++) layer.stepSync({ data: randn(this.rng, batch * 2 * m.D), shape: [batch, 2, m.D] }, state);
    const good = state.serialize();
    let bytes: unknown;
    let how: string;
    let mustFail = true;
    const kind = this.rng.int(12);
    if (kind === 0) {
      bytes = this.placedBytes(good);
      how = 'none';
      mustFail = false;
    } else if (kind === 1) {
      const out = Buffer.from(good);
      out[this.rng.int(out.length)] ^= 1 << this.rng.int(8);
      bytes = out;
      how = 'bit flip';
    } else if (kind === 2) {
      bytes = good.subarray(0, this.rng.int(good.length));
      how = 'truncated';
    } else if (kind === 3) {
      bytes = Buffer.concat([good, Buffer.alloc(1 + this.rng.int(8))]);
      how = 'extended';
    } else if (kind === 4) {
      bytes = this.pick<unknown>([null, undefined, 'PAST', new ArrayBuffer(16), new Float32Array(8), Array.from(good.subarray(0, 20)), {}]);
      how = 'junk';
    } else if (kind === 5) {
      const other = this.pick(this.pool.filter((p) => p !== m && p.decodes && !p.needsMemory));
      bytes = (call(other).createStateSync!.call(other.layer, batch) as DecodingState).serialize();
      how = `a state of ${other.kind}`;
    } else if (kind === 6) {
      const random = Buffer.from(Array.from({ length: 16 + this.rng.int(64) }, () => this.rng.int(256)));
      random.write('PAST', 0, 'latin1');
      if (this.chance(0.5)) random.writeUInt16LE(1, 4);
      random.writeUInt32LE(crc32(random.subarray(0, random.length - 4)), random.length - 4);
      bytes = random;
      how = 'random with magic and checksum';
    } else if (kind === 7) {
      const version = this.pick([0, 2, 65535]);
      const out = Buffer.from(good);
      out.writeUInt16LE(version, 4);
      out.writeUInt32LE(crc32(out.subarray(0, out.length - 4)), out.length - 4);
      bytes = out;
      how = `version ${version}`;
    } else if (kind === 8) {
      // Header edits with the checksum fixed.
      const edit = this.rng.int(9);
      how = `header edit ${edit}`;
      bytes = rebuildState(good, (h) => {
        const arrays = h.arrays as Record<string, unknown>[];
        const a = this.pick(arrays);
        switch (edit) {
          case 0: return this.pick<unknown>([null, 3, 'x', [], true]);
          case 1: arrays[this.rng.int(arrays.length)] = this.pick<unknown>([null, 3, 'x', {}, []]) as Record<string, unknown>; return undefined;
          case 2: h.arrays = this.pick<unknown>([null, {}, 'x', arrays.slice(1), [...arrays, arrays[0]]]); return undefined;
          case 3: h.batch = this.pick<unknown>([0, -1, 1.5, '1', null, batch + 1, 2 ** 53]); return undefined;
          case 4: h.position = this.pick<unknown>([-1, 1.5, '3', null, 1e300, 2 ** 53, Infinity]); return undefined;
          case 5: h.model = this.pick<unknown>([null, 'x', 3, `${String(h.model)} `]); return undefined;
          case 6: a.dtype = this.pick(['u8', 'f32', 'f64', null]); return undefined;
          case 7: a.name = this.pick(['x', null, 3, '__proto__']); return undefined;
          default: a.length = this.pick<unknown>([-1, 1.5, '4', null, 2 ** 53, 1e20, (a.length as number) + 1]); return undefined;
        }
      });
    } else if (kind === 9) {
      // One array resized (data and header), checksum fixed.
      how = 'array resized';
      bytes = rebuildState(good, (h, arrays) => {
        const i = this.rng.int(arrays.length);
        const info = (h.arrays as { dtype: string; length: number }[])[i];
        const length = this.pick([0, 1, Math.max(0, info.length - 1), info.length + 1, 2 * info.length, Math.floor(info.length / 2)]);
        const itemBytes = info.dtype === 'f32' ? 4 : 1;
        const data = new Uint8Array(length * itemBytes);
        data.set(arrays[i].subarray(0, Math.min(data.length, arrays[i].length)));
        arrays[i] = data;
        info.length = length;
        return undefined;
      });
    } else if (kind === 10) {
      // Array contents rewritten with non-finite or huge values, checksum fixed.
      how = 'array values';
      bytes = rebuildState(good, (_h, arrays) => {
        const a = this.pick(arrays.filter((x) => x.length >= 4));
        if (a !== undefined) {
          const f = new Float32Array(a.buffer, a.byteOffset, a.length >> 2);
          for (let i = 0, n = 1 + this.rng.int(3); i < n; i++) f[this.rng.int(f.length)] = this.pick([NaN, Infinity, -Infinity, 3e38, -3e38, 1e-40]);
        }
        return undefined;
      });
      mustFail = false; // the arrays' values are the model's business; the step must stay coded or finite
    } else {
      bytes = Buffer.from(Array.from({ length: this.rng.int(100) }, () => this.rng.int(256)));
      how = 'random bytes';
    }
    const label = `${m.kind}.loadState (${how})`;
    let loaded: DecodingState;
    try {
      loaded = layer.loadState(bytes);
    } catch (error) {
      if (!mustFail && how === 'none') this.fail(`${label}: rejected a valid state: ${String((error as Error)?.message ?? error)}`);
      this.expectCoded(error, label);
      return;
    }
    this.summary.results++;
    // Anything accepted must behave: a step gives finite values or a coded error.
    const x = { data: randn(this.rng, batch * m.D), shape: [batch, 1, m.D] };
    try {
      const out = layer.stepSync(x, loaded);
      this.summary.results++;
      if (!allFinite(out.data) && how !== 'array values') this.fail(`${label}: non-finite step output`);
      if (how === 'none') {
        const expected = layer.stepSync(x, state);
        this.summary.referenceChecks++;
        if (!sameBits(out.data, expected.data)) this.fail(`${label}: a loaded state steps differently from the original`);
      }
    } catch (error) {
      if (how === 'none') this.fail(`${label}: step on a loaded valid state: ${String((error as Error)?.message ?? error)}`);
      this.expectCoded(error, `${label} then stepSync`, STATE_ERROR_NAMES);
    }
    if (mustFail && how !== 'none') {
      // Accepted edits must not have been harmful ones (checked above); report the rest as accepted corruption.
      const harmless = loaded.batch === batch && loaded.byteLength === state.byteLength && Number.isSafeInteger(loaded.position) && loaded.position >= 0;
      if (!harmless) this.fail(`${label}: accepted a state that does not fit this model (batch ${loaded.batch}, ${loaded.byteLength} bytes)`);
    }
  }

  override async one(): Promise<void> {
    this.summary.cases++;
    const r = this.rng.uniform();
    if (r < 0.35) await this.forward();
    else if (r < 0.55) await this.decode();
    else if (r < 0.65) this.construct();
    else if (r < 0.75) this.loadParameters();
    else if (r < 0.88) this.safetensors();
    else await this.loadState();
    this.keep.length = 0;
  }
}

export async function runLayerFuzz(seed: number, count: number, onCase?: (i: number) => void) {
  const fuzzer = new LayerFuzzer(seed);
  for (let i = 0; i < count; i++) {
    onCase?.(i);
    await fuzzer.one();
  }
  return fuzzer.summary;
}

if (require.main === module) fuzzMain(runLayerFuzz, 1000);
