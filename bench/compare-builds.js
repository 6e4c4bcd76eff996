#!/usr/bin/env node
'use strict';
// Two or more builds of the addon timed call by call in one process: each build is loaded
// from its own copy of the package (the loader reads PERFORMER_ATTENTION_BINARY once), and
// every round runs each build once per configuration, in a rotating order. A shared or
// throttled machine then slows every build alike, so the median of the per-round ratios
// tells builds apart where separate benchmark runs differ by more than the change
// (the ratio is per round, then the median). Each build's output is compared with the first's.
//   npm run bench:compare -- --builds current,/tmp/before.node [--seq 1024,4096]
//        [--modes favor,favor-causal,exact,exact-causal] [--threads 1] [--rounds 15]
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { parseFlagsOrExit, parseList, parseSeqList, integer, oneOf } = require('./lib/args');
const { favorCost, exactCost, gflops } = require('./lib/cost');
const { makeInputs } = require('./lib/data');
const { median } = require('./lib/stats');

const MODES = ['favor', 'favor-causal', 'exact', 'exact-causal'];
const USAGE =
  'npm run bench:compare -- --builds current,OTHER.node[,...] [--seq 1024,4096] [--modes favor,favor-causal,exact,exact-causal] [--threads 1] [--rounds 15] [--features 256] [--heads 8] [--dim 64]';
const builds = (text, flag) => parseList(text, flag, 'builds', (b) => b);
const o = parseFlagsOrExit('bench:compare', USAGE, process.argv.slice(2), {
  builds: { value: builds },
  seq: { value: (t, f) => parseSeqList(t, f) },
  modes: { value: (t, f) => parseList(t, f, 'modes', oneOf(MODES)) },
  threads: { value: integer(1, 1024) },
  rounds: { value: integer(1, 1e6) },
  features: { value: integer(1, 1 << 16) },
  heads: { value: integer(1, 1024) },
  dim: { value: integer(1, 4096) },
}, { builds: null, seq: [1024, 4096], modes: MODES, threads: 1, rounds: 15, features: 256, heads: 8, dim: 64 });
if (o.builds === null || o.builds.length < 1) {
  process.stderr.write(`bench:compare: --builds is required (current = this checkout's addon)\nUsage: ${USAGE}\n`);
  process.exit(2);
}

const root = path.resolve(__dirname, '..');
if (!fs.existsSync(path.join(root, 'dist', 'index.js'))) {
  process.stderr.write('bench:compare: dist/index.js is missing: run `npm run build` first\n');
  process.exit(2);
}
// One copy of the package's JavaScript per build, each loading its own addon.
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-compare-'));
process.on('exit', () => fs.rmSync(scratch, { recursive: true, force: true }));
const libs = o.builds.map((build, i) => {
  const binary = build === 'current' ? null : path.resolve(build);
  if (binary !== null && !fs.existsSync(binary)) {
    process.stderr.write(`bench:compare: build ${build} not found\n`);
    process.exit(2);
  }
  const dir = path.join(scratch, String(i));
  fs.mkdirSync(dir);
  fs.cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
  // What the loader looks at besides dist: `current` finds this checkout's addon there.
  for (const entry of ['node_modules', 'scripts', 'build', 'prebuilds']) {
    if (fs.existsSync(path.join(root, entry))) fs.symlinkSync(path.join(root, entry), path.join(dir, entry), 'dir');
  }
  if (binary === null) delete process.env.PERFORMER_ATTENTION_BINARY;
  else process.env.PERFORMER_ATTENTION_BINARY = binary;
  const lib = require(dir);
  lib.setBackend({ threads: o.threads });
  return { name: build === 'current' ? 'current' : path.basename(build), lib };
});

const peak = Math.max(...[0, 1, 2].map(() => libs[0].lib.measureFmaPeak({ threads: o.threads, milliseconds: 300 }).gflops));
const isa = libs[0].lib.backendInfo().isa;
console.log(`bench:compare: ${libs.length} builds, ${isa}, ${o.threads} thread(s), FMA peak ${peak.toFixed(1)} GFLOP/s; batch 1, heads ${o.heads}, d = Dv = ${o.dim}, m = ${o.features}; ${o.rounds} rounds`);

for (const L of o.seq) {
  const { q, k, v, out } = makeInputs({ batch: 1, heads: o.heads, L, headDim: o.dim });
  const outs = libs.map((_, b) => (b === 0 ? out : { data: new Float32Array(out.data.length), shape: out.shape }));
  for (const mode of o.modes) {
    const causal = mode.endsWith('causal');
    const exact = mode.startsWith('exact');
    const shape = { batch: 1, heads: o.heads, L, headDim: o.dim, numFeatures: o.features, causal };
    const { flops } = exact ? exactCost(shape) : favorCost(shape);
    const calls = libs.map(({ lib }, b) => {
      const featureMap = exact ? null : new lib.FeatureMap({ headDim: o.dim, numFeatures: o.features, seed: 1 });
      const opts = { causal, out: outs[b] };
      return exact ? () => lib.softmaxAttentionSync(q, k, v, opts) : () => lib.favorAttentionSync(q, k, v, { featureMap, ...opts });
    });
    calls.forEach((call) => call()); // warm-up: scratch, pools, page faults
    // A faster build must still compute the same thing: its largest difference from the first.
    const diffs = outs.map(({ data }) => data.reduce((worst, x, i) => Math.max(worst, Math.abs(x - out.data[i])), 0));
    const times = calls.map(() => []);
    for (let r = 0; r < o.rounds; r++) {
      for (let j = 0; j < calls.length; j++) {
        const b = (j + r) % calls.length; // rotate who goes first
        const start = process.hrtime.bigint();
        calls[b]();
        times[b].push(Number(process.hrtime.bigint() - start) / 1e6);
      }
    }
    console.log(`\n${mode}, L = ${L}`);
    console.log('build                          median ms   min ms  GFLOP/s  % peak  ratio to first  max |out - first|');
    libs.forEach(({ name }, b) => {
      const ms = median(times[b]);
      const ratio = median(times[b].map((t, r) => t / times[0][r]));
      console.log(
        `${name.padEnd(30)} ${ms.toFixed(2).padStart(9)} ${Math.min(...times[b]).toFixed(2).padStart(8)} ${gflops(flops, ms).toFixed(1).padStart(8)} ${((100 * gflops(flops, ms)) / peak).toFixed(0).padStart(6)}%  ${ratio.toFixed(3).padStart(14)}  ${diffs[b].toExponential(1)}`,
      );
    });
  }
}
