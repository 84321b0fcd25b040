"""DOODL-style end-to-end latent optimisation (Wallace et al. 2023; methods.md §3.8).

Only the initial noise x_T is optimised, through the whole sampler (run it with a deterministic sampler,
``--sampler ddim --eta 0``; with a stochastic one the injected noises stay fixed), by SGD with momentum,
and after every step x_T is rescaled to its initial per-sample norm (~ sqrt(dim)), which keeps it on the
typical Gaussian shell. Differences from the official code: backprop with per-step checkpointing instead
of the invertible EDICT sampler (same gradient, memory O(T) latents instead of O(1)), a per-sample
gradient-norm clip instead of the element-wise clip, and no extra random perturbation per step.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import param
from .dno import DNO
from .search import LogRange


@dataclass(frozen=True)
class DOODL(DNO):
    name = "doodl"
    summary = "optimise x_T only through a deterministic sampler, renormalise |x_T| after each step"
    search_space = {"lr": LogRange(0.1, 100.0)}
    lr: float = param(0.1, "SGD learning rate (0 = unguided)", min=0.0)
    optimizer: str = param("sgd", "optimiser over x_T", choices=("adamw", "adam", "sgd"))
    only_x_T: bool = param(True, "optimise x_T only (injected noises fixed)")
    renorm: bool = param(True, "after each step rescale x_T to its initial norm")
