"""Why trained look-ahead plateaus on the subspace: the validated networks' errors at clean points moved along the
subspace until theta2.x reaches a target value (the reward f1-theta2 = 10 - (theta2.x - 3)^2 is maximal at 3).

theta2 is mostly off the subspace (|P theta2| = 0.11), so theta2.x = 3 needs a move of 27 along P theta2 / |P theta2|,
where the data have a standard deviation of 1: far outside anything the network was trained on. The exact oracle
(linear in x_t) extrapolates; a network need not. Metrics as in ``bench validate`` (bench/validate.py measure_t).

    python tools/extrapolation.py [--targets 0,0.5,0.75,1,2,3] [--network-seeds 0,1,2] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHOW_T = (0, 10, 30, 60, 100)


def rows(network_seeds, targets, batch: int = 256):
    from bench.validate import measure_t
    from tasks import get_task

    task = get_task("subspace", 200)
    oracle, rw = task.oracle("cpu"), task.reward("f1-theta2")
    th2 = task.theta["theta2"]
    u = th2 @ task.P
    a = u.norm()
    u = u / a
    x0 = task.sample_data(batch, torch.Generator().manual_seed(0))
    for ns in network_seeds:
        den = task.denoiser("trained", "cpu", network_seed=ns, progress=False)
        for target in targets:
            xs = x0 + ((target - x0 @ th2) / a).unsqueeze(1) * u  # on the subspace, theta2.x = target exactly
            m = [measure_t(task, den, oracle, rw, xs, t, torch.Generator().manual_seed(1)) for t in SHOW_T]
            yield ns, target, m


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="0,0.5,0.75,1,2,3", help="theta2.x values to move the clean points to")
    p.add_argument("--network-seeds", default="0,1,2")
    p.add_argument("--out", default=None, help="write the table as markdown here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    targets = [float(v) for v in a.targets.split(",")]
    seeds = [int(v) for v in a.network_seeds.split(",")]
    head = "| network seed | theta2.x | " + " | ".join(f"x0 err t={t}" for t in SHOW_T) + " | " + \
           " | ".join(f"VJP rel err t={t}" for t in SHOW_T) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(SHOW_T))]
    for ns, target, m in rows(seeds, targets):
        lines.append(f"| {ns} | {target:g} | " + " | ".join(f"{o['x0_err']:.3f}" for o in m) + " | "
                     + " | ".join(f"{o['vjp_rel_err']:.3f}" for o in m) + " |")
        print(lines[-1], flush=True)
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
