"""Exact reward tilts (tasks/tilt.py), the tilt metrics (bench/measure.py) and exact-guidance's rejections.

References: the closed forms of inference-scaling.md §5 (Gaussian: E[θᵀx] = 2 lam b s/(1 + 2 lam s), Var = s/(1 + 2
lam s); vMF: E[μᵀx] = A_p(κ), Var = 1 − (p − 1) A_p/κ − A_p²), W1(δ_0, N(0, 1)) = E|Z| = sqrt(2/π), and the Fréchet
distance of diagonal Gaussians Σ (m_i − m_i')² + (sqrt(c_i) − sqrt(c_i'))². Sampling tolerances are 4 standard errors.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.measure import frechet_gaussian, tilt_floor, tilt_metrics, tilt_stats, wasserstein1
from tasks import get_task
from tasks.sphere import bessel_ratio
from tasks.tilt import NoClosedForm, exact_tilt

N = 20_000


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("reward,lam", [("f1-theta1", 1.5), ("f1-theta2", 10.0)])
def test_gaussian_tilt_samples_have_the_closed_form_moments(reward, lam):
    task = get_task("subspace", 20)
    law = exact_tilt(task, reward, lam)
    theta = task.theta[reward.split("-")[1]].double()
    s = float((task.A.double() @ theta).pow(2).sum())
    mean, var = 6 * lam * s / (1 + 2 * lam * s), s / (1 + 2 * lam * s)   # the reference's closed form (b = 3)
    x = law.sample(N, gen(1))
    y = x @ theta
    assert abs(float(y.mean()) - mean) < 4 * math.sqrt(var / N)
    assert abs(float(y.var()) - var) < 4 * var * math.sqrt(2 / (N - 1))
    assert float(task.off_support(x).max()) < 1e-6                        # exactly on the subspace
    r = task.reward(reward)(x)
    assert abs(float(r.mean()) - law.expected_reward()) < 4 * float(r.std()) / math.sqrt(N)


@pytest.mark.parametrize("lam", [0.0, 3.0, 40.0])
def test_vmf_tilt_samples_have_the_closed_form_moments(lam):
    task = get_task("sphere", 20)
    law = exact_tilt(task, "linear", lam)
    x = law.sample(N, gen(2))
    assert float((x.norm(dim=1) - 1).abs().max()) < 1e-12
    w = x @ (task.theta.double() / task.theta.double().norm())
    p, kappa = 64, lam * float(task.theta.double().norm())
    A = float(bessel_ratio(p, torch.tensor(kappa, dtype=torch.float64))) if kappa else 0.0
    var = 1 - (p - 1) * A / kappa - A * A if kappa else 1 / p
    assert abs(float(w.mean()) - A) < 4 * math.sqrt(var / N)
    se_var = math.sqrt(float(((w - w.mean()) ** 4).mean()) - var**2) / math.sqrt(N)
    assert abs(float(w.var()) - var) < 4 * se_var
    # the tabulated law of θᵀx used by tilt_w1 has the Bessel mean too (quadrature vs series)
    mid = (law._w[1:] + law._w[:-1]) / 2
    assert abs(float((mid * np.diff(law._cdf)).sum()) - A) < 1e-6


def test_statistics_on_known_answers():
    assert wasserstein1(np.zeros(1), torch.special.ndtr, (-12.0, 12.0)) == pytest.approx(math.sqrt(2 / math.pi),
                                                                                       rel=1e-6)
    u = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, -2.0], [2.0, 2.0]])        # mean (2, 0), cov diag(2/3, 8/3)
    m, c = np.array([0.5, 1.0]), np.diag([0.5, 2.0])
    want = 1.5**2 + 1.0 + (math.sqrt(2 / 3) - math.sqrt(0.5)) ** 2 + (math.sqrt(8 / 3) - math.sqrt(2)) ** 2
    assert frechet_gaussian(u, m, c) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("task_name,reward,lam", [("subspace", "f1-theta2", 10.0), ("sphere", "linear", 10.0)])
def test_exact_samples_sit_at_the_floor_and_unguided_ones_do_not(task_name, reward, lam):
    task = get_task(task_name, 20)
    law = exact_tilt(task, reward, lam)
    n = 32
    floor = tilt_floor(law, n)
    draws = [tilt_stats(law, law.sample(n, gen(500 + j))) for j in range(20)]  # seeds disjoint from the floor's
    base = tilt_stats(law, task.sample_data(n, gen(7)))                    # the untilted data law
    for k in draws[0]:
        v = np.array([d[k] for d in draws])
        assert abs(v.mean() - floor[f"{k}_floor"]) < 4 * v.std(ddof=1) / math.sqrt(len(v)) + 1e-12, k
        assert base[k] > floor[f"{k}_floor"] + 4 * v.std(ddof=1), k


def test_tilt_metrics_keys_and_absence():
    task = get_task("subspace", 20)
    x = task.sample_data(16, gen(0))
    m = tilt_metrics(task.reward("f1-theta1"), 2.0, x)
    assert set(m) == {"tilt_fd", "tilt_fd_floor", "tilt_w1", "tilt_w1_floor", "tilt_reward", "tilt_lambda"}
    assert m["tilt_lambda"] == 2.0 and m["tilt_reward"] == pytest.approx(10 - ((12 / 5 - 3) ** 2 + 1 / 5), rel=1e-6)
    sm = tilt_metrics(get_task("sphere", 20).reward("linear"), 2.0, x / x.norm(dim=1, keepdim=True))
    assert "tilt_fd" not in sm and "tilt_w1_floor" in sm
    assert tilt_metrics(task.reward("f2-b1"), 2.0, x) == {}
    assert tilt_metrics(task.reward("f1-theta1"), None, x) == {}
    with pytest.raises(NoClosedForm, match="no closed-form tilted target"):
        exact_tilt(task, "f2-b1", 1.0)


def test_runs_carry_tilt_metrics_and_tilt_none_keeps_old_run_ids():
    from bench.runner import RunSpec, iter_records

    spec = RunSpec(task="subspace", reward="f1-theta1", method="exact-guidance", params={"lam": 2.0}, T=20, batch=8)
    assert "tilt" not in spec.canonical()
    recs = list(iter_records(spec))
    assert recs[-1]["status"] == "ok" and recs[-1]["metrics"]["tilt_lambda"] == 2.0   # from the lam param
    declared = RunSpec(task="subspace", reward="f1-theta1", method="naive", T=20, batch=8, tilt=3.0)
    assert declared.run_id != RunSpec(task="subspace", reward="f1-theta1", method="naive", T=20, batch=8).run_id
    assert list(iter_records(declared))[-1]["metrics"]["tilt_lambda"] == 3.0


@pytest.mark.parametrize("args,needle", [
    (["--task", "subspace", "--denoiser", "trained"], "needs --denoiser oracle, not 'trained'"),
    (["--task", "subspace", "--reward", "f2-b2"], "'f2-b2' has none"),
    (["--task", "sphere", "--denoiser", "unet1d"], "needs --denoiser oracle"),
])
def test_exact_guidance_rejected_with_one_line(tmp_path, capsys, args, needle):
    from bench.cli import main

    out = tmp_path / "o"
    try:
        rc = main(["run", "--method", "exact-guidance", *args, "--T", "10", "--batch", "4", "--out", str(out)])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("bench run: error:") and needle in err, err
    assert not out.exists()


def test_exact_guidance_refuses_a_network_and_star_suites_skip_it():
    from bench.suite import expand, load_suite
    from methods import make_method
    from methods.protocol import Protocol, run_rounds
    from tasks import NetDenoiser

    class Net(torch.nn.Module):  # any network: its score is not the data score the closed form corrects
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(64, 64)

        def forward(self, x, t):
            return self.lin(x)

    task = get_task("subspace", 10)
    with pytest.raises(ValueError, match="needs --denoiser oracle"):
        list(run_rounds(make_method("exact-guidance"), NetDenoiser(Net(), task.schedule, task.shape),
                        task.reward("f1-theta2"), Protocol(1), batch=2, seed=0))
    specs = expand(load_suite("quick"))
    eg = {(s.task, s.denoiser) for s in specs if s.method == "exact-guidance"}
    assert eg == {("subspace", "oracle"), ("sphere", "oracle")}


def test_scaling_crossing_point_is_interpolated_in_log_budget():
    import pandas as pd

    from bench.figures_scaling import crossings

    rows = [dict(task="t", denoiser="oracle", label="best-of-N", budget=b, reward=r)
            for b, r in ((1, 1.0), (2, 2.0), (4, 3.0), (8, 4.0))]
    rows += [dict(task="t", denoiser="oracle", label="fk", budget=b, reward=r) for b, r in ((2, 1.5), (4, 3.5), (8, 5))]
    (c,) = crossings(pd.DataFrame(rows))
    assert c["budget"] == pytest.approx(2 * math.sqrt(2)) and c["direction"] == "overtakes best-of-N"
