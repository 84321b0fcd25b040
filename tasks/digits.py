"""Digits: a small real image task, the CPU-sized analogue of GGDM's image experiment (Guo et al. 2024, §6;
ggdm.md §6), where a pretrained model is tuned toward a reward network.

Data: the 1797 8x8 hand-written digits (UCI, as shipped by scikit-learn; vendored in ``data/digits.csv.gz``,
see ``data/DIGITS_LICENSE.txt``), pixels 0..16 scaled to [-1, 1], images [1, 8, 8] (``digits16``: bilinearly
upsampled to [1, 16, 16]). A fixed permutation splits them into ``train`` (900: the score network and the
reward's feature network), ``eval`` (500: the held-out evaluator only) and ``test`` (397: FID reference and
off-support reference). Denoiser: a convolutional U-Net (tasks/digits_nets.py); no exact oracle.

Rewards. ``synthetic``: a random linear head (fixed seed) on the frozen features phi of a CNN classifier trained
on ``train`` -- the construction of GGDM's image reward (RCGDM's ResNet-18 with a random ``Linear(512, 1)``),
standardised to mean 0 / std 1 on the train images. ``class-K``: log p(K | x) under that classifier.

Held-out evaluator (another architecture and seed, trained on ``eval``): scores every run through the reward's
``metrics`` -- held-out log p(K | x) and accuracy for ``class-K``; for ``synthetic`` a ridge regression from the
held-out features to the synthetic reward, fit on real ``eval`` images. The gap guider - held-out exposes reward
hacking. Off-support error: per-sample k-NN distance (k = 3) in held-out feature space to the test set, divided
by the test set's own mean k-NN radius (real data ~ 1). Set metrics (FID, KID, precision, recall vs the test
set, and the train-vs-test FID floor at the same n) are batch-level values repeated per sample; a ``class-K``
reward adds the same against the test images of class K only (``class_fid`` ..., floor: the real class-K train
images), since its target is class K, not the whole data set (issue 12).

Reward hacking (issue 12): held-out gain / guider gain over the unguided run is below 1 even without hacking,
because two classifiers never agree exactly. ``hacking_reference`` measures that ratio on real images: the top
10 % of the test images by guider reward against all test images, with a bootstrap interval. Each record
carries it (``hack_ref``, ``hack_ref_lo``, ``hack_ref_hi``) and what a run's own ratio interval needs
(``heldout_reward_se``, ``guide_heldout_cov``: the covariance of the guider and held-out batch means).
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from . import fidelity
from .base import Reward, Task
from .digits_nets import CLF_TRAIN, UNetEps, load_or_train_classifier

_DATA = Path(__file__).parent / "data" / "digits.csv.gz"
SPLITS = {"train": (0, 900), "eval": (900, 1400), "test": (1400, 1797)}
SYNTH_SEED, KNN, KID_SUBSETS = 1234, fidelity.NEIGHBOURHOOD, 20
HACK_Q, HACK_BOOT = 0.1, 1000  # reward-hacking reference: top 10 % of the test images by guider reward, bootstrap


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(pixels [1797, 64] in 0..16, labels [1797]) from the vendored CSV."""
    with gzip.open(_DATA, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if a.shape != (1797, 65):
        raise ValueError(f"{_DATA} has shape {a.shape}, expected (1797, 65)")
    return a[:, :64], a[:, 64]


@dataclass(frozen=True)
class ScoredReward(Reward):
    """A reward with extra per-sample metrics (the held-out evaluator's view), read by the runner."""

    extra: Callable[[torch.Tensor], dict] | None = None

    def metrics(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.extra(x) if self.extra else {}


class Digits(Task):
    name = "digits"
    version = 1
    size = 8
    summary = "8x8 hand-written digits in [-1, 1] (UCI via scikit-learn), conv U-Net, rewards on a CNN classifier"
    denoiser_kinds = {
        "trained": "convolutional U-Net eps-network (v-parameterised), pretrained here and cached (bench pretrain)",
        "diffusers": "a diffusers UNet2DModel + scheduler from $GUIDANCE_BENCH_DIFFUSERS (directory or hub id; "
                     "extra 'diffusers'), for real checkpoints",
    }
    default_arch = "unet"
    archs = {"unet": UNetEps}
    train_defaults = {"n_train": 900, "steps": 4000, "batch": 128, "lr": 2e-3, "seed": 0}
    clf_split = {"guide": "train", "heldout": "eval"}

    def __init__(self, T: int = 200):
        super().__init__(T)
        self.shape = (1, self.size, self.size)
        mult = [1, 2] if self.size <= 8 else [1, 2, 2]  # lists, not tuples: the cache compares JSON configs
        self.arch_defaults = {"unet": {"size": self.size, "mult": mult}}
        self.clf_train = {k: dict(v) for k, v in CLF_TRAIN.items()}  # tests shrink these before first use
        self.clf_net: dict[str, dict] = {}
        self._floor: dict[int, float] = {}
        self._class_floor: dict[tuple[int, int], dict] = {}
        self._hack_ref: dict[tuple[str, float], dict] = {}
        pix, labels = load_digits()
        perm = np.random.RandomState(0).permutation(len(labels))
        x = torch.tensor(pix[perm], dtype=torch.float32).reshape(-1, 1, 8, 8) / 8.0 - 1.0
        if self.size != 8:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        self._x, self._y = x, torch.tensor(labels[perm])
        self.rewards = {"synthetic": ScoredReward(
            "synthetic", self._synthetic, "random linear head (seed 1234) on the features of a CNN classifier "
            "trained on the train split (GGDM image reward), standardised on train images", extra=self._synth_heldout)}
        for k in range(10):
            self.rewards[f"class-{k}"] = ScoredReward(
                f"class-{k}", self._class_logp(k), f"log p({k} | x) under the train-split CNN classifier", 0.0,
                extra=self._class_heldout(k))

    # --- data -----------------------------------------------------------------------------------
    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [n, 1, S, S], labels [n]) of split 'train' | 'eval' | 'test'."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {list(SPLITS)}")
        lo, hi = SPLITS[name]
        return self._x[lo:hi], self._y[lo:hi]

    def sample_data(self, n, generator):
        """n train images: concatenated random permutations of the train split (n = 900 gives each image once)."""
        x = self.split("train")[0]
        idx = torch.cat([torch.randperm(len(x), generator=generator) for _ in range(-(-n // len(x)))])[:n]
        return x[idx]

    # --- networks (trained and cached on first use) ------------------------------------------------
    @cached_property
    def guide(self):
        return load_or_train_classifier(self, "guide")

    @cached_property
    def heldout(self):
        return load_or_train_classifier(self, "heldout")

    def pretrain_extras(self, progress: bool = True):
        """Train/load both classifiers and the reference statistics (called by tasks.pretrain.load_or_train)."""
        return self.guide, self.heldout, self._ref

    def denoiser(self, kind: str, device="cpu", progress: bool = True, **cfg):
        if kind == "diffusers":
            from .diffusers_adapter import load_diffusers

            src = os.environ.get("GUIDANCE_BENCH_DIFFUSERS")
            if not src:
                raise ValueError("denoiser 'diffusers' needs GUIDANCE_BENCH_DIFFUSERS=<directory or hub id>")
            den = load_diffusers(src, device=device)
            if den.shape != self.shape:
                raise ValueError(f"diffusers model samples {den.shape}, task {self.name!r} needs {self.shape}")
            return den
        return super().denoiser(kind, device, progress, **cfg)

    @cached_property
    def _synth_head(self):
        """(w, b, mu, sd) of the random head Linear(feat, 1), torch's default init under a fixed seed."""
        feat = self.guide.head.in_features
        lin = torch.nn.Linear(feat, 1)
        gen = torch.Generator().manual_seed(SYNTH_SEED)
        bound = 1 / feat ** 0.5
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.uniform_(-bound, bound, generator=gen)
            r = lin(self.guide.features(self.split("train")[0])).squeeze(1)
        return lin.weight[0].detach(), lin.bias.detach(), r.mean(), r.std()

    def _synthetic(self, x):
        w, b, mu, sd = self._synth_head
        return ((self.guide.features(x) @ w.to(x) + b.to(x)) - mu) / sd

    def _class_logp(self, k: int):
        return lambda x: torch.log_softmax(self.guide(x), 1)[:, k]

    # --- held-out evaluator ---------------------------------------------------------------------
    @cached_property
    def _ref(self):
        """Standardisation of the held-out features (eval split mean/std), test-set features and their mean k-NN
        radius, and the ridge fit of the synthetic reward on eval images."""
        with torch.no_grad():
            x_eval = self.split("eval")[0]
            f_eval = self.heldout.features(x_eval)
            ref = {"mu": f_eval.mean(0), "sd": f_eval.std(0) + 1e-6}
            f_eval = (f_eval - ref["mu"]) / ref["sd"]
            ref["f_test"] = (self.heldout.features(self.split("test")[0]) - ref["mu"]) / ref["sd"]
            ref["radius"] = fidelity.knn_radius(ref["f_test"], KNN).mean()
            a = torch.cat([f_eval, torch.ones(len(x_eval), 1)], 1).double()
            y = self._synthetic(x_eval).double()
            ref["ridge"] = torch.linalg.solve(a.T @ a + 1e-2 * torch.eye(a.shape[1], dtype=a.dtype), a.T @ y).float()
        return ref

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The held-out evaluator's features, standardised on the eval split: the space of FID/KID/PR and of
        the off-support error (unit scale, so KID's cubic kernel with gamma = 1/d stays in range)."""
        ref = self._ref
        return (self.heldout.features(x.float()) - ref["mu"].to(x.device)) / ref["sd"].to(x.device)

    def heldout_value(self, reward: str, x: torch.Tensor) -> torch.Tensor:
        """The held-out evaluator's per-sample view of ``reward``: class-K, its log p(K | x); synthetic, the ridge
        regression from its features (fit on real eval images)."""
        with torch.no_grad():
            if reward.startswith("class-"):
                return torch.log_softmax(self.heldout(x), 1)[:, int(reward[6:])]
            c = self._ref["ridge"].to(x)
            return self.features(x) @ c[:-1] + c[-1]

    def _synth_heldout(self, x):
        with torch.no_grad():
            r_h = self.heldout_value("synthetic", x)
            return {"heldout_reward": r_h, **self._gain_stats("synthetic", self._synthetic(x), r_h)}

    def _class_heldout(self, k: int):
        def fn(x):
            with torch.no_grad():
                r_h = self.heldout_value(f"class-{k}", x)
                out = {"heldout_reward": r_h, "heldout_acc": (self.heldout(x).argmax(1) == k).float(),
                       "guide_acc": (self.guide(x).argmax(1) == k).float()}
                out.update(self._gain_stats(f"class-{k}", self._class_logp(k)(x), r_h))
                if len(x) >= 2 * KNN and torch.isfinite(x).all():
                    out.update({m: torch.full((len(x),), v, dtype=torch.float64)
                                for m, v in self.class_set_metrics(x, k).items()})
            return out
        return fn

    # --- reward hacking: held-out vs guider gain, and its reference on real images ------------------
    def _gain_stats(self, reward: str, r_g: torch.Tensor, r_h: torch.Tensor) -> dict:
        """Batch-level values repeated per sample: the SE of the held-out mean, the covariance of the guider and
        held-out means (for the delta-method interval of a gain ratio), and the real-image reference ratio."""
        B = len(r_g)
        if B < 2 or not (torch.isfinite(r_g).all() and torch.isfinite(r_h).all()):
            return {}
        g, h = r_g.double().cpu(), r_h.double().cpu()
        vals = {"heldout_reward_se": float(h.std() / B ** 0.5),
                "guide_heldout_cov": float(((g - g.mean()) * (h - h.mean())).sum() / (B - 1) / B)}
        ref = self.hacking_reference(reward)
        vals.update({"hack_ref": ref["ratio"], "hack_ref_lo": ref["lo"], "hack_ref_hi": ref["hi"]})
        return {m: torch.full((B,), v, dtype=torch.float64) for m, v in vals.items()}

    def hacking_reference(self, reward: str, q: float = HACK_Q, boot: int = HACK_BOOT, seed: int = 0) -> dict:
        """Held-out gain / guider gain of real images selected by the guider: the top ``q`` of the test images by
        guider reward against all test images. Real images are not adversarial, so this is the ratio that means
        "no hacking" (< 1: the two networks disagree). {ratio, lo, hi (95 % bootstrap percentile interval over
        test images), guider_gain, heldout_gain, n_selected}."""
        key = (reward, q)
        if key not in self._hack_ref:
            x = self.split("test")[0]
            with torch.no_grad():
                r_g = self.rewards[reward](x).double().numpy()
                r_h = self.heldout_value(reward, x).double().numpy()
            self._hack_ref[key] = selection_ratio(r_g, r_h, q, boot, seed)
        return self._hack_ref[key]

    # --- class-conditional set metrics --------------------------------------------------------------
    def class_features(self, k: int, split: str = "test") -> torch.Tensor:
        """Standardised held-out features of the images of class k in ``split``."""
        x, y = self.split(split)
        with torch.no_grad():
            return self.features(x[y == k]).cpu()

    def class_set_metrics(self, x: torch.Tensor, k: int) -> dict[str, float]:
        """FID, KID, precision, recall of the batch vs the test images of class k only (a class-k reward's
        target), and the same for the real class-k train images (at most len(x) of them): the floor."""
        with torch.no_grad():
            f = self.features(x).cpu()
        f_ref = self.class_features(k)
        out = _set(f, f_ref)
        n = min(len(x), int((self.split("train")[1] == k).sum()))
        if (k, n) not in self._class_floor:
            self._class_floor[(k, n)] = _set(self.class_features(k, "train")[:n], f_ref)
        out.update({f"{m}_floor": v for m, v in self._class_floor[(k, n)].items() if m != "one_minus_precision"})
        return {f"class_{m}": v for m, v in out.items()}

    def off_support(self, x):
        """k-NN distance (held-out features) to the test set / the test set's own mean k-NN radius."""
        with torch.no_grad():
            f = self.features(x)
            d = torch.cdist(f, self._ref["f_test"].to(f)).topk(KNN, dim=1, largest=False).values[:, -1]
            return d / self._ref["radius"].to(f)

    def set_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """FID, KID, precision, recall of the batch vs the test set (held-out features), and the floor: FID of
        the same number of train images vs the test set. In-house (tasks/fidelity.py) unless
        GUIDANCE_BENCH_FIDELITY=torch-fidelity (extra 'fidelity'), which gives the same numbers."""
        if os.environ.get("GUIDANCE_BENCH_FIDELITY", "inhouse") == "torch-fidelity":  # same formulas, slower
            tf = fidelity.torch_fidelity_metrics(x.detach().cpu(), self.split("test")[0], _Features(self),
                                                 kid_subsets=KID_SUBSETS)
            out = {"fid": tf["frechet_inception_distance"], "kid": tf["kernel_inception_distance_mean"],
                   "precision": tf["precision"], "recall": tf["recall"]}
        else:
            with torch.no_grad():
                f = self.features(x).cpu()
            f_test = self._ref["f_test"]
            out = {"fid": fidelity.fid(f, f_test)}
            out["kid"], _ = fidelity.kid(f, f_test, subsets=KID_SUBSETS)
            out["precision"], out["recall"] = fidelity.precision_recall(f, f_test)
        out["one_minus_precision"] = 1 - out["precision"]
        out["fid_floor"] = self.fid_floor(len(x))
        return out

    def fid_floor(self, n: int) -> float:
        """FID of n train images (fixed draw) vs the test set: what a perfect sampler of the data would get."""
        if n < 2:
            return float("nan")
        x = self.sample_data(n, torch.Generator().manual_seed(0)) if n > 900 else self.split("train")[0][:n]
        if n not in self._floor:
            with torch.no_grad():
                self._floor[n] = fidelity.fid(self.features(x), self._ref["f_test"])
        return self._floor[n]

    def metrics(self, x):
        B = x.shape[0]
        with torch.no_grad():
            p = torch.softmax(self.heldout(x.float()), 1)
            out = {"heldout_maxprob": p.max(1).values}
            if B >= 2 * KNN and torch.isfinite(x).all():
                out.update({k: torch.full((B,), v, dtype=torch.float64) for k, v in self.set_metrics(x).items()})
        return out


def _set(f: torch.Tensor, f_ref: torch.Tensor) -> dict[str, float]:
    out = {"fid": fidelity.fid(f, f_ref)}
    out["kid"], _ = fidelity.kid(f, f_ref, subsets=KID_SUBSETS)
    out["precision"], out["recall"] = fidelity.precision_recall(f, f_ref)
    out["one_minus_precision"] = 1 - out["precision"]
    return out


def selection_ratio(r_g, r_h, q: float, boot: int = HACK_BOOT, seed: int = 0) -> dict:
    """(mean r_h[top q by r_g] - mean r_h) / (mean r_g[top q] - mean r_g), with a 95 % percentile bootstrap
    interval over the items (resampled with replacement, selection redone in each resample)."""
    r_g, r_h = np.asarray(r_g, dtype=np.float64), np.asarray(r_h, dtype=np.float64)
    n = len(r_g)
    m = max(1, int(round(q * n)))

    def stats(g, h):
        top = np.argsort(-g, kind="stable")[:m]
        dg, dh = g[top].mean() - g.mean(), h[top].mean() - h.mean()
        return dg, dh

    dg, dh = stats(r_g, r_h)
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(boot):
        i = rng.integers(0, n, n)
        bg, bh = stats(r_g[i], r_h[i])
        ratios.append(bh / bg if bg > 0 else np.nan)
    lo, hi = np.nanpercentile(ratios, [2.5, 97.5]) if boot else (np.nan, np.nan)
    return {"ratio": float(dh / dg) if dg > 0 else float("nan"), "lo": float(lo), "hi": float(hi),
            "guider_gain": float(dg), "heldout_gain": float(dh), "n_selected": m}


class _Features(torch.nn.Module):
    """The task's standardised held-out features as a module (torch-fidelity's custom feature extractor)."""

    def __init__(self, task: Digits):
        super().__init__()
        self.features = task.features


class Digits16(Digits):
    name = "digits16"
    size = 16
    summary = "the digits task bilinearly upsampled to 16x16 (4x the U-Net cost)"
