'use strict';
// What the suites share: default lengths, the run configuration, one attention
// measurement in a worker, and the budget check that skips slow exact runs.
const { exactCost } = require('../cost');
const { deriveRecord, IMPL_NAMES } = require('../measure');
const fmt = require('../format');
const { extrapolate } = require('../stats');
const { runWorker } = require('../runner');

const DEFAULT_SEQ = {
  sweep: [256, 512, 1024, 2048, 4096, 8192, 16384],
  crossover: [128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096],
  onnx: [1024, 2048, 4096, 8192],
  numpy: [4096, 16384],
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

/** Runs one attention measurement in a worker; returns a record or a failure. */
async function measureAttention(ctx, config, extra = {}) {
  const o = ctx.opts;
  const spec = {
    kind: 'attention',
    impl: config.impl,
    batch: config.batch,
    heads: config.heads,
    L: config.L,
    headDim: config.headDim,
    valueDim: config.valueDim,
    features: config.features,
    kernel: config.kernel,
    causal: config.mode === 'causal',
    threads: config.threads,
    isa: o.isa,
    seed: o.seed,
    repeats: o.repeats,
    targetMs: extra.targetMs ?? o.targetMs,
    fresh: extra.fresh,
    quiet: o.quiet,
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

module.exports = { DEFAULT_SEQ, seqFor, baseConfig, label, measureAttention, exactEstimateMs, skippedExact, groupBy };
