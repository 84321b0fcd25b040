"""SVDD-PM: soft value-based decoding (Li et al., "Derivative-Free Guidance in Continuous and Discrete Diffusion
Models with Soft Value-Based Decoding", 2024, Algorithm 1 with the posterior-mean value, SVDD-PM;
inference-scaling.md §4).

At every step t -> t' draw M candidates x_{t'}^(m) ~ p(. | x_t) from the base sampler (one forward at x_t shared
by all M), value each by v_m = r(x0_hat(x_{t'}^(m))) (Tweedie at t': the forward the next step needs anyway), and
keep one: the argmax (alpha = 0, the paper's default; ``lam = None``) or m with probability ∝ exp(v_m / alpha) =
exp(lam v_m) (soft; lam = 1/alpha). On the last step the candidates coincide (no noise is added), so nothing is
chosen there.

Candidate 1 uses sample i's own noise stream, candidate m > 1 a stream seeded from (sample i's seed, m), and the
soft draw uses sample i's own generator: the returned sample depends only on its own seed. lam = 0 keeps candidate
1 at every step: the unguided sampler bit for bit.

Cost per returned sample: 1 forward at x_T, then M forwards (one call on M·B rows) and M reward calls per step
except the last: 1 + M (n - 1) forwards, M (n - 1) reward calls, 0 VJPs (lam = 0: no reward calls).
Diagnostics (record ``metrics``): ``ess`` / ``ess_min`` of the selection weights exp(lam v) (greedy: 1/M, a point
mass), ``resamples`` = selections made, ``unique_ancestors`` = 1 (one path survives by construction).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Method, param
from .search import IntRange, LogRange
from .smc import Population, Stacked, normalised_ess, take

__all__ = ["SVDD"]


@dataclass(frozen=True)
class SVDD(Method):
    name = "svdd"
    strength = "lam"
    summary = "SVDD-PM: M candidates per step, keep the best r(x0_hat) (greedy) or pick ∝ exp(lam r(x0_hat))"
    search_space = {"lam": LogRange(0.1, 100.0), "m": IntRange(2, 8)}
    m: int = param(4, "candidates M per step (cost M forwards per step; 1 = unguided)", min=1)
    lam: float | None = param(None, "None: keep the best candidate (alpha = 0); a number: pick ∝ exp(lam v) "
                              "(alpha = 1/lam; 0 = candidate 1, unguided)", min=0.0)

    def expected_cost(self, steps):
        return 1 + self.m * (steps - 1), 0

    def select(self, v: torch.Tensor, pop: Population) -> torch.Tensor:
        """The kept candidate [B] from the values v [M, B]; records the ESS of the selection weights."""
        M, B = v.shape
        if self.lam is None:
            pop.ess.append(torch.full((B,), 1.0 / M, dtype=torch.float64))
            return v.argmax(0)
        logw = self.lam * v.double()
        pop.ess.append(normalised_ess(logw))
        return pop.pick(logw)

    def sample(self, den, obj, noise, sampler):
        M, B = self.m, noise.batch
        stream = Stacked(noise, M) if M > 1 else noise
        pop = Population(noise, M, salt=0x5DD)
        sched = den.schedule
        grid = sampler.grid(sched)
        with torch.no_grad():
            x = stream()[:B]
            eps = den.eps(x, grid[0][0])
            for i, (t, t_prev) in enumerate(grid):
                alpha, h = sched.coeffs(t)
                x0 = (x - math.sqrt(h) * eps) / alpha
                rep = (M,) + (1,) * (x.ndim - 1)
                cand = sampler.step(sched, x.repeat(rep), x0.repeat(rep), eps.repeat(rep), t, t_prev, stream())
                if t_prev < 0:
                    x = cand[:B]
                    break
                eps_c = den.eps(cand, t_prev)
                if self.lam == 0 or M == 1:
                    pick = torch.zeros(B, dtype=torch.long)
                else:
                    a_p, h_p = sched.coeffs(t_prev)
                    v = obj.value((cand - math.sqrt(h_p) * eps_c) / a_p).double().cpu().reshape(M, B)
                    pick = self.select(v, pop)
                    pop.events += 1
                a = pick.unsqueeze(0).expand(M, B).to(x.device)
                x, eps = take(cand, a)[:B], take(eps_c, a)[:B]
        obj.info.update(pop.metrics(), unique_ancestors=1.0)
        return x

