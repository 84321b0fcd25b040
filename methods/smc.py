"""Shared machinery of the particle methods (FK steering, twisted SMC, SVDD): per-sample particle populations,
normalised effective sample size, multinomial and systematic resampling, ancestry diagnostics.

Layout: K particles of B returned samples are K·B rows, particle-major (row k·B + i is particle k of sample i),
as ``best_of_n._Stacked`` draws them: particle 1 of sample i uses sample i's own noise stream, particle k > 1 a
stream seeded from (sample i's seed, k). Every resampling decision and every uniform is per returned sample (its
own generator, seeded from its own seed), so sample i's result does not depend on the batch it runs in.

Notation (Doucet & Johansen 2009, "A tutorial on particle filtering and smoothing"; Kitagawa 1996):
    logw [K, B]  unnormalised log importance weights, one column per returned sample
    W            normalised weights, softmax of logw over the K particles
    ESS / K      (sum W)^2 / (K sum W^2) in (1/K, 1]: 1 = equal weights, 1/K = one particle carries everything
    a [K, B]     ancestor indices A_k: after resampling particle k continues particle a[k]
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .best_of_n import _Stacked as Stacked  # noqa: F401  (re-exported: K particle streams as one)

__all__ = ["Stacked", "Population", "normalised_ess", "systematic", "multinomial", "take", "step_sigma",
           "child_seed", "RESAMPLING"]

RESAMPLING = ("systematic", "multinomial")


def child_seed(seed: int, salt: int) -> int:
    """A 63-bit seed derived from a returned sample's seed and a salt (one independent generator per use)."""
    return int(np.random.SeedSequence([int(seed), 0x5AC, int(salt)]).generate_state(2, np.uint64)[0] >> 1)


def normalised_ess(logw: torch.Tensor) -> torch.Tensor:
    """ESS / K per column of logw [K, B]: exp(2 logsumexp(logw) - logsumexp(2 logw)) / K (Kong 1992)."""
    K = logw.shape[0]
    ess = torch.exp(2 * torch.logsumexp(logw, 0) - torch.logsumexp(2 * logw, 0)) / K
    return torch.where((logw == logw[:1]).all(0), torch.ones_like(ess), ess)  # equal weights: exactly 1


