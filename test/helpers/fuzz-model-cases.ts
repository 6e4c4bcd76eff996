// Seeded fuzz cases over PerformerLM / Performer: configs (valid and not), checkpoints
// with missing, mis-shaped, non-finite or junk tensors, token inputs, masks, decoding
// states (steps in random chunks against the forward pass, serialized and mutated
// bytes) and generate options. Run in a child process by test/fuzz-models.test.ts
// (`node -r ./test/helpers/ts-register.js test/helpers/fuzz-model-cases.ts <seed> <count>`).
//
// Every case must end in a correct result (finite outputs of the right shape; sync and
// async bits equal; step logits equal to forward over the prefix; a loaded state
// stepping like the original; generated tokens in range) or in a TypeError / RangeError /
// Error with a `code`. The child prints one JSON summary line.
import { Performer, PerformerLM, PerformerLMState, type Tensor } from '../../lib';
import { crc32 } from '../../lib/crc32';
import { Fuzzer, fuzzMain } from './fuzz-cases';
import { allFinite, randn, relFrobenius } from './reference';

const STEP_TOL = 1e-5;
const STATE_ERROR_NAMES = ['TypeError', 'RangeError', 'Error'];

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

class ModelFuzzer extends Fuzzer {
  /** A small config, usually valid; `lm` adds the language model's keys. */
  config(lm: boolean): { config: Record<string, unknown>; valid: boolean } {
    const heads = this.pick([1, 2, 4]);
    const dimHead = this.pick([2, 4, 8]);
    const depth = this.pick([1, 2, 3]);
    const c: Record<string, unknown> = { dim: heads * this.pick([2, 4, 8]), depth, heads, dim_head: dimHead };
    if (this.chance(0.5)) c.causal = this.chance(0.7);
    if (this.chance(0.3)) c.nb_features = this.pick([1, 3, 8]);
    if (this.chance(0.3)) c.local_attn_heads = this.chance(0.5) ? this.rng.int(heads + 1) : Array.from({ length: depth }, () => this.rng.int(heads + 1));
    if (this.chance(0.3)) c.local_window_size = this.pick([1, 2, 3, 5]);
    for (const key of ['reversible', 'ff_glu', 'generalized_attention', 'use_scalenorm', 'use_rezero', 'no_projection', 'qkv_bias', 'attn_out_bias', 'shift_tokens']) {
      if (this.chance(0.2)) c[key] = this.chance(0.5);
    }
    if (this.chance(0.2)) c.ff_mult = this.pick([1, 2]);
    if (lm) {
      c.num_tokens = this.pick([2, 5, 17]);
      c.max_seq_len = this.pick([4, 9, 16]);
      if (this.chance(0.2)) c.tie_embed = true;
      if (this.chance(0.3)) {
        c.rotary_position_emb = false;
        if (this.chance(0.5)) c.axial_position_emb = true;
        if (this.chance(0.3)) c.axial_position_shape = this.pick([[2, 8], [4, 4], [1, 3, 3]]);
      }
    }
    let valid = true;
    if (this.chance(0.15)) {
      valid = false;
      const key = this.pick(Object.keys(c).concat(['dimHead', 'kernel_fn', 'cross_attend']));
      c[key] = this.pick<unknown>([-1, 0, 1.5, 'x', null, [], {}, true, 2 ** 40, NaN, 'GELU']);
    }
    return { config: c, valid };
  }

  tokens(numTokens: number, n: number): Int32Array {
    const t = Int32Array.from({ length: n }, () => this.rng.int(numTokens));
    if (n > 0 && this.chance(0.05)) t[this.rng.int(n)] = this.pick([-1, numTokens, 2 ** 31 - 1]);
    return t;
  }

  numerics(): 'performer-pytorch' | 'exact' {
    return this.chance(0.5) ? 'performer-pytorch' : 'exact';
  }

