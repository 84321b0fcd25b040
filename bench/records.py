"""Records: one flat JSON object per run and round, appended and flushed (DESIGN.md §5)."""
from __future__ import annotations

import datetime as _dt
import errno
import functools
import hashlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
from pathlib import Path

import torch

RECORD_KEYS = (
    "run_id", "task", "task_version", "reward_fn", "denoiser", "method", "method_version", "hparams", "protocol",
    "round", "seed", "n", "reward_mean", "reward_se", "reward_topk", "off_support_mean", "off_support_se",
    "metrics", "nfe", "vjp", "reward_calls", "wall_s", "peak_mem_mb", "device", "status", "error", "git", "dirty",
    "date", "torch",
)


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """git hash + dirty flag of the source tree (None outside git), versions, host."""
    root = Path(__file__).resolve().parent.parent
    git, dirty = None, None
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip() or None
        if git:
            st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout
            dirty = bool(st.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    import numpy

    return {"git": git, "dirty": dirty, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "host": platform.node()}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


@functools.lru_cache(maxsize=1)
def _static_host() -> dict:
    try:
        from importlib.metadata import version

        package = version("guidance-bench")
    except Exception:  # not installed (run from a source tree)
        package = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": _cpu_model(), "gpu": gpu, "package": package}


def host_provenance() -> dict:
    """The record's ``provenance`` dict: versions, host CPU/GPU model, torch threads, package version and the
    command line. Threads and argv are read at call time (a worker may change its thread count)."""
    p = provenance()
    return {"numpy": p["numpy"], "python": p["python"], "host": p["host"], **_static_host(),
            "threads": torch.get_num_threads(),
            "argv": os.environ.get("GUIDANCE_BENCH_ARGV") or " ".join(sys.argv)}  # the driver's, in workers


# what determines a run's numbers: the method and task code (data files are versioned by task_version), the
# runner's statistics and the measurement code; the CLI, reports and executors are left out on purpose
FINGERPRINT_SOURCES = ("methods", "tasks", "bench/runner.py", "bench/measure.py")


@functools.lru_cache(maxsize=8)
def _fingerprint(extra: tuple[str, ...]) -> str:
    root = Path(__file__).resolve().parent.parent
    files = []
    for rel in FINGERPRINT_SOURCES:
        p = root / rel
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    for f in extra:  # plugin sources: identified by content, not by where they happen to live
        h.update(b"plugin\0" + Path(f).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def code_fingerprint() -> str:
    """16 hex digits identifying the code that produced a record: a hash of the source of ``methods/``,
    ``tasks/``, ``bench/runner.py``, ``bench/measure.py`` and every loaded plugin file. Resume reuses a run only
    when its records carry the current fingerprint (an edited method is recomputed, whatever git says)."""
    try:
        from .plugins import loaded_files

        extra = tuple(sorted(str(f) for f in loaded_files()))
    except ImportError:
        extra = ()
    return _fingerprint(extra)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _clean(v):
    """JSON-safe: NaN/Inf become None so every line parses with strict JSON readers."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class RecordWriter:
    """Appends records to ``<out>/records.jsonl``. Each call writes whole lines or nothing: the rows are written in
    one go with SIGINT/SIGTERM held back until they are flushed and fsynced, and a failed write (a full disk)
    truncates the file back to where it was, so every line on disk parses and a run's rows are never split."""

    def __init__(self, out: str | os.PathLike, name: str = "records.jsonl"):
        self.dir = Path(out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / name
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # unbuffered: no hidden tail

    def write(self, rec: dict) -> None:
        self.write_run([rec])

    def write_run(self, records: list[dict]) -> None:
        """All ``records`` (one run's rows) as one append: all of them reach the file, or none."""
        data = "".join(json.dumps(_clean(r), sort_keys=False) + "\n" for r in records).encode("utf-8")
        with _signals_held():
            start = os.fstat(self._fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
                os.fsync(self._fd)
            except OSError:
                try:
                    os.ftruncate(self._fd, start)
                except OSError:
                    pass
                raise

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _signals_held:
    """Block SIGINT/SIGTERM in this thread for the duration (a signal arriving meanwhile is delivered after)."""

    SIGNALS = {signal.SIGINT, signal.SIGTERM}

    def __enter__(self):
        self._old = None
        if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
            self._old = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old)


class LockedError(OSError):
    """Another bench process is writing the same output directory."""


class DirLock:
    """An exclusive advisory lock on ``<out>/.bench.lock`` held while a process writes records into ``out``; a
    second writer fails at once with a message naming the holder. Released when the process ends, however it
    ends (the kernel drops flock locks with the file descriptor)."""

    _held: dict = {}  # resolved dir -> depth, for this process (re-entering is a no-op, not a deadlock)

    def __init__(self, out: str | os.PathLike, what: str = "bench"):
        self.dir, self.what, self._f = Path(out), what, None

    def __enter__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = str(self.dir.resolve())
        if self._key in DirLock._held:
            DirLock._held[self._key] += 1
            return self
        path = self.dir / ".bench.lock"
        f = open(path, "a+", encoding="utf-8")
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            self._f = f
            DirLock._held[self._key] = 1
            return self
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise LockedError(errno.EBUSY, f"another bench process ({holder}) is writing records to {self.dir}; "
                                           "wait for it to finish or use another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, {self.what}, since {now()}")
        f.flush()
        self._f = f
        DirLock._held[self._key] = 1
        return self

    def __exit__(self, *exc):
        depth = DirLock._held.get(self._key, 0) - 1
        if depth > 0:
            DirLock._held[self._key] = depth
            return
        DirLock._held.pop(self._key, None)
        if self._f is not None:
            self._f.close()
            self._f = None


class RecordsError(ValueError):
    """A records file that is not what a writer produces: the message names the file and line."""


# field -> (accepted types, None allowed); checked on every line read (bool is never a number)
REQUIRED = {"run_id": (str, False), "status": (str, False), "round": (int, True), "reward_mean": ((int, float), True)}


def _check_fields(rec: dict, fields: dict, where: str, optional: bool = False) -> None:
    for k, (types, nullable) in fields.items():
        if k not in rec:
            if optional:
                continue
            raise RecordsError(f"{where}: record has no {k!r} field")
        v = rec[k]
        if v is None and nullable:
            continue
        if isinstance(v, bool) or not isinstance(v, types) or (isinstance(v, str) and not v):
            raise RecordsError(f"{where}: field {k!r} has the wrong type ({json.dumps(v)[:40]})")


def _check_record(rec, where: str, require: dict | None = None, typed: dict | None = None) -> dict:
    if not isinstance(rec, dict):
        raise RecordsError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    _check_fields(rec, {**REQUIRED, **(require or {})}, where)
    _check_fields(rec, typed or {}, where, optional=True)
    if rec["status"] == "ok" and rec["round"] is None:
        raise RecordsError(f"{where}: an ok record needs an integer 'round'")
    return rec


def read_records(path: str | os.PathLike, allow_empty: bool = False, require: dict | None = None,
                 typed: dict | None = None) -> list[dict]:
    """Records from a records.jsonl file or a directory holding one.

    Every line must be a JSON object with a string run_id and status, an integer round (None only in a failure
    row) and a numeric or null reward_mean; anything else raises RecordsError naming ``file:line``. The one
    tolerated defect is an unparseable LAST line (a writer killed mid-line): it is skipped with a warning on
    stderr, and its run then lacks its final round (reports show it as incomplete). A reader that needs more
    passes ``require`` (more fields that must be present) and ``typed`` (fields checked only when present), both
    ``{field: (types, None allowed)}``."""
    import sys

    p = Path(path)
    if p.is_dir():
        p = p / "records.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"no records at {p}")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise RecordsError(f"{p}: not a UTF-8 text file ({e.reason})") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last:
                print(f"warning: {p}:{i + 1}: skipped a truncated last line (a writer killed mid-line)",
                      file=sys.stderr)
                continue
            raise RecordsError(f"{p}:{i + 1}: not a JSON line ({e.msg} at column {e.colno})") from None
        out.append(_check_record(rec, f"{p}:{i + 1}", require, typed))
    if not out and not allow_empty:
        raise ValueError(f"no records in {p} (empty, or not a records.jsonl file)")
    return out
