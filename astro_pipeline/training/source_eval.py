"""Source-level evaluation of 4x super-resolution: does it invent stars, lose faint ones, move them,
change their flux? Scored with standard tools (photutils, astropy), beside bicubic.

Protocol (issue 19), per frame and seeded realisation:

1. A linear single-band frame at its native resolution (the sample's synthetic ACS fields and HDF,
   the larger real HST frames in ``../shared/data/fits``), cropped to fully valid pixels.
2. Point sources injected with the frame's PSF (a Moffat fitted to isolated stars with
   astropy.modeling, else the instrument's tabulated width): a fixed count per flux bin, fluxes
   set by their signal-to-noise in the low-resolution input (bins from 3 to 100 sky sigma of the
   optimal, PSF-weighted measurement), at random sub-pixel positions away from the frame's own
   sources and each other. Frame + sources is the truth.
3. Degraded by 4x: block-average, then Gaussian noise that brings the sky back to the frame's own
   per-pixel level.
4. Reconstructed by bicubic and each SR model on the sweep's display stretch (ZScale + asinh,
   computed on the low-resolution frame, as :func:`astro_pipeline.ingest.stretch.display_image`),
   and inverted back to linear units (:func:`astro_pipeline.products.process.invert_stretch`). The
   flux-conserving product is made too; it keeps block means by construction, so it is reported
   and never counted as evidence.
5. Detected by photutils segmentation (SExtractor-like: 2D background removed, matched filter of
   the PSF's FWHM, at least ``npixels`` connected pixels, deblended) on the truth and on every output at the
   same threshold in units of each detection image's own sky sigma. Segmentation rather than
   DAOStarFinder: DAOStarFinder's sharpness and roundness cuts are tuned to the native PSF and
   reject a bicubic output's broader (but real) sources, which would score shape, not presence.

Reported per method, with intervals across realisations (mean [min, max]): completeness per flux
bin; false detections per square arcminute (detections matching neither a truth detection nor an
injected source); the median aperture-flux ratio of recovered injected sources and its scatter;
the centroid error in output pixels. The flux ratio counts the sources a display product can carry:
the display stretch clips at its upper limit (a few to tens of sky sigma per pixel with ZScale), and
a 4x product's cores are sharper than the input's, so a source counts only when neither the input's
peak nor more than ``clip_loss`` of the truth's own flux lies above that limit. The reference row
``display-truth`` (the truth through the same display) then measures what ``truth`` measures; the
clipped fraction and the ratio over all recovered sources are reported beside it.

One call scores any SR callable (display (h, w) in [0, 1] -> (4h, 4w[, 3])), an Engine, or weights
on the fixed frames and realisations: :func:`evaluate_sources`. The gate on its result is
:func:`astro_pipeline.training.promote.science_gate`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import math
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from astro_pipeline.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from astro_pipeline.ingest.frame import Frame

__all__ = [
    "DEFAULT_REAL_FRAMES",
    "DEFAULT_SAMPLE_FRAMES",
    "HELD_OUT_REAL_PREFIXES",
    "HELD_OUT_SAMPLE_FIELDS",
    "METRICS",
    "EvalFrame",
    "MoffatPSF",
    "SRFunction",
    "SourceEvalConfig",
    "SourceEvalReport",
    "as_sr_function",
    "block_mean",
    "candidate_source_metrics",
    "DEV_REAL_FRAMES",
    "DISPLAY_TRUTH",
    "default_frames",
    "dev_frames",
    "nea_at",
    "degrade",
    "detect",
    "evaluate_sources",
    "fit_psf",
    "frame_from_array",
    "is_held_out",
    "largest_science_frame",
    "load_frame",
    "report_section",
    "report_summary",
    "summary_section",
    "verdict_dict",
    "write_source_report",
]

log = logging.getLogger(__name__)

#: A super-resolver on display values: (h, w) float32 in [0, 1] -> (s*h, s*w) or (s*h, s*w, 3).
SRFunction = Callable[[np.ndarray], np.ndarray]

#: Frames this evaluation uses; training must not (issue 22): whole fields, every band.
HELD_OUT_SAMPLE_FIELDS: tuple[str, ...] = ("ngc1300", "hdf")
HELD_OUT_REAL_PREFIXES: tuple[str, ...] = ("trilogy__hst_mos_1020228_", "petrofit__abell_2744_cd_galaxy")
DEFAULT_SAMPLE_FRAMES: tuple[tuple[str, str], ...] = (("ngc1300", "F606W"), ("ngc1300", "F814W"),
                                                      ("hdf", "F606W"), ("hdf", "F814W"))
DEFAULT_REAL_FRAMES: tuple[str, ...] = (
    "hst/trilogy__hst_mos_1020228_wfc3_uvis_f606w_drz_cutout_20asec.fits",
    "hst/trilogy__hst_mos_1020228_wfc3_uvis_f814w_drz_cutout_20asec.fits",
    "hst/petrofit__abell_2744_cd_galaxy_f105w.fits.gz",
)

#: Frames a recipe may be tuned on with these measures: real frames of ``shared/data/fits`` that
#: neither the evaluation nor training uses (two ground-based frames; two Abell 2744 cutouts whose
#: footprints lie apart from the held-out cD galaxy's).
DEV_REAL_FRAMES: tuple[str, ...] = (
    "other/astropydata__HorseHead.fits",
    "other/photutilsds__M51.fits",
    "hst/petrofit__abell_2744_spiral_galaxy_f105w.fits.gz",
    "hst/petrofit__abell_2744_group_of_galaxies_f105w.fits.gz",
)

#: Approximate PSF FWHM in arcsec by (instrument, detector), used when too few isolated stars fit.
TABULATED_FWHM_ARCSEC: dict[tuple[str, str], float] = {
    ("ACS", "WFC"): 0.10, ("ACS", "HRC"): 0.06, ("WFC3", "UVIS"): 0.08, ("WFC3", "IR"): 0.13,
    ("WFPC2", ""): 0.14, ("NICMOS", ""): 0.15, ("STIS", ""): 0.08,
}
FALLBACK_FWHM_PX = 2.5
#: The evaluation reads small frames; a header claiming more pixels than this is refused unread.
MAX_FRAME_PIXELS = 64_000_000
FALLBACK_BETA = 3.0

#: Reference row: the truth itself through the display (the input's stretch, clipped, inverted), the
#: best any display product can score; like ``truth`` it is not evidence.
DISPLAY_TRUTH = "display-truth"

#: Per-method metrics (besides completeness per bin), as stored and gated.
METRICS = ("false_per_arcmin2", "flux_ratio_median", "flux_ratio_scatter", "flux_ratio_median_all",
           "clipped_fraction", "centroid_err_px", "recovered")


# ---------------------------------------------------------------------------------------------
# Frames and PSF


@dataclass(frozen=True)
class MoffatPSF:
    """Circular Moffat ``(1 + r^2/gamma^2)^-beta``; ``fwhm`` in native (output) pixels."""

    fwhm: float
    beta: float
    source: str = ""

    @property
    def gamma(self) -> float:
        return self.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    def render(self, shape: tuple[int, int], xs: Sequence[float], ys: Sequence[float], fluxes: Sequence[float], *,
               oversample: int = 5) -> np.ndarray:
        """Sources of total ``fluxes`` at pixel centres ``(xs, ys)`` (0-based, pixel-integrated)."""
        img = np.zeros(shape, np.float64)
        g2, b = self.gamma**2, self.beta
        norm = (b - 1.0) / (math.pi * g2)
        half = int(math.ceil(8 * self.fwhm)) + 2
        sub = (np.arange(oversample) + 0.5) / oversample - 0.5
        for x, y, f in zip(xs, ys, fluxes, strict=True):
            x0, x1 = max(int(x) - half, 0), min(int(x) + half + 1, shape[1])
            y0, y1 = max(int(y) - half, 0), min(int(y) + half + 1, shape[0])
            yy = (np.arange(y0, y1)[:, None] + sub[None, :]).reshape(-1)
            xx = (np.arange(x0, x1)[:, None] + sub[None, :]).reshape(-1)
            r2 = (yy[:, None] - y) ** 2 + (xx[None, :] - x) ** 2
            prof = norm * (1.0 + r2 / g2) ** (-b)
            prof = prof.reshape(y1 - y0, oversample, x1 - x0, oversample).mean(axis=(1, 3))
            img[y0:y1, x0:x1] += f * prof
        return img


@dataclass
class EvalFrame:
    """One linear frame of the evaluation: fully valid, sides multiples of the scale."""

    name: str
    group: str
    data: np.ndarray
    sigma: float
    pixel_scale: float  # arcsec per native pixel
    psf: MoffatPSF
    origin: str = ""
    instrument: str = ""

    @property
    def area_arcmin2(self) -> float:
        return self.data.shape[0] * self.data.shape[1] * (self.pixel_scale / 60.0) ** 2

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "origin": self.origin, "instrument": self.instrument,
                "shape": list(self.data.shape), "sigma": self.sigma, "pixel_scale": self.pixel_scale,
                "area_arcmin2": self.area_arcmin2, "psf_fwhm": self.psf.fwhm, "psf_beta": self.psf.beta,
                "psf_source": self.psf.source}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence photutils' NoDetectionsWarning: an empty image is a result here (zero detections)."""
    from photutils.utils.exceptions import NoDetectionsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        yield


