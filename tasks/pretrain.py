"""Pretraining and the checkpoint cache.

Checkpoints live in ``$GUIDANCE_BENCH_CACHE`` (default ``~/.cache/guidance-bench``), one file per
(task, task version, schedule, architecture, training config), named by a hash of that key. Writes are
atomic (temp file + rename). Each file stores the sha256 of its weights (``weights_hash``); a file that
fails to load, whose stored key differs or whose weights do not hash to the stored value is retrained.
The loaded network carries ``net.checkpoint`` (sha256[:16] of its weights), which every run records.
The network seed (``network_seed``) is the training seed: part of the key, so seeds are separate files.
On a cache miss a checkpoint shipped in ``tasks/data/nets`` under the same name is used, checked the same way.
The denoising loss is DDPM's (methods/protocol.py ``denoising_loss``; ggdm.md §1.4-1.5).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from methods.protocol import denoising_loss

NET_VERSION = 2  # bump when a network's parameterisation changes (invalidates cached checkpoints)
TRAIN_DEFAULTS = {"n_train": 65536, "steps": 8000, "batch": 256, "lr": 1e-3, "seed": 0}


SHIPPED = Path(__file__).parent / "data" / "nets"  # default checkpoints shipped with the package


def cache_dir() -> Path:
    d = Path(os.environ.get("GUIDANCE_BENCH_CACHE", Path.home() / ".cache" / "guidance-bench"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def train_config(task, arch: str | None = None, **over) -> dict:
    arch = arch or getattr(task, "default_arch", "mlp")
    net_cfg = dict(getattr(task, "arch_defaults", {}).get(arch, {}))
    from .nets import ARCH_TRAIN

    train = {**TRAIN_DEFAULTS, **ARCH_TRAIN.get(arch, {}), **getattr(task, "train_defaults", {})}
    for k, v in over.items():
        (train if k in train else net_cfg)[k] = v
    return {"task": task.name, "task_version": task.version, "schedule": task.schedule.config(),
            "net_version": NET_VERSION, "arch": arch, "net": net_cfg, "train": train}


def checkpoint_path(cfg: dict) -> Path:
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"{cfg['task']}-v{cfg['task_version']}-{cfg['arch']}-{digest}.pt"


def build_net(task, cfg: dict) -> torch.nn.Module:
    from .nets import ARCHS

    archs = {**ARCHS, **getattr(task, "archs", {})}
    if cfg["arch"] not in archs:
        from methods.registry import suggest

        raise suggest(f"architecture for task {task.name!r}", cfg["arch"], archs)
    net = archs[cfg["arch"]](**cfg["net"])
    if hasattr(net, "set_schedule"):
        net.set_schedule(task.schedule.alpha_bar)
    return net


def weights_hash(state_dict: dict) -> str:
    """sha256 over the weights: every tensor's name, dtype, shape and raw bytes, in sorted name order."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        v = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _noised(x0, schedule, gen, t=None):
    """(t, eps, alpha_bar_t, x_t) for a training batch: t ~ U{0..T-1} unless given, then eps, from ``gen`` in
    that order (as ``denoising_loss`` draws them)."""
    if t is None:
        t = torch.randint(0, schedule.T, (x0.shape[0],), generator=gen)
    eps = torch.randn(x0.shape, generator=gen).to(x0)
    ab = schedule.alpha_bar.to(x0)[t].reshape(-1, *([1] * (x0.ndim - 1)))
    return t, eps, ab, ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def _min_snr_loss(net, x0, schedule, gen, gamma: float, t=None) -> torch.Tensor:
    t, eps, ab, x_t = _noised(x0, schedule, gen, t)
    snr = ab / (1 - ab)
    w = snr.clamp(max=gamma) / snr
    return (w * (net(x_t, t) - eps) ** 2).mean()


def _edm_loss(net, x0, schedule, gen, t=None) -> torch.Tensor:
    """EDM weighting (Karras et al. 2022, lambda = 1 / c_out^2): MSE of the preconditioned network's blocks,
    |x0_hat - x0|^2 / c_out(t)^2, uniform over t in the blocks' own units (``weight = "edm"``)."""
    t, _, ab, x_t = _noised(x0, schedule, gen, t)
    return (((net.x0_hat(x_t, t) - x0) / net.precond(t)[1].reshape(ab.shape)) ** 2).mean()


