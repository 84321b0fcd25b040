"""Sampling core: VP noise schedule, DDPM / DDIM(eta) steps, per-sample noise streams.

Notation (code -> paper, Ho et al. 2020; Song et al. 2021 "DDIM"; GGDM ggdm.md §1.4):
    alpha_bar[t]  -> \\bar\\alpha_t            cumulative signal fraction, t = 0..T-1
    alpha         -> \\sqrt{\\bar\\alpha_t}    (GGDM writes alpha_t for the square root)
    h             -> 1 - \\bar\\alpha_t        noise variance of the forward marginal
    x0_hat        -> Tweedie estimate (x_t - sqrt(h) eps) / alpha
    t_prev        -> the next (smaller) grid time t'; -1 means "clean data" (alpha_bar = 1)

Every function here is rank-agnostic: tensors are [B, *shape] and schedule scalars broadcast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

__all__ = ["Schedule", "Sampler", "NoiseStream", "ddpm_step", "ddim_step", "sample_seeds", "scalar"]


class Schedule:
    """Discrete VP schedule with T steps.

    ``kind="cosine"`` is Nichol & Dhariwal (2021) eq. 17 with s = 0.008 and beta clipped at 0.999, the
    schedule of the GGDM simulations (ggdm.md §1.4); ``kind="linear"`` is DDPM's beta in [1e-4, 0.02]
    rescaled by 1000/T.
    """

    def __init__(self, T: int = 200, kind: str = "cosine", s: float = 0.008):
        if int(T) != T or T < 2:
            raise ValueError(f"T must be an integer >= 2, got {T!r}")
        if kind not in ("cosine", "linear"):
            raise ValueError(f"unknown schedule kind {kind!r}; choose 'cosine' or 'linear'")
        self.T, self.kind = int(T), kind
        if kind == "cosine":
            f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
            beta = [min(1 - f(i + 1) / f(i), 0.999) for i in range(T)]
        else:
            lo, hi = 1e-4 * 1000 / T, 0.02 * 1000 / T
            beta = np.linspace(lo, hi, T).tolist()
        self.beta = torch.tensor(beta, dtype=torch.float64)
        self.alpha_bar = torch.cumprod(1 - self.beta, 0)
        self._abar = self.alpha_bar.tolist()

    def abar(self, t: int) -> float:
        """alpha_bar at grid time t; t = -1 is clean data (1.0)."""
        return 1.0 if t < 0 else self._abar[t]

    def coeffs(self, t: int) -> tuple[float, float]:
        """(alpha, h) = (sqrt(alpha_bar_t), 1 - alpha_bar_t) as Python floats."""
        ab = self.abar(t)
        return math.sqrt(ab), 1.0 - ab

    def config(self) -> dict:
        return {"T": self.T, "kind": self.kind}


_SCALARS: dict = {}  # (value, dtype, device) -> 0-dim tensor; cleared when it grows past _SCALARS_MAX
_SCALARS_MAX = 1 << 16


def scalar(v: float, like: torch.Tensor):
    """The Python float ``v`` as it enters arithmetic with ``like``: a cached 0-dim tensor in the dtype torch computes
    float32 / float64 ops in, so ``scalar(v, x) * x`` is bit for bit ``v * x`` (the float rounds to float32 exactly as
    torch rounds a Python scalar). Why: torch 2.14 turns every Python scalar operand into a double tensor and copies
    it to the op's dtype, one extra op (~5 us) per arithmetic step on the small tasks' hot path (issue 14). Other
    dtypes (half, integer) get ``v`` unchanged. ``a / t`` is ``t.reciprocal() * a`` in torch: write it that way."""
    dt = like.dtype
    if type(v) is not float or v == 0.0 or (dt is not torch.float32 and dt is not torch.float64):
        return v  # (zero too: -0.0 == 0.0 would share a cache entry)
    key = (v, dt, like.device)
    out = _SCALARS.get(key)
    if out is None:
        if len(_SCALARS) >= _SCALARS_MAX:
            _SCALARS.clear()
        out = _SCALARS[key] = torch.tensor(v, dtype=dt, device=like.device)
    return out


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha: float, h: float) -> torch.Tensor:
    """Tweedie: x0_hat = (x_t - sqrt(h) eps) / alpha (no clipping)."""
    return (x_t - scalar(math.sqrt(h), eps) * eps) / scalar(alpha, eps)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha: float, h: float) -> torch.Tensor:
    """Inverse of Tweedie: eps = (x_t - alpha x0) / sqrt(h)."""
    return (x_t - alpha * x0) / math.sqrt(h)


def ddpm_step(sched: Schedule, x_t, x0_hat, t: int, t_prev: int, z) -> torch.Tensor:
    """Ancestral DDPM step from the posterior q(x_{t'} | x_t, x0_hat) (Ho et al. eq. 6-7).

    On a strided grid the per-step quantities are alpha = abar_t / abar_t' and beta = 1 - alpha.
    No noise is added on the last step (t' = -1).
    """
    ab, ab_prev = sched.abar(t), sched.abar(t_prev)
    a_step = ab / ab_prev
    b_step = 1.0 - a_step
    c1 = math.sqrt(ab_prev) * b_step / (1 - ab)
    c2 = math.sqrt(a_step) * (1 - ab_prev) / (1 - ab)
    mean = scalar(c1, x0_hat) * x0_hat + scalar(c2, x_t) * x_t
    if t_prev < 0:
        return mean
    var = b_step * (1 - ab_prev) / (1 - ab)
    return mean + scalar(math.sqrt(var), z) * z


def ddim_step(sched: Schedule, x_t, x0_hat, eps, t: int, t_prev: int, eta: float, z) -> torch.Tensor:
    """DDIM(eta) step (Song et al. 2021 eq. 12): sqrt(abar')x0 + sqrt(1-abar'-sigma^2) eps + sigma z."""
    ab, ab_prev = sched.abar(t), sched.abar(t_prev)
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab)) * math.sqrt(max(1 - ab / ab_prev, 0.0))
    c_eps = math.sqrt(max(1 - ab_prev - sigma**2, 0.0))
    out = scalar(math.sqrt(ab_prev), x0_hat) * x0_hat + scalar(c_eps, eps) * eps
    if t_prev < 0 or sigma == 0.0:
        return out
    return out + scalar(sigma, z) * z


@dataclass(frozen=True)
class Sampler:
    """Which base sampler a run uses: ``ddpm`` (ancestral, default) or ``ddim`` with ``eta``.

    ``steps`` selects an evenly strided sub-grid of the schedule (None = all T steps).
    """

    kind: str = "ddpm"
    eta: float = 1.0
    steps: int | None = None

    def __post_init__(self):
        if self.kind not in ("ddpm", "ddim"):
            raise ValueError(f"unknown sampler {self.kind!r}; choose 'ddpm' or 'ddim'")
        if not (self.eta >= 0):
            raise ValueError(f"eta must be >= 0, got {self.eta}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def grid(self, sched: Schedule) -> list[tuple[int, int]]:
        """Pairs (t, t_prev) from t = T-1 down to 0, t_prev = -1 on the last step."""
        n = sched.T if self.steps is None else min(self.steps, sched.T)
        ts = sorted({int(round(v)) for v in np.linspace(sched.T - 1, 0, n)}, reverse=True)
        return list(zip(ts, ts[1:] + [-1]))

    def step(self, sched: Schedule, x_t, x0_hat, eps, t: int, t_prev: int, z) -> torch.Tensor:
        if self.kind == "ddpm":
            return ddpm_step(sched, x_t, x0_hat, t, t_prev, z)
        return ddim_step(sched, x_t, x0_hat, eps, t, t_prev, self.eta, z)


def sample_seeds(seed: int, round_: int, n: int, offset: int = 0) -> list[int]:
    """One independent 63-bit seed per sample i (offset + 0..n-1), from (run seed, round, i).

    Sample i's seed does not depend on the batch size, so results are batch-size independent.
    """
    return [_sample_seed(int(seed), int(round_), offset + i) for i in range(n)]


@lru_cache(maxsize=1 << 16)
def _sample_seed(seed: int, round_: int, i: int) -> int:
    """Sample i's seed (``sample_seeds``), cached: ~30 us of numpy per call, and a sweep asks for the same seeds for
    every configuration."""
    return int(np.random.SeedSequence([seed, round_, i]).generate_state(2, np.uint64)[0] >> 1)


class NoiseStream:
    """Per-sample Gaussian noise, drawn in blocks from one generator per sample.

    Each call returns the next [B, *shape] draw. Sample i's draws depend only on its own seed, so a
    batch of 8 reproduces the first 8 rows of a batch of 32 exactly. Every method must consume the
    stream identically across the batch (one call = one draw for every sample).

    ``draws``: how many draws the caller expects to take (a round: its steps + 1). The blocks are then sized to it,
    at most ``MAX_BLOCK_NUMBERS`` numbers per block, so a 33-draw round no longer draws 64. The values do not depend
    on the block: torch fills a generator's normals as uniforms, then Box-Muller in 16-number chunks, so blocks of a
    multiple of 16 numbers (at least 16) continue one sequence (tests/test_sampling.py checks it against ``block``).
    """

    MAX_BLOCK_NUMBERS = 1 << 22  # numbers per block buffer (16 MB in float32) when sized by ``draws``

    def __init__(self, seeds, shape, device="cpu", dtype=torch.float32, block: int = 64, draws: int | None = None):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.shape, self.device, self.dtype = tuple(shape), torch.device(device), dtype
        self.block = block if draws is None else self._block_for(int(draws))
        self._buf: torch.Tensor | None = None
        self._pos = 0
        self.draws = 0

    @property
    def batch(self) -> int:
        return len(self.gens)

    def _block_for(self, draws: int) -> int:
        """Draws per block for ``draws`` expected draws: a multiple of ``m`` (so a block is a multiple of 16 numbers,
        at least 16), as few blocks as ``MAX_BLOCK_NUMBERS`` allows, the draws split evenly over them."""
        numel = math.prod(self.shape)
        m = 16 // math.gcd(numel, 16)  # m * numel = lcm(numel, 16): a multiple of 16, and >= 16
        cap = max(m, self.MAX_BLOCK_NUMBERS // max(1, self.batch * numel) // m * m)
        n_blocks = -(-max(draws, 1) // cap)
        per = -(-max(draws, 1) // n_blocks)
        return -(-per // m) * m

    def _refill(self):
        rows = [torch.randn((self.block, *self.shape), generator=g, dtype=self.dtype) for g in self.gens]
        self._buf = torch.stack(rows, 1).to(self.device)  # [block, B, *shape]
        self._pos = 0

    def __call__(self) -> torch.Tensor:
        if self._buf is None or self._pos >= self.block:
            self._refill()
        out = self._buf[self._pos]
        self._pos += 1
        self.draws += 1
        return out
