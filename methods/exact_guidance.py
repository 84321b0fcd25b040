"""Exact guidance: the closed-form tilted score at every step (inference-scaling.md §5; the h-transform of the tilt).

The target is pi_lam(x0) ∝ p(x0) exp(lam r(x0)). Its noised marginal at t is p_t(x_t) h_t(x_t) / Z with
h_t(x_t) = E[exp(lam r(x0)) | x_t], so the tilted score is the data score plus ∇ log h_t:

    eps_lam(x_t, t) = eps*(x_t, t) − sqrt(h) ∇ log h_t(x_t).

eps* is the exact oracle's forward (one per step, counted as unguided); ∇ log h_t comes from the reward's closed form
(``reward.tilted(lam).score_shift(x, alpha, h)``, tasks/tilt.py): no VJP, no reward evaluation. The sampler's own
step then draws from the tilt up to its discretisation error: the best any guidance method can do at that lam.
Only with the exact oracle (a trained network's score is not the data score the h-transform corrects) and rewards
with a closed form; ``unsupported`` states why not, and the suite runner rejects such runs before they start.
``lam = 0`` is the unguided sampler bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import PerStepMethod, param
from .search import LogRange

__all__ = ["ExactGuidance"]


def _is_network(den) -> bool:
    inner = getattr(den, "inner", den)
    return any(True for _ in getattr(inner, "parameters", lambda: [])())


@dataclass(frozen=True)
class ExactGuidance(PerStepMethod):
    name = "exact-guidance"
    strength = "lam"
    summary = "closed-form tilted score (h-transform of p(x) exp(lam r(x))) at every step; oracle tasks only"
    search_space = {"lam": LogRange(0.1, 100.0)}
    lam: float = param(1.0, "inverse temperature of the target p(x) exp(lam r(x)) (0 = unguided)", min=0.0)

    @staticmethod
    def unsupported(reward, denoiser: str) -> str | None:
        """Why this method cannot run with ``reward`` and the denoiser kind ``denoiser`` (None: it can)."""
        if getattr(reward, "tilted", None) is None:
            return (f"exact-guidance needs a reward with a closed-form tilt (subspace f1-theta1/f1-theta2, sphere "
                    f"linear); {getattr(reward, 'name', reward)!r} has none")
        if denoiser != "oracle":
            return (f"exact-guidance corrects the exact data score and needs --denoiser oracle, not {denoiser!r} "
                    "(a trained network's score is not the score the closed-form h-transform is exact for)")
        return None

    def guided_eps(self, ctx, obj, x):
        eps = ctx.den.eps(x, ctx.t)
        if self.lam == 0:
            return eps
        tilted = getattr(obj.reward, "tilted", None)
        why = self.unsupported(obj.reward, "trained" if _is_network(ctx.den) else "oracle")
        if why:
            raise ValueError(why)
        shift = tilted(self.lam).score_shift(x, ctx.alpha, ctx.h)
        return (eps.double() - math.sqrt(ctx.h) * shift.to(eps.device)).to(eps.dtype)
