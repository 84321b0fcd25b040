"""Benchmark suites: TOML grid files expanded into RunSpecs, run by an executor, resumable (DESIGN.md §5-6).

A suite file (``bench/suites/<name>.toml``) holds defaults for every run (any RunSpec field plus ``seeds``) and
``[[grid]]`` blocks; each block is the cartesian product of its ``tasks`` x ``rewards`` x ``denoisers`` x
``methods`` x swept ``[grid.params.<method>]`` values x seeds. ``methods = ["*"]`` means every method of
``methods.REGISTRY`` at run time (``exclude = [...]`` drops some). Rewards a task does not have are skipped;
omitted rewards mean the task's first reward.
"""
from __future__ import annotations

import itertools
import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .records import read_records
from .executors import TaskFailed, default_fn, pretrain_needed  # noqa: F401  (pretrain_needed: re-exported)
from .resume import compact, complete_runs, outdated_runs  # noqa: F401  (re-exported for callers)
from .runner import RunSpec

SUITES_DIR = Path(__file__).resolve().parent / "suites"
SPEC_FIELDS = {f.name for f in fields(RunSpec)} - {"task", "reward", "denoiser", "method", "params", "seed"}
TOP_KEYS = {"description", "figures", "seeds", "grid", "plugins"} | SPEC_FIELDS
GRID_KEYS = {"tasks", "rewards", "denoisers", "methods", "exclude", "params", "seeds"} | SPEC_FIELDS


class SuiteError(ValueError):
    """A malformed suite file or an unknown suite name."""


@dataclass
class Suite:
    name: str
    path: Path
    description: str = ""
    figures: list = field(default_factory=list)
    defaults: dict = field(default_factory=dict)
    grids: list = field(default_factory=list)
    plugins: list = field(default_factory=list)  # module names / .py paths (relative to the TOML file)


def available() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def _check_keys(d: dict, allowed: set, where: str) -> None:
    from methods import suggest

    for k in d:
        if k not in allowed:
            raise SuiteError(str(suggest(f"key in {where}", k, allowed)))


def load_suite(name_or_path: str | os.PathLike) -> Suite:
    """A suite by name (bench/suites/NAME.toml) or by path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix != ".toml" or not p.exists():
        cand = SUITES_DIR / f"{name_or_path}.toml"
        if not cand.exists():
            if p.suffix == ".toml":
                raise SuiteError(f"suite file {p} does not exist")
            from methods import suggest

            raise SuiteError(str(suggest("suite", str(name_or_path), available())))
        p = cand
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{p}: invalid TOML: {e}") from None
    _check_keys(data, TOP_KEYS, f"suite {p.name}")
    grids = data.get("grid", [])
    if not isinstance(grids, list) or not grids:
        raise SuiteError(f"{p}: needs at least one [[grid]] block")
    for i, g in enumerate(grids):
        _check_keys(g, GRID_KEYS, f"[[grid]] #{i + 1} of {p.name}")
        for k in ("tasks", "methods"):
            if not g.get(k):
                raise SuiteError(f"{p}: [[grid]] #{i + 1} needs a non-empty '{k}' list")
    figures = list(data.get("figures", []))
    defaults = {k: v for k, v in data.items() if k in SPEC_FIELDS or k == "seeds"}
    plugins = data.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(x, str) and x for x in plugins):
        raise SuiteError(f"{p}: 'plugins' must be a list of module names or .py paths")
    return Suite(p.stem, p, data.get("description", ""), figures, defaults, grids, plugins)


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _param_grid(table: dict) -> list[dict]:
    """Cartesian product of a method's parameter table (list values are swept)."""
    if not table:
        return [{}]
    keys = sorted(table)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(_as_list(table[k]) for k in keys))]


def _methods(g: dict, registry) -> list[str]:
    from methods import suggest

    names = []
    for m in _as_list(g["methods"]):
        new = list(registry) if m == "*" else [m]
        for n in new:
            if n not in registry:
                raise SuiteError(str(suggest("method", n, registry)))
            if n not in names:
                names.append(n)
    exclude = set(_as_list(g.get("exclude", [])))
    return [m for m in names if m not in exclude]


