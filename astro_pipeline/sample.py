"""The built-in sample: deterministic, offline HST-like archive content.

What it holds (``build_sample(cache_dir=...)``; ``mini=True`` for a small version used by heavy tests):

* ``mast/<field>/*_drz.fits``: synthetic drizzled ACS/WFC frames (PRIMARY + SCI + WHT) of
  galaxy fields at real positions (M101, M51, NGC 1300) in F435W/F606W/F814W: a bulge + spiral
  disc with arms, dust and star-forming knots, background galaxies (Sersic profiles) and PSF stars,
  on sky with Poisson and read noise, a zero-weight border off the rotated footprint, and headers
  with the usual HST keywords and a TAN WCS with a CD matrix.
* ``mast/<field>/*_drz.fits`` of two multi-grid fields, observed on grids of their own (the same
  synthetic sky sampled through each frame's WCS): ``m83`` with ACS/WFC F435W and F606W
  (0.05"/px) and WFC3/IR F160W (0.13"/px, rotated 73 degrees and shifted), whose filters come
  from two instruments; and ``ngc4414``, exactly two filters, ACS/WFC F606W and F814W from two
  visits at orientations 46 degrees apart. Aligning these needs reprojection (``fields``).
* ``mast/hdf/*_drz.fits``: scikit-image's bundled Hubble Deep Field (NASA, public domain) split
  into WFPC2 F450W/F606W/F814W frames at the HDF-N position (full sample only).
* ``mast/qa/*``: one frame per quality flag (noisy, mostly_blank, saturated in an ``_flt.fits``
  with SCI/ERR/DQ, cosmic_rays, low_signal), each listing the flag it must raise.
* ``esahubble/heic99NNx.{jpg,tif}``: colour release images (Lupton composites of the synthetic
  fields and Hubble Deep Field crops) with title, credit, licence and release id.

The same content feeds the archive replica and the sample sweep. Output is cached under
``Settings.cache_dir/sample-<version>[-mini]`` and reused when complete. ``index.json`` lists
every item (see :class:`SampleItem`). Run ``python -m astro_pipeline.sample OUTDIR [--mini]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astro_pipeline.fileio import atomic_write, sha256_file

__all__ = ["SAMPLE_VERSION", "SampleIndex", "SampleItem", "build_sample", "load_sample"]

#: Bump when the generated content changes (it names the cache folder).
SAMPLE_VERSION = "2"

_LICENSE = "CC BY 4.0"
_SYNTH_CREDIT = "astro-pipeline synthetic sample (layout after NASA/ESA Hubble products)"
_HDF_CREDIT = "R. Williams (STScI), the Hubble Deep Field Team and NASA (scikit-image sample data)"


@dataclass
class SampleItem:
    """One file of the sample, with the archive metadata the replicas serve."""

    archive: str
    id: str
    path: str
    kind: str
    field: str
    ra: float
    dec: float
    target: str
    instrument: str
    filter: str
    exptime: float
    date_obs: str
    proposal_id: str
    obsid: str
    title: str
    credit: str
    license: str
    release: str
    expected_flags: list[str] = field(default_factory=list)
    size: int = 0
    sha256: str = ""


@dataclass
class SampleIndex:
    """The sample's items, rooted at ``root`` (item paths are relative to it)."""

    root: Path
    items: list[SampleItem]

    def by_archive(self, archive: str) -> list[SampleItem]:
        return [i for i in self.items if i.archive == archive]

    def fields(self) -> dict[str, list[SampleItem]]:
        out: dict[str, list[SampleItem]] = {}
        for i in self.items:
            out.setdefault(i.field, []).append(i)
        return out

    def path_of(self, item: SampleItem) -> Path:
        """Absolute path of an item's file."""
        return self.root / item.path

    def get(self, item_id: str) -> SampleItem:
        for i in self.items:
            if i.id == item_id:
                return i
        raise KeyError(item_id)


# --------------------------------------------------------------------------------------------
# Field specifications
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _FieldSpec:
    name: str
    target: str
    targname: str
    ra: float
    dec: float
    proposal: str
    date: str
    orient: float  # position angle of the image +y axis, degrees E of N
    seed: int
    sky: tuple[float, float, float]  # e-/s/pixel in F435W, F606W, F814W
    exptime: tuple[float, float, float]
    fill: str  # "nan" or "zero": SCI value off the footprint
    galaxy: dict[str, float]


_FILTERS = ("F435W", "F606W", "F814W")
_ACS_SCALE = 0.05  # arcsec/pixel of drizzled ACS/WFC
_FIELDS = (
    _FieldSpec("m101", "M101", "NGC5457", 210.802429, 54.34875, "9490", "2002-11-13", 35.0, 101,
               (0.035, 0.11, 0.09), (900.0, 720.0, 720.0), "nan",
               dict(incl_q=0.92, pa=20.0, arms=2, pitch=18.0, bulge=0.35, knots=70, dust=0.35)),
    _FieldSpec("m51", "M51", "NGC5194", 202.469575, 47.195258, "10452", "2005-01-20", 62.0, 51,
               (0.03, 0.10, 0.085), (2720.0, 1360.0, 1360.0), "zero",
               dict(incl_q=0.85, pa=-30.0, arms=2, pitch=15.0, bulge=0.5, knots=90, dust=0.5)),
    _FieldSpec("ngc1300", "NGC1300", "NGC1300", 49.920813, -19.411114, "10342", "2004-09-11", 110.0, 1300,
               (0.04, 0.12, 0.10), (1650.0, 1000.0, 1000.0), "nan",
               dict(incl_q=0.7, pa=75.0, arms=2, pitch=22.0, bulge=0.7, knots=45, dust=0.25)),
)
@dataclass(frozen=True)
class _GridFrame:
    """One frame of a multi-grid field: instrument, filter and its own grid."""

    instrument: str  # "ACS/WFC" | "WFC3/IR"
    filt: str
    scale: float  # arcsec/pixel
    orient: float  # degrees E of N
    offset: tuple[float, float]  # pointing offset from the field centre, arcsec (east, north)
    side: float  # frame side relative to the field's ACS side
    exptime: float
    sky: float  # e-/s/pixel
    visit: str


