"""pytest-benchmark: one GGDM look-ahead round on the subspace oracle (B = 32, T = 200, DDPM), the torch path that runs
(``methods.lookahead.LookAhead.sample`` through ``Counted``) against its numpy re-derivation
(``benchmarks/oracle_numpy.py``), each torch round preceded by a numpy round and by the numpy loop transcribed op
for op into torch (``lookahead_round_torch``: the floor of eager torch for this maths), all under the same load.

``extra_info``: per-round torch, numpy and floor times (wall-clock and CPU time), the median ratios of same-load
pairs (issue 14's target: torch / numpy <= 2), and the largest difference between the results (float32 rounding
only: the re-derivation is the same maths). Run:

    python -m pytest benchmarks/test_oracle_overhead.py --benchmark-only --benchmark-json OUT.json
"""
import statistics
import time

import numpy as np
import torch

from bench.runner import RunSpec, build
from benchmarks.oracle_numpy import lookahead_round_numpy, lookahead_round_torch
from methods import Cost, Counted, NoiseStream, Objective
from methods.protocol import run_rounds
from methods.sampling import sample_seeds

B, T, ROUNDS = 32, 200, 10


def test_oracle_lookahead_round_vs_numpy(benchmark):
    b = build(RunSpec(method="look-ahead", rounds=1, batch=B, T=T))
    den = b.task.denoiser("oracle", "cpu")
    z0 = next(run_rounds(b.method, den, b.reward, b.protocol, batch=B, seed=0, sampler=b.sampler))["x"]
    anchor = Objective.linearised(b.reward, Cost(), z0, linear=False)
    grid = b.sampler.grid(den.schedule)

    def torch_round():  # exactly round 1 of run_rounds, without the anchor's reward gradient
        cost = Cost()
        obj = Objective(b.reward, cost, anchor=anchor.anchor, g=anchor.g, r_anchor=anchor.r_anchor)
        return b.method.sample(Counted(den, cost, B), obj, NoiseStream(sample_seeds(0, 1, B), den.shape), b.sampler)

    stream = NoiseStream(sample_seeds(0, 1, B), den.shape)
    draws = torch.stack([stream() for _ in range(len(grid) + 1)]).numpy()
    P = b.task.P.numpy().astype(np.float32)
    abar = den.schedule.alpha_bar.tolist()
    g, y = anchor.g.numpy(), anchor.target(b.method.delta).numpy()

    def numpy_round():
        return lookahead_round_numpy(P, abar, grid, draws[0], draws[1:], g, y, b.method.sigma, b.method.beta_coef)

    tP, tdraws, tg, ty = torch.from_numpy(P), torch.from_numpy(draws), torch.from_numpy(g), torch.from_numpy(y)

    def floor_round():
        return lookahead_round_torch(tP, abar, grid, tdraws[0], tdraws[1:], tg, ty, b.method.sigma, b.method.beta_coef)

    numpy_s, numpy_cpu, torch_cpu, floor_s = [], [], [], []

    def setup():  # a numpy and a floor round before every torch round: all under the same load
        t0, c0 = time.perf_counter(), time.process_time()
        numpy_round()
        numpy_s.append(time.perf_counter() - t0)
        numpy_cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()
        floor_round()
        floor_s.append(time.perf_counter() - t0)
        return (), {}

    def timed_torch_round():
        c0 = time.process_time()
        out = torch_round()
        torch_cpu.append(time.process_time() - c0)
        return out

    benchmark.group = f"oracle look-ahead round B={B} T={T}"
    x = benchmark.pedantic(timed_torch_round, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    diff = float(np.abs(x.numpy() - numpy_round()).max())
    assert diff <= 1e-4 * float(np.abs(x.numpy()).max()), f"numpy re-derivation disagrees: {diff}"
    torch_s = list(benchmark.stats.stats.data)
    floor_diff = float(np.abs(floor_round().numpy() - numpy_round()).max())
    assert floor_diff <= 1e-4 * float(np.abs(x.numpy()).max()), f"torch floor disagrees: {floor_diff}"
    n = len(torch_s)
    ratios = [a / q for a, q in zip(torch_s, numpy_s[-n:])]
    benchmark.extra_info.update(torch_round_s=torch_s, numpy_round_s=numpy_s[-n:], floor_round_s=floor_s[-n:],
                                ratio_to_numpy=statistics.median(ratios), max_abs_diff=diff,
                                floor_ratio_to_numpy=statistics.median(f / q for f, q in
                                                                       zip(floor_s[-n:], numpy_s[-n:])),
                                ratio_to_floor=statistics.median(a / f for a, f in zip(torch_s, floor_s[-n:])),
                                torch_round_cpu_s=torch_cpu[-ROUNDS:], numpy_round_cpu_s=numpy_cpu[-ROUNDS:],
                                cpu_ratio_to_numpy=statistics.median(
                                    a / n for a, n in zip(torch_cpu[-ROUNDS:], numpy_cpu[-ROUNDS:])))
