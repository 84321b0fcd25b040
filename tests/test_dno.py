"""Direct noise optimisation (methods/dno.py, methods/doodl.py, methods/dno_reg.py; methods.md §3.7-3.8):
exact noise gradients, checkpointing, R(Z), reward improvement, the zeroth-order estimators, cost counts."""
from __future__ import annotations

import pytest
import torch

from methods import Cost, Counted, NoiseStream, Sampler, make_method
from methods.dno import NoiseChain
from methods.dno_reg import prob_reg
from methods.protocol import Protocol, run_rounds
from methods.sampling import sample_seeds
from tasks.base import NetDenoiser
from tasks.nets import MLPEps


def noises(n, batch, shape, dtype=torch.float32, seed=0):
    stream = NoiseStream(sample_seeds(seed, 1, batch), shape, dtype=dtype)
    return [stream() for _ in range(n + 1)]


def chain_grad(den, reward, sampler, Z, checkpoint=True, last_k=None):
    """(r(x0(Z)) [B], d sum r / d variables) through NoiseChain."""
    chain = NoiseChain(Counted(den), sampler, Z, last_k, False, checkpoint)
    variables = [chain.Z[r].clone().requires_grad_(True) for r in chain.rows]
    r = reward(chain.forward(variables))
    grads = torch.autograd.grad(r.sum(), variables)
    return chain, variables, r.detach(), grads


def rewards_by_round(task, method, rounds, batch=8, sampler=Sampler("ddpm", steps=10), den=None, reward=None):
    reward = reward or task.rewards["f1-theta2"]
    out = list(run_rounds(method, den or task.oracle("cpu"), reward, Protocol(rounds=rounds), batch=batch,
                          seed=0, sampler=sampler))
    return [float(reward(o["x"]).mean()) for o in out], out


def test_noise_gradient_matches_finite_differences(small_T_tasks):
    task = small_T_tasks["subspace"]
    den = task.oracle("cpu").double()
    reward = task.rewards["f1-theta2"]
    sampler = Sampler("ddpm", steps=6)
    Z = noises(len(sampler.grid(task.schedule)), 3, task.shape, torch.float64)
    chain, variables, _, grads = chain_grad(den, reward, sampler, Z)
    assert len(chain.rows) == 6  # x_T and the 5 injected noises (the last step's draw is unused)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        direction = [torch.randn(v.shape, generator=gen, dtype=torch.float64) for v in variables]
        fd_eps = 1e-5
        with torch.no_grad():
            up = reward(chain.forward([v + fd_eps * d for v, d in zip(variables, direction)]))
            dn = reward(chain.forward([v - fd_eps * d for v, d in zip(variables, direction)]))
        fd = (up - dn) / (2 * fd_eps)                                   # per sample
        an = sum((g * d).flatten(1).sum(1) for g, d in zip(grads, direction))
        torch.testing.assert_close(an, fd, rtol=1e-6, atol=1e-7)
        assert an.abs().min() > 1e-3  # a non-trivial directional derivative


