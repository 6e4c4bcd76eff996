#!/usr/bin/env python3
# Fits the polynomial of the GELU tail in native/core/layer_ops.cc (needs numpy, mpmath):
#   P(t) ~= erfc(a / sqrt 2) * exp(a^2 / 2),  t = 1 / (1 + a / 4),  0 <= a <= 15,
# degree 9, minimizing the maximum relative error by iteratively reweighted least
# squares on Chebyshev nodes in t. Prints the float coefficients as C hex literals.
import mpmath as mp
import numpy as np

mp.mp.dps = 30
Q_SCALE, A_MAX, DEGREE, NODES = 0.25, 15.0, 9, 3000


def target(a):
    return float(mp.erfc(a / mp.sqrt(2)) * mp.exp(a * a / 2))


t_min = 1 / (1 + Q_SCALE * A_MAX)
t = (t_min + 1) / 2 + (1 - t_min) / 2 * np.cos(np.pi * (np.arange(NODES) + 0.5) / NODES)
y = np.array([target(v) for v in (1 / t - 1) / Q_SCALE])
weights = np.ones(NODES)
vander = np.vander(t, DEGREE + 1, increasing=True)
for _ in range(40):
    coef, *_ = np.linalg.lstsq(vander / y[:, None] * weights[:, None], weights, rcond=None)
    err = (vander @ coef - y) / y
    weights *= 1 + np.abs(err) / np.max(np.abs(err))
    weights /= weights.mean()
print(f'max relative error (double evaluation): {np.max(np.abs(err)):.3g}')
for k, value in enumerate(coef.astype(np.float32)):
    print(f'c{k} = {float(value).hex()}f')
