"""A plain numpy re-derivation of one GGDM look-ahead round on the subspace oracle (issue 14, item 3): the yardstick
for the per-step overhead of the torch path (methods/lookahead.py through ``run_rounds``).

On the subspace task the oracle is linear, eps*(x_t) = sqrt(h) P x_t + (I - P) x_t / sqrt(h), so Tweedie gives
x0_hat = alpha P x_t, and the look-ahead direction grad_{x_t}(g . x0_hat) = alpha P g needs no autograd. Per step:

    eps = sqrt(h) P x + (x - P x) / sqrt(h),   x0 = (x - sqrt(h) eps) / alpha,   d = alpha P g
    beta = beta_coef (alpha^2 / 2) / (alpha^2 sigma^2 + h |d|^2),   G = 2 beta (y - g . x0) d
    eps' = eps - sqrt(h) G,   x0' = (x - sqrt(h) eps') / alpha,   x <- DDPM posterior step (x0', x, z)

with the same per-sample noise as the torch run, so both give the same samples (up to float32 rounding).
``lookahead_round_torch`` is the same loop op for op in torch: what eager torch costs for this maths at all.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def lookahead_round_numpy(P: np.ndarray, abar: list[float], grid: list[tuple[int, int]], x_T: np.ndarray,
                          z: np.ndarray, g: np.ndarray, y: np.ndarray, sigma: float = 0.1,
                          beta_coef: float = 1.0) -> np.ndarray:
    """One guided round: ``x_T`` [B, D], ``z`` [steps, B, D] (one draw per step), ``g`` [B, D] the reward gradient
    at the anchor, ``y`` [B] the targets; float32 arrays. Returns x_0 [B, D]."""
    x = x_T
    Pg = g @ P  # P is symmetric
    for (t, t_prev), zk in zip(grid, z):
        ab, ab_prev = abar[t], (1.0 if t_prev < 0 else abar[t_prev])
        alpha, h = math.sqrt(ab), 1.0 - ab
        sh = math.sqrt(h)
        Px = x @ P
        eps = sh * Px + (x - Px) / sh
        x0 = (x - sh * eps) / alpha
        d = alpha * Pg
        beta = beta_coef * (alpha**2 / 2) / (alpha**2 * sigma**2 + h * np.einsum("ij,ij->i", d, d))
        G = (2 * beta * (y - np.einsum("ij,ij->i", g, x0)))[:, None] * d
        eps = eps - sh * G
        x0 = (x - sh * eps) / alpha
        a_step = ab / ab_prev
        c1 = math.sqrt(ab_prev) * (1 - a_step) / (1 - ab)
        c2 = math.sqrt(a_step) * (1 - ab_prev) / (1 - ab)
        x = c1 * x0 + c2 * x
        if t_prev >= 0:
            x = x + math.sqrt((1 - a_step) * (1 - ab_prev) / (1 - ab)) * zk
    return x


def lookahead_round_torch(P, abar, grid, x_T, z, g, y, sigma: float = 0.1, beta_coef: float = 1.0):
    """``lookahead_round_numpy`` op for op in eager torch (float32 tensors), every schedule scalar made a 0-dim tensor
    before the loop: the least time torch's per-op dispatch allows for this maths, the floor of any torch path."""
    def c(v):
        return torch.tensor(v, dtype=torch.float32)

    coeffs = []
    for t, t_prev in grid:
        ab, ab_prev = abar[t], (1.0 if t_prev < 0 else abar[t_prev])
        alpha, h = math.sqrt(ab), 1.0 - ab
        a_step = ab / ab_prev
        coeffs.append((c(math.sqrt(h)), c(1 / math.sqrt(h)), c(alpha), c(beta_coef * alpha**2 / 2),
                       c(alpha**2 * sigma**2), c(h), c(math.sqrt(ab_prev) * (1 - a_step) / (1 - ab)),
                       c(math.sqrt(a_step) * (1 - ab_prev) / (1 - ab)),
                       c(math.sqrt((1 - a_step) * (1 - ab_prev) / (1 - ab))) if t_prev >= 0 else None))
    two, x, Pg = c(2.0), x_T, g @ P
    for (sh, rsh, alpha, b_num, b_den, h, c1, c2, c3), zk in zip(coeffs, z):
        Px = x @ P
        eps = sh * Px + (x - Px) * rsh
        x0 = (x - sh * eps) / alpha
        d = alpha * Pg
        beta = b_num / (b_den + h * (d * d).sum(1))
        G = (two * beta * (y - (g * x0).sum(1)))[:, None] * d
        eps = eps - sh * G
        x0 = (x - sh * eps) / alpha
        x = c1 * x0 + c2 * x
        if c3 is not None:
            x = x + c3 * zk
    return x
