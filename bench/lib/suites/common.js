'use strict';
// What the suites share: default lengths, the run configuration, one attention
// measurement in a worker, and the budget check that skips slow exact runs.
const { exactCost } = require('../cost');
const { deriveRecord, isFavor, IMPL_NAMES } = require('../measure');
const fmt = require('../format');
const { extrapolate } = require('../stats');
const { runWorker } = require('../runner');

const DEFAULT_SEQ = {
  sweep: [256, 512, 1024, 2048, 4096, 8192, 16384],
  crossover: [128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096],
  onnx: [1024, 2048, 4096, 8192],
  numpy: [4096, 16384],
  torch: [1024, 4096],
  million: [1 << 20],
  concurrency: [4096],
};

function seqFor(ctx, suite) {
  return ctx.opts.seq ?? DEFAULT_SEQ[suite];
}

function baseConfig(ctx, overrides = {}) {
  const o = ctx.opts;
  return {
    batch: o.batch,
    heads: o.heads,
    headDim: o.dim,
    valueDim: o.dim,
    features: o.features,
    kernel: o.kernel,
    ...overrides,
  };
}

function label(config) {
  const name = IMPL_NAMES[config.impl] ?? config.impl;
  return `${name} ${config.mode} L=${config.L}${config.heads !== undefined ? ` H=${config.heads}` : ''} threads=${config.threads}`;
}

/** What a measuring child (worker or python script) is told of the shape and the method. */
function childSpec(ctx, config) {
  const pick = (from, keys) => Object.fromEntries(keys.map((k) => [k, from[k]]));
  return {
    ...pick(config, ['batch', 'heads', 'L', 'headDim', 'valueDim', 'features', 'threads']),
    causal: config.mode === 'causal',
    ...pick(ctx.opts, ['seed', 'repeats', 'targetMs', 'quiet']),
  };
}

/** Runs one attention measurement in a worker; returns a record or a failure. */
async function measureAttention(ctx, config, extra = {}) {
  const o = ctx.opts;
  const spec = {
    ...childSpec(ctx, config),
    kind: 'attention',
    impl: config.impl,
    kernel: config.kernel,
    isa: o.isa,
    targetMs: extra.targetMs ?? o.targetMs,
    fresh: extra.fresh,
    label: label(config),
  };
  const started = Date.now();
  ctx.progress(`${label(config)} ...`);
  const raw = await runWorker(spec);
  if (raw.skipped) return { ...config, skipped: true, reason: raw.skipped };
  if (!raw.ok) {
    ctx.fail(`${label(config)}: ${raw.error}`);
    return { ...config, failed: true, error: raw.error };
  }
  const record = deriveRecord(raw, config, ctx.peakFor(config.threads));
  ctx.progress(
    `  ${fmt.duration(record.ms)} (median of ${record.runs}), ${fmt.sig(record.gflops)} GFLOP/s, extra ${fmt.bytes(record.extraBytes)}` +
      ` [${((Date.now() - started) / 1000).toFixed(1)} s]`,
  );
  return record;
}

/**
 * Runs one measurement by a python baseline: run is runNumpy or runTorch, impl the
 * script's name for it. Returns a record or a failure.
 */
async function measurePython(ctx, run, impl, config) {
  ctx.progress(`${label(config)} ...`);
  const raw = await run({ ...childSpec(ctx, config), impl }, config.threads);
  if (!raw.ok) {
    ctx.fail(`${label(config)}: ${raw.error}`);
    return { ...config, failed: true, error: raw.error };
  }
  const record = deriveRecord(raw, config, ctx.peakFor(config.threads));
  ctx.progress(`  ${fmt.duration(record.ms)} (median of ${record.runs}), extra ${fmt.bytes(record.extraBytes)}`);
  return record;
}

