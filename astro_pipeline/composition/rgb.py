"""Colour from real bands, in memory: bands on one grid -> one stretch -> channels -> the missing one filled.

:func:`compose_bands` is the one path ``astro_pipeline.compose`` and ``astro-pipeline compose``
share (and the field products build on):

1. the bands share one pixel grid (``bands.check_same_grid``);
2. science bands go to one flux scale where their headers allow (``flux.flux_scale``; else every
   science band is normalised on its own, and the records say why), each minus its own sky;
3. two bands in one slot are blended with equal weights (``1/n`` each, in the common unit);
4. one shared asinh (``stretch.fit_colour_stretch``) makes every science slot's channel from its
   own data; an 8-bit display band's channel is its own values;
5. pixels any band leaves invalid are black in all three channels (neutral, like the sky);
6. three slots: nothing inferred. Two: the band-completion model when one is installed, else the
   rule (``fill.rule_fill``). One: the colorizer keeps that band's lightness, as ``colorize`` does.

Every channel's record (:class:`~astro_pipeline.products.types.ChannelRecord`) says which filter
(and frame) gave it, or how it was inferred; any inferred channel makes the product a visualisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from astro_pipeline.composition.bands import Band, check_same_grid
from astro_pipeline.composition.fill import BandCompletion, rule_fill
from astro_pipeline.composition.flux import FluxScale, flux_scale, sky_and_noise
from astro_pipeline.composition.stretch import ColourStretch, apply_colour_stretch, fit_colour_stretch, lupton_rgb
from astro_pipeline.config import QualityThresholds
from astro_pipeline.filters import Slot
from astro_pipeline.ingest.frame import Flag, Frame, QualityReport, StretchParams
from astro_pipeline.products.types import ChannelRecord, ChannelSource, ModelRecord, channels_text

if TYPE_CHECKING:  # pragma: no cover
    from astro_pipeline.engines import Engines

__all__ = ["FILLS", "Composed", "compose_bands"]

FILLS = ("auto", "rule", "model")
REAL_LABEL = "colour composite of real bands, display stretch; not photometry"
INFERRED_LABEL = "visualisation: {slots} inferred, not observed; not photometry"
_ORDER = (Slot.R, Slot.G, Slot.B)


@dataclass(kw_only=True)
class Composed:
    """A composite in memory: the image, each slot's linear data, the records of every channel."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 1], R, G, B
    linear: np.ndarray | None  # (H, W, 3) float32, sky-subtracted, common unit; NaN where not a science slot
    valid: np.ndarray  # (H, W) bool: every given band valid
    wcs: Any | None
    channels: tuple[ChannelRecord, ...]
    stretch: StretchParams | None  # the shared stretch (vmin 0, vmax M, a); None when no band was science data
    colour_stretch: ColourStretch | None
    models: tuple[ModelRecord, ...]
    quality: QualityReport  # every band's metrics and flags, keyed by the band ("F435W.snr", "F435W:noisy")
    band_quality: dict[str, QualityReport]
    bands: tuple[Band, ...]
    reference: Band  # the band whose grid and WCS the product carries
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def inferred(self) -> list[str]:
        return [c.slot for c in self.channels if c.inferred is not None]

    @property
    def visualisation(self) -> bool:
        return bool(self.inferred)

    @property
    def label(self) -> str:
        inferred = [s for s in self.inferred if s != "L"]
        return INFERRED_LABEL.format(slots=", ".join(inferred)) if inferred else REAL_LABEL

    @property
    def channels_text(self) -> str:
        return channels_text(self.channels)


def _grey_display(band: Band) -> np.ndarray:
    """A display band's values as one (H, W) plane (an RGB display image must be grey)."""
    data = np.asarray(band.frame.data, dtype=np.float32)
    if data.ndim == 2:
        return data
    spread = float(np.max(np.ptp(data, axis=-1), initial=0.0))
    if spread > 1.0 / 255.0:
        raise ValueError(f"{band.frame.key} is a colour image; a band must be grey (one filter)")
    return np.ascontiguousarray(data[..., 0])


