#!/usr/bin/env python3
"""numpy baselines for performer-bench: FAVOR+ and exact softmax attention.

    python3 bench/numpy_attention.py '{"batch":1,"heads":8,"L":4096,"headDim":64,
                                       "features":256,"impl":"favor","causal":false}'

Prints one line "@@RESULT <json>" (timings in ms, memory in bytes). float32
throughout. Written the way a careful numpy user would:

- FAVOR+ (bidirectional): batched matmuls over [B, H, L, d] with the same
  stabilization as the library: log-features z = W x^ - |x^|^2 / 2, a max per
  feature over the keys (folded into the queries), and a max per query row.
- exact: per (batch, head) scores = q k^T * scale, minus the row max, exp in
  place, then (P v) / rowsum; one head at a time so the L x L scores stay one
  head's worth (1 GiB at L = 16384).

Timing and peak memory: py_timing.py (a warm-up call, then the median of N calls).
"""
import math
import os
import sys
import time

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the package's bench folder
from py_timing import print_result, read_spec, time_calls  # noqa: E402


def orthogonal_features(m, d, rng):
    """m x d orthogonal random features (blocks of d rows, sign fix, chi norms)."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        g = rng.standard_normal((d, d))
        q, r = np.linalg.qr(g)
        q = q * np.sign(np.diag(r))  # Q diag(sign(diag R))
        blocks.append(q.T)
    w = np.concatenate(blocks, axis=0)[:m]
    norms = np.linalg.norm(rng.standard_normal((m, d)), axis=1)
    return (w * norms[:, None]).astype(np.float32)


def favor_bidirectional(q, k, v, w):
    d = q.shape[-1]
    c = np.float32(d ** -0.25)
    qs = q * c
    ks = k * c
    wt = w.T  # d x m
    zq = qs @ wt
    zq -= 0.5 * np.sum(qs * qs, axis=-1, keepdims=True)
    zk = ks @ wt
    zk -= 0.5 * np.sum(ks * ks, axis=-1, keepdims=True)
    cf = zk.max(axis=-2, keepdims=True)  # per feature, over the keys
    zk -= cf
    np.exp(zk, out=zk)  # k' <= 1
    zq += cf
    zq -= zq.max(axis=-1, keepdims=True)  # per query row
    np.exp(zq, out=zq)  # q' <= 1
    s = np.swapaxes(zk, -1, -2) @ v  # [B, H, m, Dv]
    z = zk.sum(axis=-2)  # [B, H, m]
    num = zq @ s
    den = zq @ z[..., None]
    return num / den


def exact_attention(q, k, v, causal=False):
    B, H, L, d = q.shape
    scale = np.float32(1 / math.sqrt(d))
    out = np.empty((B, H, L, v.shape[-1]), dtype=np.float32)
    mask = np.triu(np.ones((L, L), dtype=bool), k=1) if causal else None
    for b in range(B):
        for h in range(H):
            s = q[b, h] @ k[b, h].T
            s *= scale
            if mask is not None:
                s[mask] = -np.inf
            s -= s.max(axis=-1, keepdims=True)
            np.exp(s, out=s)
            denom = s.sum(axis=-1, keepdims=True)
            out[b, h] = (s @ v[b, h]) / denom
    return out


def blas_info():
    info = {'numpy': np.__version__}
    try:
        cfg = np.show_config(mode='dicts')
        blas = cfg.get('Build Dependencies', {}).get('blas', {})
        info['blas'] = blas.get('name')
        info['blasVersion'] = blas.get('version')
        info['blasConfig'] = blas.get('openblas configuration')
    except Exception:  # older numpy: no dict mode
        pass
    return info


def main():
    spec, B, H, L, d, dv, m, causal = read_spec(sys.argv)
    impl = spec['impl']
    rng = np.random.default_rng(spec.get('seed', 1))
    q = (rng.standard_normal((B, H, L, d), dtype=np.float32) * np.float32(0.35))
    k = (rng.standard_normal((B, H, L, d), dtype=np.float32) * np.float32(0.35))
    v = rng.standard_normal((B, H, L, dv), dtype=np.float32)
    if impl == 'favor':
        if causal:
            raise SystemExit('numpy_attention.py: FAVOR+ is bidirectional only here')
        t0 = time.perf_counter()
        w = orthogonal_features(m, d, rng)
        sample_ms = (time.perf_counter() - t0) * 1000
        call = lambda: favor_bidirectional(q, k, v, w)
    elif impl == 'exact':
        sample_ms = None
        call = lambda: exact_attention(q, k, v, causal)
    else:
        raise SystemExit(f'numpy_attention.py: unknown impl {impl}')

    result = {
        **time_calls(call, spec, f'numpy {impl}'),
        'outBytes': B * H * L * dv * 4,
        'sampleFeaturesMs': sample_ms,
        'threadsEnv': {key: os.environ.get(key) for key in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS')},
        'python': sys.version.split()[0],
        **blas_info(),
    }
    print_result(result)


if __name__ == '__main__':
    main()
