"""Executors: where runs execute, behind one interface (DESIGN.md §6; ecosystem.md "Sweeps beyond one box").

Each run is a pure function of a picklable RunSpec returning its records (``bench.runner.execute``). An
executor maps that function over specs and yields ``(index, records)`` as runs finish, in any order; only
the driver writes records. ``serial`` runs in-process; ``process`` uses a spawn-context process pool (fork
after torch has run can deadlock) with one torch thread per worker; ``dask`` runs on a dask.distributed
cluster: an embedded LocalCluster of worker processes, or an existing scheduler (``--scheduler tcp://...``).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterable, Iterator

EXECUTORS = ("serial", "process", "dask")
_THREADS = 1  # torch threads per worker process (set by _worker_init)


def _exit_with_parent(parent: int, every_s: float = 0.5) -> None:
    """In a worker: a daemon thread that ends this process as soon as ``parent`` (the driver) is gone, so a
    SIGKILLed driver leaves no workers behind (an orphan is re-parented, so its parent pid changes)."""

    def watch():
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker_init(threads: int = 1, parent: int | None = None) -> None:
    """Per worker process: ``threads`` torch threads; SIGINT is the driver's to handle (it terminates workers);
    exit when the driver dies; the driver's plugins (GUIDANCE_BENCH_PLUGINS, inherited through the environment)."""
    global _THREADS
    import torch

    from .plugins import load_from_env

    if parent is not None:
        _exit_with_parent(parent)
    _THREADS = threads
    torch.set_num_threads(threads)
    load_from_env()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _call_in_worker(fn: Callable, item, plugins: list | None = None, threads: int | None = None):
    import torch

    if plugins:  # dask workers (also on other hosts) load the driver's plugins before the first run
        from .plugins import load_plugins

        load_plugins(plugins)
    threads = threads or _THREADS
    if torch.get_num_threads() != threads:  # a run may not change it for the next one
        torch.set_num_threads(threads)
    return fn(item)


