"""Issue 14, Build 3: the subspace oracle's analytic VJP (no autograd graph through the denoiser) gives autograd's
gradients and a guided run's samples and counts bit for bit (reference: the autograd path it replaces)."""
from __future__ import annotations

import math

import pytest
import torch

from methods import make_method
from methods.base import bdot, grad_of_sum
from methods.protocol import Protocol, run_rounds
from tasks import get_task


class Autograd:
    """The oracle without ``eps_vjp``: gradients through it take the autograd path."""

    def __init__(self, oracle):
        self.oracle, self.schedule, self.shape = oracle, oracle.schedule, oracle.shape

    def eps(self, x, t):
        return self.oracle.eps(x, t)


@pytest.fixture(scope="module")
def task():
    return get_task("subspace", 20)


def test_eps_vjp_is_autograds_vjp_bit_for_bit(task):
    o = task.denoiser("oracle", "cpu")
    gen = torch.Generator().manual_seed(0)
    for t in (19, 10, 0):
        x, u, w = (torch.randn(8, 64, generator=gen) * 3 for _ in range(3))
        tt = torch.full((8,), t, dtype=torch.long)
        xg = x.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(o.eps(xg, tt), xg, u)
        assert torch.equal(o.eps_vjp(x, tt, u), ref)
        # with ``add``: the gradient of <w, x0_hat> through x0_hat = (x - sqrt(h) eps) / alpha, as autograd sums it
        alpha, h = task.schedule.coeffs(t)
        xg = x.clone().requires_grad_(True)
        ref = grad_of_sum(bdot(w, (xg - math.sqrt(h) * o.eps(xg, tt)) / alpha), xg)
        assert torch.equal(o.eps_vjp(x, tt, -(w / alpha) * math.sqrt(h), add=w / alpha), ref)


@pytest.mark.parametrize("name, params", [("look-ahead", {}), ("dps", {"zeta": 0.3})])
def test_guided_rounds_equal_the_autograd_path(task, name, params):
    o = task.denoiser("oracle", "cpu")
    m, reward = make_method(name, params), task.reward("f1-theta2")
    runs = [list(run_rounds(m, d, reward, Protocol(rounds=2), batch=8, seed=3)) for d in (o, Autograd(o))]
    for a, b in zip(*runs):
        assert torch.equal(a["x"], b["x"]), a["round"]
    assert runs[0][-1]["cost"].as_dict() == runs[1][-1]["cost"].as_dict()
    assert runs[0][-1]["cost"].vjp > 0
