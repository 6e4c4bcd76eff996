#!/usr/bin/env node
'use strict';
// `npm run experiments`: the paper's approximation study on this machine.
//   1. attention-output error vs m, i.i.d. vs orthogonal, positive vs hyperbolic vs trig (L = 4096, d = 16)
//   2. the same at d = 64, for the output and for the row-normalized attention matrix (smaller L)
//   3. Monte-Carlo check of Lemma 2 (closed-form MSE of the positive and trig estimators)
//   4. the error at a fixed m for L = 512 ... 16384
//   5. FAVOR+ vs FAVOR++ vs SDERF (experiments/adaptive.js; ~10 s)
//   6. backward compatibility: a softmax-trained LM fine-tuned under FAVOR+ (experiments/finetune.js; ~2 min)
// Flags: --quick (tiny sizes), --seeds N, --out DIR (default results/experiments), --only NAME[,NAME].
// Progress goes to stderr; tables, JSON and SVG charts to the output folder.
const fs = require('node:fs');
const path = require('node:path');
const studies = require('./lib/studies');
const adaptive = require('./adaptive');
const finetune = require('./finetune');
const report = require('./lib/report');
const charts = require('./lib/charts');

const NAMES = ['error-vs-m', 'd64', 'lemma2', 'length', 'adaptive', 'finetune'];

function usage(message) {
  process.stderr.write(`${message}\nusage: node experiments/run.js [--quick] [--seeds N] [--out DIR] [--only ${NAMES.join(',')}]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = { quick: false, seeds: null, out: path.join('results', 'experiments'), only: NAMES };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a}: missing value`);
      return argv[++i];
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--seeds') {
      o.seeds = Number(value());
      if (!Number.isInteger(o.seeds) || o.seeds < 2) usage('--seeds: expected an integer >= 2');
    } else if (a === '--out') o.out = value();
    else if (a === '--only') {
      o.only = value().split(',');
      for (const n of o.only) if (!NAMES.includes(n)) usage(`--only: unknown experiment '${n}'`);
    } else if (a === '--help' || a === '-h') usage('');
    else usage(`unknown argument '${a}'`);
  }
  return o;
}

/** Sizes of the default run (under 5 minutes on a 2-core machine) and of --quick. */
function config(quick, seeds) {
  if (quick) {
    return {
      seeds: seeds ?? 2,
      temps: [1, 1.5],
      errorVsM: { L: 128, d: 16, ms: [8, 16, 32] },
      d64: { L: 64, matrixL: 32, d: 64, ms: [16, 64] },
      lemma2: { d: 16, ms: [16], count: 200 },
      length: { Ls: [64, 128], d: 16, ms: [16] },
      adaptive: { seeds: seeds ?? 2, L: 64, quick: true },
      finetune: { model: { dim: 32, depth: 1, heads: 2, dim_head: 16, nb_features: 32 }, L: 32, batch: 4, pretrainSteps: 6, fineTuneSteps: 4, evalEvery: 2, heldOutWindows: 4, lr: 3e-3, corpusBytes: 200000, seed: 1 },
    };
  }
  return {
    seeds: seeds ?? 30,
    temps: [1, 1.5],
    errorVsM: { L: 4096, d: 16, ms: [16, 32, 64, 128, 256, 512] },
    d64: { L: 1024, matrixL: 512, d: 64, ms: [16, 32, 64, 128, 256, 512] },
    lemma2: { d: 16, ms: [16, 64], count: 20000 },
    length: { Ls: [512, 1024, 2048, 4096, 8192, 16384], d: 16, ms: [64, 256] },
    adaptive: { seeds: seeds ?? 10, L: 512, quick: false },
    finetune: { model: { dim: 128, depth: 2, heads: 4, dim_head: 32, nb_features: 128 }, L: 128, batch: 16, pretrainSteps: 600, fineTuneSteps: 300, evalEvery: 25, heldOutWindows: 64, lr: 3e-3, corpusBytes: 4000000, seed: 1 },
  };
}

