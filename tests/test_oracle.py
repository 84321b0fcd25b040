"""Oracle denoisers against Monte-Carlo posterior means and closed forms (ggdm.md §5, §7.2)."""
import math

import torch

from methods import Counted


def _mc_posterior_mean(task, x_t, t, n=200_000, seed=0):
    """E[x0 | x_t] by self-normalised importance sampling from the data prior."""
    alpha, h = task.schedule.coeffs(t)
    x0 = task.sample_data(n, torch.Generator().manual_seed(seed)).double()
    logw = -((x_t.double().unsqueeze(0) - alpha * x0) ** 2).sum(-1) / (2 * h)
    w = torch.softmax(logw, 0)
    return (w.unsqueeze(1) * x0).sum(0)


def test_subspace_oracle_x0_is_alpha_P_x(subspace):
    den = Counted(subspace.oracle("cpu"))
    x = torch.randn(5, 64, dtype=torch.float64)
    for t in (0, 60, 150, 199):
        alpha, _ = subspace.schedule.coeffs(t)
        torch.testing.assert_close(den.x0_hat(x, t), alpha * x @ subspace.P.double(), rtol=1e-6, atol=1e-8)


def test_subspace_oracle_matches_monte_carlo(subspace):
    den = Counted(subspace.oracle("cpu"))
    t = 150  # noisy enough for importance sampling from the prior to be accurate
    x_t = subspace.sample_data(1, torch.Generator().manual_seed(1)) * math.sqrt(subspace.schedule.abar(t)) \
        + math.sqrt(1 - subspace.schedule.abar(t)) * torch.randn(1, 64, generator=torch.Generator().manual_seed(2))
    mc = _mc_posterior_mean(subspace, x_t[0], t)
    torch.testing.assert_close(den.x0_hat(x_t, t)[0].double(), mc, rtol=0, atol=0.03)


def test_sphere_oracle_matches_monte_carlo():
    from tasks import get_task

    task = get_task("sphere", 200)
    den = Counted(task.oracle("cpu"))
    for t, seed in [(120, 3), (160, 4), (199, 5)]:
        alpha, h = task.schedule.coeffs(t)
        x0 = task.sample_data(1, torch.Generator().manual_seed(seed))
        x_t = alpha * x0 + math.sqrt(h) * torch.randn(1, 64, generator=torch.Generator().manual_seed(seed + 10))
        mc = _mc_posterior_mean(task, x_t[0], t, n=400_000)
        got = den.x0_hat(x_t, t)[0].double()
        assert (got - mc).norm() < 0.02 * max(mc.norm().item(), 0.05) + 0.005, (t, got.norm(), mc.norm())


def test_sphere_oracle_denoises_to_the_sphere_at_small_t():
    from tasks import get_task

    task = get_task("sphere", 200)
    x0 = task.sample_data(8, torch.Generator().manual_seed(0))
    alpha, h = task.schedule.coeffs(2)
    x_t = alpha * x0 + math.sqrt(h) * torch.randn(8, 64)
    x0_hat = Counted(task.oracle("cpu")).x0_hat(x_t, 2)
    assert ((x0_hat.norm(dim=1) - 1).abs() < 0.05).all()
