"""Step policies: which sampler steps compute guidance, and where the skipped guidance goes.

An orthogonal choice for every per-step method (methods.md §3.11, §5.1 item 8):

    all          guidance at every step (the default; the method runs unchanged)
    window       guidance while the remaining-trajectory fraction u_i = 1 - i/n is in [policy_lo, policy_hi]
    early-stop   guidance on the first m = round(policy_frac * n) steps only
    skip         uniform skipping: m evenly spaced steps i_j = floor(j n / m), nothing in between
    compress     Compress Guidance (Dinh, Liu & Xu 2024, arXiv 2408.11194): m steps on a power-law grid
                 i_j ~ n (j/m)^k (k > 1 puts them early, at high noise; k < 1 late), and the gradient mass
                 of the skipped steps is either accumulated onto the guided step (``accumulate``: the guided
                 step applies n_j times its guidance, n_j = the interval length up to the next guided step)
                 or the last guidance is reused at every skipped step (``reuse``).

"Guidance" of a step is measured as a displacement of x_{t'}: Delta = x_{t'}(guided) - S(x_t; eps(x_t), z),
S the plain sampler step from the same x_t and the step's first noise draw z. Accumulation returns
S + n_j Delta, reuse returns S + Delta_last at skipped steps. This needs no method cooperation and is
exactly "n_j times the gradient step" for methods whose displacement is linear in the gradient (DPS,
MPGD, naive, look-ahead); for methods with inner loops it is n_j times their net displacement. Unlike the
paper (whose grid loses steps to rounding collisions), colliding power-law steps are moved to the next free
index, so compress guides exactly m steps and compares with early stop / uniform skip at equal budgets.
Skipped steps cost one forward and draw one noise vector.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from .base import PerStepMethod, param
from .sampling import x0_from_eps

__all__ = ["POLICIES", "PolicyMethod", "guided_steps", "policy_weights", "plain_step"]

POLICIES = ("all", "window", "early-stop", "skip", "compress")
MODES = ("accumulate", "reuse")


def _budget(n: int, frac: float) -> int:
    return min(n, max(1, round(frac * n)))


@lru_cache(maxsize=256)
def guided_steps(policy: str, n: int, frac: float = 1.0, k: float = 1.0, lo: float = 0.0,
                 hi: float = 1.0) -> tuple[int, ...]:
    """Sorted indices i in 0..n-1 (0 = the first, noisiest step) at which guidance is computed."""
    if policy not in POLICIES:
        raise ValueError(f"unknown step policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if policy == "all":
        return tuple(range(n))
    if policy == "window":
        return tuple(i for i in range(n) if lo <= 1 - i / n <= hi)
    m = _budget(n, frac)
    if policy == "early-stop":
        return tuple(range(m))
    if policy == "skip":
        return tuple(sorted({math.floor(j * n / m) for j in range(m)}))
    out: list[int] = []
    for j in range(m):  # power law; collisions pushed forward, always leaving room for the rest
        i = round(n * (j / m) ** k)
        i = max(i, out[-1] + 1 if out else 0)
        out.append(min(i, n - (m - j)))
    return tuple(out)


@lru_cache(maxsize=256)
def policy_weights(policy: str, n: int, frac: float = 1.0, k: float = 1.0, lo: float = 0.0, hi: float = 1.0,
                   mode: str = "accumulate") -> tuple[float, ...]:
    """Per-step multiplier of the guidance displacement: 0 = skipped step, 1 = ordinary guided step, and
    for compress/accumulate the interval length n_j up to the next guided step (the last runs to the end)."""
    steps = guided_steps(policy, n, frac, k, lo, hi)
    w = [0.0] * n
    for j, i in enumerate(steps):
        if policy == "compress" and mode == "accumulate":
            w[i] = float((steps[j + 1] if j + 1 < len(steps) else n) - i)
        else:
            w[i] = 1.0
    return tuple(w)


def plain_step(ctx, x: torch.Tensor, noise) -> torch.Tensor:
    """The unguided sampler step (1 forward, 1 noise draw); bit-identical to ``PerStepMethod.step`` unguided."""
    eps = ctx.den.eps(x, ctx.t)
    x0 = x0_from_eps(x, eps, ctx.alpha, ctx.h)
    z = noise()
    return ctx.sampler.step(ctx.den.schedule, x, x0, eps, ctx.t, ctx.t_prev, z)


class _FirstEps:
    """Denoiser proxy that remembers the step's first prediction eps(x_t) (no extra forward)."""

    def __init__(self, den, x):
        self.den, self.x, self.eps0 = den, x, None

    def eps(self, x, t):
        out = self.den.eps(x, t)
        if self.eps0 is None:
            if not torch.equal(x.detach(), self.x):
                raise RuntimeError("step policy: a method's first denoiser call in a step must be at x_t")
            self.eps0 = out.detach()
        return out

    def x0_hat(self, x, t, eps=None):
        alpha, h = self.den.schedule.coeffs(t)
        return x0_from_eps(x, self.eps(x, t) if eps is None else eps, alpha, h)

    def __getattr__(self, name):
        return getattr(self.den, name)


