"""Equal-budget tuning: equal trial counts, one shared search, disjoint seeds, support-constrained selection."""
from __future__ import annotations

import csv
import json
import math
from collections import Counter

import pytest

from bench.runner import RunSpec
from bench.suite import SuiteError
from bench.tune import TuneConfig, _params_at, _select, n_grid, plan_trials, propose
from methods import REGISTRY, make_method


def test_overlapping_or_bad_seed_sets_rejected():
    with pytest.raises(SuiteError, match="disjoint"):
        TuneConfig.from_table({"tuning_seeds": [0, 1], "report_seeds": [1, 2]})
    with pytest.raises(SuiteError, match="unknown key"):
        TuneConfig.from_table({"trails": 3})
    with pytest.raises(SuiteError, match="trials"):
        TuneConfig.from_table({"trials": 0})


@pytest.mark.parametrize("trials", [1, 4, 7])
def test_every_method_gets_the_same_number_of_valid_trials(trials):
    """Grid + refinement = ``trials`` for every registered method with a search space, whatever its history,
    and every proposed configuration is accepted by the method."""
    cfg = TuneConfig(trials=trials, tuning_seeds=[5], report_seeds=[0])
    g = ("subspace", "f1-theta2", "oracle", 0)
    tmpl = {(g, m): RunSpec(method=m, batch=2, T=10, steps=3) for m in REGISTRY}
    plan = plan_trials(tmpl, cfg)
    counts = Counter()
    for (gg, m), ts in plan.items():
        space = REGISTRY[m].search_space
        if not space:
            continue
        for feasible in (True, False):  # refinement exists whether or not the grid found a feasible trial
            hist = [{"u": t["u"], "score": float(i), "feasible": feasible} for i, t in enumerate(ts)]
            more = propose(space, trials, hist, 0)
            counts[(m, feasible)] = len(ts) + len(more)
            for u in more:
                make_method(m, _params_at(space, u))
        assert all(len(t["specs"]) == 1 and t["specs"][0].seed == 5 for t in ts)
    assert set(counts.values()) == {trials}
    assert len(plan[(g, "unguided")]) == 1  # nothing to tune: one baseline run
    assert n_grid(trials) + (trials - n_grid(trials)) == trials


def test_selection_skips_infeasible_trials():
    ts = [{"score": 9.0, "off": 5.0, "feasible": False}, {"score": 2.0, "off": 0.0, "feasible": True},
          {"score": 3.0, "off": 0.001, "feasible": True}]
    assert _select(ts)["score"] == 3.0
    none = [{"score": 9.0, "off": 5.0, "feasible": False}, {"score": 1.0, "off": 0.5, "feasible": False}]
    assert _select(none)["off"] == 0.5


SUITE = """
description = "tiny fair comparison (tests)"
batch = 4
T = 20
steps = 4
[tune]
trials = 3
tuning_seeds = [100, 101]
report_seeds = [0, 1]
tiers = [2, 4]
iterative_rounds = 2
[[grid]]
tasks = ["subspace"]
denoisers = ["oracle"]
methods = ["unguided", "naive", "dps", "best-of-n", "dno"]
"""


def test_suite_tunes_then_reports_on_disjoint_seeds(tmp_path):
    from bench.cli import main
    from bench.records import read_records
    from bench.runner import execute

    path = tmp_path / "tiny.toml"
    path.write_text(SUITE)
    out = tmp_path / "out"
    assert main(["suite", str(path), "--out", str(out), "--no-report"]) == 0
    tune_seeds = {r["seed"] for r in read_records(out / "tune")}
    report_seeds = {r["seed"] for r in read_records(out)}
    assert tune_seeds == {100, 101} and report_seeds == {0, 1}
    rows = list(csv.DictReader(open(out / "trials.csv")))
    per_method = Counter(r["method"] for r in rows)
    assert per_method.pop("unguided") == 1
    assert set(per_method.values()) == {3}, per_method
    plan = json.loads((out / "leaderboard_plan.json").read_text())
    labels = {e["label"] for e in plan["entries"]}
    assert "best-of-n N=3" in labels  # the 4-pass tier's best-of-N
    board = list(csv.DictReader(open(out / "leaderboard.csv")))
    assert board and all(float(r["nfe_eq"]) <= float(r["budget"]) for r in board)
    for tier in {r["tier"] for r in board}:
        first = [r for r in board if r["tier"] == tier][0]
        assert first["flags"] == "" and first["rank"] == "1"
    assert (out / "tuning.png").exists() and (out / "leaderboard.md").exists()
    assert (out / "pareto.png").stat().st_size and (out / "reward_nfe.png").stat().st_size
    assert "NFE-eq: c = 2 (measured here: subspace/oracle " in (out / "leaderboard.md").read_text()
    assert plan["c_measured"]["subspace/oracle"] > 0
    dps = [r for r in rows if r["method"] == "dps" and math.isfinite(float(r["reward_mean"]))]
    assert dps and all(float(r["reward_se"]) > 0 and float(r["off_support_se"]) > 0 for r in dps)
    assert not math.isnan(float(board[0]["reward_mean"]))
    # issue 14: a configuration's report seeds run as one stacked group (record key ``group``), with the run ids and
    # values of the same runs executed one at a time (``runner.execute`` on the recorded spec)
    batched = {(r["run_id"], r["round"]): r for r in read_records(out)}
    grouped = {r["method"] for r in batched.values() if (r.get("group") or {}).get("runs", 1) > 1}
    assert {"unguided", "naive", "dps"} <= grouped and "dno" not in grouped  # dno is not batchable
    again = {b["run_id"]: b["spec"] for b in batched.values() if b["method"] in ("naive", "dps")}
    alone = {(r["run_id"], r["round"]): r for spec in again.values() for r in execute(RunSpec(**spec))}
    assert len(alone) == 8 and not any(r.get("group") for r in alone.values())
    for k, r in alone.items():
        for f in ("reward_mean", "off_support_mean", "nfe", "vjp", "status"):
            assert batched[k][f] == r[f], (k, f)


