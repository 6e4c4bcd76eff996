'use strict';
// sampling: the time to draw the projection W.
const fmt = require('../format');
const { runWorker } = require('../runner');

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

module.exports = { sampling };
