"""Golden: one exact-guidance step against the tilted posterior mean written out by hand (float64, golden.py style).

Subspace (f1, x = Aᵀu): the tilted prior of u is N(μ, Σ) with precision I + 2 lam a aᵀ and Σ⁻¹μ = 6 lam a
(inference-scaling.md §5); given x_t the likelihood of u is N(A x_t; alpha u, h I), so the posterior mean solves
(Σ⁻¹ + alpha²/h I) m = Σ⁻¹μ + alpha A x_t / h (a linear solve here, not the implementation's Sherman–Morrison form),
E[x0 | x_t] = Aᵀm. Sphere (linear): the tilted posterior is vMF with natural parameter v = lam θ + alpha x_t / h, its
mean A_p(‖v‖) v/‖v‖ with A_p by quadrature of w exp(‖v‖ w)(1 − w²)^{(p−3)/2} (not the implementation's Bessel series).
Then eps = (x_t − alpha x0_hat)/sqrt(h) and the DDIM / DDPM step of golden.py. Grid step t = 6 -> 4 of the T = 10 cosine
schedule (the one golden.py uses). Tolerance: float64 rounding, except that the subspace task stores A in float32
(A Aᵀ = I to ~1e-7: atol 5e-7) and the Bessel series is accurate to ~1e-8 (rtol 1e-7).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from golden import abar, ctx, step_np
from methods import Counted, Objective, Sampler, make_method
from methods.denoiser import Cost
from tasks import get_task

DDIM, DDPM = Sampler("ddim", eta=0.4), Sampler("ddpm")
T, TP = 6, 4


def one_step(task, reward, lam, x, z, sampler):
    m = make_method("exact-guidance", {"lam": lam})
    c = ctx(T, TP, sampler=sampler, den=Counted(task.oracle("cpu")))
    draws = iter([torch.tensor(z)])
    out = m.step(c, Objective(task.reward(reward), Cost()), torch.tensor(x), lambda: next(draws))
    return out.numpy()


def subspace_x0(task, theta, lam, x):
    A = task.A.double().numpy()
    a = A @ theta
    al, h = math.sqrt(abar(T)), 1 - abar(T)
    prec = np.eye(16) + 2 * lam * np.outer(a, a)
    rhs = 6 * lam * a[:, None] + al / h * (A @ x.T)
    return np.linalg.solve(prec + al**2 / h * np.eye(16), rhs).T @ A


def vmf_mean(v, p=64):
    w = np.linspace(-1, 1, 400_001)
    out = []
    for vi in v:
        k = np.linalg.norm(vi)
        with np.errstate(divide="ignore"):
            logd = k * w + (p - 3) / 2 * np.log1p(-w * w)
        d = np.exp(logd - logd.max())
        out.append(np.trapezoid(w * d, w) / np.trapezoid(d, w) * vi / k)
    return np.array(out)


@pytest.mark.parametrize("sampler", [DDIM, DDPM], ids=["ddim0.4", "ddpm"])
@pytest.mark.parametrize("reward", ["f1-theta1", "f1-theta2"])
def test_subspace_step(sampler, reward):
    task, lam = get_task("subspace", 10), 1.7
    rng = np.random.default_rng(4)
    x, z = rng.standard_normal((2, 64)) * [[0.8], [1.3]], rng.standard_normal((2, 64))
    theta = task.theta[reward.split("-")[1]].double().numpy()
    al, h = math.sqrt(abar(T)), 1 - abar(T)
    x0 = subspace_x0(task, theta, lam, x)
    got = one_step(task, reward, lam, x, z, sampler)
    want = step_np(sampler, x, x0, (x - al * x0) / math.sqrt(h), z, T, TP)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=5e-7)  # the task stores A in float32: A Aᵀ = I to ~1e-7
    assert np.abs(x0 - subspace_x0(task, theta, 0.0, x)).max() > 0.01  # the tilt matters (no factor hides in atol)


@pytest.mark.parametrize("sampler", [DDIM, DDPM], ids=["ddim0.4", "ddpm"])
def test_sphere_step(sampler):
    task, lam = get_task("sphere", 10), 3.0
    rng = np.random.default_rng(5)
    x, z = rng.standard_normal((2, 64)) * [[0.9], [1.2]], rng.standard_normal((2, 64))
    al, h = math.sqrt(abar(T)), 1 - abar(T)
    x0 = vmf_mean(lam * task.theta.double().numpy() + al / h * x)
    got = one_step(task, "linear", lam, x, z, sampler)
    want = step_np(sampler, x, x0, (x - al * x0) / math.sqrt(h), z, T, TP)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    x0_plain = vmf_mean(al / h * x)
    assert np.abs(x0 - x0_plain).max() > 0.01
