"""pytest-benchmark timings: one guided sampling pass (GGDM round 1 after the unguided round 0) of every
registered method on each simulation task with the exact oracle denoiser and a short schedule.

Not part of the default test run. Run with ``pytest benchmarks --benchmark-only``; reward, off-support and the
exact counts go to ``extra_info`` (pytest-benchmark compares only timings; ``bench compare`` checks the rest).
"""
import pytest

from bench.runner import RunSpec, build, evaluate
from methods import REGISTRY
from methods.protocol import run_rounds

TASKS = ("subspace", "sphere")
T, BATCH = 50, 16


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_guided_pass(benchmark, task, method):
    spec = RunSpec(task=task, reward="linear" if task == "sphere" else "f1-theta2", denoiser="oracle",
                   method=method, rounds=1, batch=BATCH, T=T, seed=0)
    b = build(spec)
    den = b.task.denoiser("oracle", b.device)

    def setup():  # a fresh run advanced past its unguided round 0; the timed call draws round 1
        gen = run_rounds(b.method, den, b.reward, b.protocol, batch=BATCH, seed=0, sampler=b.sampler, device=b.device)
        first = next(gen)
        return (gen, first["cost"].as_dict()), {}

    def guided_pass(gen, cost0):
        return next(gen), cost0

    benchmark.group = f"{task} T={T} B={BATCH}"
    out, cost0 = benchmark.pedantic(guided_pass, setup=setup, rounds=3, iterations=1, warmup_rounds=0)
    assert out["round"] == 1
    stats = evaluate(b.task, b.reward, out["x"])
    cost = out["cost"].as_dict()
    benchmark.extra_info.update(
        reward_mean=stats["reward_mean"], reward_se=stats["reward_se"], off_support_mean=stats["off_support_mean"],
        **{f"{k}_guided_pass": cost[k] - cost0.get(k, 0) for k in cost})
