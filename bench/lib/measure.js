'use strict';
// Turns a worker's raw timings into a measurement record: median time, GFLOP/s
// from the cost model, % of the measured FMA peak, memory against the size of
// q, k, v and the output.
const { favorCost, exactCost, ioBytes, gflops } = require('./cost');
const { summarize } = require('./stats');

const IMPL_NAMES = {
  favor: 'FAVOR+',
  exact: 'exact',
  'ort-matmul': 'onnxruntime MatMul-Softmax-MatMul',
  'ort-mha': 'onnxruntime MultiHeadAttention',
  'numpy-favor': 'numpy FAVOR+',
  'numpy-exact': 'numpy exact',
  'torch-favor': 'torch FAVOR+',
  'torch-sdpa': 'torch SDPA',
};

/** FAVOR+, ours or a baseline's ('numpy-favor', 'torch-favor'). */
function isFavor(impl) {
  return impl === 'favor' || impl.endsWith('-favor');
}

/** The cost (flops, exps) of one call of `impl` on `shape`. */
function costOf(impl, shape) {
  return isFavor(impl) ? favorCost(shape) : exactCost(shape);
}

/**
 * raw: a worker result ({ times, firstMs, extraBytes, ... }); config: { impl, mode,
 * L, batch, heads, headDim, valueDim, features, kernel, threads }; peakGflops:
 * the FMA peak for the same ISA and thread count (or null).
 */
function deriveRecord(raw, config, peakGflops) {
  const shape = {
    batch: config.batch,
    heads: config.heads,
    L: config.L,
    headDim: config.headDim,
    valueDim: config.valueDim ?? config.headDim,
    numFeatures: config.features,
    kernel: config.kernel,
    causal: config.mode === 'causal',
  };
  const stats = summarize(raw.times);
  const cost = costOf(config.impl, shape);
  const io = ioBytes(shape).total;
  const rate = gflops(cost.flops, stats.median);
  const record = {
    impl: config.impl,
    name: IMPL_NAMES[config.impl] ?? config.impl,
    mode: config.mode,
    L: config.L,
    batch: config.batch,
    heads: config.heads,
    headDim: config.headDim,
    valueDim: shape.valueDim,
    threads: config.threads ?? null,
    ms: stats.median,
    runs: stats.n,
    minMs: stats.min,
    maxMs: stats.max,
    spread: stats.spread,
    firstMs: raw.firstMs ?? null,
    flops: cost.flops,
    exps: cost.exps,
    gflops: rate,
    pctPeak: peakGflops ? (100 * rate) / peakGflops : null,
    coresUsed: raw.coresUsed ?? null,
    extraBytes: raw.extraBytes ?? null,
    steadyExtraBytes: raw.steadyExtraBytes ?? null,
    ioBytes: io,
    extraOverIo: raw.extraBytes === null || raw.extraBytes === undefined ? null : raw.extraBytes / io,
    outBytes: raw.outBytes ?? null,
  };
  if (isFavor(config.impl)) {
    record.features = config.features;
    record.kernel = config.kernel ?? 'softmax';
  }
  if (raw.fresh) record.freshOutput = raw.fresh;
  if (raw.allocOutMs !== undefined) record.allocOutMs = raw.allocOutMs;
  if (raw.memoryMethod) record.memoryMethod = raw.memoryMethod;
  for (const key of ['onnxruntime', 'sessionMs', 'sessionExtraBytes', 'maxAbsDiffVsExact', 'note', 'numpy', 'blas', 'blasVersion', 'blasConfig', 'threadsEnv', 'sampleFeaturesMs', 'torch', 'torchThreads', 'parallelThreads']) {
    if (raw[key] !== undefined) record[key] = raw[key];
  }
  record.times = raw.times;
  return record;
}

module.exports = { deriveRecord, costOf, isFavor, IMPL_NAMES };
