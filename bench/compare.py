"""Regression check between two record sets: ``bench compare BASE NEW`` (DESIGN.md §5).

Runs are matched by ``run_id`` (the hash of the spec) and compared at their final round:
- a run of BASE missing from NEW fails (``--allow-missing`` accepts it); a changed status (ok, error, diverged,
  incomplete = the final planned round is missing) or final round is a regression, unless NEW is now ok;
- NFE, VJP and reward calls must be exactly equal (they are counted, not measured);
- reward (higher is better) and off-support error (lower is better): when both sides stored per-sample values
  (same run id = same spec and seed = the same noise, common random numbers) the paired differences
  d_i = new_i - base_i are tested: worse when the mean of d is worse than
  ``z * sd(d) / sqrt(n) + rel_tol * |base| + abs_tol``; otherwise the means are tested with
  ``z * sqrt(se_base^2 + se_new^2) + rel_tol * |base| + abs_tol``;
- time is the ratio of a run's wall-clock to the unguided run of the same setting in the same record set (a
  slower machine is not a regression); it regresses when log(ratio_new / ratio_base) exceeds
  ``log(1 + time_tol) + z * 2 s``: s is the timing noise measured in the data, the robust spread (1.4826 MAD)
  of the log wall-clock of the unguided round 0 that every run of a setting repeats, pooled over both sides
  (with fewer than 4 repeated passes z * 2 s = log 2); runs faster than ``min_time`` seconds are not timed.
"""
from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass

from .compare_explain import check_records, explain_unmatched, label, provenance_report

MIN_TIMED = 4  # timed runs needed to estimate the timing noise


@dataclass(frozen=True)
class Tolerance:
    z: float = 3.0            # standard errors of the difference allowed
    rel_tol: float = 0.02     # plus this fraction of |base|
    abs_tol: float = 1e-9     # plus this absolute slack
    time_tol: float = 0.25    # plus this growth of the time ratio (0.25 = 25 %) beyond the measured noise
    min_time: float = 0.5     # runs (and their unguided reference) faster than this are not timed


def final_rows(records: list[dict]) -> dict[str, dict]:
    """run_id -> its final record: the failure row if the run failed, else its last round; a run whose final
    planned round (``spec["rounds"]``) is missing gets the derived status ``incomplete`` (never written)."""
    out: dict[str, dict] = {}
    for r in records:
        rid = r["run_id"]
        cur = out.get(rid)
        if r.get("status") != "ok":
            out[rid] = r
        elif cur is None or (cur.get("status") == "ok" and (r.get("round") or 0) >= (cur.get("round") or 0)):
            out[rid] = r
    from .report_tables import incomplete_runs  # the reports' definition of the derived status

    for rid, (_, planned) in incomplete_runs(records).items():
        out[rid] = {**out[rid], "status": "incomplete", "error": f"final planned round {planned} missing"}
    return out


def _unguided_key(r: dict, seed: bool = True) -> tuple:
    """The setting a run shares with its unguided reference (``seed=False``: with every seed's)."""
    s = r.get("spec") or {}
    return (r.get("task"), r.get("reward_fn"), r.get("denoiser"), s.get("rounds"), s.get("algorithm"), s.get("batch"),
            s.get("T"), s.get("sampler"), s.get("eta"), s.get("steps"), s.get("device"), r.get("network_seed"),
            s.get("seed") if seed else None)


