// The approximation study (experiments/, `npm run experiments`): the program runs
// end to end on tiny sizes, and small seeded versions of its comparisons hold.
// Margins were checked offline against 12 seed offsets each (the observed worst
// case is noted beside each margin); they are not tuned to the seeds below.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const dist = require(root); // the experiments use the built package, so these tests do too
const { FeatureMap, favorAttentionSync, softmaxAttentionSync } = dist;
const { attentionInputs, identityValues } = require(path.join(root, 'experiments', 'lib', 'data.js'));
const { relFrobenius, summarize } = require(path.join(root, 'experiments', 'lib', 'stats.js'));
const studies = require(path.join(root, 'experiments', 'lib', 'studies.js'));

const SEED_BASE = 0;

describe('npm run experiments', () => {
  test('--quick runs every experiment into the given folder and writes the tables, JSON and charts', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-experiments-'));
    const r = spawnSync(process.execPath, [path.join(root, 'experiments', 'run.js'), '--quick', '--out', out], {
      encoding: 'utf8',
      cwd: root,
      timeout: 60000,
    });
    expect(r.stderr).toMatch(/wrote .*experiments\.md/);
    expect(r.status).toBe(0);
    const md = fs.readFileSync(path.join(out, 'experiments.md'), 'utf8');
    for (const heading of ['## Findings', '## 1. Attention-output error vs m', '## 2a.', '## 2b. Attention-matrix error', '## 3. Lemma 2', '## 4. Error against sequence length']) {
      expect(md).toContain(heading);
    }
    expect(md).toMatch(/\| m \| positive, i\.i\.d\. \| positive, orthogonal \| hyperbolic, orthogonal \| trig, i\.i\.d\. \| trig, orthogonal \|/);
    const json = JSON.parse(fs.readFileSync(path.join(out, 'experiments.json'), 'utf8'));
    const { errorVsM, d64Output, d64Matrix, lemma2, length } = json.results;
    // every (T, variant, m) cell has one finite error per seed
    for (const s of [errorVsM, d64Output, d64Matrix]) {
      expect(s.cells).toHaveLength(s.temps.length * s.variants.length * s.ms.length);
      for (const c of s.cells) {
        expect(c.values).toHaveLength(json.meta.seeds);
        for (const e of c.values) expect(Number.isFinite(e) && e > 0).toBe(true);
      }
    }
    expect(d64Matrix.target).toBe('matrix');
    expect(lemma2.rows.length).toBeGreaterThan(0);
    expect(length.cells).toHaveLength(length.temps.length * length.variants.length * length.ms.length * length.Ls.length);
    for (const file of json.meta.charts) expect(fs.readFileSync(path.join(out, file), 'utf8')).toMatch(/^<svg/);
  });

  test('--only selects experiments; bad flags are usage errors', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-experiments-'));
    const run = (args: string[]) =>
      spawnSync(process.execPath, [path.join(root, 'experiments', 'run.js'), ...args], { encoding: 'utf8', cwd: root, timeout: 60000 });
    expect(run(['--quick', '--only', 'lemma2', '--out', out]).status).toBe(0);
    expect(Object.keys(JSON.parse(fs.readFileSync(path.join(out, 'experiments.json'), 'utf8')).results)).toEqual(['lemma2']);
    const bad = run(['--only', 'nope']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("unknown experiment 'nope'");
    expect(run(['--seeds', '1']).status).toBe(2);
  });
});

describe('the attention-matrix experiment measures the row-normalized matrix', () => {
  test('FAVOR with identity values equals D^-1 phi(Q) phi(K)^T computed from FeatureMap.features', () => {
    const L = 24;
    const d = 16;
    const { q, k } = attentionInputs(SEED_BASE + 5, { L, d, T: 1 });
    const featureMap = new FeatureMap({ headDim: d, numFeatures: 32, seed: SEED_BASE + 9 });
    const viaFavor = favorAttentionSync(q, k, identityValues(L), { featureMap }).data;
    const fq = featureMap.features({ data: q.data, shape: [L, d] }).data;
    const fk = featureMap.features({ data: k.data, shape: [L, d] }).data;
    const F = featureMap.featureCount;
    const fromFeatures = new Float64Array(L * L);
    for (let i = 0; i < L; i++) {
      let row = 0;
      for (let j = 0; j < L; j++) {
        let s = 0;
        for (let f = 0; f < F; f++) s += fq[i * F + f] * fk[j * F + f];
        fromFeatures[i * L + j] = s;
        row += s;
      }
      for (let j = 0; j < L; j++) fromFeatures[i * L + j] /= row;
    }
    expect(relFrobenius(viaFavor, fromFeatures)).toBeLessThan(1e-5);
    // and exact attention with identity values is the softmax matrix: rows sum to 1
    const exact = softmaxAttentionSync(q, k, identityValues(L)).data;
    for (let i = 0; i < L; i++) {
      let row = 0;
      for (let j = 0; j < L; j++) row += exact[i * L + j];
      expect(Math.abs(row - 1)).toBeLessThan(1e-5);
    }
  });
});

