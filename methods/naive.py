"""Naive gradient guidance G (GGDM, Guo et al. 2024, "v1"; ggdm.md §3.2).

    G(x_t, t) = beta_t (y - g^T x0_hat(x_t)) g,    beta_t = alpha_t / (sigma^2 + h_t ||g||^2)

The direction is the raw ambient reward gradient g: nothing passes through the denoiser's Jacobian
(1 forward, 0 VJP per step). It is the exact conditional score only for full-rank N(mu, I) data, so on
subspace data its off-support part (I - P) g pushes samples off the support.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import bdot, bnorm2, per_sample
from .ggdm import GGDMGuidance
from .sampling import scalar, x0_from_eps
from .search import LogRange


@dataclass(frozen=True)
class Naive(GGDMGuidance):
    name = "naive"
    batchable = True
    batch_params = ("delta", "beta_coef")
    summary = "GGDM naive gradient guidance G: score += beta_t (y - g.x0_hat) g"
    search_space = {"delta": LogRange(0.02, 200.0), "beta_coef": LogRange(0.01, 100.0)}

    def guided_eps(self, ctx, obj, x):
        eps = ctx.den.eps(x, ctx.t)
        g, y = obj.g, obj.target(self.delta)
        x0 = x0_from_eps(x, eps, ctx.alpha, ctx.h)
        denom = scalar(self.sigma**2, g) + scalar(ctx.h, g) * bnorm2(g)  # alpha / denom as torch does float / tensor
        beta = self.beta_t(denom.reciprocal() * scalar(ctx.alpha, g))
        G = per_sample(beta * (y - bdot(g, x0)), x) * g
        return eps - scalar(math.sqrt(ctx.h), G) * G
