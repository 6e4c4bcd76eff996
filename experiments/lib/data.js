'use strict';
// Seeded inputs for the experiments: a small generator of their own
// (xorshift128 + Box-Muller), so the data do not depend on the library's RNG.

class Rng {
  constructor(seed) {
    // SplitMix-style mixing of the seed into four nonzero 32-bit words.
    let x = (seed * 0x9e3779b1) >>> 0;
    const next = () => {
      x = (x + 0x6d2b79f5) >>> 0;
      let t = Math.imul(x ^ (x >>> 15), 1 | x);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return (t ^ (t >>> 14)) >>> 0;
    };
    this.s = [next(), next(), next(), next() | 1];
    this.spare = null;
  }

  u32() {
    const s = this.s;
    let t = s[3];
    const s0 = s[0];
    s[3] = s[2];
    s[2] = s[1];
    s[1] = s0;
    t ^= t << 11;
    t ^= t >>> 8;
    s[0] = (t ^ s0 ^ (s0 >>> 19)) >>> 0;
    return s[0];
  }

  normal() {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log((this.u32() + 0.5) / 4294967296));
    const a = (2 * Math.PI * (this.u32() + 0.5)) / 4294967296;
    this.spare = r * Math.sin(a);
    return r * Math.cos(a);
  }

  normals(n, sd) {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = sd * this.normal();
    return out;
  }
}

/**
 * The input scale T: q and k entries are i.i.d. N(0, T^2 / sqrt(d)), so the rows the
 * features see, x_hat = d^(-1/4) x, have E|x_hat|^2 = T^2 at every d, and the logits
 * q.k / sqrt(d) = x_hat.y_hat have standard deviation T^2 / sqrt(d). Larger T: larger
 * norms, sharper softmax (a lower softmax temperature), smaller attention values.
 */
function inputSd(T, d) {
  return T / Math.pow(d, 0.25);
}

/** q, k ~ N(0, T^2/sqrt(d)), v ~ N(0, 1), shape [1, 1, L, d] each (v: [1, 1, L, dv]). */
function attentionInputs(seed, { L, d, T, dv = d }) {
  const rng = new Rng(seed);
  const sd = inputSd(T, d);
  return {
    q: { data: rng.normals(L * d, sd), shape: [1, 1, L, d] },
    k: { data: rng.normals(L * d, sd), shape: [1, 1, L, d] },
    v: { data: rng.normals(L * dv, 1), shape: [1, 1, L, dv] },
  };
}

/** The L x L identity as values: attention(q, k, I) is the (row-normalized) attention matrix itself. */
function identityValues(L) {
  const data = new Float32Array(L * L);
  for (let i = 0; i < L; i++) data[i * L + i] = 1;
  return { data, shape: [1, 1, L, L] };
}

module.exports = { Rng, inputSd, attentionInputs, identityValues };
