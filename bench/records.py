"""Records: one flat JSON object per run and round, appended and flushed (DESIGN.md §5)."""
from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import platform
import subprocess
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
    """Appends records to ``<out>/records.jsonl``; one flushed, fsynced line per record."""

    def __init__(self, out: str | os.PathLike):
        self.dir = Path(out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "records.jsonl"
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, rec: dict) -> None:
        self._f.write(json.dumps(_clean(rec), sort_keys=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_records(path: str | os.PathLike, allow_empty: bool = False) -> list[dict]:
    """Records from a records.jsonl file or a directory holding one; a truncated last line is skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / "records.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"no records at {p}")
    out = []
    with open(p, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that run is incomplete and will be redone
    if not out and not allow_empty:
        raise ValueError(f"no records in {p} (empty, or not a records.jsonl file)")
    return out
