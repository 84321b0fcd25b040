"""Figures of the fair comparison (issue 13), written beside leaderboard.md by a tuned suite (bench/tune.py).

- ``pareto.png`` (from ``trials.csv``): per method, its tuning trials as reward vs off-support with ±1.96 SE
  error bars (every returned sample of the trial's tuning seeds pooled) and the Pareto front of the trials as a
  line; one row per method, one column per (task, reward, denoiser), oracle and trained side by side, with the
  unguided baseline and the off-support limit (each panel has its own axes).
- ``reward_nfe.png`` (from ``leaderboard.csv``): per (task, reward, denoiser), mean reward [95 % CI] of every
  method's report runs against the NFE-eq at which it was read in each budget tier (best-of-n's N joined in one
  curve); flagged rows drawn hollow.

Axes are clipped to robust limits (``robust_limits``: the values within 10 spreads of their median, the spread
being that of the closest 75 %, widened to the reference point and line), so one diverged point does not stretch
them; points outside (and non-finite ones) are drawn on the edge as red triangles pointing out, counted in the
panel. Off-support and NFE-eq axes are logarithmic when positive.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

__all__ = ["robust_limits", "pareto_front", "plot_pareto", "plot_reward_nfe", "write_figures"]

FIGURES = ("pareto.png", "reward_nfe.png")


def robust_limits(values, log: bool = False, k: float = 10.0, anchors=()) -> tuple[float, float] | None:
    """(lo, hi) covering the bulk of ``values``: the values within k·s of their median, s = the largest distance to
    the median among the closest 75 % of them (at least 0.1 |median|, or 0.1 decade on a log axis), widened to
    include ``anchors`` (reference lines and points), padded by 5 %; on a log axis computed on log10 of the
    positive values. Robust with a handful of trials: one diverged trial of four is left out. None when empty."""
    ok = lambda x: x is not None and math.isfinite(x) and (x > 0 or not log)  # noqa: E731
    v = np.asarray([x for x in values if ok(x)], np.float64)
    a = np.asarray([x for x in anchors if ok(x)], np.float64)
    if v.size == 0 and a.size == 0:
        return None
    if log:
        v, a = np.log10(v), np.log10(a)
    lo = hi = None
    if v.size:
        med = np.median(v)
        d = np.sort(np.abs(v - med))
        scale = max(d[math.ceil(0.75 * v.size) - 1], 0.1 if log else 0.1 * abs(med), 1e-12)
        keep = v[np.abs(v - med) <= k * scale]
        lo, hi = keep.min(), keep.max()
    if a.size:
        lo = a.min() if lo is None else min(lo, a.min())
        hi = a.max() if hi is None else max(hi, a.max())
    pad = 0.05 * (hi - lo) if hi > lo else (0.5 if log else max(0.05 * abs(lo), 0.05))
    lo, hi = lo - pad, hi + pad
    return (10 ** lo, 10 ** hi) if log else (float(lo), float(hi))


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (off-support, reward) points no other point beats (lower or equal off-support and higher reward),
    sorted by off-support; non-finite points are left out."""
    pts = sorted((o, r) for o, r in points if math.isfinite(o) and math.isfinite(r))
    front, best = [], -math.inf
    for o, r in pts:
        if r > best:
            front.append((o, r))
            best = r
    return front


def _clip(ax, xs, ys, xlim, ylim, color="red") -> int:
    """Draw the points outside (xlim, ylim) or non-finite on the nearest edge; returns how many."""
    n = 0
    for x, y in zip(xs, ys):
        fx = x if math.isfinite(x) else math.inf
        fy = y if math.isfinite(y) else -math.inf
        cx = min(max(fx, xlim[0]), xlim[1]) if xlim else fx
        cy = min(max(fy, ylim[0]), ylim[1]) if ylim else fy
        if (cx, cy) != (fx, fy) and math.isfinite(cx) and math.isfinite(cy):
            mk = ">" if fx > cx else "<" if fx < cx else "^" if fy > cy else "v"
            ax.plot([cx], [cy], marker=mk, color=color, ms=7, ls="none", clip_on=False, zorder=5)
            n += 1
    return n


