"""Look-ahead loss guidance G_loss (GGDM, Guo et al. 2024, "v2"; ggdm.md §3.1, §7.2).

    G_loss(x_t, t) = -beta_t grad_{x_t} (y - g^T x0_hat(x_t))^2
                   = 2 beta_t (y - g^T x0_hat) grad_{x_t}(g^T x0_hat)
    beta_t = (alpha_t^2 / 2) / (alpha_t^2 sigma^2 + h_t ||grad_{x_t}(g^T x0_hat)||^2)

The gradient goes through the denoiser (1 forward with graph + 1 VJP per step, one backward for the
whole batch). For Gaussian subspace data this beta_t is exactly the conditional-score coefficient, and
the direction alpha P g never leaves the subspace.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import bnorm2, per_sample, x0_grad
from .ggdm import GGDMGuidance
from .sampling import scalar
from .search import LogRange


@dataclass(frozen=True)
class LookAhead(GGDMGuidance):
    name = "look-ahead"
    batchable = True
    batch_params = ("delta", "beta_coef")
    summary = "GGDM look-ahead guidance G_loss: gradient of (y - g.x0_hat)^2 through the denoiser"
    search_space = {"delta": LogRange(0.02, 200.0), "beta_coef": LogRange(0.01, 30.0)}

    def step_cost(self):
        return 1, 1

    def guided_eps(self, ctx, obj, x):
        g, y = obj.g, obj.target(self.delta)
        eps, _, gx0, d = x0_grad(ctx, x, g)
        # (alpha^2 / 2) / (...) in torch's order for a float over a tensor (reciprocal, then times the float)
        denom = scalar(ctx.alpha**2 * self.sigma**2, d) + scalar(ctx.h, d) * bnorm2(d)
        beta = self.beta_t(denom.reciprocal() * scalar(ctx.alpha**2 / 2, d))
        G = per_sample(scalar(2.0, d) * beta * (y - gx0), x) * d
        return eps - scalar(math.sqrt(ctx.h), G) * G
