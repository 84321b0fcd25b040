"""``bench compare``: exact on counts, SE-aware on reward / off-support, time only as a ratio to unguided."""
import json

import pytest

from bench.cli import main
from bench.compare import Tolerance, compare
from bench.executors import SerialExecutor
from bench.records import read_records
from bench.runner import RunSpec
from bench.suite import run_suite

SPECS = [RunSpec(task="subspace", reward="f1-theta2", method=m, params=p, rounds=2, batch=4, T=10, seed=s)
         for m, p in (("unguided", {}), ("naive", {}), ("look-ahead", {"delta": 0.9})) for s in (0, 1)]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same small suite run twice into two directories."""
    d = tmp_path_factory.mktemp("cmp")
    for name in ("base", "new"):
        run_suite(SPECS, d / name, SerialExecutor(), progress=False, log=lambda m: None)
    return d / "base", d / "new"


def perturb(src, dst, fn):
    dst.mkdir(exist_ok=True)
    rows = [fn(dict(r)) for r in read_records(src)]
    (dst / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


def test_unchanged_rerun_passes(two_runs, capsys):
    base, new = two_runs
    assert main(["compare", str(base), str(new)]) == 0
    assert "6 runs matched, 0 missing from NEW, 0 only in NEW, 0 regressions" in capsys.readouterr().out


@pytest.mark.parametrize("field, change, metric", [
    ("reward_mean", lambda v: v - 5.0, "reward_mean"),
    ("off_support_mean", lambda v: v + 1.0, "off_support_mean"),
    ("nfe", lambda v: v + 1, "nfe"),
    ("vjp", lambda v: v - 1, "vjp"),
    ("reward_calls", lambda v: v + 2, "reward_calls"),
    ("wall_s", lambda v: v * 5 + 10, "time/unguided"),
])
def test_planted_regression_is_flagged(two_runs, tmp_path, capsys, field, change, metric):
    base, new = two_runs

    def fn(r):
        if r["method"] == "look-ahead" and r["seed"] == 1 and r["round"] == 2:
            r[field] = change(r[field])
        return r
    bad = perturb(new, tmp_path / "bad", fn)
    timing = ["--min-time", "0"] if field == "wall_s" else ["--no-time"]  # sub-second times are noise otherwise
    assert main(["compare", str(base), str(bad), *timing]) == 1
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if f"| {metric}" in line]
    assert any("look-ahead delta=0.9 seed=1" in line for line in flagged)
    if field != "wall_s":
        assert "1 regressions" in out


def test_tolerance_scales_with_standard_errors_and_time_is_relative(two_runs, tmp_path):
    base, new = two_runs
    b = read_records(base)
    small = perturb(new, tmp_path / "small", lambda r: {**r, "reward_mean": r["reward_mean"] - 0.5 * r["reward_se"]})
    assert compare(b, read_records(small))["regressions"] == []
    # every run (unguided too) twice as slow: a slower machine, not a regression
    b = [{**r, "wall_s": r["wall_s"] + 1} for r in b]  # times as in seconds-long runs: ratios comparable
    slow = perturb(base, tmp_path / "slow", lambda r: {**r, "wall_s": (r["wall_s"] + 1) * 2})
    assert compare(b, read_records(slow))["regressions"] == []
    # the guided run alone 3x slower is beyond the generous default (the ratio may double)
    fn = (lambda r: {**r, "wall_s": (r["wall_s"] + 1) * (3 if r["method"] == "naive" else 1)})
    res = compare(b, read_records(perturb(base, tmp_path / "naive", fn)))
    assert len(res["regressions"]) == 2 and all("time/unguided" in m for m in res["regressions"])
    assert compare(b, read_records(perturb(base, tmp_path / "naive2", fn)), Tolerance(time_tol=5))["regressions"] == []


def test_failed_run_and_missing_runs(two_runs, tmp_path, capsys):
    base, new = two_runs
    rows = read_records(new)
    rid = next(r["run_id"] for r in rows if r["method"] == "naive")
    kept = [r for r in rows if r["run_id"] != rid or r["round"] == 0]
    kept.append({**kept[0], "run_id": rid, "round": None, "status": "error", "error": "boom", "method": "naive"})
    d = tmp_path / "fail"
    d.mkdir()
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    assert main(["compare", str(base), str(d)]) == 1
    assert "boom" in capsys.readouterr().out
    partial = perturb(new, tmp_path / "part", lambda r: r)
    lines = (partial / "records.jsonl").read_text().splitlines()
    (partial / "records.jsonl").write_text("\n".join(lines[3:]) + "\n")  # first run gone
    assert main(["compare", str(base), str(partial)]) == 0
    assert main(["compare", str(base), str(partial), "--fail-missing"]) == 1
    assert main(["compare", str(base), str(partial), "--z", "-1"]) == 2