class _FirstDraw:
    """Noise proxy that remembers the step's first draw."""

    def __init__(self, noise):
        self.noise, self.z0 = noise, None

    def __call__(self):
        z = self.noise()
        if self.z0 is None:
            self.z0 = z
        return z


class PolicyRun:
    """Per-sampling-pass state of a policy: the weights and the last displacement (for reuse)."""

    def __init__(self, weights, reuse: bool):
        self.weights, self.reuse, self.delta = weights, reuse, None

    def __call__(self, method, ctx, obj, x, noise):
        w = self.weights[ctx.i]
        if w == 0:
            out = plain_step(ctx, x, noise)
            return out if not (self.reuse and self.delta is not None) else out + self.delta
        if w == 1 and not self.reuse:
            return method.step(ctx, obj, x, noise)
        x_next, delta = guided_displacement(method, ctx, obj, x, noise)
        if self.reuse:
            self.delta = delta
            return x_next
        return (x_next - delta) + w * delta


def guided_displacement(method, ctx, obj, x, noise):
    """(x_{t'} of the method's guided step, its displacement from the plain step with the same x_t and z)."""
    den, draw = _FirstEps(ctx.den, x), _FirstDraw(noise)
    x_next = method.step(dataclasses.replace(ctx, den=den), obj, x, draw)
    eps0 = den.eps0 if den.eps0 is not None else ctx.den.eps(x, ctx.t)
    if draw.z0 is None:
        raise RuntimeError(f"{method.name}: a guided step must draw its sampler noise")
    x0 = x0_from_eps(x, eps0, ctx.alpha, ctx.h)
    ref = ctx.sampler.step(ctx.den.schedule, x, x0, eps0, ctx.t, ctx.t_prev, draw.z0)
    return x_next, x_next - ref


@dataclass(frozen=True)
class PolicyMethod(PerStepMethod):
    """A per-step method with a step policy. Subclasses implement ``step`` (or ``guided_eps``) as usual;
    a step's cost is ``step_cost()`` when guided and (1, 0) when skipped (override ``cost_at`` for
    methods whose guided steps differ, e.g. time-travel windows)."""

    policy: str = param("all", "step policy: which steps compute guidance", choices=POLICIES)
    policy_frac: float = param(1.0, "early-stop/skip/compress: fraction of steps guided (0 < f <= 1)", min=0.0)
    policy_k: float = param(2.0, "compress: power-law exponent k (> 1 guides early, noisy steps)", min=0.0)
    policy_mode: str = param("accumulate", "compress: accumulate skipped mass or reuse last guidance",
                             choices=MODES)
    policy_lo: float = param(0.0, "window: guide while u = 1 - i/n >= policy_lo", min=0.0)
    policy_hi: float = param(1.0, "window: guide while u = 1 - i/n <= policy_hi", min=0.0)

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.policy_frac <= 1:
            raise ValueError(f"{self.name}: policy_frac must be in (0, 1], got {self.policy_frac}")
        if self.policy_k <= 0:
            raise ValueError(f"{self.name}: policy_k must be > 0, got {self.policy_k}")
        if not self.policy_lo <= self.policy_hi:
            raise ValueError(f"{self.name}: need policy_lo <= policy_hi, got {self.policy_lo} > {self.policy_hi}")

    def weights(self, n: int) -> tuple[float, ...]:
        return policy_weights(self.policy, n, self.policy_frac, self.policy_k, self.policy_lo, self.policy_hi,
                              self.policy_mode)

    def guided_at(self, i: int, n: int) -> bool:
        return self.policy == "all" or self.weights(n)[i] > 0

    def step_policy(self, n: int):
        if self.policy == "all":
            return None
        return PolicyRun(self.weights(n), reuse=self.policy == "compress" and self.policy_mode == "reuse")

    def cost_at(self, i: int, n: int) -> tuple[int, int]:
        """(forwards, VJPs) of step i of n."""
        return self.step_cost() if self.guided_at(i, n) else (1, 0)

    def expected_cost(self, steps: int) -> tuple[int, int]:
        costs = [self.cost_at(i, steps) for i in range(steps)]
        return sum(c[0] for c in costs), sum(c[1] for c in costs)
