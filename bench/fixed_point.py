"""Where oracle look-ahead Algorithm 1 settles on subspace / f1 (10 - (theta.x - 3)^2): the noise-free fixed point
f* and the stochastic plateau of chains that draw new noise every round (issue 12, item 7; ggdm.md §7.2).

With the exact score the look-ahead term is the exact conditional score of y = g.x0 + N(0, sigma^2), and
g = grad f(z) = 2 (3 - s) theta is parallel to theta, so a chain is one-dimensional in s = theta.z. With
a2 = |P theta|^2, gamma = 2 (3 - s) and y = gamma s + delta, round k + 1 draws (``posterior_law``)

    s' ~ N(m(s), v(s)),  m(s) = a2 gamma y / (sigma^2 + a2 gamma^2),  v(s) = a2 sigma^2 / (sigma^2 + a2 gamma^2).

Its noise-free fixed point m(s*) = s* is s* = 6 a2 / (2 a2 + lambda), lambda = sigma^2 / delta, f* = 10 - (3 - s*)^2.
The batch mean of the reward is E[10 - (s - 3)^2] under the chain's stationary law instead: below f* by Var s
(the chain contracts slowly, m'(s*) ~ 0.93 at delta = 0.2, so Var s ~ v / (1 - m'^2)) and by the bias of E s.
``sampler_law`` is the same round on the discrete DDPM grid the runner uses (the oracle makes each step affine
in u = e.x, e = P theta / |P theta|): the exact Gaussian law of the code, discretisation included (its mean map
has the same fixed point; only v differs slightly). theta2, delta = 0.2, T = 200: f* = 5.934, stochastic plateau
5.915 (posterior law: 5.914), measured 5.917 ± 0.009 (README). Fresh noise only: with ``noise = "reuse"`` a
chain's rounds share their noise and are no longer a Markov chain in s alone.

The plateau is computed two independent ways: Monte-Carlo chains (``plateau_mc``) and the stationary density
of the kernel on a grid (``plateau_grid``, a linear solve); ``plateau_spread`` is the sampling spread of the
measured statistic (late-round mean of a B-sample batch: autocorrelated rounds, so wider than the SE of rounds).
"""
from __future__ import annotations

import math

import numpy as np


def f1(s):
    return 10 - (np.asarray(s) - 3) ** 2


def noise_free(a2: float, delta: float, sigma: float = 0.1) -> tuple[float, float]:
    """(s*, f*) of the noise-free recursion m(s*) = s* (ggdm.md §7.2)."""
    lam = sigma**2 / delta
    s = 6 * a2 / (2 * a2 + lam)
    return s, float(f1(s))


def posterior_law(a2: float, delta: float, sigma: float = 0.1):
    """s -> (mean, var) of the next round's s: the exact posterior of the Gaussian data model (continuous time)."""
    def law(s):
        gam = 2 * (3 - s)
        q = sigma**2 + a2 * gam**2
        return a2 * gam * (gam * s + delta) / q, a2 * sigma**2 / q
    return law


def sampler_law(a2: float, delta: float, sigma: float = 0.1, T: int = 200, steps: int | None = None):
    """s -> (mean, var) of the next round's s through the runner's DDPM grid with the oracle and the look-ahead
    beta_t rule; x_T ~ N(0, I), no noise on the last step (methods.sampling.ddpm_step)."""
    from methods.sampling import Sampler, Schedule

    sched = Schedule(T)
    grid = Sampler(steps=steps).grid(sched)
    a = math.sqrt(a2)

    def law(s):
        s = np.asarray(s, dtype=np.float64)
        gam, y = 2 * (3 - s), 2 * (3 - s) * s + delta
        cu, cy, var = np.ones_like(s), np.zeros_like(s), np.zeros_like(s)  # u = cu u_T + cy y + N(0, var)
        for t, tp in grid:
            ab, abp = sched.abar(t), sched.abar(tp)
            al, h = math.sqrt(ab), 1 - ab
            beta = 1 / (2 * (sigma**2 + h * a2 * gam**2))  # (alpha^2/2) / (alpha^2 sigma^2 + h |d|^2), d = gam alpha a e
            k_u, k_y = al - 2 * beta * a2 * gam**2 * h * al, 2 * beta * gam * a * h  # x0_hat.e = k_u u + k_y y
            ast = ab / abp
            c1, c2 = math.sqrt(abp) * (1 - ast) / (1 - ab), math.sqrt(ast) * (1 - abp) / (1 - ab)
            A = c1 * k_u + c2
            cu, cy, var = A * cu, A * cy + c1 * k_y, A * A * var
            if tp >= 0:
                var = var + (1 - ast) * (1 - abp) / (1 - ab)
        return a * cy * y, a2 * (cu**2 + var)
    return law


def plateau_mc(law, chains: int = 20000, rounds: int = 600, burn: int = 300, seed: int = 0) -> dict:
    """Monte-Carlo chains from s = 0: mean reward over rounds > burn, with Var s and E s at the end."""
    rng = np.random.default_rng(seed)
    s, acc = np.zeros(chains), []
    for k in range(rounds):
        m, v = law(s)
        s = m + np.sqrt(v) * rng.standard_normal(chains)
        if k >= burn:
            acc.append(f1(s).mean())
    return {"reward": float(np.mean(acc)), "mean_s": float(s.mean()), "var_s": float(s.var())}


def plateau_grid(law, lo: float = 0.6, hi: float = 1.4, n: int = 801) -> dict:
    """Stationary law of the kernel on a uniform grid of s (Gaussian transition densities, rows normalised):
    the solution of p K = p, sum p = 1. E[f1], E s, Var s. Independent of ``plateau_mc`` (no random numbers)."""
    s = np.linspace(lo, hi, n)
    m, v = law(s)
    K = np.exp(-(s[None, :] - m[:, None]) ** 2 / (2 * v[:, None]))
    K /= K.sum(1, keepdims=True)
    A, b = K.T - np.eye(n), np.zeros(n)
    A[-1], b[-1] = 1.0, 1.0  # one balance equation is redundant: replace it by the normalisation
    p = np.linalg.solve(A, b)
    es = float(p @ s)
    return {"reward": float(p @ f1(s)), "mean_s": es, "var_s": float(p @ (s - es) ** 2)}


def plateau_spread(law, batch: int = 32, rounds: int = 1000, reps: int = 400, seed: int = 1) -> dict:
    """Mean and SD, over ``reps`` simulated runs of ``batch`` chains, of the measured statistic: the mean of the
    batch-mean reward over rounds > rounds / 2."""
    rng = np.random.default_rng(seed)
    s, acc = np.zeros((reps, batch)), np.zeros(reps)
    for k in range(1, rounds + 1):
        m, v = law(s)
        s = m + np.sqrt(v) * rng.standard_normal(s.shape)
        if k > rounds // 2:
            acc += f1(s).mean(1)
    acc /= rounds - rounds // 2
    return {"mean": float(acc.mean()), "sd": float(acc.std(ddof=1))}
