"""Report figures of the image reward-tuning task (issue 7; GGDM image experiment, Guo et al. 2024 §6, on digits).

- ``digits-table``: per reward, one row per run (final round): guider reward, the held-out evaluator's reward
  (and class accuracy for ``class-K``), the guider-vs-held-out gap, FID / KID / 1 - precision / recall against the
  test set (``class-K``: against the test images of class K, the all-class FID beside), the k-NN off-support
  error, and cost; plus the unguided model's FID and the train-vs-test floors. Then the reward-hacking table:
  held-out gain / guider gain over the unguided run with a delta-method 95 % interval, shown only where the guider
  gain is significant (z > 2), beside the same ratio for real test images selected by the guider (``hack_ref``,
  bootstrap interval; tasks/digits.py): a run whose interval lies below the reference's is hacking the guider.
- ``digits-noise``: Algorithm 1 with fresh vs reused per-round noise (issue 12): reward per round of the naive
  and look-ahead runs of each reward, table and plot.
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
CLASS_KEYS = tuple(f"class_{k}" for k in ("fid", "kid", "one_minus_precision", "recall", "fid_floor",
                                          "precision_floor", "recall_floor"))
Z_SIGNIFICANT = 2.0  # guider gain / its SE above which a hacking ratio is reported


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
              "fid_floor", "heldout_maxprob", "heldout_reward_se", "guide_heldout_cov", "hack_ref", "hack_ref_lo",
              "hack_ref_hi") + CLASS_KEYS:
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
        cls = str(rw).startswith("class-") and g["class_fid"].notna().any()
        set_cols = (["class_fid", "class_one_minus_precision", "class_recall", "fid"] if cls else
                    ["fid", "kid", "one_minus_precision", "recall"])
        set_names = ([f"FID vs test {rw[6:]}s ↓", "1 - precision ↓", "recall ↑", "FID vs all test"] if cls else
                     ["FID ↓", "KID ↓", "1 - precision ↓", "recall ↑"])
        cols = ["label", "reward_mean", "heldout_reward", "gap"] + (["guide_acc", "heldout_acc"] if cls else []) + \
            set_cols + ["off_support_mean", "nfe", "vjp", "wall_s"]
        names = ["method [protocol]", "guider reward ↑", "held-out reward ↑", "gap ↓"] + \
            (["guider acc ↑", "held-out acc ↑"] if cls else []) + set_names + ["off-support ↓", "NFE", "VJP", "time s"]
        t = g[cols].copy()
        t.columns = names
        note = ""
        if cls:
            fl = g[["class_fid_floor", "class_precision_floor", "class_recall_floor"]].dropna()
            if not fl.empty:
                note = (f"FID / precision / recall against the {rw[6:]}s of the test set (the target of {rw}); "
                        f"floor, real train {rw[6:]}s vs test {rw[6:]}s: FID {fl.iloc[0, 0]:.3g}, precision "
                        f"{fl.iloc[0, 1]:.3g}, recall {fl.iloc[0, 2]:.3g}.\n\n")
        items.append((f"digits / {rw}", note + tabulate(t, headers="keys", tablefmt="github", showindex=False,
                                                          floatfmt=".3g") + "\n"))
    rows = hacking_rows(fin)
    if rows:
        items.append(("Reward hacking: held-out gain / guider gain over the unguided run, against real images "
                      "selected by the guider", HACK_NOTE + tabulate(pd.DataFrame(rows), headers="keys",
                                                                      tablefmt="github", showindex=False) + "\n"))
    return items


HACK_NOTE = (
    "Guider gain = guider reward − the unguided run's (z = gain / SE); ratio = held-out gain / guider gain with a "
    "delta-method 95 % interval (the run and the unguided batch taken as independent: conservative), shown only "
    f"where z > {Z_SIGNIFICANT:g}. Reference: the same ratio for real images, the top 10 % of the test set by "
    "guider reward against the whole test set (95 % bootstrap interval over test images): two networks never "
    "agree exactly, so a run without hacking sits near it, not at 1. Below: the run's interval lies under the "
    "reference's.\n\n")


def _f(v, fmt=".3g"):
    return "" if v is None or v != v else format(v, fmt)


def hacking_rows(fin: pd.DataFrame) -> list[dict]:
    """One row per guided run: guider gain (z), held-out gain, ratio with its 95 % interval (blank where the
    guider gain is not significant), the real-image reference and whether the run lies below it."""
    base = fin[fin["method"] == "unguided"].groupby("reward_fn").first()
    rows = []
    for r in fin[fin["method"] != "unguided"].itertuples():
        if r.reward_fn not in base.index:
            continue
        b = base.loc[r.reward_fn]
        d_g, d_h = r.reward_mean - b["reward_mean"], r.heldout_reward - b["heldout_reward"]
        var_g = r.reward_se ** 2 + b["reward_se"] ** 2
        var_h = r.heldout_reward_se ** 2 + b["heldout_reward_se"] ** 2
        cov = r.guide_heldout_cov + b["guide_heldout_cov"]
        z = d_g / var_g ** 0.5 if var_g > 0 else float("nan")
        row = {"reward": r.reward_fn, "method [protocol]": r.label, "guider gain (z)": f"{d_g:.3g} ({z:.1f})",
               "held-out gain": _f(d_h), "ratio [95 %]": "", "reference [95 %]": "", "below": ""}
        ref = (r.hack_ref, r.hack_ref_lo, r.hack_ref_hi)
        if ref[0] == ref[0]:
            row["reference [95 %]"] = f"{ref[0]:.2f} [{ref[1]:.2f}, {ref[2]:.2f}]"
        if z > Z_SIGNIFICANT and var_h == var_h and cov == cov:
            R = d_h / d_g
            se = max(var_h - 2 * R * cov + R * R * var_g, 0.0) ** 0.5 / abs(d_g)
            lo, hi = R - 1.96 * se, R + 1.96 * se
            row["ratio [95 %]"] = f"{R:.2f} [{lo:.2f}, {hi:.2f}]"
            if ref[0] == ref[0]:
                row["below"] = "yes" if hi < ref[1] else "no"
        rows.append(row)
    return rows


def sample_dirs(df: pd.DataFrame, out: Path) -> list[Path]:
    """Where saved samples may be, as absolute paths (never the working directory): ``samples/`` beside the
    records (``df.attrs["records_dir"]``, set by ``bench report``), then under the report directory."""
    cands = [Path(d) / "samples" for d in (df.attrs.get("records_dir"),) if d] + [Path(out).resolve() / "samples"]
    return [d for i, d in enumerate(cands) if d.is_dir() and d not in cands[:i]]


def sample_path(dirs: list[Path], run_id: str) -> Path | None:
    """The saved sample tensor of ``run_id`` (``<run_id>.pt``) in the first of ``dirs`` that has it, else None."""
    return next((d / f"{run_id}.pt" for d in dirs if (d / f"{run_id}.pt").exists()), None)


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
        found = ((r, sample_path(dirs, r.run_id)) for r in g.itertuples())
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
            fid = (f"FID vs test {rw[6:]}s={r.class_fid:.2f}" if r.class_fid == r.class_fid else f"FID={r.fid:.2f}")
            ax.set_title(f"{label}: r={r.reward_mean:.2f}, held-out={r.heldout_reward:.2f}, {fid}",
                         fontsize=7, loc="left")
        fig.tight_layout()
        path = Path(out) / f"digits_grid_{rw}.png"
        savefig(fig, path)
        items.append((f"final samples, digits / {rw}", path))
    return items or [("digits samples", "_no saved samples match these runs_")]


@figure("digits-noise")
def digits_noise(df: pd.DataFrame, out: Path):
    """Algorithm 1 on digits with fresh vs reused per-round noise: naive and look-ahead, reward per round."""
    if df.empty or "protocol" not in df:
        return []
    d = df[df["task"].astype(str).str.startswith("digits") & df["protocol"].isin(["alg1", "alg1-reuse"])
           & df["method"].isin(["naive", "look-ahead"])]
    fin = _final(d)
    if fin.empty or not (fin["protocol"] == "alg1-reuse").any():
        return []
    plt = pyplot()
    items = []
    d = d[d["run_id"].isin(fin["run_id"])]
    for rw, g in d.groupby("reward_fn", sort=False):
        R = int(g["round"].max())
        rows, fig = [], None
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for (run_id, proto), h in g.sort_values(["method", "protocol"]).groupby(["run_id", "protocol"], sort=False):
            h = h.sort_values("round")
            f = fin[fin["run_id"] == run_id].iloc[0]
            noise = "reused" if proto == "alg1-reuse" else "fresh"
            row = {"method": f"{f['method']} {f['params']}".strip(), "noise": noise}
            row.update({f"round {int(k)}": f"{m:.3g} ± {s:.2g}" for k, m, s in
                        zip(h["round"], h["reward_mean"], h["reward_se"])})
            row["held-out (final)"] = _f(f["heldout_reward"])
            if f.get("class_fid") == f.get("class_fid"):
                row["FID vs class (final)"] = _f(f["class_fid"])
            rows.append(row)
            ax.errorbar(h["round"], h["reward_mean"], yerr=h["reward_se"], capsize=2, marker="o", ms=3,
                        ls="-" if noise == "fresh" else "--", label=f"{row['method']}, {noise} noise")
        ax.set_xlabel("Algorithm 1 round (0: unguided)")
        ax.set_ylabel("guider reward (batch mean ± SE) ↑")
        ax.set_xticks(range(R + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"digits / {rw}: fresh vs reused noise per round", fontsize=9)
        fig.tight_layout()
        path = Path(out) / f"digits_noise_{rw}.png"
        savefig(fig, path)
        items.append((f"digits / {rw}: Algorithm 1 with fresh vs reused noise",
                      tabulate(pd.DataFrame(rows), headers="keys", tablefmt="github", showindex=False) + "\n"))
        items.append((f"digits / {rw}: reward per round, fresh vs reused noise", path))
    return items