@dataclass
class _Science:
    band: Band
    scale: FluxScale
    factor: float
    sky: float
    noise: float  # native units
    x: np.ndarray  # (data - sky) * factor, NaN where invalid


def _science(bands: Sequence[Band]) -> tuple[list[_Science], str]:
    """Each science band on the common scale (or each normalised on its own), minus its sky."""
    scales = [flux_scale(b.frame, pivot_nm=b.pivot_nm) for b in bands]
    units = {s.unit for s in scales if s.known}
    common = all(s.known for s in scales) and len(units) == 1
    unit = units.pop() if common else "per-band"
    why_not = next((f"{b.label}: {s.how}" for b, s in zip(bands, scales, strict=True) if not s.known), None)
    if why_not is None and not common:
        why_not = f"units differ ({', '.join(sorted(str(u) for u in {s.unit for s in scales}))})"
    out = []
    for band, scale in zip(bands, scales, strict=True):
        frame = band.frame
        valid = np.asarray(frame.mask) & np.isfinite(frame.data)
        sky, noise = sky_and_noise(frame.data, valid)
        diff = np.where(valid, np.asarray(frame.data, dtype=np.float64) - sky, np.nan)
        if common:
            factor = float(scale.factor)  # type: ignore[arg-type]
        else:
            top = float(np.nanpercentile(diff, 99.5)) if valid.any() else 0.0
            if not top > 0.0:
                top = float(np.nanmax(diff)) if valid.any() else 0.0
            factor = 1.0 / top if top > 0.0 else 1.0
            scale = FluxScale(factor, None, f"per-band (99.5th percentile): {why_not}")
        out.append(_Science(band=band, scale=scale, factor=factor, sky=sky, noise=noise,
                            x=(diff * factor).astype(np.float32)))
    return out, unit


def _source(band: Band, *, weight: float, flux: str, factor: float | None = None, sky: float | None = None,
            noise: float | None = None) -> ChannelSource:
    f = band.frame
    return ChannelSource(filter=band.filter, pivot_nm=band.pivot_nm, weight=weight, source_path=str(f.source_path),
                         source_sha256=f.source_sha256, hdu=f.hdu, plane=f.plane, flux=flux, factor=factor, sky=sky,
                         noise=noise)


def _quality(bands: Sequence[Band], thresholds: QualityThresholds) -> tuple[QualityReport, dict[str, QualityReport]]:
    from astro_pipeline.ingest.quality import assess

    per: dict[str, QualityReport] = {}
    metrics: dict[str, float | None] = {}
    flags: list[Flag] = []
    for b in bands:
        report = assess(b.frame, thresholds)
        key = b.label if b.label not in per else f"{b.label}#{len(per)}"
        per[key] = report
        metrics.update({f"{key}.{k}": v for k, v in report.metrics.items()})
        flags += [Flag(name=f"{key}:{f.name}", value=f.value, threshold=f.threshold, comparison=f.comparison,
                       message=f"{key}: {f.message}" if f.message else key) for f in report.flags]
    return QualityReport(metrics=metrics, flags=flags), per


def _members(bands: Sequence[Band]) -> list[dict[str, Any]]:
    return [{"slot": str(b.slot), "filter": b.filter, "path": str(b.frame.source_path),
             "sha256": b.frame.source_sha256, "hdu": b.frame.hdu, "plane": b.frame.plane, "assigned": b.assigned}
            for b in bands]


