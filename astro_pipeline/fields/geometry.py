"""A frame's footprint on the sky: its pixel grid (shape and celestial WCS) and where it holds data.

Grouping frames into fields asks, for two frames, how much of the smaller one's sky the other
covers. The frame's rectangle overstates that for drizzled products (a zero-weight border around
a rotated footprint) and for HLA cutouts padded off their data, so a footprint keeps a coarse
coverage grid: ``COVERAGE_GRID`` blocks a side, a block counting where at least half its pixels
are valid. Overlaps are measured by mapping the centres of one footprint's covered blocks
through both WCSs (astropy) into the other's grid: the fraction that lands on covered blocks of
the other is the fraction of sky shared, to about one block's width. The footprint is recorded
with the frame in the catalog, so grouping works from catalog rows alone.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from astro_pipeline.ingest.frame import Frame

if TYPE_CHECKING:  # pragma: no cover
    from astropy.wcs import WCS

__all__ = ["COVERAGE_GRID", "PLAUSIBLE_SCALE_ARCSEC", "FrameGeometry", "NoFootprint", "covered_fraction", "footprint_from_dict", "footprint_of",
           "overlap_fraction", "reference_grid"]

#: Coverage blocks per side of a footprint (fewer for frames smaller than this many pixels).
COVERAGE_GRID = 32

#: Pixel scales (arcsec) a Hubble frame can have; outside them the WCS is wrong, not the telescope.
PLAUSIBLE_SCALE_ARCSEC = (0.001, 10.0)


def _quiet_wcs(header: Any) -> WCS:
    from astropy.wcs import WCS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FITSFixedWarning about DATE-OBS/MJD fixes: not ours to report
        return WCS(header)


def _edges(n: int, blocks: int) -> np.ndarray:
    return np.linspace(0, n, blocks + 1).round().astype(int)


@dataclass(frozen=True, kw_only=True)
class FrameGeometry:
    """A frame's grid and coverage: ``shape`` (height, width), its celestial WCS as FITS cards, and
    a ``grid`` (rows, columns) of coverage blocks packed row-major as hex (``coverage_hex``)."""

    shape: tuple[int, int]
    wcs_header: dict[str, Any]
    grid: tuple[int, int]
    coverage_hex: str

    # --- building ---------------------------------------------------------------------------
    @classmethod
    def from_wcs(cls, wcs: WCS, shape: tuple[int, int], valid: np.ndarray | None = None) -> FrameGeometry:
        """The footprint of an image of ``shape`` on ``wcs``; ``valid`` (H, W) marks its data (all by default)."""
        h, w = int(shape[0]), int(shape[1])
        grid = (max(1, min(COVERAGE_GRID, h)), max(1, min(COVERAGE_GRID, w)))
        if valid is None:
            blocks = np.ones(grid, dtype=bool)
        else:
            ys, xs = _edges(h, grid[0]), _edges(w, grid[1])
            counts = np.add.reduceat(np.add.reduceat(np.asarray(valid, dtype=np.int64), ys[:-1], axis=0),
                                     xs[:-1], axis=1)
            sizes = np.outer(np.diff(ys), np.diff(xs))
            blocks = counts * 2 >= sizes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = wcs.to_header(relax=True)
        cards = {k: header[k] for k in header if k not in ("COMMENT", "HISTORY", "")}
        return cls(shape=(h, w), wcs_header=cards, grid=grid, coverage_hex=np.packbits(blocks.ravel()).tobytes().hex())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrameGeometry:
        cov = d["coverage"]
        return cls(shape=(int(d["shape"][0]), int(d["shape"][1])), wcs_header=dict(d["wcs"]),
                   grid=(int(cov["grid"][0]), int(cov["grid"][1])), coverage_hex=str(cov["bits"]))

    def as_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "wcs": dict(self.wcs_header),
                "coverage": {"grid": list(self.grid), "bits": self.coverage_hex}}

    # --- reading ----------------------------------------------------------------------------
    @cached_property
    def wcs(self) -> WCS:
        from astropy.io import fits

        return _quiet_wcs(fits.Header(list(self.wcs_header.items())))

    @cached_property
    def coverage(self) -> np.ndarray:
        """(rows, columns) bool: True where the block holds data."""
        n = self.grid[0] * self.grid[1]
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(self.coverage_hex), dtype=np.uint8))[:n]
        return bits.astype(bool).reshape(self.grid)

    @cached_property
    def pixel_scale_arcsec(self) -> float:
        """Side of a pixel in arcseconds (square root of the projected pixel area)."""
        from astropy.wcs.utils import proj_plane_pixel_area

        return float(math.sqrt(proj_plane_pixel_area(self.wcs)) * 3600.0)

    @property
    def valid_fraction(self) -> float:
        return float(self.coverage.mean())

    @property
    def area_arcsec2(self) -> float:
        """Sky area holding data."""
        return self.shape[0] * self.shape[1] * self.pixel_scale_arcsec**2 * self.valid_fraction

    @cached_property
    def centre(self) -> tuple[float, float]:
        """(ra, dec) in degrees of the grid's centre."""
        h, w = self.shape
        ra, dec = self.wcs.pixel_to_world_values((w - 1) / 2.0, (h - 1) / 2.0)
        return float(ra), float(dec)

    @property
    def radius_deg(self) -> float:
        """Half the grid's diagonal on the sky."""
        return 0.5 * math.hypot(*self.shape) * self.pixel_scale_arcsec / 3600.0

    def covered_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (x, y) of the centres of the covered blocks."""
        h, w = self.shape
        ys, xs = _edges(h, self.grid[0]), _edges(w, self.grid[1])
        cy = (ys[:-1] + ys[1:] - 1) / 2.0
        cx = (xs[:-1] + xs[1:] - 1) / 2.0
        rows, cols = np.nonzero(self.coverage)
        return cx[cols].astype(np.float64), cy[rows].astype(np.float64)

    def holds(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True for pixel positions inside the grid on a covered block."""
        h, w = self.shape
        inside = np.isfinite(x) & np.isfinite(y) & (x > -0.5) & (x < w - 0.5) & (y > -0.5) & (y < h - 0.5)
        out = np.zeros(np.shape(x), dtype=bool)
        if inside.any():
            iy = np.clip(np.floor(y[inside] + 0.5), 0, h - 1)
            ix = np.clip(np.floor(x[inside] + 0.5), 0, w - 1)
            rows = np.searchsorted(_edges(h, self.grid[0]), iy, side="right") - 1
            cols = np.searchsorted(_edges(w, self.grid[1]), ix, side="right") - 1
            out[inside] = self.coverage[rows, cols]
        return out


