"""Golden values: one guided step of every per-step method against its paper formula, computed by hand.

The case (tests/golden.py): a 3-d Gaussian oracle with Jacobian diag(k_t), the quadratic reward
r = C0 - sum Q (x - B)^2, two samples of different size, preset noise draws, grid step t = 6 -> t' = 4 of a
T = 10 cosine schedule (abar 0.20 -> 0.49), DDIM with eta = 0.4 (so sigma, sqrt(1 - abar' - sigma^2) and
the eps slot all matter) and the DDPM posterior step. Strengths are neither 0 nor 1. Tolerance: float64
rounding (rtol 1e-9), not the spread of any sample.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from golden import (X, abar, ctx, fixed_noise, grad_np, objective, oracle_np, reward_np, run_step, step_np,
                    x0_of)
from methods import Sampler, make_method

DDIM = Sampler("ddim", eta=0.4)
DDPM = Sampler("ddpm")
T, TP = 6, 4
A, H = abar(T), 1 - abar(T)
AL, SH = math.sqrt(A), math.sqrt(H)


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def plain(x, z, sampler=DDIM):
    eps, x0, _ = oracle_np(x, T)
    return step_np(sampler, x, x0, eps, z, T, TP)


def moved(got, x, z, sampler=DDIM, at_least=0.05):
    """The guidance term is not negligible in this case (else a wrong factor would hide in the tolerance)."""
    assert np.abs(got - plain(x, z, sampler)).max() > at_least


# ---- GGDM: naive G and look-ahead G_loss (ggdm.md §3.1-3.2) ---------------------------------------------------

ANCHOR = np.array([[0.4, 0.1, -0.3], [1.2, -0.8, 0.5]])
G = np.array([[0.8, -1.5, 0.6], [-0.4, 0.9, 2.0]])  # per-sample reward gradients at the anchors


def ggdm_objective():
    return objective(anchor=torch.tensor(ANCHOR), g=torch.tensor(G), r_anchor=torch.zeros(2), linear=False)


@pytest.mark.parametrize("sampler", [DDIM, DDPM], ids=["ddim0.4", "ddpm"])
def test_naive_step(sampler):
    delta, sigma, coef = 0.7, 0.3, 0.6
    m = make_method("naive", {"delta": delta, "sigma": sigma, "beta_coef": coef})
    z = fixed_noise(1)
    got, n = run_step(m, ctx(sampler=sampler), ggdm_objective(), X, z)
    eps, x0, _ = oracle_np(X, T)
    y = (G * ANCHOR).sum(1) + delta
    beta = coef * AL / (sigma**2 + H * (G**2).sum(1))                     # alpha_t / (sigma^2 + h |g|^2)
    Gt = (beta * (y - (G * x0).sum(1)))[:, None] * G                      # beta (y - g.x0_hat) g
    eps_g = eps - SH * Gt                                                 # score += G  <=>  eps -= sqrt(h) G
    close(got, step_np(sampler, X, x0_of(X, eps_g, T), eps_g, z[0], T, TP))
    assert n == 1
    moved(got, X, z[0], sampler)


@pytest.mark.parametrize("sampler", [DDIM, DDPM], ids=["ddim0.4", "ddpm"])
def test_lookahead_step(sampler):
    delta, sigma, coef = 0.7, 0.3, 0.6
    m = make_method("look-ahead", {"delta": delta, "sigma": sigma, "beta_coef": coef})
    z = fixed_noise(1)
    got, _ = run_step(m, ctx(sampler=sampler), ggdm_objective(), X, z)
    eps, x0, k = oracle_np(X, T)
    y = (G * ANCHOR).sum(1) + delta
    d = k * G                                                             # grad_{x_t} g.x0_hat = J^T g
    beta = coef * (A / 2) / (A * sigma**2 + H * (d**2).sum(1))
    Gt = (2 * beta * (y - (G * x0).sum(1)))[:, None] * d
    eps_g = eps - SH * Gt
    close(got, step_np(sampler, X, x0_of(X, eps_g, T), eps_g, z[0], T, TP))
    moved(got, X, z[0], sampler)


def test_ggdm_constant_beta():
    m = make_method("naive", {"delta": 0.7, "sigma": 0.3, "beta": 0.35, "beta_coef": 0.6})
    z = fixed_noise(1)
    got, _ = run_step(m, ctx(), ggdm_objective(), X, z)
    eps, x0, _ = oracle_np(X, T)
    y = (G * ANCHOR).sum(1) + 0.7
    eps_g = eps - SH * (0.6 * 0.35 * (y - (G * x0).sum(1)))[:, None] * G
    close(got, step_np(DDIM, X, x0_of(X, eps_g, T), eps_g, z[0], T, TP))


# ---- DPS (methods.md §3.1) -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", [DDIM, DDPM], ids=["ddim0.4", "ddpm"])
@pytest.mark.parametrize("normalise", ["none", "loss"])
def test_dps_step(sampler, normalise):
    zeta = 0.3
    z = fixed_noise(1)
    got, n = run_step(make_method("dps", {"zeta": zeta, "normalise": normalise}), ctx(sampler=sampler),
                      objective(), X, z)
    eps, x0, k = oracle_np(X, T)
    step = zeta if normalise == "none" else zeta / np.abs(reward_np(x0))[:, None]
    close(got, plain(X, z[0], sampler) + step * k * grad_np(x0))          # + zeta J^T grad r(x0_hat)
    assert n == 1
    moved(got, X, z[0], sampler)


# ---- MPGD (methods.md §3.5): x0-swap, constant and RMS step rules ----------------------------------------------

@pytest.mark.parametrize("sampler", [DDIM, DDPM], ids=["ddim0.4", "ddpm"])
@pytest.mark.parametrize("rule", ["constant", "rms"])
def test_mpgd_step(sampler, rule):
    c = 0.35
    z = fixed_noise(1)
    got, _ = run_step(make_method("mpgd", {"c": c, "step_rule": rule}), ctx(sampler=sampler), objective(), X, z)
    eps, x0, _ = oracle_np(X, T)
    g = grad_np(x0)                                                       # grad w.r.t. x0_hat, no Jacobian
    cc = c if rule == "constant" else c / np.sqrt((g**2).mean(1, keepdims=True))
    if sampler.kind == "ddim":
        want = step_np(sampler, X, x0 + cc * g / math.sqrt(abar(TP)), eps, z[0], T, TP)  # x0' = x0 + c/sqrt(a') g
    else:
        want = plain(X, z[0], sampler) + cc * g                           # its DDIM displacement sqrt(a') dx0
    close(got, want)
    moved(got, X, z[0], sampler)
    if rule == "rms":  # the shift of x_{t'} has RMS c per sample
        np.testing.assert_allclose(np.sqrt(((got - plain(X, z[0], sampler)) ** 2).mean(1)), c, rtol=1e-9)


# ---- Universal guidance (methods.md §3.2): forward eps-swap, backward eps-recompute, self-recurrence ------------

def universal_by_hand(x, zs, s, lr_b, m, k, forward, sampler=DDIM):
    a_step = A / abar(TP)
    zs = list(zs)
    for j in range(k):
        eps, x0, kk = oracle_np(x, T)
        if forward:
            eps = eps - s * SH * kk * grad_np(x0)                         # eps_hat = eps + s sqrt(1-a) grad l
        x0 = x0_of(x, eps, T)
        if m > 0:
            for _ in range(m):
                x0 = x0 + s * lr_b * grad_np(x0)                          # gradient ascent on Delta in x0 space
            eps = (x - AL * x0) / SH                                      # eps recomputed, x_t kept
        x_next = step_np(sampler, x, x0, eps, zs.pop(0), T, TP)
        if j < k - 1:
            x = math.sqrt(a_step) * x_next + math.sqrt(1 - a_step) * zs.pop(0)  # grid re-noise q(x_t | x_t')
    return x_next


@pytest.mark.parametrize("forward,m,k,draws", [(True, 0, 1, 1), (False, 2, 1, 1), (True, 2, 3, 5), (False, 1, 2, 3)],
                         ids=["forward", "backward", "fwd+bwd+recur3", "bwd+recur2"])
def test_universal_step(forward, m, k, draws):
    s, lr_b = 0.4, 0.6
    zs = fixed_noise(draws)
    method = make_method("universal", {"s": s, "lr_b": lr_b, "m": m, "k": k, "forward": forward})
    got, n = run_step(method, ctx(), objective(), X, zs)
    close(got, universal_by_hand(X, zs, s, lr_b, m, k, forward))
    assert n == draws
    moved(got, X, zs[0])


def test_universal_backward_is_eps_recompute_not_x0_swap():
    """methods.md §1.1: the net shift of x_{t'} is (sqrt(a') - sqrt(1-a'-sigma^2) sqrt(a)/sqrt(1-a)) Delta."""
    s, lr_b = 0.4, 0.6
    zs = fixed_noise(1)
    got, _ = run_step(make_method("universal", {"s": s, "lr_b": lr_b, "m": 1, "k": 1, "forward": False}),
                      ctx(), objective(), X, zs)
    _, x0, _ = oracle_np(X, T)
    delta = s * lr_b * grad_np(x0)
    ap = abar(TP)
    sigma = 0.4 * math.sqrt((1 - ap) / (1 - A)) * math.sqrt(1 - A / ap)
    close(got - plain(X, zs[0]), (math.sqrt(ap) - math.sqrt(1 - ap - sigma**2) * AL / SH) * delta)


# ---- FreeDoM time travel (methods.md §3.3) and the Polyak step (§3.9) -----------------------------------------

def time_travel_by_hand(x, zs, reps, step_size):
    a_step = A / abar(TP)
    zs = list(zs)
    for j in range(reps):
        eps, x0, kk = oracle_np(x, T)
        d = kk * grad_np(x0)                                              # grad_{x_t} r(x0_hat(x_t))
        x_next = step_np(DDIM, x, x0, eps, zs.pop(0), T, TP) + step_size(eps, d) * d
        if j < reps - 1:
            x = math.sqrt(a_step) * x_next + math.sqrt(1 - a_step) * zs.pop(0)
    return x_next


# (i, n): u = 1 - i/n = 0.6 inside the window [0.3, 0.8] -> r repetitions; u = 0.9 outside -> 1; u = 0.1 <= stop
@pytest.mark.parametrize("i,n,reps", [(2, 5, 3), (1, 10, 1), (9, 10, 0)], ids=["window", "outside", "stopped"])
@pytest.mark.parametrize("rule", ["sqrt_abar", "constant"])
def test_freedom_step(i, n, reps, rule):
    rho = 0.45
    zs = fixed_noise(max(2 * reps - 1, 1))
    method = make_method("freedom", {"rho": rho, "r": 3, "tt_lo": 0.3, "tt_hi": 0.8, "stop": 0.1, "rho_rule": rule})
    got, draws = run_step(method, ctx(i=i, n=n), objective(), X, zs)
    if reps == 0:
        close(got, plain(X, zs[0]))
        return
    rho_t = rho * AL if rule == "sqrt_abar" else rho                      # faces code: rho sqrt(abar_t)
    close(got, time_travel_by_hand(X, zs, reps, lambda eps, d: rho_t))
    assert draws == 2 * reps - 1
    moved(got, X, zs[0])


@pytest.mark.parametrize("i,n,reps", [(2, 5, 2), (1, 10, 1)], ids=["window", "outside"])
def test_polyak_step(i, n, reps):
    rho = 0.03
    zs = fixed_noise(2 * reps - 1)
    method = make_method("polyak", {"rho": rho, "r": 2, "tt_lo": 0.3, "tt_hi": 0.8, "stop": 0.1})
    got, _ = run_step(method, ctx(i=i, n=n), objective(), X, zs)

    def polyak(eps, d):  # rho ||eps|| / ||grad||^2, per sample
        return rho * np.linalg.norm(eps, axis=1, keepdims=True) / (d**2).sum(1, keepdims=True)

    close(got, time_travel_by_hand(X, zs, reps, polyak))
    moved(got, X, zs[0])


# ---- Forward-only guidance (methods.md §3.10) ------------------------------------------------------------------

@pytest.mark.parametrize("normalise", ["clip", "inf"])
def test_forward_only_step(normalise):
    lr, decay, K = 0.3, 0.25, 3
    zs = fixed_noise(1)
    method = make_method("forward-only", {"lr": lr, "lr_decay": decay, "K": K, "fd_h": 0.01, "normalise": normalise})
    got, _ = run_step(method, ctx(), objective(), X, zs)
    x = X.copy()
    eps, x0, kk = oracle_np(x, T)
    clipped = []
    for lr_k in np.linspace(lr, lr * decay, K):
        d = kk * grad_np(x0)                                              # J_t e (exact for this oracle)
        dn = np.abs(d).max(1, keepdims=True)                              # per-sample inf-norm
        clipped.append(dn[:, 0] > 1)
        d = d / (dn if normalise == "inf" else np.maximum(dn, 1.0))
        x = x + lr_k * d
        eps, x0, kk = oracle_np(x, T)
    np.testing.assert_allclose(got, step_np(DDIM, x, x0, eps, zs[0], T, TP), rtol=1e-8, atol=1e-10)
    if normalise == "clip":  # the case exercises both branches of the clip
        assert any(c.any() for c in clipped) and any((~c).any() for c in clipped)
    moved(got, X, zs[0])
