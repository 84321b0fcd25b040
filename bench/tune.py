"""Equal-budget tuning and the report phase of the fair comparison (issue 13; inference-scaling.md §6).

A suite with a ``[tune]`` table runs this protocol instead of its plain grid:

1. **Tune** (records in ``OUT/tune``): for every (task, reward, denoiser, method) of the grid the same number of
   ``trials`` configurations, proposed by one shared search over the method's declared ``search_space``
   (methods/search.py): a log grid on the space's first dimension with the others at their defaults, then local
   refinement around the best feasible trial (half, quarter, ... grid steps; odd refinement trials also draw the
   secondary knobs from an RNG seeded by the trial index only, the same draws for every method). Each trial runs on
   every ``tuning_seeds`` seed. A trial is feasible when every run is ok and finite, its mean off-support is at most
   the task's ``support_tolerance`` x the unguided batch's + ``support_floor`` (same seeds), and its mean reward is
   not above the reward's known optimum. Selected: the feasible trial with the highest mean reward (none feasible:
   the least off-support one, which the leaderboard will flag). Held-out evaluators are never read. Every trial goes
   to ``OUT/trials.csv``; ``OUT/tuning.png`` plots best-so-far against trials (bench/leaderboard_trials.py).
2. **Report** (records in ``OUT``): the selected configuration of every method on ``report_seeds`` (disjoint from
   the tuning seeds; every method sees the same per-sample noise), best-of-n at N = tier − 1 for every budget tier,
   then ``OUT/leaderboard.md`` / ``leaderboard.csv`` (bench/leaderboard.py).

``[tune]`` keys: trials, tuning_seeds, report_seeds, tiers (budgets per returned sample in unguided passes),
c (NFE-eq = F + c·V), iterative_rounds (rounds of methods that run their own rounds), and per-method RunSpec
overrides ``[tune.overrides.<method>]`` (DOODL: its deterministic sampler).
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .runner import RunSpec

__all__ = ["TuneConfig", "propose", "tuning_specs", "cmd_tuned"]

KEYS = {"trials", "tuning_seeds", "report_seeds", "tiers", "c", "iterative_rounds", "overrides", "search_seed",
        "algorithm1", "alg1_rounds"}


@dataclass
class TuneConfig:
    trials: int = 4
    tuning_seeds: list = field(default_factory=lambda: [1000])
    report_seeds: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    tiers: list = field(default_factory=lambda: [2.0, 4.0, 8.0, 16.0])
    c: float = 2.0
    iterative_rounds: int = 3
    overrides: dict = field(default_factory=dict)
    search_seed: int = 0
    algorithm1: list = field(default_factory=list)  # per-step methods also run as GGDM Algorithm 1 (own rows)
    alg1_rounds: int = 3

    @classmethod
    def from_table(cls, d: dict) -> "TuneConfig":
        from .suite import SuiteError

        bad = set(d) - KEYS
        if bad:
            raise SuiteError(f"[tune]: unknown key {sorted(bad)[0]!r}; valid: {', '.join(sorted(KEYS))}")
        cfg = cls(**{k: v for k, v in d.items()})
        ints = lambda v: isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                            for x in v)  # noqa: E731
        if not (isinstance(cfg.trials, int) and cfg.trials >= 1):
            raise SuiteError(f"[tune]: trials must be an integer >= 1, got {cfg.trials!r}")
        for k in ("tuning_seeds", "report_seeds"):
            if not ints(getattr(cfg, k)):
                raise SuiteError(f"[tune]: {k} must be a non-empty list of non-negative integers")
        if set(cfg.tuning_seeds) & set(cfg.report_seeds):
            raise SuiteError(f"[tune]: tuning and report seeds must be disjoint, both have "
                             f"{sorted(set(cfg.tuning_seeds) & set(cfg.report_seeds))}")
        if not (isinstance(cfg.tiers, list) and cfg.tiers and all(isinstance(t, (int, float)) and t >= 2
                                                                  for t in cfg.tiers)):
            raise SuiteError("[tune]: tiers must be a non-empty list of budgets >= 2 (unguided passes)")
        cfg.tiers = sorted(float(t) for t in cfg.tiers)
        if not isinstance(cfg.overrides, dict) or not all(isinstance(v, dict) for v in cfg.overrides.values()):
            raise SuiteError("[tune.overrides.<method>] must be tables of RunSpec fields")
        return cfg


# --- the shared search --------------------------------------------------------------------------------------
def n_grid(trials: int) -> int:
    return trials - trials // 3


def _params_at(space: dict, u: dict) -> dict:
    from methods.search import unit_to_value

    return {k: unit_to_value(space[k], u[k]) for k in u}


def propose(space: dict, trials: int, history: list[dict], search_seed: int = 0) -> list[dict]:
    """The next trials' positions in the unit cube (dict dim -> u; missing dims stay at the method default).

    ``history``: earlier trials as {"u": {...}, "score": float, "feasible": bool}. With no history: the grid stage;
    else the refinement stage (``trials - n_grid`` proposals). Same algorithm and budget for every method."""
    if not space:
        return []
    dims = list(space)
    first, rest = dims[0], dims[1:]
    g = n_grid(trials)
    if not history:
        return [{first: (j + 0.5) / g} for j in range(g)]
    feas = [h for h in history if h["feasible"]]
    best = max(feas, key=lambda h: h["score"]) if feas else min(history, key=lambda h: h["u"][first])
    u0 = best["u"][first]

    def score_near(sign):
        near = [h for h in feas if (h["u"][first] - u0) * sign > 0]
        return max((h["score"] for h in near), default=-math.inf)

    sign = 1.0 if score_near(1) > score_near(-1) else -1.0
    out = []
    for i in range(trials - g):
        step = (0.5 ** (1 + i // 2)) / g
        u = {**best["u"], first: min(1.0, max(0.0, u0 + sign * step))}
        if i % 2 == 1 and rest:
            rng = np.random.default_rng([search_seed, i])
            u.update({k: float(rng.random()) for k in rest})
        out.append(u)
        sign = -sign
    return out


# --- specs ------------------------------------------------------------------------------------------------
def group_key(s: RunSpec) -> tuple:
    return s.task, s.reward, s.denoiser, s.network_seed


def templates(specs: list[RunSpec]) -> dict[tuple, RunSpec]:
    """One template spec per (group, method): the first expanded spec (its seed and params are replaced)."""
    out = {}
    for s in specs:
        out.setdefault((group_key(s), s.method), s)
    return out


ALG1 = " (alg1)"


def add_alg1(tmpl: dict, cfg: TuneConfig) -> None:
    """GGDM Algorithm 1 variants: for every method in ``cfg.algorithm1`` a separate row (key ``m (alg1)``) whose
    runs take ``alg1_rounds`` rounds; its rounds are read like an iterative method's, at the tier's budget."""
    from methods import get_method

    for (g, m), t in list(tmpl.items()):
        tmpl[(g, m)] = replace(t, rounds=1)
        if m in cfg.algorithm1 and not get_method(m).iterative:
            tmpl[(g, m + ALG1)] = replace(t, rounds=int(cfg.alg1_rounds))


def _spec(t: RunSpec, cfg: TuneConfig, params: dict, seed: int) -> RunSpec:
    from methods import get_method

    cls = get_method(t.method)
    rounds = cfg.iterative_rounds if cls.iterative else t.rounds  # templates are one-shot unless an alg1 variant
    over = dict(cfg.overrides.get(t.method, {}))
    return replace(t, params={**t.params, **params}, seed=int(seed), rounds=rounds, **over)


def tuning_specs(tmpl: RunSpec, cfg: TuneConfig, params: dict) -> list[RunSpec]:
    # tuning runs keep no samples (figures draw the report runs'; save_samples is not part of the run id)
    return [replace(_spec(tmpl, cfg, params, s), save_samples=None) for s in cfg.tuning_seeds]


def tune_params(method: str, cfg: TuneConfig) -> dict:
    """Fixed parameters of the tuning runs: best-of-n is tuned at the largest tier's N."""
    return {"n": int(max(cfg.tiers)) - 1} if method == "best-of-n" else {}


