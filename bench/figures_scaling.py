"""Figures of the ``scaling`` suite (issue 15): inference-time scaling against the exact reward tilt.

* **reward vs budget**: batch-mean reward against NFE-eq per returned sample in unguided passes
  (budget = (F + c V) / S, c = 2, S sampler steps; one-shot runs count their guided round only, GGDM Algorithm 1 and
  DNO their cumulative cost at every round, round 0 = the unguided start = 1x), one panel per (task, denoiser), the
  exact E[r] under the tilt as a line; crossing points with hard best-of-N stated in a table.
* **off-support vs budget**: the same axes for the off-support error.
* **distance to the tilt vs K**: tilt_fd (subspace) and tilt_w1 (both tasks) against particles / candidates K for
  FK steering, twisted SMC, best-of-N (hard, soft) and SVDD, with exact guidance and the exact-sample floor as lines.
Values are means over the report seeds; the table gives the spread across seeds (± standard error).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .figures import figure, pyplot

C = 2.0  # NFE-eq = F + C V
KNOB = {"best-of-n": "n", "fk-steering": "k", "tds": "k", "svdd": "m", "universal": "k"}
STYLE = {"best-of-N": ("black", "o"), "best-of-N soft": ("grey", "o"), "fk-steering": ("tab:blue", "s"),
         "tds": ("tab:orange", "D"), "svdd": ("tab:purple", "v"), "DPS + recurrence": ("tab:green", "^"),
         "dps": ("tab:olive", "*"), "GGDM alg1": ("tab:red", "P"), "dno": ("tab:brown", "X"),
         "exact-guidance": ("tab:cyan", "*")}


def _label(method: str, hp: dict, protocol: str) -> str:
    if method == "best-of-n":
        return "best-of-N" if hp.get("lam") is None else "best-of-N soft"
    if method == "universal":
        return "DPS + recurrence"
    if method == "look-ahead" and protocol.startswith("alg"):
        return "GGDM alg1"
    return method


def points(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, budget point): label, knob K, budget, reward, off-support and the tilt metrics."""
    ok = df[(df["status"] == "ok") & ~df.get("incomplete", False)]
    rows = []
    for rid, g in ok.groupby("run_id", sort=False):
        g = g.sort_values("round")
        first = g.iloc[0]
        hp, spec = first["hparams"] or {}, first["spec"] or {}
        S = int(spec.get("steps") or spec.get("T"))
        label = _label(first["method"], hp, str(first["protocol"]))
        multi = label in ("GGDM alg1", "dno")
        for _, r in (g.iterrows() if multi else [next(g.tail(1).iterrows())]):
            if not multi and r["round"] == 0:
                continue
            guided = r["nfe"] - (0 if multi else S) + C * r["vjp"]
            m = r["metrics"] if isinstance(r["metrics"], dict) else {}
            rows.append({"task": r["task"], "reward_fn": r["reward_fn"], "denoiser": r["denoiser"], "label": label,
                         "K": hp.get(KNOB.get(first["method"], ""), np.nan) if not multi else r["round"],
                         "budget": guided / S, "seed": r["seed"], "reward": r["reward_mean"],
                         "off": r["off_support_mean"], **{k: m.get(k, np.nan) for k in (
                             "tilt_fd", "tilt_fd_floor", "tilt_w1", "tilt_w1_floor", "tilt_reward", "tilt_lambda",
                             "ess", "unique_ancestors")}})
    return pd.DataFrame(rows)


