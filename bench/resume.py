"""Resuming a sweep: which runs in an output directory are complete and still current, and compaction of
``records.jsonl`` (truncated lines, partial or outdated runs, duplicate rows). Only the suite driver writes."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .records import read_records
from .runner import RunSpec


def complete_runs(records: list[dict]) -> dict[str, list[dict]]:
    """run_id -> its records, for runs that are complete: rounds 0..R all ok, or a final error/diverged row."""
    by_run: dict[str, list[dict]] = {}
    for r in records:
        by_run.setdefault(r.get("run_id"), []).append(r)
    done = {}
    for rid, rows in by_run.items():
        if any(r.get("status") in ("error", "diverged") for r in rows):
            done[rid] = rows
            continue
        R = (rows[0].get("spec") or {}).get("rounds")
        got = sorted({r["round"] for r in rows if r.get("status") == "ok" and r.get("round") is not None})
        if R is not None and got == list(range(R + 1)):
            done[rid] = rows
    return done


def outdated_runs(records: list[dict]) -> set[str]:
    """Run ids whose records no longer describe what their spec means now, checked once per run: the stored
    spec hashes to another id (a run-id scheme change, or a method/task version bump), or an ok row's
    resolved hyperparameters or method version differ from the current method's. Their runs are redone
    instead of being skipped or standing beside the new ones."""
    from methods import make_method

    first: dict[str, dict] = {}
    first_ok: dict[str, dict] = {}
    for rec in records:
        first.setdefault(rec.get("run_id"), rec)
        if rec.get("status") == "ok":
            first_ok.setdefault(rec.get("run_id"), rec)
    out = set()
    for rid, rec in first.items():
        spec = rec.get("spec")
        if not isinstance(spec, dict) or not {"task", "method", "params"} <= set(spec):
            continue
        try:
            if RunSpec(**spec).run_id != rid:
                out.add(rid)
                continue
            m = make_method(spec["method"], spec["params"])
        except TypeError:
            out.add(rid)
            continue
        except (KeyError, ValueError):
            continue
        ok = first_ok.get(rid)
        if ok is not None and (ok.get("hparams") != json.loads(json.dumps(m.hparams()))
                               or ok.get("method_version") != m.version):
            out.add(rid)
    return out


def compact(out: Path) -> dict[str, list[dict]]:
    """Drop truncated lines, incomplete runs and duplicate rows from ``out/records.jsonl`` (atomic rewrite).

    Returns the complete runs. Only the driver calls this, before its executor starts.
    """
    path = out / "records.jsonl"
    if not path.exists():
        return {}
    raw = path.read_text(encoding="utf-8")
    records = read_records(path, allow_empty=True)
    outdated = outdated_runs(records)
    records = [r for r in records if r.get("run_id") not in outdated]
    done = complete_runs(records)
    keep, seen = [], set()
    for r in records:
        key = (r.get("run_id"), r.get("round"), r.get("status"))
        if r.get("run_id") in done and key not in seen:
            seen.add(key)
            keep.append(r)
    new = "".join(json.dumps(r) + "\n" for r in keep)
    if new != raw:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text(new, encoding="utf-8")
        os.replace(tmp, path)
    return done
