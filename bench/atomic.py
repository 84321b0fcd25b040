"""Whole-or-nothing file writes for everything read back later (summaries, CSVs, JSON sidecars, PNGs): the
content goes to a temporary file in the same directory, which then replaces the target with ``os.replace``. A
failed write (a full disk) leaves the previous file as it was and no temporary file behind."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any error it is removed.
    An OSError without a file name (e.g. ENOSPC from a write) is given the target's name for the message."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if not e.filename:
            e.filename = str(path)
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``fsync`` flushes it to disk before the rename (records)."""
    with replacing(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def to_csv(df, path: str | os.PathLike) -> Path:
    """``df.to_csv(path, index=False)`` atomically."""
    with replacing(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def savefig(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    from .figures import pyplot

    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        pyplot().close(fig)
    return Path(path)
