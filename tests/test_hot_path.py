"""Issue 14, Build 3: the per-step overhead cuts change no bit.

``methods.sampling.scalar`` hands a Python float to torch as a cached 0-dim tensor (torch 2.14 copies a Python
scalar operand to a tensor on every op); the reference is the same expression with the Python float. ``MLPEps``
computes the time path once per step when every row shares t; the reference is the same network computing it per
row (``SHARED_ROWS`` above the batch size)."""
from __future__ import annotations

import math

import pytest
import torch

from methods.sampling import scalar
from tasks.nets import MLPEps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scalar_gives_the_python_floats_bits_in_every_binary_op(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 33, generator=gen, dtype=dtype) * 7
    y = torch.randn(16, 33, generator=gen, dtype=dtype)
    # floats that are not exact in float32: every rounding of the scalar shows
    for v in (math.sqrt(2.0), 1 / 3, -math.pi * 1e-5, 0.1, 1e30 / 7, 2.0):
        s = scalar(v, x)
        assert isinstance(s, torch.Tensor) and s.dtype == dtype and s.ndim == 0
        assert torch.equal(s * x, v * x) and torch.equal(x * s, x * v)
        assert torch.equal(x / s, x / v) and torch.equal(x + s, x + v) and torch.equal(x - s, x - v)
        assert torch.equal(y.reciprocal() * s, v / y)  # torch's float / tensor
        assert torch.equal(x - s * y, x - v * y)
    assert scalar(0.5, x) is scalar(0.5, x)  # cached: no tensor made per call


def test_scalar_leaves_what_it_cannot_match_unchanged():
    x = torch.ones(3)
    for v in (0.0, -0.0, 2, True):  # zero (the sign of -0.0 would be lost in the cache), non-floats
        assert scalar(v, x) is v
    h = torch.ones(3, dtype=torch.float16)  # half rounds a Python scalar differently: left to torch
    assert scalar(0.1, h) == 0.1 and not isinstance(scalar(0.1, h), torch.Tensor)
    t = torch.tensor([0.5, 2.0])
    assert scalar(t, x) is t  # a batched group's per-sample values pass through


def _net(polar: bool) -> MLPEps:
    torch.manual_seed(1)
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.05, 50, dtype=torch.float64), 0)
    net = MLPEps(width=32, depth=2, temb=32, pred="x0", polar=polar, sigma_data=0.125 if polar else None)
    return net.set_schedule(ab)


@pytest.mark.parametrize("polar", [False, True])
@pytest.mark.parametrize("rows", [5, 32, 300])
def test_shared_time_features_equal_per_row_ones_bit_for_bit(polar, rows):
    net = _net(polar)
    gen = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 64, generator=gen)
    u = torch.randn(rows, 64, generator=gen)
    for t0 in (0, 17, 49):
        t = torch.full((rows,), t0)
        outs = []
        for k in (MLPEps.SHARED_ROWS, 10**9):  # shared, then per row (the reference)
            net.SHARED_ROWS = k
            xg = x.clone().requires_grad_(True)
            eps = net(xg, t)
            (vjp,) = torch.autograd.grad(eps, xg, u)
            outs.append((eps.detach(), vjp))
        del net.SHARED_ROWS
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_time_features_are_shared_only_when_every_row_has_the_same_t():
    net = _net(False)
    k = MLPEps.SHARED_ROWS
    assert net._time_features(torch.full((40,), 7)).shape[0] == k
    mixed = torch.full((40,), 7)
    mixed[-1] = 8
    assert net._time_features(mixed).shape[0] == 40
    assert net._time_features(torch.full((k,), 7)).shape[0] == k  # at k rows or fewer: per row, as before
    assert net._time_features(torch.full((2,), 7)).shape[0] == 2
