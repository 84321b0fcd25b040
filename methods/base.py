"""The one method interface: a frozen dataclass of hyperparameters with ``sample``.

Per-step guidance methods subclass ``PerStepMethod`` and override ``guided_eps`` (score/eps shift) or
``step`` (anything else that stays inside one sampler step). Methods that change the loop itself
(recurrence, direct noise optimisation) override ``sample``. The reward reaches a method only through
an ``Objective``, which counts reward evaluations and gives per-sample gradients in one backward pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

import torch

from .denoiser import Cost, Counted
from .sampling import NoiseStream, Sampler, scalar, x0_from_eps

__all__ = ["param", "Method", "PerStepMethod", "Objective", "StepCtx", "bdot", "hp", "is_zero", "is_batchable",
           "x0_grad"]


def param(default: Any, help: str, *, min: float | None = None, choices: tuple | None = None):
    """A hyperparameter field: default, one-line meaning, optional lower bound / choices."""
    return field(default=default, metadata={"help": help, "min": min, "choices": choices})


def bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product <a_i, b_i> of [B, *shape] tensors -> [B]."""
    return (a * b).flatten(1).sum(1)


def grad_of_sum(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d(sum_i y_i)/dx in one backward: per-sample gradients when y_i depends on x_i only. The ones are handed to
    the backward directly (what ``y.sum()``'s backward would pass on), saving an op per call."""
    (g,) = torch.autograd.grad((y,), (x,), (torch.ones_like(y),))
    return g


def x0_grad(ctx: "StepCtx", x: torch.Tensor, f):
    """(eps_hat, x0_hat, f(x0_hat), grad_{x_t} sum_i f(x0_hat)_i) at x_t = x: one forward and one VJP through the
    denoiser, x0_hat = (x_t - sqrt(h) eps_hat) / alpha. ``f``: x0 -> [B], each value from its own row (the reward), or
    a [B, *shape] tensor v for the linear f = <v_i, x0_i>. A denoiser with an analytic VJP (``Counted.analytic_vjp``)
    needs no autograd graph through it: with u = grad f(x0_hat) (v itself, or one backward through f alone), the
    gradient is u / alpha + (-sqrt(h) u / alpha)^T d eps_hat/d x_t, summed in the order of autograd's backward
    (bit for bit the same for the subspace oracle: tests/test_oracle_vjp.py). Any other denoiser: autograd."""
    den, linear = ctx.den, isinstance(f, torch.Tensor)
    if den.analytic_vjp:
        eps = den.eps(x, ctx.t)
        x0 = x0_from_eps(x, eps, ctx.alpha, ctx.h)
        if linear:
            r, u = bdot(f, x0), f
        else:
            with torch.enable_grad():
                x0g = x0.detach().requires_grad_(True)
                r = f(x0g)
                u = grad_of_sum(r, x0g)
            r = r.detach()
        w = u / scalar(ctx.alpha, u)  # the Python floats' bits (``scalar``)
        return eps, x0, r, den.eps_vjp(x, ctx.t, (-w) * scalar(math.sqrt(ctx.h), w), add=w)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        eps = den.eps(xg, ctx.t)
        x0 = x0_from_eps(xg, eps, ctx.alpha, ctx.h)
        r = bdot(f, x0) if linear else f(x0)
        d = grad_of_sum(r, xg)
    return eps.detach(), x0.detach(), r.detach(), d


def bnorm2(a: torch.Tensor) -> torch.Tensor:
    """Per-sample squared norm -> [B] (a * a: torch's pow(2), bit for bit, in one cheaper op)."""
    a = a.flatten(1)
    return (a * a).sum(1)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a [B] tensor to broadcast against [B, *shape] (append_dims)."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


def hp(v, like: torch.Tensor):
    """A hyperparameter (or a float expression of hyperparameters) as it enters arithmetic with ``like``: a Python
    float as ``scalar`` gives it (the same bits, without torch's per-op copy); a batched group's per-sample float64
    [B] tensor cast to ``like``'s dtype and device and shaped to broadcast against it. Casting the float64 expression
    once, as torch casts a Python scalar, keeps a batched sample bit-identical to the same sample run alone."""
    if not isinstance(v, torch.Tensor):
        return scalar(v, like)
    return per_sample(v.to(device=like.device, dtype=like.dtype), like)


def is_zero(v) -> bool:
    """``v == 0`` for a hyperparameter that may be a batched group's per-sample tensor (all zero or none: the
    group key separates zero strengths, which change a step's structure)."""
    return bool((v == 0).all()) if isinstance(v, torch.Tensor) else v == 0


def is_batchable(cls) -> bool:
    """Whether runs of this method class may share one stacked batch: ``batchable = True`` declared on the class
    itself (a subclass that changes the maths does not inherit it)."""
    return bool(cls.__dict__.get("batchable", False))


class Objective:
    """What guidance maximises, per sample, plus the GGDM linearisation at the previous round.

    ``reward(x) -> [B]`` is the task reward. ``anchor`` z_k (the previous round's samples), ``g`` =
    grad r(z_k) and ``r_anchor`` = r(z_k) define the linear model r_lin(x) = r(z_k) + <g, x - z_k>
    (GGDM Algorithm 1). With ``linear=True`` (the iterative protocol) ``value`` uses r_lin, else the
    reward itself. Reward evaluations are counted in ``cost.reward_calls``.
    """

    def __init__(self, reward: Callable, cost: Cost, *, anchor=None, g=None, r_anchor=None, linear=False):
        self.reward, self.cost = reward, cost
        self.anchor, self.g, self.r_anchor, self.linear = anchor, g, r_anchor, linear
        self._targets: dict[float, torch.Tensor] = {}
        self.info: dict = {}  # per-round diagnostics a method reports (e.g. particle ESS): go to the record's metrics

    @classmethod
    def linearised(cls, reward: Callable, cost: Cost, anchor: torch.Tensor, linear: bool) -> "Objective":
        obj = cls(reward, cost, linear=linear)
        r, g = obj.value_and_grad(anchor, exact=True)
        obj.anchor, obj.g, obj.r_anchor = anchor.detach(), g, r
        return obj

    def value(self, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
        if self.linear and not exact and self.g is not None:
            return self.r_anchor + bdot(self.g, x - self.anchor)
        self.cost.reward_calls += self.cost.per_sample(x.shape[0])  # per returned sample, like the denoiser
        return self.reward(x)

    def value_and_grad(self, x: torch.Tensor, exact: bool = False):
        """Per-sample r(x_i) and grad r(x_i): one backward on the batch sum, never a batch Jacobian."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            r = self.value(x, exact=exact)
            g = grad_of_sum(r, x)
        return r.detach(), g.detach()

    def target(self, delta: float) -> torch.Tensor:
        """GGDM target y_i = <g_i, z_i> + delta (Algorithm 1, step 2)."""
        if self.g is None:
            raise RuntimeError("this method needs a linearised objective (an anchor batch); "
                               "run it through the round protocol")
        key = ("per-sample", id(delta)) if isinstance(delta, torch.Tensor) else delta  # a group's [B] deltas
        if key not in self._targets:
            gz = bdot(self.g, self.anchor)
            self._targets[key] = gz + hp(delta, gz)
        return self._targets[key]


@dataclass(frozen=True)
class Method:
    """Base of every method. Fields are hyperparameters (use ``param``); ``name``/``version`` are
    class attributes; ``strength`` names the field that scales guidance (0 must equal unguided)."""

    name: ClassVar[str] = "?"
    version: ClassVar[int] = 1
    strength: ClassVar[str | None] = None
    summary: ClassVar[str] = ""
    iterative: ClassVar[bool] = False  # True: the method runs its own rounds (``rounds``)
    search_space: ClassVar[dict | None] = None  # field -> methods.search dimension; every method declares its own
    # batched sweeps (bench/batched.py): runs of a ``batchable`` method (declared on the class itself) that differ
    # only in seeds and ``batch_params`` share one stacked batch; those fields then hold per-sample [B] tensors
    batchable: ClassVar[bool] = False
    batch_params: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{self.name}: parameter {f.name} must be finite, got {v}")
            lo = f.metadata.get("min")
            if lo is not None and v is not None and v < lo:
                raise ValueError(f"{self.name}: parameter {f.name} must be >= {lo}, got {v}")
            ch = f.metadata.get("choices")
            if ch is not None and v not in ch:
                raise ValueError(f"{self.name}: parameter {f.name} must be one of {list(ch)}, got {v!r}")

    def hparams(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def batch_key(self) -> tuple:
        """What runs sharing a batch must agree on: every hyperparameter except ``batch_params``, of which only
        whether each is None or zero (a zero strength takes the unguided branch, which draws noise differently)."""
        return tuple((k, ("none" if v is None else "zero" if v == 0 else "on") if k in self.batch_params else v)
                     for k, v in sorted(self.hparams().items()))

    @classmethod
    def stack(cls, methods: list["Method"], rows: list[int]) -> "Method":
        """One method for a stacked batch: ``methods[0]`` with every ``batch_params`` field whose value differs
        across ``methods`` replaced by a float64 tensor holding each method's value for each of its ``rows``
        (methods must share ``batch_key``; each was validated when it was built)."""
        import copy

        first = methods[0]
        if any(m.batch_key() != first.batch_key() or type(m) is not type(first) for m in methods):
            raise ValueError(f"{cls.name}: only methods with the same batch_key share a batch")
        out = copy.copy(first)
        counts = torch.tensor(rows)
        for k in cls.batch_params:
            vals = [getattr(m, k) for m in methods]
            if any(v != vals[0] for v in vals):
                object.__setattr__(out, k, torch.tensor(vals, dtype=torch.float64).repeat_interleave(counts))
        return out

    @classmethod
    def params(cls) -> list[tuple[str, Any, str]]:
        return [(f.name, f.default, f.metadata.get("help", "")) for f in fields(cls)]

    def sample(self, den: Counted, obj: Objective, noise: NoiseStream, sampler: Sampler) -> torch.Tensor:
        raise NotImplementedError

    def step_cost(self) -> tuple[int, int]:
        """(denoiser forwards, VJPs) per sampler step, by the method's formula (methods.md §2)."""
        return 1, 0

    def expected_cost(self, steps: int) -> tuple[int, int]:
        """(forwards, VJPs) of one guided round with ``steps`` sampler steps; checked by the contract suite."""
        nfe, vjp = self.step_cost()
        return nfe * steps, vjp * steps


@dataclass
class StepCtx:
    """Everything one sampler step knows: index i of n, grid times, schedule scalars."""

    i: int
    n: int
    t: int
    t_prev: int
    alpha: float  # sqrt(alpha_bar_t)
    h: float      # 1 - alpha_bar_t
    sampler: Sampler
    den: Counted


@dataclass(frozen=True)
class PerStepMethod(Method):
    """Shared ancestral loop: x_T from the stream, then one ``step`` per grid time.

    Exactly one noise draw per step (also on the last, unused), so all per-step methods consume the
    per-sample stream identically and zero strength reproduces the unguided sampler bit for bit.
    """

    def sample(self, den, obj, noise, sampler):
        grid = sampler.grid(den.schedule)
        policy = self.step_policy(len(grid))
        with torch.no_grad():
            x = noise()
            for i, (t, t_prev) in enumerate(grid):
                alpha, h = den.schedule.coeffs(t)
                ctx = StepCtx(i, len(grid), t, t_prev, alpha, h, sampler, den)
                x = self.step(ctx, obj, x, noise) if policy is None else policy(self, ctx, obj, x, noise)
        return x

    def step_policy(self, n: int):
        """Hook for step policies (methods/policy.py): None (default) guides every one of the n steps, else a
        callable ``(method, ctx, obj, x, noise) -> x_{t'}`` that decides per step whether and how guidance runs."""
        return None

    def step(self, ctx: StepCtx, obj: Objective, x: torch.Tensor, noise: NoiseStream) -> torch.Tensor:
        eps = self.guided_eps(ctx, obj, x)
        x0 = x0_from_eps(x, eps, ctx.alpha, ctx.h)
        z = noise()
        return ctx.sampler.step(ctx.den.schedule, x, x0, eps, ctx.t, ctx.t_prev, z)

    def guided_eps(self, ctx: StepCtx, obj: Objective, x: torch.Tensor) -> torch.Tensor:
        return ctx.den.eps(x, ctx.t)