function progress(name) {
  const t0 = Date.now();
  return (msg) => process.stderr.write(`[${name} ${((Date.now() - t0) / 1000).toFixed(1)} s] ${msg}\n`);
}

/** Ratio of two variants' mean errors at one (T, m). */
function ratio(study, T, m, a, b) {
  const ca = study.cells.find((c) => c.T === T && c.m === m && c.variant === a);
  const cb = study.cells.find((c) => c.T === T && c.m === m && c.variant === b);
  return ca && cb ? ca.mean / cb.mean : NaN;
}

/** Short findings computed from the numbers (no claims the run did not measure). */
function findings(results) {
  const lines = [];
  const f = report.fmt;
  for (const [key, label] of [
    ['errorVsM', 'output, d = 16'],
    ['d64Output', 'output, d = 64'],
    ['d64Matrix', 'matrix, d = 64'],
  ]) {
    const s = results[key];
    if (!s) continue;
    for (const T of s.temps) {
      const m0 = s.ms.includes(s.d) ? s.d : s.ms[0];
      const mMax = s.ms[s.ms.length - 1];
      const orth = ratio(s, T, m0, 'positive, orthogonal', 'positive, i.i.d.');
      const trigSmall = ratio(s, T, s.ms[0], 'trig, orthogonal', 'positive, orthogonal');
      const trigLarge = ratio(s, T, mMax, 'trig, orthogonal', 'positive, orthogonal');
      const hyp = ratio(s, T, mMax, 'hyperbolic, orthogonal', 'positive, orthogonal');
      const first = s.cells.find((c) => c.T === T && c.m === s.ms[0] && c.variant === 'positive, orthogonal');
      const last = s.cells.find((c) => c.T === T && c.m === mMax && c.variant === 'positive, orthogonal');
      lines.push(
        `- ${label}, T = ${T}: orthogonal/i.i.d. error ratio ${f(orth)} at m = ${m0}; trig/positive ${f(trigSmall)} at m = ${s.ms[0]} and ` +
          `${f(trigLarge)} at m = ${mMax}; hyperbolic/positive ${f(hyp)} at m = ${mMax}; positive orthogonal error ${f(first.mean)} → ${f(last.mean)} ` +
          `from m = ${s.ms[0]} to ${mMax} (×${f(last.mean / first.mean)} for ×${mMax / s.ms[0]} features).`,
      );
    }
  }
  if (results.lemma2) {
    const rows = results.lemma2.rows;
    const inside = rows.filter((r) => Math.abs(r.z) <= 1.96).length;
    const inside99 = rows.filter((r) => Math.abs(r.z) <= 2.576).length;
    lines.push(
      `- Lemma 2: the closed form is inside the 95 % Monte-Carlo interval in ${inside} of ${rows.length} cases and inside the 99 % one in ` +
        `${inside99}; largest |z| = ${Math.max(...rows.map((r) => Math.abs(r.z))).toFixed(2)}.`,
    );
  }
  if (results.length) {
    const s = results.length;
    for (const T of s.temps) {
      for (const v of s.variants) {
        for (const m of s.ms) {
          const means = s.Ls.map((L) => s.cells.find((c) => c.T === T && c.variant === v && c.m === m && c.L === L).mean);
          lines.push(
            `- length, T = ${T}, ${v}, m = ${m}: error from ${f(Math.min(...means))} to ${f(Math.max(...means))} over L = ${s.Ls[0]} … ${s.Ls[s.Ls.length - 1]}.`,
          );
        }
      }
    }
  }
  return lines.join('\n');
}

