"""Statistics of the leaderboard: bootstrap intervals, paired ties, reading a run at a compute budget, flags.

Every returned sample has its own noise seed (methods/sampling.py: one seed per (run seed, round, i)) and every
method is per-sample independent, so the (report seed, sample i) pairs are i.i.d. replicates; the intervals resample
them (percentile bootstrap of the mean). Methods run on the same report seeds see the same per-sample noise (common
random numbers), so unit (s, i) of two methods is a pair: ties with the leader use the paired differences.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["bootstrap_ci", "tied", "read_at_budget", "nfe_eq", "FLAGS"]

FLAGS = {
    "off-support": "mean off-support above the task's tolerance (support_tolerance x unguided + support_floor)",
    "above-optimum": "mean reward above the reward's known on-support maximum",
    "no-effect": "reward interval overlaps the unguided interval",
    "diverged": "a run diverged (non-finite samples or rewards)",
    "incomplete": "a report run is missing or ended before its planned round",
}


def bootstrap_ci(x, level: float = 0.95, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``x`` (1-D); (nan, nan) when empty or non-finite."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or not np.isfinite(x).all():
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(reps, x.size))].mean(1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def tied(a, b, level: float = 0.95, reps: int = 2000, seed: int = 0) -> bool:
    """Is mean(a) - mean(b) not significantly different from 0? Paired (per-unit differences) when the arrays
    are aligned units of the same seeds, else an unpaired bootstrap of the difference."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return False
    if a.size == b.size:
        lo, hi = bootstrap_ci(a - b, level, reps, seed)
    else:
        rng = np.random.default_rng(seed)
        d = (a[rng.integers(0, a.size, (reps, a.size))].mean(1) - b[rng.integers(0, b.size, (reps, b.size))].mean(1))
        lo, hi = np.quantile(d, (1 - level) / 2), np.quantile(d, 1 - (1 - level) / 2)
    return bool(lo <= 0 <= hi)


def nfe_eq(rec: dict, c: float = 2.0) -> float:
    """NFE-equivalents per returned sample of a record (cumulative cost up to its round): F + c V."""
    return float((rec.get("nfe") or 0) + c * (rec.get("vjp") or 0))


def read_at_budget(records: list[dict], budget: float | None, c: float = 2.0) -> dict | None:
    """The record of the last round >= 1 whose cumulative cost fits ``budget`` (None: the final round); None when
    even round 1 is over budget. Iterative methods are thus read at the round matching the tier."""
    ok = [r for r in records if r.get("round") is not None and r["round"] >= 1 and r.get("status") == "ok"]
    if budget is not None:
        ok = [r for r in ok if nfe_eq(r, c) <= budget + 1e-9]
    return max(ok, key=lambda r: r["round"]) if ok else None


def per_sample(rec: dict, key: str) -> list[float]:
    """Per-sample values of a record (falls back to the batch mean when the record has none)."""
    v = rec.get(f"{key}_per_sample")
    if v is None:
        m = rec.get(f"{key}_mean")
        return [] if m is None else [float(m)]
    return [float(x) for x in v]
