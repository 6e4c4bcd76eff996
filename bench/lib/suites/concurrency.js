'use strict';
// concurrency: concurrent async calls against back-to-back ones, and the
// event-loop delay while they run.
const fmt = require('../format');
const { runWorker } = require('../runner');
const { seqFor } = require('./common');

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

module.exports = { concurrency };
