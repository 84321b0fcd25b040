"""FK steering: Feynman–Kac interacting particles, gradient-free (Singhal et al., "A General Framework for
Inference-time Scaling and Steering of Diffusion Models", ICML 2025, Algorithm 1 and its potentials;
inference-scaling.md §2).

K particles per returned sample are stepped by the base sampler (no guidance in the proposal). At the scheduled
steps s the particles are scored by r_s = r(x0_hat(x_s)) (Tweedie, free with the step's forward) and weighted by a
potential G_s (the paper's four choices):

    diff  G_s = exp(lam (r_s - r_{s_prev}))      (r_{s_prev}: the previous scheduled score, 0 before the first)
    max   G_s = exp(lam max_{u >= s} r_u)        (the running maximum over the scheduled steps so far)
    sum   G_s = exp(lam sum_{u >= s} r_u)
    rt    G_s = exp(lam r_s)

and resampled (systematic or multinomial; only when ESS / K < ess_threshold, 1 = at every scheduled step). Each
particle carries the product of the potentials along its ancestry, prod G; at the end the final correction
G_0 = exp(lam r(x_0)) / prod G makes the product of all potentials exp(lam r(x_0)) (FK steering's condition on the
potentials), so the weighted population targets p(x_0) exp(lam r(x_0)). The returned sample is one particle drawn
with probability ∝ its final weight (``final = "resample"``), or the highest-reward particle (``final = "max"``).

Schedule: steps i of the n-step grid with round(window_start·n) <= i <= round(window_end·n) and i at a multiple of
``interval`` from the window start (the official defaults, 100 steps: every 20 inside 20..80 -> 0.2, 0.8, 20).
Deviations from the official code: the weights of a scheduled step without resampling are carried to the next one
(the official code does not carry them; cf. its issue #12 on weight bookkeeping); the running max starts at the
first score (the official code starts it at 0).

The correction is exact only as K grows: ``max``, ``sum`` and ``rt`` resampled at many steps chase an over-tilted
intermediate target (∏G ~ exp(lam · #steps · r)) that few particles cannot correct back (measured on the Gaussian
chain of tests/golden.py, lam = 0.5: rt resampled at all 10 steps is still ~0.6 sd too high at K = 512; at 2
scheduled steps it is unbiased from K = 64).

Cost per returned sample: K forwards per step (one call on K·B rows), 0 VJPs, K reward calls per scheduled step
and K for the final correction. lam = 0: all weights equal, nothing is resampled and particle 1 (sample i's own
noise stream) is returned: the unguided sampler bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Method, param
from .search import Choice, LogRange
from .smc import RESAMPLING, Population, Stacked, take

__all__ = ["FKSteering"]

POTENTIALS = ("diff", "max", "sum", "rt")


@dataclass(frozen=True)
class FKSteering(Method):
    name = "fk-steering"
    strength = "lam"
    summary = "FK steering: K unguided particles, resampled by reward potentials (diff/max/sum/rt), final correction"
    search_space = {"lam": LogRange(0.1, 100.0), "potential": Choice(POTENTIALS)}
    k: int = param(4, "particles K per returned sample (cost K × unguided forwards)", min=1)
    lam: float = param(1.0, "inverse temperature lam of the target p(x) exp(lam r(x)) (0 = unguided)", min=0.0)
    potential: str = param("diff", "potential G_s: diff, max, sum or rt (Singhal et al.)", choices=POTENTIALS)
    resampling: str = param("systematic", "resampling scheme", choices=RESAMPLING)
    ess_threshold: float = param(1.0, "resample when ESS/K < this (1 = at every scheduled step, 0 = never)",
                                 min=0.0)
    interval: int = param(10, "steps between scheduled resampling steps", min=1)
    window_start: float = param(0.2, "first scheduled step, as a fraction of the sampler steps", min=0.0)
    window_end: float = param(0.8, "last scheduled step, as a fraction of the sampler steps", min=0.0)
    final: str = param("resample", "returned particle: drawn ∝ the corrected final weight, or the max reward",
                       choices=("resample", "max"))

    def step_cost(self):
        return self.k, 0

    def scheduled(self, n: int) -> list[int]:
        """The step indices (0 = the first step, at x_T) where potentials are applied and resampling may happen."""
        lo, hi = round(self.window_start * n), min(n - 1, round(self.window_end * n))
        return list(range(lo, hi + 1, self.interval))

    def log_potential(self, r: torch.Tensor, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log G_s, updated history) from the scores r [K, B] and the history (previous score, running max or
        running sum; ``rt`` keeps none)."""
        if self.potential == "diff":
            return self.lam * (r - hist), r
        if self.potential == "max":
            m = torch.maximum(hist, r)
            return self.lam * m, m
        if self.potential == "sum":
            s = hist + r
            return self.lam * s, s
        return self.lam * r, hist

    def sample(self, den, obj, noise, sampler):
        K, B = self.k, noise.batch
        stream = Stacked(noise, K) if K > 1 else noise
        pop = Population(noise, K, self.resampling, self.ess_threshold, salt=0xF4)
        grid = sampler.grid(den.schedule)
        sched = set(self.scheduled(len(grid)))
        start = -math.inf if self.potential == "max" else 0.0
        logw = torch.zeros(K, B, dtype=torch.float64)
        log_prod = torch.zeros(K, B, dtype=torch.float64)   # log of the product of potentials along the ancestry
        hist = torch.full((K, B), start, dtype=torch.float64)
        with torch.no_grad():
            x = stream()
            for i, (t, t_prev) in enumerate(grid):
                alpha, h = den.schedule.coeffs(t)
                eps = den.eps(x, t)
                x0 = (x - math.sqrt(h) * eps) / alpha
                if i in sched:
                    if self.lam > 0:
                        r = obj.value(x0).double().cpu().reshape(K, B)
                        logG, hist = self.log_potential(r, hist)
                        logw, log_prod = logw + logG, log_prod + logG
                    a, did = pop.resample(logw)
                    if did.any():
                        x, eps, x0 = take(x, a), take(eps, a), take(x0, a)
                        log_prod, hist = take(log_prod, a.cpu()), take(hist, a.cpu())
                        logw = torch.where(did.cpu().unsqueeze(0), torch.zeros_like(logw), logw)
                x = sampler.step(den.schedule, x, x0, eps, t, t_prev, stream())
            obj.info.update(pop.metrics())
            if self.lam == 0 or K == 1:
                return x[:B]
            r0 = obj.value(x).double().cpu().reshape(K, B)  # the final correction G_0 = exp(lam r(x_0)) / prod G
            pick = r0.argmax(0) if self.final == "max" else pop.pick(logw + self.lam * r0 - log_prod)
        return x.reshape(K, B, *x.shape[1:])[pick.to(x.device), torch.arange(B, device=x.device)]
