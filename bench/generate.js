#!/usr/bin/env node
'use strict';
// Generation benchmark of a PerformerLM (dim 512, depth 6, 8 heads of 64, m = 266
// features, random weights): prefill tokens/s, per-token step latency after contexts of
// C tokens, the state's size, and the time to recompute the prefix for one token (what
// performer-pytorch's generate does at every step). Medians of repeated runs; ratios
// come from the same run. Both numerics by default. Then concurrent sessions: tokens/s of
// N sessions (each after a 64-token prompt) advanced by stepBatchSync against stepping them
// one by one, with float32, bf16 and int8 linear weights (lm.quantize), all interleaved in
// the same rounds.
//   npm run bench:generate -- [--contexts 256,4096,65536] [--steps 32] [--recompute-up-to 4096]
//                             [--sessions 1,8,64] [--weights float32,bf16,int8] [--runs 3]
//                             [--numerics performer-pytorch,exact] [--json results/generate.json]
const fs = require('node:fs');
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const { PerformerLM, backendInfo } = require('..');
const { median, quantile, mean } = require('./lib/stats');
const { parseFlagsOrExit, parseList, parseLength, integer, oneOf } = require('./lib/args');

const USAGE = 'npm run bench:generate -- [--contexts 256,4096,65536] [--steps 32] [--recompute-up-to 4096] [--sessions 1,8,64] [--weights float32,bf16,int8] [--runs 3] [--numerics performer-pytorch,exact] [--json FILE]';
const flags = parseFlagsOrExit('bench:generate', USAGE, process.argv.slice(2), {
  contexts: { value: (text, flag) => parseList(text, flag, 'lengths', parseLength) },
  steps: { value: integer(1, 1e6) },
  'recompute-up-to': { key: 'recomputeUpTo', value: integer(0, Number.MAX_SAFE_INTEGER) },
  sessions: { value: (text, flag) => parseList(text, flag, 'session counts', integer(1, 4096)) },
  weights: { value: (text, flag) => parseList(text, flag, 'weight formats', oneOf(['float32', 'bf16', 'int8'])) },
  runs: { value: integer(1, 1e6) },
  numerics: { value: (text, flag) => parseList(text, flag, 'numerics', oneOf(['performer-pytorch', 'exact'])) },
  json: { value: (text) => text },
}, { contexts: [256, 4096, 65536], steps: 32, recomputeUpTo: 4096, sessions: [1, 8, 64], weights: ['float32', 'bf16', 'int8'], runs: 3, numerics: ['performer-pytorch', 'exact'], json: null });
const { contexts, steps, recomputeUpTo, runs } = flags;
const config = { num_tokens: 256, max_seq_len: 4096, dim: 512, depth: 6, heads: 8, dim_head: 64, causal: true };

const time = (fn) => {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
};
// Byte-like token streams from a fixed generator (the weights are random anyway).
let seed = 0x2545f491;
const token = () => {
  seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
  return seed % 256;
};
const tokens = (n) => Int32Array.from({ length: n }, token);

const info = backendInfo();
console.log(`backend ${info.isa}, ${info.threads} threads; PerformerLM dim ${config.dim}, depth ${config.depth}, ${config.heads} heads of ${config.dim_head}, ` +
  `m = ${Math.floor(64 * Math.log(64))}, num_tokens ${config.num_tokens}, random weights; rotary positions (computed past max_seq_len)`);
const report = { backend: info, config, steps, runs, results: [], sessions: [] };

