"""Digits image task (issue 7): shapes through the core, rewards, held-out metrics, off-support calibration,
FID/KID/PR (in-house, cross-checked against torch-fidelity when installed), the diffusers adapter, and the
runner's sample saving. Tiny networks in a temporary cache: the full pretraining never runs here."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods import Sampler, UnknownName, make_method
from methods.protocol import Protocol, run_rounds
from tasks import fidelity
from tasks.digits import Digits

T = 20


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    t = Digits(T=T)
    t.train_defaults = {**t.train_defaults, "steps": 10, "batch": 16}
    t.arch_defaults = {"unet": {"size": 8, "mult": [1, 2], "ch": 8, "temb": 16}}
    t.clf_train = {k: {**v, "steps": 150, "batch": 64} for k, v in t.clf_train.items()}
    torch.set_num_threads(1)
    yield t
    mp.undo()


@pytest.fixture(scope="module")
def den(task):
    return task.denoiser("trained", progress=False)


def test_data_splits_disjoint_and_scaled(task):
    tr, ev, te = (task.split(s)[0] for s in ("train", "eval", "test"))
    assert (len(tr), len(ev), len(te)) == (900, 500, 397)
    assert tr.shape[1:] == (1, 8, 8) and tr.min() == -1 and tr.max() == 1
    flat = {tuple(v.flatten().tolist()) for v in torch.cat([tr, ev, te])}
    assert len(flat) > 1700  # a few duplicate images exist in the UCI set; the splits are index-disjoint
    x = task.sample_data(900, torch.Generator().manual_seed(0))
    assert torch.equal(x.sum(0), tr.sum(0))  # n = 900 draws every train image exactly once
    with pytest.raises(ValueError, match="unknown split"):
        task.split("val")


def test_no_oracle_clear_error(task):
    assert "oracle" not in task.denoiser_kinds
    with pytest.raises(UnknownName):
        task.denoiser("oracle")


@pytest.mark.parametrize("method,params,rounds", [
    ("unguided", {}, 1), ("naive", {}, 1), ("look-ahead", {}, 2), ("dps", {"zeta": "0.1"}, 1),
    ("mpgd", {}, 1), ("universal", {}, 1), ("freedom", {}, 1), ("polyak", {}, 1), ("forward-only", {"K": "1"}, 1),
    ("dno", {"lr": "0.05"}, 2), ("dno", {"lr": "0.05", "gamma": "1.0"}, 2), ("dno", {"grad": "hybrid"}, 2),
    ("doodl", {}, 2), ("universal", {"m": "2", "k": "1"}, 1), ("naive", {"policy": "compress"}, 1)])
def test_every_method_runs_on_images(task, den, method, params, rounds):
    m = make_method(method, params)
    outs = list(run_rounds(m, den, task.reward("class-3"), Protocol(rounds), batch=3, seed=0,
                           sampler=Sampler("ddim" if method == "doodl" else "ddpm", 0.0 if method == "doodl" else 1.0,
                                           steps=5)))
    assert [o["round"] for o in outs] == list(range(rounds + 1))
    x = outs[-1]["x"]
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()
    if method != "unguided":
        assert not torch.equal(x, outs[0]["x"])


@pytest.mark.parametrize("name", ["synthetic", "class-0", "class-9"])
def test_rewards_differentiable_and_heldout_metrics(task, name):
    x = task.split("test")[0][:6].clone().requires_grad_(True)
    r = task.reward(name)(x)
    (g,) = torch.autograd.grad(r.sum(), x)
    assert r.shape == (6,) and g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    m = task.reward(name).metrics(x.detach())
    assert m["heldout_reward"].shape == (6,)
    if name.startswith("class"):
        gain = {"heldout_reward_se", "guide_heldout_cov", "hack_ref", "hack_ref_lo", "hack_ref_hi"}
        cls = {f"class_{k}" for k in ("fid", "kid", "precision", "recall", "one_minus_precision", "fid_floor",
                                      "kid_floor", "precision_floor", "recall_floor")}
        assert (r <= 0).all() and set(m) == {"heldout_reward", "heldout_acc", "guide_acc"} | gain | cls
    assert all(v.shape == (6,) for v in m.values())


def test_synthetic_standardised_and_heldout_tracks_it(task):
    x = task.split("train")[0]
    r = task.reward("synthetic")(x)
    assert abs(float(r.mean())) < 1e-4 and abs(float(r.std()) - 1) < 1e-3
    xe = task.split("test")[0]
    corr = np.corrcoef(task.reward("synthetic")(xe).detach(), task.reward("synthetic").metrics(xe)["heldout_reward"])
    assert corr[0, 1] > 0.5  # the held-out ridge model agrees with the guider on real data


def test_off_support_calibrated(task):
    real = task.off_support(task.split("train")[0][:200])
    noise = task.off_support(torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)))  # x_T-like
    assert 0.7 < float(real.mean()) < 1.3
    assert float(noise.mean()) > 2 * float(real.mean())  # k-NN ratios are compressed in 32-d; ~2.9 with the full nets


def test_fid_kid_pr_basic():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(300, 8, generator=g)
    assert abs(fidelity.fid(f, f)) < 1e-6
    assert fidelity.fid(f, f + 1.0) == pytest.approx(8.0, rel=1e-6)  # mean shift 1 in each of 8 dims
    assert fidelity.fid(f, torch.randn(300, 8, generator=g)) < fidelity.fid(f, 2 * f)
    assert fidelity.kid(f, f + 1.0)[0] > 10 * abs(fidelity.kid(f, torch.randn(300, 8, generator=g))[0])
    assert fidelity.precision_recall(f, f) == (1.0, 1.0)
    p, r = fidelity.precision_recall(f + 100, f)
    assert p == 0.0 and r == 0.0
    assert fidelity.kid_subset_size(64, 397) == 64
    with pytest.raises(ValueError, match="subset size"):
        fidelity.kid(f[:10], f, subset_size=50)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        fidelity.fid(f[0], f[0])


def test_set_metrics_rank_real_above_noise(task):
    real = task.set_metrics(task.split("train")[0][:128])
    noise = task.set_metrics(torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    assert real["fid"] < noise["fid"] and real["kid"] < noise["kid"]
    assert real["one_minus_precision"] < noise["one_minus_precision"]
    assert real["fid_floor"] == pytest.approx(real["fid"], rel=1e-6)  # the floor is exactly these train images


def test_torch_fidelity_cross_check(task):
    pytest.importorskip("torch_fidelity")
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(120, 6, generator=g), torch.randn(150, 6, generator=g) * 1.3 + 0.2
    ref_fid = fid_statistics_to_metric(fid_features_to_statistics(f1), fid_features_to_statistics(f2), False)
    assert fidelity.fid(f1, f2) == pytest.approx(ref_fid["frechet_inception_distance"], rel=1e-6)
    ref_kid = kid_features_to_metric(f1, f2, kid_subset_size=50, kid_subsets=20, verbose=False)
    km, ks = fidelity.kid(f1, f2, subset_size=50, subsets=20)
    assert km == pytest.approx(ref_kid["kernel_inception_distance_mean"], rel=1e-6)
    assert ks == pytest.approx(ref_kid["kernel_inception_distance_std"], rel=1e-6)
    ref_prc = prc_features_to_metric(f1, f2, verbose=False)
    assert fidelity.precision_recall(f1, f2) == pytest.approx((ref_prc["precision"], ref_prc["recall"]))
    # the full torch-fidelity path with the held-out network registered as a custom feature extractor
    xg = task.split("train")[0][:64] + 0.3 * torch.randn(64, 1, 8, 8, generator=g)
    xr = task.split("test")[0]
    tf = fidelity.torch_fidelity_metrics(xg, xr, task.heldout, kid_subsets=10)
    with torch.no_grad():
        ours = fidelity.fidelity(task.heldout.features(xg), task.heldout.features(xr), kid_subsets=10)
    for k, v in ours.items():
        assert tf[k] == pytest.approx(v, rel=1e-3, abs=1e-5), k
    # the task's set metrics through either backend
    inhouse = task.set_metrics(xg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GUIDANCE_BENCH_FIDELITY", "torch-fidelity")
        via_tf = task.set_metrics(xg)
    assert via_tf == pytest.approx(inhouse, rel=1e-3, abs=1e-5)


def test_diffusers_adapter_offline_round_trip(tmp_path, monkeypatch):
    diffusers = pytest.importorskip("diffusers")
    from tasks.diffusers_adapter import TableSchedule, load_diffusers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    sched = diffusers.DDPMScheduler(num_train_timesteps=40, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    unet.save_pretrained(tmp_path / "unet")
    sched.save_pretrained(tmp_path / "scheduler")
    den = load_diffusers(tmp_path)
    assert den.shape == (1, 8, 8) and den.schedule.T == 40 and isinstance(den.schedule, TableSchedule)
    assert torch.allclose(den.schedule.alpha_bar, sched.alphas_cumprod.double())
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(den.eps(x, torch.tensor([5, 5])), unet(x, 5).sample, atol=1e-6)
    for kind in ("sample", "v_prediction"):  # eps from other parameterisations: x0_hat / v recovered exactly
        den.prediction_type = kind
        with torch.no_grad():
            eps, out = den.eps(x, torch.tensor([7, 7])), unet(x, 7).sample
        ab = float(sched.alphas_cumprod[7])
        x0 = (x - (1 - ab) ** 0.5 * eps) / ab ** 0.5
        got = x0 if kind == "sample" else (ab ** 0.5 * eps - (1 - ab) ** 0.5 * x0)
        assert torch.allclose(got, out, atol=1e-4), kind
    task = Digits(T=T)
    monkeypatch.setenv("GUIDANCE_BENCH_DIFFUSERS", str(tmp_path))
    den2 = task.denoiser("diffusers")
    outs = list(run_rounds(make_method("dps", {"zeta": "0.1"}), den2, lambda z: -(z ** 2).flatten(1).sum(1),
                           Protocol(1), batch=2, seed=0, sampler=Sampler("ddim", 0.0, steps=4)))
    assert outs[-1]["x"].shape == (2, 1, 8, 8) and outs[-1]["cost"].vjp == 4


def test_diffusers_missing_source_is_clear(monkeypatch):
    monkeypatch.delenv("GUIDANCE_BENCH_DIFFUSERS", raising=False)
    with pytest.raises(ValueError, match="GUIDANCE_BENCH_DIFFUSERS"):
        Digits(T=T).denoiser("diffusers")


def test_runner_records_heldout_metrics_and_saves_samples(task, den, tmp_path, monkeypatch):
    import bench.runner as runner

    monkeypatch.setattr(runner, "get_task", lambda name, T: task)
    spec = runner.RunSpec(task="digits", reward="class-2", denoiser="trained", method="dps", params={"zeta": "0.1"},
                          batch=8, T=T, steps=5, save_samples=str(tmp_path / "s"))
    assert spec.run_id == runner.RunSpec(**{**spec.__dict__, "save_samples": None}).run_id
    recs = runner.execute(spec)
    assert [r["status"] for r in recs] == ["ok", "ok"], recs[-1].get("error")
    m = recs[-1]["metrics"]
    for k in ("heldout_reward", "heldout_acc", "guide_acc", "fid", "kid", "one_minus_precision", "recall",
              "fid_floor", "heldout_maxprob", "heldout_reward_se", "guide_heldout_cov", "hack_ref", "hack_ref_lo",
              "hack_ref_hi", "class_fid", "class_recall", "class_fid_floor"):
        assert isinstance(m[k], float) and math.isfinite(m[k]), k
    assert m["hack_ref"] == task.hacking_reference("class-2")["ratio"]
    x = torch.load(tmp_path / "s" / f"{spec.run_id}.pt", weights_only=True)
    assert x.shape == (8, 1, 8, 8)
    assert recs[-1]["reward_mean"] == pytest.approx(float(task.reward("class-2")(x).mean()), rel=1e-5)


def test_digits_cost_counts_match_expected(task, den):
    m = make_method("look-ahead", {})
    out = list(run_rounds(m, den, task.reward("synthetic"), Protocol(1), batch=2, seed=1,
                          sampler=Sampler("ddpm", 1.0, steps=5)))
    nfe, vjp = m.expected_cost(5)
    assert (out[-1]["cost"].nfe - 5, out[-1]["cost"].vjp) == (nfe, vjp)


def test_digits16_shapes_and_unet(tmp_path, monkeypatch):
    from tasks.digits import Digits16
    from tasks.pretrain import build_net, train_config

    t = Digits16(T=T)
    x = t.split("test")[0]
    assert t.shape == (1, 16, 16) and x.shape == (397, 1, 16, 16) and -1 <= float(x.min()) < float(x.max()) <= 1
    net = build_net(t, train_config(t, ch=8, temb=16))
    assert net(x[:3], torch.tensor([0, 5, T - 1])).shape == (3, 1, 16, 16)


def test_bench_list_shows_digits_without_oracle(capsys):
    from bench.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("  digits v1"):out.index("  digits16")]
    assert "reward class-3" in block and "denoiser trained" in block and "denoiser oracle" not in block


def test_class_reference_is_only_the_class_k_test_images(task):
    """class-K set metrics compare with the test images of class K and nothing else: those images score FID 0 and
    precision = recall = 1 against it, while the all-class reference does not; other digits score far worse."""
    x, y = task.split("test")
    assert len(task.class_features(3)) == int((y == 3).sum()) == 37
    assert torch.equal(task.class_features(3), task.features(x[y == 3]).cpu())
    own = task.class_set_metrics(x[y == 3], 3)
    assert abs(own["class_fid"]) < 1e-6 and own["class_precision"] == own["class_recall"] == 1.0
    assert task.set_metrics(x[y == 3])["fid"] > 1.0  # against all classes the same images look "degraded"
    other = task.class_set_metrics(x[y == 5], 3)
    assert other["class_fid"] > 1.0 and other["class_recall"] < 0.5
    floor = task.class_set_metrics(x[y == 5], 3)["class_fid_floor"]  # real train 3s vs test 3s
    tr, ty = task.split("train")
    n5 = int((y == 5).sum())  # the floor takes as many real train 3s as the batch has images
    assert floor == pytest.approx(fidelity.fid(task.features(tr[ty == 3][:n5]), task.class_features(3)), rel=1e-9)


def test_selection_ratio_known_answers():
    """Selecting on r_g when E[r_h | r_g] = b r_g gives held-out gain / guider gain = b (the regression slope)."""
    from tasks.digits import selection_ratio

    g = np.random.default_rng(0)
    r = g.standard_normal(400)
    exact = selection_ratio(r, 0.6 * r + 2.0, q=0.1, boot=200)
    assert exact["ratio"] == pytest.approx(0.6) and exact["lo"] == pytest.approx(0.6)
    assert exact["hi"] == pytest.approx(0.6) and exact["n_selected"] == 40
    z = g.standard_normal(4000)
    noisy = selection_ratio(z + g.standard_normal(4000) / 3 ** 0.5, z, q=0.1, boot=300)  # slope 1 / (1 + 1/3)
    assert noisy["lo"] < 0.75 < noisy["hi"] and noisy["hi"] - noisy["lo"] < 0.2


def test_hacking_reference_on_real_test_images(task):
    ref = task.hacking_reference("class-3")
    assert ref["n_selected"] == 40 and ref["guider_gain"] > 0
    assert ref["lo"] <= ref["ratio"] <= ref["hi"]
    x = task.split("test")[0]
    r_g, r_h = task.reward("class-3")(x), task.heldout_value("class-3", x)
    top = torch.argsort(r_g, descending=True)[:40]
    assert ref["ratio"] == pytest.approx(float((r_h[top].mean() - r_h.mean()) / (r_g[top].mean() - r_g.mean())),
                                         rel=1e-5)
