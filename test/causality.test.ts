// Causal attention must not depend on keys a query cannot attend: the first rows
// of a long causal call equal a call on the prefix alone, for every chunk size and
// with epsilon (whose stabilizer is the attended keys' maximum, not the global one).
import { FeatureMap, favorAttentionSync, softmaxAttentionSync, type Tensor } from '../lib';

function seeded(n: number, seed: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 48271) % 2147483647;
    a[i] = (s / 2147483647 - 0.5) * scale;
  }
  return a;
}

// Rows [0, rows) of each (batch, head) of a [B, H, L, w] tensor.
function prefix(t: Tensor, rows: number): Tensor {
  const [B, H, L, w] = t.shape;
  const data = new Float32Array(B * H * rows * w);
  for (let p = 0; p < B * H; p++) data.set(t.data.subarray(p * L * w, p * L * w + rows * w), p * rows * w);
  return { data, shape: [B, H, rows, w] };
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

const [B, H, L, d] = [2, 2, 150, 16];
const shape = [B, H, L, d];
// Large key norms make the later keys raise the per-feature maxima a lot.
const q = { data: seeded(B * H * L * d, 1, 6), shape };
const k = { data: seeded(B * H * L * d, 2, 6), shape };
const v = { data: seeded(B * H * L * d, 3, 2), shape };
const featureMap = new FeatureMap({ headDim: d, numFeatures: 32, seed: 9 });

test.each([
  [0, 1],
  [0, 7],
  [0, 64],
  [1e-3, 1],
  [1e-3, 7],
  [1e-3, 64],
  [0.05, 64],
])('FAVOR causal with epsilon %p, chunk %p: a prefix call equals the first rows of the full call', (epsilon, chunkSize) => {
  const full = favorAttentionSync(q, k, v, { featureMap, causal: true, epsilon, chunkSize });
  for (const rows of [1, 50, 97]) {
    const part = favorAttentionSync(prefix(q, rows), prefix(k, rows), prefix(v, rows), {
      featureMap,
      causal: true,
      epsilon,
      chunkSize,
    });
    expect(maxRelDiff(part.data, prefix(full, rows).data)).toBeLessThan(2e-6);
  }
});

test('exact causal attention: a prefix call equals the first rows of the full call', () => {
  const full = softmaxAttentionSync(q, k, v, { causal: true });
  const part = softmaxAttentionSync(prefix(q, 77), prefix(k, 77), prefix(v, 77), { causal: true });
  expect(maxRelDiff(part.data, prefix(full, 77).data)).toBeLessThan(1e-6);
});