def test_check_space_rejects_bad_declarations():
    import dataclasses

    from methods.search import Choice, LogRange, Range, check_space
    from methods.dps import DPS

    def variant(space):
        return dataclasses.make_dataclass("X", [], bases=(DPS,), frozen=True, namespace={"search_space": space})

    assert check_space(DPS) == []
    assert any("lo < hi" in e for e in check_space(variant({"zeta": LogRange(1.0, 0.1)})))
    assert any("lo > 0" in e for e in check_space(variant({"zeta": LogRange(0.0, 1.0)})))
    assert any("not a field" in e for e in check_space(variant({"zeta": LogRange(0.1, 1.0), "zetta": Range(0, 1)})))
    assert any("strength" in e for e in check_space(variant({"normalise": Choice(("none", "loss"))})))
    assert any("rejected" in e for e in check_space(variant({"zeta": LogRange(0.1, 1.0),
                                                             "normalise": Choice(("none", "bogus"))})))
    assert any("must be a dict" in e for e in check_space(variant(None)))


class Watched(dict):
    """A record that remembers every key read from it (and from its metrics)."""

    def __init__(self, *a, seen, **k):
        super().__init__(*a, **k)
        self.seen = seen

    def __getitem__(self, key):
        self.seen.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.seen.add(key)
        return super().get(key, default)


def test_digits_tuning_constrains_knn_distance_and_never_reads_heldout_metrics():
    """Digits' support constraint is its off-support error (k-NN distance in held-out features, the records'
    off_support_*); the held-out evaluator's reward is never read, whatever it says."""
    from bench.leaderboard_trials import spread
    from bench.tune import _evaluate

    cfg = TuneConfig(trials=4, tuning_seeds=[7, 8], report_seeds=[0])  # 3 grid trials
    g = ("digits", "class-3", "trained", 0)
    tmpl = {(g, m): RunSpec(task="digits", reward="class-3", denoiser="trained", method=m, batch=3, T=10, steps=2)
            for m in ("unguided", "dps")}
    trials = plan_trials(tmpl, cfg)
    seen, by_run = set(), {}
    # unguided k-NN ratio 1.0 -> limit 2 * 1.0 + 0.01; dps trials: guider reward up, k-NN distance 1.5 / 2.5 / 1.9
    ratios = {0: 1.5, 1: 2.5, 2: 1.9}
    rewards = {0: -2.0, 1: -0.1, 2: -0.5}
    for (gg, m), ts in trials.items():
        for i, t in enumerate(ts):
            for s in t["specs"]:
                o = 1.0 if m == "unguided" else ratios[i]
                r = -3.0 if m == "unguided" else rewards[i]
                metrics = Watched({"heldout_reward": 100.0 * (3 - i), "heldout_acc": 1.0, "fid": 0.0}, seen=seen)
                by_run[s.run_id] = [Watched({"run_id": s.run_id, "round": k, "status": "ok", "reward_mean": r,
                                             "off_support_mean": o, "reward_per_sample": [r, r + 0.1, r - 0.1],
                                             "off_support_per_sample": [o, o, o], "metrics": metrics}, seen=seen)
                                    for k in (0, 1)]
    _evaluate(trials, by_run, tmpl)
    for ts in trials.values():
        for t in ts:
            spread(t["specs"], by_run)
    dps = trials[(g, "dps")]
    assert [t["feasible"] for t in dps] == [True, False, True]  # 2.5 > 2.01: the k-NN constraint binds
    assert _select(dps) is dps[2]  # best guider reward among the feasible; the held-out reward would pick dps[0]
    assert dps[0]["limit"] == pytest.approx(2.01)
    assert "metrics" not in seen and not any("heldout" in k for k in seen), seen



def test_tuning_runs_save_no_samples_and_keep_their_run_ids():
    """A suite's save_samples reaches the report runs only: tuning runs (seeds 1000...) would write files no figure
    reads. save_samples is not part of the run id, so resumed tuning records stay valid."""
    from bench.tune import _spec, tuning_specs

    cfg = TuneConfig(tuning_seeds=[1000, 1001], report_seeds=[0])
    tmpl = RunSpec(task="subspace", reward="f1-theta2", method="dps", rounds=1, save_samples="/tmp/s")
    tuned = tuning_specs(tmpl, cfg, {"zeta": 0.5})
    assert [s.save_samples for s in tuned] == [None, None]
    assert [s.run_id for s in tuned] == [_spec(tmpl, cfg, {"zeta": 0.5}, s).run_id for s in (1000, 1001)]
    assert _spec(tmpl, cfg, {"zeta": 0.5}, 0).save_samples == "/tmp/s"  # what report runs are built from