def compose_bands(bands: Sequence[Band], *, quality: QualityThresholds, method: str = "asinh", fill: str = "auto",
                  band_model: BandCompletion | None = None, engines: Engines | None = None,
                  softening: float = 3.0, white_percentile: float = 99.8) -> Composed:
    """Compose ``bands`` (see the module docstring). ``engines`` (a colorizer) is needed for one slot
    only; ``band_model`` is used for two slots unless ``fill="rule"`` (``fill="model"`` requires it)."""
    if not bands:
        raise ValueError("compose needs at least one band")
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; use {', '.join(FILLS)}")
    bands = list(bands)
    check_same_grid(bands)
    by_slot: dict[Slot, list[Band]] = {s: [b for b in bands if b.slot is s] for s in _ORDER}
    filled = [s for s in _ORDER if by_slot[s]]
    report, per_band = _quality(bands, quality)
    reference = next((b for b in bands if b.frame.wcs is not None and not b.frame.is_display),
                     next((b for b in bands if not b.frame.is_display), bands[0]))
    params: dict[str, Any] = {"operation": "compose", "method": method, "fill": fill, "softening": softening,
                              "white_percentile": white_percentile, "members": _members(bands)}
    valid = np.ones(reference.frame.shape, dtype=bool)
    for b in bands:
        valid &= np.asarray(b.frame.mask, dtype=bool)
        if not b.frame.is_display:
            valid &= np.isfinite(b.frame.data)

    if len(filled) == 1:
        return _one_slot(by_slot[filled[0]], reference=reference, valid=valid, engines=engines, quality=quality,
                         report=report, per_band=per_band, params=params)

    science = [b for b in bands if not b.frame.is_display]
    sci, unit = _science(science) if science else ([], "display")
    sci_of = {id(s.band): s for s in sci}
    h, w = reference.frame.shape
    linear = np.full((h, w, 3), np.nan, dtype=np.float32) if sci else None
    noises: dict[Slot, float] = {}
    display_slot: dict[Slot, np.ndarray] = {}
    records: dict[Slot, ChannelRecord] = {}
    for slot in filled:
        members = by_slot[slot]
        weight = 1.0 / len(members)
        kinds = {b.frame.is_display for b in members}
        if len(kinds) > 1:
            raise ValueError(f"slot {slot} mixes an 8-bit display image and science data "
                             f"({', '.join(b.frame.key for b in members)}); give them different slots")
        if members[0].frame.is_display:
            planes = [_grey_display(b) for b in members]
            display_slot[slot] = planes[0] if len(planes) == 1 else np.mean(planes, axis=0, dtype=np.float32)
            records[slot] = ChannelRecord(slot=str(slot), sources=tuple(
                _source(b, weight=weight, flux="display") for b in members))
            continue
        parts = [sci_of[id(b)] for b in members]
        x = parts[0].x if len(parts) == 1 else np.sum([p.x * np.float32(weight) for p in parts], axis=0,
                                                      dtype=np.float32)
        assert linear is not None
        linear[..., slot.index] = x
        noises[slot] = float(np.sqrt(sum((weight * p.noise * p.factor) ** 2 for p in parts)))
        records[slot] = ChannelRecord(slot=str(slot), sources=tuple(
            _source(p.band, weight=weight, flux=p.scale.how, factor=p.factor, sky=p.sky, noise=p.noise)
            for p in parts))

    colour_stretch = None
    image = np.zeros((h, w, 3), dtype=np.float32)
    if noises:
        assert linear is not None
        colour_stretch = fit_colour_stretch([linear[..., s.index] for s in noises], list(noises.values()), valid,
                                            unit=unit, method=method, softening=softening,
                                            white_percentile=white_percentile)
        params["colour_stretch"] = colour_stretch.as_dict()
    for slot, plane in display_slot.items():
        image[..., slot.index] = plane
    models: list[ModelRecord] = []
    present = tuple(bool(by_slot[s]) for s in _ORDER)
    if method == "lupton":
        if display_slot:
            raise ValueError("the lupton stretch takes science data only; an 8-bit display band is given")
        assert linear is not None and colour_stretch is not None
        if fill == "model":
            raise ValueError("fill='model' works on stretched channels; use the asinh stretch with it")
        x = linear.copy()
        if len(filled) == 2:
            x, how, src = rule_fill(np.nan_to_num(x, nan=0.0), present)
            missing = _ORDER[present.index(False)]
            records[missing] = ChannelRecord(slot=str(missing), inferred=how, from_slots=src)
        image = lupton_rgb([x[..., i] for i in range(3)], colour_stretch)
    else:
        for slot in noises:
            assert linear is not None and colour_stretch is not None
            image[..., slot.index] = apply_colour_stretch(linear[..., slot.index], colour_stretch)
        if len(filled) == 2:
            missing = _ORDER[present.index(False)]
            if band_model is not None and fill in ("auto", "model"):
                done = np.asarray(band_model.complete(image, present), dtype=np.float32)
                if done.shape != image.shape:
                    raise ValueError(f"{band_model.model.name} returned shape {done.shape}, expected {image.shape}")
                image[..., missing.index] = np.clip(done[..., missing.index], 0.0, 1.0)
                records[missing] = ChannelRecord(slot=str(missing), inferred="model",
                                                 from_slots=tuple(str(s) for s in filled), model=band_model.model)
                models.append(band_model.model)
            elif fill == "model":
                raise ValueError("fill='model' but no band-completion model is installed")
            else:
                image, how, src = rule_fill(image, present)
                records[missing] = ChannelRecord(slot=str(missing), inferred=how, from_slots=src)
    image[~valid] = 0.0
    if linear is not None:
        linear[~valid] = np.nan
    stretch = colour_stretch.params if colour_stretch is not None else StretchParams(method="none", vmin=0.0, vmax=1.0)
    channels = tuple(records[s] for s in _ORDER)
    metrics = {"output_height": float(h), "output_width": float(w), "valid_fraction": float(valid.mean())}
    return Composed(image=image, linear=linear, valid=valid, wcs=reference.frame.wcs, channels=channels,
                    stretch=stretch, colour_stretch=colour_stretch, models=tuple(models), quality=report,
                    band_quality=per_band, bands=tuple(bands), reference=reference, params=params, metrics=metrics)


