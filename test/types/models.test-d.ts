// Type tests of the performer-pytorch models (see api.test-d.ts for how they run).
import {
  Performer,
  PerformerLM,
  PerformerLMState,
  type GenerateOptions,
  type LMConfig,
  type Numerics,
  type PerformerLMPytorchConfig,
  type PerformerPytorchConfig,
  type Tensor,
} from '../../lib';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const assertType = <T extends true>(value?: T) => value;

const config: PerformerLMPytorchConfig = { num_tokens: 256, max_seq_len: 1024, dim: 128, depth: 2, heads: 4, causal: true };
const lm = PerformerLM.fromPerformerPytorch('model.safetensors', config, { numerics: 'exact' });
PerformerLM.fromPerformerPytorch(new Uint8Array(8), config);
PerformerLM.fromPerformerPytorch({ 'token_emb.weight': { data: new Float32Array(4), shape: [2, 2] } }, config);
// @ts-expect-error the keys are the Python names
PerformerLM.fromPerformerPytorch('model.safetensors', { numTokens: 256, max_seq_len: 1024, dim: 128, depth: 2, heads: 4 });
// @ts-expect-error num_tokens is required
PerformerLM.fromPerformerPytorch('model.safetensors', { max_seq_len: 1024, dim: 128, depth: 2, heads: 4 });
// @ts-expect-error numerics is one of two names
PerformerLM.fromPerformerPytorch('model.safetensors', config, { numerics: 'fast' });
assertType<Equal<typeof lm.numerics, Numerics>>();
assertType<Equal<typeof lm.config, LMConfig>>();

const tokens = { data: new Int32Array(8), shape: [2, 4] };
const logits: Tensor = lm.forwardSync(tokens);
void lm.forward(tokens, { mask: { data: new Uint8Array(8), shape: [2, 4] }, signal: new AbortController().signal });
// @ts-expect-error the blocking twin takes no signal
lm.forwardSync(tokens, { signal: new AbortController().signal });
// @ts-expect-error tokens are integers (Int32Array), not floats
lm.forwardSync({ data: new Float32Array(8), shape: [2, 4] });

const state: PerformerLMState = lm.createStateSync();
// Every createState returns a Promise; createStateSync is its blocking twin.
assertType<Equal<ReturnType<PerformerLM['createState']>, Promise<PerformerLMState>>>();
const next: Float32Array = lm.stepSync(Int32Array.of(1, 2, 3), state);
void lm.step(Buffer.from('bytes'), state, { signal: new AbortController().signal });
assertType<Equal<ReturnType<PerformerLMState['clone']>, PerformerLMState>>();
assertType<Equal<typeof state.recomputes, number>>();
const restored: PerformerLMState = lm.loadState(state.serialize());

const options: GenerateOptions = { maxNewTokens: 16, temperature: 0.8, topK: 40, topP: 0.95, seed: 1, stopTokens: [10], state: restored };
const stream: AsyncIterable<number> = lm.generate([1, 2, 3], options);
// @ts-expect-error maxNewTokens is required
lm.generate([1, 2, 3], { temperature: 1 });

const encConfig: PerformerPytorchConfig = { dim: 64, depth: 2, heads: 4, dim_head: 16, local_attn_heads: [0, 2] };
const enc = Performer.fromPerformerPytorch('encoder.safetensors', encConfig);
const out: Tensor = enc.forwardSync({ data: new Float32Array(64), shape: [1, 1, 64] }, { mask: { data: Uint8Array.of(1), shape: [1, 1] } });
// @ts-expect-error a bare Performer needs dim_head
Performer.fromPerformerPytorch('encoder.safetensors', { dim: 64, depth: 2, heads: 4 });

void [logits, next, stream, out];

// Training.
import { AdamW, type StepReport, type TrainingOptions } from '../../lib';
const trainOptions: TrainingOptions = { attention: 'softmax' };
const lossValue: Promise<number> = lm.lossAndGrad(tokens, tokens, trainOptions);
const syncLoss: number = lm.lossAndGradSync(tokens, tokens);
// @ts-expect-error the blocking twin takes no signal
lm.lossAndGradSync(tokens, tokens, { signal: new AbortController().signal });
const adamw = new AdamW(lm, { lr: 1e-3, betas: [0.9, 0.98], decay: 'cosine', totalSteps: 100 });
const report: StepReport = adamw.step();
// @ts-expect-error a schedule is one of three names
new AdamW(lm, { decay: 'exponential' });
void [lossValue, syncLoss, report];
