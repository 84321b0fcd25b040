"""Golden values for the sampling core, the oracles and the run statistics.

- Schedules against their closed forms (the cosine alpha_bar telescopes to f(t+1)/f(0)).
- DDIM(eta) at eta not in {0, 1} against Song et al. eq. 12, and the DDPM posterior against Gaussian
  conditioning of the joint (x_{t'}, x_t | x0) (tests/golden.py), not against the c1/c2 form of the code.
- The sphere oracle's posterior mean against a quadrature of the vMF posterior in several dimensions p
  (E[x0 | x_t] = A_p(kappa) x_t/|x_t|, where A_p is computed from its integral, not from Bessel functions).
- ``reward_se`` of bench/runner.py is the standard error of the mean (sample std, ddof = 1, over sqrt(n)).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from golden import SCHED, abar, ddim_np, ddpm_np, fixed_noise
from methods.sampling import Sampler, Schedule, ddim_step, ddpm_step


def test_cosine_schedule_closed_form():
    T, s = 200, 0.008
    f = [math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2 for u in range(T + 1)]
    sched = Schedule(T)
    want = np.array([f[t + 1] / f[0] for t in range(T - 1)])  # telescoping product of 1 - beta (unclipped part)
    np.testing.assert_allclose(sched.alpha_bar[: T - 1].numpy(), want, rtol=1e-12)
    assert float(sched.beta[-1]) == 0.999  # the last beta is clipped


def test_linear_schedule_closed_form():
    T = 50
    beta = np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)
    np.testing.assert_allclose(Schedule(T, "linear").alpha_bar.numpy(), np.cumprod(1 - beta), rtol=1e-12)


@pytest.mark.parametrize("eta", [0.3, 0.7])
@pytest.mark.parametrize("t,tp", [(9, 7), (6, 4), (3, 0), (0, -1)])
def test_ddim_step_closed_form(eta, t, tp):
    x, x0, eps, z = (torch.tensor(v) for v in fixed_noise(4, seed=7))
    got = ddim_step(SCHED, x, x0, eps, t, tp, eta, z).numpy()
    np.testing.assert_allclose(got, ddim_np(x0.numpy(), eps.numpy(), z.numpy(), t, tp, eta), rtol=1e-12, atol=1e-14)
    got_s = Sampler("ddim", eta=eta).step(SCHED, x, x0, eps, t, tp, z).numpy()
    np.testing.assert_array_equal(got_s, got)
    if tp >= 0:  # sigma grows with eta (linearly): eta and 0 differ by sigma z and the eps weight
        assert np.abs(got - ddim_step(SCHED, x, x0, eps, t, tp, 0.0, z).numpy()).max() > 1e-2


@pytest.mark.parametrize("t,tp", [(9, 8), (6, 4), (3, 0), (0, -1)])
def test_ddpm_posterior_closed_form(t, tp):
    x, x0, z = (torch.tensor(v) for v in fixed_noise(3, seed=8))
    got = ddpm_step(SCHED, x, x0, t, tp, z).numpy()
    np.testing.assert_allclose(got, ddpm_np(x.numpy(), x0.numpy(), z.numpy(), t, tp), rtol=1e-12, atol=1e-14)


def test_ddim_variance_interpolates_ddpm():
    """sigma(eta)^2 = eta^2 * (DDPM posterior variance): measured as the coefficient of z."""
    t, tp = 6, 4
    zero = torch.zeros(1, 1, dtype=torch.float64)
    one = torch.ones(1, 1, dtype=torch.float64)
    var = float(ddpm_step(SCHED, zero, zero, t, tp, one)) ** 2
    a, ap = abar(t), abar(tp)
    assert var == pytest.approx((1 - ap) / (1 - a) * (1 - a / ap), rel=1e-12)
    for eta in (0.25, 0.6):
        assert float(ddim_step(SCHED, zero, zero, zero, t, tp, eta, one)) ** 2 == pytest.approx(eta**2 * var, rel=1e-12)


def test_tweedie_x0_hat():
    """Counted.x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar): on the Gaussian oracle, the posterior mean."""
    from golden import GaussOracle, X, oracle_np
    from methods import Counted

    den = Counted(GaussOracle())
    for t in (1, 6, 9):
        np.testing.assert_allclose(den.x0_hat(torch.tensor(X), t).numpy(), oracle_np(X, t)[1], rtol=1e-10, atol=1e-12)


# ---- the sphere oracle against quadrature ---------------------------------------------------------------------

def vmf_mean_length(p: int, kappa: float, n: int = 40001) -> float:
    """A_p(kappa) = int u e^{kappa u} (1-u^2)^{(p-3)/2} du / int e^{kappa u} (1-u^2)^{(p-3)/2} du, u = cos theta:
    trapezoid in theta of e^{kappa cos} sin^{p-2}, in the log domain (spectrally accurate: the integrand
    vanishes to high order at both ends)."""
    th = np.linspace(0, np.pi, n)
    with np.errstate(divide="ignore"):
        logw = kappa * np.cos(th) + (p - 2) * np.log(np.sin(th))
    w = np.exp(logw - logw.max())
    return float((w * np.cos(th)).sum() / w.sum())


@pytest.mark.parametrize("p", [64, 100, 128])
def test_sphere_oracle_matches_quadrature(p):
    from tasks.sphere import SphereOracle

    sched = Schedule(200)
    oracle = SphereOracle(sched, (p,))
    gen = torch.Generator().manual_seed(p)
    for t in (15, 60, 110, 170):
        a = sched.abar(t)
        alpha, h = math.sqrt(a), 1 - a
        n = torch.randn(3, p, generator=gen, dtype=torch.float64)
        n = n / n.norm(dim=1, keepdim=True)
        radii = math.sqrt(a + p * h) * torch.tensor([0.8, 1.0, 1.25], dtype=torch.float64)  # around typical |x_t|
        x = radii.unsqueeze(1) * n
        got = oracle.x0_mean(x, torch.full((3,), t))
        for i in range(3):
            kappa = alpha * float(radii[i]) / h                           # vMF concentration of p(x0 | x_t)
            A = vmf_mean_length(p, kappa)
            np.testing.assert_allclose(got[i].numpy(), A * n[i].numpy(), rtol=1e-6, atol=1e-9)
            # the dimension matters at this tolerance: A_{p-1} or A_{p+1} would fail
            assert abs(vmf_mean_length(p - 1, kappa) - A) > 1e-4 * A and abs(vmf_mean_length(p + 1, kappa) - A) > 1e-4 * A
        eps = oracle.eps(x, torch.full((3,), t))
        torch.testing.assert_close(eps, (x - alpha * got) / math.sqrt(h), rtol=1e-12, atol=1e-12)


def test_subspace_oracle_eps_closed_form(subspace):
    """eps* = sqrt(h) P x + (I - P) x / sqrt(h) (ggdm.md §7.2), float64."""
    den = subspace.oracle("cpu")
    P = subspace.P.double()
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (0, 77, 199):
        h = 1 - subspace.schedule.abar(t)
        want = math.sqrt(h) * x @ P + (x - x @ P) / math.sqrt(h)
        torch.testing.assert_close(den.eps(x, torch.full((4,), t)), want, rtol=1e-10, atol=1e-10)


# ---- run statistics ------------------------------------------------------------------------------------------

class _Task:
    def off_support(self, x):
        return x[:, 1].abs()

    def metrics(self, x):
        return {}


def test_reward_se_is_the_standard_error_of_the_mean():
    from bench.runner import evaluate

    x = torch.tensor([[1.0, -2.0], [2.0, 0.5], [3.0, 1.0], [4.0, -1.0], [6.0, 3.5]])
    out = evaluate(_Task(), lambda v: v[:, 0], x)
    # mean 3.2, sample variance (ddof 1) 14.8 / 4 = 3.7, SE = sqrt(3.7 / 5)
    assert out["reward_mean"] == pytest.approx(3.2, rel=1e-12)
    assert out["reward_se"] == pytest.approx(math.sqrt(3.7 / 5), rel=1e-12)
    # |x_1| = 2, .5, 1, 1, 3.5: mean 1.6, ddof-1 variance (0.16 + 1.21 + 0.36 + 0.36 + 3.61) / 4 = 1.425
    assert out["off_support_mean"] == pytest.approx(1.6, rel=1e-12)
    assert out["off_support_se"] == pytest.approx(math.sqrt(1.425 / 5), rel=1e-12)


def test_reward_se_on_a_known_distribution():
    """For n iid draws of N(0, 2^2) the standard error of the mean is 2 / sqrt(n); averaged over 200 batches the
    reported SE is within 1% of it (the spread of one sample std is 1/sqrt(2n) = 3.5% relative)."""
    from bench.runner import evaluate

    gen = torch.Generator().manual_seed(0)
    n = 400
    se = [evaluate(_Task(), lambda v: v[:, 0], 2 * torch.randn(n, 2, generator=gen, dtype=torch.float64))["reward_se"]
          for _ in range(200)]
    assert float(np.mean(se)) == pytest.approx(2 / math.sqrt(n), rel=0.01)
