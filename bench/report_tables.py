"""Report tables, pure functions of records (DESIGN.md §5): mean ± SE per configuration, the best
configuration per method, and the cost table with the time ratio to the unguided run in the same record set.

Compute is counted in NFE-equivalents: nfe + 2 * vjp (a VJP through the denoiser costs about two forwards).
"""
from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

GROUP = ["task", "reward_fn", "denoiser", "method", "params", "protocol"]
NUM = (int, float)
# what a report needs of every record besides records.REQUIRED (must be present), and fields checked when present
REPORT_REQUIRE = {k: (str, False) for k in ("task", "reward_fn", "denoiser", "method", "protocol")} | \
    {"seed": (int, False)}
REPORT_TYPED = {"hparams": (dict, True), "spec": (dict, True), "metrics": (dict, True), "error": (str, True),
                "n": (int, True), "nfe": (int, True), "vjp": (int, True), "reward_calls": (int, True)} | \
    {k: (NUM, True) for k in ("reward_se", "reward_topk", "off_support_mean", "off_support_se", "wall_s",
                              "peak_mem_mb")}
# the sampling setting a time ratio is taken within (besides task/reward/denoiser/protocol)
SETTING = ["rounds_spec", "batch_spec", "T_spec", "sampler_spec", "steps_spec", "device"]


def short_params(h: dict | None, spec: dict | None = None) -> str:
    """Compact 'k=v' of the hyperparameters that differ from the method's defaults."""
    if not h:
        return ""
    try:
        from methods import get_method

        method = (spec or {}).get("method")
        defaults = {n: d for n, d, _ in get_method(method).params()} if method else {}
    except Exception:
        defaults = {}
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in h.items()
             if k not in defaults or defaults[k] != v]
    return " ".join(parts)


def planned_round(spec) -> int | None:
    """The final round a run plans (``spec["rounds"]``), or None when the record carries no usable spec."""
    r = spec.get("rounds") if isinstance(spec, dict) else None
    return r if isinstance(r, int) and not isinstance(r, bool) else None


def incomplete_runs(records: list[dict]) -> dict[str, tuple[int | None, int]]:
    """run_id -> (last ok round present, planned final round) for every run whose planned final round is missing
    (a killed writer, a truncated last line) and that has no failure row. A derived status, never written to
    records: reports list such a run as ``incomplete`` instead of showing an earlier round as if it were final."""
    last: dict[str, int | None] = {}
    plan: dict[str, int | None] = {}
    failed = set()
    for r in records:
        rid = r.get("run_id")
        if r.get("status") != "ok":
            failed.add(rid)
            continue
        plan.setdefault(rid, planned_round(r.get("spec")))
        rnd = r.get("round")
        if isinstance(rnd, int) and (last.get(rid) is None or rnd > last[rid]):
            last[rid] = rnd
    return {rid: (last.get(rid), R) for rid, R in plan.items()
            if rid not in failed and R is not None and (last.get(rid) is None or last[rid] < R)}


