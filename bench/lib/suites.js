'use strict';
// The measurements performer-bench makes. Each suite takes the run context and
// returns { title, text, data, charts? }: text is printed, data goes into the
// JSON report, charts are rendered to SVG.
const os = require('node:os');

const { describeCrossover, findCrossover } = require('./crossover');
const { exactCost, favorCost } = require('./cost');
const { deriveRecord, IMPL_NAMES } = require('./measure');
const fmt = require('./format');
const { extrapolate, scalingExponent } = require('./stats');
const { runWorker, runNumpy, probeNumpy } = require('./runner');
const { loadOnnxRuntime } = require('./optional');

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

// ---------------------------------------------------------------- sweep

async function sweep(ctx) {
  const o = ctx.opts;
  const Ls = seqFor(ctx, 'sweep');
  const rows = [];
  for (const threads of ctx.threadList) {
    for (const mode of o.modes) {
      let lastExact = null;
      for (const L of Ls) {
        const favor = await measureAttention(ctx, { ...baseConfig(ctx), impl: 'favor', mode, L, threads });
        let exact = null;
        if (o.exact) {
          const config = { ...baseConfig(ctx), impl: 'exact', mode, L, threads };
          const estimate = exactEstimateMs(ctx, config, lastExact);
          if (estimate > o.budget * 1000) {
            exact = skippedExact(config, estimate, o.budget);
            ctx.progress(`exact ${mode} L=${L}: skipped, ${exact.reason}`);
          } else {
            exact = await measureAttention(ctx, config);
            if (!exact.failed) lastExact = { L, ms: exact.ms };
          }
        }
        rows.push({ threads, mode, L, favor, exact });
      }
    }
  }
  const summary = summarizeSweep(rows, ctx);
  return {
    title: 'sweep',
    text: sweepText(rows, ctx, summary),
    data: { rows, ...summary },
    charts: [{ name: 'sweep', title: 'FAVOR+ and exact attention: time against L', series: sweepSeries(rows, ctx) }],
  };
}

function speedup(row) {
  if (!row.exact || !row.favor || row.favor.failed || row.favor.skipped) return { value: null };
  if (row.exact.skipped && row.exact.estimatedMs) return { value: row.exact.estimatedMs / row.favor.ms, estimated: true };
  if (row.exact.failed || row.exact.skipped) return { value: null };
  return { value: row.exact.ms / row.favor.ms };
}

/** Crossover, linearity and memory figures from the sweep rows. */
function summarizeSweep(rows, ctx) {
  const out = { crossover: [], linearity: [] };
  const groups = groupBy(rows, (r) => `${r.threads}|${r.mode}`);
  for (const group of groups.values()) {
    const { threads, mode } = group[0];
    const points = group
      .filter((r) => r.exact && !r.exact.skipped && !r.exact.failed && !r.favor.failed)
      .map((r) => ({ L: r.L, favorMs: r.favor.ms, exactMs: r.exact.ms }));
    if (ctx.opts.exact) out.crossover.push({ threads, mode, ...findCrossover(points) });
    const favor = group.map((r) => r.favor).filter((f) => f && !f.failed && !f.skipped);
    if (favor.length >= 2) {
      const last = favor[favor.length - 1];
      const ref = favor.find((f) => f.L >= 4096 && f.L < last.L) ?? favor[0];
      out.linearity.push({
        threads,
        mode,
        fromL: ref.L,
        toL: last.L,
        timeRatio: last.ms / ref.ms,
        linearRatio: last.L / ref.L,
        exponent: scalingExponent({ L: ref.L, ms: ref.ms }, { L: last.L, ms: last.ms }),
        extraBytesAtLargest: last.extraBytes,
        ioBytesAtLargest: last.ioBytes,
        extraOverIoAtLargest: last.extraOverIo,
      });
    }
  }
  return out;
}

