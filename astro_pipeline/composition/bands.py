"""Bands for a colour composite: which frame goes to which chromatic slot, on one pixel grid.

A band is assigned to a slot either explicitly (``red`` / ``green`` / ``blue``: any input, a PNG
included) or by its filter through the one wavelength rule (``astro_pipeline.filters``: B below
500 nm, G to 650 nm, R beyond). The bands of one composite must share a pixel grid (same shape
and, where they have WCSs, the same sky within half a pixel at the centre and the corners);
aligning different grids is the field work's job (``reproject``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astro_pipeline.filters import Slot, filter_info, parse_filter
from astro_pipeline.ingest.frame import Frame

__all__ = ["Band", "GridError", "assign_bands", "check_same_grid", "filter_of_frame", "grid_mismatch"]


class GridError(ValueError):
    """Bands that do not share one pixel grid."""


@dataclass(frozen=True, kw_only=True)
class Band:
    """One frame placed in a chromatic slot, with the filter that put it there (if any)."""

    frame: Frame
    slot: Slot
    filter: str | None
    pivot_nm: float | None
    assigned: str  # "option": red/green/blue given; "filter": by the wavelength rule

    @property
    def label(self) -> str:
        """The filter, else the input's name (for records and messages)."""
        return self.filter or Path(str(self.frame.source_path)).name


def filter_of_frame(frame: Frame) -> str | None:
    """A frame's filter: its header's FILTER card(s), else its file name."""
    return parse_filter((frame.provenance or {}).get("filter")) or parse_filter(Path(str(frame.source_path)).name)


def assign_bands(items: Iterable[tuple[str | None, Frame]]) -> list[Band]:
    """Bands from ``(key, frame)`` pairs. ``key``: ``red``/``green``/``blue`` (the slot), a filter
    name (the band's filter, slotted by the rule), or None (the frame's own filter, slotted by the rule)."""
    bands: list[Band] = []
    for key, frame in items:
        instrument = (frame.provenance or {}).get("instrument")
        detector = (frame.provenance or {}).get("detector")
        slot: Slot | None = None
        name: str | None = None
        if key is not None:
            try:
                slot = Slot.parse(key)
            except ValueError:
                name = parse_filter(key)
                if name is None:
                    raise ValueError(f"{key!r} is neither a colour slot (red, green, blue) nor an HST filter name") from None
        explicit = slot is not None
        if name is None:
            name = filter_of_frame(frame)
        info = filter_info(name, instrument=instrument, detector=detector) if name else None
        if slot is None:
            if info is None:
                raise ValueError(f"{frame.key}: no filter in its header or name; assign it to a slot "
                                 "(red=/green=/blue=, or --red/--green/--blue)")
            slot = info.slot
        bands.append(Band(frame=frame, slot=slot, filter=info.name if info else None,
                          pivot_nm=info.pivot_nm if info else None, assigned="option" if explicit else "filter"))
    seen: dict[tuple[str, int | None, int | None], Band] = {}
    for b in bands:
        k = (b.frame.source_sha256, b.frame.hdu, b.frame.plane)
        if b.frame.source_sha256 and k in seen:
            raise ValueError(f"{b.frame.key} is given twice ({seen[k].slot} and {b.slot})")
        seen[k] = b
    return bands


def _corners(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    return np.array([[(w - 1) / 2, (h - 1) / 2], [0.0, 0.0], [w - 1.0, 0.0], [0.0, h - 1.0], [w - 1.0, h - 1.0]])


def grid_mismatch(frames: list[Frame], labels: list[str] | None = None) -> str | None:
    """Why these frames are not on one pixel grid, or None when they are: the same shape and, where
    two have WCSs, the same sky within half a pixel at the centre and the four corners."""
    if not frames:
        return None
    names = labels or [f.key for f in frames]
    ref = frames[0]
    for f, name in zip(frames[1:], names[1:], strict=True):
        if f.shape != ref.shape:
            return (f"{name} is {f.shape[1]}x{f.shape[0]} but {names[0]} is {ref.shape[1]}x{ref.shape[0]}: "
                    "compose needs bands on one pixel grid (aligning different grids comes with fields)")
    with_wcs = [(f, n) for f, n in zip(frames, names, strict=True) if f.wcs is not None]
    if len(with_wcs) < 2:
        return None
    first, first_name = with_wcs[0]
    pix = _corners(first.shape)
    world = first.wcs.pixel_to_world(pix[:, 0], pix[:, 1])
    for f, name in with_wcs[1:]:
        x, y = (np.asarray(v, dtype=np.float64) for v in f.wcs.world_to_pixel(world))
        off = float(np.nanmax(np.hypot(x - pix[:, 0], y - pix[:, 1])))
        if not off <= 0.5:
            return (f"{name} and {first_name} are not on one pixel grid: their WCSs differ by {off:.2f} px; "
                    "compose needs aligned bands (reproject them, or see fields)")
    return None


def check_same_grid(bands: list[Band]) -> None:
    """Raise :class:`GridError` unless every band has the first's shape and (with WCSs) its sky."""
    why = grid_mismatch([b.frame for b in bands], [f"{b.label} ({b.frame.key})" for b in bands])
    if why is not None:
        raise GridError(why)