for (const numerics of flags.numerics) {
  const lm = PerformerLM.random(config, { seed: 1, numerics });
  console.log(`\nnumerics '${numerics}': prefill, then ${steps} single-token steps (stepSync)`);
  console.log('| context | prefill | prefill tokens/s | step median | step p90 | step mean | recomputes | state bytes | recompute prefix, 1 token | recompute / step |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const context of contexts) {
    const prompt = tokens(context);
    // Prefill: median of runs (the longest context once: it takes tens of seconds).
    const prefillRuns = context >= 32768 ? 1 : runs;
    let state;
    const prefill = median(
      Array.from({ length: prefillRuns }, () => {
        state = lm.createStateSync();
        return time(() => lm.stepSync(prompt, state));
      }),
    );
    const before = state.recomputes;
    const stepTimes = Array.from({ length: steps }, () => time(() => lm.stepSync(Int32Array.of(token()), state)));
    const recomputes = state.recomputes - before;
    const bytes = state.serialize().length;
    // What performer-pytorch does per generated token: a forward over the whole prefix.
    let recompute = null;
    if (context <= recomputeUpTo) {
      const input = { data: prompt, shape: [1, context] };
      lm.forwardSync({ data: prompt.subarray(0, 16), shape: [1, 16] });
      recompute = median(Array.from({ length: runs }, () => time(() => lm.forwardSync(input))));
    }
    const row = {
      numerics,
      context,
      prefillMs: prefill,
      prefillTokensPerSecond: (context / prefill) * 1000,
      stepMedianMs: median(stepTimes),
      stepP90Ms: quantile(stepTimes, 0.9),
      stepMeanMs: mean(stepTimes),
      recomputes,
      stateBytes: bytes,
      recomputePrefixMs: recompute,
    };
    report.results.push(row);
    const ms = (v) => (v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(2)} ms`);
    console.log(
      `| ${context} | ${ms(prefill)} | ${row.prefillTokensPerSecond.toFixed(0)} | ${ms(row.stepMedianMs)} | ${ms(row.stepP90Ms)} | ${ms(row.stepMeanMs)} | ` +
        `${recomputes} | ${bytes} | ${recompute === null ? '-' : ms(recompute)} | ${recompute === null ? '-' : `${(recompute / row.stepMedianMs).toFixed(0)}x`} |`,
    );
  }
}

// Concurrent sessions: each round steps every session once, one by one (stepSync) and then
// all together (stepBatchSync), for every weight format in turn, so all see the same machine
// state; medians over rounds.
const rounds = Math.max(5, runs * 3);
for (const numerics of flags.numerics) {
  const models = flags.weights.map((weights) => {
    const lm = PerformerLM.random(config, { seed: 1, numerics });
    return { weights, lm: weights === 'float32' ? lm : lm.quantize(weights) };
  });
  console.log(`\nnumerics '${numerics}': concurrent sessions, one step each, ${rounds} interleaved rounds`);
  console.log('| weights | sessions | one by one: step of all | tokens/s | batched: step of all | tokens/s | batched / one by one | one by one vs float32 | batched vs float32 |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const count of flags.sessions) {
    const prompt = tokens(64);
    const runsOf = models.map(({ weights, lm }) => {
      const made = () => Array.from({ length: count }, () => {
        const s = lm.createStateSync();
        lm.stepSync(prompt, s);
        return s;
      });
      return { weights, lm, single: made(), batched: made(), singleMs: [], batchedMs: [] };
    });
    for (let r = 0; r < rounds; r++) {
      const next = Int32Array.from({ length: count }, token);
      for (const m of runsOf) {
        m.singleMs.push(time(() => m.single.forEach((s, i) => m.lm.stepSync(next.subarray(i, i + 1), s))));
        m.batchedMs.push(time(() => m.lm.stepBatchSync(m.batched, next)));
      }
    }
    const base = runsOf.find((m) => m.weights === 'float32');
    for (const m of runsOf) {
      const one = median(m.singleMs);
      const all = median(m.batchedMs);
      const row = { numerics, weights: m.weights, sessions: count, oneByOneMs: one, batchedMs: all, oneByOneTokensPerSecond: (count / one) * 1000, batchedTokensPerSecond: (count / all) * 1000 };
      report.sessions.push(row);
      const ms = (v) => (v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(2)} ms`);
      const vs = (ratio) => (base === undefined ? '-' : `${ratio.toFixed(2)}x`);
      console.log(
        `| ${m.weights} | ${count} | ${ms(one)} | ${row.oneByOneTokensPerSecond.toFixed(0)} | ${ms(all)} | ${row.batchedTokensPerSecond.toFixed(0)} | ${(one / all).toFixed(2)}x | ` +
          `${base ? vs(median(base.singleMs) / one) : '-'} | ${base ? vs(median(base.batchedMs) / all) : '-'} |`,
      );
    }
  }
}

if (flags.json) {
  fs.mkdirSync(path.dirname(path.resolve(flags.json)), { recursive: true });
  fs.writeFileSync(flags.json, JSON.stringify(report, null, 2));
  console.log(`\nwrote ${flags.json}`);
}
