"""Resume reuses only runs produced by the same code; nothing is deleted (archive); one writer per directory;
a run's rows are written whole; ``--retry-failed``; ``bench archive``."""
import errno
import json
import subprocess
import sys

import pytest

import bench.records as records
from bench.executors import SerialExecutor
from bench.records import DirLock, LockedError, RecordWriter, code_fingerprint
from bench.runner import RunSpec
from bench.suite import expand, load_suite, run_suite

TINY = """
description = "tiny"
rounds = 1
batch = 2
T = 10
seeds = [0]
[[grid]]
tasks = ["subspace"]
denoisers = ["oracle"]
methods = ["unguided", "dps"]
"""


def _specs(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(TINY)
    return expand(load_suite(p))


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _quiet(m):
    pass


def test_records_carry_code_fingerprint_and_provenance(tmp_path):
    specs = _specs(tmp_path)
    run_suite(specs[:1], tmp_path / "o", SerialExecutor(), progress=False, log=_quiet)
    r = _rows(tmp_path / "o" / "records.jsonl")[0]
    assert r["code"] == code_fingerprint() and len(r["code"]) == 16
    prov = r["provenance"]
    assert {"numpy", "python", "host", "cpu", "gpu", "threads", "package", "argv"} <= set(prov)
    assert isinstance(prov["threads"], int) and prov["threads"] >= 1


def test_fingerprint_follows_method_source(tmp_path, monkeypatch):
    """A copy of the tree with one method file edited has another fingerprint; the unedited copy the same."""
    import shutil

    records._fingerprint.cache_clear()  # the tree as it is now (another process may have edited it)
    here = code_fingerprint()
    root = records.Path(records.__file__).resolve().parent.parent
    for rel in records.FINGERPRINT_SOURCES:
        src, dst = root / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    monkeypatch.setattr(records, "__file__", str(tmp_path / "bench" / "records.py"))
    records._fingerprint.cache_clear()
    try:
        same = records.code_fingerprint()
        dps = tmp_path / "methods" / "dps.py"
        dps.write_text(dps.read_text() + "\n# an edit\n")
        records._fingerprint.cache_clear()
        edited = records.code_fingerprint()
    finally:
        records._fingerprint.cache_clear()
    assert same == here and edited != same


def test_code_change_recomputes_and_archives_instead_of_reusing(tmp_path):
    specs = _specs(tmp_path)
    out = tmp_path / "o"
    run_suite(specs, out, SerialExecutor(), progress=False, log=_quiet)
    path = out / "records.jsonl"
    rows = _rows(path)
    for r in rows:  # as if recorded by an earlier version of the code
        r["code"] = "0123456789abcdef"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    said = []
    again = run_suite(specs, out, SerialExecutor(), progress=False, log=said.append)
    assert again["skipped"] == 0 and again["ran"] == len(specs) and again["recomputed"] == len(specs)
    assert any(f"recomputing {len(specs)} runs: code changed (recorded by code 0123456789abcdef" in m
               for m in said), said
    new = _rows(path)
    assert {r["code"] for r in new} == {code_fingerprint()} and len(new) == len(rows)
    old = _rows(out / "records.archive.jsonl")
    assert len(old) == len(rows) and all(r["archived"]["reason"].startswith("code changed") for r in old)
    assert run_suite(specs, out, SerialExecutor(), progress=False, log=_quiet)["skipped"] == len(specs)


def test_subset_invocation_never_touches_other_runs(tmp_path):
    """Issue 17: `--only unguided` after a default changed must not remove the other method's records."""
    specs = _specs(tmp_path)
    out = tmp_path / "o"
    run_suite(specs, out, SerialExecutor(), progress=False, log=_quiet)
    path = out / "records.jsonl"
    rows = _rows(path)
    for r in rows:
        if r["method"] == "dps":
            r["code"] = "feedfacefeedface"  # outdated, but not part of the next invocation
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    only = [s for s in specs if s.method == "unguided"]
    res = run_suite(only, out, SerialExecutor(), progress=False, log=_quiet)
    assert res["skipped"] == len(only)
    assert _rows(path) == rows and not (out / "records.archive.jsonl").exists()


def test_superseded_run_is_archived_when_its_new_id_runs(tmp_path):
    specs = _specs(tmp_path)
    out = tmp_path / "o"
    run_suite(specs, out, SerialExecutor(), progress=False, log=_quiet)
    path = out / "records.jsonl"
    rows = _rows(path)
    dps = next(r for r in rows if r["method"] == "dps")["run_id"]
    for r in rows:  # as if recorded under an older id scheme
        if r["run_id"] == dps:
            r["run_id"] = "oldid00000000000"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_suite(specs, out, SerialExecutor(), progress=False, log=_quiet)
    assert res["ran"] == 1
    assert "oldid00000000000" not in {r["run_id"] for r in _rows(path)}
    arch = _rows(out / "records.archive.jsonl")
    assert {r["run_id"] for r in arch} == {"oldid00000000000"}
    assert arch[0]["archived"]["reason"].startswith(f"superseded: its spec now hashes to run {dps}")


def test_retry_failed_reruns_error_rows(tmp_path):
    bad = RunSpec(task="subspace", reward="f1-theta2", method="look-ahead", params={"delta": "x"}, rounds=1,
                  batch=2, T=10)
    out = tmp_path / "o"
    said = []
    assert run_suite([bad], out, SerialExecutor(), progress=False, log=said.append)["failed"] == 1
    again = run_suite([bad], out, SerialExecutor(), progress=False, log=said.append)
    assert again["skipped"] == 1 and again["ran"] == 0
    assert any("--retry-failed re-runs them" in m for m in said)
    retry = run_suite([bad], out, SerialExecutor(), progress=False, log=_quiet, retry_failed=True)
    assert retry["ran"] == 1 and retry["skipped"] == 0
    assert len(_rows(out / "records.jsonl")) == 1
    assert _rows(out / "records.archive.jsonl")[0]["archived"]["reason"] == "retry-failed: error"


def test_second_writer_is_locked_out(tmp_path):
    out = tmp_path / "o"
    with DirLock(out, "test holder"):
        with DirLock(out):  # re-entrant within one process
            pass
        code = ("import sys; from bench.records import DirLock\n"
                f"with DirLock({str(out)!r}): pass\n")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert p.returncode != 0 and "LockedError" in p.stderr and "test holder" in p.stderr
        r = subprocess.run([sys.executable, "-m", "bench", "run", "--T", "10", "--batch", "2", "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "another bench process" in r.stderr and "Traceback" not in r.stderr
    assert not (out / "records.jsonl").exists()
    with DirLock(out):  # released
        pass


def test_write_run_is_whole_or_nothing_on_a_full_disk(tmp_path, monkeypatch):
    w = RecordWriter(tmp_path)
    w.write_run([{"run_id": "a", "round": 0}])
    real = records.os.write
    calls = {"n": 0}

    def failing(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:  # half of it reaches the disk, then the disk is full
            return real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records.os, "write", failing)
    with pytest.raises(OSError):
        w.write_run([{"run_id": "b", "round": r, "pad": "x" * 100} for r in range(3)])
    monkeypatch.setattr(records.os, "write", real)
    w.write_run([{"run_id": "c", "round": 0}])
    w.close()
    assert [(r["run_id"], r["round"]) for r in _rows(tmp_path / "records.jsonl")] == [("a", 0), ("c", 0)]


def test_bench_archive_lists_restores_and_purges(tmp_path, capsys):
    from bench.cli import main

    out = tmp_path / "o"
    out.mkdir()
    (out / "records.jsonl").write_text('{"run_id": "a", "round": 0, "status": "ok", "spec": {"rounds": 1}}\n')
    from bench.resume import compact

    compact(out)  # incomplete run a (no round 1) and no code fingerprint: archived
    assert _rows(out / "records.jsonl") == []
    assert main(["archive", str(out)]) == 0
    assert "1 archived rows of 1 runs" in capsys.readouterr().out
    assert main(["archive", str(out), "--restore", "--run", "a"]) == 0
    assert [r["run_id"] for r in _rows(out / "records.jsonl")] == ["a"] and "archived" not in _rows(
        out / "records.jsonl")[0]
    assert _rows(out / "records.archive.jsonl") == []
    compact(out)
    assert main(["archive", str(out), "--purge", "--reason", "code changed"]) == 0
    assert _rows(out / "records.archive.jsonl") == [] and _rows(out / "records.jsonl") == []
    assert main(["archive", str(tmp_path / "nothing")]) == 2