function sweepText(rows, ctx, summary) {
  const parts = [];
  const o = ctx.opts;
  const groups = groupBy(rows, (r) => `${r.threads}|${r.mode}`);
  for (const group of groups.values()) {
    const { threads, mode } = group[0];
    parts.push(
      `${mode}: batch ${o.batch}, heads ${o.heads}, d = Dv = ${o.dim}, m = ${o.features} (${o.kernel}), ` +
        `${ctx.backend.isa}, ${threads} thread${threads > 1 ? 's' : ''}; % of the measured peak ${fmt.sig(ctx.peakFor(threads))} GFLOP/s`,
    );
    const columns = [
      { title: 'L' },
      { title: 'FAVOR+ ms' },
      { title: 'GFLOP/s' },
      { title: '% peak' },
      { title: 'cores' },
      { title: 'extra mem' },
    ];
    if (o.exact) {
      columns.push({ title: 'exact ms' }, { title: 'GFLOP/s' }, { title: '% peak' }, { title: 'cores' }, { title: 'extra mem' }, { title: 'speed-up' });
    }
    const body = group.map((r) => {
      const f = r.favor;
      const row = [String(r.L), ...recordCells(f)];
      if (o.exact) {
        const e = r.exact;
        if (e.skipped && e.estimatedMs) row.push(`(~${fmt.ms(e.estimatedMs)})`, 'skipped', '', '', '');
        else row.push(...recordCells(e));
        const s = speedup(r);
        row.push(s.value === null ? '–' : `${s.estimated ? '~' : ''}${fmt.ratio(s.value)}`);
      }
      return row;
    });
    parts.push(fmt.table(columns, body));
    const c = summary.crossover.find((x) => x.threads === threads && x.mode === mode);
    if (c) parts.push(`crossover (FAVOR+ faster from): ${describeCrossover(c)}`);
    const lin = summary.linearity.find((x) => x.threads === threads && x.mode === mode);
    if (lin) {
      parts.push(
        `FAVOR+ scaling: time(${lin.toL}) / time(${lin.fromL}) = ${fmt.sig(lin.timeRatio)} (linear: ${fmt.sig(lin.linearRatio)}; exponent ${lin.exponent.toFixed(2)}); ` +
          `extra memory at L = ${lin.toL}: ${fmt.bytes(lin.extraBytesAtLargest)} = ${fmt.percent(100 * lin.extraOverIoAtLargest)} of q, k, v and output (${fmt.bytes(lin.ioBytesAtLargest)})`,
      );
    }
    const largest = group[group.length - 1].favor;
    if (largest && largest.outBytes) {
      const freshText = largest.freshOutput
        ? `; a call without \`out\` took ${fmt.duration(largest.freshOutput.medianMs)} against ${fmt.duration(largest.ms)} with it, peak extra ${fmt.bytes(largest.freshOutput.extraBytes)}`
        : '';
      parts.push(
        `fresh output at L = ${largest.L}: ${fmt.bytes(largest.outBytes)}, allocation and first touch ${fmt.duration(largest.allocOutMs)}${freshText}`,
      );
    }
    parts.push('');
  }
  parts.push(
    "ms: median after a warm-up; GFLOP/s: the cost model of docs/benchmark.md; cores: CPU time / wall time; extra mem: peak RSS during the first call minus RSS before it (inputs and a touched `out` already allocated).",
  );
  return parts.join('\n');
}

function recordCells(r) {
  if (!r) return ['', '', '', '', ''];
  if (r.failed) return ['failed', '', '', '', ''];
  if (r.skipped) return ['skipped', '', '', '', ''];
  return [fmt.ms(r.ms), fmt.sig(r.gflops), fmt.percent(r.pctPeak), r.coresUsed === null ? '–' : r.coresUsed.toFixed(2), fmt.bytes(r.extraBytes)];
}

