"""Forward-only guidance: Graikos, Jojic & Samaras, "Fast constrained sampling in pre-trained diffusion
models" (arXiv 2410.18804; methods.md §3.10).

The Jacobian-transpose product of DPS is replaced by the Jacobian product J_t e, J_t = d x0_hat / d x_t,
computed by a finite difference (forward passes only, 0 VJPs through the denoiser). Per step, K inner moves:

    e   = grad_{x0} r(x0_hat),  h_e = h / ||e||_inf                          (reward gradient only)
    d   = (x0_hat(x_t + h_e e) - x0_hat(x_t)) / h_e  ~ J_t e                          (1 forward)
    d  <- d / ||d||_inf  ("inf", the notebooks)   or   d / max(1, ||d||_inf)  ("clip", default)
    x_t <- x_t + lr_k d,   eps, x0_hat recomputed at the moved x_t                    (1 forward)

with lr_k linear from lr to lr * lr_decay (the notebooks: 0.5 -> 0.1, h = 0.005, K = 5; our default h = 0.02
keeps the float32 rounding that the difference quotient amplifies ~4x smaller), then the plain
sampler step from the moved x_t. All norms are per sample. Cost per step: 1 + 2K forwards, 0 VJPs.

Why "clip" is the default: with "inf" every move has inf-norm lr_k however close x0_hat is to the reward's
optimum, so near an interior optimum (e.g. f1: r = 10 - (theta.x - 3)^2) the direction flips sign with
full length on a rounding error; the trajectory then depends on float noise (not batch-size independent to
1e-4). "clip" is the notebooks' rule far from the optimum (||J e||_inf >= 1) and shrinks the move near it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .base import hp, is_zero, param, per_sample
from .policy import PolicyMethod, plain_step
from .search import LogRange, Range


def inf_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample ||v||_inf, broadcastable against v."""
    return per_sample(v.flatten(1).abs().amax(1), v)


def jvp_fd(den, x: torch.Tensor, t: int, e: torch.Tensor, fd_h: float, x0: torch.Tensor) -> torch.Tensor:
    """Forward finite difference ~ J_t e, J_t = d x0_hat / d x_t, with a probe of inf-norm fd_h along e:
    (x0_hat(x + h_e e) - x0_hat(x)) / h_e, h_e = fd_h / ||e||_inf per sample. One denoiser forward."""
    alpha, h = den.schedule.coeffs(t)
    h_e = fd_h / inf_norm(e).clamp_min(1e-12)
    x_plus = x + h_e * e
    x0_plus = (x_plus - math.sqrt(h) * den.eps(x_plus, t)) / alpha
    return (x0_plus - x0) / h_e


@dataclass(frozen=True)
class ForwardOnly(PolicyMethod):
    name = "forward-only"
    batchable = True
    batch_params = ("lr", "lr_decay")
    strength = "lr"
    summary = "Graikos et al.: x_t += lr J e by finite differences (forwards only), K inner moves per step"
    search_space = {"lr": LogRange(1e-3, 3.0), "lr_decay": Range(0.05, 1.0)}
    lr: float = param(0.02, "first inner step size (inf-norm of the move of x_t; guidance strength)", min=0.0)
    lr_decay: float = param(0.2, "last inner step size = lr * lr_decay (linear in between)", min=0.0)
    K: int = param(5, "inner updates per step (each: 2 forwards)", min=1)
    fd_h: float = param(0.02, "finite-difference probe: inf-norm of the move along e (notebooks: 0.005)", min=1e-8)
    normalise: str = param("clip", "inf: d / ||d||_inf (notebooks); clip: d / max(1, ||d||_inf)",
                           choices=("clip", "inf"))

    def step_cost(self):
        return (1 + 2 * self.K, 0) if self.lr > 0 else (1, 0)

    def lr_schedule(self) -> list:
        """The K inner step sizes, linear from lr to lr * lr_decay: floats, or in a batched group per-sample
        float64 [B] tensors (numpy's linspace of each distinct (lr, lr_decay), so every sample gets its own
        run's floats exactly)."""
        if not isinstance(self.lr, torch.Tensor) and not isinstance(self.lr_decay, torch.Tensor):
            return np.linspace(self.lr, self.lr * self.lr_decay, self.K).tolist()
        cached = self.__dict__.get("_lr_schedule")
        if cached is None:
            lr, dec = (torch.as_tensor(v, dtype=torch.float64) for v in (self.lr, self.lr_decay))
            pairs = torch.stack(torch.broadcast_tensors(lr, dec), 1)
            uniq, inv = torch.unique(pairs, dim=0, return_inverse=True)
            table = torch.tensor(np.stack([np.linspace(a, a * b, self.K) for a, b in uniq.tolist()], 1))
            cached = list(table[:, inv])  # K tensors of [B]
            object.__setattr__(self, "_lr_schedule", cached)
        return cached

    def step(self, ctx, obj, x, noise):
        if is_zero(self.lr):
            return plain_step(ctx, x, noise)
        sqrt_h = math.sqrt(ctx.h)
        eps = ctx.den.eps(x, ctx.t)
        x0 = (x - sqrt_h * eps) / ctx.alpha
        for lr_k in self.lr_schedule():
            _, e = obj.value_and_grad(x0)
            d = jvp_fd(ctx.den, x, ctx.t, e, self.fd_h, x0)
            dn = inf_norm(d)
            d = d / (dn.clamp_min(1e-12) if self.normalise == "inf" else dn.clamp_min(1.0))
            x = x + hp(lr_k, d) * d
            eps = ctx.den.eps(x, ctx.t)
            x0 = (x - sqrt_h * eps) / ctx.alpha
        return ctx.sampler.step(ctx.den.schedule, x, x0, eps, ctx.t, ctx.t_prev, noise())
