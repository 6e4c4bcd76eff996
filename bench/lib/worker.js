#!/usr/bin/env node
'use strict';
// One measurement in a fresh process (so that its peak memory is its own):
//   node bench/lib/worker.js '<json spec>'
// Prints one line "@@RESULT <json>" on stdout; progress goes to stderr.
// Spec kinds: attention (impl favor | exact | ort-matmul | ort-mha), overhead,
// concurrency, sampling.
const path = require('node:path');
const { performance, monitorEventLoopDelay } = require('node:perf_hooks');

const { makeInputs, toBSD, fromBSD } = require('./data');
const { measurePeak } = require('./memory');
const { chooseRepeats, summarize, median } = require('./stats');
const { loadOnnxRuntime } = require('./optional');

const PACKAGE_ROOT = path.join(__dirname, '..', '..');

function lib() {
  return require(PACKAGE_ROOT);
}

function now() {
  return performance.now();
}

function progress(spec, text) {
  if (!spec.quiet) process.stderr.write(`      ${text}\n`);
}

function configureBackend(spec) {
  const opts = {};
  if (spec.threads) opts.threads = spec.threads;
  if (spec.isa) opts.isa = spec.isa;
  return Object.keys(opts).length ? lib().setBackend(opts) : lib().backendInfo();
}

