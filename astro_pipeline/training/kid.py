"""Kernel Inception Distance on VGG16 features: is a set of outputs distributed like real images?

KID (Binkowski et al. 2018) is the unbiased estimate of the squared maximum mean discrepancy
between two feature sets under the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3. Features are
VGG16 relu5_3 activations of ImageNet-normalised RGB, global-average-pooled (d = 512), from the
same VGG16 the project's LPIPS uses (LPIPS's input scaling is ImageNet normalisation, so one
forward pass serves both). Unlike PSNR against one truth, KID sees a tint: a set of near-identical
palettes sits far from the spread of real palettes even when each crop is "close on average".

Outputs made from the validation crops are compared with those same crops by :func:`paired_kid`:
Gretton's unbiased MMD^2 for two samples of equal size, which leaves out every i = j term, the
cross terms k(output_i, truth_i) included, so the shared content gives no bonus; the truth itself
scores 0. As a scale, :func:`kid_interval` of the truth of one half of the releases against the
other half says how far apart two sets of real crops of different content are.
"""

from __future__ import annotations

import numpy as np
import torch

from astro_pipeline.training.intervals import Interval
from astro_pipeline.training.losses import VGG16Features

__all__ = ["polynomial_kernel", "kid", "kid_interval", "paired_kid", "pooled_vgg_features", "KID_LAYER"]

KID_LAYER = "relu5_3"
_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


@torch.no_grad()
def pooled_vgg_features(vgg: VGG16Features, x: torch.Tensor, *, batch: int = 4) -> torch.Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> (N, 512) global-average-pooled relu5_3 features (float64)."""
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].float()
        f = vgg((xb - _MEAN.to(xb)) / _STD.to(xb), (KID_LAYER,))[0]
        out.append(f.mean(dim=(2, 3)).double())
    return torch.cat(out)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The standard KID kernel (x.y / d + 1)^3 between rows of ``x`` (m, d) and ``y`` (n, d)."""
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def _mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, ix: np.ndarray, iy: np.ndarray) -> float:
    """Unbiased MMD^2 of the (possibly resampled) index sets ``ix``, ``iy``. Pairs that are the same
    original crop are left out of the within-set sums, as the diagonal is in the plain estimator."""
    sx, sy = kxx[np.ix_(ix, ix)], kyy[np.ix_(iy, iy)]
    ox, oy = ix[:, None] != ix[None, :], iy[:, None] != iy[None, :]
    return float(sx[ox].mean() + sy[oy].mean() - 2.0 * kxy[np.ix_(ix, iy)].mean())


def kid(fx: torch.Tensor | np.ndarray, fy: torch.Tensor | np.ndarray) -> float:
    """Unbiased KID (MMD^2, cubic polynomial kernel) between feature sets (m, d) and (n, d); m, n >= 2."""
    x, y = np.asarray(fx, dtype=np.float64), np.asarray(fy, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
    return _mmd2(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y), np.arange(len(x)), np.arange(len(y)))


def kid_interval(fx: torch.Tensor | np.ndarray, fy: torch.Tensor | np.ndarray, *, n_boot: int = 500, seed: int = 0,
                 level: float = 0.95) -> Interval:
    """KID with a bootstrap percentile interval (both sets resampled over their samples)."""
    x, y = np.asarray(fx, dtype=np.float64), np.asarray(fy, dtype=np.float64)
    value = kid(x, y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        ix, iy = rng.integers(0, len(x), len(x)), rng.integers(0, len(y), len(y))
        if len(np.unique(ix)) < 2 or len(np.unique(iy)) < 2:
            continue
        samples.append(_mmd2(kxx, kyy, kxy, ix, iy))
    if not samples:
        return Interval(value, float("nan"), float("nan"))
    a = (1 - level) / 2
    lo, hi = np.quantile(samples, [a, 1 - a])
    return Interval(value, float(lo), float(hi))


def paired_kid(f_out: torch.Tensor | np.ndarray, f_truth: torch.Tensor | np.ndarray, *, n_boot: int = 500, seed: int = 0,
               level: float = 0.95) -> Interval:
    """KID between outputs and the truth crops they were made from (row i of each is one crop):
    the mean over crop pairs i != j of k(o_i, o_j) + k(t_i, t_j) - k(o_i, t_j) - k(o_j, t_i)
    (Gretton et al. 2012, MMD^2_u with m = n). Bootstrap over crops, pairs of one crop left out."""
    o, t = np.asarray(f_out, dtype=np.float64), np.asarray(f_truth, dtype=np.float64)
    if o.shape != t.shape or len(o) < 2:
        raise ValueError(f"paired KID needs two sets of the same crops (>= 2), got {o.shape} and {t.shape}")
    kot = polynomial_kernel(o, t)
    h = polynomial_kernel(o, o) + polynomial_kernel(t, t) - kot - kot.T

    def mmd(ix: np.ndarray) -> float:
        keep = ix[:, None] != ix[None, :]
        return float(h[np.ix_(ix, ix)][keep].mean())

    value = mmd(np.arange(len(o)))
    rng = np.random.default_rng(seed)
    samples = [mmd(ix) for ix in (rng.integers(0, len(o), len(o)) for _ in range(n_boot)) if len(np.unique(ix)) >= 2]
    if not samples:
        return Interval(value, float("nan"), float("nan"))
    q = (1 - level) / 2
    lo, hi = np.quantile(samples, [q, 1 - q])
    return Interval(value, float(lo), float(hi))
