"""Timing gate over two pytest-benchmark JSON files of ``benchmarks/``: ``python benchmarks/gate.py BASE NEW``.

Absolute times of two sessions differ with machine load (an unchanged tree measured +97 % on one benchmark), so
each benchmark is judged by its guided/unguided time ratio, measured per round moments apart in the same
process (``extra_info["log_ratio_to_unguided"]``). With the mean m and standard error s of the per-round log
ratios on each side, a benchmark regresses when

    m_new - m_base > z * sqrt(s_base^2 + s_new^2) + log(1 + tol)

(``--z`` 3, ``--tol`` 0.25): the noise comes from the measured spread, the floor from ``--tol``. The exact
per-pass counts (``*_guided_pass``: NFE, VJP, reward calls) must be equal. A benchmark of BASE missing from NEW
fails unless ``--allow-missing``. Exit 0 pass, 1 regression, 2 unreadable input.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys


class GateError(ValueError):
    """Unreadable or unsuitable benchmark JSON."""


def load(path: str) -> dict[str, dict]:
    """benchmark name -> its entry, from a ``--benchmark-json`` / ``--benchmark-save`` file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise GateError(f"{path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GateError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) or not data["benchmarks"]:
        raise GateError(f"{path}: no 'benchmarks' list (not a pytest-benchmark JSON file?)")
    out = {}
    for b in data["benchmarks"]:
        if not isinstance(b, dict) or not isinstance(b.get("name"), str):
            raise GateError(f"{path}: a benchmark entry without a name")
        lr = (b.get("extra_info") or {}).get("log_ratio_to_unguided")
        if not isinstance(lr, list) or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in lr):
            raise GateError(f"{path}: benchmark {b['name']} has no per-round log_ratio_to_unguided (made by an "
                            "older benchmarks/test_guidance_speed.py? re-run it)")
        out[b["name"]] = b
    return out


def ratio_stats(log_ratio: list[float]) -> tuple[float, float]:
    """(mean, standard error) of per-round log ratios; the error is infinite below two rounds."""
    m = statistics.fmean(log_ratio) if log_ratio else math.nan
    return m, (statistics.stdev(log_ratio) / math.sqrt(len(log_ratio)) if len(log_ratio) > 1 else math.inf)


def gate(base: dict[str, dict], new: dict[str, dict], z: float = 3.0, tol: float = 0.25) -> dict:
    """{"rows": [[name, ratio base, ratio new, change, allowed, verdict]], "regressions": [...], "missing": [...]}"""
    rows, regressions = [], []
    for name, b in base.items():
        if name not in new:
            continue
        n = new[name]
        (mb, sb), (mn, sn) = (ratio_stats(x["extra_info"]["log_ratio_to_unguided"]) for x in (b, n))
        allow = z * math.hypot(sb, sn) + math.log1p(tol)
        verdict = "ok"
        if mn - mb > allow:
            verdict = "SLOWER"
        counts = sorted(k for k in set(b["extra_info"]) | set(n["extra_info"]) if k.endswith("_guided_pass"))
        changed = [f"{k} {b['extra_info'].get(k)} -> {n['extra_info'].get(k)}" for k in counts
                   if b["extra_info"].get(k) != n["extra_info"].get(k)]
        if changed:
            verdict = "COUNTS " + ", ".join(changed) + ("" if verdict == "ok" else "; SLOWER")
        if verdict != "ok":
            regressions.append(f"{name}: {verdict}")
        rows.append([name, f"{math.exp(mb):.2f}", f"{math.exp(mn):.2f}", f"x{math.exp(mn - mb):.2f}",
                     f"x{math.exp(allow):.2f}" if math.isfinite(allow) else "-", verdict])
    return {"rows": rows, "regressions": regressions, "missing": [k for k in base if k not in new]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("base", help="pytest-benchmark JSON of the baseline")
    p.add_argument("new", help="pytest-benchmark JSON of the new code")
    p.add_argument("--z", type=float, default=3.0, help="allowed standard errors of the log-ratio change")
    p.add_argument("--tol", type=float, default=0.25, help="allowed growth of the ratio beyond the noise")
    p.add_argument("--allow-missing", action="store_true", help="benchmarks missing from NEW do not fail")
    a = p.parse_args(argv)
    try:
        if not (math.isfinite(a.z) and a.z >= 0 and math.isfinite(a.tol) and a.tol >= 0):
            raise GateError("--z and --tol must be finite numbers >= 0")
        res = gate(load(a.base), load(a.new), a.z, a.tol)
    except GateError as e:
        print(f"gate: error: {e}", file=sys.stderr)
        return 2
    from tabulate import tabulate

    print(tabulate(res["rows"], headers=["benchmark", "ratio base", "ratio new", "change", "allowed", "verdict"],
                   tablefmt="github"))
    for m in res["missing"]:
        print(f"missing from NEW: {m}")
    print(f"{len(res['rows'])} benchmarks compared, {len(res['missing'])} missing, "
          f"{len(res['regressions'])} regressions")
    return 1 if res["regressions"] or (res["missing"] and not a.allow_missing) else 0


if __name__ == "__main__":
    sys.exit(main())
