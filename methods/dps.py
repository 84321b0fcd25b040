"""DPS: Diffusion Posterior Sampling (Chung et al., ICLR 2023; methods.md §3.1).

Per step, the gradient of the reward loss l = -r w.r.t. x_t through the denoiser (one VJP), applied after
the sampler step:

    x_{t'} = S(x_t; x0_hat, eps, z) + zeta_t * grad_{x_t} r(x0_hat(x_t))

``normalise="none"``: constant zeta (the official code). ``normalise="loss"``: zeta_t = zeta / |r(x0_hat)|,
TFG's loss-normalised variant (methods.md §3.1, "TFG's re-implementation"), which is the DPS paper's
zeta'/||y - A x0_hat|| when r is a residual norm. Deviation from the official code: every norm is per
sample (the official code takes one norm over the whole batch, which couples samples; methods.md §5.2).
Cost per step: 1 forward with graph + 1 VJP (F+ + B).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import hp, is_zero, param, per_sample, x0_grad
from .policy import PolicyMethod, plain_step
from .search import Choice, LogRange


def grad_xt(ctx, obj, x: torch.Tensor):
    """(eps, x0_hat, r(x0_hat), grad_{x_t} r(x0_hat(x_t))): one forward and one VJP for the batch (``x0_grad``)."""
    return x0_grad(ctx, x, obj.value)


@dataclass(frozen=True)
class DPS(PolicyMethod):
    name = "dps"
    batchable = True
    batch_params = ("zeta",)
    strength = "zeta"
    summary = "DPS: x_{t'} = sampler step + zeta grad_{x_t} r(x0_hat(x_t)) (through the denoiser)"
    search_space = {"zeta": LogRange(1e-3, 10.0), "normalise": Choice(("none", "loss"))}
    zeta: float = param(0.05, "step size zeta on grad_{x_t} r (guidance strength; 0 = unguided)", min=0.0)
    normalise: str = param("none", "none: constant zeta; loss: zeta / |r(x0_hat)| per sample (TFG variant)",
                           choices=("none", "loss"))

    def step_cost(self):
        return (1, 1) if self.zeta > 0 else (1, 0)

    def step(self, ctx, obj, x, noise):
        if is_zero(self.zeta):
            return plain_step(ctx, x, noise)
        eps, x0, r, d = grad_xt(ctx, obj, x)
        z = noise()
        x_next = ctx.sampler.step(ctx.den.schedule, x, x0, eps, ctx.t, ctx.t_prev, z)
        zeta = hp(self.zeta, r)  # zeta / |r| written as torch evaluates a Python scalar over a tensor
        zeta = zeta if self.normalise == "none" else r.abs().clamp_min(1e-8).reciprocal() * zeta
        return x_next + per_sample(zeta * torch.ones_like(r), x) * d
