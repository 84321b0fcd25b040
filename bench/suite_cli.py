"""``bench suite``: the command line of suites (arguments, dry run, executor set-up, lock, report).

The suite machinery itself (loading, expansion, the resumable driver) is in ``bench/suite.py``."""
from __future__ import annotations

import os
from pathlib import Path

from .resume import plan, read_lines
from .suite import (SuiteError, Interrupted, available, expand, load_suite, pretrain_needed, run_suite, under_out,
                    validate, write_suite_meta)


def add_parser(sub) -> None:
    from .inputs import _positive, out_dir

    s = sub.add_parser("suite", help="run a benchmark suite (bench/suites/NAME.toml or a path), then report",
                       description="Expand a suite file into runs, pretrain needed networks, run the runs not yet "
                                   "complete in OUT (resume), write records and the report, print the table. "
                                   f"Shipped suites: {', '.join(available())}.")
    s.add_argument("suite", help="suite name or path to a .toml file")
    s.add_argument("--out", default=None, type=out_dir,
                   help="output directory (default results/NAME; the shipped reference reports are regenerated "
                        "with --out reports/NAME)")
    s.add_argument("--retry-failed", action="store_true",
                   help="re-run runs recorded as error/diverged (default: keep them as recorded)")
    s.add_argument("--dry-run", action="store_true", help="list the expanded runs and exit")
    s.add_argument("--seeds", default=None, help="comma-separated seeds overriding the file, e.g. 0,1,2")
    s.add_argument("--device", default=None, help="cpu, cuda or auto (overrides the file)")
    s.add_argument("--only", default=None, help="comma-separated methods to keep, e.g. naive,look-ahead")
    s.add_argument("--tasks", default=None, help="comma-separated tasks to keep, e.g. sphere (same run ids)")
    s.add_argument("--denoisers", default=None, help="comma-separated denoisers to keep, e.g. trained")
    s.add_argument("--workers", type=_positive, default=1, help="worker processes (process/dask executors)")
    s.add_argument("--threads", type=_positive, default=1,
                   help="torch CPU threads per process (driver and each worker); 1 is fastest for the small "
                        "vector tasks, more can help the image tasks")
    s.add_argument("--executor", default=None, choices=("serial", "process", "dask"),
                   help="serial (default with 1 worker), process (default with --workers > 1) or dask")
    s.add_argument("--scheduler", default=None, help="dask scheduler address tcp://HOST:PORT (implies dask)")
    s.add_argument("--no-report", action="store_true", help="write records only")
    s.add_argument("--group-rows", type=_positive, default=None,
                   help="batched sweeps: at most this many rows (sum of batches) per stacked group of runs "
                        "(default $GUIDANCE_BENCH_GROUP_ROWS, else 4096 or fewer for large samples; the batch size "
                        "turns batching off)")
    s.set_defaults(fn=cmd_suite)


def _csv_ints(s: str | None, what: str) -> list[int] | None:
    if s is None:
        return None
    try:
        v = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise SuiteError(f"{what} expects comma-separated integers, got {s!r}") from None
    if any(x < 0 for x in v):
        raise SuiteError(f"{what} expects non-negative integers, got {s!r}")
    return v


def cmd_suite(a) -> int:
    import sys
    import time

    from .executors import make_executor

    suite = load_suite(a.suite)
    only, tasks, dens = ([m.strip() for m in v.split(",") if m.strip()] if v else None
                         for v in (a.only, a.tasks, a.denoisers))
    specs = expand(suite, seeds=_csv_ints(a.seeds, "--seeds"), device=a.device, only=only, tasks=tasks,
                   denoisers=dens)
    out = Path(a.out or Path("results") / suite.name)
    specs = under_out(specs, out)
    validate(specs)
    if a.group_rows is None:  # a bad GUIDANCE_BENCH_GROUP_ROWS is bad input, reported before anything runs
        from .batched import group_rows_default

        try:
            a.group_rows = group_rows_default()
        except ValueError as e:
            raise SuiteError(str(e)) from None
    if suite.tune:  # the fair-comparison protocol: tune on tuning seeds, report on report seeds, leaderboard
        from .tune import cmd_tuned

        return cmd_tuned(a, suite, specs, out)
    if a.dry_run:
        from .report import short_params

        print(f"suite {suite.name}: {suite.description}")
        path = out / "records.jsonl"  # read only: the plan compaction would make
        p = plan(read_lines(path), {s.run_id for s in specs}, retry_failed=a.retry_failed) if path.exists() else None
        done = p.done if p else {}
        stale = {rid for rid, why in p.reasons.items() if not why.startswith("incomplete")} if p else set()
        for s in specs:
            mark = "done" if s.run_id in done else "stale" if s.run_id in stale else "todo"
            print(f"{s.run_id}  {mark}  {s.task}/{s.reward}/{s.denoiser}  {s.method} {short_params(s.params)}  "
                  f"rounds={s.rounds} batch={s.batch} T={s.T} steps={s.steps} seed={s.seed} {s.device}")
        print(f"{len(specs)} runs ({sum(s.run_id in done for s in specs)} already complete in {out})")
        return 0
    kind = a.executor or ("dask" if a.scheduler else "process" if a.workers > 1 else "serial")
    import torch

    torch.set_num_threads(a.threads)  # default 1: fastest for small networks, and leaves cores to workers
    t0 = time.perf_counter()
    from .records import DirLock

    lock = DirLock(out, "bench suite " + suite.name)
    with lock:  # taken before pretraining: a second writer of OUT fails at once
        try:
            executor = make_executor(kind, a.workers, a.scheduler, threads=a.threads)
        except (RuntimeError, OSError) as e:  # dask missing, scheduler unreachable
            raise SuiteError(str(e)) from None
        try:
            nets = pretrain_needed(specs, parallel=max(a.workers, min(2, os.cpu_count() or 1))
                                   if not a.scheduler else 1)
        except BaseException:
            executor.close(cancel=True)
            raise
        if nets:
            print(f"networks ready ({', '.join(f'{t}/{k}' for t, k in nets)}) after "
                  f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
        try:
            write_suite_meta(suite, out, specs)
            counts = run_suite(specs, out, executor, retry_failed=a.retry_failed, group_rows=a.group_rows)
            if not a.no_report:
                from .report import print_table, write_report

                write_report(out)
                print(print_table(out))
        except Interrupted as e:
            print(f"bench suite: {e}", file=sys.stderr)
            return 130
    print(f"suite {suite.name}: {counts['total']} runs ({counts['skipped']} resumed, {counts['ran']} run, "
          f"{counts['recomputed']} recomputed, {counts['failed']} failed) in {time.perf_counter() - t0:.1f}s "
          f"-> {out}", file=sys.stderr)
    return 1 if counts["failed"] else 0
