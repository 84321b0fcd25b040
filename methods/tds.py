"""Twisted SMC with a gradient proposal: TDS (Wu et al., "Practical and Asymptotically Exact Conditional Sampling
in Diffusion Models", NeurIPS 2023, Algorithm 1) with DAS's optional tempering (Kim et al., "Test-time Alignment of
Diffusion Models without Reward Over-optimization", ICLR 2025, its tempered SMC); inference-scaling.md §3.

K particles per returned sample; the twist at step i (time t) is log psi_t(x_t) = lam_i r(x0_hat(x_t)). Proposal
(TDS's twisted proposal: the twisted kernel to first order):

    x_{t'} ~ q(. | x_t) = N(mu(x_t) + sigma_t^2 grad_{x_t} log psi_t(x_t), sigma_t^2 I)

with mu, sigma_t the base sampler's mean and noise scale (DDPM posterior, or DDIM(eta)). Incremental weight
(TDS's weights):

    w_t = p(x_{t'} | x_t) psi_{t'}(x_{t'}) / [ q(x_{t'} | x_t) psi_t(x_t) ],
    log p - log q = -sigma <z, g> - sigma^2 |g|^2 / 2    (x_{t'} = mu + sigma^2 g + sigma z, g = grad log psi_t)

with the initial weight psi_T(x_T) and the final one exp(lam r(x_0)) / psi of the last step, so the weighted
population targets p(x_0) exp(lam r(x_0)). Resampling (systematic, as TDS; multinomial optional) when ESS / K <
ess_threshold (1 = every step as TDS; 0.5 = DAS). The returned sample is one particle drawn ∝ its final weight.
Tempering (DAS's schedule): lam_i = min((1 + gamma)^i - 1, 1) lam at step i (gamma = ``temper``; 0 = TDS, lam_i = lam).

Cost per returned sample and step: K forwards with graph + K VJPs (one backward on the K·B rows) + K reward calls;
K more reward calls for the final weight. lam = 0: no twist, no gradient (K F per step), equal weights, particle 1
returned: the unguided sampler bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Method, bdot, bnorm2, param
from .search import Choice, LogRange
from .smc import RESAMPLING, Population, Stacked, step_sigma, take

__all__ = ["TDS", "log_proposal_ratio"]


def log_proposal_ratio(z: torch.Tensor, g: torch.Tensor, sigma: float) -> torch.Tensor:
    """log p(x'|x) - log q(x'|x) per row for x' = mu + sigma^2 g + sigma z, p = N(mu, sigma^2), q = N(mu + sigma^2 g,
    sigma^2): -sigma <z, g> - sigma^2 |g|^2 / 2 (0 when sigma = 0: both kernels are the same point mass)."""
    if sigma == 0:
        return torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    return -sigma * bdot(z.double(), g.double()) - sigma**2 * bnorm2(g.double()) / 2


@dataclass(frozen=True)
class TDS(Method):
    name = "tds"
    strength = "lam"
    summary = "twisted SMC (TDS; DAS tempering): K particles, gradient proposal, twist lam r(x0_hat), ESS resampling"
    search_space = {"lam": LogRange(0.1, 100.0), "temper": Choice((0.0, 0.008))}
    k: int = param(4, "particles K per returned sample (cost K (F + V) per step)", min=1)
    lam: float = param(1.0, "inverse temperature lam of the target p(x) exp(lam r(x)) (0 = unguided)", min=0.0)
    temper: float = param(0.0, "DAS tempering gamma: lam_i = min((1+gamma)^i - 1, 1) lam (0 = TDS, constant)",
                          min=0.0)
    resampling: str = param("systematic", "resampling scheme", choices=RESAMPLING)
    ess_threshold: float = param(1.0, "resample when ESS/K < this (1 = every step as TDS; 0.5 as DAS; 0 = never)",
                                 min=0.0)

    def step_cost(self):
        return (self.k, self.k) if self.lam > 0 else (self.k, 0)

    def lam_at(self, i: int) -> float:
        """lam_i of the twist at step i (0 = the first step, at x_T)."""
        if self.temper == 0:
            return self.lam
        return min((1 + self.temper) ** i - 1, 1.0) * self.lam

    def twist(self, den, obj, x, t: int, lam_i: float):
        """(eps, x0_hat, log psi_t [B'], grad_{x_t} log psi_t): one forward with graph and one VJP on all rows."""
        alpha, h = den.schedule.coeffs(t)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            eps = den.eps(xg, t)
            x0 = (xg - math.sqrt(h) * eps) / alpha
            r = obj.value(x0)
            (g,) = torch.autograd.grad(r.sum(), xg)
        return eps.detach(), x0.detach(), lam_i * r.detach().double(), lam_i * g

    def sample(self, den, obj, noise, sampler):
        K, B = self.k, noise.batch
        stream = Stacked(noise, K) if K > 1 else noise
        pop = Population(noise, K, self.resampling, self.ess_threshold, salt=0x7D5)
        sched = den.schedule
        logw = torch.zeros(K, B, dtype=torch.float64)
        carry = torch.zeros(K, B, dtype=torch.float64)  # log p/q - log psi of the previous step, completed next step
        with torch.no_grad():
            x = stream()
            for i, (t, t_prev) in enumerate(sampler.grid(sched)):
                if self.lam == 0:
                    alpha, h = sched.coeffs(t)
                    eps = den.eps(x, t)
                    x0 = (x - math.sqrt(h) * eps) / alpha
                    pop.resample(logw)  # equal weights: a no-op kept for the diagnostics
                    x = sampler.step(sched, x, x0, eps, t, t_prev, stream())
                    continue
                eps, x0, psi, g = self.twist(den, obj, x, t, self.lam_at(i))
                logw = logw + psi.cpu().reshape(K, B) + carry
                a, did = pop.resample(logw)
                if did.any():
                    x, eps, x0, g = take(x, a), take(eps, a), take(x0, a), take(g, a)
                    psi = take(psi.cpu().reshape(K, B), a.cpu())
                    logw = torch.where(did.cpu().unsqueeze(0), torch.zeros_like(logw), logw)
                sigma = step_sigma(sampler, sched, t, t_prev)
                z = stream()
                x = sampler.step(sched, x, x0, eps, t, t_prev, z) + sigma**2 * g
                carry = log_proposal_ratio(z, g, sigma).cpu().reshape(K, B) - psi.cpu().reshape(K, B)
            obj.info.update(pop.metrics())
            if self.lam == 0 or K == 1:
                return x[:B]
            r0 = obj.value(x).double().cpu().reshape(K, B)
            pick = pop.pick(logw + self.lam * r0 + carry)
        return x.reshape(K, B, *x.shape[1:])[pick.to(x.device), torch.arange(B, device=x.device)]
