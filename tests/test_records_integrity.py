"""Records and reports never lie (issues 10.4 and 17): a run without its planned final round is reported as
``incomplete``, malformed record lines are bad input naming file:line, sample tensors land under --out from any
working directory, and a full disk during a report leaves every earlier file readable."""
from __future__ import annotations

import errno
import io
import json
import os

import pandas as pd
import pytest

from bench.cli import main

RUN = ["--batch", "4", "--T", "20"]


def bench(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """records.jsonl of three complete oracle runs (rounds 0..2), one line per round."""
    out = tmp_path_factory.mktemp("good")
    for method in ("unguided", "naive", "look-ahead"):
        assert main(["run", "--method", method, "--rounds", "2", *RUN, "--out", str(out)]) == 0
    return out


def lines_of(d) -> list[str]:
    return (d / "records.jsonl").read_text().splitlines()


def put(d, lines: list[str], tail: str = "") -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "records.jsonl").write_text("".join(x + "\n" for x in lines) + tail)


def section(md: str, title: str) -> str:
    return md.split(title, 1)[1].split("\n## ", 1)[0] if title in md else ""


# --- incomplete runs ---------------------------------------------------------------------------------------------
def test_run_missing_its_final_round_is_incomplete_not_reported_early(good, tmp_path, capsys):
    rows = [json.loads(x) for x in lines_of(good)]
    # reference: with every round present, look-ahead is in the tables at round 2
    from bench.records import read_records
    from bench.report_tables import frame, summary_table

    full = summary_table(frame(read_records(good)))
    assert set(full["method"]) == {"unguided", "naive", "look-ahead"} and set(full["rounds"]) == {2}

    # look-ahead loses round 2: its last line is cut by a kill (a truncated LAST line is the one tolerated defect);
    # naive keeps only round 0 (its rounds 1 and 2 lines are gone)
    la_final = next(x for x, r in zip(lines_of(good), rows) if r["method"] == "look-ahead" and r["round"] == 2)
    kept = [x for x, r in zip(lines_of(good), rows)
            if not (r["method"] == "look-ahead" and r["round"] == 2) and not (r["method"] == "naive" and r["round"])]
    bad = tmp_path / "partial"
    put(bad, kept, tail=la_final[: len(la_final) // 2])
    rc, _, err = bench(capsys, "report", bad, "--figure", "ggdm-pareto")
    assert rc == 0
    assert f"{bad / 'records.jsonl'}:{len(kept) + 1}: skipped a truncated last line" in err
    md = (bad / "summary.md").read_text()
    assert "3 runs (2 incomplete)" in md
    tables = md.split("## Incomplete runs")[0]
    assert "| look-ahead" not in tables and "| naive" not in tables and "| unguided" in tables
    inc = section(md, "## Incomplete runs")
    la = next(r for r in inc.splitlines() if "| look-ahead" in r)
    nv = next(r for r in inc.splitlines() if "| naive" in r)
    cells = lambda row: [c.strip() for c in row.strip("|").split("|")]  # noqa: E731
    assert cells(la)[-3:] == ["incomplete", "1", "2"] and cells(nv)[-3:] == ["incomplete", "0", "2"]
    assert "| look-ahead" not in section(md, "## Extra figures")  # figures pick final rounds the same way
    assert set(pd.read_csv(bad / "summary.csv")["method"]) == {"unguided"}
    assert set(pd.read_csv(bad / "best.csv")["method"]) == {"unguided"}
    from bench.report import print_table

    printed = print_table(bad)
    assert "2 incomplete runs" in printed and printed.count("| incomplete |") == 2


def test_incomplete_runs_ignores_failed_runs_and_records_without_a_spec():
    from bench.report_tables import incomplete_runs

    ok = lambda rid, rnd, R: {"run_id": rid, "round": rnd, "status": "ok", "spec": {"rounds": R}}  # noqa: E731
    recs = [ok("a", 0, 1), ok("a", 1, 1), ok("b", 0, 3), ok("b", 1, 3), ok("c", 0, 2),
            {"run_id": "c", "round": 1, "status": "error", "spec": {"rounds": 2}},
            {"run_id": "d", "round": 0, "status": "ok"}]
    assert incomplete_runs(recs) == {"b": (1, 3)}


# --- malformed lines -----------------------------------------------------------------------------------------------
def _edit(line: str, **kw) -> str:
    r = json.loads(line)
    for k, v in kw.items():
        if v is KeyError:
            r.pop(k)
        else:
            r[k] = v
    return json.dumps(r)


MALFORMED = {
    "not JSON": (lambda x: "this is not json", "not a JSON line"),
    "a list": (lambda x: "[1, 2, 3]", "must be a JSON object, got list"),
    "a number": (lambda x: "42", "must be a JSON object, got int"),
    "no run_id": (lambda x: _edit(x, run_id=KeyError), "no 'run_id' field"),
    "run_id a number": (lambda x: _edit(x, run_id=7), "'run_id' has the wrong type"),
    "empty run_id": (lambda x: _edit(x, run_id=""), "'run_id' has the wrong type"),
    "round a string": (lambda x: _edit(x, round="1"), "'round' has the wrong type"),
    "round a bool": (lambda x: _edit(x, round=True), "'round' has the wrong type"),
    "round a float": (lambda x: _edit(x, round=1.0), "'round' has the wrong type"),
    "ok without a round": (lambda x: _edit(x, round=None), "an ok record needs an integer 'round'"),
    "no status": (lambda x: _edit(x, status=KeyError), "no 'status' field"),
    "status null": (lambda x: _edit(x, status=None), "'status' has the wrong type"),
    "reward a string": (lambda x: _edit(x, reward_mean="1.5"), "'reward_mean' has the wrong type"),
    "no reward_mean": (lambda x: _edit(x, reward_mean=KeyError), "no 'reward_mean' field"),
}


# fields the report needs besides those (bench compare checks its own fields with its own messages)
REPORT_MALFORMED = {
    "no method": (lambda x: _edit(x, method=KeyError), "no 'method' field"),
    "task a number": (lambda x: _edit(x, task=3), "'task' has the wrong type"),
    "seed a string": (lambda x: _edit(x, seed="0"), "'seed' has the wrong type"),
    "hparams a list": (lambda x: _edit(x, hparams=[1]), "'hparams' has the wrong type"),
    "spec a string": (lambda x: _edit(x, spec="rounds=2"), "'spec' has the wrong type"),
    "nfe a string": (lambda x: _edit(x, nfe="ten"), "'nfe' has the wrong type"),
    "wall_s a bool": (lambda x: _edit(x, wall_s=False), "'wall_s' has the wrong type"),
}


@pytest.mark.parametrize("kind", list(REPORT_MALFORMED))
def test_malformed_field_the_report_needs_is_bad_input(good, tmp_path, capsys, kind):
    make, msg = REPORT_MALFORMED[kind]
    lines = lines_of(good)
    bad = tmp_path / "bad"
    put(bad, lines[:2] + [make(lines[2])] + lines[3:])
    rc, _, err = bench(capsys, "report", bad)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"bench report: error: {bad / 'records.jsonl'}:3: ") and msg in err, err
    assert sorted(p.name for p in bad.iterdir()) == ["records.jsonl"]


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_line_is_bad_input_naming_file_and_line(good, tmp_path, capsys, kind):
    make, msg = MALFORMED[kind]
    lines = lines_of(good)
    bad = tmp_path / "bad"
    put(bad, lines[:4] + [make(lines[4])] + lines[5:])
    where = f"{bad / 'records.jsonl'}:5: "
    for argv, cmd in ((["report", bad], "report"), (["compare", good, bad], "compare"),
                      (["compare", bad, good], "compare")):
        rc, _, err = bench(capsys, *argv)
        assert rc == 2, (kind, cmd)
        assert err.count("\n") == 1 and err.startswith(f"bench {cmd}: error: {where}") and msg in err, err
        assert "Traceback" not in err
    assert sorted(p.name for p in bad.iterdir()) == ["records.jsonl"]  # nothing written


def test_only_an_unparseable_last_line_is_tolerated(good, tmp_path, capsys):
    lines = lines_of(good)
    d = tmp_path / "d"
    put(d, lines + ["[1, 2]"])  # parseable but not a record: an error even as the last line
    rc, _, err = bench(capsys, "report", d)
    assert rc == 2 and f"records.jsonl:{len(lines) + 1}: a record must be a JSON object" in err
    put(d, lines[:3] + [lines[3][:20]] + lines[4:])  # a cut line in the middle is corruption, not a kill
    rc, _, err = bench(capsys, "report", d)
    assert rc == 2 and "records.jsonl:4: not a JSON line" in err


# --- outputs under --out ---------------------------------------------------------------------------------------------
DIGITS = """
description = "digits samples test"
figures = ["digits-grid"]
T = 20
steps = 5
batch = 8
rounds = 1
seeds = [0]
save_samples = "samples"
[[grid]]
tasks = ["digits"]
rewards = ["synthetic"]
denoisers = ["trained"]
methods = ["unguided", "dps"]
[grid.params.dps]
zeta = 0.1
"""


@pytest.fixture
def tiny(tmp_path_factory, monkeypatch):
    import tiny_nets
    from tasks import get_task

    get_task.cache_clear()
    tiny_nets.apply(monkeypatch, tmp_path_factory.getbasetemp() / "tiny-net-cache")
    yield
    get_task.cache_clear()


def test_samples_land_under_out_from_any_cwd_and_the_grid_finds_them(tiny, tmp_path, monkeypatch, capsys):
    conf, elsewhere, third = (tmp_path / d for d in ("conf", "elsewhere", "third"))
    for d in (conf, elsewhere, third):
        d.mkdir()
    (conf / "s.toml").write_text(DIGITS)
    res = tmp_path / "res"
    monkeypatch.chdir(elsewhere)
    rc, _, err = bench(capsys, "suite", conf / "s.toml", "--out", res)
    assert rc == 0, err
    ids = {json.loads(x)["run_id"] for x in lines_of(res)}
    assert len(ids) == 2
    assert {p.name for p in (res / "samples").iterdir()} == {f"{i}.pt" for i in ids}
    assert list(elsewhere.iterdir()) == []  # nothing relative to the working directory
    md = (res / "summary.md").read_text()
    assert "final samples, digits / synthetic" in md and "no saved samples" not in md
    assert (res / "digits_grid_synthetic.png").stat().st_size > 1000

    monkeypatch.chdir(third)  # a report elsewhere, from another directory, still finds the samples beside the records
    rc, _, err = bench(capsys, "report", res, "--out", tmp_path / "rep")
    assert rc == 0, err
    assert (tmp_path / "rep" / "digits_grid_synthetic.png").stat().st_size > 1000
    assert list(third.iterdir()) == []

    # `bench run`: the default denoiser of digits is its first kind (it has no oracle); --save-samples under --out
    rc, _, err = bench(capsys, "run", "--task", "digits", "--T", "20", "--steps", "5", "--batch", "4",
                       "--save-samples", "--out", "r")
    assert rc == 0, err
    rec = json.loads(lines_of(third / "r")[-1])
    assert rec["denoiser"] == "trained"
    assert (third / "r" / "samples" / f"{rec['run_id']}.pt").exists()


def test_run_suite_puts_a_relative_save_samples_under_out(tmp_path, monkeypatch):
    from bench.executors import SerialExecutor
    from bench.runner import RunSpec
    from bench.suite import run_suite

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    spec = RunSpec(method="unguided", batch=2, T=10, save_samples="s")
    counts = run_suite([spec], tmp_path / "out", SerialExecutor(), progress=False, log=lambda m: None)
    assert counts["failed"] == 0
    assert (tmp_path / "out" / "s" / f"{spec.run_id}.pt").exists() and list((tmp_path / "cwd").iterdir()) == []


def test_relative_save_samples_is_rejected_before_running():
    from bench.runner import RunSpec, build

    with pytest.raises(ValueError, match="save_samples must be an absolute directory"):
        build(RunSpec(method="unguided", batch=2, T=10, save_samples="samples"))


# --- a full disk -------------------------------------------------------------------------------------------------------
class FullDisk:
    """``open`` for files under ``root`` opened for writing: after ``budget`` bytes in all, a write stores what
    still fits and raises ENOSPC, as a full disk does."""

    def __init__(self, root, budget: int):
        import builtins

        self.root, self.left, self.real = str(root), budget, builtins.open

    def __call__(self, file, mode="r", *a, **kw):
        f = self.real(file, mode, *a, **kw)
        if isinstance(file, (str, os.PathLike)) and str(file).startswith(self.root) and set(mode) & set("wax+"):
            return _Limited(f, self)
        return f


class _Limited:
    def __init__(self, f, disk):
        self._f, self._disk = f, disk

    def write(self, data):
        n = len(data)
        if n > self._disk.left:
            self._f.write(data[: self._disk.left])
            self._f.flush()
            self._disk.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.left -= n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def parseable(d) -> dict[str, str]:
    """Every file in ``d`` read as what it claims to be; returns name -> a digest of its content."""
    import hashlib

    from PIL import Image

    seen = {}
    for p in sorted(d.iterdir()):
        assert not p.name.endswith(".tmp"), f"temporary file left: {p.name}"
        if p.suffix == ".png":
            with Image.open(p) as im:
                im.verify()
        elif p.suffix == ".csv":
            pd.read_csv(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.name == "records.jsonl":
            [json.loads(x) for x in p.read_text().splitlines()]
        elif p.suffix == ".md":
            assert p.read_text(encoding="utf-8").startswith("# ")
        seen[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return seen


def test_full_disk_during_a_report_exits_2_and_leaves_every_file_readable(good, tmp_path, monkeypatch, capsys):
    import builtins

    out = tmp_path / "o"
    out.mkdir()
    (out / "records.jsonl").write_text((good / "records.jsonl").read_text())
    assert main(["report", str(out), "--figure", "ggdm-curves"]) == 0
    capsys.readouterr()
    before = parseable(out)
    assert {"summary.md", "summary.csv", "best.csv", "figures.json"} <= set(before) and len(before) > 8
    # a changed record set, so that every rewritten file would differ
    rows = [json.loads(x) for x in lines_of(out)]
    (out / "records.jsonl").write_text("".join(json.dumps({**r, "reward_mean": r["reward_mean"] + 1}) + "\n"
                                               for r in rows))
    records_before = (out / "records.jsonl").read_bytes()
    for budget in (0, 2_000, 40_000):  # the disk fills at the first write, after the small files, among the PNGs
        with monkeypatch.context() as m:
            m.setattr(builtins, "open", FullDisk(out, budget))
            rc, _, err = bench(capsys, "report", out, "--figure", "ggdm-curves")
        assert rc == 2 and err.count("\n") == 1, err
        assert err.startswith("bench report: error: No space left on device") and "Traceback" not in err
        after = parseable(out)
        assert set(after) == set(before)  # no new or half-written files; each one old or complete
        assert (out / "records.jsonl").read_bytes() == records_before
        if budget == 0:  # with no space at all nothing could be replaced
            assert {n: h for n, h in after.items() if n != "records.jsonl"} == \
                {n: h for n, h in before.items() if n != "records.jsonl"}
    assert after["summary.csv"] != before["summary.csv"]  # the larger budgets got that far
    assert main(["report", str(out), "--figure", "ggdm-curves"]) == 0  # disk back: the report is rewritten
    assert parseable(out)["summary.md"] != before["summary.md"]


def test_atomic_write_removes_its_temporary_file_on_failure(tmp_path, monkeypatch):
    from bench import atomic

    p = tmp_path / "x.md"
    p.write_text("# old\n")

    class Boom(io.StringIO):
        def write(self, s):
            raise OSError(errno.ENOSPC, "No space left on device")

    import builtins

    real = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, m="r", *a, **k: Boom() if "w" in m else real(f, m, *a, **k))
    with pytest.raises(OSError) as e:
        atomic.write_text(p, "# new\n")
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(p)
    assert p.read_text() == "# old\n" and [q.name for q in tmp_path.iterdir()] == ["x.md"]
