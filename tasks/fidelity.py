"""Set-level fidelity metrics on feature vectors: FID (Heusel et al. 2017, eq. 6: Frechet distance of Gaussians),
KID (Binkowski et al. 2018: unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / d + 1)^3, averaged
over random subsets), precision / recall (Kynkaanniemi et al. 2019, eq. 1-2: k-NN balls, k = 3).

The formulas, defaults and subset sampling (numpy RandomState(2020)) are those of torch-fidelity 0.4.0, so the
numbers agree with it (tests/test_digits.py cross-checks when torch-fidelity is installed); nothing here needs
torch-fidelity or torchvision. ``torch_fidelity_metrics`` runs the same through torch-fidelity itself, with the
feature network registered as a custom feature extractor (optional extra ``fidelity``).
"""
from __future__ import annotations

import numpy as np
import torch

KID_SUBSETS, KID_SEED, NEIGHBOURHOOD = 100, 2020, 3


def _np(f) -> np.ndarray:
    f = f.detach().cpu().numpy() if torch.is_tensor(f) else np.asarray(f)
    if f.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {f.shape}")
    return f


def fid(f1, f2) -> float:
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}), trace-sqrt through the eigenvalues of S1 S2."""
    f1, f2 = _np(f1).astype(np.float64), _np(f2).astype(np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    tr_covmean = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).astype(np.complex128)).real)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def kid_subset_size(n1: int, n2: int, cap: int = 1000) -> int:
    """Subset size that fits both sample counts (torch-fidelity's default 1000 fails when n < 1000)."""
    return max(2, min(cap, n1, n2))


def kid(f1, f2, subset_size: int | None = None, subsets: int = KID_SUBSETS, seed: int = KID_SEED):
    """(mean, std) over ``subsets`` random subsets of the unbiased MMD^2 with the cubic polynomial kernel."""
    f1, f2 = _np(f1).astype(np.float64), _np(f2).astype(np.float64)
    m = subset_size or kid_subset_size(len(f1), len(f2))
    if m > min(len(f1), len(f2)) or m < 2:
        raise ValueError(f"KID subset size {m} must be in [2, min(n1, n2) = {min(len(f1), len(f2))}]")
    rng, d = np.random.RandomState(seed), f1.shape[1]
    mmds = np.zeros(subsets)
    for i in range(subsets):
        a = f1[rng.choice(len(f1), m, replace=False)]
        b = f2[rng.choice(len(f2), m, replace=False)]
        k_aa, k_bb, k_ab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
        off = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
        mmds[i] = off - 2 * k_ab.sum() / (m * m)
    return float(mmds.mean()), float(mmds.std())


def knn_radius(f: torch.Tensor, k: int = NEIGHBOURHOOD) -> torch.Tensor:
    """Distance of every row of f to its k-th nearest other row (self excluded) -> [N]."""
    if f.shape[0] <= k:
        raise ValueError(f"need more than k = {k} points for k-NN radii, got {f.shape[0]}")
    return torch.cdist(f, f).kthvalue(k + 1, dim=1).values


def precision_recall(f_gen, f_real, k: int = NEIGHBOURHOOD) -> tuple[float, float]:
    """precision = share of generated points inside some real k-NN ball; recall = share of real points inside
    some generated k-NN ball (torch-fidelity: input1 = generated, input2 = real)."""
    f_gen, f_real = (torch.as_tensor(_np(f), dtype=torch.float32) for f in (f_gen, f_real))
    r_gen, r_real = knn_radius(f_gen, k), knn_radius(f_real, k)
    precision = (torch.cdist(f_gen, f_real) <= r_real.unsqueeze(0)).any(1).float().mean()
    recall = (torch.cdist(f_real, f_gen) <= r_gen.unsqueeze(0)).any(1).float().mean()
    return float(precision), float(recall)


def fidelity(f_gen, f_real, kid_size: int | None = None, kid_subsets: int = KID_SUBSETS) -> dict[str, float]:
    """FID, KID (mean, std), precision, recall of generated vs real features, torch-fidelity's key names."""
    km, ks = kid(f_gen, f_real, kid_size, kid_subsets)
    p, r = precision_recall(f_gen, f_real)
    return {"frechet_inception_distance": fid(f_gen, f_real), "kernel_inception_distance_mean": km,
            "kernel_inception_distance_std": ks, "precision": p, "recall": r}


# --- the same through torch-fidelity (optional) --------------------------------------------------------------
def torch_fidelity_metrics(x_gen: torch.Tensor, x_real: torch.Tensor, net: torch.nn.Module, name: str = "gb-net",
                           kid_size: int | None = None, kid_subsets: int = KID_SUBSETS) -> dict[str, float]:
    """FID/KID/PR by ``torch_fidelity.calculate_metrics`` with ``net.features`` as a registered custom feature
    extractor (nothing downloaded; CPU). Images are passed as float tensors (a custom extractor has no dtype
    constraint). Raises ImportError without torch-fidelity (extra ``fidelity``)."""
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class _Extractor(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):  # torch-fidelity passes all metric kwargs
            super().__init__(name, features_list)
            self.net = net

        @staticmethod
        def get_provided_features_list():
            return ("features",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"fid": "features", "kid": "features", "prc": "features"}.get(metric)

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, *x_real.shape[1:])

        def forward(self, x):
            return (self.net.features(x.float()),)

    class _Images(torch.utils.data.Dataset):  # bare tensors (TensorDataset returns tuples: rejected)
        def __init__(self, x):
            self.x = x.detach().cpu().float()

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    name = f"{name}-{id(net):x}"  # names are unique in torch-fidelity's registry; one per network object
    FEATURE_EXTRACTORS_REGISTRY.pop(name, None)
    torch_fidelity.register_feature_extractor(name, _Extractor)
    return torch_fidelity.calculate_metrics(
        input1=_Images(x_gen), input2=_Images(x_real), feature_extractor=name, fid=True, kid=True, prc=True,
        kid_subset_size=kid_size or kid_subset_size(len(x_gen), len(x_real)), kid_subsets=kid_subsets,
        cuda=False, verbose=False, save_cpu_ram=True, cache=False, batch_size=256)