function cpuMs() {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

/**
 * The measuring loop shared by every implementation. call(useOut) runs one call
 * (sync or async). The first call is the warm-up and is measured for memory.
 */
async function measureCalls(spec, call, { outBytes, freshSupported = true, label }) {
  // First call: warm-up, and the peak extra memory of a first call of this size.
  // (Only the call is timed: reading and resetting the peak is not.)
  const timed = async (useOut) => {
    const t = now();
    await call(useOut);
    return now() - t;
  };
  const first = await measurePeak(() => timed(true));
  const firstMs = first.result;
  if (firstMs > 2000) progress(spec, `${label}: warm-up ${(firstMs / 1000).toFixed(2)} s`);
  // Short calls: a little more warm-up (clock ramp, caches, branch predictors).
  let warm = firstMs;
  for (let i = 0; i < 20 && warm < 200 && firstMs < 50; i++) {
    const t = now();
    await call(true);
    warm += now() - t;
  }
  const runs = spec.repeats ?? chooseRepeats(firstMs, { targetMs: spec.targetMs ?? 1000, min: 3, max: spec.maxRuns ?? 50 });
  const times = [];
  let steadyExtra = null;
  const wall0 = now();
  const cpu0 = cpuMs();
  for (let r = 0; r < runs; r++) {
    let ms;
    if (r === 0) {
      // The second call of this size: what is left to allocate once workspaces exist.
      const m = await measurePeak(() => timed(true));
      steadyExtra = m.extraBytes;
      ms = m.result;
    } else {
      ms = await timed(true);
    }
    times.push(ms);
    if (ms > 2000 || (firstMs > 2000 && runs > 1)) progress(spec, `${label}: run ${r + 1}/${runs} ${(ms / 1000).toFixed(2)} s`);
  }
  const wall = now() - wall0;
  const cpu = cpuMs() - cpu0;
  const result = {
    firstMs,
    times,
    stats: summarize(times),
    coresUsed: wall > 0 ? cpu / wall : null,
    extraBytes: first.extraBytes,
    steadyExtraBytes: steadyExtra,
    memoryMethod: first.method,
    rssBeforeBytes: first.rssBefore,
    outBytes,
  };
  // A fresh output (no `out`): its time, when that costs little to measure.
  if (freshSupported) {
    const med = result.stats.median;
    const freshRuns = Math.min(runs, 5);
    if (spec.fresh !== false && med * freshRuns <= (spec.freshBudgetMs ?? 3000)) {
      const fresh = [];
      let freshExtra = null;
      for (let r = 0; r < freshRuns; r++) {
        if (r === 0) {
          const m = await measurePeak(() => timed(false));
          freshExtra = m.extraBytes;
          fresh.push(m.result);
        } else {
          fresh.push(await timed(false));
        }
      }
      result.fresh = { runs: freshRuns, medianMs: median(fresh), extraBytes: freshExtra };
    }
    // Allocating and first touching a fresh output of this size, by itself.
    const n = outBytes / 4;
    const allocTimes = [];
    const keep = [];
    for (let r = 0; r < 3; r++) {
      const t = now();
      const a = new Float32Array(n);
      a.fill(0);
      allocTimes.push(now() - t);
      keep.push(a);
    }
    result.allocOutMs = median(allocTimes);
  }
  return result;
}

const ADAPTIVE_KERNELS = new Set(['softmax-opt', 'softmax-dense']);

/**
 * The FeatureMap of a FAVOR run. The adaptive kernels estimate their parameters per
 * call in bidirectional runs (that cost is part of what is measured); causal runs
 * need them fixed, so they are calibrated once on the run's own queries and keys
 * (one set shared by every head, as from a prompt) before timing.
 */
function benchFeatureMap(p, { headDim, features, kernel, seed, causal, q, k }) {
  const map = new p.FeatureMap({ headDim, numFeatures: features, kernel: kernel ?? 'softmax', seed: seed ?? 1 });
  if (causal && ADAPTIVE_KERNELS.has(map.kernel)) {
    const rows = (t) => ({ data: t.data, shape: [t.data.length / headDim, headDim] });
    map.calibrate(rows(q), rows(k));
  }
  return map;
}

async function runAttention(spec) {
  const { batch, heads, L, headDim, causal } = spec;
  const valueDim = spec.valueDim ?? headDim;
  const inputs = makeInputs({ batch, heads, L, headDim, valueDim, seed: spec.seed ?? 1 });
  const outBytes = inputs.out.data.byteLength;
  const label = spec.label ?? `${spec.impl} L=${L}`;

  if (spec.impl === 'favor' || spec.impl === 'exact') {
    const p = lib();
    const info = configureBackend(spec);
    const featureMap =
      spec.impl === 'favor'
        ? benchFeatureMap(p, { headDim, features: spec.features, kernel: spec.kernel, seed: spec.seed, causal, q: inputs.q, k: inputs.k })
        : null;
    const { q, k, v, out } = inputs;
    const fn = spec.impl === 'favor' ? p.favorAttentionSync : p.softmaxAttentionSync;
    const options = (useOut) => {
      const o = { causal };
      if (featureMap) o.featureMap = featureMap;
      if (useOut) o.out = out;
      return o;
    };
    // Start the pool and one-time state on a tiny input first.
    const tiny = makeInputs({ batch: 1, heads: 1, L: 16, headDim, valueDim, seed: 2 });
    fn(tiny.q, tiny.k, tiny.v, options(false));
    const r = await measureCalls(spec, (useOut) => fn(q, k, v, options(useOut)), { outBytes, label });
    return { ...r, backend: info };
  }

  if (spec.impl === 'ort-matmul' || spec.impl === 'ort-mha') {
    const loaded = loadOnnxRuntime();
    if (loaded.error) return { skipped: loaded.error };
    const { ort, version } = loaded;
    const onnx = require('./onnx');
    const mha = spec.impl === 'ort-mha';
    const modelArgs = { batch, heads, L, headDim, valueDim, causal };
    const modelBytes = mha ? onnx.multiHeadAttentionModel(modelArgs) : onnx.matmulSoftmaxModel(modelArgs);
    const { q, k, v } = inputs;
    const qData = mha ? toBSD(q.data, q.shape) : q.data;
    const kData = mha ? toBSD(k.data, k.shape) : k.data;
    const vData = mha ? toBSD(v.data, v.shape) : v.data;
    const qkDims = mha ? [batch, L, heads * headDim] : q.shape;
    const vDims = mha ? [batch, L, heads * valueDim] : v.shape;
    const feeds = {
      query: new ort.Tensor('float32', qData, qkDims),
      key: new ort.Tensor('float32', kData, qkDims),
      value: new ort.Tensor('float32', vData, vDims),
    };
    const threads = spec.threads ?? require('node:os').availableParallelism();
    const t0 = now();
    const created = await measurePeak(() =>
      ort.InferenceSession.create(modelBytes, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: 'all',
      }),
    );
    const session = created.result;
    const sessionMs = now() - t0;
    let lastOutput = null;
    const r = await measureCalls(
      spec,
      async () => {
        const res = await session.run(feeds);
        lastOutput = res.output;
      },
      { outBytes, freshSupported: false, label },
    );
    // Agreement with this library's exact attention (at moderate sizes).
    let maxAbsDiff = null;
    let checkError;
    if (L <= (spec.checkMaxL ?? 2048) && lastOutput) {
      try {
        const p = lib();
        configureBackend(spec);
        const ours = p.softmaxAttentionSync(q, k, v, { causal }).data;
        const theirs = mha ? fromBSD(lastOutput.data, [batch, heads, L, valueDim]) : lastOutput.data;
        maxAbsDiff = 0;
        for (let i = 0; i < ours.length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(ours[i] - theirs[i]));
      } catch (e) {
        checkError = String(e.message);
      }
    }
    return {
      ...r,
      onnxruntime: version,
      threads,
      sessionMs,
      sessionExtraBytes: created.extraBytes,
      modelBytes: modelBytes.length,
      maxAbsDiffVsExact: maxAbsDiff,
      ...(checkError ? { checkError } : {}),
      note: 'extra memory includes the output onnxruntime allocates',
    };
  }
  throw new Error(`unknown impl ${spec.impl}`);
}