  /** Forward passes of a random model: shapes, finiteness, sync equals async. */
  async forward(): Promise<void> {
    const lm = this.chance(0.6);
    const { config } = this.config(lm);
    let model: PerformerLM | Performer;
    try {
      model = lm ? PerformerLM.random(config as never, { seed: this.rng.int(1000), numerics: this.numerics() }) : Performer.random(config as never, { seed: this.rng.int(1000), numerics: this.numerics() });
    } catch (error) {
      this.expectCoded(error, 'random model');
      return;
    }
    const B = this.pick([1, 2]);
    const L = this.pick([1, 2, 3, 5, 9, 17]);
    const mask = this.chance(0.3) ? { data: Uint8Array.from({ length: B * L }, () => (this.chance(0.7) ? 1 : 0)), shape: this.chance(0.05) ? [B, L + 1] : [B, L] } : undefined;
    let input: unknown;
    let width: number;
    if (model instanceof PerformerLM) {
      width = model.config.numTokens;
      input = this.chance(0.05) ? this.junk([B, L]) : { data: this.tokens(model.config.numTokens, B * L), shape: [B, L] };
    } else {
      width = model.config.dim;
      input = this.chance(0.05) ? this.junk([B, L, width]) : { data: randn(this.rng, B * L * width), shape: [B, L, width] };
    }
    const f = model as unknown as { forwardSync(x: unknown, o?: unknown): Tensor; forward(x: unknown, o?: unknown): Promise<Tensor> };
    let out: Tensor;
    try {
      out = f.forwardSync(input, mask ? { mask } : undefined);
    } catch (error) {
      this.expectCoded(error, 'forwardSync');
      return;
    }
    this.summary.results++;
    if (out.shape.join() !== [B, L, width].join()) this.fail(`forwardSync: shape ${out.shape.join()}, expected ${[B, L, width].join()}`);
    if (!allFinite(out.data)) this.fail(`forwardSync: non-finite output (config ${JSON.stringify(config)})`);
    if (this.chance(0.3)) {
      const again = await f.forward(input, mask ? { mask } : undefined);
      this.summary.referenceChecks++;
      if (!sameBits(again.data, out.data)) this.fail(`forward and forwardSync differ (config ${JSON.stringify(config)})`);
    }
  }

  /** Steps in random chunks against forward over the prefix; serialize, mutate, reload. */
  async decode(): Promise<void> {
    const { config } = this.config(true);
    config.causal = true;
    let lm: PerformerLM;
    try {
      lm = PerformerLM.random(config as never, { seed: this.rng.int(1000), numerics: this.numerics() });
    } catch (error) {
      this.expectCoded(error, 'random causal model');
      return;
    }
    const V = lm.config.numTokens;
    const state = lm.createStateSync();
    const seq: number[] = [];
    const chunks = this.pick([1, 2, 4]);
    for (let c = 0; c < chunks; c++) {
      const n = this.pick([1, 1, 2, 3, 6]);
      const tokens = this.tokens(V, n);
      let logits: Float32Array;
      try {
        logits = this.chance(0.3) ? await lm.step(tokens, state) : lm.stepSync(tokens, state);
      } catch (error) {
        this.expectCoded(error, 'step', STATE_ERROR_NAMES);
        if (state.position !== seq.length) this.fail(`a rejected step moved the state from ${seq.length} to ${state.position}`);
        return;
      }
      seq.push(...tokens);
      this.summary.results++;
      const full = lm.forwardSync({ data: Int32Array.from(seq), shape: [1, seq.length] });
      const last = full.data.subarray((seq.length - 1) * V, seq.length * V);
      this.summary.referenceChecks++;
      if (!(relFrobenius(logits, last) <= STEP_TOL)) {
        this.fail(`step logits differ from forward over the prefix by ${relFrobenius(logits, last)} (config ${JSON.stringify(config)}, ${lm.numerics}, length ${seq.length})`);
      }
    }
    const bytes = Buffer.from(state.serialize());
    const r = this.rng.uniform();
    const mutated = Buffer.from(bytes);
    let intact = true;
    if (r < 0.3) {
      mutated[this.rng.int(mutated.length)] ^= 1 << this.rng.int(8);
      intact = false;
    } else if (r < 0.45) {
      // A valid checksum over edited bytes: the reader must still see the damage.
      const at = 12 + this.rng.int(Math.max(1, mutated.length - 16));
      mutated[at] ^= 0x20;
      mutated.writeUInt32LE(crc32(mutated.subarray(0, mutated.length - 4)), mutated.length - 4);
      intact = false;
    } else if (r < 0.55) {
      intact = false;
      const cut = mutated.subarray(0, this.rng.int(mutated.length));
      this.tryLoad(lm, cut, state, intact);
      return;
    }
    this.tryLoad(lm, mutated, state, intact);
  }

