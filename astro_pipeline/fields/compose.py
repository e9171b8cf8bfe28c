"""A field's aligned bands composed into one colour image, in chromatic order, with one stretch.

Stand-in for issue 20's ``compose`` (``astro_pipeline.composition``), which has not reached this
branch yet; it follows the same rules so that the field step can switch to it unchanged:

* **slots** by absolute pivot wavelength: B below 500 nm, G from 500 up to 650 nm, R from 650 nm.
  The pivot comes from the filter name: nm for ACS, WFC3/UVIS and WFPC2 (F606W about 606 nm); in
  units of 10 nm for WFC3/IR and NICMOS (F160W is 1600 nm), decided by the frame's instrument and
  detector. Two bands in one slot are blended with equal weights;
* **one flux scale** where every band's header gives ``PHOTFLAM`` (values times ``PHOTFLAM``:
  erg/s/cm^2/A), else each band normalised on its own (its 99.5th percentile), and the params say so;
* each band minus its own sky (sigma-clipped median), then **one shared asinh stretch** (white at
  the 99.8th percentile of all channels, knee at three times the noisiest band's sky noise), so a
  given band's channel is its own stretched data and the sky is neutral and near black;
* **the missing channel** with two slots: the mean of the other two (HLA's rule) where R and B
  are given, else the nearer band's values (G given: its neighbour slot copies it);
* pixels any band leaves invalid are black in all three channels.

The channels record says which filter made each channel or how it was inferred
(``{"R": "F160W", "G": "F606W", "B": "F435W"}``, ``"G": "inferred(mean)"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from astro_pipeline.fields.align import AlignedBand, AlignedField

__all__ = ["COMPOSE_VERSION", "FieldComposite", "compose_field", "pivot_nm", "slot_of"]

#: Changes when the rule changes (part of a field product's key, so a new rule recomposes).
COMPOSE_VERSION = "fields.compose/1"
_SLOTS = ("R", "G", "B")
_B_EDGE, _R_EDGE = 500.0, 650.0
_INFRARED = ("NICMOS", "NIC1", "NIC2", "NIC3", "/IR", "WFC3IR", "WFC3-IR", "WFC3 IR")


def pivot_nm(filt: str, *, instrument: str | None = None, detector: str | None = None) -> float:
    """The approximate pivot wavelength of an HST filter from its name (see the module docstring)."""
    m = re.search(r"F(\d{3,4})", filt.upper())
    if m is None:
        raise ValueError(f"{filt!r} is not an HST filter name")
    digits = m.group(1)
    text = " ".join(s.upper() for s in (instrument, detector) if s)
    infrared = any(k in text for k in _INFRARED) or ("WFC3" in text and re.search(r"\bIR\b", text) is not None)
    value = float(digits)
    return value * 10.0 if infrared and len(digits) == 3 and value < 200 else value


def slot_of(nm: float) -> str:
    """``B`` below 500 nm, ``G`` from 500 up to 650 nm, ``R`` from 650 nm."""
    return "B" if nm < _B_EDGE else ("G" if nm < _R_EDGE else "R")


@dataclass(kw_only=True)
class FieldComposite:
    """A field's colour image on its grid: the image, which band made which channel, the stretch."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 1], R, G, B
    linear: np.ndarray  # (H, W, 3) float32: each given slot's data, sky-subtracted, common unit; NaN elsewhere
    valid: np.ndarray  # (H, W) bool: every band valid
    channels: dict[str, str]  # slot -> filter(s) or "inferred(...)"
    band_slots: dict[str, str]  # filter -> slot
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def inferred(self) -> list[str]:
        return [s for s in _SLOTS if self.channels[s].startswith("inferred")]

    @property
    def channels_text(self) -> str:
        return ", ".join(f"{s}:{self.channels[s]}" for s in _SLOTS)

    @property
    def label(self) -> str:
        base = "colour composite of real bands, aligned with reproject, display stretch; not photometry"
        return f"visualisation: {', '.join(self.inferred)} inferred, not observed; " + base if self.inferred else base


def _band_info(band: AlignedBand) -> tuple[float, str]:
    h, prov = band.header, band.member.product.provenance or {}
    nm = pivot_nm(band.member.filter, instrument=str(h.get("INSTRUME") or prov.get("instrument") or ""),
                  detector=str(h.get("DETECTOR") or prov.get("detector") or ""))
    return nm, slot_of(nm)


