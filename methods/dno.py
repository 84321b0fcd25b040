"""Direct Noise Optimization (DNO; Tang et al. 2024, arXiv 2405.18881; methods.md §3.7).

The sampler is a deterministic map x0(Z) of its noises Z = {x_T, z_t}: x_T and the noise z_t injected at
every step of a stochastic sampler (DDPM, or DDIM with eta > 0). DNO maximises the reward of the final
sample over Z with a first-order optimiser,

    min_Z  -r(x0(Z)) + gamma R(Z)                    (R: probability regularisation, methods/dno_reg.py)

backpropagating through the whole chain (Sampler.step, the same step as the unguided sampler). Each step
is wrapped in ``torch.utils.checkpoint``, so memory is the stored latents plus one denoiser graph and every
backward step re-runs its forward (counted: one iteration costs K (2F + B), K = differentiated steps).

Rounds: round 0 is the unguided batch x0(Z_0), Z_0 drawn from the round-1 per-sample stream (the one
every per-step method's first guided round uses) in the unguided loop's order: x_T, then one draw per
step, the last unused. Round k is the sample after k optimiser steps, with cumulative cost, so each
round costs one iteration. ``lr = 0`` reproduces the unguided samples bit for bit.

Gradient estimators (``grad``): ``exact`` backprop of the reward; ``hybrid`` (DNO's non-differentiable
reward path): q perturbations Z + mu xi give g_x = sum_j (r_j - r_0)(x_j - x_0), normalised, and the
surrogate <g_x, x0(Z)> is backpropagated through the sampler; ``zo``: pure zeroth order in noise space,
g_Z = sum_j (r_j - r_0) xi_j / (q mu), no VJP at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint as ckpt

from .base import Method, Objective, bnorm2, param, per_sample
from .dno_reg import prob_reg
from .sampling import NoiseStream, sample_seeds
from .search import Choice, LogRange

__all__ = ["DNO", "NoiseChain"]


def _injects(sampler, sched, t: int, t_prev: int) -> bool:
    """Does the step (t -> t_prev) use its noise draw? Asked of Sampler.step itself."""
    one = torch.ones(1, dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    return bool(sampler.step(sched, zero, zero, zero, t, t_prev, one).abs().sum() > 0)


def _child_gens(gens: list[torch.Generator], salt: int) -> list[torch.Generator]:
    """One fresh generator per sample, seeded from that sample's own generator (batch-size independent)."""
    out = []
    for g in gens:
        s = int(torch.randint(0, 2**62, (1,), generator=g)) ^ salt
        out.append(torch.Generator().manual_seed(s))
    return out


class NoiseChain:
    """The sampler as a function of its noise rows Z[0] = x_T, Z[i + 1] = z_i (the draw of step i).

    Only the last K steps are differentiated: the first n - K - 1 steps run once without a graph, the
    bridge step n - K - 1 keeps its denoiser output (so its noise stays optimisable at no cost), and
    ``rows`` lists the optimisable rows that actually reach the sample.
    """

    def __init__(self, den, sampler, Z: list[torch.Tensor], last_k: int | None, only_x_T: bool,
                 checkpoint: bool):
        self.den, self.sampler, self.checkpoint = den, sampler, checkpoint
        self.sched = den.schedule
        self.grid = sampler.grid(self.sched)
        n = len(self.grid)
        self.n, self.K = n, n if last_k is None else min(int(last_k), n)
        self.lo = n - self.K
        self.Z = [z.detach().clone() for z in Z]
        if only_x_T and self.lo > 0:
            raise ValueError(f"optimising x_T only needs last_k >= the number of steps ({n}), got {last_k}")
        uses = [True] + [_injects(sampler, self.sched, t, tp) for t, tp in self.grid]
        cand = [0] if only_x_T else ([0] + list(range(1, n + 1)) if self.lo == 0 else list(range(self.lo, n + 1)))
        self.rows = [r for r in cand if uses[r]]
        if not self.rows:
            raise ValueError("nothing to optimise: with a deterministic sampler (eta = 0) only x_T matters; "
                             "use last_k = None (all steps)")
        self.x_lo = self.Z[0]
        self.bridge = None
        with torch.no_grad():
            for i in range(self.lo - 1):
                self.x_lo = self._step(i, self.x_lo, self.Z[i + 1])
            if self.lo > 0:
                t, _ = self.grid[self.lo - 1]
                self.bridge = self.den.eps(self.x_lo, t)

    def _step(self, i: int, x, z, eps=None):
        t, t_prev = self.grid[i]
        alpha, h = self.sched.coeffs(t)
        if eps is None:
            eps = self.den.eps(x, t)
        x0 = (x - math.sqrt(h) * eps) / alpha
        return self.sampler.step(self.sched, x, x0, eps, t, t_prev, z)

    def full(self, variables: list[torch.Tensor]) -> list[torch.Tensor]:
        Z = list(self.Z)
        for r, v in zip(self.rows, variables):
            Z[r] = v
        return Z

    def forward(self, variables: list[torch.Tensor]) -> torch.Tensor:
        """x0(Z): with a graph (checkpointed per step) if grad is enabled, else plain."""
        Z = self.full(variables)
        if self.lo == 0:
            x = Z[0]
        else:
            x = self._step(self.lo - 1, self.x_lo, Z[self.lo], eps=self.bridge)
        use_ckpt = self.checkpoint and torch.is_grad_enabled()
        for i in range(self.lo, self.n):
            if use_ckpt:
                x = ckpt(self._step, i, x, Z[i + 1], use_reentrant=False, preserve_rng_state=False)
            else:
                x = self._step(i, x, Z[i + 1])
        return x