/**
 * The timing plan of perCall and perCallAsync, for both: yields how many calls to
 * make (the first yield untimed warm-up), receives the milliseconds they took, and
 * returns microseconds per call: median over batches sized to ~targetBatchMs (the
 * batch size grows fourfold up to maxCalls until a batch takes a quarter of that).
 */
function* callPlan({ warmup, batches = 25, targetBatchMs = 20 }, maxCalls) {
  yield warmup;
  let n = 1;
  for (;;) {
    const el = yield n;
    if (el >= targetBatchMs / 4 || n >= maxCalls) {
      n = Math.max(1, Math.round((n * targetBatchMs) / Math.max(el, 1e-3)));
      break;
    }
    n *= 4;
  }
  const us = [];
  for (let b = 0; b < batches; b++) us.push(((yield n) * 1000) / n);
  return { ...summarize(us), callsPerBatch: n, unit: 'µs' };
}

/** Microseconds per call of a synchronous fn (see callPlan). */
function perCall(fn, { warmup = 300, ...rest } = {}) {
  const plan = callPlan({ warmup, ...rest }, 1 << 20);
  for (let step = plan.next(); ; ) {
    if (step.done) return step.value;
    const t = now();
    for (let i = 0; i < step.value; i++) fn();
    step = plan.next(now() - t);
  }
}

/** Microseconds per call of an async fn, each call awaited (see callPlan). */
async function perCallAsync(fn, { warmup = 200, ...rest } = {}) {
  const plan = callPlan({ warmup, ...rest }, 1 << 18);
  for (let step = plan.next(); ; ) {
    if (step.done) return step.value;
    const t = now();
    for (let i = 0; i < step.value; i++) await fn();
    step = plan.next(now() - t);
  }
}

async function runOverhead(spec) {
  const p = lib();
  const info = configureBackend(spec);
  const { headDim, features } = spec;
  const L = spec.L ?? 16;
  const { q, k, v, out } = makeInputs({ batch: 1, heads: 1, L, headDim, seed: spec.seed ?? 1 });
  const featureMap = benchFeatureMap(p, { headDim, features, kernel: spec.kernel, seed: 1, causal: false, q, k });
  const causalMap = benchFeatureMap(p, { headDim, features, kernel: spec.kernel, seed: 1, causal: true, q, k });
  const cases = {
    'favorAttentionSync, bidirectional, out given': () => p.favorAttentionSync(q, k, v, { featureMap, out }),
    'favorAttentionSync, bidirectional, fresh output': () => p.favorAttentionSync(q, k, v, { featureMap }),
    'favorAttentionSync, causal, out given': () => p.favorAttentionSync(q, k, v, { featureMap: causalMap, causal: true, out }),
    'softmaxAttentionSync, bidirectional, out given': () => p.softmaxAttentionSync(q, k, v, { out }),
    'softmaxAttentionSync, causal, out given': () => p.softmaxAttentionSync(q, k, v, { causal: true, out }),
  };
  // The same call with d = m = 16: almost no arithmetic, so what remains is the
  // fixed cost of a call (validation, dispatch, scans, setup).
  const small = makeInputs({ batch: 1, heads: 1, L, headDim: 16, seed: spec.seed ?? 1 });
  const smallMap = new p.FeatureMap({ headDim: 16, numFeatures: 16, seed: 1 });
  cases['favorAttentionSync, d = m = 16 (fixed cost)'] = () =>
    p.favorAttentionSync(small.q, small.k, small.v, { featureMap: smallMap, out: small.out });
  const results = {};
  for (const [name, fn] of Object.entries(cases)) results[name] = perCall(fn);
  const outs = Array.from({ length: 1 }, () => ({ data: new Float32Array(out.data.length), shape: out.shape }));
  results['await favorAttention, bidirectional, out given'] = await perCallAsync(() =>
    p.favorAttention(q, k, v, { featureMap, out: outs[0] }),
  );
  results['await softmaxAttention, bidirectional, out given'] = await perCallAsync(() =>
    p.softmaxAttention(q, k, v, { out: outs[0] }),
  );
  return { L, heads: 1, headDim, features, backend: info, cases: results };
}

