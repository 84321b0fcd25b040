"""Naive gradient guidance G (GGDM, Guo et al. 2024, "v1"; ggdm.md §3.2).

    G(x_t, t) = beta_t (y - g^T x0_hat(x_t)) g,    beta_t = alpha_t / (sigma^2 + h_t ||g||^2)

The direction is the raw ambient reward gradient g: nothing passes through the denoiser's Jacobian
(1 forward, 0 VJP per step). It is the exact conditional score only for full-rank N(mu, I) data, so on
subspace data its off-support part (I - P) g pushes samples off the support.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import bdot, bnorm2, param, per_sample
from .policy import PolicyMethod


@dataclass(frozen=True)
class Naive(PolicyMethod):
    name = "naive"
    strength = "beta_coef"
    summary = "GGDM naive gradient guidance G: score += beta_t (y - g.x0_hat) g"
    delta: float = param(0.2, "target increment delta: y = g.z_prev + delta (GGDM 'interval')", min=0.0)
    sigma: float = param(0.1, "noise level of the observation model y = g.x0 + N(0, sigma^2)", min=0.0)
    beta: float | None = param(None, "constant beta_t; None = the theoretical rule", min=0.0)
    beta_coef: float = param(1.0, "multiplies beta_t (guidance strength; 0 = unguided)", min=0.0)

    def guided_eps(self, ctx, obj, x):
        eps = ctx.den.eps(x, ctx.t)
        g, y = obj.g, obj.target(self.delta)
        x0 = (x - math.sqrt(ctx.h) * eps) / ctx.alpha
        if self.beta is None:
            beta = ctx.alpha / (self.sigma**2 + ctx.h * bnorm2(g))
        else:
            beta = self.beta * x.new_ones(x.shape[0])
        G = per_sample(self.beta_coef * beta * (y - bdot(g, x0)), x) * g
        return eps - math.sqrt(ctx.h) * G