function sweepSeries(rows, ctx) {
  const many = ctx.threadList.length > 1;
  const series = new Map();
  const add = (name, mode, point) => {
    if (!series.has(name)) series.set(name, { name, mode, points: [] });
    series.get(name).points.push(point);
  };
  for (const r of rows) {
    const suffix = many ? ` (${r.threads} thread${r.threads > 1 ? 's' : ''})` : '';
    if (r.favor && !r.favor.failed && !r.favor.skipped) add(`FAVOR+ ${r.mode}${suffix}`, r.mode, { L: r.L, ms: r.favor.ms });
    if (r.exact && !r.exact.failed) {
      if (!r.exact.skipped) add(`exact ${r.mode}${suffix}`, r.mode, { L: r.L, ms: r.exact.ms });
      else if (r.exact.estimatedMs) add(`exact ${r.mode}, extrapolated${suffix}`, r.mode, { L: r.L, ms: r.exact.estimatedMs, estimated: true });
    }
  }
  return [...series.values()];
}

// ---------------------------------------------------------------- crossover

async function crossover(ctx) {
  const o = ctx.opts;
  const list = seqFor(ctx, 'crossover');
  const threads = ctx.threadList[ctx.threadList.length - 1];
  const results = [];
  const rows = [];
  for (const mode of o.modes) {
    const points = [];
    let lastExact = null;
    const Ls = [...list];
    for (let i = 0; i < Ls.length; i++) {
      const L = Ls[i];
      const favor = await measureAttention(ctx, { ...baseConfig(ctx), impl: 'favor', mode, L, threads }, { fresh: false, targetMs: 500 });
      const config = { ...baseConfig(ctx), impl: 'exact', mode, L, threads };
      const estimate = exactEstimateMs(ctx, config, lastExact);
      let exact;
      if (estimate > o.budget * 1000) {
        exact = skippedExact(config, estimate, o.budget);
        ctx.progress(`exact ${mode} L=${L}: skipped, ${exact.reason}`);
      } else {
        exact = await measureAttention(ctx, config, { fresh: false, targetMs: 500 });
        if (!exact.failed) lastExact = { L, ms: exact.ms };
      }
      rows.push({ threads, mode, L, favor, exact });
      if (!favor.failed && !exact.failed && !exact.skipped) points.push({ L, favorMs: favor.ms, exactMs: exact.ms });
      if (exact.skipped) break;
      const c = findCrossover(points);
      // Extend the list (doubling) until FAVOR+ has been faster at two lengths in a row.
      if (i === Ls.length - 1 && !o.seq && (c.status === 'above' || points.slice(-2).some((p) => p.exactMs <= p.favorMs))) {
        Ls.push(L * 2);
      }
    }
    results.push({ mode, threads, ...findCrossover(points), points });
  }
  const parts = [];
  for (const mode of o.modes) {
    const r = results.find((x) => x.mode === mode);
    parts.push(`${mode}: FAVOR+ (m = ${o.features}) overtakes exact attention at ${describeCrossover(r)}`);
    const body = rows
      .filter((x) => x.mode === mode)
      .map((x) => [
        String(x.L),
        x.favor.failed ? 'failed' : fmt.ms(x.favor.ms),
        x.exact.skipped ? `(~${fmt.ms(x.exact.estimatedMs)})` : x.exact.failed ? 'failed' : fmt.ms(x.exact.ms),
        fmt.ratio(speedup(x).value),
      ]);
    parts.push(fmt.table([{ title: 'L' }, { title: 'FAVOR+ ms' }, { title: 'exact ms' }, { title: 'exact / FAVOR+' }], body));
    parts.push('');
  }
  parts.push(`batch ${o.batch}, heads ${o.heads}, d = ${o.dim}, ${threads} thread(s); the crossover is interpolated on log L against log(exact / FAVOR+).`);
  return {
    title: 'crossover',
    text: parts.join('\n'),
    data: { results, rows },
    charts: [{ name: 'crossover', title: 'Crossover: FAVOR+ against exact attention', series: sweepSeries(rows, { threadList: [threads] }) }],
  };
}

// ---------------------------------------------------------------- million