def test_checkpointing_gives_the_same_gradient_and_counts_recompute():
    torch.manual_seed(0)
    from methods.sampling import Schedule

    sched = Schedule(20)
    net = MLPEps(dim=8, width=16, depth=2, temb=16)
    if hasattr(net, "set_schedule"):
        net.set_schedule(sched.alpha_bar.float())
    den = NetDenoiser(net, sched, (8,)).eval()
    for p in den.parameters():
        p.requires_grad_(False)
    reward = lambda x: -(x - 1).pow(2).sum(1)  # noqa: E731
    sampler = Sampler("ddim", eta=1.0, steps=8)
    Z = noises(8, 4, (8,))
    out = {}
    for ck in (True, False):
        cost = Cost()
        chain = NoiseChain(Counted(den, cost), sampler, Z, None, False, ck)
        variables = [chain.Z[r].clone().requires_grad_(True) for r in chain.rows]
        x = chain.forward(variables)
        grads = torch.autograd.grad(reward(x).sum(), variables)
        out[ck] = (x.detach(), grads, (cost.nfe, cost.vjp))
    assert torch.equal(out[True][0], out[False][0])
    for a, b in zip(out[True][1], out[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert out[True][2] == (16, 8) and out[False][2] == (8, 8)  # checkpointing re-runs every forward once


def test_prob_reg_zero_for_typical_noise_and_large_when_shifted():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(16, 51 * 64, generator=gen)
    gens = [torch.Generator().manual_seed(i) for i in range(16)]
    typical = prob_reg(v, gens)
    assert (typical >= 0).all() and typical.mean() < 0.3
    assert (prob_reg(v + 0.3, gens) > 30).all()          # shifted mean
    assert (prob_reg(v * 1.3, gens) > 30).all()          # inflated covariance
    # structure only a permutation sees: the same 4 numbers repeated in every row of the N x d matrix
    rows = torch.randn(16, 1, 4, generator=gen).expand(16, 51 * 16, 4).reshape(16, -1)
    assert (prob_reg(rows, gens) > prob_reg(rows, None)).all()
    with pytest.raises(ValueError, match="per sample"):
        prob_reg(v, gens[:3])


def test_prob_reg_gradient_pulls_back_to_typical():
    v = (torch.randn(2, 1024, generator=torch.Generator().manual_seed(0)) + 0.5).requires_grad_(True)
    (g,) = torch.autograd.grad(prob_reg(v, None, perms=0).sum(), v)
    assert (g.mean(1) > 0).all()  # descending R lowers the mean shift


def test_dno_reward_increases_on_subspace_oracle(small_T_tasks):
    task = small_T_tasks["subspace"]
    r, out = rewards_by_round(task, make_method("dno", {"lr": "0.05"}), 8)
    assert r[-1] > r[0] + 2.0
    assert sum(b > a for a, b in zip(r, r[1:])) >= 6
    # each round costs exactly one iteration: 10 steps -> 20 forwards (with recompute) + 10 VJPs
    assert (out[-1]["cost"].nfe, out[-1]["cost"].vjp) == (10 + 8 * 20, 8 * 10)


@pytest.mark.parametrize("grad,gain", [("hybrid", 1.5), ("zo", 0.3)])
def test_zeroth_order_estimators_improve_reward(grad, gain, small_T_tasks):
    task = small_T_tasks["subspace"]
    method = make_method("dno", {"lr": "0.05", "grad": grad, "zo_samples": "8", "zo_mu": "0.05"})
    # the reward is only ever evaluated without a graph: a non-differentiable reward works
    base = task.rewards["f1-theta2"]

    def reward(x):
        if torch.is_grad_enabled() and x.requires_grad:
            raise AssertionError("zeroth-order DNO differentiated the reward")
        return base(x)

    r, out = rewards_by_round(task, method, 8, reward=reward)
    assert r[-1] > r[0] + gain  # zo (noise-space estimate, D = 704 numbers from 8 probes) is much slower
    assert all(b > a for a, b in zip(r, r[1:]))
    nfe, vjp = method.expected_cost(10)
    assert (out[-1]["cost"].nfe, out[-1]["cost"].vjp) == (10 + 8 * nfe, 8 * vjp)


@pytest.mark.parametrize("grad", ["hybrid", "zo"])
def test_zeroth_order_estimators_are_per_sample(grad, small_T_tasks):
    """Every normalisation and perturbation is per sample: sample i's trajectory does not depend on the batch."""
    task = small_T_tasks["subspace"]
    method = make_method("dno", {"lr": "0.05", "grad": grad, "zo_samples": "3", "zo_mu": "0.05", "gamma": "0.5"})
    _, big = rewards_by_round(task, method, 2, batch=5)
    _, small = rewards_by_round(task, method, 2, batch=2)
    torch.testing.assert_close(small[-1]["x"], big[-1]["x"][:2], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("params", [{"checkpoint": "false"}, {"last_k": "4"}, {"last_k": "4", "grad": "hybrid"},
                                    {"gamma": "1"}])
def test_cost_counts_match_formula(params, small_T_tasks):
    task = small_T_tasks["subspace"]
    method = make_method("dno", params)
    _, out = rewards_by_round(task, method, 2)
    nfe, vjp = method.expected_cost(10)
    assert (out[-1]["cost"].nfe - 10, out[-1]["cost"].vjp) == (2 * nfe, 2 * vjp)


def test_last_k_keeps_earlier_noise_and_round_zero(small_T_tasks):
    task = small_T_tasks["subspace"]
    den = task.oracle("cpu")
    sampler = Sampler("ddpm", steps=10)
    Z = noises(10, 4, task.shape)
    full, fv, _, _ = chain_grad(den, task.rewards["f1-theta2"], sampler, Z)
    part, pv, _, grads = chain_grad(den, task.rewards["f1-theta2"], sampler, Z, last_k=3)
    assert part.rows == [7, 8, 9] and len(grads) == 3  # z_6 (bridge step), z_7, z_8 (z_9 of the last step is unused)
    with torch.no_grad():
        assert torch.equal(full.forward(fv), part.forward(pv))  # the cached prefix is the same chain
    r, out = rewards_by_round(task, make_method("dno", {"last_k": "3", "lr": "0.1"}), 2)
    assert r[0] < r[1] < r[2]  # optimising the last 3 noises alone still raises the reward every round


def test_doodl_renormalises_x_T_and_needs_only_x_T(small_T_tasks):
    task = small_T_tasks["subspace"]
    method = make_method("doodl", {"lr": "0.5"})
    sampler = Sampler("ddim", eta=0.0, steps=10)
    r, _ = rewards_by_round(task, method, 6, sampler=sampler)
    assert r[-1] > r[0] + 0.5
    den = Counted(task.oracle("cpu"))
    stream = NoiseStream(sample_seeds(0, 1, 4), task.shape)
    x_T = NoiseStream(sample_seeds(0, 1, 4), task.shape)()
    seen = []
    list(method._run(den, task.rewards["f1-theta2"], den.cost, stream, sampler, 3, on_step=seen.append))
    assert len(seen) == 3 and all(len(v) == 1 for v in seen)  # eta = 0: only x_T reaches the sample
    for (v,) in seen:
        assert not torch.equal(v, x_T)
        torch.testing.assert_close(v.norm(dim=1), x_T.norm(dim=1))


def test_bad_configurations_raise_clearly(small_T_tasks):
    task = small_T_tasks["subspace"]
    with pytest.raises(ValueError, match="x_T only needs last_k"):
        rewards_by_round(task, make_method("dno", {"only_x_T": "true", "last_k": "3"}), 1)
    with pytest.raises(ValueError, match="nothing to optimise"):
        rewards_by_round(task, make_method("dno", {"last_k": "3"}), 1, sampler=Sampler("ddim", eta=0.0, steps=10))
    with pytest.raises(ValueError, match="algorithm 2"):
        list(run_rounds(make_method("dno"), task.oracle("cpu"), task.rewards["f1-theta2"],
                        Protocol(rounds=1, algorithm=2), batch=2, seed=0))
    with pytest.raises(ValueError, match="zo_mu"):
        make_method("dno", {"grad": "zo", "zo_mu": "0"})
