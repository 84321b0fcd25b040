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


# --- distance to the exact reward-tilted target (issue 15; inference-scaling.md §5) ---------------------------
TILT_FLOOR_DRAWS = 20      # the floor: mean statistic over this many exact batches of the run's size
TILT_FLOOR_SEED = 15_000   # fixed seeds TILT_FLOOR_SEED + j of those batches


def frechet_gaussian(u, mean, cov) -> float:
    """Fréchet (Gaussian W2²) distance between the samples' mean/covariance and N(mean, cov), float64."""
    import numpy as np

    u = np.asarray(u, dtype=np.float64)
    m, c = np.asarray(mean, dtype=np.float64), np.asarray(cov, dtype=np.float64)
    mu = u.mean(0)
    ch = np.cov(u, rowvar=False) if u.shape[0] > 1 else np.zeros_like(c)
    w, v = np.linalg.eigh(c)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root @ ch @ root)
    return float(((mu - m) ** 2).sum() + np.trace(ch) + np.trace(c) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


def wasserstein1(y, cdf, support: tuple[float, float], grid: int = 20_001) -> float:
    """W1 = ∫ |F_n − F| between the empirical law of ``y`` and a law with CDF ``cdf`` (a torch float64 function)
    supported in ``support``; midpoint rule on a fine grid that contains every sample (F_n constant per cell)."""
    import numpy as np

    y = np.sort(np.asarray(y, dtype=np.float64))
    lo, hi = min(support[0], y[0]), max(support[1], y[-1])
    nodes = np.union1d(np.linspace(lo, hi, grid), y)
    mid = (nodes[1:] + nodes[:-1]) / 2
    fn = np.searchsorted(y, mid, side="right") / y.size
    f = cdf(torch.from_numpy(mid)).numpy()
    return float((np.abs(fn - f) * np.diff(nodes)).sum())


def tilt_stats(law, x: torch.Tensor) -> dict:
    """tilt_fd (when the law has u-coordinates) and tilt_w1 of samples ``x`` against the exact ``law``."""
    x = x.detach().double().cpu()
    out = {}
    if hasattr(law, "to_u"):
        out["tilt_fd"] = frechet_gaussian(law.to_u(x).numpy(), law.mean_u.numpy(), law.cov_u.numpy())
    out["tilt_w1"] = wasserstein1(law.proj(x).numpy(), law.proj_cdf, law.proj_range())
    return out


_FLOORS: dict = {}


def tilt_floor(law, n: int) -> dict:
    """The same statistics for ``n`` exact samples of ``law``: mean over TILT_FLOOR_DRAWS fixed-seed batches."""
    key = (id(law), n)
    if key not in _FLOORS:
        draws = [tilt_stats(law, law.sample(n, torch.Generator().manual_seed(TILT_FLOOR_SEED + j)))
                 for j in range(TILT_FLOOR_DRAWS)]
        _FLOORS[key] = (law, {f"{k}_floor": sum(d[k] for d in draws) / len(draws) for k in draws[0]})
    return _FLOORS[key][1]


def tilt_metrics(reward, lam: float | None, x: torch.Tensor) -> dict:
    """Record ``metrics`` of a batch against the exact tilt of ``reward`` at ``lam``: tilt_fd (+ floor; subspace),
    tilt_w1 (+ floor), tilt_reward (exact E[r] under the tilt), tilt_lambda. Empty when ``lam`` is None or the
    reward has no closed-form tilt."""
    tilted = getattr(reward, "tilted", None)
    if lam is None or tilted is None or x.shape[0] < 2 or not torch.isfinite(x).all():
        return {}
    law = tilted(float(lam))
    return {**tilt_stats(law, x), **tilt_floor(law, x.shape[0]),
            "tilt_reward": float(law.expected_reward()), "tilt_lambda": float(lam)}
