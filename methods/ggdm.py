"""Shared hyperparameters of the two GGDM guidance terms (Guo et al. 2024; ggdm.md §3).

Both guide toward the target y = g^T z_prev + delta of the observation model y = g^T x0 + N(0, sigma^2);
beta_t is the reference rule of each term unless a constant ``beta`` is given, and ``beta_coef`` scales it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import hp, param
from .policy import PolicyMethod


@dataclass(frozen=True)
class GGDMGuidance(PolicyMethod):
    strength = "beta_coef"
    delta: float = param(0.2, "target increment delta: y = g.z_prev + delta (GGDM 'interval')", min=0.0)
    sigma: float = param(0.1, "noise level of the observation model y = g.x0 + N(0, sigma^2)", min=0.0)
    beta: float | None = param(None, "constant beta_t; None = the theoretical rule", min=0.0)
    beta_coef: float = param(1.0, "multiplies beta_t (guidance strength; 0 = unguided)", min=0.0)

    def beta_t(self, rule: torch.Tensor) -> torch.Tensor:
        """beta_coef * (the constant beta if given, else the per-sample reference rule)."""
        return hp(self.beta_coef, rule) * (rule if self.beta is None else torch.full_like(rule, self.beta))