describe('small seeded versions of the comparisons', () => {
  /** Per-seed relative errors of two feature variants on the same data (paired). */
  function paired(
    { L, d, m, T, seeds, seed0 }: { L: number; d: number; m: number; T: number; seeds: number; seed0: number },
    a: Record<string, unknown>,
    b: Record<string, unknown>,
    square = false,
  ): { a: number[]; b: number[] } {
    const out = { a: [] as number[], b: [] as number[] };
    for (let s = 0; s < seeds; s++) {
      const { q, k, v } = attentionInputs(seed0 + s, { L, d, T });
      const exact = softmaxAttentionSync(q, k, v).data;
      for (const [key, options, offset] of [['a', a, 0], ['b', b, 1]] as const) {
        const featureMap = new FeatureMap({ headDim: d, numFeatures: m, ...options, seed: 7 * seed0 + 2 * s + offset });
        const e = relFrobenius(favorAttentionSync(q, k, v, { featureMap }).data, exact);
        out[key].push(square ? e * e : e);
      }
    }
    return out;
  }

  test('attention output: orthogonal features beat i.i.d. ones at m = d (mean squared relative error)', () => {
    // T = 0.5 keeps the squared errors light-tailed; at T = 1 the same effect needs many more seeds.
    const e = paired({ L: 64, d: 16, m: 16, T: 0.5, seeds: 300, seed0: SEED_BASE + 555 }, { orthogonal: false }, { orthogonal: true }, true);
    const iid = summarize(e.a);
    const orth = summarize(e.b);
    const diff = summarize(e.a.map((x, i) => x - e.b[i]));
    // observed: ratio 0.77-0.87, paired difference 4.2-7.7 SE
    expect(orth.mean / iid.mean).toBeLessThan(0.92);
    expect(diff.mean).toBeGreaterThan(3 * diff.se);
  });

  test('attention output: positive features beat trig where attention values are small (T = 1.5)', () => {
    const e = paired({ L: 256, d: 16, m: 16, T: 1.5, seeds: 16, seed0: SEED_BASE }, { kernel: 'softmax' }, { kernel: 'trig' });
    const pos = summarize(e.a);
    const trig = summarize(e.b);
    const wins = e.a.filter((x, i) => x < e.b[i]).length;
    // observed: median ratio 3.6-11, positive better on 15-16 of 16 seeds
    expect(trig.median / pos.median).toBeGreaterThan(2);
    expect(wins).toBeGreaterThanOrEqual(13);
  });

  test('Lemma 2: Monte-Carlo MSE of i.i.d. positive and trig features matches the closed form (d = 16, m = 16)', () => {
    const d = 16;
    const m = 16;
    const count = 4000;
    studies.LEMMA_PAIRS.forEach((spec: { nx: number; ny: number; cos: number }, p: number) => {
      const { xh, yh } = studies.makePair(d, spec, p);
      const theory = studies.lemma2(xh, yh, m);
      for (const [kernel, closed] of [['softmax', theory.positive], ['trig', theory.trig]] as const) {
        const sq = summarize(
          Array.from(studies.squaredErrors(xh, yh, { d, m, count, kernel, orthogonal: false, seed: SEED_BASE + 10 * p + (kernel === 'trig' ? 0 : 5) }) as Float64Array),
        );
        // observed over 12 seed offsets: |z| <= 3.6, |ratio - 1| <= 0.085
        expect(Math.abs(sq.mean - closed)).toBeLessThan(4.5 * sq.se);
        expect(Math.abs(sq.mean / closed - 1)).toBeLessThan(0.15);
      }
    });
  });

  test('Lemma 2 pairs: trig beats positive where exp(x.y) is large, positive wins where it is small', () => {
    // The closed forms themselves, on the pairs the experiment uses (x.y from 0.125 to -0.65).
    const rows = studies.LEMMA_PAIRS.map((spec: { nx: number; ny: number; cos: number }, p: number) => {
      const { xh, yh } = studies.makePair(16, spec, p);
      return studies.lemma2(xh, yh, 16);
    });
    expect(rows[0].trig).toBeLessThan(rows[0].positive);
    expect(rows[3].positive).toBeLessThan(rows[3].trig / 10);
  });
});
