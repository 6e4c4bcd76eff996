'use strict';
// numpy: FAVOR+ and exact attention against a numpy implementation
// (bench/numpy_attention.py; skipped without python and numpy).
const { deriveRecord, IMPL_NAMES } = require('../measure');
const fmt = require('../format');
const { runNumpy, probeNumpy } = require('../runner');
const { seqFor, baseConfig, label, measureAttention, exactEstimateMs, skippedExact } = require('./common');

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

module.exports = { numpy };
