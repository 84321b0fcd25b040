"""best-of-n: N = 1 is unguided bit for bit, counted cost N × unguided per returned sample, per-sample seeds."""
from __future__ import annotations

import pytest
import torch

from methods import REGISTRY, make_method
from methods.protocol import Protocol, run_rounds


def one_round(task, method, batch=6, seed=5):
    reward = task.rewards[next(iter(task.rewards))]
    out = list(run_rounds(method, task.oracle("cpu"), reward, Protocol(rounds=1), batch=batch, seed=seed))
    return out[-1]["x"], out, reward


def guided_cost(method, task, batch=6):
    """(forwards, VJPs, reward calls) of the guided round alone: cumulative cost minus round 0's."""
    reward = task.rewards[next(iter(task.rewards))]
    gen = run_rounds(method, task.oracle("cpu"), reward, Protocol(rounds=1), batch=batch, seed=1)
    c0 = next(gen)["cost"].as_dict()
    c1 = list(gen)[-1]["cost"].as_dict()
    return tuple(c1[k] - c0[k] for k in ("nfe", "vjp", "reward_calls"))


@pytest.mark.parametrize("task_name", ["subspace", "sphere"])
def test_n1_is_unguided_bit_for_bit(task_name, small_T_tasks):
    task = small_T_tasks[task_name]
    xb, _, _ = one_round(task, make_method("best-of-n", {"n": 1}))
    xu, _, _ = one_round(task, REGISTRY["unguided"]())
    assert torch.equal(xb, xu)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_counted_cost_is_n_times_unguided(n, small_T_tasks):
    task = small_T_tasks["subspace"]
    nfe_u, vjp_u, rcalls_u = guided_cost(REGISTRY["unguided"](), task)
    nfe, vjp, rcalls = guided_cost(make_method("best-of-n", {"n": n}), task)
    steps = len(task.schedule.alpha_bar)
    assert nfe_u == steps and vjp_u == 0
    assert (nfe, vjp) == (n * nfe_u, 0)
    assert rcalls - rcalls_u == (n if n > 1 else 0)  # N reward evaluations on top of the protocol's own


def test_hard_keeps_the_best_candidate(small_T_tasks):
    """The returned reward is >= candidate 1 (the unguided sample) for every sample, and strictly above on
    average: candidate 1 is one of the N candidates the argmax sees."""
    task = small_T_tasks["sphere"]
    xb, _, reward = one_round(task, make_method("best-of-n", {"n": 8}), batch=16)
    xu, _, _ = one_round(task, REGISTRY["unguided"](), batch=16)
    rb, ru = reward(xb), reward(xu)
    assert (rb >= ru).all()
    assert rb.mean() > ru.mean()


def test_soft_large_lambda_equals_hard_and_zero_is_unguided(small_T_tasks):
    task = small_T_tasks["subspace"]
    hard, _, _ = one_round(task, make_method("best-of-n", {"n": 4}))
    soft, _, _ = one_round(task, make_method("best-of-n", {"n": 4, "lam": 1e6}))
    zero, _, _ = one_round(task, make_method("best-of-n", {"n": 4, "lam": 0.0}))
    xu, _, _ = one_round(task, REGISTRY["unguided"]())
    assert torch.equal(hard, soft)
    assert torch.equal(zero, xu)


def test_returned_sample_depends_only_on_its_seed(small_T_tasks):
    task = small_T_tasks["sphere"]
    for lam in (None, 2.0):
        m = make_method("best-of-n", {"n": 4, "lam": lam})
        big, _, _ = one_round(task, m, batch=7)
        small, _, _ = one_round(task, m, batch=3)
        torch.testing.assert_close(small, big[:3], rtol=1e-5, atol=1e-6)
