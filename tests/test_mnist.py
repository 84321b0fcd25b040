"""MNIST image task (issue 16): the vendored file and its checksum, the split, a short pretrain, rewards' shapes
and gradients, class-K set metrics against the class's test images, the held-out evaluator's data disjoint from
train, every registered method on 28x28 images, the shipped default network and the diffusers adapter at this
shape. Tiny networks in a temporary cache: the full pretraining never runs here."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from methods import REGISTRY, Sampler, make_method
from methods.protocol import Protocol, run_rounds
from tasks import mnist, pretrain
from tasks.mnist import Mnist

T = 20


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    t = Mnist(T=T)
    t.train_defaults = {**t.train_defaults, "steps": 4, "batch": 8, "n_train": 64}
    t.arch_defaults = {"unet": {**t.arch_defaults["unet"], "ch": 8, "temb": 16}}
    t.clf_net = {"guide": {"width": 8, "feat": 16}, "heldout": {"width": 6, "feat": 12}}
    t.clf_train = {k: {**v, "steps": 40, "batch": 16} for k, v in t.clf_train.items()}
    torch.set_num_threads(1)
    yield t
    mp.undo()


@pytest.fixture(scope="module")
def den(task):
    return task.denoiser("trained", progress=False)


def test_vendored_file_checksum(tmp_path):
    raw = mnist.DATA.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == mnist.SHA256
    assert mnist.SHA256 in (mnist.DATA.parent / "MNIST_LICENSE.txt").read_text()
    bad = tmp_path / "mnist_5k.csv.gz"
    bad.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # one flipped bit
    with pytest.raises(ValueError, match="sha256"):
        mnist.load_mnist(bad)


def test_split_sizes_ranges_and_disjoint(task):
    (tr, ytr), (ev, yev), (te, yte) = (task.split(s) for s in ("train", "eval", "test"))
    assert (len(tr), len(ev), len(te)) == (3000, 1000, 1000)
    assert tr.shape[1:] == (1, 28, 28) and task.shape == (1, 28, 28)
    for x in (tr, ev, te):
        assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    for y in (ytr, yev, yte):  # the permutation mixes the label-sorted file: every class in every split
        assert torch.bincount(y, minlength=10).min() >= 0.08 * len(y)
    rows = [{v.numpy().tobytes() for v in x} for x in (tr, ev, te)]
    assert sum(map(len, rows)) == 5000 and len(set().union(*rows)) == 5000  # 5000 distinct images, no overlap
    drawn = task.sample_data(3000, torch.Generator().manual_seed(0))  # n = 3000 draws every train image once
    assert len({v.numpy().tobytes() for v in drawn}) == 3000 and {v.numpy().tobytes() for v in drawn} == rows[0]
    with pytest.raises(ValueError, match="unknown split"):
        task.split("val")


def test_short_pretrain_and_patch_unet(task, den):
    cfg = pretrain.train_config(task)
    assert cfg["train"]["steps"] == 4 and pretrain.checkpoint_path(cfg).exists()
    assert den.shape == (1, 28, 28) and len(den.checkpoint) == 16
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert den.eps(x, torch.tensor([0, 7, T - 1])).shape == (3, 1, 28, 28)
    eps_net = pretrain.build_net(task, pretrain.train_config(task, pred="eps"))
    assert torch.equal(eps_net.unet.alpha_bar, torch.ones(T))  # eps-parameterised: the raw output is eps


@pytest.mark.parametrize("name", ["synthetic", "class-3"])
def test_rewards_shapes_gradients_and_heldout_metrics(task, name):
    x = task.split("test")[0][:8].clone().requires_grad_(True)
    r = task.reward(name)(x)
    (g,) = torch.autograd.grad(r.sum(), x)
    assert r.shape == (8,) and g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    m = task.reward(name).metrics(x.detach())
    assert m["heldout_reward"].shape == (8,)
    if name == "class-3":
        assert (r <= 0).all() and {"class_fid", "class_fid_floor", "heldout_acc", "hack_ref"} <= set(m)
    off = task.off_support(x.detach())
    assert off.shape == (8,) and (off >= 0).all()


def test_class_set_metrics_use_the_class_test_images(task):
    xtr, ytr = task.split("train")
    threes, fives = xtr[ytr == 3][:64], xtr[ytr == 5][:64]
    m3, m5 = task.reward("class-3").metrics(threes), task.reward("class-3").metrics(fives)
    assert float(m3["class_fid"][0]) < float(m5["class_fid"][0])  # real 3s are closer to the test 3s than 5s are
    assert float(m3["class_fid_floor"][0]) == pytest.approx(float(m3["class_fid"][0]), rel=1e-6)  # the same 3s
    xte, yte = task.split("test")
    with torch.no_grad():
        ref = mnist.fidelity.fid(task.features(fives), task.features(xte[yte == 3]))
    assert float(m5["class_fid"][0]) == pytest.approx(ref, rel=1e-6)
    assert task.set_metrics(threes)["fid_floor"] == pytest.approx(task.set_metrics(xtr[:64])["fid"], rel=1e-6)


def test_set_metrics_through_torch_fidelity_agree(task, monkeypatch):
    pytest.importorskip("torch_fidelity")
    xtr, ytr = task.split("train")
    x = xtr[ytr == 3][:40] + 0.2 * torch.randn(40, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    inhouse = {**task.class_set_metrics(x, 3), **task.set_metrics(x)}
    monkeypatch.setenv("GUIDANCE_BENCH_FIDELITY", "torch-fidelity")
    via_tf = {**task.class_set_metrics(x, 3), **task.set_metrics(x)}
    assert via_tf == pytest.approx(inhouse, rel=1e-3, abs=1e-5)


def test_heldout_evaluator_trained_on_eval_only(tmp_path, monkeypatch):
    """The held-out classifier sees only eval images, the guide only train images (captured at training)."""
    import tasks.digits_nets as dn

    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path))
    t = Mnist(T=T)
    t.clf_net = {"guide": {"width": 4, "feat": 8}, "heldout": {"width": 4, "feat": 8}}
    t.clf_train = {k: {**v, "steps": 2, "batch": 8} for k, v in t.clf_train.items()}
    seen = []
    real = dn.train_classifier
    monkeypatch.setattr(dn, "train_classifier", lambda net, x, y, **kw: seen.append(x) or real(net, x, y, **kw))
    t.guide, t.heldout
    key = {role: {v.numpy().tobytes() for v in x} for role, x in zip(("guide", "heldout"), seen)}
    train = {v.numpy().tobytes() for v in t.split("train")[0]}
    assert len(key["heldout"]) == 1000 and not key["heldout"] & train
    assert key["guide"] == train


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_runs_on_mnist(task, den, name):
    """Every registered method (new ones join automatically): one short round on 28x28 images, tiny networks."""
    cls = REGISTRY[name]
    why = getattr(cls, "unsupported", lambda *a: None)(task.reward("class-3"), "trained")
    if why:  # a method that declares the reward out of scope (exact-guidance: closed-form tilts only) says so
        with pytest.raises(ValueError, match="class-3"):
            list(run_rounds(cls(), den, task.reward("class-3"), Protocol(1), batch=2, seed=0, sampler=Sampler(steps=3)))
        return
    ddim = name == "doodl"
    outs = list(run_rounds(cls(), den, task.reward("class-3"), Protocol(1), batch=2, seed=0,
                           sampler=Sampler("ddim" if ddim else "ddpm", 0.0 if ddim else 1.0, steps=3)))
    x = outs[-1]["x"]
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()


def test_default_network_is_shipped_for_the_current_config():
    cfg = pretrain.train_config(Mnist(T=200))
    path = pretrain.shipped_path(cfg)
    assert path.exists(), f"{path.name} missing: regenerate with tasks/data/nets/README.md"
    ck = torch.load(path, map_location="cpu", weights_only=True)
    assert ck["config"] == json.loads(json.dumps(cfg)) and ck["sha256"] == pretrain.weights_hash(ck["state_dict"])
    assert path.stat().st_size < 3e6


def test_diffusers_unet2d_of_this_shape_samples_through_our_loop(tmp_path, monkeypatch):
    diffusers = pytest.importorskip("diffusers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    sched = diffusers.DDPMScheduler(num_train_timesteps=30, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                                    prediction_type="v_prediction")
    unet.save_pretrained(tmp_path / "unet")
    sched.save_pretrained(tmp_path / "scheduler")
    monkeypatch.setenv("GUIDANCE_BENCH_DIFFUSERS", str(tmp_path))
    den = Mnist(T=T).denoiser("diffusers")
    assert den.shape == (1, 28, 28) and den.schedule.T == 30 and den.prediction_type == "v_prediction"
    outs = list(run_rounds(make_method("dps", {"zeta": "0.1"}), den, lambda z: -(z ** 2).flatten(1).sum(1),
                           Protocol(1), batch=2, seed=0, sampler=Sampler("ddim", 0.0, steps=3)))
    assert outs[-1]["x"].shape == (2, 1, 28, 28) and outs[-1]["cost"].vjp == 3
