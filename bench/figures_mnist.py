"""Report figures of the 28x28 MNIST task (issue 16), for the fair-comparison suite ``bench suite mnist``.

- ``mnist-table``: per reward, one row per reported configuration (final round, mean over report seeds): guider
  reward, held-out reward (and class accuracies for ``class-K``), FID against the test set (for ``class-K``: its
  class-K test images too) beside the floor at the same n, off-support, NFE-eq per returned sample; then the
  hacking view of the digits report (``figures_digits.hacking_rows`` on the per-configuration means over report
  seeds): guider and held-out gain over unguided, their ratio with a delta-method interval where the guider gain is
  significant, next to the reference ratio of real test images selected by the guider (issue 12, ``hack_ref``).
- ``mnist-grid``: PNG grids of the final samples of every reported configuration (first report seed), one row each.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from .atomic import savefig
from .figures import figure, pyplot
from .figures_digits import HACK_NOTE, hacking_rows, sample_dirs, sample_path
from .report_tables import final_rows

N_GRID, C = 16, 2.0  # samples per grid row; NFE-eq = NFE + C * VJP
KEYS = ("heldout_reward", "heldout_acc", "guide_acc", "fid", "fid_floor", "recall", "class_fid", "class_fid_floor",
        "class_recall", "hack_ref", "hack_ref_lo", "hack_ref_hi", "heldout_reward_se", "guide_heldout_cov")


def _final(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "status" not in df:
        return df.iloc[0:0]
    fin = final_rows(df[df["task"].astype(str) == "mnist"])
    if fin.empty:
        return fin
    fin = fin.copy()
    proto = fin["protocol"].where(fin["protocol"] == "iterative", "[" + fin["protocol"].astype(str) + "]")
    fin["label"] = (fin["method"] + " " + fin["params"].fillna("").astype(str) + " " +
                    proto.where(proto != "iterative", "")).str.replace(r"\s+", " ", regex=True).str.strip()
    m = pd.DataFrame(list(fin["metrics"].map(lambda d: d or {})), index=fin.index)
    for k in KEYS:
        fin[k] = m[k] if k in m else math.nan
    fin["nfe_eq"] = fin["nfe"] + C * fin["vjp"]  # per returned sample, every round of the run
    return fin


def _by_config(fin: pd.DataFrame) -> pd.DataFrame:
    cols = ["reward_mean", "reward_se", "off_support_mean", *KEYS, "nfe_eq"]
    g = fin.groupby(["reward_fn", "label", "method"], sort=True)
    out = g[cols].mean().reset_index()
    out["seeds"] = g.size().values
    out["run_id"] = g["run_id"].first().values
    # the mean over n independent seeds: SE = sqrt(sum SE_i^2) / n, covariance of the means = sum cov_i / n^2
    for k in ("reward_se", "heldout_reward_se"):
        out[k] = g[k].apply(lambda s: float(np.sqrt((s ** 2).sum())) / len(s)).values
    out["guide_heldout_cov"] = g["guide_heldout_cov"].apply(lambda s: float(s.sum()) / len(s) ** 2).values
    return out


@figure("mnist-table")
def mnist_table(df: pd.DataFrame, out: Path):
    fin = _final(df)
    if fin.empty:
        return [("mnist", "_no mnist records_")]
    cfg = _by_config(fin)
    items = []
    for rw, g in cfg.groupby("reward_fn", sort=False):
        cls = str(rw).startswith("class-")
        g = g.sort_values("reward_mean", ascending=False)
        k = rw.split("-")[1] if cls else ""
        cols = ["label", "reward_mean", "heldout_reward"] + (["guide_acc", "heldout_acc", "class_fid",
                                                              "class_fid_floor", "class_recall"] if cls else []) + \
            ["fid", "fid_floor", "off_support_mean"] + ([] if cls else ["recall"]) + ["nfe_eq", "seeds"]
        names = ["method params [protocol]", "guider reward ↑", "held-out reward ↑"] + \
            (["guider acc ↑", "held-out acc ↑", f"FID vs test {k}s ↓", f"floor (real {k}s)", "recall ↑"]
             if cls else []) + ["FID vs test ↓", "floor (real)", "off-support ↓"] + ([] if cls else ["recall ↑"]) + \
            ["NFE-eq / sample", "seeds"]
        t = g[cols].copy()
        t.columns = names
        items.append((f"mnist / {rw}: final round, mean over report seeds",
                      tabulate(t, headers="keys", tablefmt="github", showindex=False, floatfmt=".3g") + "\n"))
        base = g[g["method"] == "unguided"]
        if base.empty:
            continue
        rows = hacking_rows(g)  # the digits report's rows: ratio with its delta-method interval vs the reference
        by_label = {r.label: r for r in g.itertuples()}
        for row in rows:
            r = by_label[row["method [protocol]"]]
            row.update({"FID": f"{r.class_fid if cls else r.fid:.3g}", "off-support": f"{r.off_support_mean:.3g}"})
            del row["reward"]
        if rows:
            items.append((f"mnist / {rw}: reward hacking (gain over unguided, mean over report seeds)",
                          HACK_NOTE + tabulate(pd.DataFrame(rows), headers="keys", tablefmt="github",
                                               showindex=False) + "\n"))
    return items


@figure("mnist-grid")
def mnist_grid(df: pd.DataFrame, out: Path):
    plt = pyplot()
    import torch

    fin = _final(df)
    dirs = sample_dirs(df, out)
    if fin.empty or not dirs:
        return [("mnist samples", "_no saved samples in samples/ beside the records (suite save_samples)_")]
    items = []
    for rw, g in _by_config(fin).groupby("reward_fn", sort=False):
        g = g.sort_values("reward_mean", ascending=False)
        rows = [(r, sample_path(dirs, r.run_id)) for r in g.itertuples()]
        rows = [(r, p) for r, p in rows if p is not None]
        if not rows:
            continue
        fig, axes = plt.subplots(len(rows), 1, figsize=(N_GRID * 0.6 + 0.2, len(rows) * 0.85 + 0.4), squeeze=False)
        for ax, (r, path) in zip(axes[:, 0], rows):
            x = torch.load(path, map_location="cpu", weights_only=True)[:N_GRID].float().clamp(-1, 1)
            strip = torch.cat([torch.nn.functional.pad(img[0], (1, 1, 1, 1), value=-1.0) for img in x], 1)
            ax.imshow(strip.numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            fid = r.class_fid if str(rw).startswith("class-") else r.fid
            ax.set_title(f"{r.label}: r={r.reward_mean:.2f}, held-out={r.heldout_reward:.2f}, FID={fid:.2f}",
                         fontsize=7, loc="left")
        fig.tight_layout()
        path = Path(out) / f"mnist_grid_{rw}.png"
        savefig(fig, path)
        items.append((f"final samples, mnist / {rw}", path))
    return items or [("mnist samples", "_no saved samples match these runs_")]
