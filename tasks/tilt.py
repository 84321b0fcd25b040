"""Exact reward-tilted targets pi_lam(x0) ∝ p(x0) exp(lam r(x0)) on the oracle tasks (inference-scaling.md §5).

Closed forms exist for two (data law, reward) pairs; every other pair raises ``NoClosedForm``:

* **Subspace, r = c0 − (θᵀx − b)²** (f1 rewards; x = Aᵀu, u ~ N(0, I_d)). With a = Aθ, s = ‖a‖²:
  u ~ N(μ, Σ), Σ = (I + 2 lam a aᵀ)⁻¹, μ = 2 lam b Σ a, exactly on the subspace; θᵀx = aᵀu ~ N(2 lam b s / (1 + 2 lam s),
  s / (1 + 2 lam s)). Given x_t = alpha x0 + sqrt(h) eps, u | x_t is Gaussian (prior N(μ, Σ), likelihood A x_t ~
  N(alpha u, h I)); with alpha² + h = 1 its mean differs from the untilted alpha A x_t by
  a · 2 lam h (b − alpha aᵀA x_t) / (1 + 2 lam h s), so the h-transform term (the tilted score minus the data score) is

      ∇ log h_t(x_t) = alpha (E_lam[x0 | x_t] − E_0[x0 | x_t]) / h = Pθ · 2 lam alpha (b − alpha (Pθ)ᵀx_t) / (1 + 2 lam h s).

* **Sphere S^{p−1}, r = θᵀx** (x uniform): pi_lam = von Mises–Fisher(θ/‖θ‖, κ = lam ‖θ‖), E[θᵀx] = ‖θ‖ A_p(κ),
  A_p = I_{p/2} / I_{p/2−1}; w = θᵀx/‖θ‖ has density ∝ exp(κ w)(1 − w²)^{(p−3)/2} on [−1, 1]. Given x_t the clean
  point is vMF with natural parameter v = lam θ + alpha x_t / h, so E_lam[x0 | x_t] = A_p(‖v‖) v/‖v‖. Exact samples:
  Wood (1994), "Simulation of the von Mises Fisher distribution".

The f2 rewards (5 − ‖x − b‖/2) are not quadratic in x: their tilt has no closed form (a long MALA chain in u-space would
be the reference) and ``NoClosedForm`` says so.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["NoClosedForm", "GaussianTilt", "VMFTilt", "exact_tilt"]


class NoClosedForm(ValueError):
    """The (task, reward) pair has no closed-form tilted target."""


def exact_tilt(task, reward: str, lam: float):
    """The closed-form tilt of ``task``'s ``reward`` at inverse temperature ``lam``; ``NoClosedForm`` otherwise."""
    r = task.reward(reward)
    tilted = getattr(r, "tilted", None)
    if tilted is None:
        raise NoClosedForm(f"reward {reward!r} of task {task.name!r} has no closed-form tilted target "
                           "(closed forms: subspace f1-theta1, f1-theta2; sphere linear)")
    return tilted(lam)


def _check_lam(lam) -> float:
    lam = float(lam)
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"the tilt's inverse temperature lam must be finite and >= 0, got {lam}")
    return lam


class GaussianTilt:
    """Tilt of x = Aᵀu, u ~ N(0, I), by r(x) = c0 − (θᵀx − b)² (see the module docstring)."""

    def __init__(self, A: torch.Tensor, theta: torch.Tensor, lam: float, c0: float = 10.0, b: float = 3.0):
        self.lam, self.c0, self.b = _check_lam(lam), float(c0), float(b)
        self.A = A.double()                                  # [d, D], orthonormal rows
        self.theta = theta.double()
        self.a = self.A @ self.theta                          # θ in u-coordinates
        self.s = float(self.a @ self.a)
        self.theta_par = self.A.T @ self.a                    # Pθ
        k = 2 * self.lam / (1 + 2 * self.lam * self.s)
        d = self.A.shape[0]
        self.mean_u = self.b * k * self.a                     # μ = 2 lam b Σ a
        self.cov_u = torch.eye(d, dtype=torch.float64) - k * torch.outer(self.a, self.a)  # Sherman–Morrison
        self._chol = torch.linalg.cholesky(self.cov_u)
        self.proj_mean = self.b * k * self.s                  # law of θᵀx: N(proj_mean, proj_var)
        self.proj_var = self.s / (1 + 2 * self.lam * self.s)

    def expected_reward(self) -> float:
        return self.c0 - ((self.proj_mean - self.b) ** 2 + self.proj_var)

    def to_u(self, x: torch.Tensor) -> torch.Tensor:
        """u-coordinates A x of (possibly off-support) samples."""
        return x.double() @ self.A.T

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.A.shape[0], generator=generator, dtype=torch.float64)
        return (self.mean_u + z @ self._chol.T) @ self.A

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() @ self.theta

    def proj_cdf(self, y: torch.Tensor) -> torch.Tensor:
        return torch.special.ndtr((y.double() - self.proj_mean) / math.sqrt(self.proj_var))

    def proj_range(self) -> tuple[float, float]:
        sd = math.sqrt(self.proj_var)
        return self.proj_mean - 12 * sd, self.proj_mean + 12 * sd

    def score_shift(self, x: torch.Tensor, alpha: float, h: float) -> torch.Tensor:
        """∇_{x_t} log h_t(x_t), h_t = E[exp(lam r(x0)) | x_t] (float64)."""
        c = 2 * self.lam * alpha * (self.b - alpha * (x.double() @ self.theta_par)) / (1 + 2 * self.lam * h * self.s)
        return c.unsqueeze(1) * self.theta_par

    def x0_mean(self, x: torch.Tensor, alpha: float, h: float) -> torch.Tensor:
        """E_lam[x0 | x_t] (float64)."""
        return alpha * (x.double() @ (self.A.T @ self.A)) + h / alpha * self.score_shift(x, alpha, h)