# --- scoring ----------------------------------------------------------------------------------------------
def score(specs: list[RunSpec], by_run: dict) -> tuple[float, float, bool]:
    """(mean reward, mean off-support, all ok and finite) of a trial's final rounds over its seeds."""
    rs, os_, ok = [], [], True
    for s in specs:
        recs = by_run.get(s.run_id, [])
        if not recs or any(r.get("status") != "ok" for r in recs):
            ok = False
            continue
        last = max(recs, key=lambda r: r["round"])
        rs.append(last["reward_mean"])
        os_.append(last["off_support_mean"])
    m = float(np.mean(rs)) if rs else math.nan
    o = float(np.mean(os_)) if os_ else math.nan
    return m, o, ok and math.isfinite(m) and math.isfinite(o)


def _by_run(out: Path) -> dict:
    from .records import read_records

    by = {}
    if (out / "records.jsonl").exists():
        for r in read_records(out, allow_empty=True):
            by.setdefault(r["run_id"], []).append(r)
    return by


# --- the driver -------------------------------------------------------------------------------------------
def _limit(task: str, T: int, unguided_off: float) -> float:
    from tasks import get_task

    t = get_task(task, T)
    return t.support_tolerance * unguided_off + t.support_floor if math.isfinite(unguided_off) else math.inf


