"""Report figures of the noise-optimisation comparison (issue 6; DNO, Tang et al. 2024, methods.md §3.7-3.8).

- ``dno-compute``: reward vs cumulative compute in NFE-equivalents (nfe + 2 vjp: a VJP costs about two
  forwards, methods.md §1.3) for every run, one panel per (task, reward, denoiser), and a table of the reward
  reached at fixed budgets, in units of one unguided sampling pass (= the number of sampler steps).
- ``dno-offsupport``: reward and off-support error at round 0 and at the last round of every DNO/DOODL run
  (with and without the probability regularisation R(Z)), plus off-support vs reward trajectories.
- ``dno-memory``: peak memory vs number of sampler steps, with and without gradient checkpointing.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .atomic import savefig
from .figures import figure, pyplot

BUDGETS = (5, 10, 20, 40, 80, 120)  # in unguided sampling passes
KEYS = ["task", "reward_fn", "denoiser"]
NOISE_METHODS = ("dno", "doodl")


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "status" not in df:
        return df.iloc[0:0]
    df = df[(df["status"] == "ok") & df["round"].notna()]
    df = df[~df["incomplete"]].copy() if "incomplete" in df else df.copy()  # no final value: not shown as one
    if df.empty:
        return df
    df["steps_n"] = [_steps(s) for s in df["spec"]]
    df["nfe_eq"] = df["nfe"] + 2 * df["vjp"]
    df["passes"] = df["nfe_eq"] / df["steps_n"]
    df["label"] = [_label(r) for r in df.itertuples()]
    return df


def _steps(spec: dict) -> int:
    """Sampler steps of a run (the sub-grid length, or T)."""
    spec = spec or {}
    T = int(spec.get("T", 200))
    return min(int(spec["steps"]), T) if spec.get("steps") else T


def _label(r) -> str:
    proto = "" if r.method in NOISE_METHODS else f" [{r.protocol}]"
    spec = r.spec or {}
    samp = f" {spec.get('sampler')}(eta={spec.get('eta')})" if r.method == "doodl" else ""
    return f"{r.method}{(' ' + r.params) if r.params else ''}{proto}{samp}"


def _panels(plt, cur: pd.DataFrame, ylabel_x: tuple[str, str]):
    """A grid of panels, one per (task, reward, denoiser), with one colour per run label across panels."""
    panels = list(cur.groupby(KEYS))
    labels = sorted(cur["label"].unique())
    cmap = plt.get_cmap("tab20")
    colours = {lab: cmap(i % 20) for i, lab in enumerate(labels)}
    ncol = min(2, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6 * ncol, 3.8 * nrow + 0.25 * len(labels) / 2 + 0.5),
                             squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (key, _) in zip(axes.flat, panels):
        ax.set_title(" / ".join(key), fontsize=9)
        ax.set_xlabel(ylabel_x[1])
        ax.set_ylabel(ylabel_x[0])
        ax.grid(alpha=0.3)
    return fig, list(zip(axes.flat, panels)), colours


def _legend(fig, colours):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", ms=4, label=lab) for lab, c in colours.items()]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    rows = -(-len(handles) // 2)
    fig.tight_layout(rect=(0, min(0.45, 0.03 + 0.022 * rows * 4 / fig.get_figheight()), 1, 1))


def _noise_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The ok rounds of the noise-optimisation methods (DNO, DOODL)."""
    df = _ok(df)
    return df[df["method"].isin(NOISE_METHODS)] if not df.empty else df


def _curves(df: pd.DataFrame) -> pd.DataFrame:
    """Mean reward / off-support per (panel, label, round) over seeds."""
    return (df.groupby(KEYS + ["label", "round"], as_index=False)
              .agg(passes=("passes", "mean"), nfe_eq=("nfe_eq", "mean"), reward=("reward_mean", "mean"),
                   reward_se=("reward_se", "mean"), off=("off_support_mean", "mean")))


@figure("dno-compute")
def reward_vs_compute(df: pd.DataFrame, out: Path):
    plt = pyplot()

    df = _ok(df)
    if df.empty:
        return [("Reward vs compute", "_no ok records_")]
    cur = _curves(df)
    fig, panels, colours = _panels(plt, cur, ("mean reward", "cumulative (nfe + 2 vjp) / steps  [unguided passes]"))
    for ax, (key, g) in panels:
        for label, c in g.groupby("label"):
            c = c.sort_values("round")
            if c["round"].max() > 1:
                ax.plot(c["passes"], c["reward"], "-", color=colours[label])
            else:  # one-shot: the guided round as a point
                ax.plot(c["passes"].iloc[-1:], c["reward"].iloc[-1:], "o", ms=5, color=colours[label])
        ax.set_xscale("log")
    _legend(fig, colours)
    png = Path(out) / "dno_reward_vs_compute.png"
    savefig(fig, png)
    return [("Reward vs cumulative compute (DNO, GGDM Algorithm 1/2, per-step)", png),
            ("Reward reached within a compute budget", budget_table(cur))]


