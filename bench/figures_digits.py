"""Report figures of the image reward-tuning task (issue 7; GGDM image experiment, Guo et al. 2024 §6, on digits).

- ``digits-table``: per reward, one row per run (final round): guider reward, the held-out evaluator's reward
  (and class accuracy for ``class-K``), the guider-vs-held-out gap, FID / KID / 1 - precision / recall against the
  test set, the k-NN off-support error, and cost; plus the unguided model's FID and the train-vs-test floor.
- ``digits-grid``: PNG grids of the final samples of every run, one row per run (needs the samples saved by the
  runner: RunSpec ``save_samples``, which a suite resolves against its --out; read from
  ``<records dir>/samples/<run_id>.pt``, or ``<report dir>/samples/``).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .atomic import savefig
from .figures import figure, pyplot
from .report_tables import final_rows

N_GRID = 16  # samples shown per run


def _label(r) -> str:
    proto = "" if r.protocol == "iterative" else f" [{r.protocol}]"
    return f"{r.method}{(' ' + r.params) if r.params else ''}{proto}"


def _final(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "status" not in df:
        return df.iloc[0:0]
    fin = final_rows(df[df["task"].astype(str).str.startswith("digits")])
    if fin.empty:
        return fin
    fin = fin.copy()
    fin["label"] = [_label(r) for r in fin.itertuples()]
    m = pd.DataFrame(list(fin["metrics"].map(lambda d: d or {})), index=fin.index)
    for k in ("heldout_reward", "heldout_acc", "guide_acc", "fid", "kid", "one_minus_precision", "recall",
              "fid_floor", "heldout_maxprob"):
        fin[k] = m[k] if k in m else float("nan")
    fin["gap"] = fin["reward_mean"] - fin["heldout_reward"]
    return fin.sort_values(["reward_fn", "protocol", "method", "label"])


@figure("digits-table")
def digits_table(df: pd.DataFrame, out: Path):
    fin = _final(df)
    if fin.empty:
        return [("digits", "_no digits records_")]
    items = []
    ung = df[(df["status"] == "ok") & (df["method"] == "unguided") & df["round"].notna()]
    if not ung.empty:
        m = pd.DataFrame(list(ung["metrics"].map(lambda d: d or {})), index=ung.index)
        if "fid" in m:
            rows = [f"round {int(r)} batch: FID {f:.3f}, KID {k:.4f}" for r, f, k in
                    sorted(set(zip(ung["round"], m["fid"].round(6), m["kid"].round(6))))]
            items.append(("Unguided model vs the data floor", (
                f"Unguided samples of the U-Net (n = {int(ung['n'].iloc[0])}, two independent noise batches), FID vs "
                f"the 397 test images: {'; '.join(rows)}. Floor: FID of the same number of real train images vs the "
                f"test set = {m['fid_floor'].iloc[0]:.3f}. Features: the held-out evaluator's (another "
                "architecture and seed, trained on a disjoint split), standardised.\n")))
    for rw, g in fin.groupby("reward_fn", sort=False):
        cls = str(rw).startswith("class-")
        cols = ["label", "reward_mean", "heldout_reward", "gap"] + (["guide_acc", "heldout_acc"] if cls else []) + \
            ["fid", "kid", "off_support_mean", "one_minus_precision", "recall", "nfe", "vjp", "wall_s"]
        names = ["method [protocol]", "guider reward ↑", "held-out reward ↑", "gap ↓"] + \
            (["guider acc ↑", "held-out acc ↑"] if cls else []) + \
            ["FID ↓", "KID ↓", "off-support ↓", "1 - precision ↓", "recall ↑", "NFE", "VJP", "time s"]
        t = g[cols].copy()
        t.columns = names
        items.append((f"digits / {rw}", tabulate(t, headers="keys", tablefmt="github", showindex=False,
                                                   floatfmt=".3g") + "\n"))
    hack = fin[fin["method"] != "unguided"].copy()
    if not hack.empty:
        base = fin[fin["method"] == "unguided"].groupby("reward_fn")[["reward_mean", "heldout_reward"]].mean()
        rows = []
        for r in hack.itertuples():
            if r.reward_fn not in base.index:
                continue
            b = base.loc[r.reward_fn]
            d_g, d_h = r.reward_mean - b["reward_mean"], r.heldout_reward - b["heldout_reward"]
            rows.append({"reward": r.reward_fn, "method [protocol]": r.label, "guider gain": d_g,
                         "held-out gain": d_h, "held-out / guider gain": d_h / d_g if d_g > 1e-9 else float("nan"),
                         "FID": r.fid})
        if rows:
            items.append(("Guider vs held-out gain over the unguided run (reward hacking: held-out / guider gain << 1; "
                          "blank where the guider reward did not rise)",
                          tabulate(pd.DataFrame(rows), headers="keys", tablefmt="github", showindex=False,
                                   floatfmt=".3g") + "\n"))
    return items


def sample_dirs(df: pd.DataFrame, out: Path) -> list[Path]:
    """Where saved samples may be, as absolute paths (never the working directory): ``samples/`` beside the
    records (``df.attrs["records_dir"]``, set by ``bench report``), then under the report directory."""
    cands = [Path(d) / "samples" for d in (df.attrs.get("records_dir"),) if d] + [Path(out).resolve() / "samples"]
    return [d for i, d in enumerate(cands) if d.is_dir() and d not in cands[:i]]


@figure("digits-grid")
def digits_grid(df: pd.DataFrame, out: Path):
    plt = pyplot()
    import torch

    fin = _final(df)
    dirs = sample_dirs(df, out)
    if fin.empty or not dirs:
        return [("digits samples", "_no saved samples in samples/ beside the records (run the suite with "
                                   "save_samples)_")]
    items = []
    for rw, g in fin.groupby("reward_fn", sort=False):
        found = ((r, next((d / f"{r.run_id}.pt" for d in dirs if (d / f"{r.run_id}.pt").exists()), None))
                 for r in g.itertuples())
        rows = [(r.label, path, r) for r, path in found if path is not None]
        if not rows:
            continue
        fig, axes = plt.subplots(len(rows), 1, figsize=(N_GRID * 0.55 + 0.2, len(rows) * 0.75 + 0.4), squeeze=False)
        for ax, (label, path, r) in zip(axes[:, 0], rows):
            x = torch.load(path, map_location="cpu", weights_only=True)[:N_GRID].float().clamp(-1, 1)
            strip = torch.cat([torch.nn.functional.pad(img[0], (1, 1, 1, 1), value=-1.0) for img in x], 1)
            ax.imshow(strip.numpy(), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}: r={r.reward_mean:.2f}, held-out={r.heldout_reward:.2f}, FID={r.fid:.2f}",
                         fontsize=7, loc="left")
        fig.tight_layout()
        path = Path(out) / f"digits_grid_{rw}.png"
        savefig(fig, path)
        items.append((f"final samples, digits / {rw}", path))
    return items or [("digits samples", "_no saved samples match these runs_")]
