"""Checkpoint cache: keyed by task/version/config, atomic, corrupt, mismatched or altered files are retrained."""
import json

import pytest
import torch

from tasks import get_task
from tasks import pretrain
from methods.protocol import denoising_loss

TINY = {"steps": 3, "n_train": 256, "batch": 16, "width": 16, "depth": 1}


def test_cache_roundtrip_corruption_and_key(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path))
    task = get_task("subspace", 200)
    tiny = TINY
    net = pretrain.load_or_train(task, progress=False, **tiny)
    path = pretrain.checkpoint_path(pretrain.train_config(task, **tiny))
    assert path.exists() and not list(tmp_path.glob("*.tmp"))
    again = pretrain.load_checkpoint(task, pretrain.train_config(task, **tiny))
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    # a different config is a different file
    other = pretrain.checkpoint_path(pretrain.train_config(task, **{**tiny, "steps": 4}))
    assert other != path
    # corrupt file: detected, retrained, rewritten
    path.write_bytes(b"not a checkpoint")
    assert pretrain.load_checkpoint(task, pretrain.train_config(task, **tiny)) is None
    pretrain.load_or_train(task, progress=False, **tiny)
    assert pretrain.load_checkpoint(task, pretrain.train_config(task, **tiny)) is not None
    # a file whose stored config differs (e.g. copied from another key) is rejected
    ck = torch.load(path, weights_only=True)
    ck["config"]["train"]["seed"] = 99
    torch.save(ck, path)
    assert pretrain.load_checkpoint(task, pretrain.train_config(task, **tiny)) is None


def _flip_weight_bytes(path, value):
    """Overwrite 4 bytes inside a stored weight tensor, leaving the zip container valid."""
    raw = bytearray(path.read_bytes())
    ck = torch.load(path, weights_only=True)
    w = ck["state_dict"]["inp.weight"]
    needle = w.reshape(-1)[:4].numpy().tobytes()  # the tensor's first 16 bytes as stored (little-endian float32)
    at = raw.find(needle)
    assert at >= 0 and raw.find(needle, at + 1) < 0
    raw[at:at + 4] = torch.tensor([value], dtype=torch.float32).numpy().tobytes()
    path.write_bytes(bytes(raw))


def test_altered_weight_bytes_are_detected_by_hash_and_retrained(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path))
    task = get_task("subspace", 200)
    cfg = pretrain.train_config(task, **TINY)
    net = pretrain.load_or_train(task, progress=False, **TINY)
    good = {k: v.clone() for k, v in net.state_dict().items()}
    sha = pretrain.weights_hash(good)
    assert net.checkpoint == sha[:16] and len(net.checkpoint) == 16
    path = pretrain.checkpoint_path(cfg)
    assert torch.load(path, weights_only=True)["sha256"] == sha

    _flip_weight_bytes(path, 1234.5)
    altered = torch.load(path, weights_only=True)  # the container still loads: only the hash can tell
    assert altered["state_dict"]["inp.weight"].reshape(-1)[0] == 1234.5
    assert pretrain.weights_hash(altered["state_dict"]) != sha
    assert pretrain.load_checkpoint(task, cfg) is None
    assert "altered bytes" in capsys.readouterr().err

    # load_or_train retrains (deterministic config: the same weights as before) and rewrites a valid file
    again = pretrain.load_or_train(task, progress=False, **TINY)
    assert again.checkpoint == sha[:16]
    for k, v in again.state_dict().items():
        assert torch.equal(v, good[k])
    assert pretrain.load_checkpoint(task, cfg).checkpoint == sha[:16]


def test_file_without_hash_is_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path))
    task = get_task("subspace", 200)
    cfg = pretrain.train_config(task, **TINY)
    pretrain.load_or_train(task, progress=False, **TINY)
    path = pretrain.checkpoint_path(cfg)
    ck = torch.load(path, weights_only=True)
    del ck["sha256"]
    torch.save(ck, path)
    assert pretrain.load_checkpoint(task, cfg) is None


def test_trained_denoiser_has_frozen_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path))
    task = get_task("sphere", 200)
    den = task.denoiser("trained", progress=False, steps=2, n_train=64, batch=8, width=8, depth=1)
    assert not any(p.requires_grad for p in den.parameters())
    assert den.checkpoint == pretrain.weights_hash(den.net.state_dict())[:16]
    x = torch.randn(3, 64)
    assert den.eps(x, torch.full((3,), 5)).shape == (3, 64)


def test_shipped_checkpoint_is_used_on_a_cache_miss_and_checked(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path / "cache"))
    task = get_task("subspace", 200)
    cfg = pretrain.train_config(task, **TINY)
    sha = pretrain.load_or_train(task, progress=False, **TINY).checkpoint
    shipped = tmp_path / "nets"
    shipped.mkdir()
    monkeypatch.setattr(pretrain, "SHIPPED", shipped)
    shutil.move(pretrain.checkpoint_path(cfg), shipped / pretrain.checkpoint_path(cfg).name)
    trained = []
    monkeypatch.setattr(pretrain, "train", lambda *a, **k: trained.append(1) or (_ for _ in ()).throw(AssertionError))
    net = pretrain.load_or_train(task, progress=False, **TINY)  # from the shipped file, no training
    assert net.checkpoint == sha and not trained
    assert pretrain.checkpoint_info(task, **TINY)["checkpoint"] == sha
    _flip_weight_bytes(shipped / pretrain.checkpoint_path(cfg).name, -7.0)
    assert pretrain.load_checkpoint(task, cfg, shipped / pretrain.checkpoint_path(cfg).name) is None
    try:
        pretrain.load_or_train(task, progress=False, **TINY)
    except AssertionError:
        pass
    assert trained == [1]  # the altered shipped file was not used: training was attempted


