"""sRGB <-> CIE L*a*b* (D65) with the exact CIE/IEC formulas, numpy only.

Used to measure the lightness of display images (8-bit inputs keep their L* through
colorization) and by the colorizer's L / ab split. Arrays keep their float precision
(float32 in, float32 out; anything else computes in float64).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "D65_WHITE",
    "grey_from_lightness",
    "lab_to_srgb",
    "lightness",
    "lightness_from_grey",
    "linear_to_srgb",
    "srgb_to_lab",
    "srgb_to_linear",
]

#: Reference white D65 (2 degree observer), Y normalised to 1.
D65_WHITE = np.array([0.95047, 1.0, 1.08883])

#: Linear sRGB -> CIE XYZ (IEC 61966-2-1, D65).
_XYZ_FROM_RGB = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)

_EPS = (6.0 / 29.0) ** 3  # 216/24389
_DELTA = 6.0 / 29.0


def _float(x: np.ndarray) -> tuple[np.ndarray, np.dtype]:
    arr = np.asarray(x)
    out_dtype = np.dtype(np.float32) if arr.dtype == np.float32 else np.dtype(np.float64)
    return arr.astype(np.float64, copy=False), out_dtype


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light (IEC 61966-2-1 transfer function)."""
    c, dt = _float(c)
    out = np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4)
    return out.astype(dt, copy=False)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear light to sRGB encoding (inverse of :func:`srgb_to_linear`)."""
    c, dt = _float(c)
    out = np.where(
        c <= 0.0031308, 12.92 * c, 1.055 * np.maximum(c, 0.0031308) ** (1.0 / 2.4) - 0.055
    )
    return out.astype(dt, copy=False)


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _EPS, np.cbrt(t), t / (3.0 * _DELTA**2) + 4.0 / 29.0)


def _finv(t: np.ndarray) -> np.ndarray:
    return np.where(t > _DELTA, t**3, 3.0 * _DELTA**2 * (t - 4.0 / 29.0))


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in [0, 1] to CIE L*a*b* (..., 3): L* in [0, 100], a*/b* roughly [-110, 110]."""
    rgb, dt = _float(rgb)
    if rgb.shape[-1] != 3:
        raise ValueError(f"srgb_to_lab expects (..., 3) input, got shape {rgb.shape}")
    xyz = srgb_to_linear(rgb) @ _XYZ_FROM_RGB.T / D65_WHITE
    fx, fy, fz = (_f(xyz[..., i]) for i in range(3))
    lab = np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)
    return lab.astype(dt, copy=False)


def lab_to_srgb(lab: np.ndarray, *, clip: bool = True) -> np.ndarray:
    """CIE L*a*b* (..., 3) to sRGB (..., 3); out-of-gamut values are clipped to [0, 1] unless ``clip=False``."""
    lab, dt = _float(lab)
    if lab.shape[-1] != 3:
        raise ValueError(f"lab_to_srgb expects (..., 3) input, got shape {lab.shape}")
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    xyz = np.stack([_finv(fx), _finv(fy), _finv(fz)], axis=-1) * D65_WHITE
    rgb = linear_to_srgb(np.maximum(xyz @ _RGB_FROM_XYZ.T, 0.0))
    if clip:
        rgb = np.clip(rgb, 0.0, 1.0)
    return rgb.astype(dt, copy=False)


def lightness(rgb: np.ndarray) -> np.ndarray:
    """CIE L* (0..100) of sRGB colours (..., 3) in [0, 1]; depends on luminance Y only."""
    rgb, dt = _float(rgb)
    if rgb.shape[-1] != 3:
        raise ValueError(f"lightness expects (..., 3) input, got shape {rgb.shape}")
    y = srgb_to_linear(rgb) @ _XYZ_FROM_RGB[1]
    return (116.0 * _f(y) - 16.0).astype(dt, copy=False)


def lightness_from_grey(grey: np.ndarray) -> np.ndarray:
    """CIE L* of sRGB-encoded grey values in [0, 1] (R = G = B = grey)."""
    g, dt = _float(grey)
    y = srgb_to_linear(g) * _XYZ_FROM_RGB[1].sum()
    return (116.0 * _f(y) - 16.0).astype(dt, copy=False)


def grey_from_lightness(lightness_star: np.ndarray) -> np.ndarray:
    """The sRGB-encoded grey in [0, 1] whose CIE L* is ``lightness_star`` (inverse of :func:`lightness_from_grey`)."""
    L, dt = _float(lightness_star)
    y = _finv((np.clip(L, 0.0, 100.0) + 16.0) / 116.0) / _XYZ_FROM_RGB[1].sum()
    return np.clip(linear_to_srgb(np.clip(y, 0.0, 1.0)), 0.0, 1.0).astype(dt, copy=False)
