"""``bench compare``: exact on counts, strict on missing runs, status and rounds, explains unmatched runs and
provenance, time only as a ratio to unguided against the timing noise in the data."""
import json
import math

import pytest

from bench.cli import main
from bench.compare import Tolerance, compare, time_noise
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


def write(dst, rows):
    dst.mkdir(exist_ok=True)
    (dst / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


def perturb(src, dst, fn):
    return write(dst, [x for x in (fn(dict(r)) for r in read_records(src)) if x is not None])


def target(r):
    """The run the planted changes hit: look-ahead, seed 1, final round."""
    return r["method"] == "look-ahead" and r["seed"] == 1 and r["round"] == 2


def shift(r, key, by):
    """Shift every per-sample value of ``key`` and its mean consistently."""
    r[f"{key}_per_sample"] = [v + by for v in r[f"{key}_per_sample"]]
    r[f"{key}_mean"] += by
    return r


def steady_time(r):
    """A known wall-clock per (method, seed, round): round 0 is the same unguided pass for every method, with a
    1 % spread between seeds, so the timing noise the comparison estimates is small and equal on both sides."""
    per_round = {"unguided": 1.0, "naive": 1.2, "look-ahead": 2.0}[r["method"]]
    return {**r, "wall_s": (1 + 0.01 * r["seed"]) * (1 + per_round * r["round"])}


def test_unchanged_rerun_passes(two_runs, capsys):
    base, new = two_runs
    assert main(["compare", str(base), str(new)]) == 0
    cap = capsys.readouterr()
    assert "6 runs matched, 0 missing from NEW, 0 only in NEW, 0 regressions" in cap.out
    assert "| torch" in cap.out and "warning" not in cap.err  # provenance table, identical sides
    assert main(["compare", str(base), str(new), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["exit"], res["regressions"], res["missing"], res["added"], res["matched"]) == (0, [], [], [], 6)
    assert res["provenance"]["differs"] == [] and res["provenance"]["base"]["torch"]


@pytest.mark.parametrize("change, metric", [
    (lambda r: shift(r, "reward", -5.0), "reward_mean"),
    (lambda r: shift(r, "off_support", 1.0), "off_support_mean"),
    (lambda r: {**r, "reward_mean": r["reward_mean"] - 5.0, "reward_per_sample": None}, "reward_mean"),  # unpaired
    (lambda r: {**r, "nfe": r["nfe"] + 1}, "nfe"),
    (lambda r: {**r, "vjp": r["vjp"] - 1}, "vjp"),
    (lambda r: {**r, "reward_calls": r["reward_calls"] + 2}, "reward_calls"),
    (lambda r: {**r, "wall_s": r["wall_s"] * 5 + 10}, "time/unguided"),
])
def test_planted_regression_is_flagged(two_runs, tmp_path, capsys, change, metric):
    base, new = two_runs
    timing = ["--no-time"]
    if metric.startswith("time"):  # measured sub-second times are noise: give both sides steady, known times
        base, new = (perturb(d, tmp_path / f"steady-{d.name}", steady_time) for d in (base, new))
        timing = ["--min-time", "0"]
    bad = perturb(new, tmp_path / "bad", lambda r: change(r) if target(r) else r)
    assert main(["compare", str(base), str(bad), *timing]) == 1
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if f"| {metric}" in line and "REGRESSION" in line]
    assert len(flagged) == 1 and "look-ahead delta=0.9 seed=1" in flagged[0]
    assert "1 regressions" in out


def test_status_round_and_incomplete_are_regressions(two_runs, tmp_path, capsys):
    base, new = two_runs
    rid = next(r["run_id"] for r in read_records(new) if r["method"] == "naive" and r["seed"] == 0)
    err = perturb(new, tmp_path / "err", lambda r: None if r["run_id"] == rid and r["round"] > 0 else r)
    rows = read_records(err) + [{**read_records(err)[0], "run_id": rid, "method": "naive", "round": 1,
                                 "status": "error", "error": "boom"}]
    write(err, rows)
    assert main(["compare", str(base), str(err), "--no-time"]) == 1
    assert "boom" in capsys.readouterr().out
    # final planned round (spec rounds = 2) missing: derived status incomplete
    inc = perturb(new, tmp_path / "inc", lambda r: None if r["run_id"] == rid and r["round"] == 2 else r)
    res = compare(read_records(base), read_records(inc))
    assert [(f["metric"], f["base"], f["new"]) for f in res["regressions"]] == [("status", "ok", "incomplete")]
    # the other way round (NEW now complete) is an improvement, not a regression
    res = compare(read_records(inc), read_records(base))
    assert res["regressions"] == [] and res["improvements"][0]["metric"] == "status"
    # the same failure at a different final round
    div = [{**r, "status": "diverged", "round": 1} if target(r) else r for r in read_records(new)]
    div_late = [{**r, "status": "diverged"} if target(r) else r for r in read_records(new)]
    res = compare(div_late, div)
    assert [(f["metric"], f["base"], f["new"]) for f in res["regressions"]] == [("round", 2, 1)]
    assert compare(div_late, div_late)["regressions"] == []


def test_missing_runs_fail_unless_allowed(two_runs, tmp_path, capsys):
    base, new = two_runs
    partial = perturb(new, tmp_path / "part", lambda r: None if r["method"] == "naive" and r["seed"] == 1 else r)
    assert main(["compare", str(base), str(partial), "--no-time"]) == 1
    assert "missing from NEW (a failure; --allow-missing accepts it) (1)" in capsys.readouterr().out
    assert main(["compare", str(base), str(partial), "--no-time", "--allow-missing"]) == 0
    assert main(["compare", str(partial), str(base), "--no-time"]) == 0  # runs only in NEW are fine


def test_unmatched_runs_name_the_differing_spec_fields(two_runs, tmp_path, capsys):
    base, new = two_runs

    def other_delta(r):
        if r["method"] == "look-ahead" and r["seed"] == 1:
            r.update(run_id="0123456789abcdef", hparams={**r["hparams"], "delta": 0.5},
                     spec={**r["spec"], "params": {"delta": 0.5}})
        return r
    changed = perturb(new, tmp_path / "delta", other_delta)
    assert main(["compare", str(base), str(changed), "--no-time"]) == 1
    out = capsys.readouterr().out
    assert "closest BASE run" in out and "differs in params.delta: 0.9 -> 0.5" in out
    assert "closest NEW run 0123456789abcdef differs in params.delta: 0.5 -> 0.9" in out
    assert main(["compare", str(base), str(changed), "--no-time", "--json"]) == 1
    added = json.loads(capsys.readouterr().out)["added"]
    assert [(a["run_id"], a["differs"]) for a in added] == [("0123456789abcdef", {"params.delta": [0.9, 0.5]})]


def test_provenance_difference_warns(two_runs, tmp_path, capsys):
    base, new = two_runs
    other = perturb(new, tmp_path / "prov", lambda r: {**r, "torch": "9.9.9", "dirty": not r["dirty"]})
    assert main(["compare", str(base), str(other), "--no-time"]) == 0  # a warning, not a failure
    cap = capsys.readouterr()
    warn = [line for line in cap.err.splitlines() if "warning" in line]
    assert len(warn) == 1 and "dirty" in warn[0] and "torch" in warn[0] and "git" not in warn[0]
    assert "9.9.9" in cap.out
    assert main(["compare", str(base), str(other), "--no-time", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["differs"] == ["dirty", "torch"]


@pytest.mark.parametrize("content, says", [
    (None, ("no records",)),
    ("", ("no records",)),
    ("[1, 2]\n", ("records.jsonl:1", "record 1")),  # the reader or compare names the line
    ('{"status": "ok"}\n', ("records.jsonl:1", "record 1")),
    ('{"run_id": "a", "status": "ok", "round": 1, "reward_mean": 1.0, "nfe": "ten"}\n',
     ("nfe is 'ten', not a number",)),
])
def test_malformed_input_is_one_line_exit_2(two_runs, tmp_path, capsys, content, says):
    base, _ = two_runs
    bad = tmp_path / "bad"
    bad.mkdir()
    if content is not None:
        (bad / "records.jsonl").write_text(content)
    assert main(["compare", str(base), str(bad)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1
    assert cap.err.startswith("bench compare: error:") and any(x in cap.err for x in says)
    assert main(["compare", str(base), str(base), "--z", "-1"]) == 2


def test_time_is_relative_and_tested_against_measured_noise(two_runs, tmp_path):
    base, _ = two_runs
    b = [{**r, "wall_s": r["wall_s"] + 1} for r in read_records(base)]  # seconds-long runs: ratios comparable
    # every run (unguided too) twice as slow: a slower machine, not a regression
    assert compare(b, [{**r, "wall_s": r["wall_s"] * 2} for r in b])["regressions"] == []
    # naive alone 3x slower: beyond 25 % plus the (here tiny) noise of the repeated round-0 passes
    slow = [{**r, "wall_s": r["wall_s"] * (3 if r["method"] == "naive" and r["round"] else 1)} for r in b]
    res = compare(b, slow)
    assert len(res["regressions"]) == 2 and all(f["metric"] == "time/unguided" for f in res["regressions"])
    assert compare(b, slow, Tolerance(time_tol=5))["regressions"] == []
    # the same 3x inside timing noise of a factor ~2.7 per pass (round-0 times spread 1..8 s) is not flagged
    spread = [1.0, 2.0, 4.0, 8.0, 1.0, 2.0]
    noisy = [{**r, "wall_s": r["wall_s"] * (spread[i // 3] if r["round"] == 0 else 1)} for i, r in enumerate(b)]
    assert compare(noisy, [{**r} for r in noisy], Tolerance())["time_noise"] > 0.5
    res = compare(noisy, [{**r, "wall_s": r["wall_s"] * (3 if r["method"] == "naive" and r["round"] else 1)}
                          for r in noisy])
    assert res["regressions"] == []


def test_time_noise_equals_hand_computed_value():
    """Round-0 wall-clock of four runs of one setting: 1, 2, 4, 8 s. log times 0, l, 2l, 3l (l = ln 2), median
    1.5 l, deviations ±0.5 l, ±1.5 l times sqrt(4/3) (n/(n-1)), median |deviation| l sqrt(4/3)."""
    spec = {"rounds": 1, "batch": 4, "T": 10, "seed": 0}
    recs = [{"run_id": f"r{i}", "status": "ok", "round": 0, "wall_s": w, "task": "t", "reward_fn": "f",
             "denoiser": "oracle", "method": "m", "spec": {**spec, "seed": i}} for i, w in enumerate((1, 2, 4, 8))]
    s = 1.4826 * math.log(2) * math.sqrt(4 / 3)
    assert time_noise(recs, []) == pytest.approx(s, rel=1e-12)
    # allowed growth of a time ratio: log(1 + 0.25) + z * 2 s (four log times, each with noise s), pooled sides
    assert compare(recs, recs)["time_allow"] == pytest.approx(1.25 * math.exp(3 * 2 * s) - 1, rel=1e-12)
    assert time_noise(recs[:3], []) is None  # too few repeated passes to estimate