def _evaluate(trials: dict, by_run: dict, tmpl: dict) -> None:
    """Fill score / off / feasible of every trial (limits from each group's unguided baseline)."""
    from tasks import get_task

    from .leaderboard_trials import spread

    base = {}
    for (g, m), ts in trials.items():
        if m == "unguided":
            base[g] = score(ts[0]["specs"], by_run)[1]
    for (g, m), ts in trials.items():
        t = tmpl[(g, m)]
        limit = _limit(g[0], t.T, base.get(g, math.nan))
        optimum = get_task(g[0], t.T).reward(g[1]).optimum
        for tr in ts:
            r, o, ok = score(tr["specs"], by_run)
            above = optimum is not None and ok and r > optimum + 1e-6 * max(1.0, abs(optimum))
            tr.update(score=r, off=o, limit=limit, feasible=bool(ok and o <= limit and not above),
                      **spread(tr["specs"], by_run))


def _select(ts: list[dict]) -> dict:
    feas = [t for t in ts if t["feasible"]]
    if feas:
        return max(feas, key=lambda t: t["score"])
    return min(ts, key=lambda t: (t["off"] if math.isfinite(t["off"]) else math.inf))


def _label(m: str, params: dict) -> str:
    return f"best-of-n N={params['n']}" if m == "best-of-n" else m


def plan_trials(tmpl: dict, cfg: TuneConfig) -> dict:
    """The grid stage of every (group, method): unguided gets one baseline run, every other method ``trials``."""
    from methods import get_method

    trials = {}
    for (g, m), t in tmpl.items():
        space = get_method(t.method).search_space or {}
        fixed = tune_params(t.method, cfg)
        if m == "unguided":
            props = [("baseline", {})]
        elif not space:
            props = [("default", {})]
        else:
            props = [("grid", u) for u in propose(space, cfg.trials, [], cfg.search_seed)]
        trials[(g, m)] = [{"stage": st, "u": u, "params": {**fixed, **_params_at(space, u)},
                           "specs": tuning_specs(t, cfg, {**fixed, **_params_at(space, u)})} for st, u in props]
    return trials


