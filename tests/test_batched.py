"""Batched sweeps (bench/batched.py): grouped records equal runs made one by one; non-batchable methods and bad
groups fall back to one run at a time; the row cap splits groups; an interrupted group loses only itself."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from bench import batched
from bench.batched import execute_group, plan_groups
from bench.executors import SerialExecutor
from bench.runner import RunSpec, execute
from bench.suite import Interrupted, run_suite
from methods import REGISTRY
from methods.base import is_batchable
from methods.lookahead import LookAhead

TIMING = {"wall_s", "peak_mem_mb", "date", "group"}  # measured, not computed: attributed per run in a group


def spec(**kw) -> RunSpec:
    return RunSpec(**{"rounds": 2, "batch": 4, "T": 12, **kw})


SWEEP = [spec(params={"beta_coef": b}, seed=s) for b in (0.5, 2.0) for s in (0, 1)]


def same_records(a: list[dict], b: list[dict]) -> None:
    assert [r["round"] for r in a] == [r["round"] for r in b]
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {k: v for k, v in rb.items() if k not in TIMING}


def test_group_records_equal_runs_one_by_one():
    assert plan_groups(SWEEP) == [[0, 1, 2, 3]]
    grouped = execute_group(SWEEP)
    for s, recs in zip(SWEEP, grouped):
        same_records(recs, execute(s))
    tilted = [spec(method="best-of-n", params={"lam": v}, rounds=1, seed=s) for v in (0.5, 2.0) for s in (0, 1)]
    for s, recs in zip(tilted, execute_group(tilted)):  # per-run metrics too (the tilt each run's lam declares)
        same_records(recs, execute(s))
        assert recs[-1]["group"]["runs"] == 4 and "tilt_lambda" in recs[-1]["metrics"]
        assert all(r["run_id"] == s.run_id and r["status"] == "ok" for r in recs)
    last = [recs[-1] for recs in grouped]
    g = last[0]["group"]
    assert g["runs"] == 4 and g["rows"] == 16
    assert sum(r["wall_s"] for r in last) == pytest.approx(g["wall_s"])  # each run: its share of the rows
    assert sum(r["peak_mem_mb"] for r in last) == pytest.approx(g["peak_mem_mb"])


@dataclass(frozen=True)
class Changed(LookAhead):  # a subclass may change the maths: batchable is not inherited
    name = "look-ahead-changed"


def test_non_batchable_methods_run_alone(monkeypatch):
    monkeypatch.setitem(REGISTRY, Changed.name, Changed)
    assert is_batchable(LookAhead) and not is_batchable(Changed)
    alone = [spec(method=Changed.name, seed=s) for s in (0, 1)]
    mixed = (SWEEP[:2] + alone + [spec(method="dno", seed=0), spec(params={"beta_coef": 0.0}, seed=0),
                                  spec(algorithm=2, denoiser="trained")])
    assert plan_groups(mixed) == [[0, 1], [2], [3], [4], [5], [6]]  # zero strength apart, Algorithm 2 alone
    for s, recs in zip(alone, execute_group(alone)):  # a group of non-batchable runs still runs (one by one)
        same_records(recs, execute(s))
        assert "group" not in recs[-1]


def test_a_failing_group_falls_back_to_single_runs(monkeypatch):
    def boom(specs):
        raise RuntimeError("stacked pass failed")

    monkeypatch.setattr(batched, "_run_group", boom)
    for s, recs in zip(SWEEP[:2], execute_group(SWEEP[:2])):
        same_records(recs, execute(s))
        assert "group" not in recs[-1]


def test_row_cap_splits_groups_and_workers_get_work(monkeypatch):
    monkeypatch.setattr(batched, "DEFAULT_GROUP_ELEMENTS", 64 * 8)  # the default cap follows the sample size
    assert batched.default_rows(SWEEP[0]) == 8 and plan_groups(SWEEP) == [[0, 1], [2, 3]]
    monkeypatch.setenv("GUIDANCE_BENCH_GROUP_ROWS", "12")
    assert plan_groups(SWEEP) == [[0, 1, 2], [3]]
    monkeypatch.delenv("GUIDANCE_BENCH_GROUP_ROWS")
    monkeypatch.setattr(batched, "DEFAULT_GROUP_ELEMENTS", 2**22)
    assert plan_groups(SWEEP, group_rows=8) == [[0, 1], [2, 3]]
    assert plan_groups(SWEEP, group_rows=12) == [[0, 1, 2], [3]]
    assert plan_groups(SWEEP, group_rows=3) == [[0], [1], [2], [3]]  # a run larger than the cap runs alone
    assert plan_groups(SWEEP, workers=2) == [[0, 1], [2, 3]]
    assert plan_groups(SWEEP[:1], workers=4) == [[0]]
    with pytest.raises(ValueError):
        plan_groups(SWEEP, group_rows=0)


def test_interrupted_group_is_lost_alone_then_resume_completes(tmp_path, monkeypatch):
    """Two groups (cap 8 rows); SIGINT while the second is in flight: the first group's runs are on disk whole,
    none of the second; resuming runs only the second, and the records equal an unbatched sweep's."""
    real, calls = batched.execute_group, []

    def interrupted(specs):
        calls.append(len(specs))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(specs)

    monkeypatch.setattr(batched, "execute_group", interrupted)
    with pytest.raises(Interrupted):
        run_suite(SWEEP, tmp_path / "b", SerialExecutor(), progress=False, log=lambda m: None, group_rows=8)
    on_disk = [json.loads(x) for x in (tmp_path / "b" / "records.jsonl").read_text().splitlines()]
    assert {r["run_id"] for r in on_disk} == {s.run_id for s in SWEEP[:2]} and len(on_disk) == 2 * 3
    monkeypatch.setattr(batched, "execute_group", real)
    counts = run_suite(SWEEP, tmp_path / "b", SerialExecutor(), progress=False, log=lambda m: None, group_rows=8)
    assert (counts["skipped"], counts["ran"], counts["failed"]) == (2, 2, 0)
    run_suite(SWEEP, tmp_path / "one", SerialExecutor(), progress=False, log=lambda m: None, group_rows=4)

    def by_key(d):
        rows = [json.loads(x) for x in (tmp_path / d / "records.jsonl").read_text().splitlines()]
        return {(r["run_id"], r["round"]): r for r in rows}

    b, one = by_key("b"), by_key("one")
    assert set(b) == set(one) and len(b) == 4 * 3
    assert all("group" not in r for r in one.values())  # cap = the batch: one run per group, run alone
    for k in b:
        same_records([b[k]], [one[k]])


@pytest.mark.parametrize("env, arg", [("lots", []), ("0", []), (None, ["--group-rows", "0"])])
def test_bad_group_rows_is_bad_input(tmp_path, monkeypatch, capsys, env, arg):
    from bench.cli import main

    suite = tmp_path / "s.toml"
    suite.write_text('batch = 2\nT = 4\n[[grid]]\ntasks = ["subspace"]\nmethods = ["naive"]\n')
    if env is not None:
        monkeypatch.setenv("GUIDANCE_BENCH_GROUP_ROWS", env)
    try:
        code = main(["suite", str(suite), "--out", str(tmp_path / "o"), "--no-report", *arg])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "bench suite: error:" in err, err
    assert ("GUIDANCE_BENCH_GROUP_ROWS" if env else "--group-rows") in err
    assert not (tmp_path / "o" / "records.jsonl").exists()
