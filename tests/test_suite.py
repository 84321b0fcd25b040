"""Suite files: reading and expansion into RunSpecs, resume bookkeeping, failures as rows (DESIGN.md §5-6)."""
import json

import pytest

from bench.suite import SuiteError, compact, complete_runs, expand, load_suite, run_suite
from bench.executors import SerialExecutor
from bench.runner import RunSpec

TINY = """
description = "tiny"
rounds = 2
batch = 2
T = 10
seeds = [0]
[[grid]]
tasks = ["subspace", "sphere"]
denoisers = ["oracle"]
methods = ["unguided", "look-ahead"]
[grid.params.look-ahead]
delta = [0.2, 0.9]
"""


def write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_quick_has_every_registered_method_on_both_tasks_and_denoisers():
    from methods import REGISTRY

    specs = expand(load_suite("quick"))
    combos = {(s.task, s.denoiser, s.method) for s in specs}
    from tasks import get_task

    def runs(t, d, m):  # a method may declare (reward, denoiser) pairs it cannot run (exact-guidance: oracle only)
        reward = next(iter(get_task(t).rewards.values()))
        return not getattr(REGISTRY[m], "unsupported", lambda *a: None)(reward, d)

    want = {(t, d, m) for t in ("subspace", "sphere") for d in ("oracle", "trained") for m in REGISTRY if runs(t, d, m)}
    assert want <= combos and ("subspace", "trained", "exact-guidance") not in combos
    assert len({s.run_id for s in specs}) == len(specs)


def test_wildcard_reads_the_registry_at_expansion_time(tmp_path):
    from dataclasses import dataclass

    from methods import REGISTRY
    from methods.unguided import Unguided

    @dataclass(frozen=True)
    class Late(Unguided):
        name = "late-test-method"

    p = write(tmp_path, '[[grid]]\ntasks = ["sphere"]\nmethods = ["*"]\nexclude = ["naive"]\n')
    REGISTRY[Late.name] = Late
    try:
        methods = {s.method for s in expand(load_suite(p))}
    finally:
        del REGISTRY[Late.name]
    assert "late-test-method" in methods and "naive" not in methods and "look-ahead" in methods


def test_expansion_sweeps_params_skips_missing_rewards_and_applies_overrides(tmp_path):
    p = write(tmp_path, TINY.replace('denoisers = ["oracle"]', 'denoisers = ["oracle"]\nrewards = ["linear", "f1-theta1"]'))
    specs = expand(load_suite(p), seeds=[3, 4], device="cpu", only=["look-ahead"])
    # sphere has only "linear", subspace only "f1-theta1" of the two; two deltas x two seeds each
    assert sorted((s.task, s.reward) for s in specs) == [("sphere", "linear")] * 4 + [("subspace", "f1-theta1")] * 4
    assert {s.params["delta"] for s in specs} == {0.2, 0.9}
    assert {s.seed for s in specs} == {3, 4} and {s.rounds for s in specs} == {2} and {s.T for s in specs} == {10}


@pytest.mark.parametrize("text, match", [
    ('[[grid]]\ntasks = ["subspace"]\nmethods = ["lookahead"]\n', "did you mean 'look-ahead'"),
    ('[[grid]]\ntasks = ["subpsace"]\nmethods = ["naive"]\n', "did you mean 'subspace'"),
    ('batchh = 3\n[[grid]]\ntasks = ["subspace"]\nmethods = ["naive"]\n', "did you mean 'batch'"),
    ('[[grid]]\ntasks = ["subspace"]\nmethods = ["naive"]\nrewards = ["nope"]\n', "belongs to no task"),
    ('rounds = 1\n', "at least one"),
    ('[[grid]]\ntasks = [\n', "invalid TOML"),
])
def test_bad_suite_files_are_rejected_with_a_clear_error(tmp_path, text, match):
    with pytest.raises(SuiteError, match=match):
        expand(load_suite(write(tmp_path, text)))


def test_unknown_suite_name_suggests():
    with pytest.raises(SuiteError, match="did you mean 'quick'"):
        load_suite("quik")


def test_compact_archives_truncated_partial_and_duplicate_rows(tmp_path):
    from bench.records import code_fingerprint

    ok = lambda rid, rnd: {"run_id": rid, "round": rnd, "status": "ok", "spec": {"rounds": 1},  # noqa: E731
                           "code": code_fingerprint()}
    rows = [ok("a", 0), ok("a", 1), ok("b", 0), ok("a", 1),
            {"run_id": "c", "round": None, "status": "error", "spec": {"rounds": 1}, "code": code_fingerprint()}]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"run_id": "d", "rou'
    (tmp_path / "records.jsonl").write_text(text)
    done = compact(tmp_path).done
    assert set(done) == {"a", "c"}
    kept = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert [(r["run_id"], r["round"]) for r in kept] == [("a", 0), ("a", 1), ("c", None)]
    assert set(complete_runs(kept)) == {"a", "c"}
    archived = [json.loads(line) for line in (tmp_path / "records.archive.jsonl").read_text().splitlines()]
    reasons = {(r.get("run_id"), r["archived"]["reason"].split(" (")[0]) for r in archived}
    assert reasons == {("b", "incomplete run"), ("a", "duplicate row"), (None, "unreadable line")}
    assert next(r for r in archived if "raw" in r)["raw"] == '{"run_id": "d", "rou'  # nothing is lost


