"""Adapter: a diffusers ``UNet2DModel`` and its scheduler as a suite denoiser (optional extra ``diffusers``).

The scheduler contributes only its alpha_bar table (``alphas_cumprod``); sampling stays in the suite's own loop
(methods/sampling.py, DDPM Ho et al. 2020 eq. 6-7 / DDIM Song et al. 2021 eq. 12) on a ``Schedule`` built from that
table, so every registered method runs on a real checkpoint unchanged. The model's prediction is converted to
eps whatever its ``prediction_type``: eps as is, x0 -> eps = (x_t - alpha x0) / sqrt(h), v -> eps = sqrt(h) x_t
+ alpha v (Salimans & Ho 2022). diffusers is imported lazily (its import takes seconds).
"""
from __future__ import annotations

from pathlib import Path

import torch

from methods.sampling import Schedule


class TableSchedule(Schedule):
    """A Schedule whose alpha_bar is given (a pretrained model's), instead of the cosine/linear formula."""

    def __init__(self, alpha_bar):
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64).flatten()
        if ab.numel() < 2 or not bool(((ab > 0) & (ab < 1)).all()) or not bool((ab[1:] <= ab[:-1]).all()):
            raise ValueError("alpha_bar must be a decreasing table of values in (0, 1) with at least 2 entries")
        self.T, self.kind = ab.numel(), "table"
        self.alpha_bar = ab
        prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
        self.beta = 1 - ab / prev
        self._abar = ab.tolist()

    def config(self) -> dict:
        return {"T": self.T, "kind": "table", "alpha_bar_last": self._abar[-1]}


class DiffusersDenoiser(torch.nn.Module):
    """eps(x, t) of a diffusers UNet2DModel; ``schedule`` from the scheduler's alphas_cumprod."""

    def __init__(self, unet, scheduler):
        super().__init__()
        self.unet = unet.eval().requires_grad_(False)
        cfg = scheduler.config
        self.prediction_type = cfg.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")
        self.schedule = TableSchedule(scheduler.alphas_cumprod)
        self.register_buffer("alpha_bar", self.schedule.alpha_bar.to(torch.float32))
        c, s = unet.config.in_channels, unet.config.sample_size
        s = tuple(s) if isinstance(s, (list, tuple)) else (s, s)
        self.shape = (c, *s)

    def eps(self, x, t):
        t = torch.as_tensor(t, device=x.device).long().expand(x.shape[0])
        out = self.unet(x, t).sample
        if self.prediction_type == "epsilon":
            return out
        ab = self.alpha_bar.to(x)[t].reshape(-1, *([1] * (x.ndim - 1)))
        alpha, sqrt_h = ab.sqrt(), (1 - ab).sqrt()
        if self.prediction_type == "sample":
            return (x - alpha * out) / sqrt_h
        return sqrt_h * x + alpha * out  # v_prediction

    forward = eps


def load_diffusers(src: str | Path, device="cpu", subfolder_unet: str | None = "unet",
                   subfolder_scheduler: str | None = "scheduler") -> DiffusersDenoiser:
    """Load ``UNet2DModel`` + ``DDPMScheduler`` config from a local directory (pipeline layout ``unet/`` +
    ``scheduler/``, or model files at the top with ``scheduler_config.json``) or a hub id where reachable."""
    try:
        from diffusers import DDPMScheduler, UNet2DModel
    except ImportError as e:  # optional extra
        raise ImportError("the diffusers adapter needs the optional extra: "
                          "pip install 'guidance-bench[diffusers]'") from e
    src = str(src)
    local = Path(src).is_dir()

    def load(cls, sub, **kw):
        if sub and (not local or (Path(src) / sub).is_dir()):
            try:
                return cls.from_pretrained(src, subfolder=sub, **kw)
            except OSError:  # a hub repo with the files at the top level
                if local:
                    raise
        return cls.from_pretrained(src, **kw)

    unet = load(UNet2DModel, subfolder_unet, low_cpu_mem_usage=False)
    return DiffusersDenoiser(unet, load(DDPMScheduler, subfolder_scheduler)).to(device)