async function million(ctx) {
  const o = ctx.opts;
  const Ls = seqFor(ctx, 'million');
  const threadList = o.threads ?? [...new Set([1, ctx.defaultThreads])];
  const rows = [];
  for (const L of Ls) {
    for (const mode of o.modes) {
      for (const threads of threadList) {
        const r = await measureAttention(ctx, { ...baseConfig(ctx, { batch: 1, heads: 1 }), impl: 'favor', mode, L, threads }, { fresh: false });
        rows.push(r);
      }
    }
  }
  // The exact time at these lengths, extrapolated from one head at L = 16384.
  const refL = 16384;
  const exactRefs = [];
  if (o.exact) {
    const threads = threadList[threadList.length - 1];
    for (const mode of o.modes) {
      const r = await measureAttention(ctx, { ...baseConfig(ctx, { batch: 1, heads: 1 }), impl: 'exact', mode, L: refL, threads }, { fresh: false });
      exactRefs.push(r);
    }
  }
  const body = rows.map((r) => {
    const ref = exactRefs.find((e) => e.mode === r.mode && !e.failed);
    const exactMs = ref ? extrapolate({ L: ref.L, ms: ref.ms }, r.L, 2) : null;
    r.exactExtrapolatedMs = exactMs;
    return [
      String(r.L),
      r.mode,
      String(r.threads),
      r.failed ? 'failed' : fmt.duration(r.ms),
      r.failed ? '' : fmt.sig(r.gflops),
      r.failed ? '' : fmt.percent(r.pctPeak),
      r.failed || r.coresUsed === null ? '' : r.coresUsed.toFixed(2),
      r.failed ? '' : fmt.bytes(r.extraBytes),
      r.failed ? '' : fmt.percent(100 * r.extraOverIo),
      exactMs === null ? '–' : `~${fmt.duration(exactMs)}`,
    ];
  });
  const text = [
    `one head (batch 1), d = Dv = ${o.dim}, m = ${o.features}`,
    fmt.table(
      [
        { title: 'L' },
        { title: 'mode', align: 'left' },
        { title: 'threads' },
        { title: 'FAVOR+' },
        { title: 'GFLOP/s' },
        { title: '% peak' },
        { title: 'cores' },
        { title: 'extra mem' },
        { title: 'of q,k,v,out' },
        { title: 'exact (extrapolated)' },
      ],
      body,
    ),
    exactRefs.length
      ? `exact extrapolated quadratically from one head at L = ${refL}: ${exactRefs
          .map((e) => (e.failed ? `${e.mode} failed` : `${e.mode} ${fmt.duration(e.ms)}`))
          .join(', ')}`
      : '',
  ].join('\n');
  return { title: 'million', text, data: { rows, exactReference: exactRefs } };
}

// ---------------------------------------------------------------- overhead

async function overhead(ctx) {
  const o = ctx.opts;
  const results = [];
  for (const threads of ctx.threadList) {
    ctx.progress(`overhead: small calls, threads=${threads} ...`);
    const raw = await runWorker({ kind: 'overhead', L: 16, headDim: o.dim, features: o.features, kernel: o.kernel, threads, isa: o.isa, seed: o.seed, quiet: o.quiet });
    if (!raw.ok) {
      ctx.fail(`overhead: ${raw.error}`);
      continue;
    }
    results.push({ threads, ...raw });
  }
  const parts = [];
  for (const r of results) {
    // FAVOR's arithmetic at L = 16 (cost model) at the machine's one-thread peak: a floor no call can beat.
    const { flops } = favorCost({ L: 16, headDim: o.dim, numFeatures: o.features, kernel: o.kernel });
    const peak1 = ctx.peakFor(1);
    const floor = peak1 ? (flops / (peak1 * 1e9)) * 1e6 : null;
    parts.push(`one head, L = 16, d = ${o.dim}, m = ${o.features}, ${r.threads} thread(s); target: fixed cost of a sync call <= 20 µs`);
    if (floor !== null) parts.push(`(the FAVOR+ arithmetic alone at this size is ${fmt.sig(flops / 1e6)} MFLOP, ${fmt.sig(floor)} µs at the one-thread peak)`);
    parts.push(
      fmt.table(
        [{ title: 'call', align: 'left' }, { title: 'µs (median)' }, { title: 'p25' }, { title: 'p75' }],
        Object.entries(r.cases).map(([name, s]) => [name, fmt.sig(s.median), fmt.sig(s.p25), fmt.sig(s.p75)]),
      ),
    );
    parts.push('');
  }
  return { title: 'overhead', text: parts.join('\n'), data: { results } };
}

