"""Tiny trained networks in a scratch cache, for tests that go through the CLI with ``--denoiser trained`` or the
digits task: the MLP trains 20 Adam steps, the digits U-Net 10 and its two classifiers 20 (seconds, not the
minutes of the real configurations). The numbers are meaningless; the code paths are the real ones."""
from __future__ import annotations

import os


def settings():
    """(object, attribute or key, tiny value) for every training configuration that gets shrunk."""
    import tasks.pretrain as pretrain
    from tasks.digits import Digits
    from tasks.digits_nets import CLF_TRAIN

    return ([(pretrain, "TRAIN_DEFAULTS", {**pretrain.TRAIN_DEFAULTS, "n_train": 512, "steps": 20, "batch": 64}),
             (Digits, "train_defaults", {**Digits.train_defaults, "steps": 10, "batch": 16})],
            [(CLF_TRAIN, role, {**cfg, "steps": 20, "batch": 32}) for role, cfg in CLF_TRAIN.items()])


def apply(monkeypatch, cache_dir) -> None:
    """Shrink every network (undone with ``monkeypatch``); callers clear ``tasks.get_task``'s cache around it."""
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(cache_dir))
    attrs, items = settings()
    for obj, name, value in attrs:
        monkeypatch.setattr(obj, name, value)
    for d, key, value in items:
        monkeypatch.setitem(d, key, value)


def apply_for_good() -> None:
    """The same in a process of its own (a subprocess shim), with the cache from $GUIDANCE_BENCH_CACHE."""
    assert os.environ.get("GUIDANCE_BENCH_CACHE"), "set GUIDANCE_BENCH_CACHE to a scratch directory"
    attrs, items = settings()
    for obj, name, value in attrs:
        setattr(obj, name, value)
    for d, key, value in items:
        d[key] = value
