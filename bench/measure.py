"""Wall-clock and peak-memory measurement (ecosystem.md §5; DESIGN.md §4 "cost is counted").

CPU peak memory: on Linux the process high-water mark is reset by writing 5 to /proc/self/clear_refs and
read back from VmHWM; the run's peak is reported as its increment over the resident set at the reset.
Elsewhere ru_maxrss is used (not resettable: an upper bound). CUDA: reset_peak_memory_stats and
max_memory_allocated.
"""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager

import torch

_PROC = "/proc/self/status"


def _status_kb(key: str) -> int | None:
    try:
        with open(_PROC) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_cpu() -> bool:
    """Reset the process high-water mark; False if the platform cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_cpu_mb() -> float:
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm / 1024
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 / (1024 if sys.platform == "darwin" else 1)


def rss_mb() -> float:
    rss = _status_kb("VmRSS")
    return rss / 1024 if rss is not None else peak_cpu_mb()


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of a region in MiB, as an increment over its start (``.mb`` after the region)."""

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.mb = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            reset_peak_cpu()
            self._base = rss_mb()
        return self

    def read(self) -> float:
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        return max(peak_cpu_mb() - self._base, 0.0)

    def __exit__(self, *exc):
        self.mb = self.read()
        return False


class Stopwatch:
    """Accumulates synchronised wall-clock over several measured regions."""

    def __init__(self, device="cpu"):
        self.device, self.seconds = device, 0.0

    @contextmanager
    def measure(self):
        sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.seconds += time.perf_counter() - t0
