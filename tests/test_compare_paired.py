"""Compare's statistics against hand-computed values, and the paired (common random numbers) test catching a
planted 19 % reward change at B = 16 that the unpaired test of means lets through."""
import json
import math

import pytest

from bench.cli import main
from bench.compare import Tolerance, compare, compare_metric, paired_stats, unpaired_allowance
from bench.records import read_records
from bench.runner import RunSpec, execute

SPEC = RunSpec(task="subspace", reward="f1-theta2", denoiser="oracle", method="naive", rounds=1, batch=16, T=20)


def rec(mean, se, per_sample=None, **kw):
    r = {"run_id": "x", "status": "ok", "round": 1, "reward_mean": mean, "reward_se": se, **kw}
    if per_sample is not None:
        r["reward_per_sample"] = per_sample
    return r


def test_unpaired_tolerance_equals_hand_computed_value():
    """z * sqrt(se_b^2 + se_n^2) + rel_tol |base| + abs_tol = 3 * 0.5 + 0.02 * 10 + 1e-9 (0.3, 0.4: a 3-4-5
    triangle); standard errors added linearly would allow 3 * 0.7 + 0.2 = 2.3."""
    assert unpaired_allowance(10.0, 0.3, 0.4, Tolerance()) == pytest.approx(1.700000001, abs=1e-15)
    assert unpaired_allowance(-10.0, 0.3, 0.4, Tolerance(z=2, rel_tol=0.1, abs_tol=0.5)) == pytest.approx(2.5)
    base = [rec(10.0, 0.3)]
    assert [f["metric"] for f in compare(base, [rec(10.0 - 1.75, 0.4)])["regressions"]] == ["reward_mean"]
    assert compare(base, [rec(10.0 - 1.65, 0.4)])["regressions"] == []
    m = compare_metric(rec(10.0, 0.3), rec(10.0 - 1.75, 0.4), "reward", True, Tolerance())
    assert (m["test"], m["allow"], m["worse"]) == ("unpaired", pytest.approx(1.700000001), True)


def test_paired_tolerance_equals_hand_computed_value():
    """base 1, 2, 3, 4 (mean 2.5); new 0, 0, 0, 2: d = -1, -2, -3, -2, mean -2, sd sqrt(2/3), se sqrt(2/3) / 2;
    allowed 3 sqrt(2/3) / 2 + 0.02 * 2.5 + 1e-9."""
    b, n = [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 2.0]
    assert paired_stats(b, n) == pytest.approx((2.5, -2.0, math.sqrt(2 / 3) / 2))
    m = compare_metric(rec(2.5, 0.6, b), rec(0.5, 0.5, n), "reward", True, Tolerance())
    assert m["test"] == "paired" and m["worse"]
    assert m["allow"] == pytest.approx(1.5 * math.sqrt(2 / 3) + 0.05 + 1e-9, abs=1e-12)
    # lower is better for off-support: the same numbers are an improvement there
    off = compare_metric({"off_support_mean": 2.5, "off_support_per_sample": b},
                         {"off_support_mean": 0.5, "off_support_per_sample": n}, "off_support", False, Tolerance())
    assert off["test"] == "paired" and off["better"] and not off["worse"]
    # identical per-sample values are equal whatever the tolerance
    same = compare_metric(rec(2.5, 0.6, b), rec(2.5, 0.6, list(b)), "reward", True, Tolerance(0, 0, 0))
    assert (same["diff"], same["worse"], same["better"]) == (0.0, False, False)
    # per-sample values that do not reproduce the stored mean (edited records) fall back to the unpaired test
    assert compare_metric(rec(9.0, 0.6, b), rec(0.5, 0.5, n), "reward", True, Tolerance())["test"] == "unpaired"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One real run (subspace, oracle, naive, T = 20, B = 16) and its unchanged re-run."""
    d = tmp_path_factory.mktemp("paired")
    for name in ("base", "rerun"):
        (d / name).mkdir()
        (d / name / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in execute(SPEC)))
    return d


def planted(records, factor):
    """The run with its final round's per-sample rewards scaled by ``factor`` (mean and SE recomputed)."""
    out = []
    for r in records:
        r = dict(r)
        if r["round"] == SPEC.rounds:
            v = [x * factor for x in r["reward_per_sample"]]
            m = sum(v) / len(v)
            se = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v))
            r.update(reward_per_sample=v, reward_mean=m, reward_se=se)
        out.append(r)
    return out


def test_planted_19_percent_reward_change_is_caught_by_the_paired_test(real_run, tmp_path, capsys):
    base = read_records(real_run / "base")
    final = base[-1]
    assert len(final["reward_per_sample"]) == 16 and final["reward_mean"] > 0
    assert main(["compare", str(real_run / "base"), str(real_run / "rerun")]) == 0  # unchanged re-run
    capsys.readouterr()
    bad = planted(base, 0.81)
    assert (final["reward_mean"] - bad[-1]["reward_mean"]) / final["reward_mean"] == pytest.approx(0.19)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    assert main(["compare", str(real_run / "base"), str(tmp_path / "bad")]) == 1
    out = capsys.readouterr().out
    assert "| reward_mean" in out and "REGRESSION: paired" in out
    # the same change judged from the means and standard errors alone (no per-sample values) passes: the
    # spread between samples hides it, and only common random numbers expose it
    b0, b1 = ([{k: v for k, v in r.items() if not k.endswith("_per_sample")} for r in rs] for rs in (base, bad))
    assert compare(b0, b1)["regressions"] == []
    m = compare_metric(b0[-1], b1[-1], "reward", True, Tolerance())
    assert m["test"] == "unpaired" and abs(m["diff"]) < m["allow"]