function markdown(results, meta) {
  const parts = [
    '# Approximation study',
    '',
    `Generated by \`npm run experiments${meta.args.length ? ' -- ' + meta.args.join(' ') : ''}\` on ${meta.date} ` +
      `(${meta.seeds} seeds, ${meta.seconds.toFixed(0)} s, backend ${meta.backend}).`,
    '',
    'Inputs: q and k entries i.i.d. N(0, T²/√d), v entries N(0, 1); each seed draws new q, k, v and new features. ' +
      'T is an input scale: the normalized rows x̂ = d^(-1/4)·q have E‖x̂‖² = T², and the logits q·k/√d have standard deviation T²/√d ' +
      '(larger T: larger norms, sharper softmax, smaller attention values). Error: relative Frobenius error against exact softmax ' +
      'attention, mean ± sd over seeds. m is the number of random projections (hyperbolic and trig features have 2m features).',
    '',
    '## Findings',
    '',
    findings(results),
  ];
  if (results.errorVsM) {
    const s = results.errorVsM;
    parts.push('', `## 1. Attention-output error vs m (L = ${s.L}, d = ${s.d})`, '', report.errorTables(s));
  }
  if (results.d64Output) {
    const s = results.d64Output;
    parts.push('', `## 2a. Attention-output error vs m (L = ${s.L}, d = ${s.d})`, '', report.errorTables(s));
  }
  if (results.d64Matrix) {
    const s = results.d64Matrix;
    parts.push(
      '',
      `## 2b. Attention-matrix error vs m (L = ${s.L}, d = ${s.d}; row-normalized D⁻¹·φ(Q)φ(K)ᵀ against softmax(QKᵀ/√d))`,
      '',
      report.errorTables(s),
    );
  }
  if (results.lemma2) {
    const s = results.lemma2;
    parts.push(
      '',
      `## 3. Lemma 2: closed-form MSE of the estimators of exp(x̂·ŷ) (d = ${s.d}, ${s.count} Monte-Carlo draws of i.i.d. features each)`,
      '',
      'x̂, ŷ are normalized rows (the library scales raw inputs by d^(-1/4) first; the check feeds x̂·d^(1/4)). ' +
        'MSE₊ = (1/m)·e^{‖x̂+ŷ‖²}·SM²·(1 − e^{−‖x̂+ŷ‖²}), MSE_trig = (1/2m)·e^{‖x̂+ŷ‖²}·SM^{−2}·(1 − e^{−‖x̂−ŷ‖²})², SM = e^{x̂·ŷ}. ' +
        'z = (Monte-Carlo − closed form) / standard error. The last column is the Monte-Carlo MSE of orthogonal features (no closed form here).',
      '',
      report.lemmaTable(s),
    );
  }
  if (results.length) {
    const s = results.length;
    parts.push('', `## 4. Error against sequence length (d = ${s.d})`, '', report.lengthTables(s));
  }
  if (results.adaptive) {
    parts.push('', '## 5. FAVOR+, FAVOR++ (softmax-opt) and SDERF (softmax-dense)', '', adaptive.markdown(results.adaptive.rows, results.adaptive.options));
  }
  if (results.finetune) {
    parts.push('', '## 6. Backward compatibility: softmax-trained weights fine-tuned under FAVOR+', '', finetune.markdown(results.finetune));
  }
  if (meta.charts.length) parts.push('', '## Charts', '', ...meta.charts.map((c) => `![${c}](${c})`));
  return parts.join('\n') + '\n';
}

function errorVsMChart(s, title) {
  const points = s.cells.map((c) => {
    const [kernel, sampling] = c.variant.split(', ');
    return charts.bandPoint(c, c.m, kernel, sampling, `T = ${c.T}`);
  });
  return charts.errorChartSpec(points, {
    title,
    subtitle: `mean ± sd over ${s.seeds} seeds; q, k ~ N(0, T²/√d); solid: orthogonal, dashed: i.i.d. features`,
    xTitle: 'random projections m',
    yTitle: 'relative Frobenius error',
  });
}

