"""Benchmark suites: TOML grid files expanded into RunSpecs, run by an executor, resumable (DESIGN.md §5-6).

A suite file (``bench/suites/<name>.toml``) holds defaults for every run (any RunSpec field plus ``seeds``) and
``[[grid]]`` blocks; each block is the cartesian product of its ``tasks`` x ``rewards`` x ``denoisers`` x
``methods`` x swept ``[grid.params.<method>]`` values x seeds. ``methods = ["*"]`` means every method of
``methods.REGISTRY`` at run time (``exclude = [...]`` drops some). Rewards a task does not have are skipped;
omitted rewards mean the task's first reward. "*" also skips the (reward, denoiser) pairs a method declares it cannot run
(``Method.unsupported``, e.g. exact-guidance off the oracle).
"""
from __future__ import annotations

import itertools
import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .executors import TaskFailed, default_fn, pretrain_needed  # noqa: F401  (pretrain_needed: re-exported)
from .resume import compact, complete_runs, outdated_runs  # noqa: F401  (re-exported for callers)
from .runner import RunSpec

SUITES_DIR = Path(__file__).resolve().parent / "suites"
SPEC_FIELDS = {f.name for f in fields(RunSpec)} - {"task", "reward", "denoiser", "method", "params", "seed"}
TOP_KEYS = {"description", "figures", "seeds", "grid", "plugins", "tune"} | SPEC_FIELDS
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
    tune: dict = field(default_factory=dict)  # [tune] table: the fair-comparison protocol (bench/tune.py)


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
    tune = data.get("tune", {})
    if not isinstance(tune, dict):
        raise SuiteError(f"{p}: [tune] must be a table")
    return Suite(p.stem, p, data.get("description", ""), figures, defaults, grids, plugins, tune)


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
           only: list[str] | None = None, tasks: list[str] | None = None,
           denoisers: list[str] | None = None) -> list[RunSpec]:
    """Every RunSpec of the suite, in file order, without duplicates (same run_id); ``only`` / ``tasks`` /
    ``denoisers`` keep the runs of those methods / tasks / denoisers (the same run ids as the whole suite's)."""
    from methods import REGISTRY, suggest
    from tasks import TASKS, get_task

    from .inputs import typed_field
    from .plugins import load_plugins

    load_plugins(suite.plugins, base=suite.path.resolve().parent)  # before names are checked
    if only:
        for m in only:
            if m not in REGISTRY:
                raise SuiteError(str(suggest("method in --only", m, REGISTRY)))
    specs, seen = [], set()
    for gi, g in enumerate(suite.grids, 1):
        base = {**{k: v for k, v in suite.defaults.items() if k != "seeds"},
                **{k: v for k, v in g.items() if k in SPEC_FIELDS}}
        net_seeds = _as_list(base.pop("network_seed", 0))  # a list sweeps the trained networks' seeds
        base = {k: typed_field(k, v, f"{suite.path.name} [[grid]] #{gi}") for k, v in base.items()}
        net_seeds = [typed_field("network_seed", v, f"{suite.path.name} [[grid]] #{gi}") for v in net_seeds]
        if any(v < 0 for v in net_seeds):
            raise SuiteError(f"network_seed must be a non-negative integer, got {min(net_seeds)}")
        if device:
            base["device"] = device
        run_seeds = seeds if seeds is not None else _as_list(g.get("seeds", suite.defaults.get("seeds", [0])))
        methods = _methods(g, REGISTRY)
        params = g.get("params", {})
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise SuiteError("[grid.params] must hold one table per method, e.g. [grid.params.naive] delta = [0.2]")
        if not _as_list(run_seeds):
            raise SuiteError("no seeds to run (empty seed list)")
        bad = [x for x in _as_list(run_seeds) if isinstance(x, bool) or not isinstance(x, int) or x < 0]
        if bad:
            raise SuiteError(f"seeds must be non-negative integers, got {bad[0]!r}")
        for m in params:
            if m not in REGISTRY:
                raise SuiteError(str(suggest("method in [grid.params]", m, REGISTRY)))
            if m not in methods:
                raise SuiteError(f"[grid.params.{m}] in [[grid]] #{gi} of {suite.path.name}: {m!r} is not one of "
                                 f"that grid's methods ({', '.join(methods) or 'none'})")
        T = base.get("T", RunSpec.T)
        for task_name in _as_list(g["tasks"]):
            if task_name not in TASKS:
                raise SuiteError(str(suggest("task", task_name, TASKS)))
            if tasks and task_name not in tasks:
                continue
            task = get_task(task_name, T)
            rewards = _as_list(g.get("rewards", [next(iter(task.rewards))]))
            for rw in rewards:
                if rw not in task.rewards:
                    if not any(rw in get_task(t, T).rewards for t in TASKS):
                        raise SuiteError(f"reward {rw!r} belongs to no task")
                    continue
                for den in _as_list(g.get("denoisers", ["oracle"])):
                    if denoisers and den not in denoisers:
                        continue
                    for m in methods:
                        if only and m not in only:
                            continue
                        if m not in _as_list(g["methods"]) and getattr(REGISTRY[m], "unsupported", lambda *a: None)(
                                task.rewards[rw], den):  # "*" skips what a method cannot run (exact-guidance)
                            continue
                        for pr in _param_grid(params.get(m, {})):
                            for s, ns in itertools.product(run_seeds, [0] if den == "oracle" else net_seeds):
                                spec = RunSpec(task=task_name, reward=rw, denoiser=den, method=m, params=pr,
                                               seed=int(s), network_seed=ns, **base)
                                if spec.run_id not in seen:
                                    seen.add(spec.run_id)
                                    specs.append(spec)
    for what, keep, field in (("--tasks", tasks, "task"), ("--denoisers", denoisers, "denoiser")):
        missing = [v for v in keep or [] if not any(getattr(s, field) == v for s in specs)]
        if missing:
            raise SuiteError(f"{what} {','.join(missing)} matches no run of suite {suite.name}")
    missing = [m for m in only or [] if not any(s.method == m for s in specs)]
    if missing:
        have = sorted({m for g in suite.grids for m in _methods(g, REGISTRY)})
        raise SuiteError(f"--only {','.join(missing)} matches no run of suite {suite.name} "
                         f"(its methods: {', '.join(have)})")
    return specs


