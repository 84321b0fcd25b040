"""Particle methods (fk-steering, tds, svdd): counted cost = the formula per returned sample, lam = 0 is unguided bit
for bit under every resampling setting, FK's final correction makes the total weight exp(lam r(x_0)), per-sample
seeds under resampling, and the ESS / ancestry diagnostics reach the record's ``metrics``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from golden import GaussOracle, reward_t
from methods import REGISTRY, Counted, Cost, NoiseStream, Objective, Sampler, fk_steering, make_method
from methods.protocol import Protocol, run_rounds
from methods.smc import Population

DDIM7 = Sampler("ddim", eta=0.5, steps=7)


def rounds(task, method, batch=3, seed=1, sampler=Sampler()):
    reward = task.rewards[next(iter(task.rewards))]
    return list(run_rounds(method, task.oracle("cpu"), reward, Protocol(rounds=1), batch=batch, seed=seed,
                           sampler=sampler))


def guided_cost(task, method, sampler):
    """(forwards, VJPs, reward calls) of the guided round alone, minus what the protocol itself spends there
    (the unguided method's guided round: n forwards and the objective's own reward call)."""
    base = rounds(task, REGISTRY["unguided"](), sampler=sampler)[-1]["cost"].as_dict()
    got = rounds(task, method, sampler=sampler)[-1]["cost"].as_dict()
    n = len(sampler.grid(task.schedule))
    return got["nfe"] - base["nfe"] + n, got["vjp"] - base["vjp"], got["reward_calls"] - base["reward_calls"]


@pytest.mark.parametrize("K,sampler", [(3, Sampler()), (3, DDIM7), (1, DDIM7)], ids=["K3-ddpm20", "K3-ddim7", "K1-ddim7"])
def test_counted_cost_matches_formula(K, sampler, small_T_tasks):
    """FK: K F per step, K R per scheduled step + K R final; TDS: K (F + V + R) per step + K R final; SVDD: F at x_T
    and M F + M R per step but the last (its candidates coincide). With K = 1 there is no final choice."""
    task = small_T_tasks["subspace"]
    n = len(sampler.grid(task.schedule))
    fk = make_method("fk-steering", {"k": K, "interval": 2, "window_start": 0.0, "window_end": 1.0})
    S = len(fk.scheduled(n))
    assert S == (n + 1) // 2
    fin = K if K > 1 else 0
    assert guided_cost(task, fk, sampler) == (K * n, 0, K * S + fin)
    assert guided_cost(task, make_method("tds", {"k": K}), sampler) == (K * n, K * n, K * n + fin)
    assert guided_cost(task, make_method("svdd", {"m": K}), sampler) == (1 + K * (n - 1), 0,
                                                                          K * (n - 1) if K > 1 else 0)
    for name, f in (("fk-steering", "k"), ("tds", "k"), ("svdd", "m")):  # lam = 0: no reward calls, no VJPs
        nfe, vjp, rc = guided_cost(task, make_method(name, {f: K, "lam": 0.0}), sampler)
        assert (vjp, rc) == (0, 0) and nfe == (K * n if name != "svdd" else 1 + K * (n - 1))


@pytest.mark.parametrize("name,params", [
    ("fk-steering", {"k": 5, "interval": 1, "window_start": 0.0, "window_end": 1.0, "resampling": "multinomial",
                     "potential": "sum"}),
    ("tds", {"k": 5, "resampling": "multinomial", "temper": 0.2}),
    ("svdd", {"m": 5}),
])
def test_lam_zero_is_unguided_under_any_schedule(name, params, small_T_tasks):
    task = small_T_tasks["sphere"]
    got = rounds(task, make_method(name, {**params, "lam": 0.0}), batch=4)[-1]
    want = rounds(task, REGISTRY["unguided"](), batch=4)[-1]["x"]
    assert torch.equal(got["x"], want)
    assert got["info"]["resamples"] == 0.0 and got["info"]["ess"] == 1.0


@pytest.mark.parametrize("potential", ["diff", "max", "sum", "rt"])
def test_fk_final_weight_is_exp_lam_r(potential, monkeypatch):
    """Without resampling (ess_threshold 0) every particle's potentials cancel against the final correction: the
    weight of the final draw is lam r(x_0) exactly, whatever the potential (Singhal et al.: the product of the
    potentials is exp(lam r(x_0)))."""
    seen, rewards = [], []

    class Recording(Population):
        def pick(self, logw):
            seen.append(logw.clone())
            return super().pick(logw)

    def reward(x):
        rewards.append(reward_t(x).detach().clone())
        return rewards[-1]

    monkeypatch.setattr(fk_steering, "Population", Recording)
    lam, K, B = 0.6, 4, 2
    m = make_method("fk-steering", {"k": K, "lam": lam, "potential": potential, "ess_threshold": 0.0,
                                    "interval": 1, "window_start": 0.0, "window_end": 1.0})
    m.sample(Counted(GaussOracle(), Cost(), B), Objective(reward, Cost()),
             NoiseStream([3, 4], (3,), dtype=torch.float64), Sampler("ddpm"))
    assert len(rewards) == 11  # 10 scheduled steps + the final correction
    np.testing.assert_allclose(seen[0].numpy(), lam * rewards[-1].reshape(K, B).numpy(), rtol=1e-12, atol=1e-12)
    assert np.ptp(rewards[-1].numpy()) > 0.1  # the weights do differ between particles


def test_soft_and_multinomial_depend_only_on_own_seed(small_T_tasks):
    task = small_T_tasks["subspace"]
    for name, p in (("fk-steering", {"resampling": "multinomial", "interval": 1, "lam": 5.0}),
                    ("tds", {"resampling": "multinomial", "ess_threshold": 0.5}), ("svdd", {"lam": 2.0})):
        big = rounds(task, make_method(name, p), batch=5)[-1]["x"]
        small = rounds(task, make_method(name, p), batch=2)[-1]["x"]
        assert ((small - big[:2]).abs() <= 1e-5 + 1e-4 * big[:2].abs()).all(), name  # the contract's tolerance


def test_diagnostics_reach_the_record(small_T_tasks):
    """ess, ess_min in [1/K, 1], resamples = scheduled steps when weights differ (threshold 1), unique ancestors in
    [1, K]; bench's runner copies them into the record's metrics."""
    from bench.runner import RunSpec, iter_records

    K = 4
    out = rounds(small_T_tasks["subspace"], make_method("fk-steering", {"k": K, "lam": 3.0}), batch=4)
    info = out[-1]["info"]
    assert set(info) >= {"ess", "ess_min", "resamples", "unique_ancestors"}
    assert 1 / K <= info["ess_min"] <= info["ess"] <= 1
    assert info["resamples"] == len(make_method("fk-steering").scheduled(20))
    assert 1 <= info["unique_ancestors"] <= K
    recs = list(iter_records(RunSpec(task="sphere", reward="linear", method="tds", params={"k": 2}, batch=3, T=20)))
    assert recs[-1]["status"] == "ok", recs[-1].get("error")
    assert {"ess", "ess_min", "resamples", "unique_ancestors"} <= set(recs[-1]["metrics"])
