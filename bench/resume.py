"""Resuming a sweep: which runs in an output directory are complete and current, and compaction of
``records.jsonl``. Nothing is ever deleted: rows that compaction takes out of ``records.jsonl`` (unreadable lines,
partial runs, duplicates, runs recorded by other code or superseded by a new run id, failed runs under
``--retry-failed``) are appended to ``records.archive.jsonl`` with the reason (``bench archive`` restores or
purges them). Only runs of the current invocation are touched: ``--only unguided`` leaves every other run as it
is. Only the suite driver writes, under the output directory's lock."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .records import code_fingerprint, now
from .runner import RunSpec

ARCHIVE = "records.archive.jsonl"


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


def _respec_id(spec) -> str | None:
    """The id the stored spec hashes to today (None when it is not a full spec or no longer builds)."""
    if not isinstance(spec, dict) or not {"task", "method", "params"} <= set(spec):
        return None
    try:
        return RunSpec(**spec).run_id
    except (TypeError, ValueError, KeyError):
        return "?"


def outdated_reasons(records: list[dict]) -> dict[str, str]:
    """run_id -> why its records no longer describe what its spec means now, checked once per run: recorded by
    other code (the ``code`` fingerprint differs, or is missing: recorded before fingerprints), the stored spec
    hashes to another id (a version bump or a changed default), or the resolved hyperparameters or method
    version differ from the current method's."""
    from methods import make_method

    code = code_fingerprint()
    rows: dict[str, list[dict]] = {}
    for rec in records:
        rows.setdefault(rec.get("run_id"), []).append(rec)
    out = {}
    for rid, rs in rows.items():
        codes = {r.get("code") for r in rs}
        spec = rs[0].get("spec")
        new_id = _respec_id(spec)
        if new_id is not None and new_id != rid:
            out[rid] = "superseded: its spec now hashes to run " + new_id + " (a version or default changed)"
            continue
        if codes != {code}:
            old = ", ".join(sorted(str(c) for c in codes if c)) or "none"
            out[rid] = f"code changed (recorded by code {old}, now {code})"
            continue
        ok = next((r for r in rs if r.get("status") == "ok"), None)
        if ok is not None and new_id is not None:
            try:
                m = make_method(spec["method"], spec["params"])
            except (KeyError, ValueError, TypeError):
                continue
            if ok.get("hparams") != json.loads(json.dumps(m.hparams())) or ok.get("method_version") != m.version:
                out[rid] = "hyperparameters or method version changed"
    return out


def outdated_runs(records: list[dict]) -> set[str]:
    return set(outdated_reasons(records))


@dataclass
class Plan:
    """What compaction does to an output directory: the runs to reuse, the rows to keep and to archive."""

    done: dict = field(default_factory=dict)           # run_id -> rows, complete and current: skipped
    keep: list = field(default_factory=list)           # rows staying in records.jsonl
    archive: list = field(default_factory=list)        # (row, reason); an unreadable line is {"raw": text}
    reasons: dict = field(default_factory=dict)        # run_id of the invocation -> why it is (re)run

    def summary(self) -> Counter:
        """Runs of the invocation that will be recomputed, by reason (first words of the reason)."""
        return Counter(_short(r) for r in self.reasons.values())


def _short(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


def read_lines(path: Path) -> list[tuple[int, dict | None, str]]:
    """(line number, parsed object or None when unreadable, raw text) for every non-empty line."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            text = line.rstrip("\n")
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                obj = None
            out.append((i, obj if isinstance(obj, dict) else None, text))
    return out


def plan(lines: list[tuple[int, dict | None, str]], ids: set[str] | None = None, *,
         retry_failed: bool = False) -> Plan:
    """Decide, for the runs ``ids`` of this invocation (None: every run in the file), which are complete and
    current. Rows of other runs are kept as they are, except unreadable lines and exact duplicates."""
    p = Plan()
    records = [obj for _, obj, _ in lines if obj is not None]
    in_scope = (lambda rid: True) if ids is None else (lambda rid: rid in ids)
    scoped = [r for r in records if in_scope(r.get("run_id"))]
    outdated = outdated_reasons(scoped)
    superseded = {}  # rows of other runs whose spec now hashes to a run of this invocation
    if ids is not None:
        for rid, why in outdated_reasons([r for r in records if r.get("run_id") not in ids]).items():
            if why.startswith("superseded") and why.split("run ")[1].split(" ")[0] in ids:
                superseded[rid] = why
    complete = complete_runs([r for r in scoped if r.get("run_id") not in outdated])
    for rid, rows in complete.items():
        if retry_failed and any(r.get("status") != "ok" for r in rows):
            p.reasons[rid] = "retry-failed: " + str(rows[-1].get("status"))
        else:
            p.done[rid] = rows
    for rid in {r.get("run_id") for r in scoped} - set(p.done) - set(p.reasons):
        p.reasons[rid] = outdated.get(rid, "incomplete run (interrupted or killed)")
    seen = set()
    for i, obj, text in lines:
        if obj is None:
            p.archive.append(({"raw": text, "line": i}, "unreadable line"))
            continue
        rid = obj.get("run_id")
        key = (rid, obj.get("round"), obj.get("status"))
        if rid in superseded:
            p.archive.append((obj, superseded[rid]))
        elif in_scope(rid) and rid not in p.done:
            p.archive.append((obj, p.reasons[rid]))
        elif key in seen:
            p.archive.append((obj, "duplicate row"))
        else:
            seen.add(key)
            p.keep.append(obj)
    return p


def archive_rows(out: Path, rows: list[tuple[dict, str]]) -> None:
    """Append rows with their reason to ``out/records.archive.jsonl`` (whole lines, fsynced)."""
    from .records import RecordWriter

    if not rows:
        return
    date = now()
    with RecordWriter(out, ARCHIVE) as w:  # the same whole-or-nothing append as records.jsonl
        w.write_run([{**row, "archived": {"reason": reason, "date": date}} for row, reason in rows])


def rewrite(path: Path, rows: list[dict]) -> None:
    """Atomically replace ``path`` with ``rows`` (temp file + fsync + rename)."""
    from . import atomic

    atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in rows), fsync=True)


def compact(out: Path, ids: set[str] | None = None, *, retry_failed: bool = False) -> Plan:
    """Apply ``plan`` to ``out/records.jsonl``: archived rows are appended to the archive first, then the records
    file is rewritten atomically (a crash in between leaves a row in both files, never in neither).

    Returns the plan (``plan.done``: the complete, current runs). Only the driver calls this, under the lock.
    """
    out = Path(out)
    path = out / "records.jsonl"
    if not path.exists():
        return Plan()
    p = plan(read_lines(path), ids, retry_failed=retry_failed)
    if p.archive:
        archive_rows(out, p.archive)
        rewrite(path, p.keep)
    return p