def expand(suite: Suite, *, seeds: list[int] | None = None, device: str | None = None,
           only: list[str] | None = None) -> list[RunSpec]:
    """Every RunSpec of the suite, in file order, without duplicates (same run_id)."""
    from methods import REGISTRY, suggest
    from tasks import TASKS, get_task

    from .plugins import load_plugins

    load_plugins(suite.plugins, base=suite.path.resolve().parent)  # before names are checked
    if only:
        for m in only:
            if m not in REGISTRY:
                raise SuiteError(str(suggest("method in --only", m, REGISTRY)))
    specs, seen = [], set()
    for g in suite.grids:
        base = {**{k: v for k, v in suite.defaults.items() if k != "seeds"},
                **{k: v for k, v in g.items() if k in SPEC_FIELDS}}
        if device:
            base["device"] = device
        run_seeds = seeds if seeds is not None else _as_list(g.get("seeds", suite.defaults.get("seeds", [0])))
        methods = _methods(g, REGISTRY)
        params = g.get("params", {})
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise SuiteError("[grid.params] must hold one table per method, e.g. [grid.params.naive] delta = [0.2]")
        if not _as_list(run_seeds):
            raise SuiteError("no seeds to run (empty seed list)")
        for m in params:
            if m not in REGISTRY:
                raise SuiteError(str(suggest("method in [grid.params]", m, REGISTRY)))
        T = base.get("T", RunSpec.T)
        for task_name in _as_list(g["tasks"]):
            if task_name not in TASKS:
                raise SuiteError(str(suggest("task", task_name, TASKS)))
            task = get_task(task_name, T)
            rewards = _as_list(g.get("rewards", [next(iter(task.rewards))]))
            for rw in rewards:
                if rw not in task.rewards:
                    if not any(rw in get_task(t, T).rewards for t in TASKS):
                        raise SuiteError(f"reward {rw!r} belongs to no task")
                    continue
                for den in _as_list(g.get("denoisers", ["oracle"])):
                    for m in methods:
                        if only and m not in only:
                            continue
                        for pr in _param_grid(params.get(m, {})):
                            for s in run_seeds:
                                spec = RunSpec(task=task_name, reward=rw, denoiser=den, method=m, params=pr,
                                               seed=int(s), **base)
                                if spec.run_id not in seen:
                                    seen.add(spec.run_id)
                                    specs.append(spec)
    return specs


def validate(specs: list[RunSpec]) -> None:
    """Build every spec (names, parameters, devices) before anything runs; raises on the first bad one."""
    from .runner import build

    for s in specs:
        try:
            build(s)
        except (KeyError, ValueError) as e:
            raise SuiteError(f"run {s.method} on {s.task}/{s.reward}/{s.denoiser} {s.params}: {e}") from None


