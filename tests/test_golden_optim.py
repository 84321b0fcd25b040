"""Golden values for whole trajectories: every step policy (methods/policy.py, methods.md §3.11) on a DPS run,
and one or two optimiser iterations of DNO (gradient, per-sample clip, R(Z) and its sign, AdamW) and DOODL
(SGD momentum, x_T renormalisation), all by hand on the 3-d Gaussian oracle of tests/golden.py (float64).

The sampler chain is written out here from the DDIM formula; its noise gradient is a central difference of
that hand chain, exact up to rounding because r(x0(Z)) is quadratic in Z for a linear denoiser.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from golden import Draws, GaussOracle, SCHED, ddim_np, fixed_noise, grad_np, objective, oracle_np, reward_np, reward_t
from methods import Cost, Counted, Sampler, make_method

# ---- step policies on a 6-step DDIM(0.4) DPS trajectory ----------------------------------------------------------

GRID6 = [(9, 7), (7, 5), (5, 4), (4, 2), (2, 0), (0, -1)]  # round(linspace(9, 0, 6))
ZETA = 0.15


def dps_trajectory(zs, weights=None, reuse_at=None):
    """x_0 of DPS with guidance displacement w_i * zeta J^T grad r at step i; ``reuse_at[i] = j`` adds the
    displacement computed at step j instead (compress/reuse)."""
    x = zs[0]
    deltas = {}
    for i, (t, tp) in enumerate(GRID6):
        eps, x0, k = oracle_np(x, t)
        deltas[i] = ZETA * k * grad_np(x0)
        out = ddim_np(x0, eps, zs[i + 1], t, tp, 0.4)
        if reuse_at is not None:
            j = reuse_at[i]
            out = out + (deltas[j] if j is not None else 0)
        else:
            out = out + weights[i] * deltas[i]
        x = out
    return x


def run_policy(params, zs):
    sampler = Sampler("ddim", eta=0.4, steps=6)
    assert sampler.grid(SCHED) == GRID6
    m = make_method("dps", {"zeta": ZETA, **params})
    d = Draws(zs)
    x = m.sample(Counted(GaussOracle()), objective(), d, sampler)
    assert d.draws == 7
    return x.numpy()


# weights by hand: n = 6, budget m = round(0.5 * 6) = 3
POLICY_CASES = {
    "all": ({}, [1, 1, 1, 1, 1, 1]),
    "early-stop": ({"policy": "early-stop", "policy_frac": 0.5}, [1, 1, 1, 0, 0, 0]),
    "skip": ({"policy": "skip", "policy_frac": 0.5}, [1, 0, 1, 0, 1, 0]),            # floor(j 6 / 3) = 0, 2, 4
    # power law round(6 (j/3)^k): k = 2 -> 0, 1, 3; intervals to the next guided step 1, 2, 3
    "compress-k2": ({"policy": "compress", "policy_frac": 0.5, "policy_k": 2.0}, [1, 2, 0, 3, 0, 0]),
    # k = 0.5 -> 0, 3, 5 (late); intervals 3, 2, 1
    "compress-k0.5": ({"policy": "compress", "policy_frac": 0.5, "policy_k": 0.5}, [3, 0, 0, 2, 0, 1]),
    # u = 1 - i/6 in [0.5, 0.9]: i = 1, 2, 3 (not symmetric: the elapsed fraction i/6 would pick 3, 4, 5)
    "window": ({"policy": "window", "policy_lo": 0.5, "policy_hi": 0.9}, [0, 1, 1, 1, 0, 0]),
}


@pytest.mark.parametrize("case", list(POLICY_CASES))
def test_step_policy_trajectory(case):
    params, w = POLICY_CASES[case]
    zs = fixed_noise(7, seed=4)
    got = run_policy(params, zs)
    np.testing.assert_allclose(got, dps_trajectory(zs, weights=w), rtol=1e-9, atol=1e-11)
    if case != "all":
        assert np.abs(got - run_policy({}, zs)).max() > 1e-2  # the policy changes the result in this case


def test_compress_reuse_trajectory():
    zs = fixed_noise(7, seed=4)
    got = run_policy({"policy": "compress", "policy_frac": 0.5, "policy_k": 2.0, "policy_mode": "reuse"}, zs)
    # guided at 0, 1, 3; skipped steps add the last displacement: step 2 reuses step 1's, steps 4, 5 step 3's
    np.testing.assert_allclose(got, dps_trajectory(zs, reuse_at=[0, 1, 1, 3, 3, 3]), rtol=1e-9, atol=1e-11)


# ---- DNO / DOODL ---------------------------------------------------------------------------------------------------

GRID4 = [(9, 6), (6, 3), (3, 0), (0, -1)]  # round(linspace(9, 0, 4))


class GenDraws(Draws):
    """Preset draws plus one generator per sample (DNO seeds its R(Z) permutations / perturbations from them)."""

    def __init__(self, zs):
        super().__init__(zs)
        self.gens = [torch.Generator().manual_seed(i) for i in range(zs[0].shape[0])]


def chain_np(Z, eta):
    """x0(Z): the DDIM(eta) sampler from x_T = Z[0], step i injecting Z[i + 1]."""
    x = Z[0]
    for i, (t, tp) in enumerate(GRID4):
        eps, x0, _ = oracle_np(x, t)
        x = ddim_np(x0, eps, Z[i + 1], t, tp, eta)
    return x


def fd_grad(f, rows, h=1e-3):
    """Per-sample central difference of f(rows) -> [B] w.r.t. every entry of every row."""
    out = [np.zeros_like(r) for r in rows]
    for a in range(len(rows)):
        for j in range(rows[a].shape[1]):
            up = [r.copy() for r in rows]
            dn = [r.copy() for r in rows]
            up[a][:, j] += h
            dn[a][:, j] -= h
            out[a][:, j] = (f(up) - f(dn)) / (2 * h)
    return out


def reg_np(rows, d):
    """R(Z) of DNO (methods.md §3.7) shifted by +log 2 per term as in methods/dno_reg.py, no permutations."""
    flat = np.concatenate(rows, 1)
    N = flat.shape[1] // d
    out = []
    for v in flat[:, : N * d]:
        Zm = v.reshape(N, d)
        m = Zm.mean(0)
        log_pm = min(-N * (m @ m) / (2 * d) + math.log(2), 0.0)
        C = Zm.T @ Zm / N
        spec = np.linalg.norm(C - np.eye(d), ord=2)
        dev = max(math.sqrt(1 + spec) - 1 - math.sqrt(d / N), 0.0)
        log_pc = min(-N * dev**2 / 2 + math.log(2), 0.0)
        out.append(-(log_pm + log_pc))
    return np.array(out)


def dno_iterations(params, zs, sampler, iterations=1):
    """(noise variables after each update, sample of the last round) from DNO's own loop."""
    method = make_method(params.pop("name", "dno"), params)
    seen = []
    outs = list(method._run(Counted(GaussOracle()), reward_t, Cost(), GenDraws(zs), sampler, iterations,
                            on_step=lambda v: seen.append([t.numpy().copy() for t in v])))
    return seen, outs[-1]["x"].numpy()


