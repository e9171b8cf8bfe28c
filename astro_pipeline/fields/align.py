"""Aligning a field's bands: each band frame reprojected onto the field's grid, masks with the pixels.

``reproject.reproject_interp`` with bicubic interpolation (``FieldSettings.reproject_order``):

* the grid has the finest pixel scale present (``grouping``), so every frame is resampled at its
  own scale or finer; nothing is ever downsampled, which is where ``reproject_exact``'s
  area-weighting (a flux-conserving drizzle of pixel polygons) earns its cost. Interpolating
  keeps a band sharp when it is upsampled, and exact's overlap of pixel squares upsamples as
  blocks; it is also several times slower (``benchmarks/bench_fields.py`` measures both);
* bicubic rather than bilinear: a bilinear resample at a half-pixel shift averages neighbours,
  blurring one channel against another (colour rims around stars);
* surface brightness is what interpolation keeps, so values are scaled by the ratio of pixel
  areas: a band in e-/s per input pixel becomes e-/s per grid pixel, and its total flux is kept.

Masks: invalid pixels (NaN, zero weight, saturated) are filled with the band's median before
interpolating (a spline through a NaN is NaN everywhere) and the validity mask is reprojected
on its own (bilinear); a grid pixel is valid only where every input pixel it draws on was, and
for bicubic one pixel further in. Invalid pixels are NaN in the aligned data.

The grid is reprojected in strips of rows (``_STRIP_PIXELS`` at a time), so that reproject's
coordinate arrays (about 150 bytes per output pixel) never exceed a fixed size, whatever the
field. :func:`estimate_field_memory` gives the peak before anything is read; a field whose grid
is over ``FieldSettings.max_grid_pixels`` is refused (:class:`FieldRefused`) with its estimate
and the setting to change.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from astro_pipeline.fields.grouping import FieldMember, FieldPlan
from astro_pipeline.ingest.frame import Frame, IngestError

if TYPE_CHECKING:  # pragma: no cover
    from astropy.io.fits import Header
    from astropy.wcs import WCS

__all__ = ["AlignedBand", "AlignedField", "FieldRefused", "MemoryEstimate", "align_field", "check_field_memory",
           "estimate_field_memory", "read_member"]

#: Output pixels reprojected per call (reproject's coordinate arrays: ~150 bytes per pixel).
_STRIP_PIXELS = 1 << 20
_REPROJECT_BYTES_PER_PIXEL = 150
_PHOTOMETRIC_KEYS = ("BUNIT", "PHOTFLAM", "PHOTFNU", "PHOTPLAM", "PHOTBW", "PHOTZPT", "PHOTMODE", "EXPTIME",
                     "FILTER", "INSTRUME", "DETECTOR", "TELESCOP", "TARGNAME", "DATE-OBS")


class FieldRefused(Exception):
    """A field too large to align within the configured limit; the message gives the estimate."""

    def __init__(self, plan: FieldPlan, estimate: MemoryEstimate, message: str) -> None:
        super().__init__(message)
        self.plan = plan
        self.estimate = estimate


@dataclass(frozen=True, kw_only=True)
class MemoryEstimate:
    """Peak memory of aligning and composing one field, by part (bytes)."""

    grid_pixels: int
    parts: dict[str, int]

    @property
    def total(self) -> int:
        p = self.parts
        align = p["member frame"] + p["reprojection strip"]
        products = p["colour product"] + p.get("4x product", 0)
        return p["aligned bands"] + max(align, products)

    def describe(self) -> str:
        gib = 1024**3
        parts = ", ".join(f"{k} {v / gib:.2f}" for k, v in self.parts.items())
        return f"about {self.total / gib:.2f} GiB at peak ({parts} GiB)"


def estimate_field_memory(plan: FieldPlan, *, upscale: int = 1) -> MemoryEstimate:
    """The peak memory of aligning ``plan`` and making its products (a 4x version when ``upscale`` > 1).

    Per pixel: a member frame read with its mask and filled copy, and reproject's spline
    coefficients (24 bytes per input pixel); one reprojection strip (150 bytes per output pixel);
    each aligned band with its mask (5 bytes per grid pixel); the colour product (an RGB float
    image, its stretched bands and 16-bit copy: 40 bytes per grid pixel); the 4x version
    (upscale^2 x (RGB float, stitch weights, 16- and 8-bit copies): 25 bytes per output pixel).
    """
    h, w = plan.grid.shape
    n = h * w
    biggest = max(m.geometry.shape[0] * m.geometry.shape[1] for m in plan.bands.values())
    parts = {
        "member frame": 24 * biggest,
        "reprojection strip": _REPROJECT_BYTES_PER_PIXEL * min(n, _STRIP_PIXELS),
        "aligned bands": 5 * n * len(plan.bands),
        "colour product": 40 * n,
    }
    if upscale > 1:
        parts["4x product"] = 25 * n * upscale * upscale
    return MemoryEstimate(grid_pixels=n, parts=parts)


def check_field_memory(plan: FieldPlan, *, max_grid_pixels: int, upscale: int = 1,
                       budget_bytes: int | None = None) -> MemoryEstimate:
    """The field's estimate; raises :class:`FieldRefused` when it is over the memory budget
    (``budget_bytes``, the ``memory_budget`` setting) or its grid over ``max_grid_pixels``."""
    from astro_pipeline.memory import MemoryBudgetError, check_budget

    estimate = estimate_field_memory(plan, upscale=upscale)
    if budget_bytes is not None:
        h, w = plan.grid.shape
        try:
            check_budget(estimate.total, what=f"field {plan.name}: aligning and composing its {w} x {h} grid",
                         budget=budget_bytes, detail=estimate.describe())
        except MemoryBudgetError as exc:
            raise FieldRefused(plan, estimate, f"refused: {exc}") from exc
    if estimate.grid_pixels > max_grid_pixels:
        h, w = plan.grid.shape
        raise FieldRefused(plan, estimate, (
            f"field {plan.name}: refused, its {w} x {h} grid ({estimate.grid_pixels:,} pixels) is over the "
            f"limit of {max_grid_pixels:,} pixels; aligning and composing it needs {estimate.describe()}. "
            "Raise fields.max_grid_pixels (ASTRO_PIPELINE_FIELDS__MAX_GRID_PIXELS) where the memory is there."))
    return estimate


@dataclass(frozen=True, kw_only=True)
class AlignedBand:
    """One band on the field's grid: data (NaN where invalid), its validity mask and a FITS header
    with the grid's WCS and the frame's photometric keywords (``BUNIT``, ``PHOTFLAM``, ...)."""

    member: FieldMember
    data: np.ndarray  # (H, W) float32
    mask: np.ndarray  # (H, W) bool, True where valid
    header: Header

    @property
    def coverage(self) -> float:
        """Fraction of the grid holding valid data of this band."""
        return float(self.mask.mean())

    def hdu(self) -> Any:
        """The band as an ``ImageHDU`` (what ``compose`` takes)."""
        from astropy.io import fits

        return fits.ImageHDU(self.data, self.header.copy(), name=self.member.filter)


@dataclass(kw_only=True)
class AlignedField:
    """A field's bands on its grid, and the members that could not be aligned (with why)."""

    plan: FieldPlan
    wcs: WCS
    shape: tuple[int, int]
    bands: dict[str, AlignedBand] = field(default_factory=dict)
    failed: list[tuple[FieldMember, str]] = field(default_factory=list)


