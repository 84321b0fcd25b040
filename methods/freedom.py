"""FreeDoM with time travel (Yu et al., ICCV 2023; methods.md §3.3), and the shared time-travel loop.

Per grid step i of n, with u = 1 - i/n the remaining fraction of the trajectory (~ t/T on a uniform grid):

    u <= stop:         plain sampler step (guidance off near t = 0)
    otherwise repeat r_i times (r_i = r inside the window tt_lo <= u <= tt_hi, else 1):
        x_{t'} = S(x_t; x0_hat, eps, z) + rho_t grad_{x_t} r(x0_hat(x_t))       (one VJP)
        if not the last repetition: x_t <- sqrt(a) x_{t'} + sqrt(1 - a) z',  a = abar_t / abar_{t'}

``rho_rule="sqrt_abar"``: rho_t = rho sqrt(abar_t) (the faces code); ``constant``: rho_t = rho. Windows are in
the index fraction u so the cost formula depends only on the number of steps. rho = 0 switches everything
off, time travel included (re-noising alone changes the trajectory), so zero strength is exactly unguided;
for rho > 0 a step draws 2 r_i - 1 noise vectors whatever rho is. Cost: r_i (F+ + B) per guided step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import hp, is_zero, param
from .dps import grad_xt
from .policy import PolicyMethod, plain_step
from .search import Choice, LogRange


@dataclass(frozen=True)
class TimeTravel(PolicyMethod):
    """x_t-gradient guidance after the sampler step, with a time-travel window and a cut-off; subclasses
    choose the step size ``rho_t`` (FreeDoM, Polyak)."""

    rho: float = param(0.05, "guidance scale rho (guidance strength; 0 = unguided)", min=0.0)
    r: int = param(2, "time-travel repetitions inside the window (1 = off)", min=1)
    tt_lo: float = param(0.3, "time-travel window: u = 1 - i/n >= tt_lo", min=0.0)
    tt_hi: float = param(0.8, "time-travel window: u = 1 - i/n <= tt_hi", min=0.0)
    stop: float = param(0.1, "guidance off for u = 1 - i/n <= stop (low noise)", min=0.0)

    def __post_init__(self):
        super().__post_init__()
        if self.tt_lo > self.tt_hi:
            raise ValueError(f"{self.name}: need tt_lo <= tt_hi, got {self.tt_lo} > {self.tt_hi}")

    def step_size(self, ctx, x, eps, r, d) -> torch.Tensor:
        raise NotImplementedError

    def repeats(self, i: int, n: int) -> int:
        """Guided repetitions of step i of n (0 = plain step)."""
        u = 1 - i / n
        if is_zero(self.rho) or u <= self.stop:
            return 0
        return self.r if self.tt_lo <= u <= self.tt_hi else 1

    def step_cost(self):
        return (1, 1) if self.rho > 0 else (1, 0)

    def cost_at(self, i, n):
        reps = self.repeats(i, n) if self.guided_at(i, n) else 0
        return (reps, reps) if reps else (1, 0)

    def step(self, ctx, obj, x, noise):
        reps = self.repeats(ctx.i, ctx.n)
        if reps == 0:
            return plain_step(ctx, x, noise)
        sched = ctx.den.schedule
        a_step = sched.abar(ctx.t) / sched.abar(ctx.t_prev)
        for j in range(reps):
            eps, x0, r, d = grad_xt(ctx, obj, x)
            x_next = ctx.sampler.step(sched, x, x0, eps, ctx.t, ctx.t_prev, noise())
            x_next = x_next + self.step_size(ctx, x, eps, r, d) * d
            if j < reps - 1:
                x = math.sqrt(a_step) * x_next + math.sqrt(1 - a_step) * noise()
        return x_next


@dataclass(frozen=True)
class FreeDoM(TimeTravel):
    name = "freedom"
    batchable = True
    batch_params = ("rho",)
    strength = "rho"
    summary = "FreeDoM: x_t-gradient after the step, rho sqrt(abar_t), time travel r in a window, cut-off"
    search_space = {"rho": LogRange(0.01, 100.0), "rho_rule": Choice(("sqrt_abar", "constant"))}
    rho_rule: str = param("sqrt_abar", "rho_t = rho sqrt(abar_t) (faces code) or constant rho",
                          choices=("sqrt_abar", "constant"))

    def step_size(self, ctx, x, eps, r, d):
        return hp(self.rho * ctx.alpha if self.rho_rule == "sqrt_abar" else self.rho, d)
