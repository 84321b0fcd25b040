"""Mutation testing of the maths: plant each mutant of tools/mutants.py in a temporary copy of the repository,
run the test files that cover it (``pytest -x -q``, one thread, a timeout) and report killed / survived and
the mutation score. The working tree is never modified.

    python tools/mutate.py                                  # every mutant, every relevant test file
    python tools/mutate.py --exclude-tests 'tests/test_golden_*'   # the score without the golden tests
    python tools/mutate.py --only sphere-dim-minus-1 dno-reg-sign --jobs 2 --json out.json

Exit status: 0 when every mutant was killed, 1 when some survived, 2 on bad input (an unknown mutant id, a
mutant whose ``old`` text is not found exactly once, or a baseline that fails without any mutant).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS, TESTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHILDREN: set[int] = set()  # forked test runs in flight (killed on SIGINT / SIGTERM)
IGNORE = shutil.ignore_patterns(".git", "results", "reports", "__pycache__", ".pytest_cache", "*.egg-info")


def fail(msg: str):
    print(f"mutate: error: {msg}", file=sys.stderr)
    sys.exit(2)


def test_files(mutant, exclude: list[str]) -> list[str]:
    return [f for f in TESTS[mutant.tests] if not any(fnmatch.fnmatch(f, pat) for pat in exclude)]


def pytest(copy: Path, files: list[str], timeout: float) -> tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout', seconds, last output line) of ``pytest -x -q files`` inside the copy.

    On POSIX the run is a fork of this process, which has imported torch and pytest once (importing torch
    costs seconds on a loaded machine) but none of the project's packages, so the child imports them fresh
    from the copy. Elsewhere it is a plain subprocess."""
    env = {"PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = ["-x", "-q", "-p", "no:cacheprovider", *files]
    t0 = time.perf_counter()
    if not hasattr(os, "fork"):
        try:
            p = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=copy, env={**os.environ, **env},
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.perf_counter() - t0, ""
        rc, out = p.returncode, p.stdout + p.stderr
    else:
        log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        pid = os.fork()
        if pid > 0:
            CHILDREN.add(pid)
        if pid == 0:  # child: run pytest in the copy, never return into the parent's code
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                os.chdir(copy)
                os.environ.update(env)
                sys.path.insert(0, str(copy))
                import pytest as _pytest

                code = int(_pytest.main(args))
            except BaseException:  # noqa: BLE001
                code = 99
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                CHILDREN.discard(pid)
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() - t0 > timeout:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                CHILDREN.discard(pid)
                return "timeout", time.perf_counter() - t0, ""
            time.sleep(0.2)
        out = Path(log.name).read_text(errors="replace")
        os.unlink(log.name)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if rc not in (0, 1):
        return ("fail" if rc in (2, 3) else f"error rc={rc}"), time.perf_counter() - t0, last
    return ("pass" if rc == 0 else "fail"), time.perf_counter() - t0, last


def make_copy(tmp: Path, name: str) -> Path:
    dst = tmp / name
    shutil.copytree(ROOT, dst, ignore=IGNORE)
    return dst


def run_mutant(mutant, copy: Path, exclude, timeout) -> dict:
    files = test_files(mutant, exclude)
    path = copy / mutant.file
    original = path.read_text()
    rec = {"id": mutant.id, "file": mutant.file, "why": mutant.why, "tests": files}
    if not files:
        return {**rec, "status": "survived", "detail": "no test file covers it", "seconds": 0.0}
    path.write_text(original.replace(mutant.old, mutant.new, 1))
    try:
        outcome, secs, last = pytest(copy, files, timeout)
    finally:
        path.write_text(original)
    status = "survived" if outcome == "pass" else "killed"
    return {**rec, "status": status, "detail": f"{outcome}: {last}", "seconds": round(secs, 1)}


def main(argv=None) -> int:
    import numpy  # noqa: F401  imported once here, shared by every forked test run
    import pytest as _pytest  # noqa: F401
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=None, help="mutant ids to run (default: all)")
    ap.add_argument("--exclude-tests", nargs="+", default=[], metavar="GLOB",
                    help="test files to leave out, e.g. 'tests/test_golden_*' for the score without golden tests")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run in parallel, each in its own copy (default 1)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per mutant before it counts as killed")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of every selected test file")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--json", type=Path, default=None, help="write the results to this file")
    args = ap.parse_args(argv)

    known = {m.id: m for m in MUTANTS}
    if args.only:
        bad = [i for i in args.only if i not in known]
        if bad:
            fail(f"unknown mutant id(s) {', '.join(bad)}; see --list")
    chosen = [known[i] for i in args.only] if args.only else list(MUTANTS)
    for m in chosen:
        n = (ROOT / m.file).read_text().count(m.old)
        if n != 1:
            fail(f"mutant {m.id}: its text occurs {n} times in {m.file} (must be exactly once); update tools/mutants.py")
    if args.list:
        for m in chosen:
            print(f"{m.id:28s} {m.file:26s} {m.why}")
        return 0
    if args.jobs < 1:
        fail("--jobs must be >= 1")

    with tempfile.TemporaryDirectory(prefix="gb-mutate-") as tmp:
        def stop(signum, frame):  # kill the test runs in flight, remove the copies, exit 130
            for pid in list(CHILDREN):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            shutil.rmtree(tmp, ignore_errors=True)
            print("mutate: interrupted", file=sys.stderr, flush=True)
            os._exit(130)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        copies = [make_copy(Path(tmp), f"repo{j}") for j in range(args.jobs)]
        if not args.no_baseline:
            files = sorted({f for m in chosen for f in test_files(m, args.exclude_tests)})
            outcome, secs, last = pytest(copies[0], files, args.timeout * 2)
            print(f"baseline (no mutant): {outcome} in {secs:.0f} s: {last}", flush=True)
            if outcome != "pass":
                fail("the selected tests fail without any mutant; fix them first")
        results: list[dict] = []

        def work(item):
            j, m = item
            return run_mutant(m, copies[j % args.jobs], args.exclude_tests, args.timeout)

        # one copy per worker: worker j takes mutants j, j + jobs, ...
        with ThreadPoolExecutor(args.jobs) as pool:
            lanes = [[(j, m) for i, m in enumerate(chosen) if i % args.jobs == j] for j in range(args.jobs)]
            futs = [pool.submit(lambda lane: [print(_fmt(r := work(it)), flush=True) or r for it in lane], lane)
                    for lane in lanes]
            for f in futs:
                results.extend(f.result())
    order = {m.id: i for i, m in enumerate(chosen)}
    results.sort(key=lambda r: order[r["id"]])
    killed = sum(r["status"] == "killed" for r in results)
    print(f"\nmutation score: {killed}/{len(results)} killed ({100 * killed / len(results):.0f}%)"
          + (f", tests excluded: {' '.join(args.exclude_tests)}" if args.exclude_tests else ""))
    survivors = [r["id"] for r in results if r["status"] == "survived"]
    if survivors:
        print("survived: " + ", ".join(survivors))
    if args.json:
        args.json.write_text(json.dumps({"exclude_tests": args.exclude_tests, "killed": killed,
                                         "total": len(results), "results": results}, indent=1))
    return 0 if not survivors else 1


def _fmt(r: dict) -> str:
    return f"{r['status']:8s} {r['id']:28s} {r['seconds']:6.1f} s  {r['detail'][:90]}"


if __name__ == "__main__":
    sys.exit(main())