// ---------------------------------------------------------------- concurrency

async function concurrency(ctx) {
  const o = ctx.opts;
  const L = seqFor(ctx, 'concurrency')[0];
  const results = [];
  for (const threads of ctx.threadList) {
    for (const mode of o.modes) {
      ctx.progress(`concurrency: 4 favorAttention calls, ${mode}, L=${L}, threads=${threads} ...`);
      const raw = await runWorker({
        kind: 'concurrency',
        batch: o.batch,
        heads: o.heads,
        L,
        headDim: o.dim,
        features: o.features,
        kernel: o.kernel,
        causal: mode === 'causal',
        threads,
        isa: o.isa,
        seed: o.seed,
        calls: 4,
        rounds: 5,
        quiet: o.quiet,
      });
      if (!raw.ok) {
        ctx.fail(`concurrency: ${raw.error}`);
        continue;
      }
      results.push({ threads, mode, L, ...raw });
    }
  }
  const body = results.map((r) => [
    r.mode,
    String(r.threads),
    fmt.ms(r.backToBackMs.median),
    fmt.ms(r.concurrentMs.median),
    fmt.sig(r.ratio),
    fmt.ms(r.syncBackToBackMs.median),
    fmt.sig(r.eventLoop.backToBackP99Ms),
    fmt.sig(r.eventLoop.concurrentP99Ms),
    fmt.sig(r.eventLoop.concurrentMaxMs),
    fmt.sig(r.eventLoop.idleP99Ms),
    fmt.duration(r.callingThreadMsPerCall.median),
  ]);
  const text = [
    `4 favorAttention calls (batch ${o.batch}, heads ${o.heads}, L = ${L}, d = ${o.dim}, m = ${o.features}), median of 5 rounds; targets: ratio <= 1.15, event-loop p99 < 10 ms`,
    fmt.table(
      [
        { title: 'mode', align: 'left' },
        { title: 'threads' },
        { title: 'back to back ms' },
        { title: 'concurrent ms' },
        { title: 'ratio' },
        { title: 'sync b2b ms' },
        { title: 'loop p99 b2b' },
        { title: 'loop p99 conc' },
        { title: 'loop max conc' },
        { title: 'loop p99 idle' },
        { title: 'on caller/call' },
      ],
      body,
    ),
    'ratio: concurrent / back to back (both awaited). loop: perf_hooks.monitorEventLoopDelay (resolution 1 ms) while the calls run, in ms;',
    'it reads timer intervals, so an idle loop reads about 1 ms (loop p99 idle). on caller/call: time before favorAttention() returns its Promise.',
  ].join('\n');
  return { title: 'concurrency', text, data: { results } };
}

// ---------------------------------------------------------------- sampling

async function sampling(ctx) {
  const o = ctx.opts;
  ctx.progress('sampling: projection W ...');
  const raw = await runWorker({ kind: 'sampling', headDim: o.dim, features: o.features, kernel: o.kernel, isa: o.isa, quiet: o.quiet });
  if (!raw.ok) {
    ctx.fail(`sampling: ${raw.error}`);
    return { title: 'sampling', text: 'sampling failed', data: { error: raw.error } };
  }
  const text = [
    `sampling W (m = ${o.features}, d = ${o.dim}); target < 1 ms`,
    fmt.table(
      [{ title: 'operation', align: 'left' }, { title: 'median' }, { title: 'p25' }, { title: 'p75' }],
      [
        ['FeatureMap.redraw (orthogonal, chi norms)', raw.redrawOrthogonalMs],
        ['new FeatureMap (orthogonal)', raw.constructOrthogonalMs],
        ['FeatureMap.redraw (i.i.d. rows)', raw.redrawIidMs],
      ].map(([name, s]) => [name, fmt.duration(s.median), fmt.duration(s.p25), fmt.duration(s.p75)]),
    ),
  ].join('\n');
  return { title: 'sampling', text, data: raw };
}

