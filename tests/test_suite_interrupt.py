"""Interrupting ``bench suite`` (SIGINT / SIGTERM) keeps finished runs; a re-run completes the suite without
repeating them and without duplicate or truncated records."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITE = """
description = "interrupt test"
rounds = 2
batch = 8
T = 200
seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39]
[[grid]]
tasks = ["subspace"]
denoisers = ["oracle"]
methods = ["look-ahead"]
"""


N = 40  # runs in the suite: enough that the signal lands mid-sweep even on a fast machine


def lines(out: Path) -> list[str]:
    p = out / "records.jsonl"
    return p.read_text().splitlines() if p.exists() else []


def start(suite: Path, out: Path, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench", "suite", str(suite), "--out", str(out), "--no-report",
                             *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig, extra", [(signal.SIGINT, ()), (signal.SIGTERM, ("--workers", "2"))])
def test_interrupt_then_resume(tmp_path, sig, extra):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    p = start(suite, out, *extra)
    deadline = time.time() + 120
    while len(lines(out)) < 3 and p.poll() is None and time.time() < deadline:  # at least one run finished
        time.sleep(0.05)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err
    before = [json.loads(line) for line in lines(out)]  # every line parses: nothing truncated
    done_before = {r["run_id"] for r in before}
    assert 1 <= len(done_before) < N, "the signal should land mid-sweep"
    assert len(before) == 3 * len(done_before)  # whole runs only

    p = start(suite, out, *extra)
    _, err = p.communicate(timeout=180)
    assert p.returncode == 0, err
    assert f"{len(done_before)} resumed, {N - len(done_before)} run, 0 failed" in err
    after = [json.loads(line) for line in lines(out)]
    keys = [(r["run_id"], r["round"]) for r in after]
    assert len(keys) == len(set(keys)) == 3 * N
    assert after[:len(before)] == before  # finished runs kept byte-for-byte, not repeated
