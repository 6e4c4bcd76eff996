'use strict';
// sweep: FAVOR+ and exact attention over a range of lengths, with the
// crossover, linearity and memory figures drawn from it.
const { describeCrossover, findCrossover } = require('../crossover');
const fmt = require('../format');
const { scalingExponent } = require('../stats');
const { seqFor, baseConfig, measureAttention, exactEstimateMs, skippedExact, groupBy } = require('./common');

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

module.exports = { sweep, speedup, summarizeSweep, sweepText, sweepSeries };
