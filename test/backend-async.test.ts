// Backend selection and the async contract: Promise calls run off the event loop
// and keep their inputs alive while they run.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

import {
  FeatureMap,
  backendInfo,
  favorAttention,
  favorAttentionSync,
  measureFmaPeak,
  setBackend,
  softmaxAttention,
} from '../lib';
import { nextTurn, settledFlag, unwritten, written } from './helpers/progress';

const root = path.resolve(__dirname, '..');

function gaussianish(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    a[i] = (s / 4294967296 - 0.5) * 0.7;
  }
  return a;
}

describe('backend', () => {
  test('backendInfo lists the kernel sets; the scalar one is always available', () => {
    const info = backendInfo();
    expect(info.available).toContain('scalar');
    expect(info.available).toContain(info.isa);
    for (const isa of info.available) expect(info.compiled).toContain(isa);
    expect(info.threads).toBeGreaterThanOrEqual(1);
  });

  test('setBackend switches the kernel set and thread count, and back', () => {
    const before = backendInfo();
    try {
      for (const isa of before.available) expect(setBackend({ isa }).isa).toBe(isa);
      expect(setBackend({ threads: 1 }).threads).toBe(1);
    } finally {
      setBackend({ isa: before.isa, threads: before.threads });
    }
    expect(backendInfo()).toEqual(before);
  });

  test('measureFmaPeak runs every available ISA on the requested threads', () => {
    for (const isa of backendInfo().available) {
      const peak = measureFmaPeak({ isa, threads: 2, milliseconds: 20 });
      expect(peak.isa).toBe(isa);
      expect(peak.perThread).toHaveLength(2);
      for (const rate of peak.perThread) expect(rate).toBeGreaterThan(0.1);
      expect(peak.gflops).toBeCloseTo(peak.perThread[0] + peak.perThread[1], 6);
    }
    expect(() => measureFmaPeak({ threads: 0 })).toThrow(/threads: expected an integer from 1 to 1024, received 0/);
  });

  test('PERFORMER_ATTENTION_ISA=scalar forces the scalar path at load', () => {
    const out = execFileSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(root)}).backendInfo().isa)`], {
      env: { ...process.env, PERFORMER_ATTENTION_ISA: 'scalar' },
      encoding: 'utf8',
    });
    expect(out.trim()).toBe('scalar');
  });

  test('an unavailable PERFORMER_ATTENTION_ISA fails at load with an actionable message', () => {
    let stderr = '';
    try {
      execFileSync(process.execPath, ['-e', `require(${JSON.stringify(root)}).backendInfo()`], {
        env: { ...process.env, PERFORMER_ATTENTION_ISA: 'neon9' },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (error) {
      stderr = String((error as { stderr?: string }).stderr);
    }
    expect(stderr).toMatch(/PERFORMER_ATTENTION_ISA=neon9: .*not available.*Unset it or use one of: scalar/);
  });

  test('PERFORMER_ATTENTION_THREADS sets the pool size', () => {
    const out = execFileSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(root)}).backendInfo().threads)`], {
      env: { ...process.env, PERFORMER_ATTENTION_THREADS: '3' },
      encoding: 'utf8',
    });
    expect(out.trim()).toBe('3');
  });

  test('a missing binary fails with one error listing what was tried and the fixes', () => {
    let stderr = '';
    try {
      execFileSync(process.execPath, ['-e', `require(${JSON.stringify(root)}).backendInfo()`], {
        env: { ...process.env, PERFORMER_ATTENTION_BINARY: '/nonexistent/performer_attention.node' },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (error) {
      stderr = String((error as { stderr?: string }).stderr);
    }
    expect(stderr).toMatch(/could not load the native addon/);
    expect(stderr).toMatch(/\/nonexistent\/performer_attention\.node: not found/);
    expect(stderr).toMatch(/npm rebuild performer-attention/);
  });
});

describe('async calls', () => {
  const [B, H, L, d] = [1, 8, 2048, 64];
  const shape = [B, H, L, d];
  const q = { data: gaussianish(B * H * L * d, 1), shape };
  const k = { data: gaussianish(B * H * L * d, 2), shape };
  const v = { data: gaussianish(B * H * L * d, 3), shape };

  test('the event loop keeps running while an async call computes', async () => {
    // The output starts as NaN (every result is finite): a turn of the loop that finds it
    // partly written ran while the native worker was computing. A call that blocked the
    // loop would be seen not started or finished, never half-way.
    const out = unwritten(q.data.length);
    const promise = softmaxAttention(q, k, v, { out: { data: out, shape } });
    const flag = settledFlag(promise);
    const seen = new Set<string>();
    while (!flag.settled) {
      const n = written(out);
      seen.add(n === 0 ? 'not started' : n < out.length ? 'part written' : 'all written');
      await nextTurn();
    }
    await promise;
    expect([...seen]).toContain('part written');
    expect(written(out)).toBe(out.length);
  });

  test('async equals sync bit for bit, including many concurrent calls', async () => {
    const featureMap = new FeatureMap({ headDim: d, numFeatures: 64, seed: 5 });
    const small = { data: q.data.subarray(0, 4 * 64 * d), shape: [1, 4, 64, d] };
    const smallV = { data: v.data.subarray(0, 4 * 64 * d), shape: [1, 4, 64, d] };
    const sync = favorAttentionSync(small, small, smallV, { featureMap, causal: true });
    const results = await Promise.all(
      Array.from({ length: 20 }, () => favorAttention(small, small, smallV, { featureMap, causal: true })),
    );
    for (const r of results) expect(Buffer.from(r.data.buffer).equals(Buffer.from(sync.data.buffer))).toBe(true);
  });

  test('inputs stay alive while an async call runs, even with no other reference and garbage collection', () => {
    // A separate process with --expose-gc: arrays referenced only by the pending call.
    const script = `
      const pa = require(${JSON.stringify(root)});
      const make = (seed) => { const a = new Float32Array(8 * 1024 * 64); let s = seed;
        for (let i = 0; i < a.length; i++) { s = (s * 16807) % 2147483647; a[i] = (s / 2147483647 - 0.5) * 0.7; } return a; };
      const shape = [1, 8, 1024, 64];
      const fm = new pa.FeatureMap({ headDim: 64, numFeatures: 128, seed: 3 });
      const expected = pa.favorAttentionSync({ data: make(1), shape }, { data: make(2), shape }, { data: make(3), shape }, { featureMap: fm });
      const pending = pa.favorAttention({ data: make(1), shape }, { data: make(2), shape }, { data: make(3), shape }, { featureMap: fm });
      for (let i = 0; i < 20; i++) { global.gc(); make(9 + i); }
      pending.then((out) => {
        const same = Buffer.from(out.data.buffer).equals(Buffer.from(expected.data.buffer));
        console.log(same ? 'same' : 'different');
      });`;
    const out = execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
    expect(out.trim()).toBe('same');
  });
});