// ---------------------------------------------------------------- onnxruntime

/**
 * Exact attention against onnxruntime-node. With `sweepRows` (the default run),
 * a short version: the sweep's lengths from 1024 to 4096, reusing its FAVOR+ and
 * exact measurements.
 */
async function onnx(ctx, { sweepRows = null } = {}) {
  const o = ctx.opts;
  const loaded = loadOnnxRuntime();
  if (loaded.error) {
    ctx.skip('onnxruntime comparison', loaded.error);
    return { title: 'onnx', text: `onnxruntime comparison skipped: ${loaded.error}`, data: { skipped: loaded.error } };
  }
  const threads = ctx.threadList[ctx.threadList.length - 1];
  const reuse = sweepRows ? sweepRows.filter((r) => r.threads === threads && r.L >= 1024 && r.L <= 4096) : null;
  const Ls = reuse ? [...new Set(reuse.map((r) => r.L))] : seqFor(ctx, 'onnx');
  if (Ls.length === 0) return null;
  const impls = ['exact', 'ort-matmul', 'ort-mha', 'favor'];
  const rows = [];
  for (const mode of o.modes) {
    const last = {};
    for (const L of Ls) {
      const row = { mode, L, threads };
      const previous = reuse && reuse.find((r) => r.mode === mode && r.L === L);
      for (const impl of impls) {
        if (previous && (impl === 'exact' || impl === 'favor')) {
          row[impl] = previous[impl];
          if (row[impl] && !row[impl].failed && !row[impl].skipped) last[impl] = { L, ms: row[impl].ms };
          continue;
        }
        const config = { ...baseConfig(ctx), impl, mode, L, threads };
        if (impl !== 'favor') {
          const estimate = exactEstimateMs(ctx, config, last[impl]);
          if (estimate > o.budget * 1000) {
            row[impl] = skippedExact(config, estimate, o.budget);
            ctx.progress(`${IMPL_NAMES[impl]} ${mode} L=${L}: skipped, ${row[impl].reason}`);
            continue;
          }
        }
        row[impl] = await measureAttention(ctx, config, { targetMs: 1000 });
        if (!row[impl].failed && !row[impl].skipped) last[impl] = { L, ms: row[impl].ms };
      }
      rows.push(row);
    }
  }
  const cell = (r) => (!r ? '–' : r.skipped ? (r.estimatedMs ? `(~${fmt.ms(r.estimatedMs)})` : 'skipped') : r.failed ? 'failed' : fmt.ms(r.ms));
  // Memory with the output counted for everyone (onnxruntime allocates its output).
  const mem = (r, ours) => {
    if (!r || r.skipped || r.failed) return '–';
    return fmt.bytes(ours ? (r.freshOutput?.extraBytes ?? r.extraBytes + r.outBytes) : r.extraBytes);
  };
  const parts = [];
  for (const mode of o.modes) {
    parts.push(`${mode}: batch ${o.batch}, heads ${o.heads}, d = ${o.dim}, ${threads} thread(s), onnxruntime-node ${loaded.version} (CPU, intra-op threads = ${threads})`);
    const body = rows
      .filter((r) => r.mode === mode)
      .map((r) => {
        const best = ['ort-matmul', 'ort-mha'].map((k) => r[k]).filter((x) => x && !x.skipped && !x.failed).map((x) => x.ms);
        const vs = r.exact && !r.exact.skipped && !r.exact.failed && best.length ? Math.min(...best) / r.exact.ms : null;
        return [
          String(r.L),
          cell(r.exact),
          mem(r.exact, true),
          cell(r['ort-matmul']),
          mem(r['ort-matmul'], false),
          cell(r['ort-mha']),
          mem(r['ort-mha'], false),
          fmt.ratio(vs),
          cell(r.favor),
        ];
      });
    parts.push(
      fmt.table(
        [
          { title: 'L' },
          { title: 'exact ms' },
          { title: 'peak mem' },
          { title: 'ORT MatMul ms' },
          { title: 'peak mem' },
          { title: 'ORT MHA ms' },
          { title: 'peak mem' },
          { title: 'best ORT / exact' },
          { title: 'FAVOR+ ms' },
        ],
        body,
      ),
    );
    const diffs = rows
      .filter((r) => r.mode === mode)
      .flatMap((r) => ['ort-matmul', 'ort-mha'].map((k) => r[k]).filter((x) => x && typeof x.maxAbsDiffVsExact === 'number').map((x) => `${x.name} L=${x.L}: ${x.maxAbsDiffVsExact.toExponential(1)}`));
    if (diffs.length) parts.push(`max |onnxruntime - exact|: ${diffs.join('; ')}`);
    parts.push('');
  }
  parts.push('peak mem: peak RSS during the first call minus RSS before it, including the output (onnxruntime allocates its own; ours is a call without `out`).');
  const series = [];
  for (const mode of o.modes) {
    for (const impl of impls) {
      const points = rows.filter((r) => r.mode === mode && r[impl] && !r[impl].skipped && !r[impl].failed).map((r) => ({ L: r.L, ms: r[impl].ms }));
      if (points.length) series.push({ name: `${IMPL_NAMES[impl]} ${mode}`, mode, points });
    }
  }
  if (reuse) parts.push('(a short comparison at the sweep\'s lengths up to 4096; --onnx or --suite onnx for L = 1024..8192)');
  return {
    title: reuse ? 'onnx (short)' : 'onnx',
    text: parts.join('\n'),
    data: { onnxruntime: loaded.version, rows },
    charts: [{ name: 'onnx', title: 'Exact attention: this library against onnxruntime-node (CPU)', series }],
  };
}

