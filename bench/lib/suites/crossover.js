'use strict';
// crossover: the length at which FAVOR+ overtakes exact attention, extending
// the lengths until it has.
const { describeCrossover, findCrossover } = require('../crossover');
const fmt = require('../format');
const { seqFor, baseConfig, measureAttention, exactEstimateMs, skippedExact } = require('./common');
const { speedup, sweepSeries } = require('./sweep');

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

module.exports = { crossover };
