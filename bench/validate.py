"""``bench validate``: a trained denoiser against the task's exact oracle, where guidance depends on it.

At every time t of the sampler's grid, on points x_t = alpha x0 + sqrt(h) eps drawn from the forward marginal
of clean data ("on") and of clean data pushed off the support by the task's ``push_off`` ("off"):

    eps_rel_mse   E|eps_net - eps*|^2 / E|eps*|^2
    x0_err        sqrt(E|x0_net - x0*|^2 / E|x0|^2)           x0_hat (Tweedie) error in units of the data's size
    vjp_rel_err   sqrt(E|J_net^T g - J*^T g|^2 / E|J*^T g|^2)  J = d x0_hat / d x_t, g = unit reward gradient
    leak          sqrt(E|(I - P) J_net^T g|^2 / E|J*^T g|^2)   subspace: the off-support part guidance leaks
    radial_slope  d|x0_hat| / d|x_t| along x_t / |x_t|, mean  sphere: how hard x0_hat pulls back to |x| = 1
    radial_slope_err  E|slope_net - slope*|

g is the normalised gradient of the reward at the oracle's x0*, the direction in which look-ahead style
guidance differentiates g . x0_hat. Each oracle task declares ``validation``: checks (metric, points, h_max,
limit) passing when the largest value over grid times with h = 1 - alpha_bar_t <= h_max is <= limit.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

SHOW_T = (0, 1, 3, 10, 30, 60, 100, 150)  # grid times shown in validate.md (validate.json has every one)
METRICS = ("eps_rel_mse", "x0_err", "vjp_rel_err", "leak", "radial_slope", "radial_slope_oracle",
           "radial_slope_err")


def _x0_terms(den, x, t: int, alpha: float, h: float, g: torch.Tensor, dtype):
    """(eps, x0_hat, J^T g, radial slope per sample) of ``den`` at x_t = x (one forward, two VJPs)."""
    with torch.enable_grad():
        x = x.to(dtype).detach().requires_grad_(True)
        eps = den.eps(x, torch.full((x.shape[0],), t, dtype=torch.long))
        x0 = (x - math.sqrt(h) * eps) / alpha
        (vjp,) = torch.autograd.grad((g.to(dtype) * x0).sum(), x, retain_graph=True)
        (gn,) = torch.autograd.grad(x0.norm(dim=1).sum(), x)
    n = x.detach() / x.detach().norm(dim=1, keepdim=True)
    return eps.detach().double(), x0.detach().double(), vjp.double(), (gn * n).sum(1).double()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).sum() / (b**2).sum().clamp_min(1e-300))


def measure_t(task, den, oracle, reward, x0: torch.Tensor, t: int, gen: torch.Generator) -> dict:
    """All metrics at grid time t for the clean points ``x0``."""
    alpha, h = task.schedule.coeffs(t)
    x = alpha * x0 + math.sqrt(h) * torch.randn(x0.shape, generator=gen)
    with torch.no_grad():  # the guidance direction: unit reward gradient at the oracle's x0*
        x0_star = (x.double() - math.sqrt(h) * oracle.eps(x.double(), torch.full((x.shape[0],), t))) / alpha
    with torch.enable_grad():
        xo = x0_star.float().requires_grad_(True)
        (g,) = torch.autograd.grad(reward(xo).sum(), xo)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    e_o, x0_o, v_o, s_o = _x0_terms(oracle, x, t, alpha, h, g, torch.float64)
    e_n, x0_n, v_n, s_n = _x0_terms(den, x, t, alpha, h, g, torch.float32)
    out = {"eps_rel_mse": _rel(e_n, e_o), "x0_err": math.sqrt(float(((x0_n - x0_o) ** 2).sum() / (x0**2).sum())),
           "vjp_rel_err": math.sqrt(_rel(v_n, v_o)), "radial_slope": float(s_n.mean()),
           "radial_slope_oracle": float(s_o.mean()), "radial_slope_err": float((s_n - s_o).abs().mean())}
    if hasattr(task, "split"):
        perp = task.split(v_n.float())[1].double()
        out["leak"] = math.sqrt(float((perp**2).sum() / (v_o**2).sum().clamp_min(1e-300)))
    return out


def validate(task, den, *, batch: int = 256, seed: int = 0, steps: int | None = None, reward: str | None = None,
             progress: bool = False) -> dict:
    """Measure ``den`` against ``task.oracle`` along the sampler grid; apply the task's declared checks."""
    from methods.sampling import Sampler

    if not hasattr(task, "oracle") or not getattr(task, "validation", None):
        raise ValueError(f"task {task.name!r} has no exact oracle with validation checks to compare against")
    oracle = task.oracle("cpu")
    rw = task.reward(reward or next(iter(task.rewards)))
    grid = [t for t, _ in Sampler(steps=steps).grid(task.schedule)]
    gen = torch.Generator().manual_seed(seed)
    x0_on = task.sample_data(batch, gen)
    x0_off = task.push_off(task.sample_data(batch, gen), gen)
    rows = []
    for t in grid:
        rows.append({"t": t, "h": task.schedule.coeffs(t)[1],
                     "on": measure_t(task, den, oracle, rw, x0_on, t, gen),
                     "off": measure_t(task, den, oracle, rw, x0_off, t, gen)})
    checks = []
    for metric, points, h_max, limit in task.validation:
        vals = [(r[points][metric], r["t"]) for r in rows if r["h"] <= h_max and metric in r[points]]
        worst, at = max(vals) if vals else (float("nan"), None)
        checks.append({"metric": metric, "points": points, "h_max": h_max, "limit": limit, "worst": worst,
                       "at_t": at, "ok": bool(vals) and worst <= limit})
    return {"task": task.name, "T": task.schedule.T, "steps": steps, "batch": batch, "seed": seed,
            "reward": rw.name, "checkpoint": getattr(den, "checkpoint", None),
            "passed": all(c["ok"] for c in checks), "checks": checks, "rows": rows}


