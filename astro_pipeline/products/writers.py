"""Product file writers: 8-bit PNG preview, 16-bit TIFF, FITS cube with the scaled WCS, linear flux FITS.

Every file is written atomically (``fileio``) and carries its provenance: a JSON description in
PNG/TIFF metadata, FITS keywords in the cubes. The RGB cube's WCS has a third, linear axis for
its planes (``CTYPE3 = 'RGB'``: 1 R, 2 G, 3 B), so ``WCS(header).celestial`` is the sky WCS;
astropy allows SIP distortion in two dimensions only, so ``WCS(header, naxis=2)`` is the call that
works for every cube. All but the flux-conserving FITS are labelled an
AI-generated visualisation, not for photometry.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from astro_pipeline.fileio import StagedWrites
from astro_pipeline.products.types import ProductFile

__all__ = [
    "AI_LABEL",
    "FLUX_LABEL",
    "PNG_MAX_SIDE",
    "atomic_product",
    "preview",
    "scale_wcs",
    "write_fits_cube",
    "write_flux_fits",
    "write_png",
    "write_tiff",
]

AI_LABEL = "AI-generated visualisation, not for photometry"
FLUX_LABEL = "AI-upscaled linear image, flux-conserving: 4x4 block means equal the input pixels"
PNG_MAX_SIDE = 8192


def atomic_product(path: Path, writer: Callable[[Path], None], *, stage: StagedWrites | None = None) -> ProductFile:
    """Write one product file atomically (or stage it with a product's other files); its absolute path and sha256."""
    from astro_pipeline.fileio import atomic_write, sha256_file

    if stage is not None:
        tmp = stage.write(path, writer)
        return ProductFile(path=Path(path).resolve(), sha256=sha256_file(tmp))
    written = atomic_write(path, writer)
    return ProductFile(path=written.resolve(), sha256=sha256_file(written))


def _to_uint(img: np.ndarray, dtype: type) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.rint(np.clip(img, 0.0, 1.0) * top).astype(dtype)


def preview(img: np.ndarray, max_side: int = PNG_MAX_SIDE) -> np.ndarray:
    """8-bit preview no larger than ``max_side`` on a side (integer block means, band by band)."""
    h, w = img.shape[:2]
    f = max(1, math.ceil(max(h, w) / max_side))
    if f == 1:
        return _to_uint(img, np.uint8)
    ho, wo = h // f, w // f
    out = np.empty((ho, wo) + img.shape[2:], dtype=np.uint8)
    step = max(1, 1024 // f)
    for r0 in range(0, ho, step):
        r1 = min(ho, r0 + step)
        band = np.asarray(img[r0 * f : r1 * f, : wo * f], dtype=np.float32)
        band = band.reshape((r1 - r0, f, wo, f) + img.shape[2:]).mean(axis=(1, 3))
        out[r0:r1] = _to_uint(band, np.uint8)
    return out


def _json_text(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------
# WCS


def scale_wcs(wcs: Any, scale: int) -> Any:
    """A celestial WCS for an image upsampled ``scale`` times: CD (or CDELT) / s,
    CRPIX' = s*(CRPIX - 0.5) + 0.5 (4*CRPIX - 1.5 for s=4); SIP coefficients rescaled."""
    from astropy.wcs import Sip

    w = wcs.deepcopy()
    if scale == 1:
        return w
    s = float(scale)
    crpix = s * (np.asarray(w.wcs.crpix, dtype=np.float64) - 0.5) + 0.5
    w.wcs.crpix = crpix
    if w.wcs.has_cd():
        w.wcs.cd = np.asarray(w.wcs.cd) / s
    else:
        w.wcs.cdelt = np.asarray(w.wcs.cdelt) / s
    if w.sip is not None:
        def rescale(m: np.ndarray | None) -> np.ndarray | None:
            if m is None:
                return None
            p, q = np.indices(m.shape)
            return m * s ** (1.0 - p - q)

        old = w.sip
        w.sip = Sip(rescale(old.a), rescale(old.b), rescale(old.ap), rescale(old.bp), crpix)
    w.cpdis1 = w.cpdis2 = None
    w.det2im1 = w.det2im2 = None
    w.wcs.set()
    return w


# ---------------------------------------------------------------------------------------------
# Writers. ``meta`` is the product's description (label, operation, source, frame, provenance,
# stretch, models, credit and licence), embedded as it is.


def write_png(path: Path, img: np.ndarray, meta: dict[str, Any], label: str, *,
              stage: StagedWrites | None = None) -> ProductFile:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    arr = preview(img)
    info = PngInfo()
    info.add_text("Description", label)
    info.add_text("Software", "astro-pipeline")
    info.add_text("Comment", _json_text(meta))
    if meta.get("credit"):
        info.add_text("Copyright", f"{meta.get('credit')}; {meta.get('license') or ''}".strip("; "))
    mode = "RGB" if arr.ndim == 3 else "L"
    return atomic_product(path, lambda tmp: Image.fromarray(arr, mode=mode).save(tmp, format="PNG", pnginfo=info),
                          stage=stage)


def write_tiff(path: Path, img: np.ndarray, meta: dict[str, Any], label: str, *,
               stage: StagedWrites | None = None) -> ProductFile:
    import tifffile

    arr = _to_uint(np.asarray(img), np.uint16)
    desc = json.dumps({"label": label, "provenance": meta}, sort_keys=True, default=str)
    photometric = "rgb" if arr.ndim == 3 else "minisblack"
    return atomic_product(
        path,
        lambda tmp: tifffile.imwrite(tmp, arr, photometric=photometric, description=desc, software="astro-pipeline",
                                     metadata=None),
        stage=stage,
    )


_FITS_KEYS = {  # provenance key -> FITS keyword
    "target": "TARGNAME",
    "instrument": "INSTRUME",
    "telescope": "TELESCOP",
    "detector": "DETECTOR",
    "filter": "FILTER",
    "rootname": "ROOTNAME",
    "date_obs": "DATE-OBS",
    "exptime": "EXPTIME",
    "ra": "RA_CEN",
    "dec": "DEC_CEN",
}


def _fits_header(meta: dict[str, Any], *, wcs: Any | None, scale: int, label: str, operation: str) -> Any:
    from astropy.io import fits

    hdr = fits.Header() if wcs is None else scale_wcs(wcs, scale).to_header(relax=True)
    prov = meta.get("provenance", {})
    for key, kw in _FITS_KEYS.items():
        v = prov.get(key)
        if v is not None and v != "":
            hdr[kw] = v if isinstance(v, (int, float)) else str(v)[:68]
    hdr["PRODUCT"] = (operation, "astro-pipeline operation")
    hdr["LABEL"] = label[:68]
    hdr["SRCFILE"] = str(meta.get("source_name", ""))[:68]
    hdr["SRCSHA"] = str(meta.get("source_sha256", ""))[:68]
    hdr["SRCHDU"] = (-1 if meta.get("hdu") is None else int(meta["hdu"]), "source HDU (-1: none)")
    if meta.get("plane") is not None:
        hdr["SRCPLANE"] = (int(meta["plane"]), "source plane of a cube")
    hdr["SCALE"] = (int(scale), "output pixels per input pixel (per axis)")
    st = meta.get("stretch") or {}
    if st:
        hdr["STRMETH"] = (str(st.get("method")), "display stretch method")
        hdr["STRVMIN"] = (float(st.get("vmin", 0.0)), "stretch lower limit (input units)")
        hdr["STRVMAX"] = (float(st.get("vmax", 1.0)), "stretch upper limit (input units)")
        hdr["STRASINH"] = (float(st.get("asinh_a", 0.1)), "asinh softening a")
    for i, m in enumerate(meta.get("models", []), start=1):
        hdr[f"MODEL{i}"] = str(m.get("name"))[:68]
        hdr[f"MODARC{i}"] = str(m.get("arch"))[:68]
        hdr[f"MODVER{i}"] = str(m.get("version"))[:68]
        hdr[f"MODSHA{i}"] = str(m.get("sha256") or "")[:68]
    if prov.get("credit"):
        hdr["CREDIT"] = str(prov["credit"])[:68]
    if prov.get("license"):
        hdr["LICENSE"] = str(prov["license"])[:68]
    hdr["DATE"] = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "UTC time the product was written")
    hdr["ORIGIN"] = "astro-pipeline"
    hdr.add_comment(label)
    return hdr


def write_fits_cube(path: Path, img: np.ndarray, meta: dict[str, Any], *, wcs: Any | None, scale: int,
                    label: str, operation: str, cards: Mapping[str, tuple[Any, str]] | None = None,
                    stage: StagedWrites | None = None) -> ProductFile:
    """A float RGB cube (or grey image) with the (scaled) WCS and the product's keywords; ``cards``
    adds keywords of its own (``{keyword: (value, comment)}``, e.g. a composite's channels)."""
    from astropy.io import fits

    hdr = _fits_header(meta, wcs=wcs, scale=scale, label=label, operation=operation)
    for key, (value, comment) in (cards or {}).items():
        hdr[key] = (value, comment)
    arr = np.asarray(img, dtype=np.float32)
    cube = np.ascontiguousarray(np.moveaxis(arr, -1, 0)) if arr.ndim == 3 else arr
    if cube.ndim == 3 and wcs is not None:  # a third, linear WCS axis for the planes: 1 = R, 2 = G, 3 = B
        hdr["WCSAXES"] = (3, "RA, Dec and the display plane")
        hdr["CTYPE3"] = ("RGB", "display plane (not a physical axis)")
        hdr["CUNIT3"] = ("", "planes have no unit")
        hdr["CRPIX3"], hdr["CRVAL3"], hdr["CDELT3"] = 1.0, 1.0, 1.0
        hdr["CNAME3"] = ("display plane: 1 R, 2 G, 3 B", "values in [0, 1]")
        hdr.add_comment("Sky WCS: WCS(header).celestial, or WCS(header, naxis=2) (needed with SIP distortion)")
    elif cube.ndim == 3:
        hdr["CNAME3"] = ("display plane: 1 R, 2 G, 3 B", "values in [0, 1]")
    hdu = fits.PrimaryHDU(cube, header=hdr)
    return atomic_product(path, lambda tmp: hdu.writeto(tmp, overwrite=True, output_verify="silentfix"), stage=stage)


def write_flux_fits(path: Path, flux: np.ndarray, meta: dict[str, Any], *, wcs: Any | None, scale: int,
                    bunit: str | None, stage: StagedWrites | None = None) -> ProductFile:
    from astropy.io import fits

    hdr = _fits_header(meta, wcs=wcs, scale=scale, label=FLUX_LABEL, operation="upscale-flux")
    if bunit:
        hdr["BUNIT"] = (bunit, "same unit as the input")
    hdr["FLUXCONS"] = (True, "4x4 block means equal the input pixels")
    hdu = fits.PrimaryHDU(np.asarray(flux, dtype=np.float32), header=hdr)
    return atomic_product(path, lambda tmp: hdu.writeto(tmp, overwrite=True, output_verify="silentfix"), stage=stage)
