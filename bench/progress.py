"""Progress that stays visible without a terminal: a tqdm bar on a TTY, periodic plain lines otherwise.

Without a TTY (CI logs, ``nohup``, pipes) tqdm with ``disable=None`` prints nothing, so ``Progress`` writes one
line such as ``[bench] runs: 12/44 runs done, 3 failed, 35 s elapsed, ~80 s left`` every 10 % of the total, and
every ``every_s`` seconds even when nothing finished (a background thread), and a last line on ``close``.
"""
from __future__ import annotations

import sys
import threading
import time

EVERY_S = 10.0  # seconds between plain lines at most
EVERY_FRAC = 0.1  # ... or this fraction of the total


def _isatty(f) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """``update(n, failed=...)``, ``note(text)`` (e.g. a loss), ``close()``; a context manager; iterating it
    yields ``iterable`` and counts each item (like tqdm).

    ``tty=None`` asks the stream; ``enabled=False`` prints nothing at all.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", *, enabled: bool = True, file=None,
                 tty: bool | None = None, every_s: float = EVERY_S, iterable=None):
        self.iterable = iterable
        self.file = file or sys.stderr
        self.total, self.desc, self.unit, self.every_s = int(total), desc, unit, every_s
        self.n = self.failed = 0
        self.extra = ""
        self.t0 = self._last_t = time.monotonic()
        self._last_n = 0
        tty = _isatty(self.file) if tty is None else tty
        self._bar = None
        self._lines = enabled and not tty
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if self._lines:  # a line every every_s seconds even while a long run is in flight
            threading.Thread(target=self._heartbeat, name="progress-lines", daemon=True).start()
        if enabled and tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.file)

    def update(self, n: int = 1, failed: int | None = None) -> None:
        self.n += n
        if failed is not None:
            self.failed = failed
        if self._bar is not None:
            if failed:
                self._bar.set_postfix_str(self._postfix())
            self._bar.update(n)
        elif self._lines and self._due():
            self._print()

    def note(self, text: str) -> None:
        """Extra text after the counts, e.g. ``loss=0.0123``."""
        self.extra = text
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix())

    def set_postfix(self, **kw) -> None:
        """tqdm-style ``set_postfix(loss="0.01")``."""
        self.note(", ".join(f"{k}={v}" for k, v in kw.items()))

    set_postfix_str = note

    def __iter__(self):
        try:
            for x in self.iterable:
                yield x
                self.update(1)
        finally:  # also when the loop stops early or raises
            self.close()

    def _postfix(self) -> str:
        return ", ".join(s for s in (f"{self.failed} failed" if self.failed else "", self.extra) if s)

    def _due(self) -> bool:
        step = max(1, int(self.total * EVERY_FRAC))
        return self.n // step > self._last_n // step or self.n >= self.total

    def line(self) -> str:
        el = time.monotonic() - self.t0
        parts = [f"[bench] {self.desc}: {self.n}/{self.total} {self.unit}s done"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        parts.append(f"{el:.0f} s elapsed")
        if 0 < self.n < self.total:
            parts.append(f"~{el / self.n * (self.total - self.n):.0f} s left")
        if self.extra:
            parts.append(self.extra)
        return ", ".join(parts)

    def _print(self) -> None:
        with self._lock:
            print(self.line(), file=self.file, flush=True)
            self._last_t, self._last_n = time.monotonic(), self.n

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(1.0, self.every_s)):
            if self._lines and time.monotonic() - self._last_t >= self.every_s:
                self._print()

    def close(self) -> None:
        self._stop.set()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._lines and self.n != self._last_n:
            self._print()
        self._lines = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def steps(iterable, desc: str) -> Progress:
    """A progress factory for ``tasks.pretrain.train(progress=steps)``: training steps with plain lines off a TTY."""
    return Progress(len(iterable), desc, "step", iterable=iterable)
