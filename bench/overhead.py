"""Per-round cost of guidance relative to unguided sampling, measured in one process.

Rounds of the unguided sampler and of each method alternate on the same denoiser, batch and seeds (after a
warm-up round each), so machine noise hits both alike; the reported ratio is median(method) / median(unguided).
Counts (NFE, VJP, reward calls per round) are exact.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from tabulate import tabulate

from methods import Cost, Counted, NoiseStream, Objective, Sampler, make_method
from methods.sampling import sample_seeds
from tasks import get_task

from .measure import PeakMemory, sync


def _one_round(method, den, obj, seeds, shape, sampler, device):
    noise = NoiseStream(seeds, shape, device)
    sync(device)
    t0 = time.perf_counter()
    x = method.sample(den, obj, noise, sampler)
    sync(device)
    return time.perf_counter() - t0, x


def measure_overhead(task: str, reward: str | None, denoiser: str, methods: list[str], *, batch: int = 32,
                     rounds: int = 10, T: int = 200, seed: int = 0, device: str = "cpu", params=None) -> list[dict]:
    tk = get_task(task, T)
    rw = tk.reward(reward or next(iter(tk.rewards)))
    net = tk.denoiser(denoiser, device)
    sampler = Sampler()
    seeds = sample_seeds(seed, 1, batch)
    base = make_method("unguided")
    cost0 = Cost()
    den0 = Counted(net, cost0)
    _, anchor = _one_round(base, den0, Objective(rw, cost0), sample_seeds(seed, 0, batch), tk.shape, sampler, device)
    rows = []
    for name in methods:
        m = make_method(name, (params or {}).get(name, {}))
        times = {"unguided": [], name: []}
        costs = {}
        for r in range(rounds + 1):  # round 0 warms both up and is discarded
            for label, meth in (("unguided", base), (name, m)):
                cost = Cost()
                den = Counted(net, cost)
                obj = Objective.linearised(rw, cost, anchor, linear=False)
                with PeakMemory(device) as mem:
                    dt, _ = _one_round(meth, den, obj, seeds, tk.shape, sampler, device)
                if r:
                    times[label].append(dt)
                costs[label] = (cost.as_dict(), mem.mb)
        tu, tm = statistics.median(times["unguided"]), statistics.median(times[name])
        rows.append({"task": task, "denoiser": denoiser, "method": name, "batch": batch, "T": T,
                     "unguided_s": tu, "method_s": tm, "ratio": tm / tu, **costs[name][0],
                     "peak_mem_mb": costs[name][1], "unguided_peak_mem_mb": costs["unguided"][1]})
    return rows


def overhead_markdown(rows: list[dict]) -> str:
    return tabulate([[r["task"], r["denoiser"], r["method"], r["batch"], r["T"], r["nfe"], r["vjp"], r["reward_calls"],
                      f"{r['unguided_s'] * 1e3:.1f}", f"{r['method_s'] * 1e3:.1f}", f"{r['ratio']:.2f}",
                      f"{r['peak_mem_mb']:.1f}"] for r in rows],
                    headers=["task", "denoiser", "method", "B", "T", "NFE/round", "VJP/round", "reward calls",
                             "unguided ms", "method ms", "time ratio", "peak MB"], tablefmt="github")


def write_overhead(rows: list[dict], out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from .records import now, provenance

    (out / "overhead.json").write_text(json.dumps({"rows": rows, "provenance": provenance(), "date": now(),
                                                   "threads": torch.get_num_threads()}, indent=1))
    md = out / "overhead.md"
    md.write_text("# Guidance cost per round relative to unguided sampling\n\n"
                  "Median wall-clock of one sampling round, alternating unguided and guided rounds in one process "
                  f"({torch.get_num_threads()} torch thread(s)); counts are exact per round.\n\n"
                  + overhead_markdown(rows) + "\n")
    return md
