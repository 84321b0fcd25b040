"""Subspace simulation of GGDM (Guo et al. 2024, §5; ggdm.md §1.1, §2, §7.2).

Data x = A^T u, u ~ N(0, I_16), A in R^{16x64} with orthonormal rows (fixed, stored in
``data/subspace_v1.npz``). P = A^T A projects onto the support. Oracle noise prediction (§7.2):

    eps*(x_t, t) = sqrt(h) P x_t + (I - P) x_t / sqrt(h),    E[x0 | x_t] = alpha P x_t
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .base import Reward, Task
from .tilt import GaussianTilt

_DATA = Path(__file__).parent / "data" / "subspace_v1.npz"


class SubspaceOracle(torch.nn.Module):
    """Exact eps* for x0 ~ N(0, P); linear in x_t, so its vector-Jacobian product is analytic (``eps_vjp``)."""

    def __init__(self, P: torch.Tensor, schedule, shape):
        super().__init__()
        self.register_buffer("P", P.double())
        h = 1 - schedule.alpha_bar  # float64 tables; cast to the input's dtype once (``_tables``)
        self.register_buffer("sqrt_h", h.sqrt())
        self.register_buffer("rsqrt_h", h.rsqrt())
        self.schedule, self.shape = schedule, tuple(shape)
        self._cast: dict = {}  # (dtype, device) -> (P, sqrt_h, rsqrt_h, P^T) cast once
        self._at: dict = {}  # (id(t), t's version, dtype, device) -> (t, sqrt_h[t], rsqrt_h[t]) gathered once

    def _tables(self, x, t):
        """P, P^T and the [B, 1] columns sqrt(h_t), 1/sqrt(h_t) in x's dtype and device: the same values as casting
        the float64 tables per call, cast once per dtype / device and gathered once per time tensor (``Counted``
        hands the same tensor for every call at a grid time, in every round and run; an in-place change of it bumps
        its version). At most 1024 entries: about five 200-step grids."""
        key = (x.dtype, x.device)
        c = self._cast.get(key)
        if c is None:
            P, sh, rsh = (b.to(device=x.device, dtype=x.dtype) for b in (self.P, self.sqrt_h, self.rsqrt_h))
            c = self._cast[key] = (P, sh, rsh, P.T)
        k = (id(t), t._version, *key)
        a = self._at.get(k)
        if a is None or a[0] is not t:
            if len(self._at) >= 1024:
                self._at.clear()
            a = self._at[k] = (t, c[1][t].unsqueeze(1), c[2][t].unsqueeze(1))
        return c[0], c[3], a[1], a[2]

    def eps(self, x, t):
        P, _, s, r = self._tables(x, t)
        Px = x @ P
        return s * Px + (x - Px) * r

    def eps_vjp(self, x, t, u, add=None):
        """u^T d eps*/d x_t per sample = u / sqrt(h) + (sqrt(h) u - u / sqrt(h)) P^T, without autograd (plus ``add``,
        summed first): the operations, and their order, of an autograd backward through ``eps``, so the result is
        bit for bit autograd's (tests/test_oracle_vjp.py)."""
        _, PT, s, r = self._tables(x, t)
        ur = u * r
        return (ur if add is None else add + ur) + (u * s - ur) @ PT


class Subspace(Task):
    name = "subspace"
    version = 1
    shape = (64,)
    summary = "x = A^T u on a 16-dim subspace of R^64, u ~ N(0, I) (GGDM linear-latent simulation)"
    # bench validate checks (metric, points, h_max, limit): worst grid time with h <= h_max must be <= limit
    # default network: x0-prediction (validated: the v-network leaked 0.42 of the guidance VJP off the support)
    arch_defaults = {"mlp": {"pred": "x0"}}
    validation = (
        ("eps_rel_mse", "on", 0.9, 0.1),
        ("x0_err", "on", 0.9, 0.1),
        ("vjp_rel_err", "on", 0.25, 0.5),
        ("leak", "on", 0.25, 0.2),
        ("leak", "off", 0.25, 0.2),
    )

    def __init__(self, T: int = 200):
        super().__init__(T)
        c = np.load(_DATA)
        self.A = torch.tensor(c["A"], dtype=torch.float32)          # [16, 64]
        self.P = self.A.T @ self.A                                    # [64, 64]
        th1, th2 = (torch.tensor(c[k], dtype=torch.float32) for k in ("theta1", "theta2"))
        b1, b2 = torch.full((64,), 4.0), torch.tensor(c["b2"], dtype=torch.float32)
        self.theta = {"theta1": th1, "theta2": th2}
        self.b = {"b1": b1, "b2": b2}

        def f1(theta):
            return lambda x: 10 - (x @ theta.to(x) - 3) ** 2

        def f2(b):
            return lambda x: 5 - 0.5 * (x - b.to(x)).norm(dim=1)

        def tilt(theta):  # the exact tilt of an f1 reward (tasks/tilt.py), one object per lam
            return lru_cache(maxsize=8)(lambda lam: GaussianTilt(self.A, theta, lam, c0=10.0, b=3.0))

        self.rewards = {
            "f1-theta2": Reward("f1-theta2", f1(th2), "10 - (theta2.x - 3)^2, theta2 mostly off-support (1:9)", 10.0,
                                tilted=tilt(th2)),
            "f1-theta1": Reward("f1-theta1", f1(th1), "10 - (theta1.x - 3)^2, theta1 on the subspace", 10.0,
                                tilted=tilt(th1)),
            "f2-b1": Reward("f2-b1", f2(b1), "5 - |x - b1|/2, b1 = 4*ones", 5.0),
            "f2-b2": Reward("f2-b2", f2(b2), "5 - |x - b2|/2, b2 = 4 + 3 N(0, I) (fixed)", 5.0),
        }

    def sample_data(self, n, generator):
        u = torch.randn(n, 16, generator=generator)
        return u @ self.A

    def split(self, x):
        """(x_par, x_perp): projection onto the support and the rest."""
        par = x @ self.P.to(x)
        return par, x - par

    def off_support(self, x):
        """GGDM ratio ||x_perp|| / ||x_par|| (ggdm.md §2.2)."""
        par, perp = self.split(x)
        return perp.norm(dim=1) / (par.norm(dim=1) + 1e-8)

    def metrics(self, x):
        par, perp = self.split(x)
        return {"off_perp": perp.norm(dim=1), "norm_par": par.norm(dim=1)}

    def oracle(self, device):
        return SubspaceOracle(self.P, self.schedule, self.shape).to(device)

    def push_off(self, x0, generator):
        """Clean points moved off the subspace: a random orthogonal component of norm 0.1 |x0| (ratio 0.1)."""
        z = torch.randn(x0.shape, generator=generator)
        perp = z - z @ self.P
        return x0 + 0.1 * x0.norm(dim=1, keepdim=True) * perp / perp.norm(dim=1, keepdim=True)
