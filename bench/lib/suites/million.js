'use strict';
// million: FAVOR+ on one head at L = 2^20, against exact attention
// extrapolated from L = 16384.
const fmt = require('../format');
const { extrapolate } = require('../stats');
const { seqFor, baseConfig, measureAttention } = require('./common');

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

module.exports = { million };
