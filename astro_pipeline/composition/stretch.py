"""One stretch for all the bands of a composite: sky-subtracted, on one flux scale, one asinh.

Each slot's linear data ``x`` (sky-subtracted, in the common unit) goes through the same recorded
asinh: ``channel = asinh((x / M) / a) / asinh(1 / a)``, clipped to [0, 1] (astropy's
``AsinhStretch(a)`` after ``ManualInterval(0, M)``, as ``ingest.stretch.apply_stretch`` does).
``M``, the white point, is a high percentile of the brightest slot; ``a`` puts the linear-to-log
knee at ``softening`` times the sky noise. The sky (x = 0) is 0 in every channel: neutral and
black, its noise a dark speckle. A slot's channel depends on its own data only, so a given band's
channel *is* its own stretched data.

``method="lupton"`` is astropy's ``make_lupton_rgb`` on the same data (the same white point, its
``Q``): it scales every channel by the mean intensity of all three, which keeps hues in bright
cores but no longer keeps each channel to its band.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from astro_pipeline.ingest.frame import StretchParams

__all__ = ["METHODS", "ColourStretch", "apply_colour_stretch", "fit_colour_stretch", "lupton_rgb"]

METHODS = ("asinh", "lupton")
_SAMPLE = 2_000_000


@dataclass(frozen=True, kw_only=True)
class ColourStretch:
    """The recorded shared stretch of a composite (in the common unit, after sky subtraction)."""

    method: str  # "asinh" | "lupton"
    maximum: float  # white point M
    asinh_a: float  # the knee, as a fraction of M
    softening: float  # the knee in sky-noise units
    white_percentile: float
    noise: float  # sky noise in the common unit (median over the slots)
    unit: str  # "erg/s/cm2/Angstrom" (F_lambda), per sr, or "per-band" (flux unknown: each normalised on its own)
    q: float | None = None  # lupton only: make_lupton_rgb's Q (its stretch is M * Q / sinh(Q))

    @property
    def params(self) -> StretchParams:
        """As a :class:`StretchParams` (vmin 0, vmax M, asinh a), which ``apply_stretch`` applies."""
        return StretchParams(method="shared-asinh" if self.method == "asinh" else "lupton", vmin=0.0,
                             vmax=float(self.maximum), asinh_a=float(self.asinh_a))

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "maximum": self.maximum, "asinh_a": self.asinh_a, "softening": self.softening,
                "white_percentile": self.white_percentile, "noise": self.noise, "unit": self.unit, "q": self.q}


def fit_colour_stretch(slots: Sequence[np.ndarray], noises: Sequence[float], valid: np.ndarray, *, unit: str,
                       method: str = "asinh", softening: float = 3.0, white_percentile: float = 99.8,
                       q: float = 8.0) -> ColourStretch:
    """The shared stretch for these slots' linear data (sky-subtracted, common unit).

    ``M`` is the ``white_percentile`` of the per-pixel maximum over the slots (valid pixels);
    ``a = softening * noise / M`` (clipped to [1e-3, 1]) with ``noise`` the median of the slots' noise.
    """
    if method not in METHODS:
        raise ValueError(f"unknown stretch {method!r}; use {' or '.join(METHODS)}")
    if not 0.0 < white_percentile <= 100.0:
        raise ValueError(f"white_percentile must be in (0, 100], got {white_percentile}")
    if not softening > 0.0:
        raise ValueError(f"softening must be > 0, got {softening}")
    top = np.full(valid.shape, -np.inf, dtype=np.float32)
    for x in slots:
        np.fmax(top, x, out=top)
    values = top[valid & np.isfinite(top)]
    if values.size > _SAMPLE:
        values = values[:: values.size // _SAMPLE]
    maximum = float(np.percentile(values, white_percentile)) if values.size else 1.0
    if not (np.isfinite(maximum) and maximum > 0.0):
        positive = values[values > 0] if values.size else values
        maximum = float(positive.max()) if positive.size else 1.0
    noise = float(np.median([n for n in noises])) if len(noises) else 0.0
    a = float(np.clip(softening * noise / maximum, 1e-3, 1.0)) if np.isfinite(noise) else 0.1
    return ColourStretch(method=method, maximum=maximum, asinh_a=a, softening=float(softening),
                         white_percentile=float(white_percentile), noise=noise, unit=unit,
                         q=float(q) if method == "lupton" else None)


def apply_colour_stretch(x: np.ndarray, stretch: ColourStretch) -> np.ndarray:
    """One slot's channel: float32 in [0, 1]; NaN (invalid) becomes 0."""
    from astro_pipeline.ingest.stretch import apply_stretch

    return apply_stretch(x, StretchParams(method="shared-asinh", vmin=0.0, vmax=stretch.maximum,
                                          asinh_a=stretch.asinh_a))


def lupton_rgb(x_rgb: Sequence[np.ndarray], stretch: ColourStretch) -> np.ndarray:
    """``make_lupton_rgb`` of the R, G, B slots at this stretch's white point: (H, W, 3) float32 in [0, 1]."""
    from astropy.visualization import make_lupton_rgb

    q = float(stretch.q or 8.0)
    soft = stretch.maximum * q / np.sinh(q)  # the intensity that maps to 1 is M
    r, g, b = (np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0) for x in x_rgb)
    with np.errstate(invalid="ignore", divide="ignore"):
        rgb = make_lupton_rgb(r, g, b, minimum=0.0, stretch=soft, Q=q)
    return rgb.astype(np.float32) / np.float32(255.0)