def read_member(member: FieldMember, *, max_image_pixels: int) -> Frame:
    """The member's frame, read again from its input (raises ``IngestError`` naming the file)."""
    from astro_pipeline.ingest.readers import read_frames

    p = member.product
    frames = [f for f in read_frames(p.source_path, max_image_pixels=max_image_pixels)
              if f.hdu == p.hdu and f.plane == p.plane]
    if not frames:
        raise IngestError(p.source_path, f"frame {p.frame_key} is no longer in the file")
    frame = frames[0]
    if p.source_sha256 and frame.source_sha256 != p.source_sha256:
        raise IngestError(p.source_path, "the file changed since it was processed (its sha256 differs)")
    if frame.wcs is None:
        raise IngestError(p.source_path, "no celestial WCS on reading it again")
    return frame


def _same_grid(a: WCS, b: WCS, shape_a: tuple[int, int], shape_b: tuple[int, int]) -> bool:
    """True when two grids put every pixel within 1/1000 of a pixel of each other (no resampling needed)."""
    if shape_a != shape_b or a.sip is not None or b.sip is not None:
        return False
    h, w = shape_a
    x = np.array([0.0, w - 1.0, 0.0, w - 1.0, (w - 1) / 2.0])
    y = np.array([0.0, 0.0, h - 1.0, h - 1.0, (h - 1) / 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bx, by = b.world_to_pixel_values(*a.pixel_to_world_values(x, y))
    return bool(np.all(np.hypot(bx - x, by - y) < 1e-3))


def _reproject_strips(data: np.ndarray, wcs_in: WCS, grid: WCS, shape: tuple[int, int], order: str) -> np.ndarray:
    from reproject import reproject_interp

    h, w = shape
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    out = np.empty(shape, dtype=np.float32)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        strip = grid.slice((slice(y0, y1), slice(None)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reproject's own notes on WCS fixes
            values, footprint = reproject_interp((data, wcs_in), strip, shape_out=(y1 - y0, w), order=order)
        out[y0:y1] = np.where(footprint > 0, values, np.nan)
    return out


def _align(frame: Frame, grid: WCS, shape: tuple[int, int], order: str) -> tuple[np.ndarray, np.ndarray]:
    from astropy.wcs.utils import proj_plane_pixel_area
    from scipy.ndimage import binary_erosion

    if frame.wcs is None:
        raise ValueError("no celestial WCS")
    valid = np.asarray(frame.mask) & np.isfinite(frame.data)
    if not valid.any():
        raise ValueError("no valid pixels")
    if _same_grid(frame.wcs, grid, frame.shape, shape):
        return np.where(valid, frame.data, np.nan).astype(np.float32), valid.copy()
    fill = float(np.median(frame.data[valid]))
    filled = np.where(valid, frame.data, fill).astype(np.float32)
    values = _reproject_strips(filled, frame.wcs, grid, shape, order)
    vmask = _reproject_strips(valid.astype(np.float32), frame.wcs, grid, shape, "bilinear")
    ok = np.isfinite(values) & np.isfinite(vmask) & (vmask >= 0.999)
    if order != "bilinear":
        ok = binary_erosion(ok, iterations=1, border_value=0)
    ratio = float(proj_plane_pixel_area(grid) / proj_plane_pixel_area(frame.wcs))
    out = np.where(ok, values * np.float32(ratio), np.nan).astype(np.float32)
    return out, ok


def _band_header(frame: Frame, grid: WCS, member: FieldMember, ratio: float) -> Header:
    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = grid.to_header(relax=True)
    src = frame.header if frame.header is not None else fits.Header()
    primary = frame.provenance or {}
    for key in _PHOTOMETRIC_KEYS:
        if key in src and src[key] not in (None, ""):
            header[key] = src[key]
    if "FILTER" not in header:
        header["FILTER"] = member.filter
    if "EXPTIME" not in header and member.exptime:
        header["EXPTIME"] = member.exptime
    if "INSTRUME" not in header and primary.get("instrument"):
        header["INSTRUME"] = str(primary["instrument"])
    if "DETECTOR" not in header and primary.get("detector"):
        header["DETECTOR"] = str(primary["detector"])  # WFC3/IR names are in 10 nm units: the rule needs it
    header["PIXAREAR"] = (ratio, "grid / input pixel area: values scaled by it")
    header["SRCFILE"] = str(member.name)[:68]
    header["SRCSHA"] = str(member.product.source_sha256)[:68]
    return header


def align_field(plan: FieldPlan, *, max_image_pixels: int, order: str = "bicubic",
                read: Callable[..., Frame] = read_member) -> AlignedField:
    """Every band frame of ``plan`` on its grid. A frame that cannot be read or reprojected is left
    out (``failed``, with the error); the caller composes from the rest, if two bands remain."""
    from astropy.wcs.utils import proj_plane_pixel_area

    grid = plan.grid.wcs
    shape = plan.grid.shape
    aligned = AlignedField(plan=plan, wcs=grid, shape=shape)
    for band, member in plan.bands.items():
        try:
            frame = read(member, max_image_pixels=max_image_pixels)
        except (IngestError, OSError) as exc:  # the raw input is gone (retention) or changed
            aligned.failed.append((member, f"{member.name}: could not be read again: {exc}"))
            continue
        try:
            data, mask = _align(frame, grid, shape, order)
            if not mask.any():
                raise ValueError("no valid pixel lands on the field's grid")
            ratio = float(proj_plane_pixel_area(grid) / proj_plane_pixel_area(frame.wcs))
            aligned.bands[band] = AlignedBand(member=member, data=data, mask=mask,
                                              header=_band_header(frame, grid, member, ratio))
        except MemoryError:
            aligned.failed.append((member, f"{member.name}: not enough memory to reproject it"))
        except Exception as exc:  # noqa: BLE001 - one frame that fails leaves the others to compose
            msg = " ".join(str(exc).split())[:300]
            aligned.failed.append((member, f"{member.name}: reprojection failed: {type(exc).__name__}: {msg}"))
    return aligned