@dataclass(frozen=True)
class DNO(Method):
    name = "dno"
    strength = "lr"
    iterative = True
    summary = "direct noise optimisation: optimise x_T and every injected z_t through the whole sampler"
    search_space = {"lr": LogRange(1e-3, 3.0), "optimizer": Choice(("adamw", "sgd"))}
    lr: float = param(1e-2, "optimiser learning rate (0 = unguided)", min=0.0)
    optimizer: str = param("adamw", "optimiser over the noises", choices=("adamw", "adam", "sgd"))
    momentum: float = param(0.9, "SGD momentum", min=0.0)
    weight_decay: float = param(0.01, "AdamW decoupled weight decay (torch default, as in the DNO code)", min=0.0)
    clip: float | None = param(1.0, "per-sample gradient-norm clip (None = off)", min=0.0)
    last_k: int | None = param(None, "differentiate only the last K steps (None = all)", min=1)
    only_x_T: bool = param(False, "optimise x_T only (injected noises fixed)")
    renorm: bool = param(False, "after each step rescale x_T to its initial norm (DOODL)")
    checkpoint: bool = param(True, "gradient checkpointing per step (memory: latents + one graph)")
    gamma: float = param(0.0, "weight of the probability regularisation R(Z)", min=0.0)
    reg_perms: int = param(16, "random permutations in R(Z) (DNO code: 100)", min=0)
    reg_d: int = param(4, "group size d of R(Z)", min=1)
    grad: str = param("exact", "gradient estimator", choices=("exact", "hybrid", "zo"))
    zo_samples: int = param(4, "perturbations q per iteration (hybrid / zo)", min=1)
    zo_mu: float = param(0.01, "perturbation scale mu (hybrid / zo)", min=0.0)

    def __post_init__(self):
        super().__post_init__()
        if self.grad != "exact" and not self.zo_mu > 0:
            raise ValueError(f"{self.name}: zo_mu must be > 0 for grad={self.grad!r}")

    # --- cost ---------------------------------------------------------------------------------
    def expected_cost(self, steps: int) -> tuple[int, int]:
        """(forwards, VJPs) of ONE optimisation iteration: backward (+ recompute) and the new forward."""
        K = steps if self.last_k is None else min(self.last_k, steps)
        q = self.zo_samples
        if self.grad == "zo":
            return K * (q + 1), 0
        recompute = K if self.checkpoint else 0
        extra = q * K if self.grad == "hybrid" else 0
        return K + recompute + extra, K

    # --- protocol -----------------------------------------------------------------------------
    def sample(self, den, obj, noise, sampler):
        """One optimisation iteration from the stream's noise; returns its samples."""
        x = None
        for out in self._run(den, obj.reward, obj.cost, noise, sampler, iterations=1):
            x = out["x"]
        return x

    def iterate(self, den, reward, cost, protocol, *, batch, seed, sampler, device, dtype):
        if protocol.algorithm != 1:
            raise ValueError(f"{self.name} runs its own rounds (optimiser iterations); algorithm 2 does not apply")
        # the first guided round's stream (seeds of round 1), as every per-step method's round 1 uses: then
        # lr = 0 gives exactly the unguided round-1 samples, and each later round costs one iteration
        noise = NoiseStream(sample_seeds(seed, 1, batch), den.shape, device, dtype)
        yield from self._run(den, reward, cost, noise, sampler, iterations=protocol.rounds)

    def _optimiser(self, variables):
        if self.optimizer == "adamw":
            return torch.optim.AdamW(variables, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer == "adam":
            return torch.optim.Adam(variables, lr=self.lr)
        return torch.optim.SGD(variables, lr=self.lr, momentum=self.momentum)

    def _run(self, den, reward, cost, noise: NoiseStream, sampler, iterations: int, on_step=None):
        """Rounds 0..iterations; ``on_step(variables)`` (tests) sees the noise after every update."""
        n = len(sampler.grid(den.schedule))
        Z = [noise() for _ in range(n + 1)]  # the unguided loop's order: x_T, then one draw per step
        chain = NoiseChain(den, sampler, Z, self.last_k, self.only_x_T or self.renorm, self.checkpoint)
        obj = Objective(reward, cost)
        variables = [chain.Z[r].clone().requires_grad_(True) for r in chain.rows]
        reg_gens = _child_gens(noise.gens, 0x5EED1)
        pert_gens = _child_gens(noise.gens, 0x5EED2)
        norm0 = variables[0].detach().flatten(1).norm(dim=1) if self.renorm else None
        opt = self._optimiser(variables)
        exact = self.grad != "zo"
        with torch.set_grad_enabled(exact):
            x = chain.forward(variables)
        yield {"round": 0, "x": x.detach(), "cost": cost, "info": {}}
        for k in range(1, iterations + 1):
            grads, info = self._grads(chain, obj, variables, x, reg_gens, pert_gens)
            if self.clip is not None:
                norm = torch.sqrt(sum(bnorm2(g) for g in grads))
                scale = torch.clamp(self.clip / (norm + 1e-6), max=1.0)
                grads = [g * per_sample(scale, g) for g in grads]
                info["grad_norm"] = float(norm.mean())
            for v, g in zip(variables, grads):
                v.grad = g
            opt.step()
            opt.zero_grad(set_to_none=True)
            if norm0 is not None:
                with torch.no_grad():
                    v = variables[0]
                    v.mul_(per_sample(norm0 / v.flatten(1).norm(dim=1), v))
            if on_step is not None:
                on_step([v.detach() for v in variables])
            with torch.set_grad_enabled(exact):
                x = chain.forward(variables)
            yield {"round": k, "x": x.detach(), "cost": cost, "info": info}

    def _reg(self, variables, gens):
        flat = torch.cat([v.flatten(1) for v in variables], 1)
        return prob_reg(flat, gens, self.reg_perms, self.reg_d)

    def _grads(self, chain, obj, variables, x, reg_gens, pert_gens):
        """Gradients of the loss -r(x0(Z)) + gamma R(Z) w.r.t. the variables (per-sample, one backward)."""
        info = {}
        with torch.enable_grad():
            reg = self._reg(variables, reg_gens) if self.gamma > 0 else None
            if reg is not None:
                info["reg"] = float(reg.detach().mean())
            if self.grad == "exact":
                loss = -obj.value(x).sum()
            else:
                r0 = obj.value(x.detach()).detach()
                xi, xs, rs = self._perturb(chain, obj, variables, pert_gens)
                if self.grad == "hybrid":
                    g_x = ((rs - r0.unsqueeze(0)).reshape(*rs.shape, *[1] * (x.ndim - 1)) * (xs - x.detach())).sum(0)
                    g_x = g_x / per_sample(g_x.flatten(1).norm(dim=1) + 1e-3, g_x)
                    loss = -(g_x * x).sum()
                else:
                    q = xs.shape[0]
                    dr = (rs - r0.unsqueeze(0)) / (q * self.zo_mu)  # [q, B]
                    g_zo = [-(dr.reshape(*dr.shape, *[1] * (e.ndim - 2)) * e).sum(0) for e in xi]
                    if reg is None:
                        return g_zo, info
                    g_reg = torch.autograd.grad(self.gamma * reg.sum(), variables)
                    return [a + b for a, b in zip(g_zo, g_reg)], info
            if reg is not None:
                loss = loss + self.gamma * reg.sum()
            grads = torch.autograd.grad(loss, variables, allow_unused=True)
        return [torch.zeros_like(v) if g is None else g for v, g in zip(variables, grads)], info

    def _perturb(self, chain, obj, variables, gens):
        """q perturbed copies Z + mu xi per sample (xi from the sample's own generator), sampled without
        a graph, one batch of B per copy (q forwards per step, counted as such).
        Returns (xi per variable [q, B, ...], x_j [q, B, ...], r_j [q, B])."""
        q, B = self.zo_samples, variables[0].shape[0]
        xi = []
        for v in variables:
            e = torch.stack([torch.randn((q, *v.shape[1:]), generator=g, dtype=v.dtype) for g in gens], 1)
            xi.append(e.to(v.device))  # [q, B, ...]
        with torch.no_grad():
            xs = torch.stack([chain.forward([v.detach() + self.zo_mu * e[j] for v, e in zip(variables, xi)])
                              for j in range(q)])
            rs = obj.value(xs.flatten(0, 1)).reshape(q, B)
        return xi, xs, rs
