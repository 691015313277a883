#!/usr/bin/env python3
"""MCGdiff's filter re-implemented in numpy, to tell the method's behaviour from Tweedie's code.

Same filter as sample/src/methods/smc/mcgdiff.rs (twists N(√ᾱ_t y; x_t, 1 − ᾱ_t + ᾱ_t σ²), fully
adapted proposals, resampling every step, DDPM chain of 100 trailing steps of the linear schedule)
with the exact denoiser of a zero-mean Gaussian prior and y = x + σ ε (denoising: V = I). The prior
is smooth: a 1-D chain of `--side` pixels (`--grid 1`) or a `--side`×`--side` image, covariance
0.09 exp(−r²/8) + 9e-5 I, as the Gaussian image prior of sample/tests/particles.rs.

Prints the squared error of the draws' mean against the exact posterior mean, in units of its
Monte Carlo variance (≈ 1 for exact draws). 16 pixels in a row: 1.44 at K = 64; 8×8: 8.08 (100 draws).
    python scripts/mcgdiff-numpy.py --side 16 --grid 1 --k 64
    python scripts/mcgdiff-numpy.py --side 8 --grid 2 --k 64
"""
import argparse

import numpy as np

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--side", type=int, default=8)
p.add_argument("--grid", type=int, default=2, choices=[1, 2])
p.add_argument("--k", type=int, default=64)
p.add_argument("--systems", type=int, default=100)
args = p.parse_args()

rng = np.random.default_rng(0)
T = 1000
ab = np.cumprod(1 - np.linspace(1e-4, 0.02, T))
ts = [999 - 10 * i for i in range(100)]
if args.grid == 1:
    d = args.side
    r2 = (np.arange(d)[:, None] - np.arange(d)[None, :]) ** 2
else:
    d = args.side ** 2
    yy, xx = np.divmod(np.arange(d), args.side)
    r2 = (yy[:, None] - yy[None, :]) ** 2 + (xx[:, None] - xx[None, :]) ** 2
S = 0.09 * np.exp(-r2 / 8.0) + 9e-5 * np.eye(d)
sig = 0.1
y = rng.multivariate_normal(np.zeros(d), S) + sig * rng.standard_normal(d)


def eps_hat(x, t):
    a = ab[t]
    return np.sqrt(1 - a) * np.linalg.solve(a * S + (1 - a) * np.eye(d), x.T).T


def log_normal(a, b, var):
    return (-0.5 * ((a - b) ** 2 / var + np.log(2 * np.pi * var))).sum(1)


draws = []
for _ in range(args.systems):
    K = args.k
    x = rng.standard_normal((K, d))
    twist = None
    for i, t in enumerate(ts):
        tp = ts[i + 1] if i + 1 < len(ts) else None
        a, ap = ab[t], (ab[tp] if tp is not None else 1.0)
        x0 = (x - np.sqrt(1 - a) * eps_hat(x, t)) / np.sqrt(a)
        beta = 1 - a / ap
        if tp is not None:
            mu = beta * np.sqrt(ap) / (1 - a) * x0 + (1 - ap) * np.sqrt(1 - beta) / (1 - a) * x
            v = beta * (1 - ap) / (1 - a)
        else:
            mu, v = x0, 0.0
        w, target = (1 - ap) + ap * sig ** 2, np.sqrt(ap) * y
        lam = log_normal(target, mu, v + w) - (twist if twist is not None else 0.0)
        W = np.exp(lam - lam.max())
        mu = mu[rng.choice(K, K, p=W / W.sum())]
        if v > 0:
            pv = 1 / (1 / w + 1 / v)
            x = pv * (mu / v + target / w) + np.sqrt(pv) * rng.standard_normal((K, d))
        else:
            x = mu
        twist = log_normal(target, x, w)
    draws.append(x[rng.integers(K)])
draws = np.array(draws)
P = np.linalg.inv(np.linalg.inv(S) + np.eye(d) / sig ** 2)
m = P @ (y / sig ** 2)
err = np.mean((draws.mean(0) - m) ** 2 / (np.diag(P) / len(draws)))
print(f"d = {d}, K = {args.k}: mean error {err:.2f} Monte Carlo errors ({len(draws)} draws)")
