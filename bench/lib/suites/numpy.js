'use strict';
// numpy: FAVOR+ and exact attention against a numpy implementation
// (bench/numpy_attention.py; skipped without python and numpy).
const fmt = require('../format');
const { runNumpy, probeNumpy } = require('../runner');
const { seqFor, comparisonRow, skippedComparison, pairCells, pairColumns } = require('./common');

async function numpy(ctx) {
  const o = ctx.opts;
  const probe = probeNumpy();
  if (!probe.ok) return skippedComparison(ctx, 'numpy', probe.reason);
  const threads = ctx.threadList[ctx.threadList.length - 1];
  const mode = 'bidirectional';
  const rows = [];
  const last = {};
  for (const L of seqFor(ctx, 'numpy')) {
    rows.push(await comparisonRow(ctx, ['favor', 'numpy-favor', 'exact', 'numpy-exact'], 'numpy-', runNumpy, { L, mode, threads }, last));
  }
  const body = rows.map((r) => [String(r.L), ...pairCells(r, 'favor', 'numpy-favor'), ...pairCells(r, 'exact', 'numpy-exact')]);
  const np0 = rows.flatMap((r) => [r['numpy-favor'], r['numpy-exact']]).find((x) => x && x.numpy);
  const text = [
    `bidirectional, batch ${o.batch}, heads ${o.heads}, d = ${o.dim}, m = ${o.features}, ${threads} thread(s) (OPENBLAS_NUM_THREADS = ${threads}); ` +
      `python ${probe.python}, numpy ${probe.numpy}${np0 && np0.blas ? `, ${np0.blas} ${np0.blasVersion ?? ''}` : ''}`,
    fmt.table(
      [{ title: 'L' }, ...pairColumns('FAVOR+', 'numpy FAVOR+', 'numpy'), ...pairColumns('exact', 'numpy exact', 'numpy')],
      body,
    ),
    'peak mem includes the output for both (ours: a call without `out`). numpy runs with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its environment.',
  ].join('\n');
  return { title: 'numpy', text, data: { python: probe.python, numpy: probe.numpy, rows } };
}

module.exports = { numpy };