def markdown(res: dict, title: str = "") -> str:
    """The checks, then the metrics at a few grid times (on-support / pushed-off points)."""
    from tabulate import tabulate

    head = title or f"{res['task']}: denoiser {res.get('denoiser', '?')}"
    out = [f"## {head}\n", f"checkpoint `{res['checkpoint']}`, T = {res['T']}, grid steps = {res['steps'] or res['T']}, "
           f"{res['batch']} points per t and set, seed {res['seed']}, g = unit gradient of `{res['reward']}`. "
           f"**{'PASS' if res['passed'] else 'FAIL'}**\n"]
    out.append(tabulate([[c["metric"], c["points"], f"{c['h_max']:g}", f"{c['worst']:.4g}", c["at_t"], f"{c['limit']:g}",
                          "pass" if c["ok"] else "**FAIL**"] for c in res["checks"]],
                        headers=["check", "points", "t with h ≤", "worst", "at t", "limit", ""], tablefmt="github"))
    show = [r for r in res["rows"] if r["t"] in SHOW_T or r is res["rows"][0]]
    cols = [m for m in METRICS if m in res["rows"][0]["on"]]
    out.append("")
    for pts in ("on", "off"):
        out.append(f"\n{'on-support' if pts == 'on' else 'pushed-off'} points:\n")
        out.append(tabulate([[r["t"], f"{r['h']:.3g}"] + [f"{r[pts][m]:.4g}" for m in cols]
                             for r in sorted(show, key=lambda r: r["t"])],
                            headers=["t", "h"] + cols, tablefmt="github"))
    return "\n".join(out) + "\n"


def write(res: dict, out: str | Path) -> list[Path]:
    from .atomic import write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [write_text(out / "validate.md", markdown(res)),
            write_text(out / "validate.json", json.dumps(res, indent=1) + "\n")]


def add_parser(sub) -> None:
    v = sub.add_parser("validate", help="check a trained denoiser against the task's exact oracle (exit 1 if it fails)",
                       description="Compare a trained denoiser with the exact oracle along the sampler grid: eps and "
                                   "x0_hat errors and the Jacobian in the directions guidance uses, on on-support and "
                                   "pushed-off points; apply the task's pass thresholds. Exit 1 when a check fails.")
    v.add_argument("--task", required=True, help="a task with an exact oracle (subspace, sphere)")
    v.add_argument("--denoiser", default="trained", help="the network to validate (default: trained)")
    v.add_argument("--network-seed", type=int, default=0, help="training seed of the network (default 0)")
    v.add_argument("--reward", default=None, help="reward whose gradient gives the direction g (default: first)")
    v.add_argument("--T", type=int, default=200, help="diffusion steps of the schedule the network was trained on")
    v.add_argument("--steps", type=int, default=None, help="sampler grid steps (default: all T)")
    v.add_argument("--batch", type=int, default=256, help="points per grid time and point set")
    v.add_argument("--seed", type=int, default=0, help="seed of the validation points (unguided samples and pushes)")
    v.add_argument("--threads", type=int, default=None)
    v.add_argument("--out", default=None, help="directory for validate.md / validate.json")
    v.set_defaults(fn=cmd_validate)


def cmd_validate(a) -> int:
    import sys

    from tasks import get_task

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.batch < 2 or a.network_seed < 0 or (a.steps is not None and a.steps < 1) or a.T < 2:
        raise ValueError("need --batch >= 2, --network-seed >= 0, --steps >= 1 and --T >= 2")
    task = get_task(a.task, a.T)
    if not getattr(task, "validation", None):
        raise ValueError(f"task {a.task!r} has no exact oracle with validation checks to compare against")
    if a.denoiser == "oracle":
        raise ValueError("validate compares a network with the oracle; choose a trained denoiser")
    if a.reward is not None:
        task.reward(a.reward)  # unknown names fail here, before any training
    den = task.denoiser(a.denoiser, "cpu", **({"network_seed": a.network_seed} if a.network_seed else {}))
    res = validate(task, den, batch=a.batch, seed=a.seed, steps=a.steps, reward=a.reward)
    res.update(denoiser=a.denoiser, network_seed=a.network_seed)
    print(markdown(res))
    if a.out:
        for p in write(res, a.out):
            print(p)
    if not res["passed"]:
        bad = ", ".join(f"{c['metric']}[{c['points']}] {c['worst']:.3g} > {c['limit']:g} at t={c['at_t']}"
                        for c in res["checks"] if not c["ok"])
        print(f"VALIDATION FAILED: {a.task}/{a.denoiser} network_seed={a.network_seed} checkpoint "
              f"{res['checkpoint']}: {bad}", file=sys.stderr)
        return 1
    return 0
