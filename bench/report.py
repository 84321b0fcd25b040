"""Reports are pure functions of records (DESIGN.md §5): ``bench report DIR`` writes summary.md (tables via
tabulate: mean ± SE with ↑/↓ and the best marked, best configuration per method, cost with the time ratio to
unguided), summary.csv (pandas) and PNG plots (matplotlib), plus the extra figures a suite asked for
(``figures.json`` in the records directory, names from the ``bench.figures`` registry).
"""
from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate

from . import atomic
from .records import read_records
from .report_plots import curve_label, plot_compute, plot_curves, plot_pareto  # noqa: F401
from .report_tables import (GROUP, REPORT_REQUIRE, REPORT_TYPED, best_configs, final_rows, frame,  # noqa: F401
                            incomplete_runs, markdown_best, markdown_cost, markdown_summary, short_params,
                            summary_table)

FIGURES_FILE = "figures.json"


def _figure_names(src: Path, figures) -> list[str]:
    if figures is not None:
        return list(figures)
    d = src if src.is_dir() else src.parent
    f = d / FIGURES_FILE
    return list(json.loads(f.read_text())) if f.exists() else []


def _extra_figures(df, out: Path, names: list[str]) -> list[str]:
    """Markdown for the registered figures ``names`` (a failing figure is reported, not fatal)."""
    if not names:
        return []
    from .figures import load_all

    registry = load_all()
    md = ["\n## Extra figures\n"]
    for name in names:
        fn = registry.get(name)
        if fn is None:
            md.append(f"_unknown figure {name!r}; registered: {', '.join(sorted(registry)) or '(none)'}_\n")
            continue
        try:
            items = fn(df, out)
        except OSError:  # a full disk or an unwritable directory is the run's problem, not the figure's
            raise
        except Exception as e:
            md.append(f"_figure {name!r} failed: {type(e).__name__}: {e}_\n")
            continue
        for title, item in items:
            md.append(f"### {title}\n")
            is_png = isinstance(item, Path) or (isinstance(item, str) and item.endswith(".png") and "\n" not in item)
            md.append(f"![{title}]({Path(item).name})\n" if is_png else f"{item}\n")
    return md


def read_report_records(src) -> list[dict]:
    """``read_records`` plus the fields a report uses (a bad one is exit 2 naming file:line, not a traceback)."""
    return read_records(src, require=REPORT_REQUIRE, typed=REPORT_TYPED)


def write_report(src, out=None, figures: list[str] | None = None) -> list[Path]:
    """Write summary.md, summary.csv, best.csv and plots for the records in ``src``; return written paths.

    Every file is written atomically (temporary file + rename): a failure (a full disk) leaves the previous
    report readable. Figures find saved samples under ``<records dir>/samples`` (``df.attrs["records_dir"]``)."""
    src = Path(src)
    records = read_report_records(src)
    rdir = src if src.is_dir() else src.parent
    out = Path(out or rdir)
    out.mkdir(parents=True, exist_ok=True)
    names = _figure_names(src, figures)
    if figures is not None or (out != rdir and names):
        atomic.write_text(out / FIGURES_FILE, json.dumps(names) + "\n")
    df = frame(records)
    df.attrs["records_dir"] = str(rdir.resolve())
    table = summary_table(df) if not df.empty else df
    failed = df[df["status"] != "ok"] if not df.empty else df
    partial = incomplete_runs(records)
    n_runs = df["run_id"].nunique() if not df.empty else 0
    n_failed = failed["run_id"].nunique() if len(failed) else 0
    flags = ", ".join(f"{n} {what}" for n, what in ((len(partial), "incomplete"), (n_failed, "failed")) if n)
    md = ["# Benchmark report\n",
          f"{n_runs} runs{f' ({flags})' if flags else ''}, {len(df)} records, from `{src}`. Final round of each "
          "completed run; mean ± SE (across seeds when "
          "there are several, else within the batch). ↑ higher is better, ↓ lower is better; best per task/reward in "
          "bold. Time / unguided: wall-clock over the unguided run with the same task, denoiser, protocol and "
          "sampler in this record set. NFE-eq = NFE + 2·VJP.\n"]
    paths = [out / "summary.md", out / "summary.csv"]
    plots = []
    if not table.empty:
        md += ["## Reward and off-support\n", markdown_summary(table),
               "## Best configuration per method\n", markdown_best(table),
               "## Cost\n", markdown_cost(table)]
        atomic.to_csv(table, paths[1])
        paths.append(atomic.to_csv(best_configs(table), out / "best.csv"))
        plots += plot_curves(df, "reward_mean", out, "batch-mean reward")
        plots += plot_curves(df, "off_support_mean", out, "off-support error", logy=True)
        plots += plot_compute(df, out)
        plots += plot_pareto(table, out)
    else:
        md.append("_no completed successful runs_\n")
        atomic.to_csv(table, paths[1])
    if len(failed):
        md.append("\n## Failed runs\n")
        md.append(tabulate([[r.method, r.task, r.denoiser, r.params, r.status, r.error] for r in failed.itertuples()],
                           headers=["method", "task", "denoiser", "params", "status", "error"], tablefmt="github"))
    if partial:
        md.append("\n## Incomplete runs\n")
        md.append("Status `incomplete`: the planned final round is missing or unreadable (a killed run or a truncated "
                  "records line), so these runs are in no table above. `bench suite` re-runs them.\n")
        md.append(markdown_incomplete(df, partial))
    if plots:
        md.append("\n## Plots\n")
        md += [f"![{p.stem}]({p.name})" for p in plots]
    if not df.empty:
        md += _extra_figures(df, out, names)
    atomic.write_text(paths[0], "\n".join(md) + "\n")
    if out.resolve().parent.name == "reports":  # keep the index of reference reports current
        paths.append(write_index(out.resolve().parent))
    return paths + plots


