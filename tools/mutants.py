"""The planted mutants of tools/mutate.py: realistic one-line bugs in the maths, each a (file, old, new) edit.

``old`` must occur exactly once in ``file``. ``tests`` names a group of TESTS: the test files that cover the
file (run in this order, golden files first so a kill is found fast).
"""
from __future__ import annotations

from typing import NamedTuple


class Mutant(NamedTuple):
    id: str
    file: str
    old: str
    new: str
    why: str
    tests: str


_OLD_METHODS = ["tests/test_contract.py", "tests/test_toolbox.py"]
TESTS = {
    "sampling": ["tests/test_golden_oracles.py", "tests/test_golden_guidance.py", "tests/test_sampling.py",
                 "tests/test_oracle.py", "tests/test_contract.py"],
    "ggdm": ["tests/test_golden_guidance.py", "tests/test_contract.py", "tests/test_ggdm.py"],
    "toolbox": ["tests/test_golden_guidance.py", *_OLD_METHODS],
    "policy": ["tests/test_golden_optim.py", *_OLD_METHODS],
    "dno": ["tests/test_golden_optim.py", "tests/test_dno.py", "tests/test_contract.py"],
    "oracle": ["tests/test_golden_oracles.py", "tests/test_oracle.py", "tests/test_contract.py", "tests/test_ggdm.py"],
    "runner": ["tests/test_golden_oracles.py", "tests/test_cli.py"],
}

