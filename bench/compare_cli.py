"""Command line of ``bench compare``: options, the text report and ``--json``."""
from __future__ import annotations

import json
import math
import sys

from tabulate import tabulate

from .compare import Tolerance, compare
from .compare_explain import describe_unmatched, provenance_rows
from .records import read_records

SHOWN = 20  # unmatched runs explained in the text output (all of them in --json)


def add_arguments(c) -> None:
    c.add_argument("base", help="baseline records.jsonl or report directory")
    c.add_argument("new", help="new records.jsonl or report directory")
    c.add_argument("--z", type=float, default=Tolerance.z, help="allowed standard errors of the difference")
    c.add_argument("--rel-tol", type=float, default=Tolerance.rel_tol, help="allowed fraction of |base|")
    c.add_argument("--abs-tol", type=float, default=Tolerance.abs_tol, help="allowed absolute slack")
    c.add_argument("--time-tol", type=float, default=Tolerance.time_tol,
                   help="allowed growth of the time ratio to unguided beyond the measured noise, as a fraction")
    c.add_argument("--min-time", type=float, default=Tolerance.min_time,
                   help="skip the time check for runs faster than this many seconds")
    c.add_argument("--no-time", action="store_true", help="do not check time")
    c.add_argument("--allow-missing", action="store_true", help="runs of BASE missing from NEW are not a failure")
    c.add_argument("--json", action="store_true",
                   help="print one JSON object (regressions, improvements, missing, added, provenance, exit)")


def exit_code(res: dict, allow_missing: bool) -> int:
    bad = res["regressions"] or (res["missing"] and not allow_missing) or res["matched"] == 0
    return 1 if bad else 0


def _table(res: dict) -> list[list]:
    return ([[f["label"], f["metric"], f["base"], f["new"], "REGRESSION: " + f["note"]] for f in res["regressions"]]
            + [[f["label"], f["metric"], f["base"], f["new"], "improved: " + f["note"]] for f in res["improvements"]])


def _listing(title: str, entries: list[dict], other: str) -> None:
    if entries:
        print(f"{title} ({len(entries)}):")
        for e in entries[:SHOWN]:
            print("  " + describe_unmatched(e, other))
        if len(entries) > SHOWN:
            print(f"  ... {len(entries) - SHOWN} more (--json lists all)")


def cmd_compare(a) -> int:
    for name in ("z", "rel_tol", "abs_tol", "time_tol", "min_time"):
        v = getattr(a, name)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
    tol = Tolerance(a.z, a.rel_tol, a.abs_tol, math.inf if a.no_time else a.time_tol, a.min_time)
    res = compare(read_records(a.base), read_records(a.new), tol, names=(f"BASE {a.base}", f"NEW {a.new}"))
    code = exit_code(res, a.allow_missing)
    prov = res["provenance"]
    if prov["differs"]:
        print(f"bench compare: warning: BASE and NEW differ in {', '.join(prov['differs'])} (see the provenance "
              "table)", file=sys.stderr)
    if a.json:
        allow = res["time_allow"] if math.isfinite(res["time_allow"]) else None
        print(json.dumps({**res, "time_allow": allow, "exit": code}, default=str))
        return code
    print(tabulate(provenance_rows(prov), headers=["provenance", "BASE", "NEW", ""], tablefmt="github"))
    print()
    rows = _table(res)
    if rows:
        print(tabulate(rows, headers=["run", "metric", "base", "new", "note"], tablefmt="github"))
        print()
    _listing("missing from NEW" + ("" if a.allow_missing else " (a failure; --allow-missing accepts it)"),
             res["missing"], "NEW")
    _listing("only in NEW", res["added"], "BASE")
    timing = "not checked" if a.no_time else (
        f"{res['timed']} runs timed, ratio may grow x{1 + res['time_allow']:.2f}"
        + (f" (pass noise {res['time_noise']:.0%} measured in the data)" if res["time_noise"] is not None
           else " (too few repeated passes to measure noise)"))
    print(f"{res['matched']} runs matched, {len(res['missing'])} missing from NEW, {len(res['added'])} only in NEW, "
          f"{len(res['regressions'])} regressions; time: {timing}")
    if res["matched"] == 0:
        print("bench compare: no runs in common (different specs? see the differing fields above)", file=sys.stderr)
    return code
