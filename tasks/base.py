"""Task interface: data distribution + denoisers (exact oracle and trained network) + rewards +
off-support error. See DESIGN.md §4."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from methods.registry import suggest
from methods.sampling import Schedule

__all__ = ["Reward", "Task", "NetDenoiser", "DENOISER_KINDS"]

DENOISER_KINDS = {
    "oracle": "exact closed-form eps* of the task's data distribution",
    "trained": "the default small network, pretrained here and cached (bench pretrain)",
    "unet1d": "the GGDM paper's 1-D U-Net (14.9 M parameters; hours to train on CPU, meant for GPUs)",
}


@dataclass(frozen=True)
class Reward:
    """A per-sample differentiable reward r(x0) -> [B]; higher is better."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    summary: str
    optimum: float | None = None  # best attainable value, when known
    # closed-form tilt (tasks/tilt.py): lam -> the exact law p(x) exp(lam r(x)) / Z with sample, expected_reward,
    # score_shift (the h-transform term); None when the (task, reward) pair has no closed form
    tilted: Callable[[float], object] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class NetDenoiser(torch.nn.Module):
    """A trained eps-network as a suite denoiser: eps(x, t) = net(x, t). ``checkpoint``: sha256[:16] of the
    weights (None when unknown)."""

    def __init__(self, net: torch.nn.Module, schedule: Schedule, shape, checkpoint: str | None = None):
        super().__init__()
        self.net, self.schedule, self.shape = net, schedule, tuple(shape)
        self.checkpoint = checkpoint if checkpoint is not None else getattr(net, "checkpoint", None)

    def eps(self, x, t):
        return self.net(x, t)

    forward = eps


class Task:
    """Base class. Subclasses set name, version, shape, summary and fill ``self.rewards``."""

    name: str = "?"
    version: int = 1
    shape: tuple[int, ...] = ()
    summary: str = ""
    denoiser_kinds: dict[str, str] = DENOISER_KINDS
    # fair comparison (bench/tune.py): a batch is on support when its mean off-support is at most
    # support_tolerance x the unguided batch's (same denoiser and seeds) + support_floor
    support_tolerance: float = 2.0
    support_floor: float = 0.01

    def __init__(self, T: int = 200):
        self.schedule = Schedule(T)
        self.rewards: dict[str, Reward] = {}

    # --- to implement -------------------------------------------------------------------------
    def sample_data(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def off_support(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample distance from the data support, >= 0."""
        raise NotImplementedError

    def metrics(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra per-sample metrics."""
        return {}

    def oracle(self, device) -> torch.nn.Module:
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------
    def reward(self, name: str) -> Reward:
        if name not in self.rewards:
            raise suggest(f"reward of task {self.name!r}", name, self.rewards)
        return self.rewards[name]

    def denoiser(self, kind: str, device="cpu", progress: bool = True, network_seed: int = 0, **cfg):
        """'oracle' (exact) or a trained network from the cache (trained on first use). ``network_seed`` is
        the training seed of the network (0: the default network); ``cfg`` overrides the training config."""
        if kind not in self.denoiser_kinds:
            raise suggest(f"denoiser of task {self.name!r}", kind, self.denoiser_kinds)
        if kind == "oracle":
            if network_seed:
                raise ValueError("the oracle has no network seed (network_seed must be 0)")
            return self.oracle(device)
        from .pretrain import load_or_train

        if network_seed:
            cfg["seed"] = int(network_seed)
        net = load_or_train(self, arch=None if kind == "trained" else kind, progress=progress, **cfg)
        return NetDenoiser(net, self.schedule, self.shape).to(device).eval()

    def to(self, device):
        """Move reward constants to a device (tasks keep them as tensors on ``self.device``)."""
        return self