def under_out(specs: list[RunSpec], out: Path) -> list[RunSpec]:
    """Resolve each spec's ``save_samples`` against the output directory (absolute, so workers started anywhere
    write under ``out``): a suite's ``save_samples = "samples"`` means ``<out>/samples``. Run ids are unchanged."""
    from dataclasses import replace

    base = Path(out).resolve()
    return [replace(s, save_samples=str(base / s.save_samples)) if s.save_samples else s for s in specs]


def validate(specs: list[RunSpec]) -> None:
    """Build every spec (names, parameters, devices) before anything runs; raises on the first bad one."""
    from .inputs import UsageError, check_spec
    from .runner import build

    for s in specs:
        try:
            check_spec(s)
            build(s)
        except (KeyError, ValueError, UsageError) as e:
            raise SuiteError(f"run {s.method} on {s.task}/{s.reward}/{s.denoiser} {s.params}: {e}") from None


# --- the driver ---------------------------------------------------------------------------------------------
class Interrupted(Exception):
    """SIGINT/SIGTERM during a sweep: finished runs are kept, in-flight runs are lost."""


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_suite(specs: list[RunSpec], out: Path, executor, *, progress: bool = True, log=None,
              retry_failed: bool = False, group_rows: int | None = None) -> dict:
    """Run the specs not yet complete in ``out``; the driver writes each run's records when it finishes.

    A run is reused only when its records are complete and were produced by the same code (``code``
    fingerprint), spec and hyperparameters; other rows of the invocation's runs are archived, never deleted, and
    the log says why each group of runs is recomputed. ``retry_failed`` re-runs ``error``/``diverged`` runs.
    Returns counts {"total", "skipped", "ran", "failed", "recomputed"} (failed counts every failed run of
    ``specs``, including failures recorded by an earlier invocation). Raises Interrupted on SIGINT/SIGTERM after
    closing cleanly. Holds ``out``'s lock: a second writer fails at once (records.LockedError). Runs of a batchable
    method that differ only in seeds and batched hyperparameters run as stacked groups of at most ``group_rows``
    rows (bench/batched.py; same records as run alone).
    """
    import sys

    from .records import DirLock

    log = log or (lambda m: print(m, file=sys.stderr))
    out = Path(out)
    specs = under_out(specs, out)  # a relative save_samples means under out, whoever calls
    with DirLock(out, "bench suite"):
        return _run_locked(specs, out, executor, progress, log, retry_failed, group_rows)


