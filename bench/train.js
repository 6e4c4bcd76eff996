#!/usr/bin/env node
'use strict';
// Training benchmark: one training step (forward, backward, AdamW) of a PerformerLM
// (dim 256, depth 4, 8 heads of 32, m = 110, GELU, rotary positions, random weights)
// at L = 1024 and 8192, FAVOR+ against exact softmax attention over the same weights,
// and the same model in torch (bench/torch_train.py, when a python with torch is found:
// $TORCH_PYTHON, else python3) with the same threads. Each configuration runs in its own
// process (its peak memory is that process's). Medians of --runs; ratios from one run.
// backward / forward = (lossAndGrad - forward) / forward: the optimizer step is not backward.
//   npm run bench:train -- [--lengths 1024,8192] [--runs 3] [--threads 2] [--no-torch] [--json FILE]
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const { parseFlagsOrExit, parseList, parseLength, integer } = require('./lib/args');

const USAGE = 'npm run bench:train -- [--lengths 1024,8192] [--runs 3] [--threads 2] [--no-torch] [--json FILE]';

const MODEL = { num_tokens: 256, dim: 256, depth: 4, heads: 8, dim_head: 32, causal: true };

function child(o) {
  const { AdamW, PerformerLM, setBackend } = require('..');
  setBackend({ threads: o.threads });
  const lm = PerformerLM.random({ ...MODEL, max_seq_len: o.L }, { seed: 1, numerics: 'exact' });
  const opt = new AdamW(lm, { lr: 1e-4 });
  let s = 7;
  const ids = () => Int32Array.from({ length: o.L }, () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 16) % 256);
  const tokens = { data: ids(), shape: [1, o.L] };
  const targets = { data: ids(), shape: [1, o.L] };
  const time = (fn) => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  };
  const lossAndGrad = () => lm.lossAndGradSync(tokens, targets, { attention: o.attention });
  const forward = () => lm.forwardSync(tokens, { attention: o.attention });
  lossAndGrad();
  opt.step();
  forward();
  const f = [];
  const g = [];
  const st = [];
  for (let i = 0; i < o.runs; i++) {
    f.push(time(forward));
    const tg = time(lossAndGrad);
    g.push(tg);
    st.push(tg + time(() => opt.step()));
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const result = { forwardMs: median(f), lossAndGradMs: median(g), stepMs: median(st), peakRssBytes: process.resourceUsage().maxRSS * 1024 };
  process.stdout.write(`@@RESULT ${JSON.stringify(result)}\n`);
}

function parent() {
  const flags = parseFlagsOrExit('bench:train', USAGE, process.argv.slice(2), {
    lengths: { value: (text, flag) => parseList(text, flag, 'lengths', parseLength) },
    runs: { value: integer(1, 1e6) },
    threads: { value: integer(1, 1024) },
    'no-torch': { set: { torch: false } },
    json: { value: (text) => text },
  }, { lengths: [1024, 8192], runs: 3, threads: 2, torch: true, json: null });
  const { runs, threads } = flags;
  const python = process.env.TORCH_PYTHON || 'python3';
  const hasTorch = flags.torch && spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
  const { backendInfo } = require('..');
  console.log(`backend ${backendInfo().isa}, ${threads} threads; PerformerLM dim 256, depth 4, 8 heads of 32, m = 110, FF 1024, batch 1; ` +
    `a step = forward + backward + AdamW${hasTorch ? `; torch from ${python}` : '; torch not found (set TORCH_PYTHON)'}`);
  console.log('| L | attention | library forward | library step | backward / forward | tokens/s | peak RSS | torch forward | torch step | torch tokens/s | library / torch speed |');
  console.log('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  const rows = [];
  for (const L of flags.lengths) {
    for (const attention of ['favor', 'softmax']) {
      const o = { L, attention, runs, threads };
      const r = spawnSync(process.execPath, [__filename, '--child', JSON.stringify(o)], { encoding: 'utf8', env: { ...process.env, PERFORMER_ATTENTION_THREADS: String(threads) } });
      const lib = parse(r.stdout, r.stderr);
      let torch = null;
      if (hasTorch) {
        const t = spawnSync(python, [path.join(__dirname, 'torch_train.py'), JSON.stringify({ L, dim: 256, depth: 4, heads: 8, dimHead: 32, features: 110, numTokens: 256, attention, threads, runs })], { encoding: 'utf8' });
        torch = parse(t.stdout, t.stderr);
      }
      const row = { L, attention, library: lib, torch, backwardOverForward: (lib.lossAndGradMs - lib.forwardMs) / lib.forwardMs };
      rows.push(row);
      const ms = (v) => (v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`);
      console.log(
        `| ${L} | ${attention === 'favor' ? 'FAVOR+' : 'exact'} | ${ms(lib.forwardMs)} | ${ms(lib.stepMs)} | ${row.backwardOverForward.toFixed(2)} | ${((L / lib.stepMs) * 1000).toFixed(0)} | ` +
          `${(lib.peakRssBytes / 2 ** 20).toFixed(0)} MB | ${torch ? ms(torch.forwardMs) : '-'} | ${torch ? ms(torch.stepMs) : '-'} | ` +
          `${torch ? ((L / torch.stepMs) * 1000).toFixed(0) : '-'} | ${torch ? `${(torch.stepMs / lib.stepMs).toFixed(2)}x` : '-'} |`,
      );
    }
  }
  if (flags.json) {
    fs.mkdirSync(path.dirname(path.resolve(flags.json)), { recursive: true });
    fs.writeFileSync(flags.json, JSON.stringify({ backend: backendInfo(), threads, runs, rows }, null, 2));
  }
}

function parse(stdout, stderr) {
  const line = (stdout || '').split('\n').find((l) => l.startsWith('@@RESULT '));
  if (!line) throw new Error(`benchmark child failed: ${stderr}`);
  return JSON.parse(line.slice('@@RESULT '.length));
}

if (process.argv[2] === '--child') child(JSON.parse(process.argv[3]));
else parent();