def frame(records: list[dict]) -> pd.DataFrame:
    """Records as a DataFrame with a readable ``params`` column, the spec's sampling setting and compute, and
    ``incomplete`` (True on every row of a run whose planned final round is missing)."""
    df = pd.DataFrame(records)
    if df.empty:
        return df
    df["incomplete"] = df["run_id"].isin(set(incomplete_runs(records)))
    specs = df["spec"] if "spec" in df else pd.Series([None] * len(df))
    df["params"] = [short_params(h, s) for h, s in zip(df.get("hparams", [None] * len(df)), specs)]
    for k in ("rounds", "batch", "T", "sampler", "steps"):
        df[f"{k}_spec"] = [str((s or {}).get(k)) if isinstance(s, dict) else "?" for s in specs]
    for k in ("nfe", "vjp", "reward_calls", "wall_s", "peak_mem_mb", "reward_mean", "reward_se", "reward_topk",
              "off_support_mean", "off_support_se"):
        if k not in df:
            df[k] = float("nan")
    df["compute"] = df["nfe"] + 2 * df["vjp"]
    df["network_seed"] = df["network_seed"].fillna(0).astype(int) if "network_seed" in df else 0
    # sphere: the signed ||x|| - 1 beside the absolute off-support (|.| hides an outward drift)
    df["signed_off"] = [(m or {}).get("norm_minus_1", float("nan")) if isinstance(m, dict) else float("nan")
                        for m in df.get("metrics", [None] * len(df))]
    return df


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The last round of every run that completed: runs with an error/diverged row are left out (they are
    listed under "Failed runs"), so a failure is never shown with its earlier, unguided rounds, and so are
    incomplete runs (listed under "Incomplete runs"), so an intermediate round is never shown as final."""
    bad = set(df.loc[df["status"] != "ok", "run_id"])
    ok = df[(df["status"] == "ok") & ~df["run_id"].isin(bad)]
    if "incomplete" in ok:
        ok = ok[~ok["incomplete"]]
    if ok.empty:
        return ok
    return ok.sort_values("round").groupby("run_id", as_index=False).tail(1)


def _agg(col: pd.Series, se_col: pd.Series) -> tuple[float, float]:
    """Mean over runs; SE across runs (seeds) when there are several, else the run's own SE."""
    n = len(col)
    if n > 1:
        return float(col.mean()), float(col.std(ddof=1) / math.sqrt(n))
    return float(col.iloc[0]), float(se_col.iloc[0])


