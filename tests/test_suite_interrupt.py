"""Interrupting ``bench suite`` (SIGINT / SIGTERM) keeps finished runs, whole: a signal never lands between the rows
of one run; a re-run completes the suite without repeating them and without duplicate or truncated records.
Killing the driver with SIGKILL leaves no worker process behind."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 2
SUITE = f"""
description = "interrupt test"
rounds = {ROUNDS}
batch = 8
T = 100
seeds = {list(range(40))}
[[grid]]
tasks = ["subspace"]
denoisers = ["oracle"]
methods = ["look-ahead"]
"""
N = 40  # runs in the suite: enough that the signal lands mid-sweep even on a fast machine


def lines(out: Path) -> list[str]:
    p = out / "records.jsonl"
    return p.read_text().splitlines() if p.exists() else []


def whole_runs(out: Path) -> set[str]:
    """The run ids on disk, asserting every line parses and every run has rounds 0..ROUNDS exactly once."""
    rounds: dict[str, list[int]] = {}
    for line in lines(out):
        r = json.loads(line)  # nothing truncated
        rounds.setdefault(r["run_id"], []).append(r["round"])
    partial = {k: v for k, v in rounds.items() if sorted(v) != list(range(ROUNDS + 1))}
    assert not partial, f"runs on disk that are not whole: {partial}"
    return set(rounds)


def start(suite: Path, out: Path, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # --group-rows 8 (= the batch): one run per batched group, so runs finish one at a time as this test needs
    # (interrupting batched groups: tests/test_batched.py)
    return subprocess.Popen([sys.executable, "-m", "bench", "suite", str(suite), "--out", str(out), "--no-report",
                             "--group-rows", "8", *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_lines(p: subprocess.Popen, out: Path, n: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while len(lines(out)) < n and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)


def signal_moment(p: subprocess.Popen, out: Path, n: int, delay: float, timeout: float = 180) -> None:
    """Return once ``n`` lines are on disk and ``delay`` seconds have passed since, or at once when a run's rows
    are seen half-written (a line count that is not a multiple of the rows per run): the riskiest moment."""
    path, f, ino, count, seen_at, deadline = out / "records.jsonl", None, None, 0, None, time.time() + timeout
    try:
        while p.poll() is None and time.time() < deadline:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                time.sleep(0.005)
                continue
            if st.st_ino != ino:  # (re)created, e.g. rewritten by resume: count from the start
                if f:
                    f.close()
                f, count = open(path, "rb"), 0
                ino = os.fstat(f.fileno()).st_ino
            count += f.read().count(b"\n")  # tail: new bytes only
            if count % (ROUNDS + 1):
                return
            if count >= n:
                seen_at = seen_at or time.time()
                if time.time() - seen_at >= delay:
                    return
            time.sleep(0.0005)
    finally:
        if f:
            f.close()


@pytest.mark.parametrize("sig, extra, delays", [
    (signal.SIGINT, (), [0.0]),
    # several interrupts with 2 workers, each at the first sight of a half-written run or else at a different
    # moment after a write: a signal between two rows of one run (the bug this guards against) shows up
    (signal.SIGTERM, ("--workers", "2"), [0.0, 0.03, 0.2]),
])
def test_interrupt_keeps_whole_runs_then_resume(tmp_path, sig, extra, delays):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    for delay in delays:
        before = lines(out)
        p = start(suite, out, *extra)
        signal_moment(p, out, len(before) + ROUNDS + 1, delay)  # at least one more run, or a half-written one
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 130, err
        assert "interrupted" in err
        done = whole_runs(out)
        assert lines(out)[:len(before)] == before  # finished runs kept byte-for-byte
        assert len(before) // (ROUNDS + 1) < len(done) < N, "the signal should land mid-sweep"

    p = start(suite, out, *extra)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    m = re.search(r"(\d+) resumed, (\d+) run\b", err)
    assert m and (int(m[1]), int(m[2])) == (len(done), N - len(done)), err
    after = [json.loads(line) for line in lines(out)]
    keys = [(r["run_id"], r["round"]) for r in after]
    assert len(keys) == len(set(keys)) == (ROUNDS + 1) * N
    assert len(whole_runs(out)) == N


def test_a_signal_during_a_write_is_taken_after_the_whole_run(tmp_path, monkeypatch):
    """Deterministic: SIGTERM arrives while the second run's rows are being written (sent from inside the fsync
    of records.jsonl); the driver stops after that run, with both runs whole on disk."""
    from bench.executors import SerialExecutor
    from bench.runner import RunSpec
    from bench.suite import Interrupted, run_suite

    specs = [RunSpec(method="naive", rounds=ROUNDS, batch=2, T=10, seed=s) for s in range(4)]
    real_fsync, writes = os.fsync, []

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("records.jsonl"):
            writes.append(fd)
            if len(writes) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(Interrupted):
        run_suite(specs, tmp_path, SerialExecutor(), progress=False, log=lambda m: None)
    assert whole_runs(tmp_path) == {s.run_id for s in specs[:2]}
    assert len(lines(tmp_path)) == 2 * (ROUNDS + 1)


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) for every process, from /proc."""
    table = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(d.name)] = (int(fields[1]), fields[0])
    return table


def _descendants(pid: int) -> list[int]:
    table, found, todo = _proc_table(), [], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, (pp, _) in table.items() if pp == parent]
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    state = _proc_table().get(pid, (0, "X"))[1]
    return state not in ("Z", "X")  # a zombie has exited (PID 1 may not reap it at once)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_of_the_driver_leaves_no_workers(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    p = start(suite, out, "--workers", "2")
    kids = []
    try:
        wait_for_lines(p, out, ROUNDS + 1)  # a run finished: both workers are up and working
        assert p.poll() is None, p.communicate()[1]
        kids = _descendants(p.pid)
        workers = [k for k in kids if "spawn_main" in _cmdline(k)]
        tracker = [k for k in kids if "resource_tracker" in _cmdline(k)]
        assert len(workers) == 2 and len(tracker) == 1, [_cmdline(k) for k in kids]
        p.kill()
        p.wait()
        deadline = time.time() + 10
        while any(map(_alive, kids)) and time.time() < deadline:
            time.sleep(0.1)
        left = [f"{k}: {_cmdline(k)}" for k in kids if _alive(k)]
        assert not left, f"processes outlived the SIGKILLed driver: {left}"
    finally:  # only this test's own processes; left-over workers hold the driver's pipes, so they go first
        for k in kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
        p.kill()
        p.communicate(timeout=60)
