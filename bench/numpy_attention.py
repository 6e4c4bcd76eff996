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

Each measurement is a warm-up call followed by N timed calls (N adapted to the
run time, at least 3); the peak extra memory is the kernel's high-water mark
(VmHWM, reset through /proc/self/clear_refs) during the warm-up call minus the
resident size before it, with the inputs already allocated.
"""
import json
import math
import os
import sys
import time

import numpy as np


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


def read_status():
    try:
        with open('/proc/self/status') as f:
            text = f.read()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        key, _, rest = line.partition(':')
        if key in ('VmRSS', 'VmHWM'):
            vals[key] = int(rest.split()[0]) * 1024
    return vals if len(vals) == 2 else None


def reset_peak():
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def measure_peak(fn):
    reset = reset_peak()
    before = read_status()
    result = fn()
    after = read_status()
    if before is None or after is None:
        return result, None
    base = before['VmRSS'] if reset else max(before['VmRSS'], before['VmHWM'])
    return result, max(0, after['VmHWM'] - base)


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
    spec = json.loads(sys.argv[1])
    B, H, L, d = spec['batch'], spec['heads'], spec['L'], spec['headDim']
    dv = spec.get('valueDim', d)
    m = spec.get('features', 256)
    impl = spec['impl']
    causal = bool(spec.get('causal', False))
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

    t0 = time.perf_counter()
    _, extra = measure_peak(call)
    first_ms = (time.perf_counter() - t0) * 1000
    if spec.get('repeats'):
        runs = spec['repeats']
    else:
        target = spec.get('targetMs', 1000)
        runs = max(3, min(50, math.ceil(target / max(first_ms, 1e-3))))
    times = []
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    for r in range(runs):
        t = time.perf_counter()
        call()
        ms = (time.perf_counter() - t) * 1000
        times.append(ms)
        if not spec.get('quiet') and (ms > 2000 or first_ms > 2000):
            sys.stderr.write(f'      numpy {impl} L={L}: run {r + 1}/{runs} {ms / 1000:.2f} s\n')
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    result = {
        'ok': True,
        'firstMs': first_ms,
        'times': times,
        'extraBytes': extra,
        'outBytes': B * H * L * dv * 4,
        'coresUsed': cpu / wall if wall > 0 else None,
        'sampleFeaturesMs': sample_ms,
        'threadsEnv': {key: os.environ.get(key) for key in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS')},
        'python': sys.version.split()[0],
        **blas_info(),
    }
    sys.stdout.write('@@RESULT ' + json.dumps(result) + '\n')


if __name__ == '__main__':
    main()