def _one_slot(members: list[Band], *, reference: Band, valid: np.ndarray, engines: Engines | None,
              quality: QualityThresholds, report: QualityReport, per_band: dict[str, QualityReport],
              params: dict[str, Any]) -> Composed:
    """One slot given: the colorizer on that band (its lightness kept), as ``colorize`` does."""
    from astro_pipeline.products.process import render_frame
    from astro_pipeline.products.types import Operation

    if engines is None or engines.colorizer is None:
        raise ValueError("one band only: compose needs the colorizer (engines) to infer the other two")
    weight = 1.0 / len(members)
    frame = members[0].frame
    sources = tuple(_source(b, weight=weight, flux="colorizer input") for b in members)
    if len(members) > 1:  # blend the slot's bands into one frame first (on one scale where known)
        if any(b.frame.is_display for b in members):
            data = np.mean([_grey_display(b) for b in members], axis=0, dtype=np.float32)
            frame = Frame(data=data, mask=valid, source_path=frame.source_path, source_sha256=frame.source_sha256,
                          format=frame.format, wcs=frame.wcs, header=frame.header, provenance=dict(frame.provenance),
                          is_display=True)
        else:
            sci, _unit = _science(members)
            data = np.sum([p.x * np.float32(weight) for p in sci], axis=0, dtype=np.float32)
            frame = Frame(data=data, mask=valid & np.isfinite(data), source_path=frame.source_path,
                          source_sha256=frame.source_sha256, format=frame.format, wcs=frame.wcs, header=frame.header,
                          provenance=dict(frame.provenance), is_display=False)
            sources = tuple(_source(p.band, weight=weight, flux=p.scale.how, factor=p.factor, sky=p.sky, noise=p.noise)
                            for p in sci)
    rendered = render_frame(frame, operation=Operation.COLORIZE, engines=engines, quality=quality)
    model = rendered.models[0] if rendered.models else None
    slot = members[0].slot
    channels = (ChannelRecord(slot="L", sources=sources),) + tuple(
        ChannelRecord(slot=str(s), inferred="colorizer", from_slots=("L",), model=model) for s in _ORDER)
    params.update(rendered.params, operation="compose", lightness_slot=str(slot))
    image = np.array(rendered.image, dtype=np.float32, copy=True)
    image[~valid] = 0.0
    metrics = dict(rendered.metrics, valid_fraction=float(valid.mean()))
    return Composed(image=image, linear=None, valid=valid, wcs=reference.frame.wcs, channels=channels,
                    stretch=rendered.stretch, colour_stretch=None, models=rendered.models, quality=report,
                    band_quality=per_band, bands=tuple(members), reference=reference, params=params, metrics=metrics)
