#!/usr/bin/env python3
"""torch baseline for bench/train.js: one training step of the same language model.

    python3 bench/torch_train.py '{"L":1024,"dim":256,"depth":4,"heads":8,"dimHead":32,
                                   "features":110,"numTokens":256,"attention":"favor",
                                   "threads":2,"runs":3}'

Prints one line "@@RESULT <json>": median milliseconds of the forward pass (loss only,
no_grad) and of a whole training step (forward, backward, AdamW), and the peak resident
memory of the process. float32 throughout, written the way a careful torch user would:
pre-LayerNorm layers, fused q/k/v projection, rotary queries and keys, GELU feed-forward,
causal attention as F.scaled_dot_product_attention(is_causal=True) (exact) or FAVOR+ with
positive random features computed chunk by chunk (64 rows: masked products inside a chunk,
running key sums across chunks, per-feature key stabilizer detached), so its memory stays
linear in L; logits and mean cross-entropy.
"""
import json
import math
import resource
import sys
import time

import torch
import torch.nn.functional as F

CHUNK = 64


def sinusoid(rows, width):
    inv = 1.0 / (10000 ** (torch.arange(0, width, 2).float() / width))
    x = torch.einsum('i,j->ij', torch.arange(rows).float(), inv)
    return torch.cat((x.sin(), x.cos()), dim=-1)


def rotary(x, table):
    half = table.shape[-1] // 2
    sin = table[:, :half].repeat_interleave(2, dim=-1)
    cos = table[:, half:].repeat_interleave(2, dim=-1)
    rot = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).reshape(x.shape)
    return x * cos + rot * sin


def favor_causal(q, k, v, w):
    d = q.shape[-1]
    c = d ** -0.25
    zq = torch.einsum('bhld,md->bhlm', c * q, w) - (c * c) * (q * q).sum(-1, keepdim=True) / 2
    zk = torch.einsum('bhld,md->bhlm', c * k, w) - (c * c) * (k * k).sum(-1, keepdim=True) / 2
    # Stabilizers (constants): a max per key feature over the call, a max per query row.
    kf = torch.exp(zk - zk.amax(dim=(-2,), keepdim=True).detach())
    qf = torch.exp(zq - zq.amax(dim=-1, keepdim=True).detach())
    B, H, L, m = qf.shape
    s = torch.zeros(B, H, m, v.shape[-1], dtype=q.dtype)
    z = torch.zeros(B, H, m, dtype=q.dtype)
    mask = torch.tril(torch.ones(CHUNK, CHUNK, dtype=torch.bool))
    outs = []
    for i in range(0, L, CHUNK):
        qc, kc, vc = qf[:, :, i:i + CHUNK], kf[:, :, i:i + CHUNK], v[:, :, i:i + CHUNK]
        n = qc.shape[2]
        a = (qc @ kc.transpose(-1, -2)) * mask[:n, :n]
        num = qc @ s + a @ vc
        den = (qc * z.unsqueeze(-2)).sum(-1) + a.sum(-1)
        outs.append(num / den.unsqueeze(-1))
        s = s + kc.transpose(-1, -2) @ vc
        z = z + kc.sum(-2)
    return torch.cat(outs, dim=2)


class Model(torch.nn.Module):
    def __init__(self, o):
        super().__init__()
        D, H, dh, V = o['dim'], o['heads'], o['dimHead'], o['numTokens']
        self.o = o
        self.emb = torch.nn.Embedding(V, D)
        self.register_buffer('pos', sinusoid(o['L'], D))
        self.register_buffer('rot', sinusoid(o['L'], dh))
        self.layers = torch.nn.ModuleList()
        for _ in range(o['depth']):
            self.layers.append(torch.nn.ModuleDict({
                'n1': torch.nn.LayerNorm(D), 'qkv': torch.nn.Linear(D, 3 * H * dh, bias=False), 'out': torch.nn.Linear(H * dh, D, bias=False),
                'n2': torch.nn.LayerNorm(D), 'w1': torch.nn.Linear(D, 4 * D), 'w2': torch.nn.Linear(4 * D, D),
            }))
            self.register_buffer(f'w{len(self.layers)}', torch.randn(o['features'], dh))
        self.norm = torch.nn.LayerNorm(D)
        self.head = torch.nn.Linear(D, V)

    def forward(self, tokens, targets):
        o = self.o
        B, L = tokens.shape
        H, dh = o['heads'], o['dimHead']
        x = self.emb(tokens) + self.pos[:L]
        for i, layer in enumerate(self.layers):
            q, k, v = layer['qkv'](layer['n1'](x)).reshape(B, L, 3, H, dh).permute(2, 0, 3, 1, 4)
            q, k = rotary(q, self.rot[:L]), rotary(k, self.rot[:L])
            if o['attention'] == 'softmax':
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                a = favor_causal(q, k, v, getattr(self, f'w{i + 1}'))
            x = x + layer['out'](a.transpose(1, 2).reshape(B, L, H * dh))
            x = x + layer['w2'](F.gelu(layer['w1'](layer['n2'](x))))
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.reshape(B * L, -1), targets.reshape(-1))


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    o = json.loads(sys.argv[1])
    torch.set_num_threads(o['threads'])
    torch.manual_seed(0)
    model = Model(o)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, o['numTokens'], (1, o['L']))
    targets = torch.randint(0, o['numTokens'], (1, o['L']))

    def step():
        opt.zero_grad()
        loss = model(tokens, targets)
        loss.backward()
        opt.step()

    def forward():
        with torch.no_grad():
            model(tokens, targets)

    step()
    forward()
    times = {'forward': [], 'step': []}
    for _ in range(o['runs']):
        t0 = time.perf_counter()
        forward()
        times['forward'].append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        step()
        times['step'].append((time.perf_counter() - t0) * 1000)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print('@@RESULT ' + json.dumps({'forwardMs': median(times['forward']), 'stepMs': median(times['step']), 'peakRssBytes': rss,
                                    'torch': torch.__version__}))


if __name__ == '__main__':
    main()