def loss_grad(rows, fixed, eta, gamma=0.0, d=2):
    """Gradient of -r(x0(Z)) + gamma R(Z) w.r.t. the optimised rows (the rest of Z fixed)."""
    n = len(rows)
    g = fd_grad(lambda v: -reward_np(chain_np(v + fixed[n:], eta)), rows)
    if gamma:
        greg = fd_grad(lambda v: reg_np(v, d), rows, h=1e-6)
        g = [a + gamma * b for a, b in zip(g, greg)]
    return g


def clip(g, c):
    norm = np.sqrt(sum((x**2).sum(1) for x in g))[:, None]                # per-sample norm over all rows
    return [x * np.minimum(1.0, c / (norm + 1e-6)) for x in g], norm[:, 0]


def test_dno_sgd_step_with_per_sample_clip():
    zs = fixed_noise(5, seed=2)
    sampler = Sampler("ddim", eta=0.5, steps=4)
    assert sampler.grid(SCHED) == GRID4
    rows = zs[:4]  # x_T, z_1, z_2, z_3 (the last step's draw is unused)
    g, norm = clip(loss_grad(rows, zs, 0.5), 1.0)
    c = float(norm.mean())  # between the two samples' gradient norms: one is clipped, the other not
    assert norm.min() < c < norm.max()
    g, _ = clip(loss_grad(rows, zs, 0.5), c)
    lr = 0.2
    seen, x = dno_iterations({"lr": lr, "optimizer": "sgd", "clip": c}, zs, sampler)
    want = [r - lr * gr for r, gr in zip(rows, g)]                         # first SGD step: momentum buffer = grad
    for a, b in zip(seen[0], want):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(x, chain_np(want + zs[4:], 0.5), rtol=1e-8, atol=1e-10)
    assert reward_np(x).mean() > reward_np(chain_np(zs, 0.5)).mean()


