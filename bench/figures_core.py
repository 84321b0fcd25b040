"""Report figures of the core GGDM simulations (ggdm.md §7.2; paper Fig. 4 and Fig. 11 right).

ggdm-curves       reward and off-support vs round, one colour per configuration, line style per denoiser
ggdm-pareto       final (off-support, reward) per delta, one curve per (denoiser, method): the sphere sweep
ggdm-fixed-point  oracle look-ahead runs against the Algorithm-1 fixed point with lambda = sigma^2 / delta
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from . import fixed_point as stochastic
from .atomic import savefig
from .figures import figure, pyplot

DEN_STYLE = {"oracle": "-", "trained": "--"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return savefig(fig, path)


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def _complete(df: pd.DataFrame) -> pd.DataFrame:
    """The ok rows of runs that reached their planned final round (an incomplete run has no final value)."""
    ok = _ok(df)
    return ok[~ok["incomplete"]] if "incomplete" in ok else ok


def _delta(h) -> float | None:
    return h.get("delta") if isinstance(h, dict) else None


@figure("ggdm-curves")
def curves(df: pd.DataFrame, out: Path):
    plt = pyplot()
    items = []
    for (task, reward), g in _ok(df).groupby(["task", "reward_fn"], sort=False):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        keys = list(g.groupby(["method", "params", "protocol"], sort=False).groups)
        cmap = plt.get_cmap("tab10")
        colour = {k: cmap(i % 10) for i, k in enumerate(keys)}
        for (den, method, params, proto), c in g.groupby(["denoiser", "method", "params", "protocol"], sort=False):
            m = c.groupby("round")[["reward_mean", "off_support_mean"]].mean()
            label = " ".join(x for x in (den, method, params or "", proto) if x)
            kw = dict(color=colour[(method, params, proto)], ls=DEN_STYLE.get(den, ":"), lw=1.1, label=label)
            axes[0].plot(m.index, m["reward_mean"], **kw)
            axes[1].plot(m.index, m["off_support_mean"], **kw)
        axes[0].set_ylabel("batch-mean reward ↑")
        axes[1].set_ylabel("off-support error ↓")
        axes[1].set_yscale("log")
        for ax in axes:
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.suptitle(f"{task} / {reward}: solid = oracle, dashed = trained network")
        p = _save(fig, out / f"{task}_{reward}_ggdm_curves.png")
        items.append((f"{task} / {reward}: reward and off-support vs round", p))
    return items


@figure("ggdm-pareto")
def pareto(df: pd.DataFrame, out: Path):
    """Final (off-support, reward) per delta; where the task reports the signed ||x|| - 1 (sphere) a second
    panel plots it (|.| hides naive guidance's outward drift). Several network seeds are averaged."""
    plt = pyplot()
    ok = _complete(df)
    fin = ok.sort_values("round").groupby("run_id").tail(1).copy()
    fin["delta"] = [_delta(h) for h in fin["hparams"]]
    fin["signed"] = [(m or {}).get("norm_minus_1") if isinstance(m, dict) else None for m in fin["metrics"]]
    fin["signed"] = pd.to_numeric(fin["signed"], errors="coerce")
    fin = fin.dropna(subset=["delta"])
    items = []
    colour = {"naive": "tab:red", "look-ahead": "tab:blue"}
    for (task, reward), g in fin.groupby(["task", "reward_fn"], sort=False):
        has_signed = g["signed"].notna().any()
        fig, axes = plt.subplots(1, 2 if has_signed else 1, figsize=(13 if has_signed else 7.5, 4.5), squeeze=False)
        ax = axes[0][0]
        rows = []
        for (den, method), c in g.groupby(["denoiser", "method"], sort=False):
            nets = c["network_seed"].nunique() if "network_seed" in c else 1
            c = c.groupby("delta")[["off_support_mean", "reward_mean", "signed"]].mean().sort_index()
            kw = dict(marker="o", ms=4, ls=DEN_STYLE.get(den, ":"), color=colour.get(method),
                      label=f"{den} {method}" + (f" ({nets} nets)" if nets > 1 else ""))
            ax.plot(c["off_support_mean"], c["reward_mean"], **kw)
            if has_signed:
                axes[0][1].plot(c["signed"], c["reward_mean"], **kw)
            for d, r in c.iterrows():
                ax.annotate(f"{d:g}", (r["off_support_mean"], r["reward_mean"]), fontsize=6, alpha=0.7,
                            xytext=(3, 2), textcoords="offset points")
                rows.append([den, method, d, f"{r['reward_mean']:.4f}", f"{r['off_support_mean']:.3g}"]
                            + ([f"{r['signed']:+.3g}"] if has_signed else []))
        ax.set_xscale("log")
        ax.set_xlabel("off-support error of the final round ↓")
        ax.set_title(f"{task} / {reward}: one point per delta (labels)")
        if has_signed:
            axes[0][1].axvline(0, color="k", lw=0.6)
            axes[0][1].set_xscale("symlog", linthresh=1e-2)
            axes[0][1].set_xlabel("signed ‖x‖ − 1 of the final round (> 0: outside the sphere)")
            axes[0][1].set_title("signed distance (same runs)")
        for a in axes[0]:
            a.set_ylabel("final batch-mean reward ↑")
            a.grid(alpha=0.3)
            a.legend(fontsize=8)
        p = _save(fig, out / f"{task}_{reward}_ggdm_pareto.png")
        items.append((f"{task} / {reward}: reward vs off-support across delta", p))
        items.append((f"{task} / {reward}: final round per delta",
                      tabulate(rows, headers=["denoiser", "method", "delta", "reward ↑", "off-support ↓"]
                               + (["signed ‖x‖ − 1"] if has_signed else []), tablefmt="github")))
    return items


@figure("ggdm-fixed-point")
def fixed_point(df: pd.DataFrame, out: Path):
    """Second-half mean reward of oracle look-ahead subspace/f1 runs vs the noise-free f* = 10 - (3 - s*)^2 and
    the stochastic plateau of chains with fresh per-round noise (bench/fixed_point.py, theta2, DDPM)."""
    from tasks import get_task

    rows = []
    ok = _complete(df)
    sel = ok[(ok["task"] == "subspace") & (ok["denoiser"] == "oracle") & (ok["method"] == "look-ahead")
             & ok["reward_fn"].str.startswith("f1")]
    for run_id, g in sel.groupby("run_id"):
        R = int(g["round"].max())
        if R < 20:
            continue
        h = g["hparams"].iloc[0]
        task = get_task("subspace")
        theta = task.theta["theta2" if g["reward_fn"].iloc[0].endswith("theta2") else "theta1"]
        a2 = float((task.P @ theta).norm() ** 2)
        lam = h["sigma"] ** 2 / (h.get("beta_coef", 1.0) * h["delta"])
        s_star = 6 * a2 / (2 * a2 + lam)
        f_star = 10 - (3 - s_star) ** 2
        late = g[g["round"] > R // 2]["reward_mean"].to_numpy()
        nb = min(10, len(late))  # batch means: rounds are autocorrelated (lag 1 ~ 0.93), so no per-round SE
        se = np.std([b.mean() for b in np.array_split(late, nb)], ddof=1) / nb ** 0.5 if nb > 1 else float("nan")
        stoch = "-"
        spec = (g["spec"].iloc[0] if "spec" in g else None) or {}
        if (h.get("beta") is None and h.get("beta_coef", 1.0) == 1.0 and g["reward_fn"].iloc[0] == "f1-theta2"
                and spec.get("sampler", "ddpm") == "ddpm" and spec.get("noise", "fresh") == "fresh"):
            law = stochastic.sampler_law(a2, h["delta"], h["sigma"], T=int(spec.get("T", 200)),
                                          steps=spec.get("steps"))
            stoch = f"{stochastic.plateau_grid(law)['reward']:.3f}"
        rows.append([g["reward_fn"].iloc[0], h["delta"], R, f"{lam:.4g}", f"{f_star:.3f}", stoch,
                     f"{late.mean():.3f} ± {se:.3f}", f"{g['off_support_mean'].max():.2e}", f"{g['wall_s'].max():.0f}"])
    if not rows:
        return []
    table = tabulate(rows, headers=["reward", "delta", "rounds", "lambda = sigma²/delta", "noise-free f*",
                                    "stochastic prediction (bench/fixed_point.py)",
                                    "measured (mean of rounds > R/2 ± batch-means SE)", "max off-support (all rounds)",
                                    "wall s"], tablefmt="github")
    return [("Algorithm 1 fixed point (oracle look-ahead)", table)]
