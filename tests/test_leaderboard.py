"""Leaderboard: flags keep planted bad rows from rank 1, ties, budget reading, bootstrap coverage."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.leaderboard import build_rows, markdown
from bench.leaderboard_stats import bootstrap_ci, read_at_budget, tied

OPTIMUM = 1.0
INFO = lambda task, reward: (2.0, 0.01, OPTIMUM)  # noqa: E731  (tolerance, floor, optimum)


def records(run_id, rewards, offs, rounds=1, nfe=20, vjp=0, status="ok"):
    out = [{"run_id": run_id, "round": 0, "status": "ok", "nfe": 10, "vjp": 0, "reward_mean": 0.0,
            "off_support_mean": 0.0, "reward_per_sample": [0.0] * len(rewards),
            "off_support_per_sample": [0.0] * len(rewards)}]
    for k in range(1, rounds + 1):
        out.append({"run_id": run_id, "round": k, "status": status, "nfe": 10 + k * (nfe - 10), "vjp": k * vjp,
                    "reward_mean": float(np.mean(rewards)), "off_support_mean": float(np.mean(offs)),
                    "reward_per_sample": list(map(float, rewards)), "off_support_per_sample": list(map(float, offs))})
    return out


def entry(method, label=None, rounds=1, seeds=(0,)):
    return {"task": "toy", "reward": "r", "denoiser": "oracle", "network_seed": 0, "method": method,
            "label": label or method, "params": {}, "planned_rounds": rounds,
            "run_ids": {str(s): f"{label or method}-{s}" for s in seeds}, "trials": 4, "tuning_seeds": [9],
            "report_seeds": list(seeds)}


def plan(entries, tiers=(2.0,)):
    return {"c": 2.0, "tiers": list(tiers), "unit": {"toy/r/oracle/0": 10}, "trials": 4, "T": 10,
            "entries": entries, "notes": []}


rng = np.random.default_rng(0)
N = 64
BASE = rng.normal(0.0, 0.1, N)
ON = np.full(N, 0.01)  # the unguided off-support: limit = 2 * 0.01 + 0.01 = 0.03


@pytest.mark.parametrize("planted", ["off-support", "above-optimum"])
def test_planted_bad_row_is_flagged_and_never_first(planted):
    bad_r = BASE + (5.0 if planted == "above-optimum" else 0.9)  # higher than the honest method
    bad_o = ON * (30 if planted == "off-support" else 1)
    recs = (records("unguided-0", BASE, ON) + records("good-0", BASE + 0.5, ON)
            + records("bad-0", bad_r, bad_o))
    rows = build_rows(plan([entry("unguided"), entry("good"), entry("bad")]), recs, INFO)
    by = {r["method"]: r for r in rows}
    assert planted in by["bad"]["flags"].split(",")
    assert by["bad"]["rank"] is None
    assert by["good"]["rank"] == 1 and not by["good"]["flags"]
    assert rows[0]["method"] == "good"  # a flagged row is listed after every ranked one
    md = markdown(rows, plan([]))
    assert "**bad**" not in md and "**good**" in md


def test_no_effect_incomplete_and_diverged_flags():
    recs = (records("unguided-0", BASE, ON) + records("same-0", BASE + 0.001, ON)
            + records("div-0", np.r_[BASE[:-1], np.inf], ON, status="ok")
            + records("short-0", BASE + 0.5, ON, rounds=1))
    ents = [entry("unguided"), entry("same"), entry("div"), entry("short", rounds=3)]
    rows = build_rows(plan(ents), recs, INFO)
    by = {r["method"]: r for r in rows}
    assert "no-effect" in by["same"]["flags"]
    assert "diverged" in by["div"]["flags"]
    assert "incomplete" in by["short"]["flags"]
    assert by["unguided"]["rank"] == 1  # every other row is flagged


def test_ties_with_the_leader_share_rank_one():
    noise = rng.normal(-0.5, 0.3, N)  # common random numbers: the same per-sample noise in every method
    recs = (records("unguided-0", noise, ON) + records("a-0", noise + 0.4, ON)
            + records("b-0", noise + 0.4 - 1e-4 * rng.normal(size=N), ON) + records("c-0", noise + 0.2, ON))
    rows = build_rows(plan([entry("unguided"), entry("a"), entry("b"), entry("c")]), recs, INFO)
    ranks = {r["method"]: r["rank"] for r in rows}
    assert ranks["a"] == 1 and ranks["b"] == 1 and ranks["c"] == 3


def test_iterative_rows_read_at_the_round_fitting_the_tier():
    recs = records("unguided-0", BASE, ON) + records("it-0", BASE + 0.5, ON, rounds=3, nfe=30, vjp=10)
    # cumulative NFE-eq of round k: 10 + 20k + 2 * 10k = 10 + 40k -> 50, 90, 130
    assert read_at_budget(records("x", BASE, ON, rounds=3, nfe=30, vjp=10), 100)["round"] == 2
    rows = build_rows(plan([entry("unguided"), entry("it", rounds=3)], tiers=(2.0, 5.0, 9.0, 14.0)), recs, INFO)
    got = {(r["tier"], r["method"]): r["round"] for r in rows}
    assert ("it" not in {m for (t, m) in got if t == 2.0})  # 50 > 20: not within the smallest tier
    assert got[(5.0, "it")] == 1 and got[(9.0, "it")] == 2 and got[(14.0, "it")] == 3


def test_bootstrap_interval_covers_a_known_mean_at_its_level():
    """Percentile bootstrap of the mean of n = 64 N(mu, 1) samples: coverage ~ 95 %. With 300 replicates the
    binomial SD of the coverage is 1.3 points, so [0.90, 0.99] is about -4 .. +3 SD."""
    gen = np.random.default_rng(123)
    mu, hits, reps = 0.7, 0, 300
    for i in range(reps):
        lo, hi = bootstrap_ci(gen.normal(mu, 1.0, 64), reps=1000, seed=i)
        hits += lo <= mu <= hi
    assert 0.90 <= hits / reps <= 0.99


def test_paired_tie_detects_a_real_difference():
    x = rng.normal(0, 1, 200)
    assert tied(x, x + 1e-3 * rng.normal(size=200))
    assert not tied(x + 0.05, x)  # tiny but consistent paired shift: significant under CRN


def test_time_ratio_excludes_round_zero_and_peak_memory_is_reported():
    """time ratio = guided seconds (wall_s at the read round - wall_s of round 0) over the same runs' round-0
    seconds (sums over seeds), divided by unguided's same quotient; peak MB = the read record's peak_mem_mb, max
    over seeds. Hand-computed from planted wall-clocks."""
    def timed(run_id, walls, mems, **kw):
        recs = records(run_id, BASE + 0.5, ON, **kw)
        for r, w, m in zip(recs, walls, mems):
            r.update(wall_s=w, peak_mem_mb=m)
        return recs
    recs = (timed("unguided-0", [5.0, 6.0], [1, 2]) + timed("unguided-1", [7.0, 8.0], [1, 2])
            + timed("g-0", [5.0, 8.0], [1, 10]) + timed("g-1", [9.0, 10.0], [1, 30])  # guided: 3 s and 1 s
            + timed("it-0", [50.0, 52.0, 56.0], [1, 4, 5], rounds=2, nfe=30, vjp=10)
            + timed("it-1", [1.0, 3.0, 7.0], [1, 6, 7], rounds=2, nfe=30, vjp=10))
    ents = [entry("unguided", seeds=(0, 1)), entry("g", seeds=(0, 1)), entry("it", rounds=2, seeds=(0, 1))]
    rows = build_rows(plan(ents, tiers=(2.0, 5.0, 9.0)), recs, INFO)
    got = {(r["tier"], r["method"]): r for r in rows}
    assert got[(2.0, "unguided")]["time_ratio"] == pytest.approx(1.0)
    u = (1 + 1) / (5 + 7)  # unguided: guided seconds over round-0 seconds
    assert got[(2.0, "g")]["time_ratio"] == pytest.approx((3 + 1) / (5 + 9) / u)
    assert got[(2.0, "g")]["peak_mem_mb"] == 30
    assert got[(5.0, "it")]["time_ratio"] == pytest.approx((2 + 2) / (50 + 1) / u)
    assert got[(5.0, "it")]["peak_mem_mb"] == 6
    assert got[(9.0, "it")]["time_ratio"] == pytest.approx((6 + 6) / (50 + 1) / u)
    assert got[(9.0, "it")]["peak_mem_mb"] == 7
    assert "| time ratio | peak MB |" in markdown(rows, plan(ents))


def test_peak_memory_does_not_see_heap_cached_by_an_earlier_run():
    """50 MB of small (heap, below the mmap threshold) tensors allocated after 200 MB of them were freed: the
    region's peak is their size, not ~0 (glibc would have reused the cached heap without growing the RSS)."""
    import torch

    from bench.measure import PeakMemory
    from bench.runner import release_freed_memory

    chunk = 16 * 1024  # float32 elements: 64 KiB per tensor, under glibc's 128 KiB mmap threshold
    junk = [torch.ones(chunk) for _ in range(3200)]
    del junk
    release_freed_memory()
    with PeakMemory("cpu") as mem:
        keep = [torch.ones(chunk) for _ in range(800)]  # 50 MiB, touched
    assert sum(t.numel() * 4 for t in keep) == 50 * 2**20
    assert 40 <= mem.mb <= 80, mem.mb