def test_dno_regulariser_value_gradient_and_sign():
    from methods.dno_reg import prob_reg

    zs = [1.7 * z + 0.45 for z in fixed_noise(5, seed=3)]  # an atypical noise: R(Z) > 0 with both terms active
    rows = zs[:4]
    R = reg_np(rows, 2)
    assert (R > 1.0).all()
    got = prob_reg(torch.tensor(np.concatenate(rows, 1)), None, perms=0, d=2).numpy()
    np.testing.assert_allclose(got, R, rtol=1e-10)
    gamma, lr = 0.3, 0.05
    sampler = Sampler("ddim", eta=0.5, steps=4)
    seen, _ = dno_iterations({"lr": lr, "optimizer": "sgd", "clip": None, "gamma": gamma, "reg_perms": 0,
                              "reg_d": 2}, zs, sampler)
    g = loss_grad(rows, zs, 0.5, gamma=gamma)                              # descend -r + gamma R
    for a, r, gr in zip(seen[0], rows, g):
        np.testing.assert_allclose(a, r - lr * gr, rtol=1e-6, atol=1e-9)
    assert (reg_np(seen[0], 2) < R).all()  # the step lowers R: the regulariser pulls toward typical noise


def test_dno_adamw_first_step():
    zs = fixed_noise(5, seed=2)
    lr, wd = 0.05, 0.03
    seen, _ = dno_iterations({"lr": lr, "weight_decay": wd, "clip": 0.5}, zs, Sampler("ddim", eta=0.5, steps=4))
    g, _ = clip(loss_grad(zs[:4], zs, 0.5), 0.5)
    for a, r, gr in zip(seen[0], zs[:4], g):  # decoupled decay, then m_hat / (sqrt(v_hat) + eps) = g / (|g| + eps)
        np.testing.assert_allclose(a, r * (1 - lr * wd) - lr * gr / (np.abs(gr) + 1e-8), rtol=1e-7, atol=1e-9)


def test_doodl_momentum_and_renormalisation():
    zs = fixed_noise(5, seed=5)
    lr, mom = 0.3, 0.9
    seen, x = dno_iterations({"name": "doodl", "lr": lr, "momentum": mom, "clip": 0.8}, zs,
                             Sampler("ddim", eta=0.0, steps=4), iterations=2)
    assert all(len(v) == 1 for v in seen)  # eta = 0: only x_T
    x_T, norm0 = zs[0], np.linalg.norm(zs[0], axis=1, keepdims=True)
    buf = None
    for k in range(2):
        (g,), _ = clip(loss_grad([x_T], zs, 0.0), 0.8)
        buf = g if buf is None else mom * buf + g
        x_T = x_T - lr * buf
        x_T = x_T * norm0 / np.linalg.norm(x_T, axis=1, keepdims=True)   # back onto the initial norm
        np.testing.assert_allclose(seen[k][0], x_T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(x, chain_np([x_T] + zs[1:], 0.0), rtol=1e-8, atol=1e-10)
