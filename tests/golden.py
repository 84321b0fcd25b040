"""Hand-derived reference formulas for the golden tests (tests/test_golden_*.py), in float64 numpy.

Nothing here calls a method's internals: the sampler steps, the Gaussian oracle and the rewards are written
from the formulas in methods.md §1.1 / ggdm.md §1.4, so a test compares the implementation with the paper.

The closed-form case: data x0 ~ N(m, diag(s)) in d = 3 (a full-rank Gaussian, so every factor of a rule
matters: the denoiser's Jacobian J = diag(k_t) is neither 0 nor I). Given x_t = alpha x0 + sqrt(h) eps,

    E[x0 | x_t] = m + k_t (x_t - alpha m),   k_t = alpha s / (alpha^2 s + h),   J_t = diag(k_t),
    eps*(x_t)   = (x_t - alpha E[x0 | x_t]) / sqrt(h).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from methods import Counted, Objective, Sampler, Schedule
from methods.base import StepCtx
from methods.denoiser import Cost

M = np.array([0.3, -0.5, 0.8])
S = np.array([0.5, 2.0, 1.3])
SCHED = Schedule(10)
# the quadratic reward r(x) = C0 - sum_j Q_j (x_j - B_j)^2, gradient -2 Q (x - B)
Q = np.array([0.7, 0.2, 1.1])
B = np.array([1.0, -2.0, 0.5])
C0 = 3.0


class GaussOracle(torch.nn.Module):
    """Exact eps* for x0 ~ N(M, diag(S)) (torch, differentiable: the object under test calls it)."""

    def __init__(self, schedule=SCHED):
        super().__init__()
        self.schedule, self.shape = schedule, (3,)
        self.m, self.s = torch.tensor(M), torch.tensor(S)

    def eps(self, x, t):
        ab = self.schedule.alpha_bar[t].to(x).unsqueeze(1)
        alpha, h = ab.sqrt(), 1 - ab
        k = alpha * self.s.to(x) / (ab * self.s.to(x) + h)
        x0 = self.m.to(x) + k * (x - alpha * self.m.to(x))
        return (x - alpha * x0) / h.sqrt()


def reward_t(x):
    return C0 - (torch.tensor(Q).to(x) * (x - torch.tensor(B).to(x)) ** 2).sum(1)


def reward_np(x):
    return C0 - (Q * (x - B) ** 2).sum(-1)


def grad_np(x):
    return -2 * Q * (x - B)


def abar(t):
    return 1.0 if t < 0 else float(SCHED.alpha_bar[t])


def oracle_np(x, t):
    """(eps*, x0_hat, k) at x [B, 3] and grid time t."""
    a = abar(t)
    alpha, h = math.sqrt(a), 1 - a
    k = alpha * S / (a * S + h)
    x0 = M + k * (x - alpha * M)
    return (x - alpha * x0) / math.sqrt(h), x0, k


def x0_of(x, eps, t):
    a = abar(t)
    return (x - math.sqrt(1 - a) * eps) / math.sqrt(a)


def ddim_np(x0, eps, z, t, tp, eta):
    """Song et al. eq. 12: sqrt(a') x0 + sqrt(1 - a' - sigma^2) eps + sigma z, no noise on the last step."""
    a, ap = abar(t), abar(tp)
    sigma = eta * math.sqrt((1 - ap) / (1 - a)) * math.sqrt(1 - a / ap)
    out = math.sqrt(ap) * x0 + math.sqrt(1 - ap - sigma**2) * eps
    return out if tp < 0 else out + sigma * z


def ddpm_np(x, x0, z, t, tp):
    """q(x_{t'} | x_t, x0) by Gaussian conditioning of the joint (x_{t'}, x_t) given x0 (not the c1/c2 form):
    x_{t'} = sqrt(a') x0 + sqrt(1-a') e1, x_t = sqrt(a/a') x_{t'} + sqrt(1 - a/a') e2."""
    a, ap = abar(t), abar(tp)
    r = a / ap
    cov = math.sqrt(r) * (1 - ap)
    mean = math.sqrt(ap) * x0 + cov / (1 - a) * (x - math.sqrt(a) * x0)
    var = (1 - ap) - cov**2 / (1 - a)
    return mean if tp < 0 else mean + math.sqrt(var) * z


def step_np(sampler, x, x0, eps, z, t, tp):
    if sampler.kind == "ddpm":
        return ddpm_np(x, x0, z, t, tp)
    return ddim_np(x0, eps, z, t, tp, sampler.eta)


class Draws:
    """A noise stream that returns preset draws (float64 torch) in order and counts them."""

    def __init__(self, zs):
        self.zs = [torch.as_tensor(z, dtype=torch.float64) for z in zs]
        self.draws = 0

    def __call__(self):
        z = self.zs[self.draws]
        self.draws += 1
        return z


def fixed_noise(n, seed=0, batch=2):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, 3)) for _ in range(n)]


X = np.array([[0.9, -1.4, 0.2], [-2.1, 0.6, 1.7]])  # x_t: two samples of different size (per-sample norms)


def ctx(t=6, tp=4, sampler=Sampler("ddim", eta=0.4), i=1, n=5, den=None):
    a = abar(t)
    den = den if den is not None else Counted(GaussOracle())
    return StepCtx(i, n, t, tp, math.sqrt(a), 1 - a, sampler, den)


def objective(**kw):
    return Objective(reward_t, Cost(), **kw)


def run_step(method, c, obj, x, zs):
    """One ``method.step`` from x (numpy) with preset draws -> (x_{t'} numpy, draws used)."""
    d = Draws(zs)
    out = method.step(c, obj, torch.tensor(x), d)
    return out.detach().numpy(), d.draws
