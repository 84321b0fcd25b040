"""Contract for batched sweeps (bench/batched.py), over the whole registry: for every batchable method, a stacked
group of runs with different seeds and different values of every ``batch_params`` field reproduces the runs made one
by one: samples of every round and exact counts. Bit for bit where the method is batch-size independent bit for bit
(the same run at batch 4 and as the first rows of batch 12), else within 1e-6 relative (issue 14)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from methods import REGISTRY, Sampler, make_method
from methods.base import is_batchable
from methods.protocol import Protocol, run_rounds
from methods.search import Choice, unit_to_value

METHODS = sorted(REGISTRY)
B, ROUNDS, SEEDS = 4, 2, (3, 4, 5)
UNITS = (0.2, 0.55, 0.85)  # positions in each batched dimension: three different values
SAMPLER = Sampler("ddpm", steps=6)  # a short strided grid: cheap, and the strided step is covered


def variants(cls, structure: dict) -> list:
    """Three methods with different values of every batched parameter (search space positions, else the default
    scaled), sharing the structural parameters ``structure``."""
    space = cls.search_space or {}
    out = []
    for j, u in enumerate(UNITS):
        p = dict(structure)
        for i, k in enumerate(cls.batch_params):
            if k in space and not isinstance(space[k], Choice):
                p[k] = unit_to_value(space[k], (u + 0.13 * i) % 1.0)
            else:
                default = next(f.default for f in dataclasses.fields(cls) if f.name == k)
                p[k] = (1.0 if default is None else default) * (1 + 0.5 * j)
        out.append(make_method(cls.name, p))
    return out


def rounds_of(method, task, seed, batch, runs=None):
    out = list(run_rounds(method, task.oracle("cpu"), task.rewards[next(iter(task.rewards))], Protocol(ROUNDS),
                          batch=batch, seed=seed, sampler=SAMPLER, runs=runs))
    return [o["x"] for o in out], out[-1]["cost"].as_dict()


def structures(cls) -> list[dict]:
    """The default structure, and every Choice dimension of the search space at its last option."""
    choices = {k: d.values[-1] for k, d in (cls.search_space or {}).items() if isinstance(d, Choice)}
    return [{}] + ([choices] if choices else [])


@pytest.mark.parametrize("name", METHODS)
def test_batched_group_equals_separate_runs(name, small_T_tasks):
    cls = REGISTRY[name]
    if not is_batchable(cls):
        pytest.skip(f"{name} is not batchable (runs one at a time; tests/test_batched.py checks the fallback)")
    assert not cls.iterative, f"{name}: an iterative method cannot be batchable"
    fields = {f.name for f in dataclasses.fields(cls)}
    assert set(cls.batch_params) <= fields, f"{name}: batch_params name unknown fields"
    task = small_T_tasks["subspace"]
    alone, first_of_12 = rounds_of(cls(), task, SEEDS[0], B)[0][-1], rounds_of(cls(), task, SEEDS[0], 3 * B)[0][-1]
    bitwise = torch.equal(alone, first_of_12[:B])
    for structure in structures(cls):
        ms = variants(cls, structure)
        stacked = cls.stack(ms, [B] * len(ms))
        for k in cls.batch_params:  # the test exercises the per-sample path of every batched parameter
            assert isinstance(getattr(stacked, k), torch.Tensor), f"{name}: {k} did not become per-sample"
        xs, cost = rounds_of(stacked, task, 0, 0, runs=[(s, B) for s in SEEDS])
        for j, (m, s) in enumerate(zip(ms, SEEDS)):
            ref, ref_cost = rounds_of(m, task, s, B)
            assert cost == ref_cost, f"{name}: group counts {cost} vs alone {ref_cost}"
            for k, (x, r) in enumerate(zip(xs, ref)):
                got = x[j * B:(j + 1) * B]
                if bitwise:
                    assert torch.equal(got, r), f"{name} {structure}: run {j} round {k} differs in the group"
                else:
                    err = float((got - r).abs().max() / r.abs().max())
                    assert err <= 1e-6, f"{name} {structure}: run {j} round {k} relative error {err:.2e}"


@pytest.mark.parametrize("name", METHODS)
def test_batch_key_separates_zero_strength(name):
    """A zero strength takes the unguided branch (different noise draws), so it never shares a batch with a
    non-zero one; any other value of a batched parameter may."""
    cls = REGISTRY[name]
    if not is_batchable(cls) or cls.strength not in cls.batch_params:
        pytest.skip(f"{name}: strength not batched")
    on = dataclasses.replace(cls(), **{cls.strength: 0.5}).batch_key()
    assert dataclasses.replace(cls(), **{cls.strength: 0.0}).batch_key() != on
    assert dataclasses.replace(cls(), **{cls.strength: 0.123}).batch_key() == on
