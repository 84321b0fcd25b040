"""pytest-benchmark timings: one guided sampling pass (GGDM round 1 after the unguided round 0) of every
registered method on each simulation task with the exact oracle denoiser and a short schedule.

Not part of the default test run. Each round first draws the run's unguided round 0 (timed too), then the timed
guided pass, so every round yields a guided/unguided time ratio measured moments apart under the same load; one
warm-up round is discarded. ``extra_info`` holds the per-round log ratios, reward, off-support and the pass's
exact counts; ``benchmarks/gate.py`` compares two saved runs on those ratios (README: "Timing gate").
"""
import math
import statistics
import time

import pytest

from bench.runner import RunSpec, build, evaluate
from methods import REGISTRY
from methods.protocol import run_rounds

TASKS = ("subspace", "sphere")
T, BATCH = 50, 16
ROUNDS, WARMUP = 7, 1  # at least; --benchmark-min-rounds raises ROUNDS


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_guided_pass(benchmark, request, task, method):
    spec = RunSpec(task=task, reward="linear" if task == "sphere" else "f1-theta2", denoiser="oracle",
                   method=method, rounds=1, batch=BATCH, T=T, seed=0)
    b = build(spec)
    den = b.task.denoiser("oracle", b.device)
    unguided_s, guided_s = [], []

    def setup():  # a fresh run advanced past its unguided round 0 (timed); the timed call draws round 1
        gen = run_rounds(b.method, den, b.reward, b.protocol, batch=BATCH, seed=0, sampler=b.sampler, device=b.device)
        t0 = time.perf_counter()
        first = next(gen)
        unguided_s.append(time.perf_counter() - t0)
        return (gen, first["cost"].as_dict()), {}

    def guided_pass(gen, cost0):
        t0 = time.perf_counter()
        out = next(gen)
        guided_s.append(time.perf_counter() - t0)
        return out, cost0

    rounds = max(ROUNDS, request.config.getoption("benchmark_min_rounds", ROUNDS) or ROUNDS)
    benchmark.group = f"{task} T={T} B={BATCH}"
    out, cost0 = benchmark.pedantic(guided_pass, setup=setup, rounds=rounds, iterations=1, warmup_rounds=WARMUP)
    assert out["round"] == 1
    stats = evaluate(b.task, b.reward, out["x"])
    cost = out["cost"].as_dict()
    pairs = list(zip(guided_s, unguided_s))[WARMUP:WARMUP + rounds]
    log_ratio = [math.log(g / u) for g, u in pairs if g > 0 and u > 0]
    benchmark.extra_info.update(
        log_ratio_to_unguided=log_ratio, unguided_pass_s=[u for _, u in pairs],
        ratio_to_unguided=math.exp(statistics.fmean(log_ratio)) if log_ratio else None,
        reward_mean=stats["reward_mean"], reward_se=stats["reward_se"], off_support_mean=stats["off_support_mean"],
        **{f"{k}_guided_pass": cost[k] - cost0.get(k, 0) for k in cost})