def _agg_nets(g: pd.DataFrame, col: str, se_col: str) -> tuple[float, float]:
    """With several network seeds: the mean over networks of each network's mean, SE across networks."""
    if "network_seed" in g and g["network_seed"].nunique() > 1:
        m = g.groupby("network_seed")[col].mean()
        return float(m.mean()), float(m.std(ddof=1) / math.sqrt(len(m)))
    return _agg(g[col], g[se_col])


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, reward, denoiser, method, params, protocol, setting) at the final round; runs of
    several network seeds are aggregated over networks (``nets``), the SE then being across networks."""
    fin = final_rows(df)
    rows = []
    for key, g in fin.groupby(GROUP + SETTING, sort=False, dropna=False):
        r, rse = _agg_nets(g, "reward_mean", "reward_se")
        o, ose = _agg_nets(g, "off_support_mean", "off_support_se")
        signed = g.groupby("network_seed")["signed_off"].mean().mean() if "signed_off" in g else float("nan")
        rows.append({**dict(zip(GROUP + SETTING, key)), "seeds": g["seed"].nunique(),
                     "nets": g["network_seed"].nunique() if "network_seed" in g else 1, "signed_off": signed,
                     "rounds": int(g["round"].max()),
                     "reward": r, "reward_se": rse, "reward_topk": float(g["reward_topk"].mean()),
                     "off_support": o, "off_support_se": ose, "nfe": int(g["nfe"].mean()), "vjp": int(g["vjp"].mean()),
                     "compute": int(g["compute"].mean()), "reward_calls": int(g["reward_calls"].mean()),
                     "wall_s": float(g["wall_s"].mean()), "peak_mem_mb": float(g["peak_mem_mb"].mean())})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["time_ratio"] = time_ratio(table)
        table = table.sort_values(["task", "reward_fn", "denoiser", "reward"], ascending=[True, True, True, False],
                                  kind="stable").reset_index(drop=True)
    return table


def time_ratio(table: pd.DataFrame) -> list[float]:
    """wall_s / wall_s of the unguided configuration with the same task, reward, denoiser, protocol and setting."""
    key = ["task", "reward_fn", "denoiser"] + SETTING  # rounds are in SETTING; iterative methods match too
    ref = {tuple(r[k] for k in key): r["wall_s"] for _, r in table.iterrows() if r["method"] == "unguided"}
    out = []
    for _, r in table.iterrows():
        u = ref.get(tuple(r[k] for k in key))
        out.append(r["wall_s"] / u if u else float("nan"))
    return out


def best_configs(table: pd.DataFrame) -> pd.DataFrame:
    """Per task/reward/denoiser/method/protocol: the hyperparameter setting with the highest final reward."""
    if table.empty:
        return table
    idx = table.groupby(["task", "reward_fn", "denoiser", "method", "protocol"], sort=False)["reward"].idxmax()
    return table.loc[idx.dropna().astype(int)]


def _pm(m: float, se: float, best: bool) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    s = f"{m:.4g} ± {se:.2g}"
    return f"**{s}**" if best else s


def _seeds(r) -> str:
    """Run seeds, and network seeds when there are several (the SE is then across networks)."""
    nets = getattr(r, "nets", 1)
    return f"{r.seeds} × {nets} nets" if nets and nets > 1 else str(r.seeds)


def _signed(r) -> str:
    """' (signed +0.041)' where the task reports the signed ||x|| - 1 (sphere), else ''."""
    v = getattr(r, "signed_off", float("nan"))
    return "" if v is None or math.isnan(v) else f" (signed {v:+.3g})"


def _ratio(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.2f}×"


def _sections(table: pd.DataFrame, rows_fn, headers: list[str], note: str = "") -> str:
    out = []
    for (task, reward), g in table.groupby(["task", "reward_fn"], sort=False):
        out.append(f"### {task} / {reward}\n")
        if note:
            out.append(note + "\n")
        out.append(tabulate([rows_fn(r, g) for r in g.itertuples()], headers=headers, tablefmt="github"))
        out.append("")
    return "\n".join(out)


def markdown_summary(table: pd.DataFrame) -> str:
    """Mean ± SE per configuration; best reward (max) and off-support (min) per task/reward in bold."""
    def row(r, g):
        return [r.denoiser, r.method, r.params, r.protocol, r.rounds, _seeds(r),
                _pm(r.reward, r.reward_se, r.reward == g["reward"].max()),
                _pm(r.off_support, r.off_support_se, r.off_support == g["off_support"].min()) + _signed(r),
                r.nfe, r.vjp, f"{r.wall_s:.2f}", _ratio(r.time_ratio)]
    return _sections(table, row, ["denoiser", "method", "params", "protocol", "rounds", "seeds", "reward ↑",
                                  "off-support ↓", "NFE ↓", "VJP ↓", "wall s ↓", "time / unguided ↓"])


def markdown_best(table: pd.DataFrame) -> str:
    """The best hyperparameter setting of each method (highest final reward), best in bold per denoiser."""
    best = best_configs(table)

    def row(r, g):
        same = g[g["denoiser"] == r.denoiser]
        return [r.denoiser, r.method, r.params or "(defaults)", r.protocol,
                _pm(r.reward, r.reward_se, r.reward == same["reward"].max()),
                _pm(r.off_support, r.off_support_se, r.off_support == same["off_support"].min()) + _signed(r),
                r.compute, _ratio(r.time_ratio)]
    n_cfg = table.groupby(["task", "reward_fn", "denoiser", "method", "protocol"]).size()
    note = (f"{int((n_cfg > 1).sum())} method/denoiser groups had more than one setting." if len(n_cfg) else "")
    return _sections(best, row, ["denoiser", "method", "best params", "protocol", "reward ↑", "off-support ↓",
                                 "NFE-eq ↓", "time / unguided ↓"], note)


def markdown_cost(table: pd.DataFrame) -> str:
    """Exact counts, wall-clock, peak memory and the time ratio to the unguided run, per configuration."""
    def row(r, g):
        return [r.denoiser, r.method, r.params, r.protocol, r.nfe, r.vjp, r.compute, r.reward_calls,
                f"{r.wall_s:.3f}", _ratio(r.time_ratio), f"{r.peak_mem_mb:.1f}"]
    return _sections(table, row, ["denoiser", "method", "params", "protocol", "NFE ↓", "VJP ↓", "NFE-eq ↓",
                                  "reward calls ↓", "wall s ↓", "time / unguided ↓", "peak MB ↓"])
