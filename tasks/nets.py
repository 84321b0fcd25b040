"""Score networks for the vector tasks (eps-prediction, integer time input)."""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer times t [B] -> [B, dim] (Vaswani et al. 2017; DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float().unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """h + W2 SiLU(W1 LN(h) + E t_emb): a pre-norm residual MLP block with additive time conditioning
    (``norm=False``: no LN, so the block sees the scale of h)."""

    def __init__(self, width: int, norm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.temb = nn.Linear(width, width)

    def forward(self, h, e):
        te = self.temb(e)
        if te.shape[0] != h.shape[0]:  # e: time features shared by every row (MLPEps._time_features)
            te = te[:1]
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h)) + te))


class MLPEps(nn.Module):
    """Default vector eps-network: residual MLP blocks (~0.24 M parameters at width 128).

    The blocks predict v = alpha eps - sqrt(h) x0 (Salimans & Ho 2022) and the output is converted to
    eps = sqrt(h) x_t + alpha v. This keeps x0_hat = alpha x_t - sqrt(h) v well conditioned at t = T-1,
    where the clipped cosine schedule has alpha ~ 2.5e-4 and a plain eps-network's error is amplified by
    1/alpha in x0_hat (a few samples then diverge). ``pred="x0"``: the blocks predict x0_hat itself.

    ``polar=True``: the input x is given in polar form, direction x/|x| into the first layer and log|x| added to
    the time conditioning (an invertible re-encoding, no information lost). A norm-invariant target such as the
    sphere's x0_hat at small t then needs no fine cancellation of the radial noise.
    """

    SHARED_ROWS = 4  # _time_features

    def __init__(self, dim: int = 64, width: int = 128, depth: int = 4, temb: int = 128, norm: bool = True,
                 pred: str = "v", polar: bool = False, sigma_data: float | None = None):
        super().__init__()
        if pred not in ("v", "x0"):
            raise ValueError(f"pred must be 'v' or 'x0', got {pred!r}")
        if sigma_data is not None and pred != "x0":
            raise ValueError("sigma_data (preconditioned output) needs pred='x0'")
        self.pred, self.polar, self.sigma_data, self.dim = pred, polar, sigma_data, dim
        self.register_buffer("alpha_bar", torch.ones(1))  # set by set_schedule
        self.temb_dim = temb
        self.t_mlp = nn.Sequential(nn.Linear(temb, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.inp = nn.Linear(dim, width)
        if polar:
            self.r_mlp = nn.Sequential(nn.Linear(1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.blocks = nn.ModuleList(ResBlock(width, norm) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width) if norm else nn.Identity(), nn.Linear(width, dim))

    def x0_hat(self, x, t):
        """The network's x0_hat(x_t, t) (``pred="x0"`` only): the blocks' output, preconditioned if asked."""
        out = self._blocks(x, t)
        if self.sigma_data is None:
            return out
        c_skip, c_out = (c.unsqueeze(1) for c in self.precond(t))
        if self.polar:
            x_skip = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) * (self.sigma_data * self.dim**0.5)
        else:
            x_skip = x / self.alpha_bar[t].sqrt().unsqueeze(1)
        return c_skip * x_skip + c_out * out

    def precond(self, t):
        """EDM's (c_skip(t), c_out(t)) per row of t (c_out: the scale of the blocks' error in x0_hat)."""
        ab = self.alpha_bar[t]
        s2, sig2 = self.sigma_data**2, (1 - ab) / ab
        return s2 / (sig2 + s2), (sig2 * s2 / (sig2 + s2)).sqrt()

    def forward(self, x, t):
        ab = self.alpha_bar[t].unsqueeze(1)
        if self.pred == "x0":  # the network predicts x0_hat: eps = (x - alpha x0_hat) / sqrt(h)
            return (x - ab.sqrt() * self.x0_hat(x, t)) / (1 - ab).sqrt()
        return (1 - ab).sqrt() * x + ab.sqrt() * self._blocks(x, t)

    def _time_features(self, t):
        """t_mlp(embedding(t)): [rows, width]; [SHARED_ROWS, width] when more than SHARED_ROWS rows all share one t
        (a sampler step): the time path is then computed once, not per row (a quarter of the network's arithmetic
        per row at width 128; issue 14). Four rows, not one: on this CPU's GEMM a linear layer's row comes out bit for
        bit the same at any number of rows >= 4, but a product of 1-3 rows takes other kernels; so the shared rows
        equal the per-row ones exactly (tests/test_hot_path.py checks it, with gradients)."""
        k = self.SHARED_ROWS
        if t.shape[0] > k and bool((t == t[0]).all()):
            t = t[:k]
        return self.t_mlp(timestep_embedding(t, self.temb_dim))

    def _blocks(self, x, t):
        e = self._time_features(t)
        if self.polar:
            r = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
            e = (e if e.shape[0] == x.shape[0] else e[:1]) + self.r_mlp(torch.log(r))
            h = self.inp(x / r)
        else:
            h = self.inp(x)
        for blk in self.blocks:
            h = blk(h, e)
        return self.out(h)

    def set_schedule(self, alpha_bar: torch.Tensor) -> "MLPEps":
        self.alpha_bar = alpha_bar.to(torch.float32).clone()
        return self


def _unet1d(**kw):
    from .unet1d import Unet1D

    return Unet1D(**kw)


ARCHS = {"mlp": MLPEps, "unet1d": _unet1d}
# Per-architecture training defaults: the paper's U-Net uses GGDM's README settings (ggdm.md §1.5).
ARCH_TRAIN = {"unet1d": {"lr": 1e-4, "batch": 32, "steps": 40960}}