def train(task, cfg: dict, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    tc = cfg["train"]
    gen = torch.Generator().manual_seed(tc["seed"])
    torch.manual_seed(tc["seed"])
    data = task.sample_data(tc["n_train"], gen)
    net = build_net(task, cfg)
    opt = torch.optim.Adam(net.parameters(), lr=tc["lr"], betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, tc["steps"], eta_min=tc["lr"] * 0.01)
    t0, ema = time.perf_counter(), None
    desc = f"pretrain {task.name}/{cfg['arch']}"  # progress: a bool, or a factory (iterable, desc) -> bar
    bar = (progress(range(tc["steps"]), desc) if callable(progress)
           else tqdm(range(tc["steps"]), desc=desc, disable=None if progress else True, file=sys.stderr))
    T, low = task.schedule.T, tc.get("t_low", 0.0)
    for step in bar:
        idx = torch.randint(0, data.shape[0], (tc["batch"],), generator=gen)
        t = None
        if low:  # a fraction t_low of every batch from the lowest-noise tenth of the schedule
            t = torch.randint(0, T, (tc["batch"],), generator=gen)
            n_low = int(round(low * tc["batch"]))
            t[:n_low] = torch.randint(0, max(T // 10, 1), (n_low,), generator=gen)
        if tc.get("weight") == "edm":
            loss = _edm_loss(net, data[idx], task.schedule, gen, t)
        elif tc.get("min_snr"):  # min-SNR-gamma weighting (Hang et al. 2023): eps-MSE x min(SNR, gamma) / SNR
            loss = _min_snr_loss(net, data[idx], task.schedule, gen, tc["min_snr"], t)
        else:
            loss = denoising_loss(net, data[idx], task.schedule, gen, t=t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.99 * ema + 0.01 * loss.item()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{ema:.4f}")
    info = {"train_seconds": time.perf_counter() - t0, "final_loss_ema": ema,
            "params": sum(p.numel() for p in net.parameters())}
    return net.eval(), info


def save_atomic(obj, path: Path):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def shipped_path(cfg: dict) -> Path:
    """Where a checkpoint shipped with the package would be (``tasks/data/nets``, cache file names)."""
    return SHIPPED / checkpoint_path(cfg).name


def load_checkpoint(task, cfg: dict, path: Path | None = None, build=None):
    """The cached (or given) network, or None if absent, unreadable, trained for another key or altered.
    ``build``: a no-argument constructor of the network (default: ``build_net(task, cfg)``)."""
    path = path or checkpoint_path(cfg)
    if not path.exists():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if ck.get("config") != json.loads(json.dumps(cfg)):
            raise ValueError("stored config differs")
        sha = weights_hash(ck["state_dict"])
        if ck.get("sha256") != sha:
            raise ValueError(f"weights hash to {sha[:16]}, the file says {str(ck.get('sha256'))[:16]} (altered bytes)")
        net = build() if build else build_net(task, cfg)
        net.load_state_dict(ck["state_dict"])
        net.checkpoint = sha[:16]
        return net.eval()
    except Exception as e:  # corrupt or mismatched: retrain
        print(f"warning: ignoring checkpoint {path} ({type(e).__name__}: {e}); retraining", file=sys.stderr)
        return None


def load_cached(task, cfg: dict, build=None):
    """The network of ``cfg`` from the cache, else the one shipped in tasks/data/nets, each checked by
    ``load_checkpoint``; None when neither is usable."""
    for path in (checkpoint_path(cfg), shipped_path(cfg)):
        net = load_checkpoint(task, cfg, path, build)
        if net is not None:
            return net
    return None


def load_or_train(task, arch: str | None = None, progress: bool = True, force: bool = False, **over):
    """The cached network for (task, arch, overrides), trained and saved on a miss; ``net.checkpoint`` is
    the sha256[:16] of its weights."""
    cfg = train_config(task, arch, **over)
    net = None if force else load_cached(task, cfg)  # the cache, else a shipped default, checked alike
    if net is None:
        net, info = train(task, cfg, progress)
        sd = net.state_dict()
        sha = weights_hash(sd)
        save_atomic({"config": json.loads(json.dumps(cfg)), "info": info, "state_dict": sd, "sha256": sha},
                    checkpoint_path(cfg))  # JSON-normalised, as load_checkpoint compares (tuples become lists)
        net.checkpoint = sha[:16]
    for p in net.parameters():
        p.requires_grad_(False)
    if hasattr(task, "pretrain_extras"):  # networks a task needs besides the denoiser (e.g. reward classifiers)
        task.pretrain_extras(progress=progress)
    return net


def checkpoint_info(task, arch: str | None = None, **over) -> dict | None:
    cfg = train_config(task, arch, **over)
    path = checkpoint_path(cfg)
    if not path.exists():
        path = shipped_path(cfg)
    if not path.exists():
        return None
    ck = torch.load(path, map_location="cpu", weights_only=True)
    return {"path": str(path), "checkpoint": str(ck.get("sha256"))[:16], **ck.get("info", {})}
