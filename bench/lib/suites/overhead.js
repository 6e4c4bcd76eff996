'use strict';
// overhead: the fixed cost of small calls.
const { favorCost } = require('../cost');
const fmt = require('../format');
const { runWorker } = require('../runner');

async function overhead(ctx) {
  const o = ctx.opts;
  const results = [];
  for (const threads of ctx.threadList) {
    ctx.progress(`overhead: small calls, threads=${threads} ...`);
    const raw = await runWorker({ kind: 'overhead', L: 16, headDim: o.dim, features: o.features, kernel: o.kernel, threads, isa: o.isa, seed: o.seed, quiet: o.quiet });
    if (!raw.ok) {
      ctx.fail(`overhead: ${raw.error}`);
      continue;
    }
    results.push({ threads, ...raw });
  }
  const parts = [];
  for (const r of results) {
    // FAVOR's arithmetic at L = 16 (cost model) at the machine's one-thread peak: a floor no call can beat.
    const { flops } = favorCost({ L: 16, headDim: o.dim, numFeatures: o.features, kernel: o.kernel });
    const peak1 = ctx.peakFor(1);
    const floor = peak1 ? (flops / (peak1 * 1e9)) * 1e6 : null;
    parts.push(`one head, L = 16, d = ${o.dim}, m = ${o.features}, ${r.threads} thread(s); target: fixed cost of a sync call <= 20 µs`);
    if (floor !== null) parts.push(`(the FAVOR+ arithmetic alone at this size is ${fmt.sig(flops / 1e6)} MFLOP, ${fmt.sig(floor)} µs at the one-thread peak)`);
    parts.push(
      fmt.table(
        [{ title: 'call', align: 'left' }, { title: 'µs (median)' }, { title: 'p25' }, { title: 'p75' }],
        Object.entries(r.cases).map(([name, s]) => [name, fmt.sig(s.median), fmt.sig(s.p25), fmt.sig(s.p75)]),
      ),
    );
    parts.push('');
  }
  return { title: 'overhead', text: parts.join('\n'), data: { results } };
}

module.exports = { overhead };