M = Mutant
MUTANTS: list[Mutant] = [
    # --- methods/sampling.py ---------------------------------------------------------------------------------
    M("ddim-sigma-sqrt-eta", "methods/sampling.py", "sigma = eta * math.sqrt(", "sigma = math.sqrt(eta) * math.sqrt(",
      "DDIM sigma proportional to sqrt(eta)", "sampling"),
    M("ddim-eps-no-sigma2", "methods/sampling.py", "math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps",
      "math.sqrt(max(1 - ab_prev, 0.0)) * eps", "DDIM eps weight sqrt(1 - abar') without - sigma^2", "sampling"),
    M("ddpm-c2-alpha", "methods/sampling.py", "c2 = math.sqrt(a_step) * (1 - ab_prev)", "c2 = a_step * (1 - ab_prev)",
      "DDPM posterior mean: alpha instead of sqrt(alpha)", "sampling"),
    M("ddpm-var-beta", "methods/sampling.py", "var = b_step * (1 - ab_prev) / (1 - ab)", "var = b_step",
      "DDPM variance beta instead of the posterior beta~", "sampling"),
    M("tweedie-h", "methods/sampling.py", "return (x_t - math.sqrt(h) * eps) / alpha", "return (x_t - h * eps) / alpha",
      "Tweedie x0_hat with h instead of sqrt(h)", "sampling"),
    # --- methods/base.py -------------------------------------------------------------------------------------
    M("base-x0-h", "methods/base.py", "x0 = (x - math.sqrt(ctx.h) * eps) / ctx.alpha", "x0 = (x - ctx.h * eps) / ctx.alpha",
      "shared step: x0 from eps with h instead of sqrt(h)", "ggdm"),
    M("bnorm2-batch", "methods/base.py", "return a.flatten(1).pow(2).sum(1)", "return a.flatten(1).pow(2).sum()",
      "squared norm over the whole batch instead of per sample", "ggdm"),
    # --- GGDM naive / look-ahead ------------------------------------------------------------------------------
    M("naive-alpha2", "methods/naive.py", "self.beta_t(ctx.alpha / (", "self.beta_t(ctx.alpha**2 / (",
      "naive beta_t with alpha^2 instead of alpha", "ggdm"),
    M("naive-h-not-sqrt", "methods/naive.py", "return eps - math.sqrt(ctx.h) * G", "return eps - ctx.h * G",
      "score -> eps conversion with h instead of sqrt(h)", "ggdm"),
    M("naive-norm", "methods/naive.py", "ctx.h * bnorm2(g)))", "ctx.h * bnorm2(g).sqrt()))",
      "naive beta_t with |g| instead of |g|^2", "ggdm"),
    M("lookahead-alpha", "methods/lookahead.py", "self.beta_t((ctx.alpha**2 / 2)", "self.beta_t((ctx.alpha / 2)",
      "look-ahead beta_t numerator alpha/2 instead of alpha^2/2", "ggdm"),
    M("lookahead-no-2", "methods/lookahead.py", "per_sample(2 * beta * (y - gx0), x)", "per_sample(beta * (y - gx0), x)",
      "G_loss without the factor 2 of the squared loss", "ggdm"),
    M("lookahead-norm", "methods/lookahead.py", "ctx.h * bnorm2(d)))", "ctx.h * bnorm2(d).sqrt()))",
      "look-ahead beta_t with |d| instead of |d|^2", "ggdm"),
    M("ggdm-constant-beta", "methods/ggdm.py", "else torch.full_like(rule, self.beta))", "else rule * self.beta)",
      "constant beta used as a multiplier of the rule", "ggdm"),
    # --- DPS ---------------------------------------------------------------------------------------------------
    M("dps-grad-x0", "methods/dps.py", "x0 = (xg - math.sqrt(ctx.h) * eps) / ctx.alpha",
      "x0 = (xg - math.sqrt(ctx.h) * eps.detach()) / ctx.alpha",
      "gradient w.r.t. x0_hat instead of x_t (no denoiser Jacobian; TFG issue 5)", "toolbox"),
    M("dps-loss-batch", "methods/dps.py", "self.zeta / r.abs().clamp_min(1e-8)", "self.zeta / r.abs().mean().clamp_min(1e-8)",
      "loss normaliser over the batch instead of per sample", "toolbox"),
    # --- MPGD --------------------------------------------------------------------------------------------------
    M("mpgd-no-rsqrt-abar", "methods/mpgd.py", "delta0 = c * g / sqrt_abar_prev", "delta0 = c * g",
      "x0-swap without 1/sqrt(abar')", "toolbox"),
    M("mpgd-rms-ms", "methods/mpgd.py", "(bnorm2(g) / g[0].numel()).sqrt().clamp_min", "(bnorm2(g) / g[0].numel()).clamp_min",
      "RMS rule divides by the mean square", "toolbox"),
    M("mpgd-ddpm-shift", "methods/mpgd.py", "+ sqrt_abar_prev * delta0", "+ delta0",
      "DDPM path adds dx0 instead of its DDIM displacement", "toolbox"),
    # --- Universal ---------------------------------------------------------------------------------------------
    M("ug-no-sqrt-h", "methods/universal.py", "eps = eps - self.s * sqrt_h * d", "eps = eps - self.s * d",
      "forward guidance without sqrt(1 - abar)", "toolbox"),
    M("ug-x0-swap", "methods/universal.py", "eps = (x - ctx.alpha * x0) / sqrt_h", "eps = eps  # x0-swap",
      "backward guidance keeps eps (x0-swap) instead of recomputing it", "toolbox"),
    M("ug-renoise-abar", "methods/universal.py", "a_step = sched.abar(ctx.t) / sched.abar(ctx.t_prev)",
      "a_step = sched.abar(ctx.t)", "re-noise with abar_t instead of the grid ratio", "toolbox"),
    M("ug-backward-untied", "methods/universal.py", "x0 = x0 + self.s * self.lr_b * g", "x0 = x0 + self.lr_b * g",
      "backward step not scaled by s", "toolbox"),
    # --- FreeDoM / time travel ---------------------------------------------------------------------------------
    M("freedom-rho-abar", "methods/freedom.py", "return self.rho * ctx.alpha if", "return self.rho * ctx.alpha**2 if",
      "rho abar_t instead of rho sqrt(abar_t)", "toolbox"),
    M("freedom-single-step-alpha", "methods/freedom.py", "a_step = sched.abar(ctx.t) / sched.abar(ctx.t_prev)",
      "a_step = 1 - float(sched.beta[ctx.t])", "time travel with the 1000-step alpha_t, not the grid ratio", "toolbox"),
    M("freedom-u-reversed", "methods/freedom.py", "u = 1 - i / n", "u = i / n",
      "window / cut-off in elapsed instead of remaining fraction", "toolbox"),
    # --- Polyak ------------------------------------------------------------------------------------------------
    M("polyak-norm", "methods/polyak.py", "/ g2.clamp_min(1e-12)", "/ g2.sqrt().clamp_min(1e-12)",
      "Polyak step with |grad| instead of |grad|^2", "toolbox"),
    M("polyak-eps2", "methods/polyak.py", "self.rho * bnorm2(eps).sqrt()", "self.rho * bnorm2(eps)",
      "Polyak numerator |eps|^2 instead of |eps|", "toolbox"),
    # --- forward-only ------------------------------------------------------------------------------------------
    M("fo-always-inf", "methods/forward_only.py", "d = d / (dn.clamp_min(1e-12) if self.normalise == \"inf\" else dn.clamp_min(1.0))",
      "d = d / dn.clamp_min(1e-12)", "clip rule normalises always", "toolbox"),
    M("fo-lr-reversed", "methods/forward_only.py", "np.linspace(self.lr, self.lr * self.lr_decay, self.K)",
      "np.linspace(self.lr * self.lr_decay, self.lr, self.K)", "inner step sizes increase instead of decay", "toolbox"),
    M("fo-l2-not-inf", "methods/forward_only.py", "per_sample(v.flatten(1).abs().amax(1), v)",
      "per_sample(v.flatten(1).norm(dim=1), v)", "2-norm instead of inf-norm", "toolbox"),
    # --- step policies -----------------------------------------------------------------------------------------
    M("compress-last-interval", "methods/policy.py", "if j + 1 < len(steps) else n) - i)",
      "if j + 1 < len(steps) else n - 1) - i)", "last accumulated interval one step short", "policy"),
    M("compress-inverse-k", "methods/policy.py", "i = round(n * (j / m) ** k)", "i = round(n * (j / m) ** (1 / k))",
      "power law with exponent 1/k", "policy"),
    M("early-stop-late", "methods/policy.py", "return tuple(range(m))", "return tuple(range(n - m, n))",
      "early stop guides the last steps", "policy"),
    M("accumulate-double", "methods/policy.py", "return (x_next - delta) + w * delta", "return x_next + w * delta",
      "accumulation adds w + 1 displacements", "policy"),
    M("reuse-noop", "methods/policy.py", "else out + self.delta", "else out",
      "reuse mode never reuses", "policy"),
    M("window-elapsed", "methods/policy.py", "if lo <= 1 - i / n <= hi", "if lo <= i / n <= hi",
      "window in elapsed fraction", "policy"),
    # --- DNO / DOODL / R(Z) ------------------------------------------------------------------------------------
    M("dno-clip-batch", "methods/dno.py", "norm = torch.sqrt(sum(bnorm2(g) for g in grads))",
      "norm = torch.sqrt(sum(bnorm2(g).sum() for g in grads))", "gradient clip with the batch-wide norm", "dno"),
    M("dno-clip-normalise", "methods/dno.py", "scale = torch.clamp(self.clip / (norm + 1e-6), max=1.0)",
      "scale = self.clip / (norm + 1e-6)", "clip rescales small gradients up too", "dno"),
    M("dno-reg-sign", "methods/dno.py", "loss = loss + self.gamma * reg.sum()", "loss = loss - self.gamma * reg.sum()",
      "regulariser R(Z) rewarded instead of penalised", "dno"),
    M("dno-loss-mean", "methods/dno.py", "loss = -obj.value(x).sum()", "loss = -obj.value(x).mean()",
      "reward gradient divided by the batch size", "dno"),
    M("dno-renorm-sqrtD", "methods/dno.py", "norm0 = variables[0].detach().flatten(1).norm(dim=1) if self.renorm",
      "norm0 = torch.full((variables[0].shape[0],), math.sqrt(variables[0][0].numel())) if self.renorm",
      "renormalise x_T to sqrt(D) instead of its initial norm", "dno"),
    M("dno-adamw-wd", "methods/dno.py", "torch.optim.AdamW(variables, lr=self.lr, weight_decay=self.weight_decay)",
      "torch.optim.AdamW(variables, lr=self.lr)", "weight_decay parameter ignored", "dno"),
    M("dno-hybrid-batch-norm", "methods/dno.py", "g_x = g_x / per_sample(g_x.flatten(1).norm(dim=1) + 1e-3, g_x)",
      "g_x = g_x / (g_x.norm() + 1e-3)", "hybrid estimate normalised over the batch", "dno"),
    M("reg-mean-2d", "methods/dno_reg.py", "m.pow(2).sum(-1) / (2 * d)", "m.pow(2).sum(-1) / d",
      "mean term without the 1/2", "dno"),
    M("reg-frobenius", "methods/dno_reg.py", "torch.linalg.matrix_norm(C - eye, ord=2)",
      "torch.linalg.matrix_norm(C - eye, ord=\"fro\")", "Frobenius instead of spectral norm", "dno"),
    M("reg-sign", "methods/dno_reg.py", "    return -terms", "    return terms", "R(Z) with the wrong sign", "dno"),
    M("doodl-no-renorm", "methods/doodl.py", "renorm: bool = param(True", "renorm: bool = param(False",
      "DOODL without x_T renormalisation", "dno"),
    # --- oracles -----------------------------------------------------------------------------------------------
    M("subspace-swap-h", "tasks/subspace.py", "self.sqrt_h[t].to(x.dtype).unsqueeze(1) * Px + (x - Px) * self.rsqrt_h[t]",
      "self.rsqrt_h[t].to(x.dtype).unsqueeze(1) * Px + (x - Px) * self.sqrt_h[t]",
      "sqrt(h) and 1/sqrt(h) swapped", "oracle"),
    M("sphere-dim-minus-1", "tasks/sphere.py", "bessel_ratio(x.shape[1], kappa)", "bessel_ratio(x.shape[1] - 1, kappa)",
      "vMF Bessel ratio of the wrong dimension", "oracle"),
    M("sphere-kappa-sqrt-h", "tasks/sphere.py", "kappa = alpha * r / h", "kappa = alpha * r / h.sqrt()",
      "vMF concentration alpha r / sqrt(h)", "oracle"),
    M("sphere-debye-sign", "tasks/sphere.py", "- 0.5 * torch.log(s) + torch.log(series)",
      "+ 0.5 * torch.log(s) + torch.log(series)", "Debye expansion prefactor sign", "oracle"),
    # --- statistics --------------------------------------------------------------------------------------------
    M("se-is-std", "bench/runner.py", "float(v.std() / math.sqrt(n))", "float(v.std())",
      "standard deviation stored as standard error", "runner"),
    M("se-ddof0", "bench/runner.py", "float(v.std() / math.sqrt(n))", "float(v.std(correction=0) / math.sqrt(n))",
      "biased (ddof 0) standard deviation in the SE", "runner"),
]
