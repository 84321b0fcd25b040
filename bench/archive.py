"""``bench archive DIR``: the rows that resume and compaction took out of ``records.jsonl`` (they are never
deleted): list them by reason, restore them into ``records.jsonl``, or purge them for good."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from .records import DirLock, RecordWriter
from .resume import ARCHIVE, read_lines, rewrite


def _matches(row: dict, reason: str | None, run: str | None) -> bool:
    why = (row.get("archived") or {}).get("reason", "")
    return (reason is None or reason.lower() in why.lower()) and (run is None or row.get("run_id") == run)


def load(out: Path) -> list[dict]:
    path = out / ARCHIVE
    if not path.exists():
        return []
    return [obj for _, obj, _ in read_lines(path) if obj is not None]


def summary(rows: list[dict]) -> str:
    if not rows:
        return "archive is empty"
    by = Counter((r.get("archived") or {}).get("reason", "?").split(" (")[0] for r in rows)
    runs = len({r.get("run_id") for r in rows if "raw" not in r})
    lines = [f"{len(rows)} archived rows of {runs} runs:"]
    lines += [f"  {n:6d}  {why}" for why, n in by.most_common()]
    return "\n".join(lines)


def cmd_archive(a) -> int:
    out = Path(a.dir)
    if not (out / "records.jsonl").exists() and not (out / ARCHIVE).exists():
        raise FileNotFoundError(2, "no records.jsonl or archive in this directory", str(out))
    with DirLock(out, "bench archive"):
        rows = load(out)
        sel = [r for r in rows if _matches(r, a.reason, a.run)]
        if not (a.restore or a.purge):
            print(summary(sel))
            return 0
        if a.restore:
            back = [{k: v for k, v in r.items() if k != "archived"} for r in sel if "raw" not in r]
            with RecordWriter(out) as w:
                w.write_run(back)
            print(f"restored {len(back)} rows to {out / 'records.jsonl'} (unreadable lines stay archived); "
                  "a suite run into this directory will archive them again if they are still outdated")
            sel = [r for r in sel if "raw" not in r]
        else:
            print(f"purged {len(sel)} archived rows")
        rest = [r for r in rows if not any(r is s for s in sel)]
        rewrite(out / ARCHIVE, rest)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("archive", help="list, restore or purge the rows resume moved out of records.jsonl",
                       description="Resume never deletes records: rows of outdated, partial, duplicate or retried "
                                   f"runs go to DIR/{ARCHIVE} with a reason. Without a flag this lists them.")
    p.add_argument("dir", help="an output directory (holding records.jsonl)")
    p.add_argument("--reason", default=None, help="only rows whose reason contains this text, e.g. 'code changed'")
    p.add_argument("--run", default=None, help="only rows of this run_id")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--restore", action="store_true", help="move the selected rows back into records.jsonl")
    g.add_argument("--purge", action="store_true", help="delete the selected rows from the archive for good")
    p.set_defaults(fn=cmd_archive)