def _sky_and_noise(data: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    from astropy.stats import sigma_clipped_stats

    values = data[valid]
    if values.size > 200_000:  # a regular subsample is enough for the sky
        values = values[:: values.size // 200_000]
    _mean, median, std = sigma_clipped_stats(values, sigma=3.0, maxiters=5)
    return float(median), float(std)


def compose_field(aligned: AlignedField, *, softening: float = 3.0, white_percentile: float = 99.8) -> FieldComposite:
    """Compose the aligned bands (at least two, on one grid) as the module docstring says."""
    bands = sorted(aligned.bands.values(), key=lambda b: _band_info(b)[0])
    if len(bands) < 2:
        raise ValueError(f"field {aligned.plan.name}: {len(bands)} band(s) aligned; a field product needs two")
    valid = np.ones(aligned.shape, dtype=bool)
    for b in bands:
        valid &= b.mask & np.isfinite(b.data)
    if not valid.any():
        raise ValueError(f"field {aligned.plan.name}: no grid pixel is valid in every band")
    photflam = [b.header.get("PHOTFLAM") for b in bands]
    common = all(isinstance(p, (int, float)) and p > 0 for p in photflam)
    scale_how = "PHOTFLAM" if common else "per-band (99.5th percentile): not every band has PHOTFLAM"
    by_slot: dict[str, list[np.ndarray]] = {s: [] for s in _SLOTS}
    names: dict[str, list[str]] = {s: [] for s in _SLOTS}
    noises: list[float] = []
    records: list[dict[str, Any]] = []
    band_slots: dict[str, str] = {}
    for b, flam in zip(bands, photflam, strict=True):
        nm, slot = _band_info(b)
        sky, noise = _sky_and_noise(b.data, valid)
        diff = np.where(valid, b.data.astype(np.float64) - sky, 0.0)
        if common:
            factor = float(flam)  # type: ignore[arg-type]
        else:
            top = float(np.percentile(diff[valid], 99.5))
            factor = 1.0 / top if top > 0 else 1.0
        by_slot[slot].append(diff * factor)
        names[slot].append(b.member.filter)
        noises.append(noise * factor)
        band_slots[b.member.filter] = slot
        records.append({"filter": b.member.filter, "pivot_nm": nm, "slot": slot, "sky": sky, "noise": noise,
                        "factor": factor, "frame": b.member.name})
    h, w = aligned.shape
    linear = np.zeros((h, w, 3), dtype=np.float64)
    given = [s for s in _SLOTS if by_slot[s]]
    for s in given:
        linear[..., _SLOTS.index(s)] = np.mean(by_slot[s], axis=0)  # equal weights within a slot
    stacked = linear[..., [_SLOTS.index(s) for s in given]][valid]
    white = float(np.percentile(stacked, white_percentile))
    if not white > 0:
        white = float(stacked.max()) or 1.0
    knee = max(softening * max(noises), 1e-6 * white)
    channels: dict[str, str] = {s: "+".join(names[s]) for s in given}
    image = np.zeros((h, w, 3), dtype=np.float32)
    scale = float(np.arcsinh(white / knee))
    for s in given:
        i = _SLOTS.index(s)
        image[..., i] = np.clip(np.arcsinh(np.maximum(linear[..., i], 0.0) / knee) / scale, 0.0, 1.0)
    if len(given) == 2:
        missing = next(s for s in _SLOTS if s not in given)
        if missing == "G":  # R and B given: HLA's mean
            image[..., 1] = 0.5 * (image[..., 0] + image[..., 2])
            channels["G"] = "inferred(mean)"
        else:  # G and one other given: the nearer band (G) fills the missing end
            image[..., _SLOTS.index(missing)] = image[..., 1]
            channels[missing] = "inferred(nearer G)"
    elif len(given) == 1:
        raise ValueError(f"field {aligned.plan.name}: all bands ({', '.join(band_slots)}) fall in slot {given[0]}; "
                         "a colour product needs two slots")
    image[~valid] = 0.0
    out = np.full((h, w, 3), np.nan, dtype=np.float32)
    for s in given:
        out[..., _SLOTS.index(s)] = np.where(valid, linear[..., _SLOTS.index(s)], np.nan)
    params = {"compose": COMPOSE_VERSION, "flux_scale": scale_how, "stretch": "asinh", "white": white, "knee": knee,
              "softening": softening, "white_percentile": white_percentile, "bands": records,
              "valid_fraction": float(valid.mean())}
    return FieldComposite(image=image, linear=out, valid=valid, channels=channels, band_slots=band_slots, params=params)