def cmd_tuned(a, suite, specs: list[RunSpec], out: Path) -> int:
    """`bench suite NAME` for a suite with a [tune] table: tune, report, leaderboard (exit 1 if a run failed)."""
    import time

    import torch

    from methods import get_method

    from .executors import make_executor, pretrain_needed
    from .leaderboard import PLAN, write_leaderboard
    from .leaderboard_cost import plan_c
    from .leaderboard_figures import write_figures
    from .leaderboard_trials import plot_tuning, write_trials
    from .records import DirLock
    from .suite import Interrupted, SuiteError, run_suite

    cfg = TuneConfig.from_table(suite.tune)
    tmpl = templates(specs)
    for g in {group_key(s) for s in specs}:  # every group needs its unguided baseline
        if (g, "unguided") not in tmpl:
            any_t = next(t for (gg, _), t in tmpl.items() if gg == g)
            tmpl[(g, "unguided")] = replace(any_t, method="unguided", params={})
    add_alg1(tmpl, cfg)
    trials = plan_trials(tmpl, cfg)
    n_tune = sum(len(ts) for ts in trials.values()) * len(cfg.tuning_seeds)
    print(f"suite {suite.name}: fair comparison, {len(tmpl)} (task, reward, denoiser, method) groups, "
          f"{cfg.trials} trials each on tuning seeds {cfg.tuning_seeds}, report seeds {cfg.report_seeds}, "
          f"tiers {cfg.tiers} unguided passes", file=sys.stderr)
    if a.dry_run:
        n_ref = sum(cfg.trials - n_grid(cfg.trials) for ts in trials.values() if ts[0]["stage"] == "grid")
        print(f"grid stage: {n_tune} tuning runs; then {n_ref * len(cfg.tuning_seeds)} refinement runs and "
              f"{len(cfg.report_seeds)} report runs per method (more for best-of-n: one N per tier)")
        return 0
    kind = a.executor or ("dask" if a.scheduler else "process" if a.workers > 1 else "serial")
    torch.set_num_threads(a.threads)
    t0, failed = time.perf_counter(), 0

    def run(sp: list[RunSpec], d: Path, report: bool) -> None:
        """A diverged tuning trial is an outcome (infeasible), not a failure: only report runs set exit 1."""
        nonlocal failed
        try:
            ex = make_executor(kind, a.workers, a.scheduler, threads=a.threads)
        except (RuntimeError, OSError) as e:
            raise SuiteError(str(e)) from None
        # tuning and report runs alike in batched groups (bench/batched.py): a configuration's report seeds share
        # one stacked batch; the leaderboard's time ratio divides each run's guided time by its own round 0
        n = run_suite(list({s.run_id: s for s in sp}.values()), d, ex, retry_failed=a.retry_failed,
                      group_rows=getattr(a, "group_rows", None))["failed"]
        failed += n if report else 0

    tune_dir = out / "tune"
    try:
        with DirLock(out, "bench suite " + suite.name), DirLock(tune_dir, "bench suite " + suite.name):
            nets = pretrain_needed(specs, parallel=max(a.workers, min(2, os.cpu_count() or 1)) if not a.scheduler else 1)
            if nets:
                print(f"networks ready after {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            run([s for ts in trials.values() for t in ts for s in t["specs"]], tune_dir, False)
            _evaluate(trials, _by_run(tune_dir), tmpl)
            for (g, m), ts in trials.items():  # refinement stage
                space = get_method(tmpl[(g, m)].method).search_space or {}
                if ts[0]["stage"] != "grid":
                    continue
                fixed = tune_params(tmpl[(g, m)].method, cfg)
                for u in propose(space, cfg.trials, [{"u": t["u"], "score": t["score"], "feasible": t["feasible"]}
                                                     for t in ts], cfg.search_seed):
                    p = {**fixed, **_params_at(space, u)}
                    ts.append({"stage": "refine", "u": u, "params": p, "specs": tuning_specs(tmpl[(g, m)], cfg, p)})
            run([s for ts in trials.values() for t in ts if t["stage"] == "refine" for s in t["specs"]], tune_dir,
                False)
            _evaluate(trials, _by_run(tune_dir), tmpl)
            write_trials(out, trials)
            plot_tuning(out, trials)
            entries, report = [], []
            for (g, m), ts in trials.items():
                sel = dict(_select(ts)["params"])
                variants = [sel]
                if m == "best-of-n":
                    variants = [{**sel, "n": int(t) - 1} for t in cfg.tiers if int(t) - 1 >= 2]
                for p in variants:
                    sp = [_spec(tmpl[(g, m)], cfg, p, s) for s in cfg.report_seeds]
                    report += sp
                    entries.append({"task": g[0], "reward": g[1], "denoiser": g[2], "network_seed": g[3], "method": m,
                                    "label": _label(m, p), "params": p, "planned_rounds": sp[0].rounds,
                                    "run_ids": {str(s.seed): s.run_id for s in sp},
                                    "trials": 0 if m == "unguided" else len(ts), "tuning_seeds": cfg.tuning_seeds,
                                    "report_seeds": cfg.report_seeds, "tuned_feasible": _select(ts)["feasible"]})
            run(report, out, True)
            steps = {"/".join(str(x) for x in g): len(_grid(t)) for (g, _), t in tmpl.items()}
            notes = [f"{m}: {', '.join(f'{k} = {v}' for k, v in o.items())} (the sampler it needs)"
                     for m, o in cfg.overrides.items()]
            plan = {"c": cfg.c, "tiers": cfg.tiers, "unit": steps, "trials": cfg.trials, "T": specs[0].T,
                    "entries": entries, "notes": notes,
                    **plan_c(out, sorted({g for g, _ in tmpl}), specs[0].batch, specs[0].T)}
            from .atomic import write_text

            write_text(out / PLAN, json.dumps(plan, indent=1) + "\n")
            md = write_leaderboard(out)
            write_figures(out)
            from .report import write_index
            from .suite import write_suite_meta

            write_suite_meta(suite, out, report)  # suite.json: what the reports index shows
            if out.resolve().parent.name == "reports":  # keep the index of reference reports current
                write_index(out.resolve().parent)
            if not a.no_report:
                print(md)
    except Interrupted as e:
        print(f"bench suite: {e}", file=sys.stderr)
        return 130
    print(f"suite {suite.name}: tuned and reported in {time.perf_counter() - t0:.1f}s -> {out} "
          f"(leaderboard.md, trials.csv, tuning.png, pareto.png, reward_nfe.png; {failed} failed report runs)",
          file=sys.stderr)
    return 1 if failed else 0


def _grid(t: RunSpec) -> list:
    from methods import Sampler
    from tasks import get_task

    return Sampler(t.sampler, t.eta, t.steps).grid(get_task(t.task, t.T).schedule)
