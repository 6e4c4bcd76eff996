// Coverage-guided fuzzing (Jazzer.js, libFuzzer) of the parsers of untrusted bytes, the
// short run that `npm test` makes (docs/fuzzing.md; `npm run fuzz` is the long one):
//   - the committed corpus (test/fuzz/corpus/<target>/: seeds and past findings) replayed
//     through every target, in a child process;
//   - each target fuzzed for a bounded number of executions, with a fixed seed, in a child
//     process, instrumenting the library (dist/) and the service example;
//   - the findings of past runs, each asserted as the documented error it now is.
// Runs the built package (dist/): `npm test` compiles it first.
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import type { FastifyInstance } from 'fastify';

import { expectThrows } from './helpers/errors';
import { runNodeChild } from './helpers/fuzz-runner';

const lib = require('../dist') as typeof import('../lib');
// Where a model's parameters are allocated (Linear.random) and its random features sampled
// (the addon's sampleProjection): the regressions below check that neither is reached.
const { Linear } = require('../dist/layers/parameters') as { Linear: { random(...args: unknown[]): unknown } };
const { native } = require('../dist/native') as { native(): { sampleProjection(...args: unknown[]): unknown } };
const { decodingModels, file: modelFile } = require('./fuzz/models.js') as {
  decodingModels(): { name: string; model: { loadState(bytes: Uint8Array): unknown } }[];
  file(name: string): string;
};
const { frame } = require('./fuzz/targets/decoding-state-framed.js') as { frame(content: Uint8Array): Buffer };
const { buildServer } = require('../examples/service/server.js') as { buildServer(options: Record<string, unknown>): FastifyInstance };
const { loadModel } = require('../examples/service/model.js') as { loadModel(file: string): Promise<{ modelDim: number }> };
const { readBinaryParams } = require('../examples/service/input.js') as {
  readBinaryParams(query: Record<string, string>, headers: Record<string, string>, limits: Record<string, unknown>): { shape: number[] };
};

const ROOT = path.resolve(__dirname, '..');
const CORPUS = path.join(__dirname, 'fuzz', 'corpus');

/**
 * Executions of the short run, and the coverage (libFuzzer's `cov`: instrumented edges of
 * dist/ and examples/service/) that loading the committed corpus alone reaches, less a
 * margin; a run below it instruments less than it should.
 */
const SHORT_RUN = {
  safetensors: { runs: 20000, minCov: 210 },
  'model-file': { runs: 1500, minCov: 820 },
  'model-file-framed': { runs: 1500, minCov: 880 },
  'decoding-state': { runs: 10000, minCov: 390 },
  'decoding-state-framed': { runs: 5000, minCov: 400 },
  service: { runs: 4000, minCov: 400 },
} as const;
type Target = keyof typeof SHORT_RUN;
const TARGETS = Object.keys(SHORT_RUN) as Target[];

interface Run {
  status: number | null;
  signal: string | null;
  summaries: Record<string, unknown>[];
  stderr: string;
}

/** `node scripts/fuzz.js ...args --json --quiet`, killed after timeoutMs. */
async function fuzzScript(args: string[], timeoutMs: number): Promise<Run> {
  const run = await runNodeChild<Record<string, unknown>[]>([path.join(ROOT, 'scripts', 'fuzz.js'), ...args, '--json', '--quiet'], timeoutMs);
  // No summary: the status and stderr tell.
  return { status: run.status, signal: run.signal, summaries: Array.isArray(run.last) ? run.last : [], stderr: run.stderr };
}

const corpusFiles = (target: string) => fs.readdirSync(path.join(CORPUS, target)).filter((f) => !f.startsWith('.'));

describe('committed corpus', () => {
  let run: Run;
  beforeAll(async () => {
    run = await fuzzScript(['all', '--replay', '--timeout-ms', '5000'], 60000);
  }, 70000);

  test.each(TARGETS)('%s: every input ends in a documented error or a consistent result', (target) => {
    const summary = run.summaries.find((s) => s.target === target);
    if (summary === undefined) throw new Error(`no replay summary for ${target} (exit ${run.status}, ${run.signal}):\n${run.stderr.slice(-5000)}`);
    expect(summary.failures).toEqual([]);
    expect(summary.inputs).toBe(corpusFiles(target).length);
  });

  test('every target has seeds, and the corpus stays small', () => {
    let bytes = 0;
    for (const target of TARGETS) {
      expect(corpusFiles(target).filter((f) => f.startsWith('seed-')).length).toBeGreaterThanOrEqual(8);
      for (const f of corpusFiles(target)) bytes += fs.statSync(path.join(CORPUS, target, f)).size;
    }
    expect(bytes).toBeLessThan(1_000_000);
  });
});