@dataclass(frozen=True)
class NoFootprint:
    """A linear science frame without a footprint usable for grouping, and why."""

    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"unusable": self.reason}


def footprint_from_dict(d: dict[str, Any] | None) -> FrameGeometry | NoFootprint | None:
    """The recorded footprint (``as_dict`` of either kind), or None where none was recorded."""
    if not d:
        return None
    if "unusable" in d:
        return NoFootprint(str(d["unusable"]))
    return FrameGeometry.from_dict(d)


def footprint_of(frame: Frame) -> FrameGeometry | NoFootprint | None:
    """The footprint of a linear science frame, or why it has none usable for grouping.

    None for display images (PNG, JPEG, integer TIFF) and colour planes: they are never members
    of a field, so there is nothing to say about them.
    """
    if frame.is_display or frame.data.ndim != 2:
        return None
    try:
        return _footprint(frame)
    except Exception as exc:  # noqa: BLE001 - a WCS that fails any step is unusable, whatever the reason
        return NoFootprint(f"celestial WCS unusable: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")


def _footprint(frame: Frame) -> FrameGeometry | NoFootprint:
    if frame.wcs is None:
        why = next((n for n in frame.notes if n.startswith("WCS")), None)
        return NoFootprint(f"no usable celestial WCS ({why})" if why else "no celestial WCS in the header")
    geometry = FrameGeometry.from_wcs(frame.wcs, frame.shape, np.asarray(frame.mask))
    scale = geometry.pixel_scale_arcsec
    ra, dec = geometry.centre
    if not (math.isfinite(scale) and scale > 0 and math.isfinite(ra) and math.isfinite(dec)):
        return NoFootprint("celestial WCS unusable: no finite pixel scale or centre")
    if not PLAUSIBLE_SCALE_ARCSEC[0] <= scale <= PLAUSIBLE_SCALE_ARCSEC[1]:
        # e.g. a zero CD matrix, which WCSLIB turns into 1 degree per pixel: such a footprint would
        # link every frame within degrees into one field
        lo, hi = PLAUSIBLE_SCALE_ARCSEC
        return NoFootprint(f'celestial WCS unusable: a pixel scale of {scale:.4g}"/px is outside {lo:g}-{hi:g}"/px')
    x, y = geometry.wcs.world_to_pixel_values(ra, dec)
    h, w = frame.shape
    back = math.hypot(float(x) - (w - 1) / 2.0, float(y) - (h - 1) / 2.0)
    if not math.isfinite(back) or back > 0.01:
        return NoFootprint(f"celestial WCS unusable: the centre does not map back to itself ({back:.3g} px)")
    if not geometry.coverage.any():
        return NoFootprint("no valid pixels")
    return geometry


