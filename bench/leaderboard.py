"""Compute-matched leaderboard (issue 13): per task x reward x denoiser x budget tier, every tuned method within
the budget, ranked by mean reward with 95 % bootstrap intervals, flags, and ties with the leader.

Input: the report-phase records in OUT and the plan ``OUT/leaderboard_plan.json`` written by bench/tune.py (which
run ids belong to which method row, its selected parameters, trials and seeds). Output: ``leaderboard.md`` and
``leaderboard.csv``. A flagged row (leaderboard_stats.FLAGS) is never ranked first nor bold.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from .leaderboard_stats import FLAGS, bootstrap_ci, nfe_eq, per_sample, read_at_budget, tied

__all__ = ["build_rows", "write_leaderboard", "markdown", "PLAN"]

PLAN = "leaderboard_plan.json"
COLUMNS = ["task", "reward", "denoiser", "network_seed", "tier", "budget", "rank", "method", "params",
           "reward_mean", "reward_lo", "reward_hi", "off_support_mean", "off_support_lo", "off_support_hi",
           "heldout_reward", "nfe_eq", "time_ratio", "peak_mem_mb", "round", "trials", "tuning_seeds", "report_seeds", "flags"]


def _group(e: dict) -> tuple:
    return e["task"], e["reward"], e["denoiser"], e.get("network_seed", 0)


def _collect(entry: dict, by_run: dict, budget: float | None, c: float) -> dict | None:
    """Pooled per-sample values of an entry's report runs read at ``budget``; None if over budget."""
    rewards, offs, costs, rounds, missing, diverged = [], [], [], [], False, False
    guided_s, unguided_s, mem, held = [], [], [], []
    for seed in entry["report_seeds"]:
        recs = by_run.get(entry["run_ids"][str(seed)], [])
        last = max((r["round"] for r in recs if r.get("round") is not None and r.get("status") == "ok"), default=-1)
        if any(r.get("status") == "diverged" for r in recs):
            diverged = True
        if last < entry["planned_rounds"]:
            missing = True
        rec = read_at_budget(recs, budget, c)
        if rec is None:
            if recs and not missing:  # complete but over budget at its first round: not in this tier
                return None
            continue
        rewards += per_sample(rec, "reward")
        offs += per_sample(rec, "off_support")
        costs.append(nfe_eq(rec, c))
        rounds.append(rec["round"])
        u0 = round0_seconds(recs)  # the guided pass(es) up to rec's round: cumulative wall_s minus round 0's
        guided_s.append(math.nan if rec.get("wall_s") is None else float(rec["wall_s"]) - u0)
        unguided_s.append(u0)
        mem.append(rec.get("peak_mem_mb"))
        held.append((rec.get("metrics") or {}).get("heldout_reward"))  # images: the held-out evaluator's view
    if not costs and not missing and not diverged:
        return None
    r, o = np.asarray(rewards, dtype=np.float64), np.asarray(offs, dtype=np.float64)
    if r.size and not np.isfinite(r).all():
        diverged = True
    return {"r": r, "o": o, "nfe_eq": max(costs) if costs else math.nan,
            "round": max(rounds) if rounds else None, "missing": missing, "diverged": diverged,
            "heldout_reward": _finite_mean(held), "guided_r0": _per_unguided(guided_s, unguided_s), "peak_mem_mb": max((m for m in mem if m is not None), default=math.nan)}


def round0_seconds(recs: list[dict]) -> float:
    """Wall-clock of the run's own round 0: the unguided batch it starts with, timed in the same process, group
    and moment as its guided pass(es)."""
    r0 = next((r for r in recs if r.get("round") == 0 and r.get("status") == "ok"), None)
    return math.nan if r0 is None or r0.get("wall_s") is None else float(r0["wall_s"])


def _per_unguided(guided_s: list, unguided_s: list) -> float:
    """Guided seconds in units of the same runs' round-0 unguided passes: a run batched with others (its wall_s a
    share of its group's, bench/batched.py) and a run alone are each compared with an unguided pass of the same
    rows under the same load."""
    pairs = [(g, u) for g, u in zip(guided_s, unguided_s) if math.isfinite(g) and math.isfinite(u)]
    if not pairs or sum(u for _, u in pairs) <= 0:
        return math.nan
    return sum(g for g, _ in pairs) / sum(u for _, u in pairs)