  private tryLoad(lm: PerformerLM, bytes: Uint8Array, original: PerformerLMState, intact: boolean): void {
    let loaded: PerformerLMState;
    try {
      loaded = lm.loadState(bytes);
    } catch (error) {
      if (intact) this.fail(`loadState rejected an intact state: ${String((error as Error).message)}`);
      this.expectCoded(error, 'loadState', STATE_ERROR_NAMES);
      return;
    }
    const token = Int32Array.of(this.rng.int(lm.config.numTokens));
    const c = lm.config;
    const limit = c.positions === 'rotary' ? Infinity : c.positions === 'absolute' ? c.maxSeqLen : c.axialShape.reduce((a, b) => a * b, 1);
    if (intact && original.position >= limit) intact = false; // learned positions end: the step must be a RangeError
    try {
      const a = lm.stepSync(token, loaded);
      this.summary.results++;
      if (!allFinite(a)) this.fail('a loaded state stepped to non-finite logits');
      if (intact) {
        this.summary.referenceChecks++;
        if (!sameBits(a, lm.stepSync(token, original))) this.fail('a loaded state steps differently from the original');
      }
    } catch (error) {
      if (intact) this.fail(`a loaded intact state failed to step: ${String((error as Error).message)}`);
      this.expectCoded(error, 'step on a loaded state', STATE_ERROR_NAMES);
    }
  }

  /** A random model's own parameters, damaged, loaded back as a checkpoint. */
  checkpoint(): void {
    const { config } = this.config(true);
    let lm: PerformerLM;
    try {
      lm = PerformerLM.random(config as never, { seed: 1 });
    } catch (error) {
      this.expectCoded(error, 'random model');
      return;
    }
    const params: Record<string, unknown> = lm.parameters();
    const names = Object.keys(params);
    const name = this.pick(names);
    const damage = this.rng.int(6);
    if (damage === 0) delete params[name];
    else if (damage === 1) params[`${name}.extra`] = params[name];
    else if (damage === 2) params[name] = { data: (params[name] as Tensor).data, shape: [...(params[name] as Tensor).shape, 1] };
    else if (damage === 3) (params[name] as Tensor).data[0] = this.pick([NaN, Infinity, -Infinity]);
    else if (damage === 4) params[name] = this.junk([2, 2]);
    try {
      const loaded = PerformerLM.fromPerformerPytorch(params as never, config as never);
      if (damage !== 5 && !(damage === 2 && (params[name] as Tensor).shape.length === 1)) {
        this.fail(`a damaged checkpoint (${damage} on ${name}) was accepted`);
      }
      this.summary.results++;
      void loaded;
    } catch (error) {
      if (damage === 5) this.fail(`the model's own parameters were rejected: ${String((error as Error).message)}`);
      this.expectCoded(error, `checkpoint damage ${damage}`);
    }
  }

  /** generate with random options: tokens in range, or a coded error at the call. */
  async generate(): Promise<void> {
    const { config } = this.config(true);
    let lm: PerformerLM;
    try {
      lm = PerformerLM.random(config as never, { seed: 2, numerics: this.numerics() });
    } catch (error) {
      this.expectCoded(error, 'random model');
      return;
    }
    const V = lm.config.numTokens;
    const options: Record<string, unknown> = { maxNewTokens: this.pick<unknown>([1, 3, 5, 0, -1, 2.5, 'x', undefined]) };
    if (this.chance(0.5)) options.temperature = this.pick<unknown>([0, 0.5, 1, 2, -1, NaN]);
    if (this.chance(0.3)) options.topK = this.pick<unknown>([1, 2, 100, 0]);
    if (this.chance(0.3)) options.topP = this.pick<unknown>([0.5, 0.9, 1, 0, 1.5]);
    if (this.chance(0.5)) options.seed = this.pick<unknown>([0, 7, -3]);
    if (this.chance(0.2)) options.stopTokens = [this.rng.int(V + 1)];
    const prompt = this.tokens(V, this.pick([0, 1, 3]));
    let stream: AsyncGenerator<number>;
    try {
      stream = lm.generate(prompt, options as never);
    } catch (error) {
      this.expectCoded(error, 'generate');
      return;
    }
    try {
      for await (const token of stream) {
        if (!Number.isInteger(token) || token < 0 || token >= V) this.fail(`generated token ${token} outside [0, ${V})`);
      }
      this.summary.results++;
    } catch (error) {
      this.expectCoded(error, 'generating', STATE_ERROR_NAMES);
    }
  }

  override async one(): Promise<void> {
    this.summary.cases++;
    const r = this.rng.uniform();
    if (r < 0.35) await this.forward();
    else if (r < 0.65) await this.decode();
    else if (r < 0.8) this.checkpoint();
    else await this.generate();
    this.keep.length = 0;
  }
}

export async function runModelFuzz(seed: number, count: number, onCase?: (i: number) => void) {
  const fuzzer = new ModelFuzzer(seed);
  for (let i = 0; i < count; i++) {
    onCase?.(i);
    await fuzzer.one();
  }
  return fuzzer.summary;
}

if (require.main === module) fuzzMain(runModelFuzz, 300);
