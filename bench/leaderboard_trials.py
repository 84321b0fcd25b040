"""Tuning outputs of bench/tune.py: every trial in ``trials.csv`` and best-so-far-vs-trials in ``tuning.png``."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np


def _select(ts: list[dict]) -> dict:
    from .tune import _select as select

    return select(ts)


def spread(specs: list, by_run: dict) -> dict:
    """Standard errors of a trial's mean reward and off-support: every returned sample of its final rounds over
    its tuning seeds pooled (the error bars of pareto.png). Reads only reward and off-support, never metrics."""
    from .leaderboard_stats import per_sample

    r, o = [], []
    for s in specs:
        recs = [x for x in by_run.get(s.run_id, []) if x.get("status") == "ok" and x.get("round") is not None]
        if recs:
            last = max(recs, key=lambda x: x["round"])
            r += per_sample(last, "reward")
            o += per_sample(last, "off_support")

    def se(v):
        v = np.asarray(v, dtype=np.float64)
        return float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 and np.isfinite(v).all() else math.nan
    return {"score_se": se(r), "off_se": se(o)}


def write_trials(out: Path, trials: dict) -> None:
    from .atomic import write_text

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", "reward", "denoiser", "network_seed", "method", "trial", "stage", "params", "reward_mean",
                "reward_se", "off_support_mean", "off_support_se", "off_support_limit", "feasible", "best_so_far",
                "selected"])
    for (g, m), ts in trials.items():
        best, sel = -math.inf, _select(ts)
        for i, t in enumerate(ts, 1):
            if t["feasible"]:
                best = max(best, t["score"])
            w.writerow([*g, m, i, t["stage"], json.dumps(t["params"], sort_keys=True), f"{t['score']:.6g}",
                        f"{t.get('score_se', math.nan):.6g}", f"{t['off']:.6g}", f"{t.get('off_se', math.nan):.6g}",
                        f"{t['limit']:.6g}", t["feasible"], f"{best:.6g}", t is sel])
    write_text(out / "trials.csv", buf.getvalue())


def plot_tuning(out: Path, trials: dict) -> None:
    """Best feasible mean reward so far against trials, one panel per (task, reward, denoiser), one line per method."""
    from .atomic import savefig
    from .figures import pyplot

    plt = pyplot()
    groups = sorted({g for g, _ in trials})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    names = sorted({m for _, m in trials if m != "unguided"})
    for ax, g in zip(axes[0], groups):
        for (gg, m), ts in sorted(trials.items()):
            if gg != g or m == "unguided":
                continue
            i = names.index(m)
            best, ys = -math.inf, []
            for t in ts:
                best = max(best, t["score"]) if t["feasible"] else best
                ys.append(best if math.isfinite(best) else math.nan)
            ax.plot(range(1, len(ys) + 1), ys, marker="os^v"[i % 4], ms=3, label=m, color=plt.cm.tab20(i % 20),
                    ls="-" if i < 10 else "--")
        ax.set_title("/".join(str(x) for x in g[:3]), fontsize=9)
        ax.set_xlabel("trials")
        ax.set_ylabel("best feasible mean reward")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    savefig(fig, out / "tuning.png")
    plt.close(fig)
