"""The stochastic plateau of oracle look-ahead Algorithm 1 on subspace / f1 (bench/fixed_point.py, issue 12 item 7):
the per-round law against the real sampler, the stationary law against Monte-Carlo chains, the noise-free point."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import fixed_point as fp
from methods import Sampler, make_method
from methods import Cost, Objective
from methods.denoiser import Counted
from methods.sampling import NoiseStream, sample_seeds
from tasks import get_task

DELTA, SIGMA = 0.2, 0.1


@pytest.fixture(scope="module")
def sub():
    task = get_task("subspace")
    theta = task.theta["theta2"]
    return task, theta, float((task.P @ theta).norm() ** 2)


def test_noise_free_point_is_the_fixed_point_of_the_mean_map(sub):
    a2 = sub[2]
    s_star, f_star = fp.noise_free(a2, DELTA, SIGMA)
    assert fp.posterior_law(a2, DELTA, SIGMA)(s_star)[0] == pytest.approx(s_star, rel=1e-12)
    assert f_star == pytest.approx(5.934, abs=5e-4)  # ggdm.md §7.2 table (delta = 0.2, theta2)


def test_sampler_law_matches_one_round_of_the_code(sub):
    """One look-ahead round on the oracle from anchors with theta.z = s0: the mean and variance of theta.x
    against the affine recursion of ``sampler_law`` (tolerances: 4 SE of a mean, 4 SE of a sample variance)."""
    task, theta, a2 = sub
    B, steps, s0 = 512, 10, 0.8
    den = task.denoiser("oracle")
    reward = task.reward("f1-theta2")
    anchor = (s0 / a2 * (task.P @ theta)).expand(B, -1).clone()
    cost = Cost()
    obj = Objective.linearised(reward, cost, anchor, linear=True)
    noise = NoiseStream(sample_seeds(0, 1, B), den.shape)
    x = make_method("look-ahead", {"delta": str(DELTA)}).sample(Counted(den, cost, B), obj, noise,
                                                                  Sampler(steps=steps))
    s = (x.double() @ theta.double()).numpy()
    m, v = fp.sampler_law(a2, DELTA, SIGMA, T=den.schedule.T, steps=steps)(np.array(s0))
    assert abs(s.mean() - m) < 4 * (v / B) ** 0.5
    assert abs(s.var(ddof=1) / v - 1) < 4 * (2 / (B - 1)) ** 0.5


def test_stationary_plateau_grid_agrees_with_monte_carlo(sub):
    """Two independent computations of the plateau: the linear solve on a grid, and chains (tolerance: 4 SE
    across independent Monte-Carlo replicates). Both sit below the noise-free f* by far more than that."""
    a2 = sub[2]
    k = fp.posterior_law(a2, DELTA, SIGMA)
    grid = fp.plateau_grid(k)
    reps = [fp.plateau_mc(k, chains=1000, rounds=250, burn=100, seed=i)["reward"] for i in range(6)]
    se = np.std(reps, ddof=1) / len(reps) ** 0.5
    assert abs(np.mean(reps) - grid["reward"]) < 4 * se
    assert fp.noise_free(a2, DELTA, SIGMA)[1] - grid["reward"] > 10 * se
