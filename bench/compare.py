"""Regression check between two record sets: ``bench compare BASE NEW`` (DESIGN.md §5).

Runs are matched by ``run_id`` (the hash of the spec) and compared at their final round:
- NFE, VJP and reward calls must be exactly equal (they are counted, not measured);
- reward (higher is better) and off-support error (lower is better) regress when the new value is worse by more
  than ``z * sqrt(se_base^2 + se_new^2) + rel_tol * |base| + abs_tol``;
- time is compared only as the ratio to the unguided run on the same task/reward/denoiser/protocol/sampler in
  the same record set (so a slower machine is not a regression), with a generous relative tolerance; runs
  faster than ``min_time`` seconds are too noisy to time and are skipped;
- a run that was ok in BASE and failed in NEW is a regression; runs missing from NEW are reported.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from tabulate import tabulate

from .records import read_records


@dataclass(frozen=True)
class Tolerance:
    z: float = 3.0            # standard errors of the difference allowed
    rel_tol: float = 0.02     # plus this fraction of |base|
    abs_tol: float = 1e-9     # plus this absolute slack
    time_tol: float = 1.0     # time ratio may grow by this fraction (1.0 = may double)
    min_time: float = 0.5     # runs (and their unguided reference) faster than this are not timed


def final_rows(records: list[dict]) -> dict[str, dict]:
    """run_id -> its final record: the last ok round, or the failure row if the run failed."""
    out: dict[str, dict] = {}
    for r in records:
        rid = r.get("run_id")
        cur = out.get(rid)
        if r.get("status") != "ok":
            out[rid] = r
        elif cur is None or (cur.get("status") == "ok" and (r.get("round") or 0) >= (cur.get("round") or 0)):
            out[rid] = r
    return out


def _unguided_key(r: dict) -> tuple:
    s = r.get("spec") or {}
    return (r.get("task"), r.get("reward_fn"), r.get("denoiser"), s.get("rounds"), s.get("algorithm"), s.get("batch"),
            s.get("T"), s.get("sampler"), s.get("eta"), s.get("steps"), s.get("seed"), s.get("device"))


def time_ratios(finals: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """run_id -> (wall_s / unguided wall_s in the same set, unguided wall_s), when the unguided run exists."""
    ref = {_unguided_key(r): r["wall_s"] for r in finals.values()
           if r.get("method") == "unguided" and r.get("status") == "ok" and r.get("wall_s")}
    out = {}
    for rid, r in finals.items():
        u = ref.get(_unguided_key(r))
        if u and r.get("status") == "ok" and r.get("wall_s") is not None:
            out[rid] = (r["wall_s"] / u, u)
    return out


def _label(r: dict) -> str:
    params = " ".join(f"{k}={v}" for k, v in sorted(((r.get("spec") or {}).get("params") or {}).items()))
    return " ".join(x for x in (f"{r.get('task')}/{r.get('reward_fn')}/{r.get('denoiser')}", str(r.get("method")),
                                params, f"seed={r.get('seed')}") if x)


def _worse(base: float, new: float, se_b: float, se_n: float, higher_better: bool, tol: Tolerance) -> tuple[bool, float]:
    allow = tol.z * math.hypot(se_b or 0.0, se_n or 0.0) + tol.rel_tol * abs(base) + tol.abs_tol
    diff = (new - base) if higher_better else (base - new)  # > 0 is an improvement
    return diff < -allow, allow


def compare(base: list[dict], new: list[dict], tol: Tolerance = Tolerance()) -> dict:
    """Findings: {"rows": table rows, "regressions": [...], "missing": [...], "matched": n, "added": n}."""
    fb, fn = final_rows(base), final_rows(new)
    tb, tn = time_ratios(fb), time_ratios(fn)
    rows, regressions = [], []
    missing = [rid for rid in fb if rid not in fn]
    matched = [rid for rid in fb if rid in fn]

    def flag(rid, what, b, n, note):
        rows.append([_label(fb[rid]), what, b, n, note])
        regressions.append(f"{_label(fb[rid])}: {what} {b} -> {n} ({note})")

    for rid in matched:
        b, n = fb[rid], fn[rid]
        if b.get("status") == "ok" and n.get("status") != "ok":
            flag(rid, "status", "ok", n.get("status"), n.get("error") or "")
            continue
        if b.get("status") != "ok" or n.get("status") != "ok":
            if b.get("status") != n.get("status"):
                rows.append([_label(b), "status", b.get("status"), n.get("status"), "fixed"])
            continue
        if b.get("round") != n.get("round"):
            flag(rid, "rounds", b.get("round"), n.get("round"), "different final round")
        for k in ("nfe", "vjp", "reward_calls"):
            if b.get(k) != n.get(k):
                flag(rid, k, b.get(k), n.get(k), "counts must match exactly")
        for k, higher in (("reward_mean", True), ("off_support_mean", False)):
            se = k.replace("_mean", "_se")
            bv, nv = b.get(k), n.get(k)
            if bv is None or nv is None:
                if (bv is None) != (nv is None):
                    flag(rid, k, bv, nv, "value missing")
                continue
            bad, allow = _worse(bv, nv, b.get(se), n.get(se), higher, tol)
            if bad:
                flag(rid, k, f"{bv:.5g}", f"{nv:.5g}", f"worse by {abs(nv - bv):.3g} > allowed {allow:.3g}")
            elif nv != bv and abs(nv - bv) > allow:
                rows.append([_label(b), k, f"{bv:.5g}", f"{nv:.5g}", "improved"])
        if rid in tb and rid in tn and b.get("method") != "unguided":
            (rb, ub), (rn, un) = tb[rid], tn[rid]
            timed = min(ub, un, b["wall_s"], n["wall_s"]) >= tol.min_time
            if timed and rn > rb * (1 + tol.time_tol):
                flag(rid, "time/unguided", f"{rb:.2f}x", f"{rn:.2f}x", f"ratio grew more than {tol.time_tol:.0%}")
    return {"rows": rows, "regressions": regressions, "missing": missing, "matched": len(matched),
            "added": len([rid for rid in fn if rid not in fb])}


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="regression check: compare NEW records against BASE; exit 1 on a regression",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    c.add_argument("base", help="baseline records.jsonl or report directory")
    c.add_argument("new", help="new records.jsonl or report directory")
    c.add_argument("--z", type=float, default=Tolerance.z, help="allowed standard errors of the difference (3)")
    c.add_argument("--rel-tol", type=float, default=Tolerance.rel_tol, help="allowed fraction of |base| (0.02)")
    c.add_argument("--abs-tol", type=float, default=Tolerance.abs_tol, help="allowed absolute slack (1e-9)")
    c.add_argument("--time-tol", type=float, default=Tolerance.time_tol,
                   help="allowed growth of the time ratio to unguided, as a fraction (1.0 = may double)")
    c.add_argument("--min-time", type=float, default=Tolerance.min_time,
                   help="skip the time check for runs faster than this many seconds (0.5)")
    c.add_argument("--no-time", action="store_true", help="do not check time")
    c.add_argument("--fail-missing", action="store_true", help="runs of BASE missing from NEW are a regression")
    c.set_defaults(fn=cmd_compare)


def cmd_compare(a) -> int:
    for name in ("z", "rel_tol", "abs_tol", "time_tol", "min_time"):
        v = getattr(a, name)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
    tol = Tolerance(a.z, a.rel_tol, a.abs_tol, math.inf if a.no_time else a.time_tol, a.min_time)
    res = compare(read_records(a.base), read_records(a.new), tol)
    if res["rows"]:
        print(tabulate(res["rows"], headers=["run", "metric", "base", "new", "note"], tablefmt="github"))
    print(f"{res['matched']} runs matched, {len(res['missing'])} missing from NEW, {res['added']} only in NEW, "
          f"{len(res['regressions'])} regressions")
    if res["missing"]:
        print(f"missing from NEW: {', '.join(res['missing'][:10])}{' ...' if len(res['missing']) > 10 else ''}",
              file=sys.stderr)
    if res["matched"] == 0:
        print("bench compare: no runs in common (different specs?)", file=sys.stderr)
        return 1
    return 1 if res["regressions"] or (a.fail_missing and res["missing"]) else 0
