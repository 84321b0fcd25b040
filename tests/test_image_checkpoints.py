"""Image-task checkpoints (digits U-Net, digits and mnist reward classifiers): shipped in tasks/data/nets for the
current default configs, hash-checked on load like the score networks (tasks/pretrain.py); an altered classifier
file is detected and retrained, not used."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from tasks import get_task, pretrain
from tasks.digits_nets import classifier_config, load_or_train_classifier

TINY_NET = {"guide": {"width": 4, "feat": 8}, "heldout": {"width": 4, "feat": 8}}


def _flip_first_weight(path, key, value):
    """Overwrite the first float32 of tensor ``key`` inside the stored file, leaving the zip container valid."""
    raw = bytearray(path.read_bytes())
    needle = torch.load(path, weights_only=True)["state_dict"][key].reshape(-1)[:4].numpy().tobytes()
    at = raw.find(needle)
    assert at >= 0 and raw.find(needle, at + 1) < 0
    raw[at:at + 4] = torch.tensor([value], dtype=torch.float32).numpy().tobytes()
    path.write_bytes(bytes(raw))


@pytest.fixture
def tiny_digits(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path / "cache"))
    t = get_task("digits", 20)
    t.clf_net = TINY_NET
    t.clf_train = {k: {**v, "steps": 2, "batch": 8} for k, v in t.clf_train.items()}
    return t


def test_altered_classifier_bytes_are_detected_and_retrained(tiny_digits, capsys):
    net = load_or_train_classifier(tiny_digits, "guide", progress=False)
    good = {k: v.clone() for k, v in net.state_dict().items()}
    sha = pretrain.weights_hash(good)
    assert net.checkpoint == sha[:16]
    path = pretrain.checkpoint_path(classifier_config(tiny_digits, "guide"))
    assert torch.load(path, weights_only=True)["sha256"] == sha

    _flip_first_weight(path, "body.0.weight", 1234.5)
    assert torch.load(path, weights_only=True)["state_dict"]["body.0.weight"].reshape(-1)[0] == 1234.5
    again = load_or_train_classifier(tiny_digits, "guide", progress=False)
    assert "altered bytes" in capsys.readouterr().err
    assert again.checkpoint == sha[:16]  # retrained (deterministic): the good weights, not the altered ones
    for k, v in again.state_dict().items():
        assert torch.equal(v, good[k])
    assert torch.load(path, weights_only=True)["state_dict"]["body.0.weight"].reshape(-1)[0] != 1234.5


def test_shipped_classifier_used_on_a_cache_miss_and_checked(tiny_digits, tmp_path, monkeypatch, capsys):
    sha = load_or_train_classifier(tiny_digits, "heldout", progress=False).checkpoint
    shipped = tmp_path / "nets"
    shipped.mkdir()
    monkeypatch.setattr(pretrain, "SHIPPED", shipped)
    name = pretrain.checkpoint_path(classifier_config(tiny_digits, "heldout")).name
    shutil.move(pretrain.cache_dir() / name, shipped / name)
    calls = []
    import tasks.digits_nets as dn

    real = dn.train_classifier
    monkeypatch.setattr(dn, "train_classifier", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert load_or_train_classifier(tiny_digits, "heldout", progress=False).checkpoint == sha and not calls
    _flip_first_weight(shipped / name, "body.0.weight", -7.0)
    (pretrain.cache_dir() / name).unlink(missing_ok=True)
    assert load_or_train_classifier(tiny_digits, "heldout", progress=False).checkpoint == sha
    assert calls == [1] and "altered bytes" in capsys.readouterr().err  # the altered shipped file was not used


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_default_image_networks_are_shipped_for_the_current_configs(name):
    """The U-Net and both reward classifiers ship in tasks/data/nets (recorded commands in its README); a change of
    a default config without new files would retrain them (tens of minutes) on every fresh clone."""
    task = get_task(name, 200)
    cfgs = [pretrain.train_config(task)] + [classifier_config(task, r) for r in ("guide", "heldout")]
    for cfg in cfgs:
        path = pretrain.shipped_path(cfg)
        assert path.exists(), f"{path.name} missing: regenerate with tasks/data/nets/README.md"
        ck = torch.load(path, map_location="cpu", weights_only=True)
        assert ck["config"] == json.loads(json.dumps(cfg))
        assert ck["sha256"] == pretrain.weights_hash(ck["state_dict"])
        assert path.stat().st_size < 3e6