// ---------------------------------------------------------------- numpy

async function numpy(ctx) {
  const o = ctx.opts;
  const probe = probeNumpy();
  if (!probe.ok) {
    ctx.skip('numpy comparison', probe.reason);
    return { title: 'numpy', text: `numpy comparison skipped: ${probe.reason}`, data: { skipped: probe.reason } };
  }
  const Ls = seqFor(ctx, 'numpy');
  const threads = ctx.threadList[ctx.threadList.length - 1];
  const mode = 'bidirectional';
  const rows = [];
  const last = {};
  for (const L of Ls) {
    const row = { L, mode, threads };
    for (const impl of ['favor', 'numpy-favor', 'exact', 'numpy-exact']) {
      const config = { ...baseConfig(ctx), impl, mode, L, threads };
      if (impl.endsWith('exact')) {
        const estimate = exactEstimateMs(ctx, config, last[impl]);
        if (estimate > o.budget * 1000) {
          row[impl] = skippedExact(config, estimate, o.budget);
          ctx.progress(`${IMPL_NAMES[impl]} L=${L}: skipped, ${row[impl].reason}`);
          continue;
        }
      }
      if (impl.startsWith('numpy')) {
        ctx.progress(`${label(config)} ...`);
        const raw = await runNumpy(
          {
            impl: impl.slice('numpy-'.length),
            batch: o.batch,
            heads: o.heads,
            L,
            headDim: o.dim,
            valueDim: o.dim,
            features: o.features,
            causal: false,
            seed: o.seed,
            repeats: o.repeats,
            targetMs: o.targetMs,
            quiet: o.quiet,
          },
          threads,
        );
        if (!raw.ok) {
          ctx.fail(`${label(config)}: ${raw.error}`);
          row[impl] = { ...config, failed: true, error: raw.error };
          continue;
        }
        row[impl] = deriveRecord(raw, config, ctx.peakFor(threads));
        ctx.progress(`  ${fmt.duration(row[impl].ms)} (median of ${row[impl].runs}), extra ${fmt.bytes(row[impl].extraBytes)}`);
      } else {
        row[impl] = await measureAttention(ctx, config);
      }
      if (!row[impl].failed && !row[impl].skipped) last[impl] = { L, ms: row[impl].ms };
    }
    rows.push(row);
  }
  const cell = (r) => (!r ? '–' : r.skipped ? (r.estimatedMs ? `(~${fmt.ms(r.estimatedMs)})` : 'skipped') : r.failed ? 'failed' : fmt.ms(r.ms));
  const mem = (r, ours) => (!r || r.skipped || r.failed ? '–' : fmt.bytes(ours ? (r.freshOutput?.extraBytes ?? r.extraBytes + r.outBytes) : r.extraBytes));
  const ratio = (a, b) => (a && b && !a.skipped && !b.skipped && !a.failed && !b.failed ? fmt.ratio(a.ms / b.ms) : '–');
  const body = rows.map((r) => [
    String(r.L),
    cell(r.favor),
    mem(r.favor, true),
    cell(r['numpy-favor']),
    mem(r['numpy-favor'], false),
    ratio(r['numpy-favor'], r.favor),
    cell(r.exact),
    mem(r.exact, true),
    cell(r['numpy-exact']),
    mem(r['numpy-exact'], false),
    ratio(r['numpy-exact'], r.exact),
  ]);
  const np0 = rows.flatMap((r) => [r['numpy-favor'], r['numpy-exact']]).find((x) => x && x.numpy);
  const text = [
    `bidirectional, batch ${o.batch}, heads ${o.heads}, d = ${o.dim}, m = ${o.features}, ${threads} thread(s) (OPENBLAS_NUM_THREADS = ${threads}); ` +
      `python ${probe.python}, numpy ${probe.numpy}${np0 && np0.blas ? `, ${np0.blas} ${np0.blasVersion ?? ''}` : ''}`,
    fmt.table(
      [
        { title: 'L' },
        { title: 'FAVOR+ ms' },
        { title: 'peak mem' },
        { title: 'numpy FAVOR+ ms' },
        { title: 'peak mem' },
        { title: 'numpy/ours' },
        { title: 'exact ms' },
        { title: 'peak mem' },
        { title: 'numpy exact ms' },
        { title: 'peak mem' },
        { title: 'numpy/ours' },
      ],
      body,
    ),
    'peak mem includes the output for both (ours: a call without `out`). numpy runs with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its environment.',
  ].join('\n');
  return { title: 'numpy', text, data: { python: probe.python, numpy: probe.numpy, rows } };
}