def _inverse_cdf(W: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """For weights W [K, B] (columns sum to 1) and positions pos [n, B] in [0, 1): the smallest k with
    W_1 + .. + W_k > pos, per column -> [n, B]."""
    cdf = torch.cumsum(W.double(), 0).T.contiguous()  # [B, K]
    idx = torch.searchsorted(cdf, pos.double().T.contiguous(), right=True).T
    return idx.clamp_(max=W.shape[0] - 1)  # a last cdf entry of 1 - 1e-16 must not index past K


def systematic(W: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Systematic resampling (Kitagawa 1996): one uniform u [B] per column, positions (k + u) / K. Particle k is
    copied floor(K W_k) or ceil(K W_k) times; equal weights give the identity
    (for u > 0: u = 0 puts positions on the rounded cell borders)."""
    K = W.shape[0]
    pos = (torch.arange(K, dtype=torch.float64).unsqueeze(1) + u.double().unsqueeze(0)) / K
    return _inverse_cdf(W, pos)


def multinomial(W: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Multinomial resampling: K i.i.d. uniforms u [K, B] per column through the inverse CDF of W."""
    return _inverse_cdf(W, u)


def take(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Rows of a particle-major [K·B, ...] (or [K, B, ...]) tensor after ancestors a [K, B]: row k·B + i becomes
    row a[k, i]·B + i."""
    K, B = a.shape
    flat = (a * B + torch.arange(B, device=a.device)).reshape(-1).to(x.device)
    if x.shape[0] == K and x.ndim >= 2 and x.shape[1] == B:
        return x.reshape(K * B, *x.shape[2:])[flat].reshape(x.shape)
    return x[flat]


def step_sigma(sampler, sched, t: int, t_prev: int) -> float:
    """The noise scale sigma of one ``sampler.step`` (x_{t'} = mean + sigma z): the DDPM posterior standard
    deviation (Ho et al. 2020) or DDIM's sigma_t(eta) (Song et al. 2021); 0 on the last step."""
    if t_prev < 0:
        return 0.0
    ab, ab_prev = sched.abar(t), sched.abar(t_prev)
    if sampler.kind == "ddpm":
        return math.sqrt((1 - ab / ab_prev) * (1 - ab_prev) / (1 - ab))
    return sampler.eta * math.sqrt((1 - ab_prev) / (1 - ab)) * math.sqrt(max(1 - ab / ab_prev, 0.0))


class Population:
    """Resampling and diagnostics for K particles of each of B returned samples.

    ``resample(logw)`` resamples column i when its ESS / K < ``threshold`` (1 = at every call) and its weights are
    not all equal (then resampling changes nothing in law; skipping it keeps lam = 0 bit for bit unguided).
    Every call draws K uniforms from each sample's own generator whether or not it resamples, so the draws of
    sample i never depend on another sample's decisions. ``metrics()`` gives the record diagnostics.
    """

    def __init__(self, noise, K: int, scheme: str = "systematic", threshold: float = 1.0, salt: int = 0):
        if scheme not in RESAMPLING:
            raise ValueError(f"unknown resampling {scheme!r}; choose one of {list(RESAMPLING)}")
        self.K, self.B, self.scheme, self.threshold = K, noise.batch, scheme, threshold
        self.gens = [torch.Generator().manual_seed(child_seed(g.initial_seed(), salt)) for g in noise.gens]
        self.origin = torch.arange(K).unsqueeze(1).expand(K, self.B).clone()  # step-T ancestor of each particle
        self.ess: list[torch.Tensor] = []
        self.events = torch.zeros(self.B)

    def uniforms(self, n: int) -> torch.Tensor:
        """n uniforms in [0, 1) per returned sample, from its own generator -> [n, B] float64."""
        return torch.stack([torch.rand(n, generator=g, dtype=torch.float64) for g in self.gens], 1)

    def resample(self, logw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ancestors a [K, B] (identity for columns left alone) and the mask [B] of columns resampled."""
        logw = _finite(logw)
        ess = normalised_ess(logw)
        self.ess.append(ess.cpu())
        u = self.uniforms(self.K)
        flat = (logw == logw[:1]).all(0).cpu()
        did = (ess.cpu() < self.threshold) & ~flat
        W = torch.softmax(logw.double(), 0).cpu()
        a = systematic(W, u[0]) if self.scheme == "systematic" else multinomial(W, u)
        a = torch.where(did.unsqueeze(0), a, torch.arange(self.K).unsqueeze(1))
        self.origin = self.origin.gather(0, a)
        self.events += did
        return a.to(logw.device), did.to(logw.device)

    def pick(self, logw: torch.Tensor) -> torch.Tensor:
        """One particle per returned sample with probability W_k (the final draw from the weighted population)."""
        W = torch.softmax(_finite(logw).double(), 0).cpu()
        return multinomial(W, self.uniforms(1))[0].to(logw.device)

    def metrics(self) -> dict:
        """``ess`` mean ESS / K over observations and samples, ``ess_min`` mean over samples of its lowest ESS / K,
        ``resamples`` mean number of resampling events per returned sample, ``unique_ancestors`` mean number of
        distinct step-T particles whose descendants are alive at the end (out of K)."""
        e = torch.stack(self.ess) if self.ess else torch.ones(1, self.B, dtype=torch.float64)
        uniq = [len(torch.unique(self.origin[:, i])) for i in range(self.B)]
        return {"ess": float(e.mean()), "ess_min": float(e.min(0).values.mean()),
                "resamples": float(self.events.mean()), "unique_ancestors": float(np.mean(uniq))}


def _finite(logw: torch.Tensor) -> torch.Tensor:
    """NaN weights (a non-finite reward) become -inf; a column with no finite weight becomes all zeros."""
    logw = torch.nan_to_num(logw.double(), nan=-math.inf, posinf=math.inf)
    dead = ~torch.isfinite(logw.max(0).values)
    return torch.where(dead.unsqueeze(0), torch.zeros_like(logw), logw)
