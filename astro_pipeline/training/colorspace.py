"""CIE Lab (D65) <-> sRGB in torch, for batches of training crops and evaluation metrics.

Exact CIE formulas (sRGB transfer curve, D65 white), channel-first ``(..., 3, H, W)`` tensors.
The numpy reference for products lives in ``astro_pipeline.color``; this one runs on batches
inside the training graph.
"""

from __future__ import annotations

import torch

__all__ = ["srgb_to_lab", "lab_to_srgb", "rgb_to_y"]

_M = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
    dtype=torch.float64,
)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_EPS = 216 / 24389
_KAPPA = 24389 / 27


def _mix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", m.to(x.dtype), x)


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) sRGB in [0, 1] -> Lab with L in [0, 100]."""
    rgb = rgb.clamp(0, 1)
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = _mix(_M, lin) / _WHITE.to(rgb.dtype)[:, None, None]
    f = torch.where(xyz > _EPS, xyz.clamp_min(1e-12) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def lab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) Lab -> sRGB in [0, 1] (out-of-gamut colours clipped)."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    fx = fy + a / 500
    fz = fy - b / 200
    f = torch.stack([fx, fy, fz], dim=-3)
    xyz = torch.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA) * _WHITE.to(lab.dtype)[:, None, None]
    lin = _mix(torch.linalg.inv(_M), xyz).clamp(0, 1)
    rgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055)
    return rgb.clamp(0, 1)


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma (the SR literature's 'Y' PSNR), in [16/255, 235/255]."""
    r, g, b = rgb.unbind(-3)
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0
