"""Best-of-N: the compute yardstick of inference-time scaling (inference-scaling.md §1; used as the reference row by
FK steering, Singhal et al. 2025, and TFG's ``bon_rate``).

For every returned sample i, draw N unguided samples x_i^(1..N) and return the one with the highest reward (hard),
or x_i^(j) with probability ∝ exp(lam r(x_i^(j))) (soft: importance resampling toward p(x) exp(lam r(x))).
Candidate 1 uses sample i's own noise stream, candidate j > 1 a stream seeded from (sample i's seed, j), so the
returned sample i depends only on its own seed, and N = 1 is the unguided sampler bit for bit. All N·B candidates
go through the denoiser as one batch, which the cost counter charges as N forwards per returned sample:
cost per returned sample = N × the unguided cost + N reward evaluations.
``lam = 0`` returns candidate 1 (a uniform pick among i.i.d. candidates has the same law; it keeps zero strength
equal to unguided bit for bit, as every method's contract requires).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import Method, hp, is_zero, param
from .sampling import NoiseStream
from .search import LogRange

__all__ = ["BestOfN"]


def _child_seed(seed: int, j: int) -> int:
    return int(np.random.SeedSequence([int(seed), 0xB0F, int(j)]).generate_state(2, np.uint64)[0] >> 1)


class _Stacked:
    """N per-sample streams as one [N·B, *shape] stream, candidate-major (row j·B + i); row block 0 is the
    original stream itself, so candidate 1 draws exactly what the unguided sampler would."""

    def __init__(self, noise: NoiseStream, n: int):
        seeds = [g.initial_seed() for g in noise.gens]
        self.first = noise
        self.rest = [NoiseStream([_child_seed(s, j) for s in seeds], noise.shape, noise.device, noise.dtype)
                     for j in range(1, n)]
        self.gens = noise.gens + [g for r in self.rest for g in r.gens]

    def __call__(self) -> torch.Tensor:
        return torch.cat([self.first()] + [r() for r in self.rest], 0)


@dataclass(frozen=True)
class BestOfN(Method):
    name = "best-of-n"
    batchable = True
    batch_params = ("lam",)
    strength = "lam"
    summary = "N unguided samples per returned sample; keep the highest reward (hard) or pick ∝ exp(lam r) (soft)"
    search_space = {"lam": LogRange(0.1, 100.0)}
    n: int = param(4, "unguided candidates N per returned sample (cost N × unguided; 1 = unguided)", min=1)
    lam: float | None = param(None, "None: keep the best (hard); a number: pick ∝ exp(lam r) (soft; 0 = candidate 1)",
                              min=0.0)

    def step_cost(self):
        return self.n, 0

    def sample(self, den, obj, noise, sampler):
        from .unguided import Unguided

        B = noise.batch
        stream = _Stacked(noise, self.n) if self.n > 1 else noise
        x = Unguided().sample(den, obj, stream, sampler)  # [N·B, ...]: den counts N forwards per returned sample
        if self.n == 1:
            return x
        with torch.no_grad():
            r = obj.value(x, exact=True).reshape(self.n, B)  # the true reward; counted as N per returned sample
        cand = x.reshape(self.n, B, *x.shape[1:])
        if self.lam is None:
            pick = r.argmax(0)
        elif is_zero(self.lam):
            pick = torch.zeros(B, dtype=torch.long, device=x.device)
        else:
            logits = (hp(self.lam, r[0].double()) * r.double()).cpu()
            pick = torch.tensor([int(torch.multinomial(torch.softmax(logits[:, i], 0), 1,
                                                       generator=torch.Generator().manual_seed(_child_seed(s, 0))))
                                 for i, s in enumerate(g.initial_seed() for g in noise.gens)], device=x.device)
        return cand[pick, torch.arange(B, device=x.device)]