def _background(image: np.ndarray, box: int) -> np.ndarray:
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    h, w = image.shape
    b = max(8, min(box, h // 2, w // 2))
    bkg = Background2D(image, (b, b), filter_size=(3, 3), sigma_clip=SigmaClip(sigma=3.0),
                       bkg_estimator=MedianBackground())
    return np.asarray(bkg.background, dtype=np.float64)


def _sky_sigma(resid: np.ndarray) -> float:
    from astropy.stats import sigma_clipped_stats

    return float(sigma_clipped_stats(resid, sigma=3.0, maxiters=10)[2])


def sky_sigma(image: np.ndarray, *, box: int = 32) -> float:
    """Per-pixel sky noise: sigma-clipped standard deviation after a 2D background is removed."""
    img = np.asarray(image, dtype=np.float64)
    return _sky_sigma(img - _background(img, box))


def _valid_crop(valid: np.ndarray, multiple: int, max_size: int | None) -> tuple[slice, slice]:
    """The largest centred window of valid pixels found by shrinking the sides (then trimmed to
    ``max_size`` about the centre and to multiples of ``multiple``)."""
    h, w = valid.shape
    y0, y1, x0, x1 = 0, h, 0, w
    while y1 - y0 > 2 * multiple and x1 - x0 > 2 * multiple and not valid[y0:y1, x0:x1].all():
        win = ~valid[y0:y1, x0:x1]
        sides = {"top": win[0].sum(), "bottom": win[-1].sum(), "left": win[:, 0].sum(), "right": win[:, -1].sum()}
        side = max(sides, key=lambda k: sides[k])
        if side == "top":
            y0 += 1
        elif side == "bottom":
            y1 -= 1
        elif side == "left":
            x0 += 1
        else:
            x1 -= 1
    if not valid[y0:y1, x0:x1].all():
        raise ValueError("no fully valid window of useful size")
    if max_size:
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        hh, ww = min(y1 - y0, max_size), min(x1 - x0, max_size)
        y0, x0 = cy - hh // 2, cx - ww // 2
        y1, x1 = y0 + hh, x0 + ww
    hh, ww = (y1 - y0) // multiple * multiple, (x1 - x0) // multiple * multiple
    return slice(y0, y0 + hh), slice(x0, x0 + ww)


def fit_psf(data: np.ndarray, *, sigma: float, pixel_scale: float | None = None, instrument: str = "",
            detector: str = "", min_stars: int = 3, max_stars: int = 30, box: int = 32) -> MoffatPSF:
    """A Moffat fitted (astropy.modeling) to isolated bright point-like sources of ``data``: the
    median FWHM and beta of the more compact half of the good fits (galaxies only broaden).
    Fewer than ``min_stars`` good fits: the tabulated width of the instrument, else a default."""
    from astropy.modeling import fitting, models
    from photutils.detection import DAOStarFinder
    from scipy.spatial import cKDTree

    img = np.asarray(data, dtype=np.float64)
    resid = img - _background(img, box)
    fits: list[tuple[float, float]] = []
    with _quiet():
        tab = DAOStarFinder(threshold=30.0 * sigma, fwhm=2.5, exclude_border=True)(resid)
    if tab is not None and len(tab) > 0:
        xy = np.column_stack([np.asarray(tab["x_centroid"]), np.asarray(tab["y_centroid"])])
        peak = np.asarray(tab["peak"], dtype=np.float64)
        tree = cKDTree(xy)
        half = 8
        fitter = fitting.LevMarLSQFitter()
        h, w = img.shape
        for i in np.argsort(-peak):
            if len(fits) >= max_stars:
                break
            x, y = xy[i]
            if len(tree.query_ball_point(xy[i], 15.0)) > 1:
                continue  # a neighbour within 15 px: not isolated
            ix, iy = int(round(x)), int(round(y))
            if ix - half < 0 or iy - half < 0 or ix + half >= w or iy + half >= h:
                continue
            cut = resid[iy - half : iy + half + 1, ix - half : ix + half + 1]
            yy, xx = np.mgrid[: cut.shape[0], : cut.shape[1]]
            init = models.Moffat2D(amplitude=float(cut.max()), x_0=x - ix + half, y_0=y - iy + half, gamma=1.5, alpha=2.5,
                                   bounds={"gamma": (0.2, 15.0), "alpha": (1.05, 12.0)}) + models.Const2D(0.0)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fit = fitter(init, xx, yy, cut, maxiter=200)
            except Exception:  # a failed fit is just not a star
                continue
            moff = fit[0]
            amp = float(moff.amplitude.value)
            if amp <= 0:
                continue
            rms = float(np.sqrt(np.mean((fit(xx, yy) - cut) ** 2)))
            fwhm = float(moff.fwhm)
            if rms > 0.1 * amp or not 0.8 <= fwhm <= 12.0:
                continue
            fits.append((fwhm, float(moff.alpha.value)))
    if len(fits) >= min_stars:
        arr = np.asarray(fits)
        compact = arr[arr[:, 0] <= np.median(arr[:, 0])]
        return MoffatPSF(fwhm=float(np.median(compact[:, 0])), beta=float(np.clip(np.median(compact[:, 1]), 1.5, 10.0)),
                         source=f"Moffat fit to {len(compact)} of {len(arr)} isolated stars")
    inst, det = (instrument or "").upper(), (detector or "").upper()
    tab_fwhm = TABULATED_FWHM_ARCSEC.get((inst, det)) or TABULATED_FWHM_ARCSEC.get((inst, ""))
    if tab_fwhm and pixel_scale:
        return MoffatPSF(fwhm=tab_fwhm / pixel_scale, beta=FALLBACK_BETA,
                         source=f"tabulated {inst}/{det or '-'} FWHM {tab_fwhm}\" ({len(fits)} star fits)")
    return MoffatPSF(fwhm=FALLBACK_FWHM_PX, beta=FALLBACK_BETA, source=f"default ({len(fits)} star fits)")


def frame_from_array(data: np.ndarray, *, name: str, group: str | None = None, pixel_scale: float = 0.05,
                     valid: np.ndarray | None = None, psf: MoffatPSF | None = None, instrument: str = "",
                     detector: str = "", origin: str = "", scale: int = 4, max_size: int | None = 512,
                     box: int = 32) -> EvalFrame:
    """An :class:`EvalFrame` from a linear array: cropped to valid pixels, sky sigma measured,
    PSF fitted unless given."""
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a single-band (H, W) frame, got shape {arr.shape}")
    ok = np.isfinite(arr) if valid is None else (np.asarray(valid, bool) & np.isfinite(arr))
    ys, xs = _valid_crop(ok, scale * 8, max_size)
    crop = np.ascontiguousarray(arr[ys, xs])
    if min(crop.shape) < scale * 16:
        raise ValueError(f"{name}: valid area {crop.shape} is too small for a {scale}x evaluation")
    sigma = sky_sigma(crop, box=box)
    if not sigma > 0:
        raise ValueError(f"{name}: no sky noise measurable (sigma {sigma})")
    psf = psf or fit_psf(crop, sigma=sigma, pixel_scale=pixel_scale, instrument=instrument, detector=detector, box=box)
    return EvalFrame(name=name, group=group or name, data=crop, sigma=sigma, pixel_scale=float(pixel_scale), psf=psf,
                     origin=origin or name, instrument="/".join(x for x in (instrument, detector) if x))


def largest_science_frame(path: str | Path, *, max_image_pixels: int = MAX_FRAME_PIXELS) -> Frame:
    """The largest single-band science frame of a FITS file, through the pipeline's own reader."""
    from astro_pipeline.ingest.readers import read_frames

    frames = [f for f in read_frames(Path(path), max_image_pixels=max_image_pixels) if not f.is_display and f.data.ndim == 2]
    if not frames:
        raise ValueError(f"{path}: no single-band science frame")
    return max(frames, key=lambda f: f.data.size)


def load_frame(path: str | Path, *, name: str | None = None, group: str | None = None, scale: int = 4,
               max_size: int | None = 512, max_image_pixels: int = MAX_FRAME_PIXELS) -> EvalFrame:
    """The largest science frame of a FITS file, through the pipeline's own reader."""
    path = Path(path)
    fr = largest_science_frame(path, max_image_pixels=max_image_pixels)
    scale_arcsec = 0.05
    if fr.wcs is not None:
        try:
            scale_arcsec = float(np.mean([q.to_value("arcsec") for q in fr.wcs.proj_plane_pixel_scales()]))
        except Exception:  # a WCS without celestial units
            pass
    prov = fr.provenance or {}
    hdr = fr.header
    inst = str(prov.get("instrument") or (hdr.get("INSTRUME") if hdr is not None else "") or "")
    det = str(prov.get("detector") or (hdr.get("DETECTOR") if hdr is not None else "") or "")
    if not inst:  # HAP products name the instrument and detector in the file name (hst_..._wfc3_uvis_...)
        low = path.name.lower()
        inst, det = next(((i, d) for (i, d) in TABULATED_FWHM_ARCSEC if f"_{i.lower()}_{d.lower()}_" in low), ("", ""))
    return frame_from_array(fr.data, name=name or path.name, group=group, pixel_scale=scale_arcsec,
                            valid=np.asarray(fr.mask) & np.isfinite(fr.data), instrument=inst, detector=det,
                            origin=str(path), scale=scale, max_size=max_size)


def is_held_out(path: str | Path, *, field: str | None = None) -> bool:
    """True for data training must not use: any band of a field this evaluation measures on."""
    name = Path(path).name
    if field is not None and field in HELD_OUT_SAMPLE_FIELDS:
        return True
    if any(name.startswith(p) for p in HELD_OUT_REAL_PREFIXES):
        return True
    return any(f"_{f}_" in name for f in HELD_OUT_SAMPLE_FIELDS) and name.startswith("hst_sample_")


def default_frames(*, cache_dir: str | Path | None = None, sample_root: str | Path | None = None,
                   shared: str | Path | None = None, scale: int = 4, max_size: int | None = 512,
                   notes: list[str] | None = None) -> list[EvalFrame]:
    """The fixed frames: the sample's held-out synthetic fields (built if needed under ``sample_root``
    or ``cache_dir``, i.e. ``Settings.cache_dir``) and the real HST frames of ``shared/data/fits``
    that are present (a missing one is noted, not an error)."""
    from astro_pipeline.config import shared_dir
    from astro_pipeline.sample import build_sample

    notes = notes if notes is not None else []
    idx = build_sample(Path(sample_root) if sample_root else None, cache_dir=Path(cache_dir) if cache_dir else None)
    frames: list[EvalFrame] = []
    for fld, filt in DEFAULT_SAMPLE_FRAMES:
        item = next((i for i in idx.items if i.field == fld and i.filter == filt and i.kind == "science"), None)
        if item is None:
            notes.append(f"sample frame {fld} {filt} not in the sample; skipped")
            continue
        frames.append(load_frame(idx.root / item.path, name=f"sample {fld} {filt}", group=f"sample:{fld}",
                                 scale=scale, max_size=max_size))
    base = Path(shared) if shared else shared_dir() / "data" / "fits"
    for rel in DEFAULT_REAL_FRAMES:
        p = base / rel
        if not p.is_file():
            notes.append(f"real frame {rel} absent under {base}; skipped")
            continue
        group = next(pref for pref in HELD_OUT_REAL_PREFIXES if p.name.startswith(pref)).rstrip("_")
        frames.append(load_frame(p, name=p.name.split("__", 1)[-1].split(".fits")[0], group=group, scale=scale,
                                 max_size=max_size))
    return frames


def dev_frames(*, shared: str | Path | None = None, scale: int = 4, max_size: int | None = 512,
               notes: list[str] | None = None) -> list[EvalFrame]:
    """The dev frames (:data:`DEV_REAL_FRAMES` that are present): where a recipe is tuned against
    completeness, false detections and flux, so the fixed frames stay unseen until the gate."""
    from astro_pipeline.config import shared_dir

    notes = notes if notes is not None else []
    base = Path(shared) if shared else shared_dir() / "data" / "fits"
    frames: list[EvalFrame] = []
    for rel in DEV_REAL_FRAMES:
        p = base / rel
        if is_held_out(p):
            raise ValueError(f"dev frame {rel} is one the evaluation holds out")
        if not p.is_file():
            notes.append(f"dev frame {rel} absent under {base}; skipped")
            continue
        frames.append(load_frame(p, name=p.name.split("__", 1)[-1].split(".fits")[0], scale=scale, max_size=max_size))
    return frames


# ---------------------------------------------------------------------------------------------
# Injection, degradation, detection


@dataclass(frozen=True)
class SourceEvalConfig:
    """The fixed protocol. Change it and the numbers are no longer comparable with the cards'."""

    scale: int = 4
    snr_edges: tuple[float, ...] = (3.0, 5.0, 10.0, 20.0, 50.0, 100.0)
    per_bin: int = 8  # sources per flux bin, per frame and realisation
    realisations: int = 5
    seed: int = 19
    threshold_sigma: float = 3.0  # on the matched-filtered image, in units of its own sky sigma
    npixels: int = 5  # connected pixels above the threshold (output pixels)
    match_fwhm: float = 1.5  # match radius in PSF FWHMs (at least half a low-resolution pixel)
    aperture_fwhm: float = 2.5  # wide enough for a bicubic output's broader profile
    annulus_fwhm: tuple[float, float] = (4.0, 6.0)
    min_separation_fwhm: float = 12.0  # between injected sources
    avoid_fwhm: float = 3.0  # margin around the frame's own detected segments
    stretch: str = "zscale+asinh"
    bkg_box: int = 32
    clip_loss: float = 0.01  # a source is "clipped" when the display cuts more than this share of its true flux

    def bin_labels(self) -> list[str]:
        e = self.snr_edges
        return [f"{e[i]:g}-{e[i + 1]:g}" for i in range(len(e) - 1)]


@dataclass
class Injection:
    truth: np.ndarray  # frame + sources (float64)
    sources: np.ndarray  # noiseless sources alone
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    snr: np.ndarray
    bin: np.ndarray


@dataclass
class Detections:
    x: np.ndarray
    y: np.ndarray
    sigma: float
    residual: np.ndarray  # background-subtracted image
    segments: np.ndarray | None = None  # segmentation map (0 = sky)


def detect(image: np.ndarray, *, fwhm: float, threshold_sigma: float, npixels: int = 5, box: int = 32,
           deblend: bool = True) -> Detections:
    """Segmentation of ``image`` minus its 2D background, filtered by a Gaussian of ``fwhm``:
    segments of >= ``npixels`` pixels above ``threshold_sigma`` x the filtered image's sky sigma,
    deblended as SExtractor does by default (32 levels, contrast 0.005); positions are the
    segments' centroids on the unfiltered residual."""
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources, make_2dgaussian_kernel
    from scipy.signal import fftconvolve

    img = np.asarray(image, dtype=np.float64)
    resid = img - _background(img, box)
    size = 2 * int(math.ceil(1.5 * fwhm)) + 1
    kernel = np.asarray(make_2dgaussian_kernel(fwhm, size=size).array, dtype=np.float64)
    conv = fftconvolve(resid, kernel / kernel.sum(), mode="same")
    sigma = _sky_sigma(conv)
    with _quiet():
        seg = detect_sources(conv, threshold_sigma * sigma, npixels) if sigma > 0 else None
        if seg is not None and deblend:
            seg = deblend_sources(conv, seg, npixels, n_levels=32, contrast=0.005, progress_bar=False)
    if seg is None:
        return Detections(np.zeros(0), np.zeros(0), sigma, resid, np.zeros(img.shape, np.int32))
    cat = SourceCatalog(resid, seg, convolved_data=conv)
    x, y = np.asarray(cat.x_centroid, float), np.asarray(cat.y_centroid, float)
    ok = np.isfinite(x) & np.isfinite(y)
    return Detections(x[ok], y[ok], sigma, resid, np.asarray(seg.data))


def _place(rng: np.random.Generator, shape: tuple[int, int], n: int, *, margin: float, min_sep: float,
           forbidden: np.ndarray | None, tries: int = 400) -> np.ndarray:
    """Up to ``n`` random sub-pixel positions ``margin`` from the edges, ``min_sep`` apart, off ``forbidden``."""
    h, w = shape
    out: list[tuple[float, float]] = []
    for _ in range(n):
        for _ in range(tries):
            x, y = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
            if out and np.min(np.hypot(np.asarray(out)[:, 0] - x, np.asarray(out)[:, 1] - y)) < min_sep:
                continue
            if forbidden is not None and forbidden[int(y), int(x)]:
                continue
            out.append((x, y))
            break
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def _forbidden(det: Detections, radius: float) -> np.ndarray | None:
    """The frame's own segments grown by ``radius`` pixels: injected sources keep off them."""
    if det.segments is None:
        return None
    from scipy.ndimage import binary_dilation

    r = max(1, int(math.ceil(radius)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return binary_dilation(det.segments > 0, structure=(xx**2 + yy**2) <= r * r)


def inject(frame: EvalFrame, rng: np.random.Generator, cfg: SourceEvalConfig, *,
           forbidden: np.ndarray | None = None) -> Injection:
    """Point sources at random sub-pixel positions, ``cfg.per_bin`` per S/N bin, fluxes log-uniform
    in each bin of the low-resolution optimal S/N ``F / (scale^2 sigma sqrt(NEA))``, NEA taken at
    each source's own position on the binned grid."""
    psf, s = frame.psf, cfg.scale
    nbins = len(cfg.snr_edges) - 1
    margin = cfg.annulus_fwhm[1] * psf.fwhm + 2 * s
    xy = _place(rng, frame.data.shape, nbins * cfg.per_bin, margin=margin, min_sep=cfg.min_separation_fwhm * psf.fwhm,
                forbidden=forbidden)
    n = len(xy)
    bins = np.repeat(np.arange(nbins), cfg.per_bin)[:n]
    rng.shuffle(bins)
    lo, hi = np.asarray(cfg.snr_edges[:-1])[bins], np.asarray(cfg.snr_edges[1:])[bins]
    snr = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    flux = snr * s * s * frame.sigma * np.sqrt([nea_at(psf, s, frame.data.shape, x, y) for x, y in xy])
    src = psf.render(frame.data.shape, xy[:, 0], xy[:, 1], flux)
    return Injection(truth=frame.data.astype(np.float64) + src, sources=src, x=xy[:, 0], y=xy[:, 1], flux=flux,
                     snr=snr, bin=bins)


def nea_at(psf: MoffatPSF, scale: int, shape: tuple[int, int], x: float, y: float) -> float:
    """Noise-equivalent area (1 / sum p^2, binned pixels) of a source at ``(x, y)`` on the binned
    grid: the S/N of a flux depends on where it falls within a low-resolution pixel."""
    half = int(math.ceil(8 * psf.fwhm / scale)) + 2
    by, bx = int(y) // scale, int(x) // scale
    y0, x0 = max(by - half, 0) * scale, max(bx - half, 0) * scale
    y1, x1 = min((by + half + 1) * scale, shape[0]), min((bx + half + 1) * scale, shape[1])
    stamp = psf.render((y1 - y0, x1 - x0), [x - x0], [y - y0], [1.0])
    h, w = stamp.shape[0] // scale * scale, stamp.shape[1] // scale * scale
    p = stamp[:h, :w].reshape(h // scale, scale, w // scale, scale).sum(axis=(1, 3))
    p = p / p.sum()
    return 1.0 / float((p**2).sum())


def block_mean(image: np.ndarray, scale: int) -> np.ndarray:
    """Mean of each ``scale x scale`` block (float64): what a coarser detector pixel integrates."""
    h, w = image.shape
    return np.asarray(image).reshape(h // scale, scale, w // scale, scale).mean(axis=(1, 3), dtype=np.float64)


def degrade(truth: np.ndarray, sigma: float, rng: np.random.Generator, *, scale: int = 4, box: int = 32) -> np.ndarray:
    """Block-average by ``scale``, then add Gaussian noise that brings the sky back to ``sigma``
    per pixel (the binned sky is measured, so correlated noise is handled)."""
    lr = block_mean(truth, scale)
    have = sky_sigma(lr, box=max(8, box // scale))
    add = math.sqrt(max(sigma**2 - have**2, 0.0))
    return (lr + rng.normal(0.0, add, lr.shape)).astype(np.float32)


def _bicubic(display: np.ndarray, scale: int) -> np.ndarray:
    import torch
    from torch.nn import functional as F

    x = torch.from_numpy(np.ascontiguousarray(display, dtype=np.float32))[None, None]
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)[0, 0].clamp(0, 1).numpy()


def as_sr_function(spec: SRFunction | Any | str | Path, *, weights_dir: str | Path | None = None) -> SRFunction:
    """An SR callable from a callable, an :class:`~astro_pipeline.inference.Engine`, or weights
    (a name in the weights folder or a path; run by an fp32 engine, tiles as the sweep cuts them)."""
    from astro_pipeline.inference import Engine, upscale_display

    if isinstance(spec, (str, Path)):
        from astro_pipeline.models.registry import load_weights

        model, meta = load_weights(spec, weights_dir=weights_dir)
        if meta.task != "superres":
            raise ValueError(f"{spec}: these are {meta.task!r} weights, not superres")
        spec = Engine(model, meta, device="cpu", precision="fp32", batch_size=1)
    if isinstance(spec, Engine):
        engine = spec
        return lambda d: upscale_display(engine, d)
    if callable(spec):
        return spec
    raise TypeError(f"not an SR callable, engine or weights: {spec!r}")


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass
class _Acc:
    """Counts of one method in one realisation, pooled over frames."""

    injected: np.ndarray
    recovered: np.ndarray
    false: int = 0
    area: float = 0.0
    ratios: list[float] = field(default_factory=list)
    ratios_all: list[float] = field(default_factory=list)
    clipped: int = 0
    centroid: list[float] = field(default_factory=list)

    def summary(self, labels: list[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, lab in enumerate(labels):
            out[f"completeness_{lab}"] = float(self.recovered[i] / self.injected[i]) if self.injected[i] else math.nan
        r = np.asarray(self.ratios)
        ra = np.asarray(self.ratios_all)
        out["false_per_arcmin2"] = self.false / self.area if self.area else math.nan
        out["flux_ratio_median"] = float(np.median(r)) if len(r) else math.nan
        out["flux_ratio_scatter"] = float(np.subtract(*np.percentile(r, [84, 16])) / 2) if len(r) > 1 else math.nan
        out["flux_ratio_median_all"] = float(np.median(ra)) if len(ra) else math.nan
        out["clipped_fraction"] = self.clipped / len(ra) if len(ra) else math.nan
        out["centroid_err_px"] = float(np.median(self.centroid)) if self.centroid else math.nan
        out["recovered"] = float(self.recovered.sum())
        return out


def _aperture_flux(image: np.ndarray, x: np.ndarray, y: np.ndarray, cfg: SourceEvalConfig, fwhm: float) -> np.ndarray:
    """Aperture sums at ``(x, y)`` minus the sigma-clipped annulus median times the aperture area
    (local background only: a 2D background mesh would absorb part of faint sources' wings)."""
    from astropy.stats import SigmaClip
    from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry

    pos = np.column_stack([x, y])
    ap = CircularAperture(pos, r=cfg.aperture_fwhm * fwhm)
    ann = CircularAnnulus(pos, r_in=cfg.annulus_fwhm[0] * fwhm, r_out=cfg.annulus_fwhm[1] * fwhm)
    img = np.asarray(image, dtype=np.float64)
    raw = np.asarray(aperture_photometry(img, ap)["aperture_sum"], dtype=np.float64)
    bkg = np.asarray(ApertureStats(img, ann, sigma_clip=SigmaClip(sigma=3.0)).median, dtype=np.float64)
    return raw - np.nan_to_num(bkg) * ap.area


def _score(acc: _Acc, image: np.ndarray, det: Detections, inj: Injection, truth_det: Detections, expected: np.ndarray,
           clipped: np.ndarray, cfg: SourceEvalConfig, frame: EvalFrame, *, is_truth: bool) -> list[dict[str, Any]]:
    from scipy.spatial import cKDTree

    fwhm = frame.psf.fwhm
    r_match = max(cfg.match_fwhm * fwhm, cfg.scale / 2)
    inj_xy = np.column_stack([inj.x, inj.y])
    det_xy = np.column_stack([det.x, det.y])
    rec = np.zeros(len(inj_xy), bool)
    cen = np.full(len(inj_xy), np.nan)
    if len(det_xy) and len(inj_xy):
        d, _ = cKDTree(det_xy).query(inj_xy)
        rec = d <= r_match
        cen = np.where(rec, d, np.nan)
    np.add.at(acc.injected, inj.bin, 1)
    np.add.at(acc.recovered, inj.bin[rec], 1)
    acc.area += frame.area_arcmin2
    if not is_truth and len(det_xy):
        real = np.vstack([inj_xy, np.column_stack([truth_det.x, truth_det.y])])
        d, _ = cKDTree(real).query(det_xy)
        acc.false += int((d > r_match).sum())
    meas = _aperture_flux(image, inj.x, inj.y, cfg, fwhm) if len(inj_xy) else np.zeros(0)
    ratio = meas / expected
    acc.ratios_all += ratio[rec].tolist()
    acc.ratios += ratio[rec & ~clipped].tolist()
    acc.clipped += int((rec & clipped).sum())
    acc.centroid += cen[rec].tolist()
    return [{"snr": float(inj.snr[i]), "bin": int(inj.bin[i]), "expected": float(expected[i]), "measured": float(meas[i]),
             "recovered": bool(rec[i]), "clipped": bool(clipped[i])} for i in range(len(inj_xy))]


def _clipped(inj: Injection, lr: np.ndarray, vmax: float, cfg: SourceEvalConfig, fwhm: float) -> np.ndarray:
    """Sources a display product cannot carry: the input's peak at or above the stretch's upper limit
    ``vmax``, or more than ``cfg.clip_loss`` of the source's flux above ``vmax`` in the truth itself
    (in the aperture). The display cuts those cores whatever the method, a perfect 4x product included;
    an input-peak rule alone misses the sharper cores a 4x product must show."""
    from photutils.aperture import CircularAperture, aperture_photometry

    if not len(inj.x):
        return np.zeros(0, bool)
    s = cfg.scale
    li = np.clip(np.floor(inj.y / s).astype(int), 0, lr.shape[0] - 1)
    lj = np.clip(np.floor(inj.x / s).astype(int), 0, lr.shape[1] - 1)
    h, w = lr.shape
    lr_peak = np.max([lr[np.clip(li + dy, 0, h - 1), np.clip(lj + dx, 0, w - 1)] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    ap = CircularAperture(np.column_stack([inj.x, inj.y]), r=cfg.aperture_fwhm * fwhm)
    above = np.asarray(aperture_photometry(np.maximum(inj.truth - vmax, 0.0), ap)["aperture_sum"], dtype=np.float64)
    return (lr_peak >= vmax) | (above > cfg.clip_loss * np.asarray(inj.flux, dtype=np.float64))


def _stable_seed(text: str) -> int:
    return zlib.crc32(text.encode())


def evaluate_sources(
    methods: Mapping[str, SRFunction | Any | str | Path],
    *,
    frames: Sequence[EvalFrame] | None = None,
    cache_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    config: SourceEvalConfig | None = None,
    flux_products: bool = True,
    notes: list[str] | None = None,
) -> SourceEvalReport:
    """Score each SR method (name -> callable, Engine, or weights name/path under ``weights_dir``)
    beside bicubic on ``frames`` (default: :func:`default_frames`, whose sample lives under
    ``cache_dir``) and the fixed realisations. ``truth`` is the reference; ``<name>+flux`` rows are
    the flux-conserving products (by construction; not evidence)."""
    from astro_pipeline.ingest.frame import Frame
    from astro_pipeline.ingest.stretch import apply_stretch, compute_stretch
    from astro_pipeline.products.process import flux_conserving_product, invert_stretch

    cfg = config or SourceEvalConfig()
    notes = list(notes or [])
    if frames is None:
        if cache_dir is None:
            raise TypeError("evaluate_sources needs frames or the cache folder (Settings.cache_dir) for the sample")
        frames = default_frames(cache_dir=cache_dir, scale=cfg.scale, notes=notes)
    if not frames:
        raise ValueError("source-level evaluation: no frames")
    fns = {name: as_sr_function(spec, weights_dir=weights_dir) for name, spec in methods.items()}
    reserved = {"truth", DISPLAY_TRUTH, "bicubic"} & set(fns)
    if reserved:
        raise ValueError(f"{', '.join(sorted(reserved))}: reserved method names")
    names = ["truth", DISPLAY_TRUTH, "bicubic", *fns, *([f"{n}+flux" for n in fns] if flux_products else [])]
    labels = cfg.bin_labels()
    nb = len(labels)
    accs = {m: [_Acc(np.zeros(nb, int), np.zeros(nb, int)) for _ in range(cfg.realisations)] for m in names}
    records: list[dict[str, Any]] = []
    s = cfg.scale
    for frame in frames:
        base = detect(frame.data, fwhm=frame.psf.fwhm, threshold_sigma=cfg.threshold_sigma, npixels=cfg.npixels,
                      box=cfg.bkg_box)
        forbidden = _forbidden(base, cfg.avoid_fwhm * frame.psf.fwhm)
        placed: list[int] = []
        for r in range(cfg.realisations):
            rng = np.random.default_rng([cfg.seed, _stable_seed(frame.name), r])
            inj = inject(frame, rng, cfg, forbidden=forbidden)
            placed.append(len(inj.x))
            lr = degrade(inj.truth, frame.sigma, rng, scale=s, box=cfg.bkg_box)
            lr_frame = Frame(data=lr, mask=np.ones(lr.shape, bool), source_path=Path(frame.name), source_sha256="",
                             format="fits")
            stretch = compute_stretch(lr_frame, cfg.stretch)
            disp = apply_stretch(lr, stretch)
            clipped = _clipped(inj, lr, stretch.vmax, cfg, frame.psf.fwhm)
            outputs: dict[str, np.ndarray] = {"bicubic": invert_stretch(_bicubic(disp, s), stretch),
                                              DISPLAY_TRUTH: invert_stretch(apply_stretch(inj.truth, stretch), stretch)}
            for n, fn in fns.items():
                out = np.asarray(fn(disp), dtype=np.float32)
                if out.shape[:2] != (lr.shape[0] * s, lr.shape[1] * s):
                    raise ValueError(f"{n}: output {out.shape} is not {s}x the input {lr.shape}")
                out = np.clip(out, 0.0, 1.0)
                outputs[n] = invert_stretch(out.mean(axis=-1) if out.ndim == 3 else out, stretch)
                if flux_products:
                    outputs[f"{n}+flux"] = flux_conserving_product(out, lr_frame, stretch, s)
            truth_det = detect(inj.truth, fwhm=frame.psf.fwhm, threshold_sigma=cfg.threshold_sigma, npixels=cfg.npixels,
                               box=cfg.bkg_box)
            expected = _aperture_flux(inj.sources, inj.x, inj.y, cfg, frame.psf.fwhm)
            for m in names:
                det = truth_det if m == "truth" else detect(outputs[m], fwhm=frame.psf.fwhm, npixels=cfg.npixels,
                                                            threshold_sigma=cfg.threshold_sigma, box=cfg.bkg_box)
                img = inj.truth if m == "truth" else outputs[m]
                for rec in _score(accs[m][r], img, det, inj, truth_det, expected, clipped, cfg, frame, is_truth=m == "truth"):
                    records.append({"method": m, "frame": frame.name, "realisation": r, **rec})
            log.info("source eval: %s realisation %d done", frame.name, r)
        want = (len(cfg.snr_edges) - 1) * cfg.per_bin
        if min(placed) < want:
            notes.append(f"{frame.name}: {min(placed)}-{max(placed)} of {want} sources per realisation fit off the frame's "
                         "own sources (completeness counts the placed ones)")
    per_real = {m: [a.summary(labels) for a in accs[m]] for m in names}
    return SourceEvalReport(config=cfg, frames=[f.describe() for f in frames], methods=names, per_realisation=per_real,
                            sources=records, notes=notes)


# ---------------------------------------------------------------------------------------------
# The result


@dataclass
class SourceEvalReport:
    """Per-method, per-realisation metrics, the per-source records and the protocol that made them."""

    config: SourceEvalConfig
    frames: list[dict[str, Any]]
    methods: list[str]
    per_realisation: dict[str, list[dict[str, float]]]
    sources: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def metric_names(self) -> list[str]:
        return [f"completeness_{b}" for b in self.config.bin_labels()] + list(METRICS)

    def interval(self, method: str, metric: str) -> tuple[float, float, float]:
        """(mean, min, max) across realisations (NaN where undefined)."""
        vals = np.asarray([r[metric] for r in self.per_realisation[method]], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        if not len(vals):
            return (math.nan, math.nan, math.nan)
        return (float(vals.mean()), float(vals.min()), float(vals.max()))

    def summary(self, method: str) -> dict[str, float]:
        """Means across realisations of every metric."""
        return {k: self.interval(method, k)[0] for k in self.metric_names()}

    def metrics_for(self, name: str, baseline: str = "bicubic") -> dict[str, Any]:
        """What goes into weights metadata and the science gate: ``sources`` (the model) and
        ``sources:<baseline>``, means across realisations plus the protocol's shape."""
        if name not in self.per_realisation:
            raise KeyError(f"{name!r} was not evaluated (have: {', '.join(self.methods)})")
        proto = {"realisations": self.config.realisations, "frames": len(self.frames), "per_bin": self.config.per_bin,
                 "threshold_sigma": self.config.threshold_sigma, "bins": self.config.bin_labels()}
        return {"sources": {**self.summary(name), **proto}, f"sources:{baseline}": {**self.summary(baseline), **proto}}

    def to_dict(self) -> dict[str, Any]:
        """Everything the report section needs (no per-source records), JSON-ready: it goes into
        the evaluation's ``report.json`` so the section can be re-rendered without evaluating."""
        return {"config": dataclasses.asdict(self.config), "frames": self.frames, "methods": self.methods,
                "per_realisation": self.per_realisation, "notes": self.notes}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SourceEvalReport:
        """The report back from :meth:`to_dict` (without per-source records)."""
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in raw["config"].items()}
        cfg.setdefault("clip_loss", math.inf)  # saved before the truth's clipped flux counted: the input-peak rule alone
        return cls(config=SourceEvalConfig(**cfg), frames=list(raw["frames"]), methods=list(raw["methods"]),
                   per_realisation={m: [dict(r) for r in v] for m, v in raw["per_realisation"].items()},
                   notes=list(raw.get("notes", [])))

    def rows(self) -> list[dict[str, Any]]:
        """Long table: one row per (method, metric) with mean, min and max across realisations."""
        out = []
        for m in self.methods:
            for k in self.metric_names():
                mean, lo, hi = self.interval(m, k)
                out.append({"method": m, "metric": k, "mean": mean, "min": lo, "max": hi,
                            "evidence": not m.endswith("+flux") and m not in ("truth", DISPLAY_TRUTH)})
        return out


def _f(v: float, nd: int = 3) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{nd}f}"


def _cell(rep: SourceEvalReport, m: str, k: str, nd: int = 2, pct: bool = False) -> str:
    mean, lo, hi = rep.interval(m, k)
    if not math.isfinite(mean):
        return "-"
    mul = 100.0 if pct else 1.0
    return f"{mean * mul:.{nd}f} [{lo * mul:.{nd}f}, {hi * mul:.{nd}f}]"


def verdict_dict(verdict: Any) -> dict[str, Any]:
    """A science-gate verdict (:class:`~astro_pipeline.training.promote.ScienceVerdict` or its dict) as a dict."""
    if isinstance(verdict, Mapping):
        return dict(verdict)
    if dataclasses.is_dataclass(verdict) and not isinstance(verdict, type):
        return dataclasses.asdict(verdict)
    raise TypeError(f"not a science-gate verdict: {verdict!r}")


def report_summary(rep: SourceEvalReport, *, verdicts: Mapping[str, Any] | None = None,
                   figure: str | None = None) -> dict[str, Any]:
    """What the evaluation report keeps of a source-level run (``EvalReport.sources``, in report.json)."""
    return {**rep.to_dict(), "verdicts": {n: verdict_dict(v) for n, v in (verdicts or {}).items()}, "figure": figure}


def summary_section(summary: Mapping[str, Any]) -> list[str]:
    """The report section from a :func:`report_summary` (as read back from report.json)."""
    lines = report_section(SourceEvalReport.from_dict(summary), verdicts=summary.get("verdicts") or None,
                           figure=summary.get("figure"))
    while lines and not lines[-1]:
        lines.pop()
    return lines


def report_section(rep: SourceEvalReport, *, verdicts: Mapping[str, Any] | None = None, figure: str | None = None) -> list[str]:
    """Markdown lines of the source-level table (and gate verdicts) for the evaluation report."""
    cfg = rep.config
    labels = cfg.bin_labels()
    lines = ["## Source level: point sources injected, 4x degraded, reconstructed, detected", "",
             f"{len(rep.frames)} linear frames x {cfg.realisations} seeded realisations, {cfg.per_bin} sources per S/N bin per "
             f"frame and realisation (S/N of the optimal measurement in the {cfg.scale}x-binned input, sky sigma of the frame); "
             f"segmentation at {cfg.threshold_sigma:g} sky sigma of each matched-filtered image, >= {cfg.npixels} pixels; match radius {cfg.match_fwhm:g} FWHM; aperture "
             f"{cfg.aperture_fwhm:g} FWHM, annulus {cfg.annulus_fwhm[0]:g}-{cfg.annulus_fwhm[1]:g} FWHM. Each cell: mean "
             "[min, max] across realisations. `truth` is the reference (detections on the native frame); `+flux` rows are the "
             "flux-conserving products, which keep block means by construction and are not evidence.", "",
             "| method | " + " | ".join(f"completeness {b} (%)" for b in labels)
             + " | false / arcmin^2 | flux ratio median | flux ratio scatter | flux ratio all | clipped (%) | centroid err (px) |",
             "|---" * (len(labels) + 7) + "|"]
    for m in rep.methods:
        cells = [_cell(rep, m, f"completeness_{b}", 1, pct=True) for b in labels]
        cells += ["-" if m == "truth" else _cell(rep, m, "false_per_arcmin2", 1), _cell(rep, m, "flux_ratio_median", 3),
                  _cell(rep, m, "flux_ratio_scatter", 3), _cell(rep, m, "flux_ratio_median_all", 3),
                  _cell(rep, m, "clipped_fraction", 1, pct=True), _cell(rep, m, "centroid_err_px", 2)]
        name = f"{m} (not evidence)" if m.endswith("+flux") else m
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Flux ratio: aperture flux of recovered injected sources over that of the noiseless injected source, "
              + (f"for sources a display product can carry (the input's peak below the display stretch's upper limit, and at most "
                 f"{cfg.clip_loss:.0%} of the truth's own flux above it)" if math.isfinite(cfg.clip_loss) else
                 "for sources whose low-resolution peak is below the display stretch's upper limit")
              + "; `flux ratio all` includes the clipped ones (their cores "
              "are cut at the ZScale limit in every display product, bicubic and `display-truth` included). `display-truth` is "
              "the truth through the same display: the best a display product can score, a reference, not evidence.", "",
              "Frames:", "", "| frame | origin | size | sky sigma | arcsec/px | PSF FWHM (px) | beta | PSF from |",
              "|---|---|---|---|---|---|---|---|"]
    for f in rep.frames:
        lines.append(f"| {f['name']} | {Path(f['origin']).name} | {f['shape'][1]}x{f['shape'][0]} | {f['sigma']:.3g} | "
                     f"{f['pixel_scale']:.3f} | {f['psf_fwhm']:.2f} | {f['psf_beta']:.2f} | {f['psf_source']} |")
    if verdicts:
        lines += ["", "### Science gate (completeness >= bicubic - 2 points in every bin; false detections <= bicubic + 10%; "
                  "median flux ratio within 5% of 1)", "", "| model | check | value | threshold | met |", "|---|---|---|---|---|"]
        for name, v in verdicts.items():
            d = verdict_dict(v)
            for c in d["checks"]:
                lines.append(f"| {name} | {c['check']} | {_f(c['value'])} | {_f(c['threshold'])} | {'yes' if c['met'] else 'NO'} |")
            head = "not evaluated" if d["passed"] is None else "PASS" if d["passed"] else "FAIL"
            lines.append(f"| {name} | **verdict** | | | **{head}** |")
    if figure:
        lines += ["", f"![injected against recovered]({figure})"]
    if rep.notes:
        lines += ["", *[f"- {n}" for n in rep.notes]]
    return lines + [""]


def plot_injected_recovered(rep: SourceEvalReport, path: Path, *, methods: Sequence[str] | None = None) -> Path:
    """Two panels: recovered against injected aperture flux (recovered sources, all realisations;
    hollow markers where the input was clipped), and completeness against S/N bin with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(methods or [m for m in rep.methods if not m.endswith("+flux")])
    colours = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.4))
    rows = rep.sources
    for m in methods:
        mine = [r for r in rows if r["method"] == m and r["recovered"] and r["expected"] > 0 and r["measured"] > 0]
        for clipped, face in ((False, colours[m]), (True, "none")):
            sel = [r for r in mine if r["clipped"] == clipped]
            if sel:
                a1.scatter([r["snr"] for r in sel], [r["snr"] * r["measured"] / r["expected"] for r in sel], s=9,
                           alpha=0.55, edgecolors=colours[m], facecolors=face, linewidths=0.6,
                           label=f"{m}" + (" (input clipped)" if clipped else ""))
    edges = rep.config.snr_edges
    lim = [edges[0] * 0.8, edges[-1] * 1.2]
    a1.plot(lim, lim, "k--", lw=0.8, label="1:1")
    for ax in (a1,):
        ax.set_xscale("log")
        ax.set_yscale("log")
    a1.set_xlabel("injected S/N in the low-resolution input")
    a1.set_ylabel("recovered: injected S/N x aperture-flux ratio")
    a1.set_title("recovered against injected (recovered sources, all frames)")
    a1.legend(fontsize=6, loc="upper left")
    labels = rep.config.bin_labels()
    mids = [math.sqrt(rep.config.snr_edges[i] * rep.config.snr_edges[i + 1]) for i in range(len(labels))]
    for k, m in enumerate(methods):
        iv = [rep.interval(m, f"completeness_{b}") for b in labels]
        x = [v * (1 + 0.04 * (k - len(methods) / 2)) for v in mids]
        mean = [100 * v[0] for v in iv]
        err = [[100 * (v[0] - v[1]) for v in iv], [100 * (v[2] - v[0]) for v in iv]]
        a2.errorbar(x, mean, yerr=err, marker="o", ms=4, capsize=2, color=colours[m], label=m)
    a2.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    for ax in (a1, a2):
        ax.xaxis.set_major_locator(FixedLocator(list(edges)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{e:g}" for e in edges]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    a2.set_xlabel("injected S/N in the low-resolution input (bin centre)")
    a2.set_ylabel("completeness (%)")
    a2.set_ylim(-3, 103)
    a2.set_title(f"completeness, mean and range over {rep.config.realisations} realisations")
    a2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_source_report(rep: SourceEvalReport, out_dir: str | Path, *, verdicts: Mapping[str, Any] | None = None) -> list[Path]:
    """``sources.md`` (the section alone), ``sources.csv`` (method, metric, mean, min, max) and the
    figure ``sources_injected_recovered.png`` under ``out_dir``."""
    out = Path(out_dir)
    fig = plot_injected_recovered(rep, out / "sources_injected_recovered.png")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["method", "metric", "mean", "min", "max", "evidence"])
    w.writeheader()
    for r in rep.rows():
        w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    csv_path = atomic_write_bytes(out / "sources.csv", buf.getvalue().encode())
    md = ["# Source-level evaluation of 4x super-resolution", "",
          *report_section(rep, verdicts=verdicts, figure=fig.name)]
    md_path = atomic_write_bytes(out / "sources.md", "\n".join(md).encode())
    rep.files += [md_path, csv_path, fig]
    return [md_path, csv_path, fig]


def candidate_source_metrics(name: str, weights: str | Path | SRFunction | Any, *,
                             frames: Sequence[EvalFrame] | None = None, cache_dir: str | Path | None = None,
                             config: SourceEvalConfig | None = None) -> dict[str, Any]:
    """The ``sources`` / ``sources:bicubic`` metrics of one SR candidate on the fixed protocol,
    ready to merge into the metrics the promotion gate reads."""
    rep = evaluate_sources({name: weights}, frames=frames, cache_dir=cache_dir, config=config, flux_products=False)
    return rep.metrics_for(name)
