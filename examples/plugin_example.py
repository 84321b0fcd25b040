"""Example plugin: a guidance method and a reward, registered without editing the package.

Load it with ``bench list --plugin examples/plugin_example.py`` or ``plugins = ["plugin_example.py"]`` in a
suite TOML next to it (examples/plugin_suite.toml). It registers

* ``unit-dps``: DPS with a fixed step length. DPS (methods/dps.py) moves x_{t'} by zeta * grad_{x_t} r(x0_hat),
  whose size follows the reward's scale; here the per-sample gradient is normalised,

      x_{t'} = S(x_t; x0_hat, eps, z) + zeta * d / ||d||,    d = grad_{x_t} r(x0_hat(x_t)),

  so zeta is a distance in sample space per step. Cost per step: 1 forward with graph + 1 VJP.
* reward ``quad-theta1`` on the subspace task: r(x) = -||x - c||^2 / 64 with c = 3 theta1 / ||theta1||, a point
  on the data subspace (optimum 0). It is a factory, so it reads the task's own constants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import methods
import tasks
from methods import PerStepMethod, param
from methods.base import bnorm2, per_sample
from methods.search import LogRange


@dataclass(frozen=True)
class UnitDPS(PerStepMethod):
    name = "unit-dps"
    strength = "zeta"
    summary = "DPS with a fixed step length: x_{t'} = sampler step + zeta d/||d||, d = grad_{x_t} r(x0_hat)"
    zeta: float = param(0.1, "step length per sampler step (guidance strength; 0 = unguided)", min=0.0)
    search_space = {"zeta": LogRange(1e-3, 1.0)}  # what tuning searches (methods/search.py)

    def step_cost(self):
        return (1, 1) if self.zeta > 0 else (1, 0)

    def step(self, ctx, obj, x, noise):
        if self.zeta == 0:
            return super().step(ctx, obj, x, noise)  # the plain sampler step, bit for bit
        with torch.enable_grad():  # one forward with graph, one VJP for the whole batch
            xg = x.detach().requires_grad_(True)
            eps = ctx.den.eps(xg, ctx.t)
            x0 = (xg - math.sqrt(ctx.h) * eps) / ctx.alpha
            (d,) = torch.autograd.grad(obj.value(x0).sum(), xg)
        z = noise()
        x_next = ctx.sampler.step(ctx.den.schedule, x, x0.detach(), eps.detach(), ctx.t, ctx.t_prev, z)
        return x_next + self.zeta * d / per_sample(bnorm2(d).sqrt().clamp_min(1e-12), d)


def quad_theta1(task) -> tasks.Reward:
    c = 3 * task.theta["theta1"] / task.theta["theta1"].norm()
    return tasks.Reward("quad-theta1", lambda x: -(x - c.to(x)).pow(2).sum(1) / 64,
                        "-|x - c|^2 / 64, c = 3 theta1/|theta1| on the subspace (example plugin)", 0.0)


methods.register(UnitDPS)
tasks.register_reward("subspace", quad_theta1)