def _run_locked(specs, out, executor, progress, log, retry_failed, group_rows=None) -> dict:
    import signal

    from .batched import imap_runs
    from .progress import Progress
    from .records import RecordWriter
    from .resume import ARCHIVE

    p = compact(out, {s.run_id for s in specs}, retry_failed=retry_failed)
    done = p.done
    todo = [s for s in specs if s.run_id not in done]
    failed = {s.run_id for s in specs if s.run_id in done
              and any(r.get("status") != "ok" for r in done[s.run_id])}
    redo = {rid: why for rid, why in p.reasons.items() if not why.startswith("incomplete")}
    counts = {"total": len(specs), "skipped": len(specs) - len(todo), "ran": 0, "recomputed": len(redo)}
    if counts["skipped"]:
        log(f"resuming: {counts['skipped']} of {len(specs)} runs already complete in {out} (same code)")
    for why, n in sorted(p.summary().items()):
        example = next(w for w in p.reasons.values() if w.startswith(why))
        log(f"recomputing {n} run{'s' if n != 1 else ''}: {example}")
    if p.archive:
        log(f"moved {len(p.archive)} old row{'s' if len(p.archive) != 1 else ''} to {out / ARCHIVE} "
            "(nothing is deleted; `bench archive` restores or purges)")
    if failed:
        log(f"{len(failed)} failed run{'s' if len(failed) != 1 else ''} kept as recorded; --retry-failed re-runs them")
    # both signals explicitly: a process started in the background inherits SIGINT as ignored
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    old_int = signal.signal(signal.SIGINT, _raise_interrupt) if _main_thread() else None
    bar = Progress(len(todo), f"runs ({executor.describe()})", "run", enabled=progress)  # plain lines off a TTY
    failed_before = len(failed)
    try:
        with RecordWriter(out) as w, executor as ex:
            for i, records in imap_runs(ex, todo, group_rows):  # batched groups, one record list per run
                if isinstance(records, TaskFailed):  # nothing recorded: a re-run retries it
                    failed.add(todo[i].run_id)
                    log(f"worker failed on {todo[i].method} on {todo[i].task}/{todo[i].denoiser}: {records}")
                    bar.update(1, failed=len(failed) - failed_before)
                    continue
                w.write_run(records)  # the whole run at once, signals held: a kill loses only runs in flight
                counts["ran"] += 1
                if any(r.get("status") != "ok" for r in records):
                    failed.add(todo[i].run_id)
                    err = records[-1]
                    log(f"run {err.get('status')}: {todo[i].method} on {todo[i].task}/{todo[i].denoiser}: "
                        f"{err.get('error')}")
                bar.update(1, failed=len(failed) - failed_before)
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
    from .atomic import write_text  # whole or not at all: both are read back by `bench report`

    write_text(out / "figures.json", json.dumps(suite.figures) + "\n")
    meta = {"suite": suite.name, "description": suite.description, "file": str(suite.path), "runs": len(specs)}
    write_text(out / "suite.json", json.dumps(meta, indent=1) + "\n")
