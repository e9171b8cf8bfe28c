"""Image-quality metrics for evaluation: PSNR (RGB, Y), SSIM, CIEDE76, chroma, hue spread, LR consistency.

All take float tensors ``(N, 3, H, W)`` of sRGB in [0, 1] and return one value per image (the
report averages per-image values), except :func:`chroma_ratio`, a ratio of pooled sums. The
``*_lab`` variants take CIE Lab ``(N, 3, H, W)`` so a scorer converts each output once.
"""

from __future__ import annotations

import numpy as np
import torch

from astro_pipeline.training.colorspace import rgb_to_y, srgb_to_lab

__all__ = [
    "psnr",
    "psnr_y",
    "ssim",
    "ciede76",
    "chroma_ratio",
    "chroma_sum_lab",
    "hue_spread",
    "hue_spread_lab",
    "chromatic_fraction_lab",
    "HUE_MIN_CHROMA",
    "lr_consistency_rmse",
    "quantize8",
]

#: Pixels with CIE Lab chroma above this carry a hue worth measuring (below it hue is noise).
HUE_MIN_CHROMA = 5.0


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels, as the PNG products are."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mse = ((x.double() - y.double()) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return 10 * torch.log10(1.0 / mse)


def psnr_y(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR of BT.601 luma (the usual super-resolution 'Y' PSNR, no border shave)."""
    return psnr(rgb_to_y(x.double())[:, None], rgb_to_y(y.double())[:, None])


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over RGB channels (scikit-image, Gaussian window, data range 1)."""
    from skimage.metrics import structural_similarity

    vals = []
    for a, b in zip(x, y, strict=True):
        vals.append(
            structural_similarity(
                a.permute(1, 2, 0).double().numpy(), b.permute(1, 2, 0).double().numpy(),
                channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            )
        )
    return torch.tensor(np.array(vals))


def ciede76(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean CIE76 colour difference (Euclidean distance in CIE Lab) per image."""
    return (srgb_to_lab(x.double()) - srgb_to_lab(y.double())).pow(2).sum(1).sqrt().mean(dim=(1, 2))


def chroma_ratio(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pooled chroma ratio: the sum of Lab chroma of ``x`` over that of the truth ``y``, over all
    pixels of all images (1.0 = as colourful as the truth). Pooled, because a per-image ratio is
    inflated by near-grey truth crops."""
    cx = chroma_sum_lab(srgb_to_lab(x.double())).sum()
    cy = chroma_sum_lab(srgb_to_lab(y.double())).sum()
    return float(cx / cy.clamp_min(1e-9))


def _chroma(lab: torch.Tensor) -> torch.Tensor:
    return torch.hypot(lab[:, 1], lab[:, 2])


def chroma_sum_lab(lab: torch.Tensor) -> torch.Tensor:
    """Sum of Lab chroma sqrt(a^2 + b^2) over each image's pixels -> (N,) (pool these for a ratio)."""
    return _chroma(lab.double()).sum(dim=(1, 2))


def chromatic_fraction_lab(lab: torch.Tensor, *, min_chroma: float = HUE_MIN_CHROMA) -> torch.Tensor:
    """Fraction of each image's pixels whose chroma exceeds ``min_chroma`` -> (N,)."""
    return (_chroma(lab.double()) > min_chroma).double().mean(dim=(1, 2))


def hue_spread_lab(lab: torch.Tensor, *, min_chroma: float = HUE_MIN_CHROMA) -> torch.Tensor:
    """Circular standard deviation of hue (degrees) over each image's pixels with chroma above
    ``min_chroma`` -> (N,); 0 where no pixel qualifies (a grey image has no hue to spread).

    sqrt(-2 ln R) with R the mean resultant length of the unit hue vectors (Mardia; the formula of
    ``scipy.stats.circstd``). A constant tint gives 0; two equal populations of hues d apart give
    sqrt(-2 ln cos(d/2)).
    """
    lab = lab.double()
    c = _chroma(lab)
    keep = (c > min_chroma).double()
    cos = torch.where(c > 0, lab[:, 1] / c.clamp_min(1e-12), torch.zeros_like(c))
    sin = torch.where(c > 0, lab[:, 2] / c.clamp_min(1e-12), torch.zeros_like(c))
    n = keep.sum(dim=(1, 2))
    r = torch.hypot((cos * keep).sum(dim=(1, 2)), (sin * keep).sum(dim=(1, 2))) / n.clamp_min(1.0)
    std = torch.sqrt(-2.0 * torch.log(r.clamp(1e-12, 1.0)))
    return torch.where(n > 0, torch.rad2deg(std), torch.zeros_like(std))


def hue_spread(x: torch.Tensor, *, min_chroma: float = HUE_MIN_CHROMA) -> torch.Tensor:
    """:func:`hue_spread_lab` of sRGB images (N, 3, H, W) in [0, 1]."""
    return hue_spread_lab(srgb_to_lab(x.double()), min_chroma=min_chroma)


def lr_consistency_rmse(sr: torch.Tensor, lr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """RMSE between the output reduced 4x (Pillow antialiased bicubic, as LR was made) and the LR input."""
    from PIL import Image

    out = []
    for a, b in zip(sr, lr, strict=True):
        arr = (a.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        small = np.asarray(Image.fromarray(arr).resize((arr.shape[1] // scale, arr.shape[0] // scale), Image.Resampling.BICUBIC))
        d = small.astype(np.float64) / 255 - b.permute(1, 2, 0).double().numpy()
        out.append(np.sqrt((d**2).mean()))
    return torch.tensor(out)
