"""MPGD: Manifold Preserving Guided Diffusion (He et al., ICLR 2024; methods.md §3.5).

The gradient is taken w.r.t. x0_hat only (no backward through the denoiser: 0 VJPs), x0 is moved and eps
kept (the "x0-swap"):

    x0' = x0_hat + (c / sqrt(abar_{t'})) grad_{x0} r(x0_hat),    x_{t'} = S(x_t; x0', eps, z)

so the net shift of x_{t'} is c * grad r under DDIM (the 1/sqrt(abar') cancels). ``step_rule="rms"`` uses
the faces code's adaptive c / RMS(grad r) (per sample), so the shift has RMS c. The DDPM posterior step has
no eps slot; under ``--sampler ddpm`` the x0-swap's DDIM displacement sqrt(abar')(x0' - x0_hat) is added
to the plain step instead. Per-sample norms throughout (the official code's batch norm couples samples).
Cost per step: 1 forward (F) + a reward gradient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import bnorm2, hp, is_zero, param, per_sample
from .policy import PolicyMethod, plain_step
from .sampling import x0_from_eps
from .search import Choice, LogRange


@dataclass(frozen=True)
class MPGD(PolicyMethod):
    name = "mpgd"
    batchable = True
    batch_params = ("c",)
    strength = "c"
    summary = "MPGD: x0-swap x0_hat + c/sqrt(abar') grad_{x0} r, eps kept (no denoiser VJP)"
    search_space = {"c": LogRange(1e-3, 10.0), "step_rule": Choice(("constant", "rms"))}
    c: float = param(0.05, "step size c (net shift of x_{t'} = c grad r; guidance strength)", min=0.0)
    step_rule: str = param("constant", "constant c, or rms: c / RMS(grad r) per sample",
                           choices=("constant", "rms"))

    def step(self, ctx, obj, x, noise):
        if is_zero(self.c):
            return plain_step(ctx, x, noise)
        eps = ctx.den.eps(x, ctx.t)
        x0 = x0_from_eps(x, eps, ctx.alpha, ctx.h)
        _, g = obj.value_and_grad(x0)
        sqrt_abar_prev = math.sqrt(ctx.den.schedule.abar(ctx.t_prev))
        c = hp(self.c, x)
        if self.step_rule == "rms":  # c / RMS as torch evaluates a Python scalar over a tensor
            rms = (bnorm2(g) / g[0].numel()).sqrt().clamp_min(1e-12)
            c = per_sample(rms.reciprocal() * hp(self.c, rms), x)
        delta0 = c * g / sqrt_abar_prev
        z = noise()
        if ctx.sampler.kind == "ddim":
            return ctx.sampler.step(ctx.den.schedule, x, x0 + delta0, eps, ctx.t, ctx.t_prev, z)
        return ctx.sampler.step(ctx.den.schedule, x, x0, eps, ctx.t, ctx.t_prev, z) + sqrt_abar_prev * delta0