describe('short fuzzing run (Jazzer.js)', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-fuzz-'));
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  test.each(TARGETS)(
    '%s: a bounded run instruments the library and finds nothing',
    async (target) => {
      const { runs, minCov } = SHORT_RUN[target];
      // A fixed seed and a fresh work corpus: the same run every time, from the committed
      // corpus. It ends after `runs` executions, however slow the machine; the child's
      // timeout only guards against a hang.
      const args = [target, '--runs', String(runs), '--seed', '1', '--work-corpus', path.join(work, target)];
      const run = await fuzzScript(args, 240000);
      const summary = run.summaries[0] as { executions: number; cov: number; findings: string[] } | undefined;
      if (run.status !== 0 || summary === undefined) {
        throw new Error(`npm run fuzz -- ${args.join(' ')}: exit ${run.status} ${run.signal ?? ''}\n${run.stderr.slice(-8000)}`);
      }
      expect(summary.findings).toEqual([]);
      // It fuzzed every execution asked for (beyond replaying the seeds), over instrumented
      // library code.
      expect(summary.executions).toBe(runs);
      expect(summary.cov).toBeGreaterThanOrEqual(minCov);
    },
    250000,
  );
});

// Each was a finding of a fuzzing run; its input is in the corpus (regression-*), which the
// replay above runs through the target's whole oracle. Here: the documented error it is now.
describe('regressions found by coverage-guided fuzzing', () => {
  const corpus = (target: string, name: string) => fs.readFileSync(path.join(CORPUS, target, name));
  const invalid = (message: RegExp) => ({ name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE', message }) as const;

  test('a decoding state whose count of prefix recomputes is negative: RangeError, not a state', () => {
    // decoding-state-framed: a valid PerformerLM state (checksum and all) with stats[0] = -65536.
    const bytes = frame(corpus('decoding-state-framed', 'regression-negative-recomputes'));
    expect(bytes.equals(corpus('decoding-state', 'regression-negative-recomputes'))).toBe(true);
    const lm = decodingModels().find((m) => m.name === 'lm-history')!.model;
    expectThrows(() => lm.loadState(bytes), invalid(/^PerformerLM\.loadState: corrupt state: a negative count of prefix recomputes \(-65536\)$/));
    // The same state with a count of 0 loads.
    const content = Buffer.from(corpus('decoding-state-framed', 'regression-negative-recomputes'));
    content.writeInt32LE(0, 4 + ((content.readUInt32LE(0) + 3) & ~3));
    expect((lm.loadState(frame(content)) as { recomputes: number }).recomputes).toBe(0);
  });

  test('a model file whose options need far more values than it holds: RangeError at once, nothing allocated', () => {
    // Before: these 208 bytes made readModel allocate and fill 2.3 GB (10 s), and these 200
    // bytes, asking for orthogonal features of headDim 4096, ran an O(headDim³) sampling (minutes).
    // Spies that throw: reaching either fails the expected error at once, instead of running
    // the allocation or the sampling.
    const sample = jest.spyOn(native(), 'sampleProjection').mockImplementation(() => {
      throw new Error('sampled random features');
    });
    const allocate = jest.spyOn(Linear, 'random');
    try {
      allocate.mockImplementation(() => {
        throw new Error('allocated parameters');
      });
      for (const [name, count] of [
        ['regression-huge-model', 576060000],
        ['regression-orthogonal-head-dim', 147464],
      ] as const) {
        expectThrows(
          () => lib.readModel(corpus('model-file', name)),
          invalid(new RegExp(`^model: the options describe a model of ${count} parameters \\(MultiHeadAttention options\\), too many for the 0 values the file holds$`)),
        );
      }
      expect(allocate).not.toHaveBeenCalled();
      // Enough values, but not the model's: it gets as far as loadParameters (its parameters
      // allocated), without sampling orthogonal features of headDim 4096 first (the file's
      // projection would replace them).
      allocate.mockRestore();
      const meta = JSON.stringify({ format: 1, class: 'MultiHeadAttention', options: { modelDim: 8, numHeads: 1, headDim: 4096, featureMap: { numFeatures: 1 } } });
      const filler = lib.writeSafetensors({ filler: { data: new Float32Array(110_000), shape: [110_000] } }, { 'performer-attention': meta });
      expectThrows(() => lib.readModel(filler), invalid(/^MultiHeadAttention\.loadParameters: missing q\.weight, .*; unexpected filler$/));
      expect(sample).not.toHaveBeenCalled();
    } finally {
      allocate.mockRestore();
      sample.mockRestore();
    }
    // Model files of every class still read to their parameters, features included, and compute.
    for (const name of ['mha', 'decoder', 'decoder-layer', 'encoder']) {
      const bytes = fs.readFileSync(modelFile(name));
      const model = lib.readModel(bytes);
      const tensors = lib.readSafetensors(bytes).tensors;
      for (const [key, t] of Object.entries(model.parameters())) expect(Array.from(t.data)).toEqual(Array.from(tensors[key].data));
    }
    const encoder = lib.readModel(fs.readFileSync(modelFile('encoder'))) as InstanceType<typeof lib.TransformerEncoder>;
    const same = new lib.TransformerEncoder(encoder.options());
    same.loadParameters(encoder.parameters());
    const x = { data: Float32Array.from({ length: 12 }, (_, i) => Math.sin(i)), shape: [1, 3, 4] };
    expect(Array.from(encoder.forwardSync(x).data)).toEqual(Array.from(same.forwardSync(x).data));
  });

  test("an x-shape with a space inside a number ('0 3,1,4'): 400, not a [3, 1, 4] tensor", async () => {
    // The fuzzer's request: a binary body with the header 'x-shape:0 3,1,4'.
    expect(corpus('service', 'regression-x-shape-space-in-number').toString('latin1')).toContain('\nx-shape:0 3,1,4\n');
    const limits = { modelDim: 4, maxSeqLen: 64, maxBatch: 8, maxTokens: 64, defaultAttention: 'favor' };
    for (const shape of ['0 3,1,4', '1 2,4', '3,1 ,4 4']) {
      let caught: { statusCode?: number; message?: string } | undefined;
      try {
        readBinaryParams({}, { 'x-shape': shape }, limits);
      } catch (error) {
        caught = error as typeof caught;
      }
      expect(caught).toBeDefined();
      expect({ statusCode: caught!.statusCode, message: caught!.message }).toEqual({
        statusCode: 400,
        message: `header x-shape: expected 'seq,modelDim' or 'batch,seq,modelDim' (for example 64,4), received the string ${JSON.stringify(shape)}`,
      });
    }
    // Spaces around the numbers are still read.
    expect(readBinaryParams({}, { 'x-shape': ' 3 , 1 , 4 ' }, limits).shape).toEqual([3, 1, 4]);
    expect(readBinaryParams({ shape: '3,4' }, {}, limits).shape).toEqual([1, 3, 4]);

    // Through the server: the 400 reaches the client.
    const app = buildServer({ model: await loadModel(modelFile('encoder')), maxSeqLen: 64 });
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const post = (shape: string) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const { port } = app.server.address() as AddressInfo;
          const headers = { 'content-type': 'application/octet-stream', 'x-shape': shape };
          const req = http.request({ port, host: '127.0.0.1', method: 'POST', path: '/encode', headers, agent: false }, (res) => {
            let body = '';
            res.on('data', (chunk) => (body += chunk));
            res.on('end', () => resolve({ status: res.statusCode!, body }));
          });
          req.on('error', reject);
          req.end(Buffer.from(new Float32Array(12).buffer));
        });
      const bad = await post('0 3,1,4');
      expect(bad.status).toBe(400);
      expect(JSON.parse(bad.body).message).toMatch(/^header x-shape: expected 'seq,modelDim'/);
      expect((await post('3,1,4')).status).toBe(200);
    } finally {
      await app.close();
    }
  });
});
