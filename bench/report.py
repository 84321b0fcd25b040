"""Reports are pure functions of records: Markdown tables (tabulate) and PNG plots (matplotlib)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .records import read_records

GROUP = ["task", "reward_fn", "denoiser", "method", "params", "protocol"]


def short_params(h: dict | None, spec: dict | None = None) -> str:
    """Compact 'k=v' of the hyperparameters that differ from the method's defaults."""
    if not h:
        return ""
    try:
        from methods import get_method

        method = (spec or {}).get("method")
        defaults = {n: d for n, d, _ in get_method(method).params()} if method else {}
    except Exception:
        defaults = {}
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in h.items()
             if k not in defaults or defaults[k] != v]
    return " ".join(parts)


def frame(records: list[dict]) -> pd.DataFrame:
    """Records as a DataFrame with a readable ``params`` column (only changed hyperparameters)."""
    df = pd.DataFrame(records)
    if df.empty:
        return df
    df["params"] = [short_params(h, s) for h, s in zip(df.get("hparams", [None] * len(df)),
                                                      df.get("spec", [None] * len(df)))]
    return df


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The last ok round of every run."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return ok
    return ok.sort_values("round").groupby("run_id", as_index=False).tail(1)


def _agg(col: pd.Series, se_col: pd.Series) -> tuple[float, float]:
    """Mean over runs; SE across runs (seeds) when there are several, else the run's own SE."""
    n = len(col)
    if n > 1:
        return float(col.mean()), float(col.std(ddof=1) / math.sqrt(n))
    return float(col.iloc[0]), float(se_col.iloc[0])


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, reward, denoiser, method, params, protocol) at the final round."""
    fin = final_rows(df)
    rows = []
    for key, g in fin.groupby(GROUP, sort=False, dropna=False):
        r, rse = _agg(g["reward_mean"], g["reward_se"])
        o, ose = _agg(g["off_support_mean"], g["off_support_se"])
        rows.append({**dict(zip(GROUP, key)), "seeds": g["seed"].nunique(), "rounds": int(g["round"].max()),
                     "reward": r, "reward_se": rse, "reward_topk": float(g["reward_topk"].mean()),
                     "off_support": o, "off_support_se": ose, "nfe": int(g["nfe"].mean()), "vjp": int(g["vjp"].mean()),
                     "reward_calls": int(g["reward_calls"].mean()), "wall_s": float(g["wall_s"].mean()),
                     "peak_mem_mb": float(g["peak_mem_mb"].mean())})
    return pd.DataFrame(rows)


def _pm(m: float, se: float, best: bool) -> str:
    s = f"{m:.4g} ± {se:.2g}"
    return f"**{s}**" if best else s


def markdown_summary(table: pd.DataFrame) -> str:
    """Markdown, one section per (task, reward); best reward (max) and off-support (min) in bold."""
    out = []
    for (task, reward), g in table.groupby(["task", "reward_fn"], sort=False):
        best_r, best_o = g["reward"].max(), g["off_support"].min()
        rows = [[r.denoiser, r.method, r.params, r.protocol, r.rounds, r.seeds,
                 _pm(r.reward, r.reward_se, r.reward == best_r), _pm(r.off_support, r.off_support_se,
                                                                      r.off_support == best_o),
                 r.nfe, r.vjp, f"{r.wall_s:.2f}", f"{r.peak_mem_mb:.0f}"] for r in g.itertuples()]
        out.append(f"### {task} / {reward}\n")
        out.append(tabulate(rows, headers=["denoiser", "method", "params", "protocol", "rounds", "seeds",
                                           "reward ↑", "off-support ↓", "NFE", "VJP", "wall s", "peak MB"],
                            tablefmt="github"))
        out.append("")
    return "\n".join(out)


def curve_label(row) -> str:
    parts = [row["denoiser"], row["method"], row["params"], row["protocol"]]
    return " ".join(p for p in parts if p)


def plot_curves(df: pd.DataFrame, y: str, out: Path, ylabel: str, logy: bool = False) -> list[Path]:
    """One PNG per (task, reward): ``y`` vs round, one line per configuration (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df["status"] == "ok"]
    paths = []
    for (task, reward), g in ok.groupby(["task", "reward_fn"], sort=False):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for key, c in g.groupby(["denoiser", "method", "params", "protocol"], sort=False):
            m = c.groupby("round")[y].mean()
            ax.plot(m.index, m.values, label=curve_label(dict(zip(["denoiser", "method", "params", "protocol"], key))),
                    marker="o" if len(m) < 12 else None, lw=1.3)
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_title(f"{task} / {reward}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        p = out / f"{task}_{reward}_{y}_vs_round.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def write_report(src, out=None) -> list[Path]:
    """Write summary.md, summary.csv and plots for the records in ``src``; return written paths."""
    records = read_records(src)
    out = Path(out or (src if Path(src).is_dir() else Path(src).parent))
    out.mkdir(parents=True, exist_ok=True)
    df = frame(records)
    table = summary_table(df)
    failed = df[df["status"] != "ok"] if not df.empty else df
    md = ["# Benchmark report\n", f"{df['run_id'].nunique() if not df.empty else 0} runs, "
          f"{len(df)} records, from `{src}`. Mean ± SE (across seeds when there are several, else within the "
          f"batch). Final round of each run. Best per task/reward in bold.\n"]
    md.append(markdown_summary(table) if not table.empty else "_no successful runs_\n")
    if len(failed):
        md.append("\n### Failed runs\n")
        md.append(tabulate([[r.method, r.task, r.status, r.error] for r in failed.itertuples()],
                           headers=["method", "task", "status", "error"], tablefmt="github"))
    paths = [out / "summary.md", out / "summary.csv"]
    table.to_csv(paths[1], index=False)
    plots = []
    if not table.empty:
        plots += plot_curves(df, "reward_mean", out, "batch-mean reward")
        plots += plot_curves(df, "off_support_mean", out, "off-support error", logy=True)
        md.append("\n## Plots\n")
        md += [f"![{p.stem}]({p.name})" for p in plots]
    paths[0].write_text("\n".join(md) + "\n", encoding="utf-8")
    return paths + plots


def load_json(p) -> dict:
    return json.loads(Path(p).read_text())


def print_table(src) -> str:
    """The comparison table for the terminal: final-round reward / off-support / cost per configuration."""
    df = frame(read_records(src))
    table = summary_table(df) if not df.empty else df
    if table.empty:
        return "no successful runs"
    return markdown_summary(table)