def print_table(src) -> str:
    """The comparison table for the terminal: final-round reward, off-support and cost per configuration, then
    the incomplete runs (planned final round missing), which are in no table."""
    records = read_report_records(src)
    df = frame(records)
    table = summary_table(df) if not df.empty else df
    text = markdown_summary(table) if not table.empty else "no successful runs"
    partial = incomplete_runs(records)
    if partial:
        text += (f"\n\n{len(partial)} incomplete run{'s' if len(partial) != 1 else ''} (final round missing; "
                 "not in the table):\n" + markdown_incomplete(df, partial))
    return text


def markdown_incomplete(df, partial: dict) -> str:
    """One row per incomplete run: what it is, the last round present and the planned final round."""
    first = df.drop_duplicates("run_id").set_index("run_id")
    rows = [[rid, first.at[rid, "method"], first.at[rid, "task"], first.at[rid, "denoiser"], first.at[rid, "params"],
             first.at[rid, "seed"], "incomplete", "none" if last is None else last, R]
            for rid, (last, R) in partial.items()]
    return tabulate(rows, headers=["run", "method", "task", "denoiser", "params", "seed", "status", "last round",
                                   "planned final round"], tablefmt="github")


def load_json(p) -> dict:
    return json.loads(Path(p).read_text())


def write_index(reports_dir) -> Path:
    """``reports/README.md``: one line per report directory (its summary.md, suite description, runs, date)."""
    root = Path(reports_dir)
    rows = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        summary = next((d / n for n in ("leaderboard.md", "summary.md", "README.md", "report.md") if (d / n).exists()), None)
        if summary is None:
            continue
        meta = load_json(d / "suite.json") if (d / "suite.json").exists() else {}
        desc = meta.get("description") or summary.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        runs, date = "", ""
        if (d / "records.jsonl").exists():
            recs = read_records(d, allow_empty=True)
            runs = len({r.get("run_id") for r in recs})
            date = max((r.get("date") or "" for r in recs), default="")[:10]
            if not meta.get("description"):  # records from `bench run`: say what they hold
                what = lambda k: ", ".join(sorted({str(r.get(k)) for r in recs}))  # noqa: E731
                desc = f"{what('method')} on {what('task')} ({what('denoiser')})"
        cmd = f"`bench suite {meta['suite']}`" if meta.get("suite") else ""
        rows.append([f"[{d.name}]({d.name}/{summary.name})", desc, runs, date, cmd])
    md = ["# Reference reports\n",
          "Produced by the CLI (`bench suite NAME` writes `reports/NAME/`; `bench report DIR` rewrites a report from "
          "its records), never hand-edited. This index is rewritten by both commands.\n",
          tabulate(rows, headers=["report", "what", "runs", "date", "command"], tablefmt="github")]
    return atomic.write_text(root / "README.md", "\n".join(md) + "\n")