// Table cells for a record that may be missing, skipped or failed: its time, its peak
// memory (ours: a call without `out`, so the output counts as for the baselines) and
// a baseline's time over ours.
const cellMs = (r) => (!r ? '–' : r.skipped ? (r.estimatedMs ? `(~${fmt.ms(r.estimatedMs)})` : 'skipped') : r.failed ? 'failed' : fmt.ms(r.ms));
const cellMem = (r, ours) => (!r || r.skipped || r.failed ? '–' : fmt.bytes(ours ? (r.freshOutput?.extraBytes ?? r.extraBytes + r.outBytes) : r.extraBytes));
const cellRatio = (a, b) => (a && b && !a.skipped && !b.skipped && !a.failed && !b.failed ? fmt.ratio(a.ms / b.ms) : '–');

/** A comparison's result when its probe failed: the reason, also listed at the end. */
function skippedComparison(ctx, title, reason) {
  ctx.skip(`${title} comparison`, reason);
  return { title, text: `${title} comparison skipped: ${reason}`, data: { skipped: reason } };
}

/** Five cells comparing ours with a baseline: time and memory of each, baseline/ours. */
function pairCells(row, ours, theirs) {
  return [cellMs(row[ours]), cellMem(row[ours], true), cellMs(row[theirs]), cellMem(row[theirs], false), cellRatio(row[theirs], row[ours])];
}

/** The headers of pairCells: ours is 'FAVOR+' or 'exact', theirs the baseline's name. */
function pairColumns(ours, theirs, who) {
  return [{ title: `${ours} ms` }, { title: 'peak mem' }, { title: `${theirs} ms` }, { title: 'peak mem' }, { title: `${who}/ours` }];
}

/**
 * One row of a comparison with a python baseline: impls in turn (ours, and the
 * baseline's named prefix + its script's impl, measured by run), exact ones
 * skipped when the last time of the same impl extrapolates past the budget.
 * shape: { L, mode, threads }; last: the last times by impl, updated.
 */
async function comparisonRow(ctx, impls, prefix, run, shape, last) {
  const row = { ...shape };
  for (const impl of impls) {
    const config = { ...baseConfig(ctx), impl, ...shape };
    if (!isFavor(impl)) {
      const estimate = exactEstimateMs(ctx, config, last[impl]);
      if (estimate > ctx.opts.budget * 1000) {
        row[impl] = skippedExact(config, estimate, ctx.opts.budget);
        ctx.progress(`${IMPL_NAMES[impl]} L=${shape.L}: skipped, ${row[impl].reason}`);
        continue;
      }
    }
    row[impl] = impl.startsWith(prefix) ? await measurePython(ctx, run, impl.slice(prefix.length), config) : await measureAttention(ctx, config);
    if (!row[impl].failed && !row[impl].skipped) last[impl] = { L: shape.L, ms: row[impl].ms };
  }
  return row;
}

/**
 * Decides whether exact attention at L fits the budget: extrapolates the last
 * measured exact time quadratically, or (first point) estimates from the cost
 * model at 40% of the FMA peak.
 */
function exactEstimateMs(ctx, config, lastExact) {
  if (lastExact) return extrapolate(lastExact, config.L, 2);
  const { flops } = exactCost({ ...config, causal: config.mode === 'causal' });
  const peak = ctx.peakFor(config.threads) ?? 50;
  return flops / (0.4 * peak * 1e6);
}

function skippedExact(config, estimateMs, budgetS) {
  return {
    ...config,
    skipped: true,
    estimatedMs: estimateMs,
    reason: `extrapolated ${fmt.duration(estimateMs)} per run exceeds the --budget of ${budgetS} s`,
  };
}

function groupBy(xs, key) {
  const m = new Map();
  for (const x of xs) {
    const k = key(x);
    if (!m.has(k)) m.set(k, []);
    m.get(k).push(x);
  }
  return m;
}

module.exports = {
  DEFAULT_SEQ,
  seqFor,
  baseConfig,
  label,
  measureAttention,
  measurePython,
  comparisonRow,
  skippedComparison,
  pairCells,
  pairColumns,
  exactEstimateMs,
  skippedExact,
  groupBy,
};
