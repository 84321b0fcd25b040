"""Universal Guidance (Bansal et al., 2023; methods.md §3.2): forward + backward guidance + self-recurrence.

Per repetition j = 1..k of a grid step t -> t' (rewards are "higher is better", loss l = -r):

    forward   eps_hat = eps - s sqrt(1 - abar_t) grad_{x_t} r(x0_hat(x_t))        (eps-swap, 1 VJP)
              x0 = x0_hat(eps_hat)
    backward  Delta: m plain gradient-ascent steps Delta <- Delta + s lr_b grad r(x0 + Delta) in x0 space,
              x0* = x0 + Delta, eps* = (x_t - sqrt(abar_t) x0*) / sqrt(1 - abar_t)   (eps-recompute)
    step      x_{t'} = S(x_t; x0*, eps*, z)
    recur     if j < k: x_t <- sqrt(a) x_{t'} + sqrt(1 - a) z',  a = abar_t / abar_{t'} (grid ratio)

Each part is switchable (``forward``, ``m`` = 0, ``k`` = 1). The backward inner loop is TFG's plain
gradient ascent (the official code uses Adam with lr 1e-2 and a per-sample early stop), with its step tied to
the strength s as in TFG's ``ugd.py``. Strength s = 0 switches the whole machinery off, recurrence included
(re-noising alone would change the trajectory), so it reproduces the unguided sampler exactly; for s > 0 the
step draws 2k - 1 noise vectors whatever s is. Cost per step: k (F+ + B) with forward guidance, k F without.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import hp, is_zero, param
from .dps import grad_xt
from .policy import PolicyMethod, plain_step
from .search import LogRange


@dataclass(frozen=True)
class Universal(PolicyMethod):
    name = "universal"
    batchable = True
    batch_params = ("s", "lr_b")
    strength = "s"
    summary = "universal guidance: eps-swap forward, x0-space backward (eps recomputed), self-recurrence k"
    search_space = {"s": LogRange(1e-3, 10.0), "lr_b": LogRange(0.1, 10.0)}
    s: float = param(0.05, "guidance weight s (forward eps shift; also scales the backward step)", min=0.0)
    forward: bool = param(True, "forward guidance: eps_hat = eps - s sqrt(1-abar) grad_{x_t} r")
    m: int = param(1, "backward guidance: inner gradient steps on Delta in x0 space (0 = off)", min=0)
    lr_b: float = param(1.0, "backward step size per unit s (Delta += s lr_b grad r)", min=0.0)
    k: int = param(2, "self-recurrence: repetitions of each step (1 = off)", min=1)

    def step_cost(self):
        if self.s == 0:
            return 1, 0
        return (self.k, self.k) if self.forward else (self.k, 0)

    def step(self, ctx, obj, x, noise):
        if is_zero(self.s):
            return plain_step(ctx, x, noise)
        sched, sqrt_h = ctx.den.schedule, math.sqrt(ctx.h)
        a_step = sched.abar(ctx.t) / sched.abar(ctx.t_prev)
        for j in range(self.k):
            if self.forward:
                eps, _, _, d = grad_xt(ctx, obj, x)
                eps = eps - hp(self.s * sqrt_h, d) * d
            else:
                eps = ctx.den.eps(x, ctx.t)
            x0 = (x - sqrt_h * eps) / ctx.alpha
            if self.m > 0:
                for _ in range(self.m):
                    _, g = obj.value_and_grad(x0)
                    x0 = x0 + hp(self.s * self.lr_b, g) * g
                eps = (x - ctx.alpha * x0) / sqrt_h
            x_next = ctx.sampler.step(sched, x, x0, eps, ctx.t, ctx.t_prev, noise())
            if j < self.k - 1:
                x = math.sqrt(a_step) * x_next + math.sqrt(1 - a_step) * noise()
        return x_next