#: Multi-grid fields: the galaxy (``_FieldSpec`` with its seed) and the frames that observe it.
_GRID_FIELDS = (
    (_FieldSpec("m83", "M83", "NGC5236", 204.253958, -29.865417, "11360", "2009-08-26", 40.0, 83,
                (0.035, 0.11, 0.09), (1200.0, 1000.0, 1000.0), "nan",
                dict(incl_q=0.9, pa=50.0, arms=2, pitch=20.0, bulge=0.6, knots=80, dust=0.4)),
     (_GridFrame("ACS/WFC", "F435W", 0.05, 40.0, (0.0, 0.0), 1.0, 1200.0, 0.035, "01"),
      _GridFrame("ACS/WFC", "F606W", 0.05, 40.0, (0.0, 0.0), 1.0, 1000.0, 0.11, "01"),
      _GridFrame("WFC3/IR", "F160W", 0.13, 113.0, (0.45, -0.3), 1.15, 1600.0, 0.6, "02"))),
    (_FieldSpec("ngc4414", "NGC4414", "NGC4414", 186.612917, 31.223528, "9293", "2003-05-14", 12.0, 4414,
                (0.03, 0.10, 0.085), (800.0, 900.0, 1100.0), "nan",
                dict(incl_q=0.55, pa=-20.0, arms=3, pitch=25.0, bulge=0.8, knots=40, dust=0.55)),
     (_GridFrame("ACS/WFC", "F606W", 0.05, 12.0, (0.0, 0.0), 1.0, 900.0, 0.10, "01"),
      _GridFrame("ACS/WFC", "F814W", 0.05, 58.0, (0.35, 0.25), 1.0, 1100.0, 0.085, "02"))),
)

_HDF = dict(field="hdf", target="HDF-N", targname="HDF", ra=189.2058333, dec=62.2161111, proposal="6337",
            date="1995-12-18", filters=("F450W", "F606W", "F814W"), exptime=(120600.0, 109050.0, 123600.0))

# Colour of each component in (F435W, F606W, F814W) relative flux.
_COLORS = {"bulge": (0.35, 0.8, 1.0), "disk": (0.7, 0.95, 1.0), "knot": (1.0, 0.6, 0.35)}


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def _sersic_b(n: float) -> float:
    return 2.0 * n - 1.0 / 3.0 + 0.009876 / n