class TaskFailed:
    """Yielded instead of a result when the worker itself failed (crashed process, lost dask worker)."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __repr__(self):
        return f"TaskFailed({type(self.exc).__name__}: {self.exc})"


def _result(f):
    try:
        return f.result()
    except Exception as e:  # the run function itself turns failures into rows; this is the worker dying
        return TaskFailed(e)


def default_fn():
    from .runner import execute

    return execute


class Executor:
    """Base: ``with ex: for i, result in ex.imap_unordered(fn, items): ...``; ``close(cancel=True)`` on interrupt."""

    name = "?"
    workers = 1

    def imap_unordered(self, fn: Callable, items: list) -> Iterator[tuple[int, object]]:
        raise NotImplementedError

    def close(self, cancel: bool = False) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        self.close(cancel=exc_type is not None)
        return False

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"


class SerialExecutor(Executor):
    name = "serial"

    def imap_unordered(self, fn, items):
        for i, it in enumerate(items):
            yield i, fn(it)


class ProcessExecutor(Executor):
    """A local spawn-context process pool; ``close(cancel=True)`` terminates workers (in-flight runs are lost)."""

    name = "process"

    def __init__(self, workers: int = 2, threads: int = 1):
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_worker_init, initargs=(threads, os.getpid()))

    def imap_unordered(self, fn, items):
        futs = {self._pool.submit(_call_in_worker, fn, it): i for i, it in enumerate(items)}
        pending = set(futs)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield futs[f], _result(f)

    def close(self, cancel: bool = False) -> None:
        if self._pool is None:
            return
        if cancel:
            procs = list(getattr(self._pool, "_processes", {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:  # workers ignore SIGINT; stop them so nothing outlives the driver
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=5)
        else:
            self._pool.shutdown(wait=True)
        self._pool = None


class DaskExecutor(Executor):
    """dask.distributed: an embedded LocalCluster (processes, one thread each) or ``Client(scheduler)``."""

    name = "dask"

    def __init__(self, workers: int = 2, scheduler: str | None = None, threads: int = 1):
        self.threads = threads
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise RuntimeError("the dask executor needs dask.distributed: pip install 'guidance-bench[dask]'") from None
        self.scheduler, self._cluster = scheduler, None
        if scheduler:
            self._client = Client(scheduler)
            self.workers = len(self._client.scheduler_info().get("workers", {})) or 1
        else:
            if workers < 1:
                raise ValueError(f"--workers must be >= 1, got {workers}")
            self.workers = workers
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None, silence_logs=40)
            self._client = Client(self._cluster)

    def imap_unordered(self, fn, items):
        from dask.distributed import as_completed

        from .plugins import specs

        plugins = specs()
        self._futs = futs = [self._client.submit(_call_in_worker, fn, it, plugins, self.threads, pure=False) for it in items]
        index = {f.key: i for i, f in enumerate(futs)}
        for f in as_completed(futs):
            yield index[f.key], _result(f)

    def close(self, cancel: bool = False) -> None:
        if self._client is None:
            return
        if cancel:
            try:
                self._client.cancel(getattr(self, "_futs", []))
            except Exception:  # already closing
                pass
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    def describe(self) -> str:
        where = self.scheduler or "embedded LocalCluster"
        return f"dask on {where} ({self.workers} workers)"


def make_executor(kind: str = "serial", workers: int = 1, scheduler: str | None = None,
                  threads: int = 1) -> Executor:
    """``serial`` | ``process`` | ``dask``; a ``scheduler`` address implies dask; ``threads``: torch threads per
    worker process."""
    if scheduler and kind not in ("dask", "serial"):
        raise ValueError("--scheduler needs --executor dask")
    if scheduler:
        kind = "dask"
    if kind == "serial":
        return SerialExecutor()
    if kind == "process":
        return ProcessExecutor(workers, threads)
    if kind == "dask":
        return DaskExecutor(workers, scheduler, threads)
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")


def run_all(items: Iterable, fn: Callable | None = None, executor: Executor | None = None):
    """Convenience: results in input order (tests, small scripts)."""
    items = list(items)
    fn = fn or default_fn()
    out = [None] * len(items)
    with executor or SerialExecutor() as ex:
        for i, r in ex.imap_unordered(fn, items):
            if isinstance(r, TaskFailed):
                raise r.exc
            out[i] = r
    return out


def _pretrain_one(item: tuple[str, str, int, int]) -> tuple[str, str, int, int]:
    """Train or load one network (runs in a spawned process with one torch thread)."""
    import torch

    from tasks import get_task

    from .plugins import load_from_env

    torch.set_num_threads(1)
    load_from_env()  # a plugin task's network
    task_name, kind, T, ns = item
    get_task(task_name, T).denoiser(kind, "cpu", progress=False, **({"network_seed": ns} if ns else {}))
    return item


def pretrain_needed(specs: list, progress: bool = True, parallel: int = 1) -> list[tuple[str, str]]:
    """Train (or load) every non-oracle denoiser the specs use, before any run starts, so workers only load.

    With ``parallel > 1`` missing networks train side by side in spawned processes (one network each).
    """
    from tasks import get_task
    from tasks.pretrain import checkpoint_info

    from .progress import Progress, steps

    need = sorted({(s.task, s.denoiser, s.T, s.network_seed) for s in specs if s.denoiser != "oracle"})
    def cached(n) -> bool:
        try:
            return checkpoint_info(get_task(n[0], n[2]), None if n[1] == "trained" else n[1],
                                   **({"seed": n[3]} if n[3] else {})) is not None
        except Exception:  # a task with its own network cache: let its denoiser() decide
            return False

    missing = [n for n in need if not cached(n)]
    if len(missing) > 1 and parallel > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        names = ", ".join(f"{t}/{k}" + (f"/net{ns}" if ns else "") for t, k, _, ns in missing)
        with Progress(len(missing), f"pretraining {names} in parallel", "net", enabled=progress) as bar, \
                ProcessPoolExecutor(min(parallel, len(missing)), mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_exit_with_parent, initargs=(os.getpid(),)) as ex:
            for f in as_completed([ex.submit(_pretrain_one, n) for n in missing]):
                bar.note(f"{f.result()[0]} done")
                bar.update(1)
    for task_name, kind, T, ns in need:  # loads what was trained above; trains (with a progress bar) what is left
        get_task(task_name, T).denoiser(kind, "cpu", progress=steps if progress else False, **({"network_seed": ns} if ns else {}))
    return [(t, k + (f"/net{ns}" if ns else "")) for t, k, _, ns in need]
