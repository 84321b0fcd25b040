"""Networks of the digits task: a small convolutional U-Net eps-network (Ronneberger et al. 2015 as used by
DDPM, Ho et al. 2020) and two small CNN classifiers, the reward's frozen feature network (``guide``) and a
held-out evaluator of another architecture and seed (``heldout``), trained and cached like the score network.

The U-Net predicts v = alpha eps - sqrt(h) x0 (Salimans & Ho 2022) and returns eps = sqrt(h) x_t + alpha v,
the conversion of ``tasks.nets.MLPEps``: with the clipped cosine schedule alpha_{T-1} ~ 2.5e-4, and a plain
eps-network's error would be amplified by 1/alpha in x0_hat = (x_t - sqrt(h) eps) / alpha.
"""
from __future__ import annotations

import json
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from .nets import timestep_embedding


class TimeResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, time embedding added in between, 1x1 skip when channels change."""

    def __init__(self, c_in: int, c_out: int, temb: int, groups: int = 8):
        super().__init__()
        self.n1, self.n2 = nn.GroupNorm(min(groups, c_in), c_in), nn.GroupNorm(min(groups, c_out), c_out)
        self.c1, self.c2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.e = nn.Linear(temb, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h, e):
        y = self.c1(F.silu(self.n1(h))) + self.e(e)[:, :, None, None]
        return self.skip(h) + self.c2(F.silu(self.n2(y)))


class UNetEps(nn.Module):
    """Convolutional U-Net on [B, C, S, S] images: one residual block per level, stride-2 down, nearest up
    with skip concatenation, two middle blocks. ~0.35 M parameters at ch = 32, mult = (1, 2)."""

    def __init__(self, channels: int = 1, size: int = 8, ch: int = 32, mult: tuple = (1, 2), temb: int = 128):
        super().__init__()
        if size % (2 ** (len(mult) - 1)):
            raise ValueError(f"image size {size} is not divisible by 2^{len(mult) - 1}")
        self.register_buffer("alpha_bar", torch.ones(1))  # set by set_schedule
        self.temb_dim = temb
        self.t_mlp = nn.Sequential(nn.Linear(temb, temb), nn.SiLU(), nn.Linear(temb, temb), nn.SiLU())
        widths = [ch * m for m in mult]
        self.inp = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList(TimeResBlock(widths[max(i - 1, 0)] if i else widths[0], w, temb)
                                  for i, w in enumerate(widths))
        self.pool = nn.ModuleList(nn.Conv2d(w, w, 3, stride=2, padding=1) for w in widths[:-1])
        self.mid = nn.ModuleList([TimeResBlock(widths[-1], widths[-1], temb) for _ in range(2)])
        self.up = nn.ModuleList(TimeResBlock(2 * w, w, temb) for w in widths)
        self.lift = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1) for i in range(len(widths) - 1))
        self.out = nn.Sequential(nn.GroupNorm(8, widths[0]), nn.SiLU(), nn.Conv2d(widths[0], channels, 3, padding=1))

    def forward(self, x, t):
        e = self.t_mlp(timestep_embedding(t, self.temb_dim))
        h, skips = self.inp(x), []
        for i, blk in enumerate(self.down):
            h = blk(h, e)
            skips.append(h)
            if i < len(self.pool):
                h = self.pool[i](h)
        for blk in self.mid:
            h = blk(h, e)
        for i in reversed(range(len(self.up))):
            h = self.up[i](torch.cat([h, skips[i]], 1), e)
            if i > 0:
                h = self.lift[i - 1](F.interpolate(h, scale_factor=2, mode="nearest"))
        v = self.out(h)
        ab = self.alpha_bar[t].reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - ab).sqrt() * x + ab.sqrt() * v

    def set_schedule(self, alpha_bar: torch.Tensor) -> "UNetEps":
        self.alpha_bar = alpha_bar.to(torch.float32).clone()
        return self


class GuideCNN(nn.Module):
    """The reward's feature network phi: smooth (SiLU, average pooling) so reward gradients are informative.
    features(x) -> [B, feat]; forward(x) -> class logits [B, 10]."""

    def __init__(self, channels: int = 1, width: int = 32, feat: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.AvgPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(8 * width, feat), nn.SiLU())
        self.head = nn.Linear(feat, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


class HeldoutCNN(nn.Module):
    """The held-out evaluator: another architecture (5x5 conv, ReLU, max pooling, ELU features) and seed, trained
    on a split disjoint from the guide's. Its features are the space of FID/KID/PR and of the off-support error."""

    def __init__(self, channels: int = 1, width: int = 24, feat: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(8 * width, feat), nn.ELU())
        self.head = nn.Linear(feat, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


CLASSIFIERS = {"guide": GuideCNN, "heldout": HeldoutCNN}
# Training of the classifiers: Adam, cross-entropy, random +-1 pixel shifts. "seed" differs per role.
CLF_TRAIN = {"guide": {"steps": 1500, "batch": 128, "lr": 2e-3, "seed": 11},
             "heldout": {"steps": 1500, "batch": 128, "lr": 2e-3, "seed": 23}}


def random_shift(x: torch.Tensor, generator: torch.Generator, pad: int = 1) -> torch.Tensor:
    """Translate each image by up to ``pad`` pixels (background -1 fills the border)."""
    B, _, H, W = x.shape
    xp = F.pad(x, (pad,) * 4, value=-1.0)
    dy, dx = (torch.randint(0, 2 * pad + 1, (B,), generator=generator) for _ in range(2))
    return torch.stack([xp[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])


def train_classifier(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, lr: float,
                     seed: int, progress: bool = False) -> dict:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    t0, ema = time.perf_counter(), None
    net.train()
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
        loss = F.cross_entropy(net(random_shift(x[idx], gen)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if progress and step % 500 == 0:
            print(f"  classifier step {step}/{steps} loss {ema:.3f}", file=sys.stderr)
    return {"train_seconds": time.perf_counter() - t0, "final_loss_ema": ema,
            "params": sum(p.numel() for p in net.parameters())}


def classifier_config(task, role: str) -> dict:
    """The cache key of classifier ``role``: task, version, image size, network and training config, split."""
    if role not in CLASSIFIERS:
        raise ValueError(f"unknown classifier role {role!r}; choose one of {sorted(CLASSIFIERS)}")
    cfg = {"task": task.name, "task_version": task.version, "arch": f"clf-{role}", "size": task.size,
           "net": dict(task.clf_net.get(role, {})), "train": dict(task.clf_train[role]), "split": task.clf_split[role]}
    return json.loads(json.dumps(cfg))  # JSON-normalised, as stored (tuples become lists)


def load_or_train_classifier(task, role: str, progress: bool = True) -> nn.Module:
    """The cached classifier ``role`` ('guide' | 'heldout') of ``task``, trained on its split on first use.

    Cached like the score network (tasks/pretrain.py): keyed by ``classifier_config``, the sha256 of the weights
    stored in the file and checked on load; on a cache miss the file shipped in tasks/data/nets under the same
    name is used, checked the same way; otherwise retrained. Returns a frozen eval-mode network carrying
    ``checkpoint`` (sha256[:16] of its weights)."""
    from .pretrain import checkpoint_path, load_cached, save_atomic, weights_hash

    cfg = classifier_config(task, role)
    path = checkpoint_path(cfg)
    net = load_cached(task, cfg, build=lambda: CLASSIFIERS[role](**cfg["net"]))
    if net is None:
        train_cfg = cfg["train"]
        torch.manual_seed(train_cfg["seed"])
        net = CLASSIFIERS[role](**cfg["net"])
        x, y = task.split(cfg["split"])
        if progress:
            print(f"training {task.name} classifier {role!r} on the {cfg['split']} split ({len(y)} images)",
                  file=sys.stderr)
        with torch.enable_grad():  # first use may come from inside a no_grad evaluation
            info = train_classifier(net, x, y, progress=progress, **train_cfg)
        net.eval()
        with torch.no_grad():
            xt, yt = task.split("test")
            info["test_accuracy"] = float((net(xt).argmax(1) == yt).float().mean())
        sd = net.state_dict()
        sha = weights_hash(sd)
        save_atomic({"config": cfg, "info": info, "state_dict": sd, "sha256": sha}, path)
        net.checkpoint = sha[:16]
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()
