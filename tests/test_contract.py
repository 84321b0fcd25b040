"""The shared contract suite: every registered method, no special cases (DESIGN.md §4)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from methods import REGISTRY, Cost, Counted, NoiseStream, Objective, Sampler, make_method
from methods.protocol import Protocol, run_rounds
from methods.sampling import sample_seeds

METHODS = sorted(REGISTRY)
SAMPLERS = [Sampler("ddpm"), Sampler("ddim", eta=0.5, steps=7)]


def one_round(task, method, batch=6, seed=3, sampler=Sampler()):
    den = task.oracle("cpu")
    out = list(run_rounds(method, den, task.rewards[next(iter(task.rewards))], Protocol(rounds=1),
                          batch=batch, seed=seed, sampler=sampler))
    return out[-1]["x"], out[-1]["cost"]


def zero_strength(cls):
    m = cls()
    if cls.strength is None:
        return m
    return dataclasses.replace(m, **{cls.strength: 0.0})


def unguided_by_hand(task, sampler, batch=6, seed=3):
    """The ancestral loop written out (not the unguided method): x_T, then one draw per step, from the
    per-sample streams of round 1; x0_hat by Tweedie."""
    den = Counted(task.oracle("cpu"))
    noise = NoiseStream(sample_seeds(seed, 1, batch), task.shape)
    x = noise()
    for t, t_prev in sampler.grid(task.schedule):
        alpha, h = task.schedule.coeffs(t)
        eps = den.eps(x, t)
        x = sampler.step(task.schedule, x, (x - h**0.5 * eps) / alpha, eps, t, t_prev, noise())
    return x


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("task_name", ["subspace", "sphere"])
def test_zero_strength_is_unguided(name, task_name, small_T_tasks):
    """Zero strength reproduces the written-out unguided loop bit for bit (for ``unguided`` itself this checks
    the shared loop: stream, draw order, Tweedie)."""
    task = small_T_tasks[task_name]
    for sampler in SAMPLERS:
        x0, _ = one_round(task, zero_strength(REGISTRY[name]), sampler=sampler)
        assert torch.equal(x0, unguided_by_hand(task, sampler)), f"{name} with zero strength is not unguided ({sampler})"


@pytest.mark.parametrize("name", METHODS)
def test_guidance_changes_samples(name, small_T_tasks):
    cls = REGISTRY[name]
    if cls.strength is None:
        pytest.skip("method has no guidance strength")
    task = small_T_tasks["subspace"]
    xg, _ = one_round(task, cls())
    xu, _ = one_round(task, REGISTRY["unguided"]())
    assert not torch.allclose(xg, xu), f"{name} at default strength does nothing"


@pytest.mark.parametrize("name", METHODS)
def test_seed_determinism(name, small_T_tasks):
    task = small_T_tasks["sphere"]
    a, _ = one_round(task, REGISTRY[name](), seed=11)
    b, _ = one_round(task, REGISTRY[name](), seed=11)
    c, _ = one_round(task, REGISTRY[name](), seed=12)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", METHODS)
def test_batch_size_independence(name, small_T_tasks):
    task = small_T_tasks["subspace"]
    big, _ = one_round(task, REGISTRY[name](), batch=8)
    small, _ = one_round(task, REGISTRY[name](), batch=3)
    torch.testing.assert_close(small, big[:3], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("sampler", SAMPLERS, ids=["ddpm", "ddim7"])
def test_exact_cost_counts(name, sampler, small_T_tasks):
    task = small_T_tasks["subspace"]
    method = REGISTRY[name]()
    _, cost = one_round(task, method, sampler=sampler)
    steps = len(sampler.grid(task.schedule))
    nfe, vjp = method.expected_cost(steps)
    assert (cost.nfe - steps, cost.vjp) == (nfe, vjp), f"{name}: counted {cost} vs formula {(nfe, vjp)}"


@pytest.mark.parametrize("name", METHODS)
def test_bad_parameter_rejected(name):
    from methods import UnknownName

    with pytest.raises(UnknownName, match="unknown parameter"):
        make_method(name, {"no_such_parameter": "1"})
    cls = REGISTRY[name]
    for f in dataclasses.fields(cls):
        if f.metadata.get("min") is not None and ("float" in str(f.type) or "int" in str(f.type)):
            low = f.metadata["min"] - 1
            with pytest.raises(ValueError, match="must be >="):
                make_method(name, {f.name: str(int(low)) if "int" in str(f.type) else str(float(low))})
            if "float" in str(f.type):
                with pytest.raises(ValueError, match="finite"):
                    make_method(name, {f.name: "nan"})


@pytest.mark.parametrize("name", METHODS)
def test_search_space_declared_and_valid(name):
    """Every method declares its own tuning space (not inherited), naming real fields with valid ranges."""
    from methods.search import check_space

    cls = REGISTRY[name]
    assert "search_space" in cls.__dict__, f"{name}: declare search_space on the class (methods/search.py)"
    assert check_space(cls) == []
    if cls.strength is not None:
        assert cls.strength in cls.search_space