// ---------------------------------------------------------------- helpers

function groupBy(xs, key) {
  const m = new Map();
  for (const x of xs) {
    const k = key(x);
    if (!m.has(k)) m.set(k, []);
    m.get(k).push(x);
  }
  return m;
}

const SUITE_FUNCTIONS = { sweep, crossover, overhead, concurrency, million, sampling, onnx, numpy };

/** The package's git commit when run from a checkout (read-only git commands). */
function sourceInfo() {
  const root = require('node:path').join(__dirname, '..', '..');
  const git = (args) => {
    const r = require('node:child_process').spawnSync('git', args, { cwd: root, encoding: 'utf8', timeout: 10000 });
    return r.status === 0 ? r.stdout.trim() : null;
  };
  const commit = git(['rev-parse', '--short', 'HEAD']);
  if (!commit) return null;
  const dirty = git(['status', '--porcelain', '--untracked-files=no', '--', 'lib', 'native']);
  return { commit, nativeOrLibModified: Boolean(dirty) };
}

function machineInfo() {
  const cpus = os.cpus();
  return {
    cpu: cpus.length ? cpus[0].model : 'unknown',
    logicalCpus: cpus.length,
    availableParallelism: os.availableParallelism ? os.availableParallelism() : cpus.length,
    totalMemoryBytes: os.totalmem(),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    loadAverage: os.loadavg(),
  };
}

module.exports = { SUITE_FUNCTIONS, DEFAULT_SEQ, machineInfo, sourceInfo, summarizeSweep, sweepText, sweepSeries, speedup };
