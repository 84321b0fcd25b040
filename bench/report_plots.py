"""Report plots (matplotlib, PNG), pure functions of records (DESIGN.md §5): reward / off-support vs round,
reward vs cumulative compute (NFE-equivalents = nfe + 2 vjp), and reward vs off-support Pareto fronts.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .atomic import savefig
from .figures import pyplot

CONFIG = ["denoiser", "method", "params", "protocol"]
DEN_STYLE = {"oracle": "-", "trained": "--"}
DEN_MARK = {"oracle": "o", "trained": "s"}


def curve_label(row) -> str:
    return " ".join(str(row[k]) for k in CONFIG if row.get(k))


def _colors(methods) -> dict:
    plt = pyplot()
    cmap = plt.get_cmap("tab20")
    return {m: cmap(i % 20) for i, m in enumerate(sorted(set(methods)))}


def _finish(fig, ax, title: str, path: Path, legend: bool = True) -> Path:
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return savefig(fig, path)


def _robust_ylim(ax, values) -> str:
    """Limit the y axis to the bulk of the values (a diverging method must not flatten every other curve);
    returns a title suffix naming how many points are off-scale."""
    import numpy as np

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) < 4:
        return ""
    q1, q3 = np.percentile(v, [25, 75])
    span = max(q3 - q1, 1e-12)
    lo, hi = max(v.min(), q1 - 20 * span), min(v.max(), q3 + 20 * span)  # only gross outliers
    off = int(((v < lo) | (v > hi)).sum())
    if not off:
        return ""
    pad = 0.05 * (hi - lo or 1.0)
    ax.set_ylim(lo - pad, hi + pad)
    return f" ({off} point{'s' if off > 1 else ''} off-scale)"


def _by_task(df: pd.DataFrame):
    ok = df[df["status"] == "ok"]
    return ok.groupby(["task", "reward_fn"], sort=False)


def plot_curves(df: pd.DataFrame, y: str, out: Path, ylabel: str, logy: bool = False) -> list[Path]:
    """One PNG per (task, reward): ``y`` vs round, one line per configuration (mean over seeds)."""
    plt = pyplot()
    paths = []
    for (task, reward), g in _by_task(df):
        if g["round"].max() < 1:
            continue
        colors = _colors(g["method"])
        fig, ax = plt.subplots(figsize=(8.5, 4.2))
        for key, c in g.groupby(CONFIG, sort=False):
            row = dict(zip(CONFIG, key))
            m = c.groupby("round")[y].mean()
            ax.plot(m.index, m.values, label=curve_label(row), color=colors[row["method"]],
                    ls=DEN_STYLE.get(row["denoiser"], ":"), marker="o" if len(m) < 12 else None, ms=3, lw=1.2)
        ax.set_xlabel("round (guided sampling passes)")
        ax.set_ylabel(ylabel)
        note = ""
        if logy:
            ax.set_yscale("symlog", linthresh=1e-4)
        else:
            note = _robust_ylim(ax, g.groupby(CONFIG + ["round"])[y].mean().tolist())
        paths.append(_finish(fig, ax, f"{task} / {reward}{note}", out / f"{task}_{reward}_{y}_vs_round.png"))
    return paths


def plot_compute(df: pd.DataFrame, out: Path) -> list[Path]:
    """Reward vs cumulative compute (NFE-equivalents, log scale), one line per configuration."""
    plt = pyplot()
    paths = []
    for (task, reward), g in _by_task(df):
        colors = _colors(g["method"])
        fig, ax = plt.subplots(figsize=(8.5, 4.2))
        for key, c in g.groupby(CONFIG, sort=False):
            row = dict(zip(CONFIG, key))
            m = c.groupby("round")[["compute", "reward_mean"]].mean()
            ax.plot(m["compute"], m["reward_mean"], label=curve_label(row), color=colors[row["method"]],
                    ls=DEN_STYLE.get(row["denoiser"], ":"), marker=DEN_MARK.get(row["denoiser"], "^"), ms=3, lw=1.2)
        ax.set_xscale("log")
        ax.set_xlabel("cumulative compute (NFE + 2·VJP)")
        ax.set_ylabel("batch-mean reward")
        note = _robust_ylim(ax, g.groupby(CONFIG + ["round"])["reward_mean"].mean().tolist())
        paths.append(_finish(fig, ax, f"{task} / {reward}: reward vs compute{note}",
                             out / f"{task}_{reward}_reward_vs_compute.png"))
    return paths


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (off_support, reward) points: lower off-support and higher reward are better."""
    front, best = [], float("-inf")
    for o, r in sorted(points, key=lambda p: (p[0], -p[1])):
        if r > best:
            front.append((o, r))
            best = r
    return front


def plot_pareto(table: pd.DataFrame, out: Path) -> list[Path]:
    """Final reward vs off-support per configuration, with the Pareto front of each denoiser."""
    plt = pyplot()
    paths = []
    for (task, reward), g in table.groupby(["task", "reward_fn"], sort=False):
        colors = _colors(g["method"])
        fig, ax = plt.subplots(figsize=(8.5, 4.2))
        for r in g.itertuples():
            ax.errorbar(r.off_support, r.reward, xerr=r.off_support_se, yerr=r.reward_se, fmt=DEN_MARK.get(r.denoiser, "^"),
                        color=colors[r.method], ms=5, lw=0.8, label=curve_label(r._asdict()))
        for den, d in g.groupby("denoiser"):
            front = pareto_front(list(zip(d["off_support"], d["reward"])))
            if len(front) > 1:
                xs, ys = zip(*front)
                ax.step(xs, ys, where="post", color="k", ls=DEN_STYLE.get(den, ":"), lw=0.9, alpha=0.6,
                        label=f"Pareto front ({den})")
        ax.set_xscale("symlog", linthresh=max(float(g["off_support"].abs().min() or 1e-6), 1e-9))
        ax.set_xlabel("off-support error ↓ (final round)")
        ax.set_ylabel("reward ↑ (final round)")
        note = _robust_ylim(ax, g["reward"].tolist())
        paths.append(_finish(fig, ax, f"{task} / {reward}: reward vs off-support{note}",
                             out / f"{task}_{reward}_pareto.png"))
    return paths
