"""The GGDM paper's 1-D U-Net eps-network (ggdm.md §1.3), written anew: ~14.9 M parameters at dim 64.

The 64-vector is a 1-channel signal of length 64. Levels at widths dim*(1, 2, 4, 8); each level has two
FiLM-conditioned residual blocks (weight-standardised conv3 + GroupNorm(8) + SiLU) and linear attention,
then a stride-2 conv (length 64 -> 32 -> 16 -> 8); full attention in the middle; a mirrored decoder with two
skip concatenations per level. Non-default (slow to train on CPU): ``--denoiser unet1d``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .nets import timestep_embedding


class WSConv1d(nn.Conv1d):
    """Conv1d with weight standardisation (Qiao et al. 2019)."""

    def forward(self, x):
        w = self.weight
        mean = w.mean(dim=(1, 2), keepdim=True)
        var = w.var(dim=(1, 2), keepdim=True, unbiased=False)
        return F.conv1d(x, (w - mean) * (var + 1e-5).rsqrt(), self.bias, self.stride, self.padding)


class Block(nn.Module):
    def __init__(self, c_in, c_out, groups=8):
        super().__init__()
        self.conv, self.norm = WSConv1d(c_in, c_out, 3, padding=1), nn.GroupNorm(groups, c_out)

    def forward(self, x, scale_shift=None):
        x = self.norm(self.conv(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class ResnetBlock(nn.Module):
    def __init__(self, c_in, c_out, temb):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(temb, 2 * c_out))
        self.b1, self.b2 = Block(c_in, c_out), Block(c_out, c_out)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, e):
        scale_shift = self.mlp(e).unsqueeze(-1).chunk(2, dim=1)
        return self.b2(self.b1(x, scale_shift)) + self.skip(x)


class Attention(nn.Module):
    """Multi-head attention over positions; ``linear=True`` is the softmax-kernel linear variant."""

    def __init__(self, c, heads=4, dim_head=32, linear=False):
        super().__init__()
        self.heads, self.scale, self.linear = heads, dim_head**-0.5, linear
        self.norm = nn.GroupNorm(1, c)
        self.qkv = nn.Conv1d(c, 3 * heads * dim_head, 1, bias=False)
        self.out = nn.Conv1d(heads * dim_head, c, 1)

    def forward(self, x):
        b, _, n = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, n) for t in self.qkv(self.norm(x)).chunk(3, dim=1))
        if self.linear:
            q, k = q.softmax(dim=-2) * self.scale, k.softmax(dim=-1)
            ctx = torch.einsum("bhdn,bhen->bhde", k, v)
            o = torch.einsum("bhde,bhdn->bhen", ctx, q)
        else:
            attn = (torch.einsum("bhdi,bhdj->bhij", q * self.scale, k)).softmax(dim=-1)
            o = torch.einsum("bhij,bhdj->bhdi", attn, v)
        return x + self.out(o.reshape(b, -1, n))


class Unet1D(nn.Module):
    def __init__(self, dim: int = 64, dim_mults=(1, 2, 4, 8), length: int = 64):
        super().__init__()
        temb = dim * 4
        self.dim = dim
        self.t_mlp = nn.Sequential(nn.Linear(dim, temb), nn.GELU(), nn.Linear(temb, temb))
        self.init = nn.Conv1d(1, dim, 7, padding=3)
        dims = [dim] + [dim * m for m in dim_mults]
        pairs = list(zip(dims[:-1], dims[1:]))
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        for i, (ci, co) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(nn.ModuleList([
                ResnetBlock(ci, ci, temb), ResnetBlock(ci, ci, temb), Attention(ci, linear=True),
                nn.Conv1d(ci, co, 3, padding=1) if last else nn.Conv1d(ci, co, 4, stride=2, padding=1)]))
        mid = dims[-1]
        self.mid1, self.mid_attn, self.mid2 = ResnetBlock(mid, mid, temb), Attention(mid), ResnetBlock(mid, mid, temb)
        for i, (ci, co) in enumerate(reversed(pairs)):
            last = i == len(pairs) - 1
            up = nn.Conv1d(co, ci, 3, padding=1) if last else nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(co, ci, 3, padding=1))
            self.up.append(nn.ModuleList([
                ResnetBlock(co + ci, co, temb), ResnetBlock(co + ci, co, temb), Attention(co, linear=True), up]))
        self.final = ResnetBlock(2 * dim, dim, temb)
        self.head = nn.Conv1d(dim, 1, 1)

    def forward(self, x, t):
        e = self.t_mlp(timestep_embedding(t, self.dim))
        h = self.init(x.unsqueeze(1))
        r = h
        skips = []
        for b1, b2, attn, down in self.down:
            h = b1(h, e)
            skips.append(h)
            h = attn(b2(h, e))
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, e)), e)
        for b1, b2, attn, up in self.up:
            h = b1(torch.cat([h, skips.pop()], 1), e)
            h = attn(b2(torch.cat([h, skips.pop()], 1), e))
            h = up(h)
        return self.head(self.final(torch.cat([h, r], 1), e)).squeeze(1)
