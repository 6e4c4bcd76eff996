'use strict';
// Markdown tables of the studies' results.

function fmt(x) {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1000 || a < 1e-3) return x.toExponential(2);
  return x.toPrecision(3);
}

function table(header, rows) {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** One table per T: rows = m, columns = variants, cells "mean ± sd". */
function errorTables(study) {
  const out = [];
  for (const T of study.temps) {
    const rows = study.ms.map((m) => [
      String(m),
      ...study.variants.map((v) => {
        const c = study.cells.find((x) => x.T === T && x.variant === v && x.m === m);
        return `${fmt(c.mean)} ± ${fmt(c.sd)}`;
      }),
    ]);
    out.push(`T = ${T}:\n\n${table(['m', ...study.variants], rows)}`);
  }
  return out.join('\n\n');
}

function lengthTables(study) {
  const out = [];
  for (const T of study.temps) {
    const rows = [];
    for (const v of study.variants) {
      for (const m of study.ms) {
        rows.push([
          v,
          String(m),
          ...study.Ls.map((L) => {
            const c = study.cells.find((x) => x.T === T && x.variant === v && x.m === m && x.L === L);
            return `${fmt(c.mean)} ± ${fmt(c.sd)}`;
          }),
        ]);
      }
    }
    out.push(`T = ${T}:\n\n${table(['features', 'm', ...study.Ls.map((L) => `L = ${L}`)], rows)}`);
  }
  return out.join('\n\n');
}

function lemmaTable(study) {
  const rows = study.rows.map((r) => [
    `${r.pair.nx}, ${r.pair.ny}, ${r.pair.cos}`,
    fmt(r.sm),
    fmt(r.sumNorm2),
    fmt(r.diffNorm2),
    String(r.m),
    r.estimator,
    fmt(r.theory),
    fmt(r.mc),
    `[${fmt(r.ci95[0])}, ${fmt(r.ci95[1])}]`,
    r.z.toFixed(2),
    r.orthogonalMc === null ? '–' : fmt(r.orthogonalMc),
  ]);
  return table(
    ['‖x̂‖, ‖ŷ‖, cos', 'SM', '‖x̂+ŷ‖²', '‖x̂−ŷ‖²', 'm', 'estimator', 'Lemma 2 MSE', 'Monte-Carlo MSE', '95 % CI', 'z', 'orthogonal MSE (MC)'],
    rows,
  );
}

module.exports = { fmt, table, errorTables, lengthTables, lemmaTable };