def test_first_run_in_a_process_is_warmed_up_before_it_is_measured():
    from bench import runner

    spec = runner.RunSpec(task="subspace", method="dps", batch=4, T=10, steps=3, seed=7)
    key = (spec.task, spec.T, spec.denoiser, spec.network_seed, "cpu")
    runner._WARM.discard(key)
    recs = runner.execute(spec)
    assert key in runner._WARM and [r["status"] for r in recs] == ["ok", "ok"]
    assert recs[1]["wall_s"] > recs[0]["wall_s"] > 0 and recs[1]["peak_mem_mb"] >= 0


def test_measured_c_from_overhead_rows_and_in_process(tmp_path, monkeypatch):
    import json

    from bench import overhead
    from bench.leaderboard_cost import c_from_row, c_note, measured_c

    # unguided: 50 forwards in 1 s (t_F = 0.02 s); look-ahead: 50 F + 50 V in 4 s -> t_V = 0.06 s, c = 3
    row = {"task": "toy", "denoiser": "oracle", "T": 50, "unguided_s": 1.0, "method_s": 4.0, "nfe": 50, "vjp": 50}
    assert c_from_row(row) == pytest.approx(3.0)
    (tmp_path / "overhead.json").write_text(json.dumps({"rows": [row, {**row, "method": "naive", "vjp": 0}]}))

    def boom(*a, **k):
        raise AssertionError("measured although overhead.json has the group")
    monkeypatch.setattr(overhead, "measure_overhead", boom)
    assert measured_c(tmp_path, [("toy", "r", "oracle", 0)], 4, 50) == {"toy/oracle": pytest.approx(3.0)}
    monkeypatch.undo()
    got = measured_c(tmp_path / "none", [("subspace", "f1-theta2", "oracle", 0)], batch=4, T=10, rounds=1)
    assert set(got) == {"subspace/oracle"} and got["subspace/oracle"] > 0  # a VJP takes time
    note = c_note(2.0, {"toy/oracle": 3.0})
    assert note.startswith("c = 2 (measured here: toy/oracle 3;")
    md = markdown([], {**plan([]), "c_measured": {"toy/oracle": 3.0}})
    assert "NFE-eq: c = 2 (measured here: toy/oracle 3;" in md


def test_heldout_reward_column_only_for_tasks_with_a_heldout_evaluator():
    recs = records("unguided-0", BASE, ON) + records("g-0", BASE + 0.5, ON)
    ents = [entry("unguided"), entry("g")]
    rows = build_rows(plan(ents), recs, INFO)
    assert all(math.isnan(r["heldout_reward"]) for r in rows)
    assert "held-out reward" not in markdown(rows, plan(ents))
    for r in recs:
        r["metrics"] = {"heldout_reward": -1.0 if r["run_id"] == "g-0" else -2.0}
    rows = build_rows(plan(ents), recs, INFO)
    assert {r["method"]: r["heldout_reward"] for r in rows} == {"g": -1.0, "unguided": -2.0}
    md = markdown(rows, plan(ents))
    assert "| held-out reward | NFE-eq |" in md and "] | -1 | 20 |" in md
