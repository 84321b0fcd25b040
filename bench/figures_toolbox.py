"""Report figures of the training-free toolbox (issue 5).

``compress``: reward and off-support error vs the fraction of guided steps (Compress Guidance, Dinh, Liu & Xu
2024, arXiv 2408.11194; methods.md §3.11), one line per (method, step policy); the 100 % point is the run with
``policy = "all"``, the dashed line the unguided batch (round 0) of the same seeds.

``toolbox_best``: the best configuration per method as in the report, but chosen only among configurations whose
off-support error stays near the unguided batch (max(2x, +0.05)): on the sphere the plain highest-reward pick
rewards leaving the support (the linear reward grows without bound off the sphere).

``fo_vs_la``: forward-only guidance (Graikos et al., arXiv 2410.18804) against look-ahead (GGDM) measured in
one suite run: reward gain over the unguided round 0 per unit of compute (forward equivalents NFE + 2 VJP,
methods.md §1.3, and wall-clock) and peak memory, as forward-only / look-ahead ratios.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .atomic import savefig
from .figures import figure, pyplot
from .report import final_rows

COMPRESS_METHODS = ("dps", "look-ahead")


def _steps(spec: dict) -> int:
    from methods import Sampler
    from methods.sampling import Schedule

    return len(Sampler(spec.get("sampler", "ddpm"), spec.get("eta", 1.0), spec.get("steps")).grid(
        Schedule(spec.get("T", 200))))


def _policy_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Final rounds of the compress-suite runs with the measured fraction of guided steps."""
    from methods.policy import guided_steps

    fin = final_rows(df)
    fin = fin[fin["method"].isin(COMPRESS_METHODS) & (fin["protocol"] == "one-shot")]
    rows = []
    for r in fin.itertuples():
        h = r.hparams
        pol = h.get("policy", "all")
        n = _steps(r.spec)
        frac = len(guided_steps(pol, n, h["policy_frac"], h["policy_k"], h["policy_lo"], h["policy_hi"])) / n
        variant = f"compress-{h['policy_mode']}" if pol == "compress" else pol
        rows.append({"task": r.task, "reward_fn": r.reward_fn, "denoiser": r.denoiser, "method": r.method,
                     "variant": variant, "frac": frac, "guided": round(frac * n), "steps": n,
                     "reward": r.reward_mean, "reward_se": r.reward_se, "off": r.off_support_mean,
                     "vjp": r.vjp, "run_id": r.run_id})
    return pd.DataFrame(rows)


def _unguided(df: pd.DataFrame, runs) -> tuple[float, float]:
    r0 = df[(df["round"] == 0) & df["run_id"].isin(runs) & (df["status"] == "ok")]
    return float(r0["reward_mean"].mean()), float(r0["off_support_mean"].mean())


