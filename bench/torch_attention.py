#!/usr/bin/env python3
"""torch baselines for performer-bench: exact attention (SDPA) and FAVOR+.

    python3 bench/torch_attention.py '{"batch":1,"heads":8,"L":4096,"headDim":64,
                                       "features":256,"impl":"favor","causal":true,
                                       "threads":2}'

Prints one line "@@RESULT <json>" (timings in ms, memory in bytes). float32,
torch.set_num_threads(threads), every call under torch.inference_mode().

- sdpa: torch.nn.functional.scaled_dot_product_attention (is_causal when causal),
  whichever CPU kernel torch picks for the shape.
- favor: positive softmax features with the library's stabilizer (log-features
  z = W x^ - |x^|^2 / 2, a max per feature over the keys folded into the queries,
  a max per query row), as batched matmuls over [B*H, L, .]. A column of ones
  appended to v gives the normalizer in the same products as the numerator.
  Bidirectional: S = K'^T [v 1], then Q' S. Causal: chunks of CHUNK rows, a
  lower-triangular product inside a chunk and a running m x (Dv+1) state across
  chunks, so the extra memory stays O(L m) instead of a prefix sum over L x m x Dv.

Timing and peak memory: py_timing.py (a warm-up call, then the median of N calls).
"""
import math
import sys
import time

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ in the package's bench folder
from py_timing import print_result, read_spec, time_calls  # noqa: E402

CHUNK = 128


def orthogonal_features(m, d, gen):
    """m x d orthogonal random features (blocks of d rows, sign fix, chi norms)."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
        blocks.append((q * torch.sign(torch.diagonal(r))).T)
    w = torch.cat(blocks)[:m]
    norms = torch.randn(m, d, generator=gen, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).float()


def softmax_features(q, k, wt):
    """Stabilized positive features of queries and keys: q', k' <= 1."""
    c = q.shape[-1] ** -0.25
    qs = q * c
    ks = k * c
    zq = torch.baddbmm((qs * qs).sum(-1, keepdim=True), qs, wt.expand(qs.shape[0], -1, -1), beta=-0.5)
    zk = torch.baddbmm((ks * ks).sum(-1, keepdim=True), ks, wt.expand(ks.shape[0], -1, -1), beta=-0.5)
    cf = zk.amax(dim=-2, keepdim=True)  # per feature, over the keys
    zk.sub_(cf).exp_()
    zq.add_(cf)
    zq.sub_(zq.amax(dim=-1, keepdim=True)).exp_()
    return zq, zk


def with_ones(v):
    return torch.cat((v, v.new_ones(v.shape[:-1] + (1,))), dim=-1)


def favor_bidirectional(q, k, v, wt):
    qp, kp = softmax_features(q, k, wt)
    s = torch.bmm(kp.transpose(1, 2), with_ones(v))  # [BH, m, Dv+1]
    out = torch.bmm(qp, s)
    return out[..., :-1] / out[..., -1:]


def favor_causal(q, k, v, wt, chunk=CHUNK):
    qp, kp = softmax_features(q, k, wt)
    v1 = with_ones(v)
    n, L, _ = q.shape
    out = torch.empty(n, L, v1.shape[-1])
    state = torch.zeros(n, kp.shape[-1], v1.shape[-1])
    for s in range(0, L, chunk):
        e = min(s + chunk, L)
        qc, kc, vc = qp[:, s:e], kp[:, s:e], v1[:, s:e]
        a = torch.bmm(qc, kc.transpose(1, 2)).tril_()  # key j <= query i inside the chunk
        out[:, s:e] = torch.baddbmm(torch.bmm(a, vc), qc, state)
        state.baddbmm_(kc.transpose(1, 2), vc)
    return out[..., :-1] / out[..., -1:]


def parallel_threads():
    """The '... threads() : N' lines of torch.__config__.parallel_info() (ATen, OpenMP, MKL)."""
    out = {}
    for line in torch.__config__.parallel_info().splitlines():
        key, sep, value = line.strip().partition(' : ')
        if sep and 'threads' in key and value.strip().isdigit():
            out[key] = int(value)
    return out


def main():
    spec, B, H, L, d, dv, m, causal = read_spec(sys.argv)
    impl = spec['impl']
    threads = spec.get('threads')
    if threads:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(spec.get('seed', 1))
    q = torch.randn(B, H, L, d, generator=gen) * 0.35
    k = torch.randn(B, H, L, d, generator=gen) * 0.35
    v = torch.randn(B, H, L, dv, generator=gen)
    sample_ms = None
    if impl == 'sdpa':
        def call():
            with torch.inference_mode():
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    elif impl == 'favor':
        t0 = time.perf_counter()
        wt = orthogonal_features(m, d, gen).T.contiguous()  # d x m
        sample_ms = (time.perf_counter() - t0) * 1000
        run = favor_causal if causal else favor_bidirectional
        q3, k3, v3 = (x.reshape(B * H, L, x.shape[-1]) for x in (q, k, v))

        def call():
            with torch.inference_mode():
                return run(q3, k3, v3, wt).reshape(B, H, L, dv)
    else:
        raise SystemExit(f'torch_attention.py: unknown impl {impl}')

    result = {
        **time_calls(call, spec, f'torch {impl}'),
        'outBytes': B * H * L * dv * 4,
        'sampleFeaturesMs': sample_ms,
        'python': sys.version.split()[0],
        'torch': torch.__version__,
        'torchThreads': torch.get_num_threads(),
        'parallelThreads': parallel_threads(),
    }
    if spec.get('check'):
        with torch.inference_mode():
            ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            result['maxAbsDiffVsExact'] = (call() - ref).abs().max().item()
    print_result(result)


if __name__ == '__main__':
    main()
