"""Checkpoint cache: keyed by task/version/config, atomic, corrupt or mismatched files are retrained."""
import torch

from tasks import get_task
from tasks import pretrain


def test_cache_roundtrip_corruption_and_key(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path))
    task = get_task("subspace", 200)
    tiny = {"steps": 3, "n_train": 256, "batch": 16, "width": 16, "depth": 1}
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


def test_trained_denoiser_has_frozen_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path))
    task = get_task("sphere", 200)
    den = task.denoiser("trained", progress=False, steps=2, n_train=64, batch=8, width=8, depth=1)
    assert not any(p.requires_grad for p in den.parameters())
    x = torch.randn(3, 64)
    assert den.eps(x, torch.full((3,), 5)).shape == (3, 64)