@figure("compress")
def compress_figure(df: pd.DataFrame, out: Path):
    plt = pyplot()

    t = _policy_rows(df)
    if t.empty:
        return [("compress", "_no dps / look-ahead one-shot runs_")]
    panels = list(t.groupby(["task", "reward_fn", "denoiser"], sort=False))
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 3.2 * len(panels)), squeeze=False)
    colors = {"dps": "tab:blue", "look-ahead": "tab:red"}
    styles = {"compress-accumulate": "-", "compress-reuse": "-.", "early-stop": "--", "skip": ":"}
    marks = {"compress-accumulate": "o", "compress-reuse": "D", "early-stop": "s", "skip": "^"}
    md = []
    for row, ((task, reward, den), g) in enumerate(panels):
        r_u, o_u = _unguided(df, g["run_id"])
        for method, gm in g.groupby("method", sort=False):
            full = gm[gm["variant"] == "all"]
            for variant in styles:
                gv = pd.concat([gm[gm["variant"] == variant], full]).sort_values("frac")
                if gv.empty or (gv["variant"] == variant).sum() == 0:
                    continue
                gv = gv.groupby("frac", as_index=False)[["reward", "off"]].mean()
                kw = dict(color=colors.get(method), ls=styles[variant], marker=marks[variant], lw=1.3, ms=4,
                          label=f"{method} {variant}")
                axes[row, 0].plot(gv["frac"], gv["reward"], **kw)
                axes[row, 1].plot(gv["frac"], gv["off"], **kw)
        axes[row, 0].axhline(r_u, color="gray", ls="--", lw=1, label="unguided")
        axes[row, 1].axhline(o_u, color="gray", ls="--", lw=1)
        for j, (lab, yl) in enumerate((("reward", "batch-mean reward"), ("off", "off-support error"))):
            ax = axes[row, j]
            ax.set_xscale("log")
            ax.set_xticks([0.1, 0.25, 0.5, 1.0], ["10%", "25%", "50%", "100%"])
            ax.set_xlabel("fraction of steps guided")
            ax.set_ylabel(yl)
            ax.set_title(f"{task} / {reward} / {den}", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 1:
                ax.set_yscale("log" if (g["off"] > 0).all() and o_u > 0 else "symlog")
        piv = g.pivot_table(index=["method", "variant"], columns="guided", values=["reward", "off"], aggfunc="mean")
        cols = sorted(g["guided"].unique(), reverse=True)
        lines = [[m, v] + [f"{piv.loc[(m, v), ('reward', c)]:.3g} ({piv.loc[(m, v), ('off', c)]:.2g})"
                           if ("reward", c) in piv.columns and pd.notna(piv.loc[(m, v), ("reward", c)]) else ""
                           for c in cols] for m, v in piv.index]
        md.append(f"**{task} / {reward} / {den}** (unguided: {r_u:.3g} ({o_u:.2g})); "
                  f"reward (off-support) by number of guided steps of {int(g['steps'].iloc[0])}\n")
        md.append(tabulate(lines, headers=["method", "policy"] + [str(c) for c in cols], tablefmt="github"))
        md.append("")
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    p = Path(out) / "compress.png"
    savefig(fig, p)
    return [("Compressed guidance: reward and off-support vs fraction of guided steps", p),
            ("Compressed guidance: table", "\n".join(md))]


def _on_support(gm: pd.DataFrame, r0: pd.DataFrame) -> pd.DataFrame:
    base_off = r0.loc[r0.index.intersection(gm["run_id"]), "off_support_mean"].mean()
    return gm[gm["off_support_mean"] <= max(2 * base_off, base_off + 0.05)]


@figure("toolbox_best")
def toolbox_best(df: pd.DataFrame, out: Path):
    fin = final_rows(df)
    r0 = df[(df["round"] == 0) & (df["status"] == "ok")].drop_duplicates("run_id").set_index("run_id")
    md = []
    for (task, reward, den, proto), g in fin.groupby(["task", "reward_fn", "denoiser", "protocol"], sort=False):
        rows = []
        for m, gm in g.groupby("method", sort=False):
            on = _on_support(gm, r0)
            pick = on.sort_values("reward_mean").iloc[-1] if len(on) else None
            top = gm.sort_values("reward_mean").iloc[-1]
            rows.append([m, len(gm), len(on), pick.params if pick is not None else "–",
                         f"{pick.reward_mean:.4g} ± {pick.reward_se:.2g}" if pick is not None else "–",
                         f"{pick.off_support_mean:.3g}" if pick is not None else "–",
                         pick.nfe if pick is not None else "–", pick.vjp if pick is not None else "–",
                         f"{top.params}: {top.reward_mean:.4g} ({top.off_support_mean:.3g})"])
        base = r0.loc[r0.index.intersection(g["run_id"])]
        md.append(f"**{task} / {reward} / {den} / {proto}** (unguided round 0: reward {base['reward_mean'].mean():.4g}, "
                  f"off-support {base['off_support_mean'].mean():.3g})\n")
        md.append(tabulate(rows, headers=["method", "configs", "on support", "best on-support config", "reward ↑",
                                          "off-support ↓", "NFE", "VJP", "highest reward regardless (off-support)"],
                           tablefmt="github"))
        md.append("")
    return [("Best configuration per method among on-support configurations", "\n".join(md))]


@figure("fo_vs_la")
def forward_only_vs_lookahead(df: pd.DataFrame, out: Path):
    fin = final_rows(df)
    fin = fin[fin["method"].isin(["forward-only", "look-ahead"]) & (fin["protocol"] == "one-shot")]
    r0 = df[(df["round"] == 0) & (df["status"] == "ok")].drop_duplicates("run_id").set_index("run_id")
    lines = []
    for (task, reward, den, batch), g in fin.groupby(["task", "reward_fn", "denoiser", "n"], sort=False):
        per = {}
        for m, gm in g.groupby("method"):
            on = _on_support(gm, r0)
            if on.empty:
                continue
            r = on.sort_values("reward_mean").iloc[-1]  # best reward among the configurations that stay on support
            base = r0.loc[r.run_id]
            gain = r.reward_mean - base.reward_mean
            fwd = (r.nfe - base.nfe) + 2 * (r.vjp - base.vjp)
            secs = r.wall_s - base.wall_s
            per[m] = dict(gain=gain, fwd=fwd, secs=secs, mem=r.peak_mem_mb, extra=r.peak_mem_mb - base.peak_mem_mb,
                          params=r.params, off=r.off_support_mean,
                          per_fwd=gain / fwd if fwd else float("nan"), per_s=gain / secs if secs > 0 else float("nan"))
        if len(per) < 2:
            continue
        fo, la = per["forward-only"], per["look-ahead"]
        ratio = lambda a, b: f"{a / b:.3g}" if b else "n/a"  # noqa: E731
        lines.append([f"{task} / {reward} / {den}", batch, f"{fo['params']} / {la['params']}",
                      f"{fo['gain']:.3g} / {la['gain']:.3g}", f"{fo['off']:.2g} / {la['off']:.2g}",
                      f"{fo['fwd']} / {la['fwd']}", ratio(fo["per_fwd"], la["per_fwd"]),
                      f"{fo['secs']:.1f} / {la['secs']:.1f}", ratio(fo["per_s"], la["per_s"]),
                      f"{fo['mem']:.1f} / {la['mem']:.1f}", ratio(fo["mem"], la["mem"]),
                      f"{fo['extra']:.1f} / {la['extra']:.1f}"])
    if not lines:
        return [("forward-only vs look-ahead", "_needs forward-only and look-ahead one-shot runs_")]
    md = tabulate(lines, headers=["task / reward / denoiser", "batch", "config fo / la", "reward gain fo / la",
                                  "off-support fo / la", "fwd-equiv. fo / la", "gain per fwd-equiv. fo÷la",
                                  "guided s fo / la", "gain per second fo÷la", "peak MB fo / la", "peak MB fo÷la",
                                  "MB over unguided fo / la"], tablefmt="github")
    note = ("\nGain = final reward minus the unguided round 0 of the same run (same seeds); fwd-equiv. = NFE + 2 VJP "
            "of the guided round (a VJP costs about two forwards, methods.md §1.3); guided s = wall-clock of the "
            "guided round. Per method the best-reward configuration among those whose off-support error stays "
            "within max(2x, +0.05) of the unguided batch. Peak MB = the run's peak increment over its start (CPU: "
            "VmHWM, includes the per-sample noise buffers); 'over unguided' subtracts the peak of round 0, i.e. "
            "what guidance itself adds (the denoiser graph for look-ahead).\n")
    return [("forward-only vs look-ahead: reward per unit compute and peak memory", md + note)]
