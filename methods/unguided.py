"""Unguided ancestral sampling (DDPM, Ho et al. 2020, Algorithm 2; or DDIM(eta))."""
from __future__ import annotations

from dataclasses import dataclass

from .base import PerStepMethod


@dataclass(frozen=True)
class Unguided(PerStepMethod):
    name = "unguided"
    batchable = True
    summary = "plain sampler, reward ignored (the baseline every method is compared with)"
    search_space = {}  # nothing to tune
