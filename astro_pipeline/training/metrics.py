"""Image-quality metrics for evaluation: PSNR (RGB, Y), SSIM, CIEDE76, chroma ratio, LR consistency.

All take float tensors ``(N, 3, H, W)`` of sRGB in [0, 1] and return one value per image (the
report averages per-image values), except :func:`chroma_ratio`, a ratio of pooled means.
"""

from __future__ import annotations

import numpy as np
import torch

from astro_pipeline.training.colorspace import rgb_to_y, srgb_to_lab

__all__ = ["psnr", "psnr_y", "ssim", "ciede76", "chroma_ratio", "lr_consistency_rmse", "quantize8"]


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
    """Mean Lab chroma of ``x`` over mean chroma of the truth ``y`` (1.0 = as colourful as the truth)."""
    cx = srgb_to_lab(x.double())[:, 1:].pow(2).sum(1).sqrt().mean()
    cy = srgb_to_lab(y.double())[:, 1:].pow(2).sum(1).sqrt().mean()
    return float(cx / cy.clamp_min(1e-9))


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