def covered_fraction(a: FrameGeometry, *, by: FrameGeometry) -> float:
    """The fraction of ``a``'s covered sky that ``by`` also covers."""
    from astro_pipeline.sky import separation_deg

    if separation_deg(*a.centre, *by.centre) > a.radius_deg + by.radius_deg:
        return 0.0
    x, y = a.covered_points()
    if x.size == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # points far off a distorted grid may not converge: then they miss
        ra, dec = a.wcs.pixel_to_world_values(x, y)
        bx, by_ = by.wcs.world_to_pixel_values(ra, dec)
    return float(by.holds(np.asarray(bx), np.asarray(by_)).mean())


def overlap_fraction(a: FrameGeometry, b: FrameGeometry) -> float:
    """Intersection area over the smaller footprint: the fraction of the smaller's sky the other covers."""
    small, large = (a, b) if a.area_arcsec2 <= b.area_arcsec2 else (b, a)
    return covered_fraction(small, by=large)


def reference_grid(reference: FrameGeometry) -> FrameGeometry:
    """The grid a field is aligned on: the reference frame's own grid where its WCS is a plain TAN
    projection, else a TAN grid of the same shape, centre, orientation and pixel scale (so that
    no frame's distortion is carried into the product)."""
    import numpy.linalg as la
    from astropy.wcs import WCS

    w = reference.wcs
    plain = w.sip is None and all(str(t).endswith("-TAN") for t in w.wcs.ctype)
    if plain:
        return reference
    h, wd = reference.shape
    ra, dec = reference.centre
    tan = WCS(naxis=2)
    tan.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    tan.wcs.crval = [ra, dec]
    tan.wcs.crpix = [(wd + 1) / 2.0, (h + 1) / 2.0]
    cd = np.asarray(w.pixel_scale_matrix, dtype=np.float64)
    if not np.all(np.isfinite(cd)) or abs(la.det(cd)) == 0:
        raise ValueError("the reference frame's WCS has no usable linear part")
    tan.wcs.cd = cd
    tan.wcs.set()
    grid = FrameGeometry.from_wcs(tan, reference.shape)
    return FrameGeometry(shape=grid.shape, wcs_header=grid.wcs_header, grid=reference.grid,
                         coverage_hex=reference.coverage_hex)