def time_ratios(finals: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """run_id -> (wall_s / unguided wall_s in the same set, unguided wall_s), when the unguided run exists."""
    ref = {_unguided_key(r): r["wall_s"] for r in finals.values()
           if r.get("method") == "unguided" and r.get("status") == "ok" and r.get("wall_s")}
    out = {}
    for rid, r in finals.items():
        u = ref.get(_unguided_key(r))
        if u and r.get("status") == "ok" and r.get("wall_s"):
            out[rid] = (r["wall_s"] / u, u)
    return out


def unpaired_allowance(base: float, se_b: float | None, se_n: float | None, tol: Tolerance) -> float:
    """Allowed worsening of a mean from the two standard errors (added in quadrature: independent samples)."""
    return tol.z * math.hypot(se_b or 0.0, se_n or 0.0) + tol.rel_tol * abs(base) + tol.abs_tol


def paired_stats(b: list[float], n: list[float]) -> tuple[float, float, float]:
    """(mean of base, mean of d = n - b, standard error of that mean) of per-sample paired differences."""
    d = [y - x for x, y in zip(b, n)]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else 0.0
    return statistics.fmean(b), statistics.fmean(d), se


def _per_sample(r: dict, key: str) -> list[float] | None:
    """The record's per-sample values of ``key``, if present, finite and consistent with its stored mean."""
    v, mean = r.get(f"{key}_per_sample"), r.get(f"{key}_mean")
    if not isinstance(v, list) or not v or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
        return None
    if mean is not None and abs(statistics.fmean(v) - mean) > 1e-6 * max(abs(x) for x in v) + 1e-12:
        return None  # edited or rounded differently: trust the stored mean, test unpaired
    return v


def compare_metric(b: dict, n: dict, key: str, higher_better: bool, tol: Tolerance) -> dict | None:
    """{"worse": bool, "better": bool, "base", "new", "diff", "allow", "test"} for ``reward`` / ``off_support``;
    None when neither side has the value."""
    mean, se = f"{key}_mean", f"{key}_se"
    pb, pn = _per_sample(b, key), _per_sample(n, key)
    if pb is not None and pn is not None and len(pb) == len(pn):
        bm, diff, se_d = paired_stats(pb, pn)
        allow = tol.z * se_d + tol.rel_tol * abs(bm) + tol.abs_tol
        test, bv, nv = "paired", bm, bm + diff
        if all(x == y for x, y in zip(pb, pn)):
            diff = 0.0
    else:
        bv, nv = b.get(mean), n.get(mean)
        if bv is None or nv is None:
            if bv is None and nv is None:
                return None
            return {"worse": nv is None, "better": bv is None, "base": bv, "new": nv, "diff": None, "allow": None,
                    "test": "value missing"}
        diff, allow, test = nv - bv, unpaired_allowance(bv, b.get(se), n.get(se), tol), "unpaired"
    gain = diff if higher_better else -diff  # > 0 is an improvement
    return {"worse": gain < -allow, "better": gain > allow, "base": bv, "new": nv, "diff": diff, "allow": allow,
            "test": test}


def pass_noise(records: list[dict]) -> list[float]:
    """Deviations of log wall-clock of round 0 from its median within each setting: every run of a setting starts
    with the same unguided pass, so their spread is the timing noise of the record set (whatever the methods do)."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        if r.get("round") == 0 and r.get("status") == "ok" and (r.get("wall_s") or 0) > 0:
            groups.setdefault(_unguided_key(r, seed=False), []).append(math.log(r["wall_s"]))
    devs = []
    for v in groups.values():
        if len(v) > 1:
            med, unbias = statistics.median(v), math.sqrt(len(v) / (len(v) - 1))
            devs += [(x - med) * unbias for x in v]
    return devs


def time_changes(fb: dict, fn: dict, matched: list[str], tol: Tolerance) -> dict[str, tuple]:
    """run_id -> (ratio base, ratio new, log change) for runs timed on both sides."""
    tb, tn = time_ratios(fb), time_ratios(fn)
    out = {}
    for rid in matched:
        if rid in tb and rid in tn and fb[rid].get("method") != "unguided":
            (rb, ub), (rn, un) = tb[rid], tn[rid]
            if min(ub, un, fb[rid]["wall_s"], fn[rid]["wall_s"]) >= tol.min_time:
                out[rid] = (rb, rn, math.log(rn / rb))
    return out


def time_noise(base: list[dict], new: list[dict]) -> float | None:
    """Robust standard deviation (1.4826 MAD) of one pass's log wall-clock, pooled over both record sets; None
    with fewer than MIN_TIMED repeated passes."""
    devs = pass_noise(base) + pass_noise(new)
    return 1.4826 * statistics.median(abs(d) for d in devs) if len(devs) >= MIN_TIMED else None


def compare(base: list[dict], new: list[dict], tol: Tolerance = Tolerance(), names=("BASE", "NEW")) -> dict:
    """Findings: {"regressions", "improvements", "missing", "added", "matched", "provenance", "time_noise"};
    a regression or improvement is {"run_id", "label", "metric", "base", "new", "note"}."""
    check_records(base, names[0])
    check_records(new, names[1])
    fb, fn = final_rows(base), final_rows(new)
    matched = [rid for rid in fb if rid in fn]
    regressions, improvements = [], []

    def finding(to, rid, metric, b, n, note):
        to.append({"run_id": rid, "label": label(fb[rid]), "metric": metric, "base": b, "new": n, "note": note})

    for rid in matched:
        b, n = fb[rid], fn[rid]
        sb, sn = b.get("status"), n.get("status")
        if sb != sn:
            if sn == "ok":
                finding(improvements, rid, "status", sb, sn, "now ok")
            else:
                finding(regressions, rid, "status", sb, sn, n.get("error") or "")
            continue
        if b.get("round") != n.get("round"):
            finding(regressions, rid, "round", b.get("round"), n.get("round"), "different final round")
            continue
        if sb != "ok":
            continue
        for k in ("nfe", "vjp", "reward_calls"):
            if b.get(k) != n.get(k):
                finding(regressions, rid, k, b.get(k), n.get(k), "counts must match exactly")
        for k, higher in (("reward", True), ("off_support", False)):
            m = compare_metric(b, n, k, higher, tol)
            if m is None or not (m["worse"] or m["better"]):
                continue
            if m["diff"] is None:
                finding(regressions if m["worse"] else improvements, rid, f"{k}_mean", m["base"], m["new"],
                        "value missing")
                continue
            verdict = "worse" if m["worse"] else "better"
            note = f"{m['test']}: {verdict} by {abs(m['diff']):.3g} > allowed {m['allow']:.3g}"
            finding(regressions if m["worse"] else improvements, rid, f"{k}_mean", round(m["base"], 6),
                    round(m["new"], 6), note)
    changes, spread = time_changes(fb, fn, matched, tol), time_noise(base, new)
    # a log ratio change is a difference of four log times (run and unguided, both sides): sd 2 s
    noise = tol.z * 2 * spread if spread is not None else math.log(2)
    allow = math.log1p(tol.time_tol) + noise
    for rid, (rb, rn, c) in changes.items():
        if c > allow:
            finding(regressions, rid, "time/unguided", round(rb, 3), round(rn, 3),
                    f"ratio x{math.exp(c):.2f} > allowed x{math.exp(allow):.2f}")
    added = [rid for rid in fn if rid not in fb]
    missing = [rid for rid in fb if rid not in fn]
    return {"regressions": regressions, "improvements": improvements, "matched": len(matched),
            "missing": explain_unmatched(fb, missing, {r: fn[r] for r in added} or fn),
            "added": explain_unmatched(fn, added, {r: fb[r] for r in missing} or fb),
            "provenance": provenance_report(fb, fn), "timed": len(changes),
            "time_noise": spread, "time_allow": math.expm1(allow)}


def add_parser(sub) -> None:
    from .cli import HelpFormatter
    from .compare_cli import add_arguments, cmd_compare

    class Formatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
        """Keeps the description's line breaks; lists defaults."""

    c = sub.add_parser("compare", help="regression check: compare NEW records against BASE; exit 1 on a regression",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=Formatter)
    add_arguments(c)
    c.set_defaults(fn=cmd_compare)