async function main() {
  const args = process.argv.slice(2);
  const o = parseArgs(args);
  const cfg = config(o.quick, o.seeds);
  const t0 = Date.now();
  const results = {};
  const only = new Set(o.only);
  if (only.has('error-vs-m')) {
    results.errorVsM = studies.errorVersusM({ ...cfg.errorVsM, temps: cfg.temps, seeds: cfg.seeds, progress: progress('error-vs-m') });
  }
  if (only.has('d64')) {
    const { L, matrixL, d, ms } = cfg.d64;
    results.d64Output = studies.errorVersusM({ L, d, ms, temps: cfg.temps, seeds: cfg.seeds, seedBase: 1, progress: progress('d64 output') });
    results.d64Matrix = studies.errorVersusM({
      L: matrixL,
      d,
      ms,
      temps: cfg.temps,
      seeds: cfg.seeds,
      target: 'matrix',
      seedBase: 2,
      progress: progress('d64 matrix'),
    });
  }
  if (only.has('lemma2')) results.lemma2 = studies.lemma2Check({ ...cfg.lemma2, progress: progress('lemma2') });
  if (only.has('length')) {
    results.length = studies.errorVersusLength({ ...cfg.length, temps: cfg.temps, seeds: cfg.seeds, seedBase: 3, progress: progress('length') });
  }
  if (only.has('adaptive')) results.adaptive = { options: cfg.adaptive, rows: adaptive.study(cfg.adaptive) };
  if (only.has('finetune')) results.finetune = finetune.study({ ...cfg.finetune, progress: progress('finetune') });

  fs.mkdirSync(o.out, { recursive: true });
  const chartFiles = [];
  const specs = [];
  if (results.errorVsM) specs.push(['error-vs-m.svg', errorVsMChart(results.errorVsM, `Attention-output error vs m (L = ${results.errorVsM.L}, d = ${results.errorVsM.d})`)]);
  if (results.d64Output) specs.push(['d64-output.svg', errorVsMChart(results.d64Output, `Attention-output error vs m (L = ${results.d64Output.L}, d = 64)`)]);
  if (results.d64Matrix) specs.push(['d64-matrix.svg', errorVsMChart(results.d64Matrix, `Attention-matrix error vs m (L = ${results.d64Matrix.L}, d = 64)`)]);
  if (results.length) {
    const s = results.length;
    const points = s.cells.map((c) => charts.bandPoint(c, c.L, `m = ${c.m}`, c.variant, `T = ${c.T}`));
    specs.push([
      'error-vs-length.svg',
      charts.errorChartSpec(points, {
        title: `Attention-output error vs sequence length (d = ${s.d})`,
        subtitle: `mean ± sd over ${s.seeds} seeds; solid: orthogonal, dashed: i.i.d. features`,
        xTitle: 'sequence length L',
        yTitle: 'relative Frobenius error',
      }),
    ]);
  }
  if (results.finetune) specs.push(['finetune.svg', finetune.chartSpec(results.finetune)]);
  for (const [file, spec] of specs) {
    const r = charts.writeChart(spec, path.join(o.out, file));
    if (r.skipped) process.stderr.write(`chart ${file} skipped: ${r.skipped}\n`);
    else chartFiles.push(file);
    for (const n of r.notes ?? []) process.stderr.write(`chart ${file}: ${n}\n`);
  }
  const { backendInfo } = require('..');
  const meta = {
    args,
    date: new Date().toISOString(),
    seeds: cfg.seeds,
    seconds: (Date.now() - t0) / 1000,
    backend: backendInfo().isa,
    charts: chartFiles,
  };
  fs.writeFileSync(path.join(o.out, 'experiments.json'), JSON.stringify({ meta, config: cfg, results }, null, 1) + '\n');
  fs.writeFileSync(path.join(o.out, 'experiments.md'), markdown(results, meta));
  process.stderr.write(`wrote ${path.join(o.out, 'experiments.md')}, experiments.json and ${chartFiles.length} charts in ${meta.seconds.toFixed(1)} s\n`);
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
