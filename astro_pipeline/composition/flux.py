"""One flux scale for the bands of a composite, and each band's sky level and noise.

The common unit is F_lambda, erg s^-1 cm^-2 A^-1 per pixel (``FLAM``): a source whose F_lambda
is flat across the bands (equal energy per wavelength, as sunlight nearly is) comes out neutral
grey, the way equal-energy white is white. HST frames are count rates (BUNIT ``ELECTRONS/S``,
``COUNTS/S``; counts with EXPTIME): ``PHOTFLAM`` (F_lambda per count/s) converts them directly,
else ``PHOTFNU`` (Jy s per count) divided by 3.33564e4 lambda^2 at ``PHOTPLAM`` (or the wavelength
rule's pivot). A calibrated BUNIT (erg/s/cm2/Angstrom, Jy, MJy/sr) converts through
``astropy.units`` at the band's pivot (per steradian stays per steradian).

Zero, negative or missing keywords are *unknown*, never guessed: the caller then normalises each
band on its own and records why (:class:`FluxScale` ``how``).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from astro_pipeline.ingest.frame import Frame

__all__ = ["C_JY_ANGSTROM", "FLAM", "FluxScale", "flux_scale", "sky_and_noise"]

#: f_nu [Jy] = C_JY_ANGSTROM * lambda[A]^2 * f_lambda [erg s^-1 cm^-2 A^-1]  (1e23 / c in A/s).
C_JY_ANGSTROM = 3.33564095e4
#: The common unit's name in records.
FLAM = "erg/s/cm2/Angstrom"

_RATE = re.compile(r"^(ELECTRONS?|COUNTS?|CTS|DN|E-?)\s*(/\s*(S|SEC|SECOND)|\s+S\*\*-1|S-1)$")
_TOTAL = re.compile(r"^(ELECTRONS?|COUNTS?|CTS|DN|E-?)$")
_SKY_SAMPLE = 1_000_000  # pixels the sky estimate looks at, at most


@dataclass(frozen=True)
class FluxScale:
    """How a band reaches the common unit: ``value * factor`` is in ``unit`` (None: unknown, see ``how``)."""

    factor: float | None
    unit: str | None  # FLAM (per pixel) | FLAM + "/sr"
    how: str  # "PHOTFNU" | "PHOTFLAM" | "BUNIT <unit>" | "unknown: <why>"

    @property
    def known(self) -> bool:
        return self.factor is not None


def _positive(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _card(frame: Frame, key: str) -> Any:
    prov = frame.provenance or {}
    if prov.get(key.lower()) is not None:
        return prov[key.lower()]
    header = frame.header
    if header is not None:
        try:
            return header.get(key)
        except Exception:  # noqa: BLE001 - a header-like object without .get
            return None
    return None


def flux_scale(frame: Frame, *, pivot_nm: float | None) -> FluxScale:
    """The factor from ``frame``'s native unit to F_lambda per pixel (or per sr), or why there is none."""
    bunit = _card(frame, "BUNIT")
    text = " ".join(str(bunit).strip().upper().split()) if bunit is not None else ""
    if not text:
        return FluxScale(None, None, "unknown: no BUNIT")
    rate = bool(_RATE.match(text))
    total = bool(_TOTAL.match(text))
    if rate or total:
        per_second = 1.0
        if total:
            exptime = _positive(_card(frame, "EXPTIME"))
            if exptime is None:
                return FluxScale(None, None, f"unknown: BUNIT {bunit} without a positive EXPTIME")
            per_second = 1.0 / exptime
        photflam = _positive(_card(frame, "PHOTFLAM"))
        if photflam is not None:
            return FluxScale(photflam * per_second, FLAM, "PHOTFLAM")
        photfnu = _positive(_card(frame, "PHOTFNU"))
        if photfnu is not None:
            plam = _positive(_card(frame, "PHOTPLAM")) or (pivot_nm * 10.0 if pivot_nm else None)
            if plam is None:
                return FluxScale(None, None, "unknown: PHOTFNU without PHOTPLAM or a filter")
            return FluxScale(photfnu / (C_JY_ANGSTROM * plam**2) * per_second, FLAM, "PHOTFNU")
        return FluxScale(None, None, f"unknown: BUNIT {bunit} with PHOTFLAM/PHOTFNU zero or missing")
    return _physical(str(bunit).strip(), pivot_nm)


def _physical(bunit: str, pivot_nm: float | None) -> FluxScale:
    import astropy.units as u

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            unit = u.Unit(bunit)
        except (ValueError, TypeError):
            return FluxScale(None, None, f"unknown: BUNIT {bunit!r} is not a unit astropy reads")
    eq = u.spectral_density(pivot_nm * u.nm) if pivot_nm else []
    flam = u.erg / u.s / u.cm**2 / u.AA
    for target, name in ((flam, FLAM), (flam / u.sr, FLAM + "/sr")):
        try:
            return FluxScale(float((1.0 * unit).to_value(target, equivalencies=eq)), name, f"BUNIT {bunit}")
        except u.UnitConversionError:
            continue
    return FluxScale(None, None, f"unknown: BUNIT {bunit!r} is not a flux density")


def sky_and_noise(data: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Sky level (sigma-clipped median) and noise (MAD standard deviation) of the valid pixels.

    Looks at an even subsample of at most a million pixels; (0, 0) when nothing is valid.
    """
    from astropy.stats import sigma_clipped_stats

    values = np.asarray(data)[np.asarray(valid)]
    if values.size == 0:
        return 0.0, 0.0
    step = max(1, values.size // _SKY_SAMPLE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-equal samples warn in the clipper
        _, median, std = sigma_clipped_stats(values[::step].astype(np.float64), sigma=3.0, maxiters=5,
                                             stdfunc="mad_std")
    median = float(median) if np.isfinite(median) else 0.0
    std = float(std) if np.isfinite(std) else 0.0
    return median, std
