"""pytest-benchmark: batched sweeps (issue 14) against the same runs one by one, in one process.

Each case is a sweep of 16 strengths x 4 seeds (64 runs of B = 32, T = 200) sharing task, reward, denoiser and
protocol. The timed call is ``bench.batched.execute_group`` on all 64 runs (one stacked batch of 2048 rows). One by
one, every run costs the same (the strength and the seed change no operation count), so ``SINGLES`` runs
(default 8, evenly spread over the sweep; ``BATCHED_BENCH_SINGLES=64`` times them all) are timed with
``bench.runner.execute`` between the batched rounds, under the same load, and the one-by-one time of the sweep is
their mean x 64. ``extra_info``: the ratio, both times (wall-clock and CPU time of this process, ``cpu_speedup``:
the same ratio in CPU time, less sensitive to other jobs on a shared machine), and that every checked run's records
match (values of the final round equal to 1e-6 relative). Run:

    python -m pytest benchmarks/test_batched_speed.py --benchmark-only --benchmark-json OUT.json
"""
import os
import statistics
import time

import numpy as np
import pytest

from bench.batched import execute_group
from bench.runner import RunSpec, execute
from methods import get_method
from methods.search import unit_to_value

STRENGTHS, SEEDS, BATCH, T = 16, 4, 32, 200
SINGLES = int(os.environ.get("BATCHED_BENCH_SINGLES", "8"))
ROUNDS = 2  # batched passes; the singles are spread over them

CASES = {  # name -> (task, reward, denoiser, method, rounds)
    "subspace-oracle-lookahead-alg1": ("subspace", "f1-theta2", "oracle", "look-ahead", 10),
    "subspace-trained-lookahead-alg1": ("subspace", "f1-theta2", "trained", "look-ahead", 10),
    "sphere-trained-lookahead-alg1": ("sphere", None, "trained", "look-ahead", 10),
    "subspace-oracle-dps-oneshot": ("subspace", "f1-theta2", "oracle", "dps", 1),
}


def sweep(task, reward, denoiser, method, rounds) -> list[RunSpec]:
    if reward is None:
        from tasks import get_task

        reward = next(iter(get_task(task, T).rewards))
    cls = get_method(method)
    dim = cls.strength
    values = [unit_to_value(cls.search_space[dim], (j + 0.5) / STRENGTHS) for j in range(STRENGTHS)]
    return [RunSpec(task=task, reward=reward, denoiser=denoiser, method=method, params={dim: v}, rounds=rounds,
                    batch=BATCH, T=T, seed=s) for v in values for s in range(SEEDS)]


@pytest.mark.parametrize("case", list(CASES))
def test_batched_sweep(benchmark, case):
    specs = sweep(*CASES[case])
    picks = np.linspace(0, len(specs) - 1, SINGLES).round().astype(int).tolist()
    per_round = [picks[i::ROUNDS] for i in range(ROUNDS)]
    single_s, single_cpu, batched_cpu, grouped, singles = [], [], [], {}, {}
    execute(specs[0])  # warm-up (network load, lazy init), untimed
    it = iter(range(ROUNDS + 1))

    def setup():  # between batched passes: this pass's share of the one-by-one runs
        k = next(it)
        for i in per_round[k - 1] if k else []:
            t0, c0 = time.perf_counter(), time.process_time()
            singles[i] = execute(specs[i])
            single_s.append(time.perf_counter() - t0)
            single_cpu.append(time.process_time() - c0)
        return (), {}

    def batched():
        c0 = time.process_time()
        out = execute_group(specs)
        batched_cpu.append(time.process_time() - c0)
        return out

    benchmark.group = "batched sweep (16 strengths x 4 seeds, B=32, T=200)"
    out = benchmark.pedantic(batched, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    setup()  # the last share of singles, after the last batched pass
    grouped = dict(enumerate(out))
    worst = 0.0
    for i, recs in singles.items():
        a, b = recs[-1], grouped[i][-1]
        assert a["run_id"] == b["run_id"] and a["round"] == b["round"] and a["status"] == b["status"] == "ok"
        for k in ("reward_mean", "off_support_mean"):
            worst = max(worst, abs(a[k] - b[k]) / max(abs(a[k]), 1e-12))
    assert worst <= 1e-6, f"batched records differ from one-by-one runs: {worst:.2e}"
    batched_s = statistics.median(benchmark.stats.stats.data)
    one_by_one_s = statistics.fmean(single_s) * len(specs)
    benchmark.extra_info.update(
        runs=len(specs), rows=len(specs) * BATCH, rounds=specs[0].rounds, singles_timed=len(single_s),
        single_run_s=single_s, one_by_one_s=one_by_one_s, batched_s=batched_s,
        speedup=one_by_one_s / batched_s, worst_rel_diff=worst, single_run_cpu_s=single_cpu, batched_cpu_s=batched_cpu,
        cpu_speedup=statistics.fmean(single_cpu) * len(specs) / statistics.median(batched_cpu),
        group_wall_s=out[0][-1]["group"]["wall_s"])