# --- the driver ---------------------------------------------------------------------------------------------
class Interrupted(Exception):
    """SIGINT/SIGTERM during a sweep: finished runs are kept, in-flight runs are lost."""


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_suite(specs: list[RunSpec], out: Path, executor, *, progress: bool = True, log=None) -> dict:
    """Run the specs not yet complete in ``out``; the driver writes each run's records when it finishes.

    Returns counts {"total", "skipped", "ran", "failed"} (failed counts every failed run of ``specs``, including
    failures recorded by an earlier invocation). Raises Interrupted on SIGINT/SIGTERM after closing cleanly.
    """
    import signal
    import sys

    from tqdm import tqdm

    from .records import RecordWriter

    log = log or (lambda m: print(m, file=sys.stderr))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = compact(out)  # also drops runs recorded under an outdated id (changed defaults or versions)
    todo = [s for s in specs if s.run_id not in done]
    failed = {s.run_id for s in specs if s.run_id in done
              and any(r.get("status") != "ok" for r in done[s.run_id])}
    counts = {"total": len(specs), "skipped": len(specs) - len(todo), "ran": 0}
    if counts["skipped"]:
        log(f"resuming: {counts['skipped']} of {len(specs)} runs already complete in {out}")
    # both signals explicitly: a process started in the background inherits SIGINT as ignored
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    old_int = signal.signal(signal.SIGINT, _raise_interrupt) if _main_thread() else None
    bar = tqdm(total=len(todo), desc=f"runs ({executor.describe()})", disable=None if progress else True,
               file=sys.stderr, unit="run")
    try:
        with RecordWriter(out) as w, executor as ex:
            for i, records in ex.imap_unordered(default_fn(), todo):
                if isinstance(records, TaskFailed):  # nothing recorded: a re-run retries it
                    failed.add(todo[i].run_id)
                    log(f"worker failed on {todo[i].method} on {todo[i].task}/{todo[i].denoiser}: {records}")
                    bar.update(1)
                    continue
                for rec in records:  # the whole run at once: a kill loses at most the runs in flight
                    w.write(rec)
                counts["ran"] += 1
                if any(r.get("status") != "ok" for r in records):
                    failed.add(todo[i].run_id)
                    err = records[-1]
                    log(f"run {err.get('status')}: {todo[i].method} on {todo[i].task}/{todo[i].denoiser}: "
                        f"{err.get('error')}")
                bar.update(1)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {counts['ran']} new runs; finished runs are kept in {out}") from None
    finally:
        bar.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
    counts["failed"] = len(failed)
    return counts


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def write_suite_meta(suite: Suite, out: Path, specs: list[RunSpec]) -> None:
    """``figures.json`` (so ``bench report DIR`` reproduces the suite's extra figures) and ``suite.json``."""
    (out / "figures.json").write_text(json.dumps(suite.figures) + "\n", encoding="utf-8")
    meta = {"suite": suite.name, "description": suite.description, "file": str(suite.path), "runs": len(specs)}
    (out / "suite.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def add_parser(sub) -> None:
    s = sub.add_parser("suite", help="run a benchmark suite (bench/suites/NAME.toml or a path), then report",
                       description="Expand a suite file into runs, pretrain needed networks, run the runs not yet "
                                   "complete in OUT (resume), write records and the report, print the table. "
                                   f"Shipped suites: {', '.join(available())}.")
    s.add_argument("suite", help="suite name or path to a .toml file")
    s.add_argument("--out", default=None, help="output directory (default reports/NAME)")
    s.add_argument("--dry-run", action="store_true", help="list the expanded runs and exit")
    s.add_argument("--seeds", default=None, help="comma-separated seeds overriding the file, e.g. 0,1,2")
    s.add_argument("--device", default=None, help="cpu, cuda or auto (overrides the file)")
    s.add_argument("--only", default=None, help="comma-separated methods to keep, e.g. naive,look-ahead")
    s.add_argument("--workers", type=int, default=1, help="worker processes (process/dask executors)")
    s.add_argument("--executor", default=None, choices=("serial", "process", "dask"),
                   help="serial (default with 1 worker), process (default with --workers > 1) or dask")
    s.add_argument("--scheduler", default=None, help="dask scheduler address tcp://HOST:PORT (implies dask)")
    s.add_argument("--no-report", action="store_true", help="write records only")
    s.set_defaults(fn=cmd_suite)


def _csv_ints(s: str | None, what: str) -> list[int] | None:
    if s is None:
        return None
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise SuiteError(f"{what} expects comma-separated integers, got {s!r}") from None


def cmd_suite(a) -> int:
    import sys
    import time

    from .executors import make_executor

    suite = load_suite(a.suite)
    only = [m.strip() for m in a.only.split(",") if m.strip()] if a.only else None
    specs = expand(suite, seeds=_csv_ints(a.seeds, "--seeds"), device=a.device, only=only)
    validate(specs)
    out = Path(a.out or Path("reports") / suite.name)
    if a.dry_run:
        from .report import short_params

        print(f"suite {suite.name}: {suite.description}")
        records = read_records(out, allow_empty=True) if (out / "records.jsonl").exists() else []  # read only
        stale = outdated_runs(records)
        done = {k: v for k, v in complete_runs(records).items() if k not in stale}
        for s in specs:
            mark = "done" if s.run_id in done else "stale" if s.run_id in stale else "todo"
            print(f"{s.run_id}  {mark}  {s.task}/{s.reward}/{s.denoiser}  {s.method} {short_params(s.params)}  "
                  f"rounds={s.rounds} batch={s.batch} T={s.T} steps={s.steps} seed={s.seed} {s.device}")
        print(f"{len(specs)} runs ({sum(s.run_id in done for s in specs)} already complete in {out})")
        return 0
    kind = a.executor or ("dask" if a.scheduler else "process" if a.workers > 1 else "serial")
    import torch

    torch.set_num_threads(1)  # small networks: one thread per process is fastest, and leaves cores to workers
    t0 = time.perf_counter()
    try:
        executor = make_executor(kind, a.workers, a.scheduler)
    except (RuntimeError, OSError) as e:  # dask missing, scheduler unreachable
        raise SuiteError(str(e)) from None
    try:
        nets = pretrain_needed(specs, parallel=max(a.workers, min(2, os.cpu_count() or 1)) if not a.scheduler else 1)
    except BaseException:
        executor.close(cancel=True)
        raise
    if nets:
        print(f"networks ready ({', '.join(f'{t}/{k}' for t, k in nets)}) after {time.perf_counter() - t0:.1f}s",
              file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    write_suite_meta(suite, out, specs)
    try:
        counts = run_suite(specs, out, executor)
    except Interrupted as e:
        print(f"bench suite: {e}", file=sys.stderr)
        return 130
    if not a.no_report:
        from .report import print_table, write_report

        write_report(out)
        print(print_table(out))
    print(f"suite {suite.name}: {counts['total']} runs ({counts['skipped']} resumed, {counts['ran']} run, "
          f"{counts['failed']} failed) in {time.perf_counter() - t0:.1f}s -> {out}", file=sys.stderr)
    return 1 if counts["failed"] else 0
