"""Golden values for the particle methods (methods/smc.py, fk_steering.py, tds.py, svdd.py), computed by hand.

Cases: resampling counts on fixed uniforms (Kitagawa's systematic scheme vs the multinomial inverse CDF); the
normalised ESS of weights whose answer is known; twisted SMC on the 3-d Gaussian oracle of tests/golden.py with a
linear reward, where the exact twist of the model's own DDPM chain is linear in x_t (a backward recursion through
the affine DDPM means), so with that twist and its optimal proposal every incremental weight (TDS's weights) is
exactly 0; one SVDD greedy step written out with numpy. Tolerances: float64 rounding, never a sampling spread.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from golden import SCHED, GaussOracle, abar, ddpm_np, oracle_np
from methods import Counted, Cost, NoiseStream, Objective, Sampler, make_method
from methods import smc, tds
from methods.smc import Population, Stacked, multinomial, normalised_ess, step_sigma, systematic


def close(got, want, atol=1e-11):
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=atol)


# ---- resampling and ESS ----------------------------------------------------------------------------------------

W = torch.tensor([[0.1], [0.2], [0.3], [0.4]], dtype=torch.float64)  # one column, K = 4; cdf 0.1 0.3 0.6 1.0


def counts(a, K=4):
    return np.bincount(a[:, 0].numpy(), minlength=K).tolist()


def test_systematic_counts_on_fixed_uniform():
    """u = 0.5: positions 0.125 0.375 0.625 0.875 -> ancestors 1 2 3 3; every count is floor or ceil of K W."""
    a = systematic(W, torch.tensor([0.5]))
    assert a[:, 0].tolist() == [1, 2, 3, 3]
    assert counts(a) == [0, 1, 1, 2]
    for u in (0.0, 0.3, 0.99):  # K W = 0.4 0.8 1.2 1.6
        c = counts(systematic(W, torch.tensor([u])))
        assert all(math.floor(4 * w) <= n <= math.ceil(4 * w) for n, w in zip(c, W[:, 0].tolist()))


def test_multinomial_counts_on_fixed_uniforms():
    """Each uniform through the inverse CDF on its own: 0.05 -> 0, 0.95 -> 3, 0.5 -> 2, 0.35 -> 2, 0.31 -> 2, so
    particle 2 can take 3 copies and particle 1 none, where systematic gives them 1 each."""
    a = multinomial(W, torch.tensor([[0.05], [0.95], [0.5], [0.35]], dtype=torch.float64))
    assert a[:, 0].tolist() == [0, 3, 2, 2]
    assert counts(multinomial(W, torch.tensor([[0.35], [0.5], [0.31], [0.95]], dtype=torch.float64))) == [0, 0, 3, 1]


def test_equal_weights_systematic_is_identity():
    """Positions (k + u) / K fall in cell k (u = 0 would sit on the rounded cell borders)."""
    Wu = torch.full((5, 3), 0.2, dtype=torch.float64)
    for u in (1e-6, 0.4, 0.999):
        assert systematic(Wu, torch.full((3,), u)).T.tolist() == [[0, 1, 2, 3, 4]] * 3


def test_normalised_ess_known_values():
    """(sum w)^2 / (K sum w^2): equal weights 1; one particle 1/K; w = (1, 3): 16 / (2 * 10) = 0.8."""
    logw = torch.log(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 3.0]], dtype=torch.float64))
    close(normalised_ess(logw + 7.0).numpy(), [1.0, 0.5, 0.8])  # shift-invariant


def test_lam_zero_weights_never_resample():
    """Equal weights (lam = 0): no column is resampled, with either scheme and threshold 1; uniforms are drawn."""
    noise = NoiseStream([1, 2, 3], (3,))
    for scheme in ("systematic", "multinomial"):
        pop = Population(noise, 4, scheme, threshold=1.0)
        a, did = pop.resample(torch.zeros(4, 3, dtype=torch.float64))
        assert not did.any() and a.T.tolist() == [[0, 1, 2, 3]] * 3
        assert pop.metrics() == {"ess": 1.0, "ess_min": 1.0, "resamples": 0.0, "unique_ancestors": 4.0}


def test_step_sigma_is_the_samplers_noise_scale():
    x, x0, eps = (torch.tensor(np.random.default_rng(i).standard_normal((2, 3))) for i in range(3))
    z = torch.tensor(np.random.default_rng(9).standard_normal((2, 3)))
    for sampler in (Sampler("ddpm"), Sampler("ddim", eta=0.4)):
        for t, tp in ((6, 4), (0, -1)):
            d = sampler.step(SCHED, x, x0, eps, t, tp, z) - sampler.step(SCHED, x, x0, eps, t, tp, 0 * z)
            close(d.numpy(), step_sigma(sampler, SCHED, t, tp) * z.numpy())


# ---- twisted SMC: the exact twist gives constant incremental weights ------------------------------------------

THETA = np.array([0.8, -0.6, 1.1])
LAM = 0.7
GRID = Sampler("ddpm").grid(SCHED)  # T = 10: steps t -> t' = 9 -> 8 ... 0 -> -1


def ddpm_affine(t, tp):
    """The DDPM mean with the Gaussian oracle is affine and diagonal in x_t: mu(x) = D x + e (from golden.ddpm_np
    with z = 0, evaluated at 0 and at the unit vectors)."""
    def mu(x):
        return ddpm_np(x, oracle_np(x, t)[1], np.zeros_like(x), t, tp)

    e = mu(np.zeros((1, 3)))[0]
    return np.diag(mu(np.eye(3)) - e), e


def exact_twists():
    """log psi_t(x) = c_t . x + d_t, the exact log E[exp(lam theta.x_0) | x_t] of the model chain: c_{-1} = lam
    theta; psi_t(x) = log E[psi_{t'}(mu(x) + sigma z)] = c_{t'}.(D x + e) + sigma^2 |c_{t'}|^2 / 2 + d_{t'}."""
    c, d, tw = LAM * THETA, 0.0, {}
    for t, tp in reversed(GRID):
        D, e = ddpm_affine(t, tp)
        s2 = step_sigma(Sampler("ddpm"), SCHED, t, tp) ** 2
        tw[t] = (D * c, c @ e + s2 * (c @ c) / 2 + d, c)  # (c_t, d_t, c_{t'}: the optimal proposal's drift)
        c, d = D * c, c @ e + s2 * (c @ c) / 2 + d
    return tw


class ExactTwistTDS(tds.TDS):
    """TDS with the exact twist and its optimal proposal N(mu + sigma^2 c_{t'}, sigma^2) (TDS: exact twists
    make the weights constant)."""

    def twist(self, den, obj, x, t, lam_i):
        c_t, d_t, c_next = (torch.as_tensor(v, dtype=torch.float64) for v in self.tw[t])
        eps = den.eps(x, t)
        alpha, h = den.schedule.coeffs(t)
        return eps, (x - math.sqrt(h) * eps) / alpha, x @ c_t + d_t, c_next.expand_as(x)


class Recording(Population):
    log: list = []

    def resample(self, logw):
        Recording.log.append(logw.clone())
        return super().resample(logw)

    def pick(self, logw):
        Recording.log.append(logw.clone())
        return super().pick(logw)


def run_tds(method, K=5, B=3):
    Recording.log = []
    obj = Objective(lambda x: x @ torch.tensor(THETA), Cost())
    noise = NoiseStream([11, 12, 13][:B], (3,), dtype=torch.float64)
    method.sample(Counted(GaussOracle(), Cost(), B), obj, noise, Sampler("ddpm"))
    return [w.numpy() for w in Recording.log]


def test_exact_twist_incremental_weights_are_zero(monkeypatch):
    """Never resampling (ess_threshold 0), the log weight after step i minus the initial one, log psi_T(x_T), is the
    sum of the incremental weights: 0 at every step and after the final exp(lam r(x_0)) / psi correction."""
    monkeypatch.setattr(tds, "Population", Recording)
    m = ExactTwistTDS(k=5, lam=LAM, ess_threshold=0.0)
    object.__setattr__(m, "tw", exact_twists())
    logs = run_tds(m)
    assert len(logs) == len(GRID) + 1
    assert np.ptp(logs[0], 0).min() > 5e-3  # the initial weights psi_T(x_T) differ between particles
    for w in logs[1:]:
        close(w - logs[0], np.zeros_like(w), atol=1e-9)
    # the plain TDS twist lam r(x0_hat(x_t)) is not exact here: its incremental weights do vary (the check can fail)
    logs = run_tds(tds.TDS(k=5, lam=LAM, ess_threshold=0.0))
    assert np.abs(np.ptp(logs[-1] - logs[0], 0)).max() > 1e-3


# ---- SVDD: one greedy step by hand ----------------------------------------------------------------------------

def test_svdd_greedy_step_by_hand():
    """Grid 9 -> 0 -> -1 (2 steps). Step 1: M = 3 candidates x_0^(m) = DDPM(x_T; z_m) from the stacked streams, values
    v_m = r(x0_hat(x_0^(m))) with the quadratic reward of tests/golden.py, keep argmax; step 2: the DDPM mean."""
    from golden import reward_np, reward_t

    M, seeds, sampler = 3, [21, 22], Sampler("ddpm", steps=2)
    (t, tp), (t2, _) = sampler.grid(SCHED)
    draws = Stacked(NoiseStream(seeds, (3,), dtype=torch.float64), M)
    xT = draws()[:2].numpy()
    zs = draws().numpy().reshape(M, 2, 3)
    cand = np.stack([ddpm_np(xT, oracle_np(xT, t)[1], zs[m], t, tp) for m in range(M)])
    v = np.stack([reward_np(oracle_np(cand[m], tp)[1]) for m in range(M)])          # [M, B]
    best = cand[v.argmax(0), [0, 1]]
    want = ddpm_np(best, oracle_np(best, t2)[1], None, t2, -1)
    assert len(set(v.argmax(0).tolist()) - {0}) > 0  # the greedy choice is not candidate 1 here

    cost = Cost()
    obj = Objective(reward_t, cost)
    got = make_method("svdd", {"m": M}).sample(Counted(GaussOracle(), cost, 2), obj,
                                               NoiseStream(seeds, (3,), dtype=torch.float64), sampler)
    close(got.numpy(), want)
    assert (cost.nfe, cost.vjp, cost.reward_calls) == (1 + M, 0, M)
    assert obj.info["ess"] == pytest.approx(1 / M) and obj.info["resamples"] == 1.0


# ---- FK steering and TDS sample the exact tilt of the model chain -----------------------------------------------

def model_law():
    """Mean and variance (per coordinate) of x_0 under the model's own DDPM chain on the Gaussian oracle: x_T ~ N(0, I),
    x_{t'} = D x_t + e + sigma z (all diagonal, so coordinates stay independent)."""
    m, v = np.zeros(3), np.ones(3)
    for t, tp in GRID:
        D, e = ddpm_affine(t, tp)
        m, v = D * m + e, D * D * v + step_sigma(Sampler("ddpm"), SCHED, t, tp) ** 2
    return m, v


@pytest.mark.parametrize("name,params", [
    ("fk-steering", {}),
    ("fk-steering", {"potential": "max", "interval": 4, "window_start": 0.5, "window_end": 1.0}),  # needs the correction
    ("tds", {}),
], ids=["fk-diff", "fk-max", "tds"])
def test_particles_sample_the_exact_tilt(name, params):
    """Tilting N(m, diag v) by exp(lam theta.x) gives N(m + lam v theta, diag v), so theta.x_0 has mean theta.m +
    lam theta.(v theta) and variance theta.(v theta). K = 32 particles, B = 200 returned samples: the mean of
    theta.x_0 is within 4 standard errors of that law's (SE from the exact variance); the untilted chain (lam = 0)
    is ~10 SE away, so the check can fail."""
    m, v = model_law()
    lam, B = 0.5, 200
    mean, se = THETA @ m + lam * THETA @ (v * THETA), math.sqrt(THETA @ (v * THETA) / B)

    def z(method):
        obj = Objective(lambda x: x @ torch.tensor(THETA), Cost())
        x = method.sample(Counted(GaussOracle(), Cost(), B), obj, NoiseStream(range(B), (3,), dtype=torch.float64),
                          Sampler("ddpm"))
        return ((x.numpy() @ THETA).mean() - mean) / se

    assert abs(z(make_method(name, {"k": 32, "lam": lam, **params}))) < 4
    if not params:
        assert abs(z(make_method("unguided"))) > 8  # = lam 0 (the contract suite checks it bit for bit)