def _finite_mean(v: list) -> float:
    v = [x for x in v if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def build_rows(plan: dict, records: list[dict], task_info) -> list[dict]:
    """Leaderboard rows. ``task_info(task, reward) -> (support_tolerance, support_floor, optimum)``."""
    c, tiers, unit = plan["c"], plan["tiers"], plan["unit"]
    by_run: dict[str, list] = {}
    for rec in records:
        by_run.setdefault(rec["run_id"], []).append(rec)
    groups: dict[tuple, list] = {}
    for e in plan["entries"]:
        groups.setdefault(_group(e), []).append(e)
    rows = []
    for g, entries in groups.items():
        tol, floor, optimum = task_info(g[0], g[1])
        ung = next((e for e in entries if e["method"] == "unguided"), None)
        u = _collect(ung, by_run, None, c) if ung else None
        limit = tol * _mean(u["o"]) + floor if u and u["o"].size else math.inf
        u_ci = bootstrap_ci(u["r"]) if u else (math.nan, math.nan)
        u_s = u["guided_r0"] if u else math.nan
        for tier in tiers:
            budget = tier * unit[_key(g)]
            tier_rows = []
            for e in entries:
                v = _collect(e, by_run, budget, c)
                if v is None:
                    continue
                lo, hi = bootstrap_ci(v["r"])
                olo, ohi = bootstrap_ci(v["o"])
                m, om = _mean(v["r"]), _mean(v["o"])
                flags = []
                if v["missing"]:
                    flags.append("incomplete")
                if v["diverged"] or (v["r"].size and not math.isfinite(m)):
                    flags.append("diverged")
                if math.isfinite(om) and om > limit:
                    flags.append("off-support")
                if optimum is not None and math.isfinite(m) and m > optimum + 1e-6 * max(1.0, abs(optimum)):
                    flags.append("above-optimum")
                if e["method"] != "unguided" and math.isfinite(lo) and math.isfinite(u_ci[0]) \
                        and lo <= u_ci[1] and hi >= u_ci[0]:
                    flags.append("no-effect")
                tier_rows.append({"task": g[0], "reward": g[1], "denoiser": g[2], "network_seed": g[3],
                                  "tier": tier, "budget": budget, "rank": None, "method": e["label"],
                                  "params": _short(e["params"]), "reward_mean": m, "reward_lo": lo, "reward_hi": hi,
                                  "off_support_mean": om, "off_support_lo": olo, "off_support_hi": ohi,
                                  "nfe_eq": v["nfe_eq"], "time_ratio": v["guided_r0"] / u_s if u_s > 0 else math.nan,
                                  "peak_mem_mb": v["peak_mem_mb"], "round": v["round"], "trials": e["trials"],
                                  "heldout_reward": v["heldout_reward"],
                                  "tuning_seeds": _seeds(e["tuning_seeds"]), "report_seeds": _seeds(e["report_seeds"]),
                                  "flags": ",".join(flags), "_r": v["r"], "_limit": limit})
            rows += _rank(tier_rows)
    return rows


def _key(g: tuple) -> str:
    return "/".join(str(x) for x in g)


def _rank(rows: list[dict]) -> list[dict]:
    """Sort by mean reward; the first unflagged row leads (rank 1), unflagged rows whose paired difference with
    the leader is not significant share rank 1, other unflagged rows are ranked in order, flagged rows get none."""
    rows.sort(key=lambda r: -r["reward_mean"] if math.isfinite(r["reward_mean"]) else math.inf)
    clean = [r for r in rows if not r["flags"]]
    if clean:
        leader = clean[0]
        leader["rank"] = 1
        for i, r in enumerate(clean[1:], start=2):
            r["rank"] = 1 if tied(r["_r"], leader["_r"]) else i
    flagged = [r for r in rows if r["flags"]]
    return clean + flagged


def _short(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def _seeds(s: list) -> str:
    return " ".join(str(x) for x in s)


def _fmt(x: float, digits: int = 4) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def markdown(rows: list[dict], plan: dict) -> str:
    out = io.StringIO()
    tun = sorted({s for e in plan["entries"] for s in e["tuning_seeds"]})
    rep = sorted({s for e in plan["entries"] for s in e["report_seeds"]})
    out.write("# Leaderboard (fair comparison)\n\n"
              f"Every method tuned with the same number of trials ({plan['trials']}, one shared search: a log grid on "
              f"the first search-space dimension, then local refinement) on tuning seeds {_seeds(tun)}; the selected "
              f"configuration maximises the mean reward subject to the task's support constraint. Rows are re-runs on "
              f"report seeds {_seeds(rep)} (disjoint from the tuning seeds; the same per-sample noise for every method). "
              f"Reward and off-support: mean [95 % bootstrap interval] over every returned sample of the report seeds. "
              f"Budget tiers in unguided passes (NFE-eq = F + {plan['c']:g}·V per returned sample, cumulative, round 0 "
              f"included); iterative methods are read at the last round within the tier, best-of-n at N = tier − 1. "
              f"Rank 1 is shared by rows whose paired difference with the leader is not significant; flagged rows are "
              f"never ranked. Time ratio: wall-clock of the guided pass(es) (round 0 excluded) over unguided's one "
              f"pass, mean over report seeds, after an untimed warm-up per task/denoiser in each process (measured "
              f"on this machine, under its load). Peak MB: resident high-water mark of the run over its start, "
              f"freed heap returned to the OS before each run (max over report seeds).\n\n")
    out.write("Flags: " + "; ".join(f"`{k}`: {v}" for k, v in FLAGS.items()) + ".\n")
    if "c_measured" in plan:
        from .leaderboard_cost import c_note

        out.write("\nNFE-eq: " + c_note(plan["c"], plan["c_measured"], plan.get("c_source", "")) + ".\n")
    if plan.get("notes"):
        out.write("\n" + "\n".join(f"- {n}" for n in plan["notes"]) + "\n")
    key = None
    held = any(math.isfinite(r.get("heldout_reward", math.nan)) for r in rows)  # image tasks: one more column
    for r in rows:
        k = (r["task"], r["reward"], r["denoiser"], r["network_seed"], r["tier"])
        if k != key:
            key = k
            ns = f" (network seed {r['network_seed']})" if r["network_seed"] else ""
            out.write(f"\n### {r['task']} / {r['reward']} / {r['denoiser']}{ns}: ≤ {r['tier']:g} unguided passes "
                      f"(NFE-eq ≤ {r['budget']:g}; off-support limit {_fmt(r['_limit'])})\n\n")
            out.write("| rank | method | params | reward ↑ [95 % CI] | off-support ↓ [95 % CI] | "
                      + ("held-out reward | " if held else "") + "NFE-eq | time ratio | peak MB | round | trials | "
                      "flags |\n|" + "---|" * (12 if held else 11) + "\n")
        bold = r["rank"] == 1
        name = f"**{r['method']}**" if bold else r["method"]
        rank = "–" if r["rank"] is None else str(r["rank"])
        out.write(f"| {rank} | {name} | {r['params']} | {_fmt(r['reward_mean'])} [{_fmt(r['reward_lo'])}, "
                  f"{_fmt(r['reward_hi'])}] | {_fmt(r['off_support_mean'])} [{_fmt(r['off_support_lo'])}, "
                  f"{_fmt(r['off_support_hi'])}] | " + (f"{_fmt(r['heldout_reward'])} | " if held else "")
                  + f"{_fmt(r['nfe_eq'])} | {_fmt(r['time_ratio'], 3)} | "
                  f"{_fmt(r['peak_mem_mb'], 3)} | {r['round']} | {r['trials']} | "
                  f"{r['flags']} |\n")
    return out.getvalue()


def _task_info(T: int):
    from tasks import get_task

    def info(task: str, reward: str):
        t = get_task(task, T)
        return t.support_tolerance, t.support_floor, t.reward(reward).optimum
    return info


def write_leaderboard(out: Path, task_info=None) -> str:
    """Write leaderboard.md / leaderboard.csv in ``out`` from its records and plan; returns the markdown."""
    from .atomic import write_text
    from .records import read_records

    out = Path(out)
    plan = json.loads((out / PLAN).read_text(encoding="utf-8"))
    rows = build_rows(plan, read_records(out, allow_empty=True), task_info or _task_info(plan["T"]))
    md = markdown(rows, plan)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(out / "leaderboard.csv", buf.getvalue())
    write_text(out / "leaderboard.md", md)
    return md