class VMFTilt:
    """Tilt of the uniform law on S^{p−1} by r(x) = θᵀx: von Mises–Fisher (see the module docstring)."""

    def __init__(self, theta: torch.Tensor, lam: float):
        self.lam = _check_lam(lam)
        self.theta = theta.double()
        self.p = self.theta.numel()
        self.norm = float(self.theta.norm())
        self.mu = self.theta / self.norm
        self.kappa = self.lam * self.norm
        w = np.linspace(-1.0, 1.0, 200_001)                   # the law of w = μᵀx, on a fine grid
        with np.errstate(divide="ignore"):
            logd = self.kappa * w + (self.p - 3) / 2 * np.log1p(-w * w)
        dens = np.exp(logd - logd.max())
        cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(w))])
        self._w, self._cdf = w, cdf / cdf[-1]

    def mean_resultant(self) -> float:
        """A_p(κ) = E[μᵀx]."""
        from .sphere import bessel_ratio

        if self.kappa == 0:
            return 0.0
        return float(bessel_ratio(self.p, torch.tensor(self.kappa, dtype=torch.float64)))

    def expected_reward(self) -> float:
        return self.norm * self.mean_resultant()

    def proj_var(self) -> float:
        """Var[μᵀx] = 1 − (p − 1) A_p(κ)/κ − A_p(κ)² (1/p at κ = 0)."""
        if self.kappa == 0:
            return 1.0 / self.p
        A = self.mean_resultant()
        return 1 - (self.p - 1) * A / self.kappa - A * A

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Wood's (1994) rejection sampler (Beta and uniform draws from a numpy stream seeded by ``generator``)."""
        p, kappa = self.p, self.kappa
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        b = (p - 1) / (2 * kappa + math.sqrt(4 * kappa * kappa + (p - 1) ** 2))
        x0 = (1 - b) / (1 + b)
        c = kappa * x0 + (p - 1) * math.log(1 - x0 * x0)
        w = np.empty(0)
        while w.size < n:
            m = 2 * (n - w.size) + 8
            z = rng.beta((p - 1) / 2, (p - 1) / 2, m)
            cand = (1 - (1 + b) * z) / (1 - (1 - b) * z)
            ok = kappa * cand + (p - 1) * np.log1p(-x0 * cand) - c >= np.log(rng.random(m))
            w = np.concatenate([w, cand[ok]])
        w = torch.from_numpy(w[:n])
        v = torch.randn(n, p, generator=generator, dtype=torch.float64)
        v = v - (v @ self.mu).unsqueeze(1) * self.mu          # uniform direction orthogonal to μ
        v = v / v.norm(dim=1, keepdim=True)
        return w.unsqueeze(1) * self.mu + (1 - w * w).clamp_min(0).sqrt().unsqueeze(1) * v

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() @ self.theta

    def proj_cdf(self, y: torch.Tensor) -> torch.Tensor:
        w = (y.double() / self.norm).cpu().numpy()
        return torch.from_numpy(np.interp(w, self._w, self._cdf, left=0.0, right=1.0))

    def proj_range(self) -> tuple[float, float]:
        return -self.norm, self.norm

    def x0_mean(self, x: torch.Tensor, alpha: float, h: float, lam: float | None = None) -> torch.Tensor:
        """E_lam[x0 | x_t] = A_p(‖v‖) v/‖v‖, v = lam θ + alpha x_t / h (float64)."""
        from .sphere import bessel_ratio

        v = (self.lam if lam is None else lam) * self.theta + alpha / h * x.double()
        r = v.norm(dim=1, keepdim=True)
        return bessel_ratio(self.p, r) * v / r

    def score_shift(self, x: torch.Tensor, alpha: float, h: float) -> torch.Tensor:
        """∇_{x_t} log h_t(x_t) = alpha (E_lam[x0 | x_t] − E_0[x0 | x_t]) / h (float64; exactly 0 at lam = 0)."""
        if self.lam == 0:
            return torch.zeros(x.shape, dtype=torch.float64)
        return alpha / h * (self.x0_mean(x, alpha, h) - self.x0_mean(x, alpha, h, lam=0.0))
