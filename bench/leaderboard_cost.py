"""The measured VJP/forward cost ratio shown beside the leaderboard's c (NFE-eq = F + c·V, c = 2 by default).

From ``OUT/overhead.json`` when ``bench overhead --out OUT`` wrote one there, else measured in the suite's process
with bench/overhead.py's ``measure_overhead`` (a few alternating rounds of unguided and look-ahead on the group's
task, reward and denoiser). A round of unguided sampling is F forwards (t_u = F·t_F); a look-ahead round is
F' forwards and V VJPs (t_m = F'·t_F + V·t_V), so the measured c = t_V / t_F = (t_m / t_u · F − F') / V. It
includes the reward's gradient and the method's own arithmetic, and is wall-clock on this machine under its load.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["c_from_row", "measured_c", "c_note"]

METHOD = "look-ahead"  # 1 forward + 1 VJP per step


def c_from_row(row: dict) -> float:
    """t_V / t_F from one ``bench overhead`` row (its unguided round is T forwards: the full grid)."""
    f_u, f_m, v = row.get("unguided_nfe", row["T"]), row["nfe"], row["vjp"]
    if not v or not row["unguided_s"] > 0:
        return math.nan
    return (row["method_s"] / row["unguided_s"] * f_u - f_m) / v


def measured_c(out: Path, groups: list[tuple], batch: int, T: int, rounds: int = 2) -> dict[str, float]:
    """{"task/denoiser": c} for the groups (task, reward, denoiser, network_seed): from OUT/overhead.json rows
    with VJPs when present, else measured here (``rounds`` timed rounds after a warm-up, network seed 0)."""
    from .overhead import measure_overhead

    got: dict[str, list] = {}
    path = Path(out) / "overhead.json"
    if path.exists():
        for row in json.loads(path.read_text(encoding="utf-8")).get("rows", []):
            if row.get("vjp"):
                got.setdefault(f"{row['task']}/{row['denoiser']}", []).append(c_from_row(row))
    for task, reward, denoiser, _ in groups:
        key = f"{task}/{denoiser}"
        if key in got:
            continue
        rows = measure_overhead(task, reward, denoiser, [METHOD], batch=batch, rounds=rounds, T=T)
        got[key] = [c_from_row(r) for r in rows]
    return {k: float(sum(v) / len(v)) for k, v in sorted(got.items()) if v}


def c_note(c: float, measured: dict[str, float] | None, source: str = "") -> str:
    """The leaderboard's one-line note: "c = 2 (measured here: subspace/oracle 2.7, ...)"."""
    if not measured:
        return f"c = {c:g} (no measured ratio" + (f": {source})" if source else ")")
    vals = ", ".join(f"{k} {v:.2g}" for k, v in measured.items())
    src = source or f"alternating unguided and {METHOD} rounds in this process"
    return f"c = {c:g} (measured here: {vals}; t_VJP / t_forward from {src}, wall-clock under this machine's load)"


def plan_c(out: Path, groups: list[tuple], batch: int, T: int) -> dict:
    """Plan fields ``c_measured`` and ``c_source`` (a group whose measurement fails is left out, with a note)."""
    source = "OUT/overhead.json (bench overhead)" if (Path(out) / "overhead.json").exists() else ""
    try:
        return {"c_measured": measured_c(out, groups, batch, T), "c_source": source}
    except Exception as e:  # a ratio we could not measure is a missing note, never a failed suite
        return {"c_measured": {}, "c_source": f"not measured ({type(e).__name__}: {e})"}
