"""GGDM golden values on the oracle subspace task (ggdm.md §7.2) and Algorithm 1/2 mechanics."""
import math

import pytest
import torch

from methods import REGISTRY, Cost, Counted, NoiseStream, Objective, Sampler, make_method
from methods.protocol import Protocol, run_rounds
from methods.sampling import sample_seeds


def test_lookahead_fixed_point_matches_theorem(subspace):
    """Algorithm 1 with G_loss converges to argmax f(z) - (lambda/2)|z|^2 on span(A), lambda = sigma^2/delta."""
    delta, sigma = 0.2, 0.1
    lam = sigma**2 / delta
    a2 = float((subspace.P @ subspace.theta["theta2"]).norm() ** 2)
    s_star = 6 * a2 / (2 * a2 + lam)
    f_star = 10 - (3 - s_star) ** 2  # 5.93
    method = make_method("look-ahead", {"delta": delta})
    reward = subspace.rewards["f1-theta2"]
    rs, offs = [], []
    for out in run_rounds(method, subspace.oracle("cpu"), reward, Protocol(rounds=120), batch=16, seed=1):
        offs.append(float(subspace.off_support(out["x"]).max()))
        if out["round"] >= 80:
            rs.append(float(reward(out["x"]).mean()))
    assert abs(sum(rs) / len(rs) - f_star) < 0.15, (sum(rs) / len(rs), f_star)
    assert max(offs) < 1e-3


@pytest.mark.parametrize("name", ["naive", "look-ahead"])
def test_one_guided_pass_matches_posterior_mean_for_on_support_direction(subspace, name):
    """With g on the support both terms equal the exact conditional score alpha (y - g.x0_hat) g / (sigma^2 +
    h |g|^2), so one pass draws from p(x0 | y): E[g.x] = y g'Sg / (sigma^2 + g'Sg) with S = P."""
    g = (subspace.P @ subspace.theta["theta2"]).unsqueeze(0)
    g = g / g.norm() * 2.0  # on-support direction, g'Pg = 4
    B, y, sigma = 512, 3.0, 0.1
    den = Counted(subspace.oracle("cpu"))
    obj = Objective(lambda x: x @ g[0], den.cost, anchor=torch.zeros(B, 64), g=g.expand(B, 64),
                    r_anchor=torch.zeros(B))
    x = make_method(name, {"delta": y, "sigma": sigma}).sample(
        den, obj, NoiseStream(sample_seeds(0, 1, B), (64,)), Sampler())
    gx = x @ g[0]
    # reference law of g.x0 given y: mean y g'Sg / (sigma^2 + g'Sg), variance g'Sg sigma^2 / (sigma^2 + g'Sg)
    mean_ref, sd_ref = y * 4 / (sigma**2 + 4), math.sqrt(4 * sigma**2 / (sigma**2 + 4))
    assert abs(float(gx.mean()) - mean_ref) < 4 * sd_ref / math.sqrt(B)  # 4 reference standard errors
    # the spread too (a wrong beta_t widens it: beta_coef 0.5 gives 0.25); the 200-step sampler measures
    # 0.088, 12% under the exact 0.0999, so the band is 20% of the reference
    assert abs(float(gx.std()) - sd_ref) < 0.2 * sd_ref, float(gx.std())


def test_naive_leaves_support_more_than_lookahead_on_trained_free_case(subspace):
    """With theta2 mostly off-support the naive direction (I-P)g is non-zero; G_loss's alpha P g is not."""
    reward = subspace.rewards["f1-theta2"]
    offs = {}
    for name in ("naive", "look-ahead"):
        out = list(run_rounds(REGISTRY[name](), subspace.oracle("cpu"), reward, Protocol(rounds=3), batch=8, seed=0))
        offs[name] = float(subspace.off_support(out[-1]["x"]).mean())
    assert offs["look-ahead"] < 1e-5
    assert offs["naive"] > 10 * offs["look-ahead"]


def test_per_sample_gradients_use_one_reward_call(subspace):
    cost = Cost()
    reward = subspace.rewards["f2-b2"]
    x = torch.randn(10, 64)
    obj = Objective.linearised(reward, cost, x, linear=True)
    assert cost.reward_calls == 1
    for i in (0, 7):
        xi = x[i:i + 1].clone().requires_grad_()
        (gi,) = torch.autograd.grad(reward(xi).sum(), xi)
        torch.testing.assert_close(obj.g[i], gi[0])
    torch.testing.assert_close(obj.target(0.5), (obj.g * x).sum(1) + 0.5)


def test_algorithm2_fine_tunes_a_copy(subspace, tmp_path, monkeypatch):
    from tasks.base import NetDenoiser
    from tasks.nets import MLPEps

    net = MLPEps(width=32, depth=1).set_schedule(subspace.schedule.alpha_bar)
    for p in net.parameters():
        p.requires_grad_(False)
    den = NetDenoiser(net, subspace.schedule, (64,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    proto = Protocol(rounds=3, algorithm=2, ft_lr=1e-2, ft_start=1, ft_steps=2)
    outs = list(run_rounds(REGISTRY["naive"](), den, subspace.rewards["f1-theta2"], proto, batch=4, seed=0,
                           sampler=Sampler("ddim", 1.0, 5)))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "cached network was modified"
    assert "loss_diffusion" in outs[2]["info"] and "loss_diffusion" not in outs[1]["info"]
    # fine-tuning changes the model: same seeds, algorithm 1 gives different round-3 samples
    a1 = list(run_rounds(REGISTRY["naive"](), den, subspace.rewards["f1-theta2"], Protocol(rounds=3), batch=4,
                         seed=0, sampler=Sampler("ddim", 1.0, 5)))
    assert torch.equal(a1[1]["x"], outs[1]["x"]) and not torch.allclose(a1[3]["x"], outs[3]["x"])
    # cost: 5 steps per round, 4 rounds, plus 2 fine-tuning forward+backward in rounds 2 and 3
    assert outs[-1]["cost"].nfe == 4 * 5 + 4 and outs[-1]["cost"].vjp == 4


def test_algorithm2_rejects_oracle(subspace):
    with pytest.raises(ValueError, match="trained"):
        list(run_rounds(REGISTRY["naive"](), subspace.oracle("cpu"), subspace.rewards["f1-theta2"],
                        Protocol(rounds=3, algorithm=2, ft_start=0), batch=2, seed=0))