def test_default_networks_are_shipped_for_the_current_training_config():
    """The subspace and sphere defaults ship in tasks/data/nets (made by `bench pretrain`, see its README); a change
    of the default training config or architecture without new files would silently retrain on every fresh clone."""
    for name in ("subspace", "sphere"):
        cfg = pretrain.train_config(get_task(name, 200))
        path = pretrain.shipped_path(cfg)
        assert path.exists(), f"{path.name} missing: regenerate with tasks/data/nets/README.md"
        ck = torch.load(path, map_location="cpu", weights_only=True)
        assert ck["config"] == json.loads(json.dumps(cfg))
        assert ck["sha256"] == pretrain.weights_hash(ck["state_dict"])  # the checksum load_checkpoint verifies


def test_polar_input_sees_the_norm_only_through_its_own_path():
    """MLPEps(polar=True): direction x/|x| into the first layer, log|x| into the conditioning. With the radial path
    silenced the x0-prediction is exactly constant along every ray (the sphere's small-t x0_hat); with it, not."""
    from tasks.nets import MLPEps

    task = get_task("sphere", 200)
    torch.manual_seed(0)
    net = MLPEps(width=16, depth=1, temb=16, pred="x0", polar=True).set_schedule(task.schedule.alpha_bar)
    x, t = torch.randn(5, 64), torch.tensor([0, 1, 3, 50, 199])
    seen = []
    net.out.register_forward_hook(lambda m, i, o: seen.append(o))  # the blocks' output: x0_hat itself

    def x0_hat(x):
        net(x, t)
        return seen[-1]

    assert not torch.allclose(x0_hat(x), x0_hat(2 * x), atol=1e-4)  # the norm reaches the output
    with torch.no_grad():
        net.r_mlp[2].weight.zero_()
        net.r_mlp[2].bias.zero_()
    for c in (0.5, 2.0):
        torch.testing.assert_close(x0_hat(c * x), x0_hat(x), atol=1e-6, rtol=0)


def test_preconditioned_output_is_the_skip_plus_c_out_times_the_blocks():
    """MLPEps(sigma_data=s): x0_hat = c_skip x_skip + c_out F (EDM eq. 7 in VP time). With the blocks silenced,
    x0_hat is the skip alone, c_skip = s^2 alpha_bar / (1 - alpha_bar + s^2 alpha_bar), computed by hand here; the
    blocks' output enters scaled by c_out = sqrt(h / alpha_bar) s / sqrt(h / alpha_bar + s^2)."""
    from tasks.nets import MLPEps

    task = get_task("sphere", 200)
    ab, s = task.schedule.alpha_bar.double(), 0.125
    torch.manual_seed(0)
    x, t = torch.randn(4, 64), torch.tensor([0, 2, 60, 199])
    u = x / x.norm(dim=1, keepdim=True)
    sig2 = (1 - ab[t]) / ab[t]
    c_skip, c_out = (s**2 / (sig2 + s**2)).unsqueeze(1), (sig2 * s**2 / (sig2 + s**2)).sqrt().unsqueeze(1)
    for polar, skip in ((True, u * s * 8), (False, x / ab[t].sqrt().unsqueeze(1))):
        net = MLPEps(width=16, depth=1, temb=16, pred="x0", polar=polar, sigma_data=s).set_schedule(ab)
        with torch.no_grad():
            f = net._blocks(x, t).double()
            torch.testing.assert_close(net.x0_hat(x, t).double(), c_skip * skip + c_out * f, rtol=2e-5, atol=1e-6)
            net.out[1].weight.zero_()
            net.out[1].bias.zero_()
            torch.testing.assert_close(net.x0_hat(x, t).double(), c_skip * skip, rtol=2e-5, atol=1e-7)
    with pytest.raises(ValueError, match="pred='x0'"):
        MLPEps(pred="v", sigma_data=s)


def test_edm_loss_is_the_eps_loss_reweighted_by_one_plus_sigma2_over_s2():
    """Karras et al.'s weight 1 / c_out^2 on the x0 error equals (sigma^2 + s^2) / s^2 times the eps error at the
    same x_t (x0 error = sqrt(h / alpha_bar) eps error): checked per time, same draws."""
    from tasks.nets import MLPEps

    task = get_task("sphere", 200)
    ab, s = task.schedule.alpha_bar, 0.125
    net = MLPEps(width=16, depth=1, temb=16, pred="x0", polar=True, sigma_data=s).set_schedule(ab)
    x0 = task.sample_data(8, torch.Generator().manual_seed(1))
    for ti in (0, 5, 120):
        t = torch.full((8,), ti)
        edm = pretrain._edm_loss(net, x0, task.schedule, torch.Generator().manual_seed(2), t)
        eps_mse = denoising_loss(net, x0, task.schedule, torch.Generator().manual_seed(2), t)
        sig2 = float((1 - ab[ti]) / ab[ti])
        assert edm.item() == pytest.approx(eps_mse.item() * (sig2 + s**2) / s**2, rel=1e-3)
