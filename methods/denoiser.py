"""Denoiser protocol and the exact cost counter.

A denoiser predicts the noise eps_hat(x_t, t) of the VP forward process x_t = alpha x0 + sqrt(h) eps
(ggdm.md §1.4). x0_hat follows by Tweedie. Guidance code never sees the network type: it only calls
``eps`` on a ``Counted`` wrapper, which tallies forwards (NFE) and vector-Jacobian products (VJP)
through the denoiser exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .sampling import Schedule, x0_from_eps

__all__ = ["Denoiser", "Counted", "Cost", "as_time"]


@runtime_checkable
class Denoiser(Protocol):
    """eps(x: [B, *shape], t: [B] long) -> eps_hat [B, *shape]."""

    schedule: Schedule
    shape: tuple[int, ...]

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


def as_time(t: int | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A [B] long tensor of times on x's device."""
    if isinstance(t, torch.Tensor) and t.ndim == 1:
        return t.to(device=x.device, dtype=torch.long)
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


@dataclass
class Cost:
    """Cumulative cost: denoiser forwards, VJPs through the denoiser, reward evaluations. With ``batch`` = the
    number of returned samples B, every count is per returned sample: work on R rows counts ceil(R / B)."""

    nfe: int = 0
    vjp: int = 0
    reward_calls: int = 0
    batch: int | None = None

    def per_sample(self, rows: int) -> int:
        """How many units a call on ``rows`` rows costs each returned sample (1 when ``batch`` is unknown)."""
        return 1 if not self.batch else max(1, -(-int(rows) // self.batch))

    def as_dict(self) -> dict:
        return {"nfe": self.nfe, "vjp": self.vjp, "reward_calls": self.reward_calls}


class _CountVJP(torch.autograd.Function):
    """Identity whose backward increments a counter: one backward through the output = one VJP."""

    @staticmethod
    def forward(ctx, x, cost, n=1):
        ctx.cost, ctx.n = cost, n
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.cost.vjp += ctx.n
        return grad, None, None


_TIMES: dict = {}  # (t, rows, device) -> [rows] long tensor of t (``Counted._time``)
_TIMES_ROWS = [0]  # rows held in _TIMES


class Counted:
    """Wraps a denoiser; counts denoiser work per returned sample: with ``batch`` = the number of returned
    samples B, an ``eps`` call on R rows is ceil(R / B) forwards (a call on N·B rows, as best-of-N makes, is N
    forwards per sample) and a backward through its output as many VJPs; with ``batch=None`` every call counts
    one. Gradient checkpoint recomputation is counted as forwards too (honest cost).
    """

    def __init__(self, inner: Denoiser, cost: Cost | None = None, batch: int | None = None):
        self.inner = inner
        self.cost = cost if cost is not None else Cost()
        if batch is not None:
            self.cost.batch = batch
        self.schedule = inner.schedule
        self.shape = tuple(inner.shape)

    def _time(self, t, x: torch.Tensor) -> torch.Tensor:
        """The [rows] long tensor of an int t, made once per (t, rows, device) for every ``Counted`` (runs and rounds
        alike), so a denoiser may cache what it derives from it (the subspace oracle's sqrt(h_t) columns)."""
        if isinstance(t, torch.Tensor):
            return as_time(t, x)
        key = (t, x.shape[0], x.device)
        tt = _TIMES.get(key)
        if tt is None:
            if len(_TIMES) >= 1024 or _TIMES_ROWS[0] > (1 << 20):  # at most ~8 MB of time tensors
                _TIMES.clear()
                _TIMES_ROWS[0] = 0
            tt = _TIMES[key] = as_time(t, x)
            _TIMES_ROWS[0] += tt.numel()
        return tt

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:
        n = self.cost.per_sample(x.shape[0])
        self.cost.nfe += n
        out = self.inner.eps(x, self._time(t, x))
        if torch.is_grad_enabled() and out.requires_grad:
            out = _CountVJP.apply(out, self.cost, n)
        return out

    @property
    def analytic_vjp(self) -> bool:
        """Whether the denoiser gives u^T d eps_hat / d x_t itself (``eps_vjp(x, t, u, add=None)``, ``add`` + the VJP
        accumulated as autograd would; the subspace oracle, linear in x_t), so gradients through it need no graph."""
        return callable(getattr(self.inner, "eps_vjp", None))

    def eps_vjp(self, x: torch.Tensor, t, u: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser's analytic VJP ``add`` + u^T d eps_hat / d x_t (see ``analytic_vjp``), counted like a
        backward through ``eps``: ceil(rows / B) VJPs per returned sample."""
        self.cost.vjp += self.cost.per_sample(x.shape[0])
        return self.inner.eps_vjp(x, self._time(t, x), u, add)

    def x0_hat(self, x: torch.Tensor, t: int, eps: torch.Tensor | None = None) -> torch.Tensor:
        alpha, h = self.schedule.coeffs(t)
        return x0_from_eps(x, self.eps(x, t) if eps is None else eps, alpha, h)

    def __getattr__(self, name):  # parameters(), train() etc. of the inner network
        return getattr(self.inner, name)
