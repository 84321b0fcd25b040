"""Polyak-type step size of Shen et al. 2024, "Understanding and Improving Training-free Loss-based Diffusion
Guidance" (NeurIPS 2024; methods.md §3.9), on FreeDoM's stepping with time travel and cut-off.

    x_{t'} = S(x_t; x0_hat, eps, z) + rho_t grad_{x_t} r,   rho_t = rho ||eps|| / ||grad_{x_t} r||^2

per sample (the official code's norms run over the whole batch; ours are per sample, so samples do not couple),
and rho_t = 0 where ||grad|| < 1e-6 (the official code intends this but leaves the factor undefined there).
Random augmentation (Shen et al. Algorithm 1: the reward averaged over M DiffAugment copies of x0_hat) is an
image operation: ``augment`` > 0 raises a clear error on the vector tasks until an image task exists.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import bnorm2, hp, param, per_sample
from .freedom import TimeTravel
from .search import LogRange


@dataclass(frozen=True)
class Polyak(TimeTravel):
    name = "polyak"
    batchable = True
    batch_params = ("rho",)
    strength = "rho"
    summary = "Shen et al. Polyak step rho ||eps|| / ||grad||^2 on the x_t-gradient (FreeDoM stepping)"
    search_space = {"rho": LogRange(1e-5, 3e-2)}
    rho: float = param(3e-4, "Polyak scale rho (guidance strength; 0 = unguided; unstable from ~1e-3)", min=0.0)
    r: int = param(1, "time-travel repetitions inside the window (1 = off)", min=1)
    augment: int = param(0, "random augmentation copies M (image tasks only; 0 = off)", min=0)

    def step(self, ctx, obj, x, noise):
        if self.augment > 0 and x.ndim < 4:
            raise ValueError(f"polyak: augment={self.augment} needs an image task ([B, C, H, W] samples); "
                             f"this task's samples have shape {tuple(x.shape[1:])}. Use augment=0.")
        if self.augment > 0:
            raise NotImplementedError("polyak: random augmentation arrives with the first image task")
        return super().step(ctx, obj, x, noise)

    def step_size(self, ctx, x, eps, r, d):
        g2 = bnorm2(d)
        rho = torch.where(g2.sqrt() < 1e-6, torch.zeros_like(g2), hp(self.rho, g2) * bnorm2(eps).sqrt() / g2.clamp_min(1e-12))
        return per_sample(rho, x)