def _f(x: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _groups(rows: list[dict]) -> list[tuple]:
    """(task, reward, denoiser, network_seed) columns: a task's denoisers side by side."""
    return sorted({(r["task"], r["reward"], r["denoiser"], r["network_seed"]) for r in rows})


def _title(g: tuple) -> str:
    return "/".join(g[:3]) + (f" (net {g[3]})" if str(g[3]) not in ("0", "") else "")


def plot_pareto(out: Path) -> Path | None:
    """pareto.png from OUT/trials.csv (None when there is no trial to plot)."""
    from .atomic import savefig
    from .figures import pyplot

    out = Path(out)
    rows = list(csv.DictReader(open(out / "trials.csv", encoding="utf-8")))
    methods = sorted({r["method"] for r in rows if r["method"] != "unguided"})
    groups = _groups(rows)
    if not methods or not groups:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(methods), len(groups), figsize=(3.3 * len(groups), 2.5 * len(methods)),
                             squeeze=False)
    for j, g in enumerate(groups):
        col = [r for r in rows if (r["task"], r["reward"], r["denoiser"], r["network_seed"]) == g]
        offs = [_f(r["off_support_mean"]) for r in col]
        log = all(o > 0 for o in offs if math.isfinite(o)) and any(math.isfinite(o) for o in offs)
        base = next((r for r in col if r["method"] == "unguided"), None)
        bx, by = (_f(base["off_support_mean"]), _f(base["reward_mean"])) if base else (math.nan, math.nan)
        limit = _f(col[0]["off_support_limit"]) if col else math.nan
        for i, m in enumerate(methods):
            ax = axes[i][j]
            ts = [r for r in col if r["method"] == m]
            x, y = [_f(t["off_support_mean"]) for t in ts], [_f(t["reward_mean"]) for t in ts]
            xlim, ylim = robust_limits(x, log=log, anchors=(bx, limit)), robust_limits(y, anchors=(by,))
            xe, ye = [1.96 * _f(t.get("off_support_se")) for t in ts], [1.96 * _f(t.get("reward_se")) for t in ts]
            ok = [k for k in range(len(ts)) if math.isfinite(x[k]) and math.isfinite(y[k])]
            if ok:
                ax.errorbar([x[k] for k in ok], [y[k] for k in ok], xerr=[_nz(xe[k]) for k in ok],
                            yerr=[_nz(ye[k]) for k in ok], fmt="o", ms=3.5, color=plt.cm.tab10(i % 10),
                            ecolor="0.5", elinewidth=0.8, capsize=2)
                front = pareto_front([(x[k], y[k]) for k in ok])
                ax.plot([p[0] for p in front], [p[1] for p in front], "-", color=plt.cm.tab10(i % 10), lw=1.2)
                sel = [k for k in ok if ts[k]["selected"] == "True"]
                ax.plot([x[k] for k in sel], [y[k] for k in sel], "s", mfc="none", mec="k", ms=8, label="selected")
            if base is not None:
                ax.plot([bx], [by], "*", color="k", ms=8, label="unguided")
            if math.isfinite(limit):
                ax.axvline(limit, color="0.4", ls="--", lw=0.8)
            if log:
                ax.set_xscale("log")
            if xlim:
                ax.set_xlim(*xlim)
            if ylim:
                ax.set_ylim(*ylim)
            n_out = _clip(ax, x, y, xlim, ylim)
            ax.set_title(f"{m} · {_title(g)}" + (f" ({n_out} outside)" if n_out else ""), fontsize=7)
            ax.tick_params(labelsize=6)
            if i == len(methods) - 1:
                ax.set_xlabel("off-support (mean; dashed: limit)", fontsize=7)
            if j == 0:
                ax.set_ylabel("reward (mean ± 1.96 SE)", fontsize=7)
    fig.tight_layout()
    return savefig(fig, out / "pareto.png")


def _nz(v: float) -> float:
    return v if math.isfinite(v) else 0.0


def _base_method(label: str) -> str:
    return "best-of-n" if label.startswith("best-of-n") else label


def plot_reward_nfe(out: Path) -> Path | None:
    """reward_nfe.png from OUT/leaderboard.csv (None when the leaderboard is empty)."""
    from .atomic import savefig
    from .figures import pyplot

    out = Path(out)
    rows = list(csv.DictReader(open(out / "leaderboard.csv", encoding="utf-8")))
    groups = _groups(rows)
    if not groups:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups), 3.6), squeeze=False)
    names = sorted({_base_method(r["method"]) for r in rows})
    for ax, g in zip(axes[0], groups):
        col = [r for r in rows if (r["task"], r["reward"], r["denoiser"], r["network_seed"]) == g]
        ylim = robust_limits([_f(r["reward_mean"]) for r in col])
        for i, m in enumerate(names):
            pts = {}
            for r in col:  # one point per (NFE-eq, row): a row read at the same round in several tiers once
                if _base_method(r["method"]) == m:
                    pts[(_f(r["nfe_eq"]), r["method"])] = r
            pts = sorted(pts.values(), key=lambda r: _f(r["nfe_eq"]))
            if not pts:
                continue
            x, y = [_f(r["nfe_eq"]) for r in pts], [_f(r["reward_mean"]) for r in pts]
            lo = [max(0.0, y[k] - _f(r["reward_lo"])) for k, r in enumerate(pts)]
            hi = [max(0.0, _f(r["reward_hi"]) - y[k]) for k, r in enumerate(pts)]
            colour = plt.cm.tab10(i % 10)
            ok = [k for k in range(len(pts)) if math.isfinite(x[k]) and math.isfinite(y[k])]
            ax.plot([x[k] for k in ok], [y[k] for k in ok], "-" if i < 10 else "--", color=colour, lw=1, label=m)
            for k in ok:
                flagged = bool(pts[k]["flags"])
                ax.errorbar([x[k]], [y[k]], yerr=[[_nz(lo[k])], [_nz(hi[k])]], fmt="os^vD"[i // 10 % 5], ms=4,
                            color=colour,
                            mfc="none" if flagged else colour, capsize=2, elinewidth=0.8)
            n_out = _clip(ax, x, y, None, ylim)
            if n_out:
                ax.text(0.01, 0.01, f"{n_out} point(s) outside", transform=ax.transAxes, fontsize=6, color="red")
        if ylim:
            ax.set_ylim(*ylim)
        ax.set_xscale("log")
        ax.set_title(_title(g), fontsize=9)
        ax.set_xlabel("NFE-eq per returned sample (F + c·V)")
        ax.set_ylabel("reward, mean [95 % CI]; hollow: flagged")
    axes[0][-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    return savefig(fig, out / "reward_nfe.png")


def write_figures(out: Path) -> list[Path]:
    """Both figures of a tuned suite's out dir (those whose input exists)."""
    out = Path(out)
    done = []
    if (out / "trials.csv").exists():
        done.append(plot_pareto(out))
    if (out / "leaderboard.csv").exists():
        done.append(plot_reward_nfe(out))
    return [p for p in done if p is not None]
