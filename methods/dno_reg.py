"""Probability regularisation R(Z) of Direct Noise Optimization (Tang et al. 2024, arXiv 2405.18881;
methods.md §3.7 "Probability regularisation").

The optimised noises of one sample are flattened to D numbers and reshaped to an N x d matrix Z (rows are
N draws of a d-dimensional standard normal if the noise is typical). With the row mean m and the second
moment C = Z^T Z / N, two concentration bounds give log-probabilities of seeing such a Z:

    log P_m = min(-N |m|^2 / (2 d), -log 2)
    log P_C = min(-N (max(0, sqrt(1 + |C - I|_2) - 1 - sqrt(d / N)))^2 / 2, -log 2)

R(Z) = -(log P_m + log P_C + mean over random permutations of the same two terms). Here every term is
shifted by +log 2, so R = 0 exactly while the noise looks typical and R > 0 grows as it leaves the
Gaussian shell (the official code differs by the constant 4 log 2, which has no gradient).
Everything is per sample: sample i's permutations come from its own generator.
"""
from __future__ import annotations

import math

import torch

__all__ = ["concentration_terms", "prob_reg"]

LOG2 = math.log(2.0)


def concentration_terms(Z: torch.Tensor) -> torch.Tensor:
    """Shifted log P_m + log P_C (each <= 0) of row-grouped noise Z [..., N, d] -> [...]."""
    N, d = Z.shape[-2], Z.shape[-1]
    m = Z.mean(-2)
    log_pm = torch.clamp(-N * m.pow(2).sum(-1) / (2 * d) + LOG2, max=0.0)
    C = Z.transpose(-1, -2) @ Z / N
    eye = torch.eye(d, dtype=Z.dtype, device=Z.device)
    spec = torch.linalg.matrix_norm(C - eye, ord=2)
    dev = torch.clamp(torch.sqrt(1 + spec) - 1 - math.sqrt(d / N), min=0.0)
    log_pc = torch.clamp(-N * dev.pow(2) / 2 + LOG2, max=0.0)
    return log_pm + log_pc


def prob_reg(v: torch.Tensor, gens: list[torch.Generator] | None = None, perms: int = 16,
             d: int = 4) -> torch.Tensor:
    """R(Z) per sample for noise v [B, D] (D is truncated to a multiple of d). -> [B], >= 0.

    ``gens``: one generator per sample for the random permutations (None or ``perms = 0``: none).
    """
    if v.ndim != 2:
        raise ValueError(f"prob_reg expects [B, D] noise, got shape {tuple(v.shape)}")
    if d < 1 or v.shape[1] < 2 * d:
        raise ValueError(f"need group size d >= 1 and at least 2d numbers per sample, got d={d}, D={v.shape[1]}")
    B, D = v.shape
    N = D // d
    v = v[:, : N * d]
    terms = concentration_terms(v.reshape(B, N, d))
    if perms > 0 and gens is not None:
        if len(gens) != B:
            raise ValueError(f"need one generator per sample ({B}), got {len(gens)}")
        idx = torch.stack([torch.stack([torch.randperm(N * d, generator=g) for _ in range(perms)]) for g in gens])
        vp = torch.gather(v.unsqueeze(1).expand(B, perms, N * d), 2, idx.to(v.device))
        terms = terms + concentration_terms(vp.reshape(B, perms, N, d)).mean(1)
    return -terms