def _stamp(img: np.ndarray, y: float, x: float, half: int, fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
           weights: np.ndarray, out: list[np.ndarray]) -> None:
    """Evaluate ``fn(dy, dx)`` on a window around (y, x) and add it, scaled, to each image in ``out``."""
    h, w = img.shape
    y0, y1 = max(int(y) - half, 0), min(int(y) + half + 1, h)
    x0, x1 = max(int(x) - half, 0), min(int(x) + half + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    prof = fn(yy - y, xx - x)
    for o, wgt in zip(out, weights, strict=True):
        o[y0:y1, x0:x1] += (wgt * prof).astype(np.float32)


def _psf(fwhm: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Unit-flux Moffat (beta 3) PSF."""
    beta = 3.0
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    norm = (beta - 1.0) / (math.pi * alpha**2)
    return lambda dy, dx: norm * (1.0 + (dy**2 + dx**2) / alpha**2) ** (-beta)


def _sersic(re: float, n: float, q: float, pa_deg: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    c, s = math.cos(math.radians(pa_deg)), math.sin(math.radians(pa_deg))
    b = _sersic_b(n)

    def fn(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        u = dx * c + dy * s
        v = (-dx * s + dy * c) / q
        r = np.sqrt(u**2 + v**2 + 0.25)
        return np.exp(-b * ((r / re) ** (1.0 / n) - 1.0))

    return fn


def _render_field(spec: _FieldSpec, size: int, *, galaxy_scale: float = 1.0, n_bg: int | None = None,
                  n_stars: int | None = None, rng: np.random.Generator) -> list[np.ndarray]:
    """Noiseless model images (e-/s/pixel above sky) in the three filters."""
    imgs = [np.zeros((size, size), np.float32) for _ in _FILTERS]
    g = spec.galaxy
    cy = cx = (size - 1) / 2.0 + rng.uniform(-0.05, 0.05) * size
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c, s = math.cos(math.radians(g["pa"])), math.sin(math.radians(g["pa"]))
    u = (xx - cx) * c + (yy - cy) * s
    v = (-(xx - cx) * s + (yy - cy) * c) / g["incl_q"]
    r = np.sqrt(u**2 + v**2) + 0.5
    theta = np.arctan2(v, u)
    scale = size / 512.0 * galaxy_scale
    h_disk = 90.0 * scale
    re_bulge = 14.0 * scale
    tan_p = math.tan(math.radians(g["pitch"]))
    phase = theta - np.log(r / (5.0 * scale + 1.0)) / tan_p
    arms = 0.5 * (1.0 + np.cos(g["arms"] * phase))
    disk = np.exp(-r / h_disk) * (0.25 + 1.5 * arms**3)
    dust = 1.0 - g["dust"] * (0.5 * (1.0 + np.cos(g["arms"] * phase - 0.6))) ** 8 * np.exp(-r / (2.5 * h_disk))
    bulge = np.exp(-_sersic_b(4.0) * (((r / re_bulge) ** 0.25) - 1.0))
    for f in range(3):
        extinction = dust ** (1.6 - 0.5 * f)  # dust lanes are darker in the blue
        imgs[f] += (
            (2.5 * disk * _COLORS["disk"][f] + g["bulge"] * 0.08 * bulge * _COLORS["bulge"][f]) * extinction
        ).astype(np.float32)
    # star-forming knots along the arms (blue)
    n_knots = int(g["knots"] * (size / 512.0) ** 1.2)
    for _ in range(n_knots):
        rad = rng.uniform(0.3, 2.2) * h_disk
        arm = rng.integers(0, int(g["arms"]))
        th = math.log(rad / (5.0 * scale + 1.0)) / tan_p + 2.0 * math.pi * arm / g["arms"] + rng.normal(0, 0.3)
        rad *= rng.uniform(0.85, 1.15)
        ku, kv = rad * math.cos(th), rad * math.sin(th) * g["incl_q"]
        kx, ky = cx + ku * c - kv * s, cy + ku * s + kv * c
        flux = rng.lognormal(2.0, 0.6) * scale**2
        width = rng.uniform(1.2, 2.8) * max(scale, 0.4)
        prof = lambda dy, dx, w=width: np.exp(-(dy**2 + dx**2) / (2 * w * w)) / (2 * math.pi * w * w)  # noqa: E731
        _stamp(imgs[0], ky, kx, int(4 * width) + 2, prof, flux * np.array(_COLORS["knot"]), imgs)
    # background galaxies
    for _ in range(n_bg if n_bg is not None else int(30 * (size / 512.0) ** 2) + 3):
        y, x = rng.uniform(0, size, 2)
        n = rng.choice([1.0, 1.0, 2.0, 4.0])
        re = rng.uniform(1.5, 7.0)
        red = rng.uniform(0.2, 1.0)
        col = np.array([1.0 - 0.7 * red, 0.9, 0.6 + 0.6 * red])
        _stamp(imgs[0], y, x, int(6 * re) + 3, _sersic(re, n, rng.uniform(0.3, 1.0), rng.uniform(0, 180)),
               rng.lognormal(-0.5, 0.7) * col, imgs)
    # stars
    psf = _psf(2.1)
    for _ in range(n_stars if n_stars is not None else int(35 * (size / 512.0) ** 2) + 3):
        y, x = rng.uniform(0, size, 2)
        temp = rng.uniform(0, 1)
        col = np.array([0.4 + 0.8 * temp, 0.9, 1.2 - 0.6 * temp])
        _stamp(imgs[0], y, x, 12, psf, rng.lognormal(3.0, 1.2) * col, imgs)
    return imgs


def _observe(model: np.ndarray, sky: float, exptime: float, rng: np.random.Generator,
             read_noise: float = 5.0, n_exp: int = 2) -> np.ndarray:
    """Sky-subtracted e-/s image with Poisson and read noise of ``n_exp`` combined exposures."""
    electrons = np.clip((model + sky) * exptime, 0, None)
    counts = rng.poisson(electrons).astype(np.float64)
    counts += rng.normal(0.0, read_noise * math.sqrt(n_exp), model.shape)
    return ((counts / exptime) - sky).astype(np.float32)


def _footprint(size: int, angle_deg: float, frac: float = 1.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """True inside a rotated square footprint (drizzled products have zero weight outside it)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c0 = (size - 1) / 2.0
    a = math.radians(angle_deg)
    u = (xx - c0) * math.cos(a) + (yy - c0) * math.sin(a)
    v = -(xx - c0) * math.sin(a) + (yy - c0) * math.cos(a)
    half = 0.5 * size * frac
    return (np.abs(u) <= half) & (np.abs(v) <= half)


# --------------------------------------------------------------------------------------------
# FITS writing
# --------------------------------------------------------------------------------------------
def _wcs_cards(size: int, ra: float, dec: float, orient: float, scale_arcsec: float) -> dict[str, Any]:
    cd = scale_arcsec / 3600.0
    a = math.radians(orient)
    return {
        "WCSAXES": 2, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
        "CRPIX1": (size + 1) / 2.0, "CRPIX2": (size + 1) / 2.0, "CRVAL1": ra, "CRVAL2": dec,
        "CD1_1": -cd * math.cos(a), "CD1_2": cd * math.sin(a),
        "CD2_1": cd * math.sin(a), "CD2_2": cd * math.cos(a),
        "RADESYS": "ICRS", "EQUINOX": 2000.0, "ORIENTAT": orient,
    }


def _primary_header(*, instrument: str, detector: str, filt: str, rootname: str, targname: str, ra: float,
                    dec: float, exptime: float, date: str, proposal: str, filename: str, acs: bool) -> Any:
    from astropy.io import fits

    h = fits.Header()
    h["ORIGIN"] = ("astro-pipeline sample", "synthetic HST-like product")
    h["FILENAME"] = filename
    h["FILETYPE"] = "SCI"
    h["TELESCOP"] = ("HST", "telescope used to acquire data")
    h["INSTRUME"] = (instrument, "identifier for instrument used to acquire data")
    h["EQUINOX"] = 2000.0
    h["ROOTNAME"] = (rootname, "rootname of the observation set")
    h["PRIMESI"] = instrument
    h["TARGNAME"] = (targname, "proposer's target name")
    h["RA_TARG"] = (ra, "right ascension of the target (deg) (J2000)")
    h["DEC_TARG"] = (dec, "declination of the target (deg) (J2000)")
    h["PROPOSID"] = (int(proposal), "PEP proposal identifier")
    h["PR_INV_L"] = "Sample"
    h["DATE-OBS"] = (date, "UT date of start of observation (yyyy-mm-dd)")
    h["TIME-OBS"] = ("05:12:33", "UT time of start of observation (hh:mm:ss)")
    h["EXPTIME"] = (exptime, "exposure duration (seconds)--calculated")
    h["OBSTYPE"] = "IMAGING"
    h["OBSMODE"] = "ACCUM"
    h["DETECTOR"] = (detector, "detector in use")
    h["FILTER"] = (filt, "element selected from filter wheel")
    if acs:
        h["FILTER1"] = (filt if filt in ("F606W", "F814W") else "CLEAR1L", "element selected from filter wheel 1")
        h["FILTER2"] = (filt if filt not in ("F606W", "F814W") else "CLEAR2L", "element selected from filter wheel 2")
    return h


def _write_drz(path: Path, sci: np.ndarray, wht: np.ndarray, primary: Any, wcs: dict[str, Any],
               bunit: str, photflam: float) -> None:
    from astropy.io import fits

    sh = fits.Header()
    sh["BUNIT"] = (bunit, "brightness units")
    sh.update(wcs)
    sh["PHOTFLAM"] = (photflam, "inverse sensitivity, ergs/cm2/A/e-")
    sh["PHOTZPT"] = -21.1
    wh = fits.Header()
    wh.update(wcs)
    hdul = fits.HDUList([
        fits.PrimaryHDU(header=primary),
        fits.ImageHDU(sci.astype(np.float32), sh, name="SCI", ver=1),
        fits.ImageHDU(wht.astype(np.float32), wh, name="WHT", ver=1),
    ])
    atomic_write(path, lambda t: hdul.writeto(t, output_verify="silentfix"))


def _write_flt(path: Path, sci: np.ndarray, err: np.ndarray, dq: np.ndarray, primary: Any,
               wcs: dict[str, Any]) -> None:
    from astropy.io import fits

    hdus = [fits.PrimaryHDU(header=primary)]
    for name, arr, unit in (("SCI", sci.astype(np.float32), "ELECTRONS"), ("ERR", err.astype(np.float32), "ELECTRONS"),
                            ("DQ", dq.astype(np.int16), "UNITLESS")):
        h = fits.Header()
        h["BUNIT"] = unit
        h.update(wcs)
        hdus.append(fits.ImageHDU(arr, h, name=name, ver=1))
    hdul = fits.HDUList(hdus)
    atomic_write(path, lambda t: hdul.writeto(t, output_verify="silentfix"))


def _write_image(path: Path, rgb8: np.ndarray) -> None:
    if path.suffix == ".tif":
        import tifffile

        atomic_write(path, lambda t: tifffile.imwrite(t, rgb8, photometric="rgb", compression=None))
    else:
        from PIL import Image

        atomic_write(path, lambda t: Image.fromarray(rgb8, "RGB").save(t, format="JPEG", quality=92,
                                                                        subsampling=0))


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------
class _Builder:
    def __init__(self, root: Path, mini: bool) -> None:
        self.root = root
        self.mini = mini
        self.size = 128 if mini else 512
        self.items: list[SampleItem] = []
        self._obsid = 24000000
        self.composites: dict[str, np.ndarray] = {}

    def add(self, rel: str, **kw: Any) -> SampleItem:
        self._obsid += 1
        p = self.root / rel
        kw.setdefault("expected_flags", [])
        kw.setdefault("obsid", str(self._obsid))
        kw.setdefault("license", _LICENSE)
        kw.setdefault("release", "")
        item = SampleItem(path=rel, size=p.stat().st_size, sha256=sha256_file(p), **kw)
        self.items.append(item)
        return item

    # -- synthetic galaxy fields ------------------------------------------------------------
    def field(self, spec: _FieldSpec) -> None:
        rng = np.random.default_rng(spec.seed)
        size = self.size
        models = _render_field(spec, size, rng=rng)
        foot = _footprint(size, angle_deg=8.0 + spec.seed % 7, frac=1.02)
        wcs = _wcs_cards(size, spec.ra, spec.dec, spec.orient, _ACS_SCALE)
        sci_list = []
        for f, filt in enumerate(_FILTERS):
            sci = _observe(models[f], spec.sky[f], spec.exptime[f], rng)
            wht = np.where(foot, spec.exptime[f] * (0.95 + 0.05 * rng.random(sci.shape)), 0.0)
            sci = np.where(foot, sci, np.nan if spec.fill == "nan" else 0.0).astype(np.float32)
            sci_list.append(np.where(foot, sci, 0.0))
            obs_id = f"hst_sample_{spec.name}_acs_wfc_{filt.lower()}"
            rel = f"mast/{spec.name}/{obs_id}_drz.fits"
            prim = _primary_header(instrument="ACS", detector="WFC", filt=filt, rootname=obs_id,
                                   targname=spec.targname, ra=spec.ra, dec=spec.dec, exptime=spec.exptime[f],
                                   date=spec.date, proposal=spec.proposal, filename=Path(rel).name, acs=True)
            _write_drz(self.root / rel, sci, wht, prim, wcs, "ELECTRONS/S", 3.1e-19)
            self.add(rel, archive="mast", id=obs_id, kind="science", field=spec.name, ra=spec.ra, dec=spec.dec,
                     target=spec.target, instrument="ACS/WFC", filter=filt, exptime=spec.exptime[f],
                     date_obs=spec.date, proposal_id=spec.proposal,
                     title=f"{spec.target} ACS/WFC {filt} drizzled image", credit=_SYNTH_CREDIT)
        self.composites[spec.name] = _lupton(sci_list[2], sci_list[1], sci_list[0])

    # -- multi-grid fields: one synthetic sky, observed on each frame's own grid ---------------
    def grid_field(self, spec: _FieldSpec, frames: tuple[_GridFrame, ...]) -> None:
        from astropy.io import fits
        from scipy.ndimage import gaussian_filter, map_coordinates

        from astro_pipeline.fields.geometry import _quiet_wcs

        rng = np.random.default_rng(spec.seed)
        side = self.size * 3 // 4  # ACS frames of these fields: 96 px (mini) or 384 px
        master_n = int(side * 1.7)  # north-up, at the ACS scale, wide enough for every rotated frame
        master_cards = _wcs_cards(master_n, spec.ra, spec.dec, 0.0, _ACS_SCALE)
        master = _quiet_wcs(fits.Header(list(master_cards.items())))
        models = _render_field(spec, master_n, galaxy_scale=side / master_n * 1.15, rng=rng)
        # F160W: the F814W light extrapolated redwards (bulge and disc brighter, knots fainter)
        models.append(np.clip(1.5 * models[2] - 0.5 * models[1], 0.0, None).astype(np.float32))
        by_filter = {"F435W": 0, "F606W": 1, "F814W": 2, "F160W": 3}
        cosd = math.cos(math.radians(spec.dec))
        for k, fr in enumerate(frames):
            n = int(round(side * fr.side * _ACS_SCALE / fr.scale))
            ra = spec.ra + fr.offset[0] / 3600.0 / cosd
            dec = spec.dec + fr.offset[1] / 3600.0
            cards = _wcs_cards(n, ra, dec, fr.orient, fr.scale)
            wcs = _quiet_wcs(fits.Header(list(cards.items())))
            yy, xx = np.mgrid[:n, :n].astype(np.float64)
            mx, my = master.world_to_pixel_values(*wcs.pixel_to_world_values(xx, yy))
            ratio = fr.scale / _ACS_SCALE
            # the frame's pixels and (for WFC3/IR) its wider PSF, as a blur of the master sky
            sigma = math.sqrt(max(ratio**2 - 1.0, 0.0) / 12.0 + (2.2**2 if fr.instrument == "WFC3/IR" else 0.0))
            sky_model = gaussian_filter(models[by_filter[fr.filt]], sigma) if sigma > 0 else models[by_filter[fr.filt]]
            model = map_coordinates(sky_model, [my, mx], order=3, mode="constant", cval=0.0).astype(np.float32)
            model = np.clip(model, 0.0, None) * np.float32(ratio**2)  # e-/s per frame pixel
            read_noise = 15.0 if fr.instrument == "WFC3/IR" else 5.0
            sci = _observe(model, fr.sky, fr.exptime, rng, read_noise=read_noise)
            foot = _footprint(n, angle_deg=6.0 + 3 * k, frac=1.02)
            wht = np.where(foot, fr.exptime * (0.95 + 0.05 * rng.random(sci.shape)), 0.0)
            sci = np.where(foot, sci, np.nan).astype(np.float32)
            token = fr.instrument.lower().replace("/", "_")
            obs_id = f"hst_sample_{spec.name}_{fr.visit}_{token}_{fr.filt.lower()}"
            rel = f"mast/{spec.name}/{obs_id}_drz.fits"
            acs = fr.instrument.startswith("ACS")
            rootname = f"{'j' if acs else 'i'}s{spec.seed % 100:02d}{fr.visit}{k:02d}q"  # IPPPSSOOT-like, 9 characters
            prim = _primary_header(instrument=fr.instrument.split("/")[0], detector=fr.instrument.split("/")[1],
                                   filt=fr.filt, rootname=rootname, targname=spec.targname, ra=spec.ra, dec=spec.dec,
                                   exptime=fr.exptime, date=spec.date, proposal=spec.proposal,
                                   filename=Path(rel).name, acs=acs)
            photflam = {"F435W": 3.2e-19, "F606W": 7.8e-20, "F814W": 7.0e-20, "F160W": 1.9e-20}[fr.filt]
            _write_drz(self.root / rel, sci, wht, prim, cards, "ELECTRONS/S", photflam)
            self.add(rel, archive="mast", id=obs_id, kind="science", field=spec.name, ra=ra, dec=dec,
                     target=spec.target, instrument=fr.instrument, filter=fr.filt, exptime=fr.exptime,
                     date_obs=spec.date, proposal_id=spec.proposal,
                     title=f"{spec.target} {fr.instrument} {fr.filt} drizzled image (visit {fr.visit})",
                     credit=_SYNTH_CREDIT)

    # -- the Hubble Deep Field ------------------------------------------------------------------
    def hdf(self) -> None:
        from skimage.data import hubble_deep_field

        from astro_pipeline.color import srgb_to_linear

        rgb = hubble_deep_field()
        size = self.size
        y0, x0 = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
        from scipy.ndimage import gaussian_filter

        crop = srgb_to_linear(rgb[y0:y0 + size, x0:x0 + size].astype(np.float64) / 255.0)
        # The release JPEG is a display product: re-blur its sharpened compact sources to a PSF.
        crop = gaussian_filter(crop, sigma=(0.8, 0.8, 0))
        rng = np.random.default_rng(6337)
        wcs = _wcs_cards(size, _HDF["ra"], _HDF["dec"], 0.0, 0.04)
        for f, filt in enumerate(_HDF["filters"]):
            ch = 2 - f  # B -> F450W, G -> F606W, R -> F814W
            exptime = _HDF["exptime"][f]
            sci = (0.6 * crop[..., ch] + rng.normal(0.0, 0.0008, crop.shape[:2])).astype(np.float32)
            wht = np.full(sci.shape, exptime / 100.0, np.float32)
            obs_id = f"hst_sample_hdf_wfpc2_{filt.lower()}"
            rel = f"mast/hdf/{obs_id}_drz.fits"
            prim = _primary_header(instrument="WFPC2", detector="3", filt=filt, rootname=obs_id,
                                   targname=_HDF["targname"], ra=_HDF["ra"], dec=_HDF["dec"], exptime=exptime,
                                   date=_HDF["date"], proposal=_HDF["proposal"], filename=Path(rel).name, acs=False)
            prim["FILTNAM1"] = filt
            _write_drz(self.root / rel, sci, wht, prim, wcs, "COUNTS/S", 1.5e-18)
            self.add(rel, archive="mast", id=obs_id, kind="science", field="hdf", ra=_HDF["ra"], dec=_HDF["dec"],
                     target=_HDF["target"], instrument="WFPC2", filter=filt, exptime=exptime, date_obs=_HDF["date"],
                     proposal_id=_HDF["proposal"], title=f"Hubble Deep Field North WFPC2 {filt}",
                     credit=_HDF_CREDIT)

    # -- QA frames: one per flag ------------------------------------------------------------------
    def qa(self) -> None:
        size = self.size
        base = _FIELDS[0]
        wcs = _wcs_cards(size, base.ra + 0.02, base.dec + 0.01, base.orient, _ACS_SCALE)

        def prim(rootname: str, filt: str, exptime: float, rel: str) -> Any:
            return _primary_header(instrument="ACS", detector="WFC", filt=filt, rootname=rootname,
                                   targname="NGC5457-QA", ra=base.ra + 0.02, dec=base.dec + 0.01, exptime=exptime,
                                   date="2006-03-02", proposal="10918", filename=Path(rel).name, acs=True)

        def record(rel: str, rootname: str, filt: str, exptime: float, flag: str, title: str) -> None:
            self.add(rel, archive="mast", id=rootname, kind="science", field="qa", ra=base.ra + 0.02,
                     dec=base.dec + 0.01, target="M101", instrument="ACS/WFC", filter=filt, exptime=exptime,
                     date_obs="2006-03-02", proposal_id="10918", title=title, credit=_SYNTH_CREDIT,
                     expected_flags=[flag])

        def model(seed: int, galaxy_scale: float = 1.0, n_stars: int | None = None) -> np.ndarray:
            rng = np.random.default_rng(seed)
            return _render_field(base, size, galaxy_scale=galaxy_scale, n_stars=n_stars, rng=rng)[1]

        ones = np.ones((size, size), np.float32)

        # noisy: galaxy light spread at ~1.5 sigma per pixel: visible binned, grainy per pixel
        rng = np.random.default_rng(9001)
        m = model(9001, galaxy_scale=1.6, n_stars=0)
        h4 = size // 4 * 4
        binned = m[:h4, :h4].reshape(h4 // 4, 4, h4 // 4, 4).mean(axis=(1, 3))
        m = m / float(np.percentile(binned, 99.5)) * 1.8
        sci = (m + rng.normal(0.0, 1.0, m.shape)).astype(np.float32) * 0.05
        rel = "mast/qa/j9qa01nsq_drz.fits"
        _write_drz(self.root / rel, sci, ones * 30.0, prim("j9qa01nsq", "F606W", 30.0, rel), wcs, "ELECTRONS/S", 3.1e-19)
        record(rel, "j9qa01nsq", "F606W", 30.0, "noisy", "QA: short exposure, noise dominated")

        # low_signal: blank sky and very faint stars
        rng = np.random.default_rng(9002)
        sci = _observe(np.zeros((size, size), np.float32), 0.1, 400.0, rng)
        rel = "mast/qa/j9qa02lsq_drz.fits"
        _write_drz(self.root / rel, sci, ones * 400.0, prim("j9qa02lsq", "F814W", 400.0, rel), wcs, "ELECTRONS/S", 7e-20)
        record(rel, "j9qa02lsq", "F814W", 400.0, "low_signal", "QA: empty sky, nothing above the noise")

        # mostly_blank: a narrow strip of data in a mostly zero-weight frame
        rng = np.random.default_rng(9003)
        m = model(9003)
        sci = _observe(m, 0.11, 720.0, rng)
        keep = np.zeros((size, size), bool)
        keep[:, int(0.35 * size):int(0.65 * size)] = True
        sci = np.where(keep, sci, np.nan).astype(np.float32)
        rel = "mast/qa/j9qa03mbq_drz.fits"
        _write_drz(self.root / rel, sci, np.where(keep, 720.0, 0.0), prim("j9qa03mbq", "F606W", 720.0, rel), wcs,
                   "ELECTRONS/S", 3.1e-19)
        record(rel, "j9qa03mbq", "F606W", 720.0, "mostly_blank", "QA: small overlap, most of the frame empty")

        # saturated: calibrated _flt with bright stars over full well (DQ 256) and bleed columns (DQ 2048 at A/D)
        rng = np.random.default_rng(9004)
        exptime = 500.0
        m = model(9004) * exptime
        full_well = 84700.0
        psf = _psf(2.1)
        n_bright = max(2, int(6 * (size / 512.0) ** 2 + 1))
        for _ in range(n_bright):
            y, x = rng.uniform(0.15 * size, 0.85 * size, 2)
            _stamp(m, y, x, 30, psf, np.array([rng.uniform(3e7, 8e7) * (size / 512.0)]), [m])
        electrons = rng.poisson(np.clip(m + 0.1 * exptime, 0, None)).astype(np.float64) + rng.normal(0, 5.0, m.shape)
        dq = np.zeros(m.shape, np.int16)
        over = electrons > full_well
        for col in np.unique(np.nonzero(over)[1]):
            rows = np.nonzero(over[:, col])[0]
            excess = float((electrons[rows, col] - full_well).sum())
            bleed = int(min(excess / full_well / 2, 0.2 * size))
            lo, hi = max(rows.min() - bleed, 0), min(rows.max() + bleed + 1, size)
            over[lo:hi, col] = True
        electrons[over] = full_well
        dq[over] = 256
        dq[over & (rng.random(m.shape) < 0.5)] |= 2048
        err = np.sqrt(np.clip(electrons, 0, None) + 25.0)
        rel = "mast/qa/j9qa04stq_flt.fits"
        _write_flt(self.root / rel, electrons.astype(np.float32), err, dq, prim("j9qa04stq", "F814W", exptime, rel), wcs)
        record(rel, "j9qa04stq", "F814W", exptime, "saturated", "QA: saturated stars with bleed trails (DQ 256/2048)")

        # cosmic_rays: a single calibrated exposure with many CR hits
        rng = np.random.default_rng(9005)
        exptime = 400.0
        m = model(9005) * exptime
        electrons = rng.poisson(np.clip(m + 0.1 * exptime, 0, None)).astype(np.float64) + rng.normal(0, 5.0, m.shape)
        n_hits = int(0.004 * size * size / 1.6)
        for _ in range(n_hits):
            y, x = rng.integers(1, size - 1, 2)
            amp = rng.uniform(300, 5000)
            electrons[y, x] += amp
            if rng.random() < 0.4:  # short track
                dy, dx = rng.choice([-1, 0, 1], 2)
                electrons[y + dy, x + dx] += amp * rng.uniform(0.6, 1.0)
        err = np.sqrt(np.clip(electrons, 0, None) + 25.0)
        rel = "mast/qa/j9qa05crq_flt.fits"
        _write_flt(self.root / rel, electrons.astype(np.float32), err, np.zeros(m.shape, np.int16),
                   prim("j9qa05crq", "F606W", exptime, rel), wcs)
        record(rel, "j9qa05crq", "F606W", exptime, "cosmic_rays", "QA: single exposure, cosmic rays not rejected")

    # -- ESA/Hubble colour release images ------------------------------------------------------
    def colour(self, release: str, letter: str, rgb8: np.ndarray, ext: str, *, field: str, title: str,
               credit: str, ra: float, dec: float, target: str, instrument: str, date: str, proposal: str) -> None:
        img_id = f"{release}{letter}"
        rel = f"esahubble/{img_id}.{ext}"
        _write_image(self.root / rel, np.ascontiguousarray(rgb8))
        self.add(rel, archive="esahubble", id=img_id, kind="color", field=field, ra=ra, dec=dec, target=target,
                 instrument=instrument, filter="", exptime=0.0, date_obs=date, proposal_id=proposal, title=title,
                 credit=credit, release=release)

    def colours(self) -> None:
        def synth(name: str, release: str, letter: str, ext: str, what: str) -> None:
            spec = next(f for f in _FIELDS if f.name == name)
            self.colour(release, letter, self.composites[name], ext, field=name,
                        title=f"{spec.target} in colour ({what})", credit=_SYNTH_CREDIT, ra=spec.ra, dec=spec.dec,
                        target=spec.target, instrument="ACS/WFC", date=spec.date, proposal=spec.proposal)

        def hdf(letter: str, y0: int, x0: int, n: int, ext: str, what: str) -> None:
            from skimage.data import hubble_deep_field

            rgb = hubble_deep_field()[y0:y0 + n, x0:x0 + n]
            self.colour("heic9901", letter, rgb, ext, field="hdf", title=f"Hubble Deep Field North ({what})",
                        credit=_HDF_CREDIT, ra=_HDF["ra"], dec=_HDF["dec"], target=_HDF["target"], instrument="WFPC2",
                        date=_HDF["date"], proposal=_HDF["proposal"])

        synth("m101", "heic9902", "a", "jpg", "F435W/F606W/F814W composite")
        if self.mini:
            hdf("b", 40, 60, 256, "jpg", "north-west detail")
            synth("m101", "heic9902", "b", "tif", "composite, 8-bit TIFF")
            return
        from skimage.data import hubble_deep_field

        full = hubble_deep_field()
        self.colour("heic9901", "a", full, "jpg", field="hdf", title="Hubble Deep Field North", credit=_HDF_CREDIT,
                    ra=_HDF["ra"], dec=_HDF["dec"], target=_HDF["target"], instrument="WFPC2", date=_HDF["date"],
                    proposal=_HDF["proposal"])
        hdf("b", 40, 60, 512, "jpg", "north-west detail")
        hdf("c", 340, 460, 512, "tif", "south-east detail, 8-bit TIFF")
        hdf("d", 250, 300, 384, "jpg", "central galaxies")
        synth("m101", "heic9902", "b", "tif", "composite, 8-bit TIFF")
        synth("m51", "heic9903", "a", "jpg", "F435W/F606W/F814W composite")
        synth("ngc1300", "heic9904", "a", "jpg", "F435W/F606W/F814W composite")
        self.colour("heic9903", "b", np.ascontiguousarray(self.composites["m51"][::-1]), "jpg", field="m51",
                    title="M51 in colour (flipped orientation)", credit=_SYNTH_CREDIT, ra=_FIELDS[1].ra,
                    dec=_FIELDS[1].dec, target="M51", instrument="ACS/WFC", date=_FIELDS[1].date,
                    proposal=_FIELDS[1].proposal)


def _lupton(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    from astropy.visualization import make_lupton_rgb

    imgs = [np.nan_to_num(x.astype(np.float64)) for x in (r, g, b)]
    ref = max(float(np.percentile(x, 99.7)) for x in imgs) or 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return make_lupton_rgb(imgs[0] * 1.0, imgs[1] * 1.15, imgs[2] * 1.6, minimum=0.0, stretch=ref / 6.0, Q=6)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def default_root(cache_dir: Path, mini: bool = False) -> Path:
    """Where the cached sample lives: ``<cache_dir>/sample-<version>[-mini]`` (``Settings.cache_dir``)."""
    return Path(cache_dir) / f"sample-{SAMPLE_VERSION}{'-mini' if mini else ''}"


def _is_complete(root: Path, mini: bool) -> bool:
    index = root / "index.json"
    if not index.is_file():
        return False
    try:
        raw = json.loads(index.read_text())
        if raw.get("version") != SAMPLE_VERSION or bool(raw.get("mini")) != mini:
            return False
        return all((root / it["path"]).is_file() and (root / it["path"]).stat().st_size == it["size"]
                   for it in raw["items"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build_sample(root: Path | None = None, *, mini: bool = False, cache_dir: Path | None = None) -> SampleIndex:
    """Generate (or reuse) the built-in sample under ``root`` (or the cache, :func:`default_root`)."""
    if root is None and cache_dir is None:
        raise TypeError("build_sample needs a root folder or the cache folder (Settings.cache_dir)")
    root = Path(root) if root is not None else default_root(Path(cache_dir), mini)  # type: ignore[arg-type]
    if _is_complete(root, mini):
        return load_sample(root)
    root.mkdir(parents=True, exist_ok=True)
    b = _Builder(root, mini)
    for spec in _FIELDS[:1] if mini else _FIELDS:
        b.field(spec)
    for spec, frames in _GRID_FIELDS:
        b.grid_field(spec, frames)
    if not mini:
        b.hdf()
    b.qa()
    b.colours()
    payload = {"version": SAMPLE_VERSION, "mini": mini, "items": [asdict(i) for i in b.items]}
    atomic_write(root / "index.json", lambda t: t.write_text(json.dumps(payload, indent=1)))
    return SampleIndex(root=root, items=b.items)


def load_sample(root: Path) -> SampleIndex:
    """Read a sample's ``index.json``."""
    root = Path(root)
    raw = json.loads((root / "index.json").read_text())
    return SampleIndex(root=root, items=[SampleItem(**it) for it in raw["items"]])


def main(argv: list[str] | None = None) -> int:
    """``python -m astro_pipeline.sample OUTDIR [--mini]``: write the sample and print a summary."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m astro_pipeline.sample", description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path, nargs="?", help="output folder (default: the cache)")
    ap.add_argument("--mini", action="store_true", help="the small version used by heavy tests")
    args = ap.parse_args(argv)
    from astro_pipeline.config import get_settings

    idx = build_sample(args.outdir, mini=args.mini, cache_dir=get_settings().cache_dir)
    for name, items in sorted(idx.fields().items()):
        print(f"{name:8s} {len(items):3d} item(s)")
    print(f"{len(idx.items)} items under {idx.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
