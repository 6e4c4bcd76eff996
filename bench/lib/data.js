'use strict';
// Seeded benchmark inputs. Values are uniform with the standard deviation asked
// for (timings do not depend on the distribution; a uniform generator is fast
// enough to fill the 2^20-row inputs of the million suite in a second).

/** xorshift128+ seeded through SplitMix64 (BigInt only for seeding). */
function makeRng(seed) {
  let s = BigInt.asUintN(64, BigInt(seed));
  const split = () => {
    s = BigInt.asUintN(64, s + 0x9e3779b97f4a7c15n);
    let z = s;
    z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
    z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
    return z ^ (z >> 31n);
  };
  const a = split();
  const b = split();
  // Four 32-bit words of state for a 32-bit xorshift128 (fast with plain numbers).
  let x = Number(a & 0xffffffffn) | 0;
  let y = Number(a >> 32n) | 0;
  let z = Number(b & 0xffffffffn) | 0;
  let w = Number(b >> 32n) | 0;
  if ((x | y | z | w) === 0) w = 1;
  return function next() {
    const t = x ^ (x << 11);
    x = y;
    y = z;
    z = w;
    w = (w ^ (w >>> 19) ^ (t ^ (t >>> 8))) | 0;
    return (w >>> 0) / 4294967296;
  };
}

/** A Float32Array of n values, uniform with mean 0 and standard deviation sigma. */
function uniformArray(n, sigma, rng) {
  const a = new Float32Array(n);
  const width = sigma * Math.sqrt(12);
  for (let i = 0; i < n; i++) a[i] = (rng() - 0.5) * width;
  return a;
}

/** q, k, v tensors [B, H, L, d] (v: [B, H, L, Dv]) and a touched output [B, H, L, Dv]. */
function makeInputs({ batch, heads, L, headDim, valueDim = headDim, seed = 1, qkSigma = 0.35 }) {
  const rng = makeRng(seed);
  const qkShape = [batch, heads, L, headDim];
  const vShape = [batch, heads, L, valueDim];
  const n = batch * heads * L * headDim;
  const nv = batch * heads * L * valueDim;
  const q = { data: uniformArray(n, qkSigma, rng), shape: qkShape };
  const k = { data: uniformArray(n, qkSigma, rng), shape: qkShape };
  const v = { data: uniformArray(nv, 1, rng), shape: vShape };
  const out = { data: new Float32Array(nv).fill(0), shape: vShape };
  return { q, k, v, out };
}

/**
 * Copies each D-long row between the [B, H, L, D] layout and [B, L, H*D] (the
 * layout of onnxruntime's MultiHeadAttention): toBsd picks the direction.
 */
function relayout(data, [B, H, L, D], toBsd) {
  const out = new Float32Array(data.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let l = 0; l < L; l++) {
        const bhld = ((b * H + h) * L + l) * D;
        const bsd = (b * L + l) * H * D + h * D;
        const src = toBsd ? bhld : bsd;
        out.set(data.subarray(src, src + D), toBsd ? bsd : bhld);
      }
  return out;
}

/** [B, H, L, D] -> [B, L, H*D]. */
const toBSD = (data, shape) => relayout(data, shape, true);

/** [B, L, H*D] -> [B, H, L, D]. */
const fromBSD = (data, shape) => relayout(data, shape, false);

module.exports = { makeRng, uniformArray, makeInputs, toBSD, fromBSD };
