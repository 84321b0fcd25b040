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
    """h + W2 SiLU(W1 LN(h) + E t_emb): a pre-norm residual MLP block with additive time conditioning."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.temb = nn.Linear(width, width)

    def forward(self, h, e):
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h)) + self.temb(e)))


class MLPEps(nn.Module):
    """Default vector eps-network: input skip + residual MLP blocks (~0.24 M parameters at width 128)."""

    def __init__(self, dim: int = 64, width: int = 128, depth: int = 4, temb: int = 128):
        super().__init__()
        self.temb_dim = temb
        self.t_mlp = nn.Sequential(nn.Linear(temb, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))

    def forward(self, x, t):
        e = self.t_mlp(timestep_embedding(t, self.temb_dim))
        h = self.inp(x)
        for blk in self.blocks:
            h = blk(h, e)
        return self.out(h)


ARCHS = {"mlp": MLPEps}