async function runConcurrency(spec) {
  const p = lib();
  const info = configureBackend(spec);
  const { batch, heads, L, headDim, causal } = spec;
  const calls = spec.calls ?? 4;
  const rounds = spec.rounds ?? 5;
  const { q, k, v } = makeInputs({ batch, heads, L, headDim, seed: spec.seed ?? 1 });
  const featureMap = benchFeatureMap(p, { headDim, features: spec.features, kernel: spec.kernel, seed: 1, causal, q, k });
  const outs = Array.from({ length: calls }, () => ({ data: new Float32Array(q.data.length).fill(0), shape: q.shape }));
  // Time spent on the calling thread before the Promise is returned (validation, dispatch).
  const syncPart = [];
  const one = (i) => {
    const t = now();
    const promise = p.favorAttention(q, k, v, { featureMap, causal, out: outs[i] });
    syncPart.push(now() - t);
    return promise;
  };
  await one(0); // warm-up
  syncPart.length = 0;
  // The histogram's reading for an idle loop over about the same time (its
  // values are timer intervals: an idle loop reads about the resolution, 1 ms).
  const idle = monitorEventLoopDelay({ resolution: 1 });
  idle.enable();
  await new Promise((resolve) => setTimeout(resolve, 200));
  idle.disable();
  const measure = async (fn) => {
    const h = monitorEventLoopDelay({ resolution: 1 });
    h.enable();
    const t = now();
    await fn();
    const ms = now() - t;
    h.disable();
    return { ms, p99: h.percentile(99) / 1e6, max: h.max / 1e6, mean: h.mean / 1e6, samples: h.count };
  };
  const seq = [];
  const conc = [];
  const syncTimes = [];
  for (let r = 0; r < rounds; r++) {
    seq.push(
      await measure(async () => {
        for (let i = 0; i < calls; i++) await one(i);
      }),
    );
    conc.push(await measure(() => Promise.all(Array.from({ length: calls }, (_, i) => one(i)))));
    const t = now();
    for (let i = 0; i < calls; i++) p.favorAttentionSync(q, k, v, { featureMap, causal, out: outs[i] });
    syncTimes.push(now() - t);
    progress(spec, `round ${r + 1}/${rounds}: back to back ${seq[r].ms.toFixed(1)} ms, concurrent ${conc[r].ms.toFixed(1)} ms`);
  }
  const pick = (xs, key) => xs.map((x) => x[key]);
  const seqMs = median(pick(seq, 'ms'));
  const concMs = median(pick(conc, 'ms'));
  return {
    calls,
    rounds,
    backend: info,
    backToBackMs: summarize(pick(seq, 'ms')),
    concurrentMs: summarize(pick(conc, 'ms')),
    syncBackToBackMs: summarize(syncTimes),
    ratio: concMs / seqMs,
    callingThreadMsPerCall: summarize(syncPart),
    eventLoop: {
      resolutionMs: 1,
      idleP99Ms: idle.percentile(99) / 1e6,
      concurrentP99Ms: median(pick(conc, 'p99')),
      concurrentMaxMs: Math.max(...pick(conc, 'max')),
      backToBackP99Ms: median(pick(seq, 'p99')),
      backToBackMaxMs: Math.max(...pick(seq, 'max')),
    },
  };
}

function runSampling(spec) {
  const p = lib();
  const info = configureBackend(spec);
  const { headDim, features } = spec;
  const kernel = spec.kernel ?? 'softmax';
  const time = (fn, runs) => {
    for (let i = 0; i < 10; i++) fn(i);
    const t = [];
    for (let i = 0; i < runs; i++) {
      const t0 = now();
      fn(i + 10);
      t.push(now() - t0);
    }
    return summarize(t);
  };
  const map = new p.FeatureMap({ headDim, numFeatures: features, kernel, seed: 1 });
  const iid = new p.FeatureMap({ headDim, numFeatures: features, kernel, seed: 1, orthogonal: false });
  return {
    headDim,
    features,
    backend: info,
    redrawOrthogonalMs: time((i) => map.redraw(i + 1), 200),
    constructOrthogonalMs: time((i) => new p.FeatureMap({ headDim, numFeatures: features, kernel, seed: i + 1 }), 200),
    redrawIidMs: time((i) => iid.redraw(i + 1), 200),
  };
}

async function main() {
  const spec = JSON.parse(process.argv[2]);
  let result;
  if (spec.kind === 'attention') result = await runAttention(spec);
  else if (spec.kind === 'overhead') result = await runOverhead(spec);
  else if (spec.kind === 'concurrency') result = await runConcurrency(spec);
  else if (spec.kind === 'sampling') result = runSampling(spec);
  else throw new Error(`unknown kind ${spec.kind}`);
  process.stdout.write(`@@RESULT ${JSON.stringify({ ok: true, ...result })}\n`);
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stdout.write(`@@RESULT ${JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) })}\n`);
    process.exit(1);
  },
);

