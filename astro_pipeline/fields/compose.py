"""A field's aligned bands composed into one colour image through the project's one compose path.

Once ``fields.align`` has put every band on the field's grid, the bands share one pixel grid and
the field is what ``compose`` takes: each aligned band becomes a ``Frame`` (its data, NaN where
invalid, its mask, the grid's WCS, a header with the frame's photometric keywords) and goes
through ``composition.assign_bands`` (the wavelength rule of ``astro_pipeline.filters``: B below
500 nm, G to 650 nm, R beyond; WFC3/IR names in 10 nm) and ``composition.compose_bands`` (one flux
scale, per-band sky, one shared asinh stretch, the missing channel by the installed band-completion
model or the rule, a record of every channel). Nothing about colour is decided here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from astro_pipeline.fields.align import AlignedBand, AlignedField
from astro_pipeline.ingest.frame import Frame

if TYPE_CHECKING:  # pragma: no cover
    from astro_pipeline.composition import BandCompletion, Composed
    from astro_pipeline.config import QualityThresholds

__all__ = ["COMPOSE_VERSION", "aligned_frame", "band_slots", "channels_of", "compose_field"]

#: Part of a field product's key: changes when the field's compose path changes, so products recompose.
COMPOSE_VERSION = "composition.compose_bands/1"


def aligned_frame(band: AlignedBand, aligned: AlignedField) -> Frame:
    """One aligned band as the ``Frame`` compose takes (provenance and identity of its member frame)."""
    p = band.member.product
    return Frame(data=band.data, mask=band.mask, source_path=Path(p.source_path), source_sha256=p.source_sha256,
                 format="fits", hdu=p.hdu, plane=p.plane, wcs=aligned.wcs, header=band.header,
                 provenance=dict(p.provenance or {}, filter=band.member.filter))


def compose_field(aligned: AlignedField, *, quality: QualityThresholds,
                  band_model: BandCompletion | None = None) -> Composed:
    """The field's colour image from its aligned bands (at least two, in at least two chromatic slots)."""
    from astro_pipeline.composition import assign_bands, compose_bands

    if len(aligned.bands) < 2:
        raise ValueError(f"field {aligned.plan.name}: {len(aligned.bands)} band(s) aligned; "
                         "a field product needs two")
    bands = assign_bands([(None, aligned_frame(b, aligned)) for b in aligned.bands.values()])
    slots = sorted({str(b.slot) for b in bands})
    if len(slots) < 2:
        raise ValueError(f"field {aligned.plan.name}: its bands ({', '.join(aligned.bands)}) all fall in slot "
                         f"{slots[0]}; a colour product needs bands in two slots")
    return compose_bands(bands, quality=quality, band_model=band_model)


def channels_of(composed: Composed) -> dict[str, str]:
    """``{"R": "F160W", "G": "F606W", "B": "inferred(mean)"}``: each channel's record, as the catalog keeps it."""
    return {c.slot: c.label.split(":", 1)[1] for c in composed.channels if c.slot in ("R", "G", "B")}


def band_slots(composed: Composed) -> dict[str, str]:
    """``{filter: slot}`` of the bands composed."""
    return {str(b.filter): str(b.slot) for b in composed.bands}
