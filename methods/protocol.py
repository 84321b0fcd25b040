"""Round protocols around a method: GGDM Algorithm 1 (iterative gradient-guided optimisation) and
Algorithm 2 (adds score fine-tuning on self-generated samples). ggdm.md §4.

Round 0 is an unguided batch z_0. Round k >= 1 linearises the reward at z_{k-1} (one backward for all
per-sample gradients g_i), then draws z_k with the method from per-sample noise: fresh draws every round
(``noise = "fresh"``), or each sample's round-1 noise again in every round (``noise = "reuse"``, as GGDM's
image code reuses its latents). Sample i of round k is a chain: its guidance uses only its own previous
sample. A one-shot run is ``rounds = 1``.
Methods with ``iterative = True`` (direct noise optimisation) run their own rounds via ``iterate``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator

import torch

from .base import Method, Objective
from .denoiser import Cost, Counted
from .registry import REGISTRY
from .sampling import NoiseStream, Sampler, sample_seeds


NOISE_MODES = {"fresh": "new per-sample noise every round",
               "reuse": "each sample's round-1 noise again in every later round (GGDM image code)"}


@dataclass(frozen=True)
class Protocol:
    """How rounds run. ``algorithm`` 1 or 2; ``linear``: per-step methods see the linearised reward."""

    rounds: int = 1
    algorithm: int = 1
    ft_lr: float = 1e-6       # Algorithm 2: Adam learning rate of the score-matching step
    ft_start: int = 40        # Algorithm 2: first optimisation round with fine-tuning
    ft_steps: int = 1         # Algorithm 2: Adam steps per round on the current batch
    linear: bool | None = None  # None: linear iff rounds > 1
    noise: str = "fresh"      # "fresh" noise every round, or "reuse" each sample's round-1 noise in rounds >= 1

    def __post_init__(self):
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if self.algorithm not in (1, 2):
            raise ValueError(f"algorithm must be 1 or 2, got {self.algorithm}")
        if not (self.ft_lr >= 0) or self.ft_start < 0 or self.ft_steps < 1:
            raise ValueError("need ft_lr >= 0, ft_start >= 0, ft_steps >= 1")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"unknown noise mode {self.noise!r}; choose one of {list(NOISE_MODES)}")


def denoising_loss(net, x0, schedule, generator=None, t=None) -> torch.Tensor:
    """DDPM simple loss on a batch of clean samples: t ~ U{0..T-1} (or the given t), MSE(eps_theta(x_t, t), eps)."""
    if t is None:
        t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator)
    t = t.to(x0.device)
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    ab = schedule.alpha_bar.to(x0)[t].reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.nn.functional.mse_loss(net(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t), eps)


def fine_tune(net: torch.nn.Module, opt, batch: torch.Tensor, schedule, steps: int, gen) -> float:
    """Algorithm 2: ``steps`` Adam steps of the DDPM denoising loss on the current batch only."""
    net.train()
    loss = torch.zeros(())
    for _ in range(steps):
        with torch.enable_grad():
            loss = denoising_loss(net, batch.detach(), schedule, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
    net.eval()
    return float(loss.detach())


def stacked_seeds(runs: list[tuple[int, int]], round_: int) -> list[int]:
    """The per-sample seeds of runs (seed, batch) stacked in one batch: each run's own, one after another."""
    return [s for seed, b in runs for s in sample_seeds(seed, round_, b)]


def run_rounds(method: Method, denoiser, reward, protocol: Protocol, *, batch: int, seed: int,
               sampler: Sampler = Sampler(), device="cpu", dtype=torch.float32,
               runs: list[tuple[int, int]] | None = None) -> Iterator[dict]:
    """Yield {"round", "x", "cost", "info"} for round 0 (unguided) .. protocol.rounds (guided).

    ``cost`` is cumulative. The denoiser is copied before Algorithm 2 fine-tunes it, so a cached
    pretrained network is never modified. ``runs`` = [(seed, batch), ...] stacks several runs of a batchable
    method in one batch (``batch`` and ``seed`` are then ignored): their rows follow each other and every row draws
    its own run's noise, so each slice is that run alone (bench/batched.py).
    """
    if runs is not None:
        if method.iterative or (protocol.algorithm == 2 and protocol.rounds > protocol.ft_start):
            raise ValueError("stacked runs need a per-round method without fine-tuning (their state would couple)")
        batch = sum(b for _, b in runs)
    seeds = (lambda k: stacked_seeds(runs, k)) if runs is not None else (lambda k: sample_seeds(seed, k, batch))
    cost = Cost()
    if method.iterative:
        if protocol.noise != "fresh":
            raise ValueError(f"noise={protocol.noise!r} applies to per-round methods; "
                             f"{method.name!r} runs its own rounds")
        yield from method.iterate(Counted(denoiser, cost, batch), reward, cost, protocol, batch=batch, seed=seed,
                                  sampler=sampler, device=device, dtype=dtype)
        return
    ft_net = ft_opt = None
    if protocol.algorithm == 2 and protocol.rounds > protocol.ft_start:
        if not any(True for _ in getattr(denoiser, "parameters", lambda: [])()):
            raise ValueError("Algorithm 2 fine-tunes the score network: use a trained denoiser, not the oracle")
        denoiser = copy.deepcopy(denoiser)
        ft_net = denoiser
        for p in ft_net.parameters():
            p.requires_grad_(True)
        ft_opt = torch.optim.Adam(ft_net.parameters(), lr=protocol.ft_lr, betas=(0.9, 0.99))
    den = Counted(denoiser, cost, batch)  # counts work per returned sample (rows / batch per call)
    shape = den.shape
    unguided = REGISTRY["unguided"]()
    draws = len(sampler.grid(den.schedule)) + 1  # a per-step round's draws: the stream's blocks are sized to it
    noise = NoiseStream(seeds(0), shape, device, dtype, draws=draws)
    x = unguided.sample(den, Objective(reward, cost), noise, sampler)
    yield {"round": 0, "x": x, "cost": cost, "info": {}}
    linear = protocol.rounds > 1 if protocol.linear is None else protocol.linear
    for k in range(1, protocol.rounds + 1):
        info = {}
        if ft_net is not None and k - 1 >= protocol.ft_start:
            gen = torch.Generator().manual_seed(int(sample_seeds(seed, k, 1, offset=10**9)[0]))
            info["loss_diffusion"] = fine_tune(ft_net, ft_opt, x, den.schedule, protocol.ft_steps, gen)
            cost.nfe += protocol.ft_steps  # each fine-tuning step: one forward and one backward
            cost.vjp += protocol.ft_steps
        obj = Objective.linearised(reward, cost, x, linear=linear)
        noise_round = 1 if protocol.noise == "reuse" else k
        noise = NoiseStream(seeds(noise_round), shape, device, dtype, draws=draws)
        x = method.sample(den, obj, noise, sampler)
        info.update(obj.info)
        yield {"round": k, "x": x, "cost": cost, "info": info}
