"""Synthetic fields for the field tests: one star field observed on any grid, written as HST-like FITS.

Stars are placed on the sky (RA, Dec) and rendered on each grid through its own WCS as
pixel-integrated Gaussians (erf), so every grid sees the same sky exactly, whatever its scale,
rotation or offset; a test can then compare centroids between grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy.special import erf

from astro_pipeline.fields.geometry import footprint_of
from astro_pipeline.ingest.readers import read_frames
from astro_pipeline.products.types import Operation, Product, ProductStatus

RA0, DEC0 = 150.1, 2.2


def tan_wcs(n: int, *, scale: float, orient: float = 0.0, ra: float = RA0, dec: float = DEC0,
            offset: tuple[float, float] = (0.0, 0.0)) -> WCS:
    """A TAN WCS for an n x n frame: ``scale`` arcsec/px, +y at ``orient`` degrees E of N, centre
    ``offset`` arcsec (east, north) from (ra, dec)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra + offset[0] / 3600.0 / math.cos(math.radians(dec)), dec + offset[1] / 3600.0]
    w.wcs.crpix = [(n + 1) / 2.0, (n + 1) / 2.0]
    c, a = scale / 3600.0, math.radians(orient)
    w.wcs.cd = [[-c * math.cos(a), c * math.sin(a)], [c * math.sin(a), c * math.cos(a)]]
    w.wcs.set()
    return w


@dataclass(frozen=True)
class Stars:
    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray


def star_field(n: int, *, seed: int, radius_arcsec: float, ra: float = RA0, dec: float = DEC0) -> Stars:
    """``n`` stars uniformly in a square of half-side ``radius_arcsec`` around (ra, dec)."""
    rng = np.random.default_rng(seed)
    dx, dy = rng.uniform(-radius_arcsec, radius_arcsec, (2, n))
    return Stars(ra=ra + dx / 3600.0 / math.cos(math.radians(dec)), dec=dec + dy / 3600.0,
                 flux=rng.uniform(300.0, 3000.0, n))


def observe(wcs: WCS, n: int, stars: Stars, *, fwhm_arcsec: float, noise: float = 0.0, seed: int = 0,
            sky: float = 0.0) -> np.ndarray:
    """The stars on an n x n grid: pixel-integrated Gaussians of ``fwhm_arcsec``, plus Gaussian noise."""
    scale = math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0
    sigma = fwhm_arcsec / 2.3548 / scale
    x, y = wcs.world_to_pixel_values(stars.ra, stars.dec)
    img = np.zeros((n, n))
    edges = np.arange(n + 1) - 0.5
    half = int(6 * sigma) + 2
    for xi, yi, f in zip(x, y, stars.flux, strict=True):
        if not (-half < xi < n + half and -half < yi < n + half):
            continue
        x0, x1 = max(int(xi) - half, 0), min(int(xi) + half + 1, n)
        y0, y1 = max(int(yi) - half, 0), min(int(yi) + half + 1, n)
        if x0 >= x1 or y0 >= y1:
            continue
        ex = 0.5 * np.diff(erf((edges[x0:x1 + 1] - xi) / (sigma * math.sqrt(2))))
        ey = 0.5 * np.diff(erf((edges[y0:y1 + 1] - yi) / (sigma * math.sqrt(2))))
        img[y0:y1, x0:x1] += f * np.outer(ey, ex)
    if noise:
        img += np.random.default_rng(seed).normal(0.0, noise, img.shape)
    return (img + sky).astype(np.float32)


def write_frame(path: Path, data: np.ndarray, wcs: WCS | None, *, filt: str, exptime: float,
                instrument: str = "ACS", detector: str = "WFC", target: str = "TESTFIELD",
                photflam: float | None = 1e-19, wht: np.ndarray | None = None,
                extra: dict[str, Any] | None = None) -> Path:
    """A drizzled-like FITS: PRIMARY (instrument, filter, EXPTIME, target) + SCI (WCS, BUNIT, PHOTFLAM) [+ WHT]."""
    prim = fits.Header()
    prim["TELESCOP"] = "HST"
    prim["INSTRUME"] = instrument
    prim["DETECTOR"] = detector
    prim["FILTER"] = filt
    prim["EXPTIME"] = exptime
    prim["TARGNAME"] = target
    for k, v in (extra or {}).items():
        prim[k] = v
    sci = wcs.to_header() if wcs is not None else fits.Header()
    sci["BUNIT"] = "ELECTRONS/S"
    if photflam is not None:
        sci["PHOTFLAM"] = photflam
    hdus = [fits.PrimaryHDU(header=prim), fits.ImageHDU(np.asarray(data, np.float32), sci, name="SCI")]
    if wht is not None:
        hdus.append(fits.ImageHDU(np.asarray(wht, np.float32), wcs.to_header() if wcs is not None else None,
                                  name="WHT"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def frame_product(path: Path, *, run_id: str | None = "test-run", flagged: bool = False) -> Product:
    """The ok product the processing path would record for the file's one frame (no model run)."""
    from astro_pipeline.ingest.frame import Flag, QualityReport

    (frame,) = read_frames(path, max_image_pixels=10**9)
    quality = QualityReport(metrics={"snr": 50.0}, flags=[Flag("noisy", 1.0, 3.0, "<", "test")] if flagged else [])
    return Product(run_id=run_id, source_path=str(path), source_sha256=frame.source_sha256, hdu=frame.hdu,
                   plane=frame.plane, frame_key=frame.key, operation=Operation.ENHANCE, status=ProductStatus.OK,
                   provenance=dict(frame.provenance), notes=tuple(frame.notes), footprint=footprint_of(frame),
                   quality=quality)