def curves(pts: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds (and their standard errors) per (task, denoiser, label, K)."""
    keys = ["task", "reward_fn", "denoiser", "label", "K"]
    g = pts.groupby(keys, sort=False, dropna=False)  # exact guidance has no K
    out = g.mean(numeric_only=True).drop(columns="seed")
    se = g[["reward", "off", "tilt_fd", "tilt_w1"]].std(ddof=1).div(np.sqrt(g.size()), axis=0).add_suffix("_se")
    return out.join(se).join(g.size().rename("seeds")).reset_index()


def crossings(cv: pd.DataFrame) -> list[dict]:
    """Where each method's reward curve crosses hard best-of-N's (both interpolated in log budget)."""
    out = []
    for (task, den), g in cv.groupby(["task", "denoiser"], sort=False):
        bon = g[g["label"] == "best-of-N"].sort_values("budget")
        if len(bon) < 2:
            continue
        lb, rb = np.log(bon["budget"].to_numpy()), bon["reward"].to_numpy()
        for label, c in g[g["label"] != "best-of-N"].groupby("label", sort=False):
            c = c.sort_values("budget")
            x = np.log(c["budget"].to_numpy())
            inside = (x > 1e-9) & (x >= lb[0]) & (x <= lb[-1])  # budget 1: the unguided start every curve shares
            x, d = x[inside], (c["reward"].to_numpy() - np.interp(x, lb, rb))[inside]
            for i in range(len(x) - 1):
                if d[i] == 0 or d[i] * d[i + 1] < 0:
                    xc = x[i] - d[i] * (x[i + 1] - x[i]) / (d[i + 1] - d[i])
                    out.append({"task": task, "denoiser": den, "method": label, "budget": math.exp(xc),
                                "direction": "overtakes best-of-N" if d[i + 1] > d[i] else "falls below best-of-N"})
            if len(x) and not any(o["method"] == label and o["task"] == task and o["denoiser"] == den for o in out):
                out.append({"task": task, "denoiser": den, "method": label, "budget": float("nan"),
                            "direction": ("above" if d.min() > 0 else "below" if d.max() < 0 else "touches")
                            + (f" best-of-N at {math.exp(x[0]):.3g}x" if len(x) == 1 else
                               f" best-of-N over {math.exp(x[0]):.3g}x-{math.exp(x[-1]):.3g}x")})
    return out


def _panels(plt, cv, title):
    groups = list(cv.groupby(["task", "reward_fn", "denoiser"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.8 * len(groups), 4.2), squeeze=False)
    return fig, axes[0], groups


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _vs_budget(cv, out: Path, col: str, ylabel: str, fname: str, log_y: bool = False):
    plt = pyplot()
    fig, axes, groups = _panels(plt, cv, "")
    for ax, ((task, rw, den), g) in zip(axes, groups):
        for label, c in g.groupby("label", sort=False):
            c = c.sort_values("budget")
            colour, marker = STYLE.get(label, ("k", "."))
            ax.errorbar(c["budget"], c[col], yerr=c.get(f"{col}_se"), color=colour, marker=marker, ms=4, lw=1.1,
                        capsize=2, label=label)
        if col == "reward" and g["tilt_reward"].notna().any():
            ax.axhline(g["tilt_reward"].dropna().iloc[0], color="tab:cyan", ls="--", lw=1,
                       label=f"exact E[r] under the tilt (lam={g['tilt_lambda'].dropna().iloc[0]:g})")
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("budget: NFE-eq / sample (× unguided)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{task} / {rw} / {den}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, out / fname)


def _vs_k(cv, out: Path):
    plt = pyplot()
    sub = cv[cv["label"].isin(["fk-steering", "tds", "best-of-N", "best-of-N soft", "svdd"])]
    exact = cv[cv["label"] == "exact-guidance"]
    cols = [(t, "tilt_fd") for t in sub["task"].unique() if sub.loc[sub["task"] == t, "tilt_fd"].notna().any()]
    cols += [(t, "tilt_w1") for t in sub["task"].unique()]
    dens = list(sub["denoiser"].unique())
    fig, axes = plt.subplots(len(dens), len(cols), figsize=(4.4 * len(cols), 3.8 * len(dens)), squeeze=False)
    for i, den in enumerate(dens):
        for j, (task, col) in enumerate(cols):
            ax, g = axes[i][j], sub[(sub["task"] == task) & (sub["denoiser"] == den)]
            for label, c in g.groupby("label", sort=False):
                c = c.sort_values("K")
                colour, marker = STYLE[label]
                ax.errorbar(c["K"], c[col], yerr=c[f"{col}_se"], color=colour, marker=marker, ms=4, lw=1.1, capsize=2,
                            label=label)
            if g[f"{col}_floor"].notna().any():
                ax.axhline(g[f"{col}_floor"].mean(), color="k", ls=":", lw=1, label="floor (exact samples)")
            e = exact[exact["task"] == task]
            if len(e) and e[col].notna().any():
                ax.axhline(float(e[col].mean()), color="tab:cyan", ls="--", lw=1, label="exact-guidance (oracle)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("K (best-of-N: N; SVDD: M)")
            ax.set_ylabel(f"{col} ↓")
            ax.set_title(f"{task} / {den}", fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, out / "scaling_tilt_vs_k.png")


def _fmt(v, se=None, d=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    s = f"{v:.{d}g}"
    return s + (f" ± {se:.2g}" if se is not None and not math.isnan(se) else "")


def table(cv: pd.DataFrame) -> str:
    head = ("| task / denoiser | method | K | NFE-eq | reward | off-support | tilt_fd (floor) | tilt_w1 (floor) | ESS | "
            "ancestors |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for _, r in cv.sort_values(["task", "denoiser", "label", "budget"]).iterrows():
        fd = "–" if math.isnan(r["tilt_fd"]) else f"{_fmt(r['tilt_fd'], r['tilt_fd_se'])} ({r['tilt_fd_floor']:.3g})"
        w1 = "–" if math.isnan(r["tilt_w1"]) else f"{_fmt(r['tilt_w1'], r['tilt_w1_se'])} ({r['tilt_w1_floor']:.3g})"
        lines.append(f"| {r['task']} / {r['denoiser']} | {r['label']} | {_fmt(r['K'])} | {r['budget']:.3g} | "
                     f"{_fmt(r['reward'], r['reward_se'], 4)} | {_fmt(r['off'], d=2)} | {fd} | {w1} | "
                     f"{_fmt(r['ess'], d=2)} | {_fmt(r['unique_ancestors'], d=3)} |")
    return "\n".join(lines) + "\n"


@figure("scaling")
def scaling(df: pd.DataFrame, out: Path):
    cv = curves(points(df))
    if cv.empty:
        return []
    cv.to_csv(out / "scaling.csv", index=False)
    cross = crossings(cv)
    ctab = "| task / denoiser | method | crossing budget (NFE-eq) | |\n|---|---|---|---|\n" + "".join(
        f"| {c['task']} / {c['denoiser']} | {c['method']} | {_fmt(c['budget'])} | {c['direction']} |\n" for c in cross)
    return [("Reward against budget (means over seeds ± SE; dashed: exact E[r] under the tilt)",
             _vs_budget(cv, out, "reward", "batch-mean reward ↑", "scaling_reward_vs_budget.png")),
            ("Crossing points with hard best-of-N (reward curves interpolated in log budget)", ctab),
            ("Off-support error against budget",
             _vs_budget(cv, out, "off", "off-support error ↓", "scaling_off_support_vs_budget.png", log_y=True)),
            ("Distance to the exact tilt against K (dotted: floor of as many exact samples; dashed: exact guidance)",
             _vs_k(cv, out)),
            ("All points (means over seeds ± SE; scaling.csv has them as numbers)", table(cv))]
