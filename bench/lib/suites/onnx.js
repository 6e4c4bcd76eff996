'use strict';
// onnx: exact attention against onnxruntime-node (optional dependency).
const { IMPL_NAMES } = require('../measure');
const fmt = require('../format');
const { loadOnnxRuntime } = require('../optional');
const { seqFor, baseConfig, measureAttention, exactEstimateMs, skippedExact } = require('./common');

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

module.exports = { onnx };
