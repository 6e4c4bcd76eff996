'use strict';
// torch: FAVOR+ and exact attention against torch on the CPU
// (bench/torch_attention.py: scaled_dot_product_attention and a batched-matmul
// FAVOR+; skipped without python and torch). Bidirectional and causal, one row per
// L and thread count, ours and torch measured in turn in the same run.
const fmt = require('../format');
const { runTorch, probeTorch } = require('../runner');
const { seqFor, comparisonRow, skippedComparison, pairCells, pairColumns } = require('./common');

const IMPLS = ['favor', 'torch-favor', 'exact', 'torch-sdpa'];

async function torch(ctx) {
  const o = ctx.opts;
  const probe = probeTorch();
  if (!probe.ok) return skippedComparison(ctx, 'torch', probe.reason);
  const threadList = o.threads ?? [1, 2];
  const rows = [];
  for (const mode of o.modes) {
    for (const threads of threadList) {
      const last = {};
      for (const L of seqFor(ctx, 'torch')) rows.push(await comparisonRow(ctx, IMPLS, 'torch-', runTorch, { L, mode, threads }, last));
    }
  }
  const body = rows.map((r) => [r.mode, String(r.threads), String(r.L), ...pairCells(r, 'favor', 'torch-favor'), ...pairCells(r, 'exact', 'torch-sdpa')]);
  const seen = rows.flatMap((r) => [r['torch-favor'], r['torch-sdpa']]).filter((x) => x && x.parallelThreads);
  const threadsSeen = [...new Set(seen.map((x) => x.parallelThreads['at::get_num_threads()']))].join('/');
  const text = [
    `batch ${o.batch}, heads ${o.heads}, d = ${o.dim}, m = ${o.features}; python ${probe.python}, torch ${probe.torch}` +
      (threadsSeen ? ` (at::get_num_threads() = ${threadsSeen})` : ''),
    fmt.table(
      [{ title: 'mode' }, { title: 'threads' }, { title: 'L' }, ...pairColumns('FAVOR+', 'torch FAVOR+', 'torch'), ...pairColumns('exact', 'torch SDPA', 'torch')],
      body,
    ),
    'torch FAVOR+: batched matmuls, causal in chunks of 128 with a running state; torch SDPA: F.scaled_dot_product_attention (is_causal when causal). ' +
      'Both float32 under torch.inference_mode() with torch.set_num_threads(threads). peak mem includes the output for both (ours: a call without `out`).',
  ].join('\n');
  return { title: 'torch', text, data: { python: probe.python, torch: probe.torch, rows } };
}

module.exports = { torch };