def budget_table(cur: pd.DataFrame) -> str:
    """Per run label: the reward of the last round whose cumulative cost fits in each budget (passes)."""
    rows = []
    for (task, rw, den, label), c in cur.groupby(KEYS + ["label"]):
        c = c.sort_values("round")
        row = [f"{task}/{rw}", den, label]
        for b in BUDGETS:
            fit = c[c["passes"] <= b + 1e-9]
            row.append(f"{fit['reward'].iloc[-1]:.3f}" if len(fit) else "")
        row.append(f"{c['reward'].iloc[-1]:.3f} @ {c['passes'].iloc[-1]:.0f}")
        rows.append(row)
    head = ["task/reward", "denoiser", "run"] + [f"<= {b}" for b in BUDGETS] + ["final @ passes"]
    note = ("\n\nBudget columns: mean reward of the last round whose cumulative cost (nfe + 2 vjp, divided by the "
            "number of sampler steps) is within the budget (round 0, one unguided pass, fits every budget).\n")
    return tabulate(rows, head, tablefmt="github") + note


@figure("dno-offsupport")
def offsupport(df: pd.DataFrame, out: Path):
    plt = pyplot()

    df = _noise_runs(df)
    if df.empty:
        return [("Off-support error of noise optimisation", "_no DNO/DOODL records_")]
    cur = _curves(df)
    rows = []
    for (task, rw, den, label), c in cur.groupby(KEYS + ["label"]):
        c = c.sort_values("round")
        a, b = c.iloc[0], c.iloc[-1]
        rows.append([f"{task}/{rw}", den, label, int(b["round"]), f"{a['reward']:.3f}", f"{b['reward']:.3f}",
                     f"{a['off']:.3g}", f"{b['off']:.3g}", f"{b['off'] / a['off']:.2f}" if a["off"] > 0 else ""])
    head = ["task/reward", "denoiser", "run", "rounds", "reward r0", "reward final", "off-support r0",
            "off-support final", "off ratio"]
    fig, panels, colours = _panels(plt, cur, ("mean off-support error", "mean reward"))
    for ax, (key, g) in panels:
        for label, c in g.groupby("label"):
            c = c.sort_values("round")
            ax.plot(c["reward"], c["off"], "-", marker=".", ms=3, color=colours[label])
        ax.set_yscale("symlog", linthresh=1e-3)
    _legend(fig, colours)
    png = Path(out) / "dno_offsupport.png"
    savefig(fig, png)
    return [("Off-support error of DNO / DOODL, without and with R(Z) (gamma)", tabulate(rows, head, tablefmt="github")),
            ("Off-support vs reward along the optimisation (one point per round)", png)]


@figure("dno-memory")
def memory(df: pd.DataFrame, out: Path):
    plt = pyplot()

    df = _noise_runs(df)
    if df.empty:
        return [("Peak memory vs steps", "_no DNO records_")]
    df = df.assign(checkpoint=[bool((h or {}).get("checkpoint", True)) for h in df["hparams"]])
    peak = df.groupby(KEYS + ["method", "n", "steps_n", "checkpoint"], as_index=False)["peak_mem_mb"].max()
    tab = peak.pivot_table(index=KEYS + ["method", "n", "steps_n"], columns="checkpoint", values="peak_mem_mb")
    rows = []
    for idx, r in tab.iterrows():
        on, off = r.get(True), r.get(False)
        ratio = f"{off / on:.1f}" if on and off and on > 0 else ""
        rows.append([*idx[:4], int(idx[4]), int(idx[5]), f"{off:.1f}" if off == off else "",
                     f"{on:.1f}" if on == on else "", ratio])
    head = ["task", "reward", "denoiser", "method", "batch", "steps", "peak MB (no checkpoint)",
            "peak MB (checkpoint)", "ratio"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for key, g in peak[peak["n"] == peak["n"].max()].groupby("checkpoint"):
        g = g.sort_values("steps_n")
        ax.plot(g["steps_n"], g["peak_mem_mb"], "o-", label="checkpointing" if key else "no checkpointing")
    ax.set_xlabel("sampler steps")
    ax.set_ylabel("peak memory increment (MB)")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = Path(out) / "dno_memory.png"
    savefig(fig, png)
    note = ("\n\nPeak memory is the run's high-water mark above the resident set at its start (bench/measure.py), "
            "maximum over rounds; ratio = no checkpoint / checkpoint. The plot shows the largest batch.\n")
    return [("Peak memory vs sampler steps, with and without gradient checkpointing",
             tabulate(rows, head, tablefmt="github") + note), ("Peak memory vs steps", png)]