def test_run_suite_resumes_and_failures_are_rows(tmp_path):
    specs = expand(load_suite(write(tmp_path, TINY)))
    bad = RunSpec(task="subspace", reward="f1-theta2", method="look-ahead", params={"delta": "x"}, rounds=1, batch=2,
                  T=10)
    out = tmp_path / "out"
    first = run_suite(specs[:3] + [bad], out, SerialExecutor(), progress=False, log=lambda m: None)
    assert first == {"total": 4, "skipped": 0, "ran": 4, "failed": 1, "recomputed": 0}
    again = run_suite(specs + [bad], out, SerialExecutor(), progress=False, log=lambda m: None)
    assert again == {"total": len(specs) + 1, "skipped": 4, "ran": len(specs) - 3, "failed": 1, "recomputed": 0}
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    keys = [(r["run_id"], r["round"]) for r in rows]
    assert len(keys) == len(set(keys)) == 3 * len(specs) + 1  # rounds 0..2 of every run, one error row
    err = [r for r in rows if r["status"] == "error"]
    assert len(err) == 1 and "delta" in err[0]["error"]


def test_cli_dry_run_lists_runs_and_marks_done(tmp_path, capsys):
    from bench.cli import main

    p = write(tmp_path, TINY)
    out = tmp_path / "o"
    assert main(["suite", str(p), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count(" todo ") == 6 and "6 runs (0 already complete" in text
    assert not out.exists()
    assert main(["suite", str(p), "--out", str(out), "--only", "unguided", "--no-report"]) == 0
    assert main(["suite", str(p), "--out", str(out), "--dry-run"]) == 0
    assert "6 runs (2 already complete" in capsys.readouterr().out
    assert main(["suite", str(p), "--only", "nope", "--dry-run"]) == 2


@pytest.mark.parametrize("name", ["quick", "paper-simulations", "full", "ggdm-sphere", "ggdm-subspace"])
def test_shipped_suites_expand_and_validate(name):
    from bench.suite import available, validate

    assert name in available()
    specs = expand(load_suite(name))
    validate(specs)  # every name, parameter and value builds
    assert specs and len({s.run_id for s in specs}) == len(specs)


def test_runs_recorded_with_other_defaults_or_version_are_rerun(tmp_path):
    specs = expand(load_suite(write(tmp_path, TINY)))
    out = tmp_path / "out"
    run_suite(specs, out, SerialExecutor(), progress=False, log=lambda m: None)
    path = out / "records.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    target = next(r["run_id"] for r in rows if r["method"] == "look-ahead")
    for r in rows:  # as if recorded before a default changed, and another run before a version bump
        if r["run_id"] == target:
            r["hparams"] = {**r["hparams"], "sigma": 123.0}
        elif r["method"] == "unguided":
            r["method_version"] = -1
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = run_suite(specs, out, SerialExecutor(), progress=False, log=lambda m: None)
    n_unguided = sum(s.method == "unguided" for s in specs)
    assert again["ran"] == 1 + n_unguided and again["skipped"] == len(specs) - 1 - n_unguided
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 3 * len(specs) and len({(r["run_id"], r["round"]) for r in rows}) == len(rows)
    assert all(r["hparams"].get("sigma") != 123.0 and r["method_version"] != -1 for r in rows)


def test_task_and_denoiser_filters_keep_the_same_run_ids(tmp_path):
    """``--tasks`` / ``--denoisers`` (expand's tasks / denoisers) keep exactly the whole suite's runs of those tasks
    and denoisers, with unchanged run ids (so a partial rerun resumes into the same records); a name that matches
    nothing is bad input."""
    suite = load_suite(write(tmp_path, TINY.replace('["oracle"]', '["oracle", "trained"]')))
    full = expand(suite)
    part = expand(suite, tasks=["sphere"], denoisers=["trained"])
    assert [s.run_id for s in part] == [s.run_id for s in full if s.task == "sphere" and s.denoiser == "trained"]
    assert len(part) == 3 and len(full) == 12
    for kw in ({"tasks": ["spher"]}, {"denoisers": ["oracel"]}):
        with pytest.raises(SuiteError, match="matches no run"):
            expand(suite, **kw)
