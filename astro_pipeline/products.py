"""Products of colorize / upscale / enhance: PNG, 16-bit TIFF, FITS with WCS, linear-flux FITS.

Why: a model output is only useful with its provenance and geometry. :func:`process_file` reads
one input file (every frame in it), assesses quality, stretches, runs the engines, and writes
under ``output_dir`` mirroring the input's path relative to ``input_root`` (``_<hdu>`` suffixes
for multi-frame files). Every file is written atomically and labelled as an AI-generated
visualisation, not for photometry, except the flux-conserving FITS. A bad file never raises:
it becomes a ``Product(status="error")`` naming the file and the problem.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AI_LABEL",
    "FLUX_LABEL",
    "PNG_MAX_SIDE",
    "Product",
    "ProductFile",
    "atomic_write",
    "output_stem",
    "process_file",
    "scale_wcs",
    "write_lupton_composites",
]

AI_LABEL = "AI-generated visualisation, not for photometry"
FLUX_LABEL = "AI-upscaled linear image, flux-conserving: 4x4 block means equal the input pixels"
PNG_MAX_SIDE = 8192
OPERATIONS = ("colorize", "upscale", "enhance")
_SUFFIXES = (".fits.gz", ".fit.gz", ".fts.gz", ".fits.bz2", ".fit.bz2", ".fits.fz", ".fit.fz",
             ".fits", ".fit", ".fts", ".fz", ".tiff", ".tif", ".png", ".jpeg", ".jpg")


@dataclass
class ProductFile:
    """One written file: absolute path and sha256 of its bytes."""

    path: Path
    sha256: str


@dataclass
class Product:
    """Everything one input frame produced (or why it failed): the manifest/catalog row source."""

    run_id: str | None
    source_path: str
    source_sha256: str
    hdu: int | None
    plane: int | None
    frame_key: str
    operation: str
    status: str  # "ok" | "error"
    error: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    flags: list[dict[str, Any]] = field(default_factory=list)
    stretch: dict[str, Any] | None = None
    models: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    tile_count: int = 0
    files: dict[str, ProductFile] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = {k: {"path": str(v.path), "sha256": v.sha256} for k, v in self.files.items()}
        return d


# ---------------------------------------------------------------------------------------------
# Small helpers


def atomic_write(path: Path, writer: Callable[[Path], None]) -> ProductFile:
    """Write a product file atomically (:func:`astro_pipeline.fileio.atomic_write`); its path and sha256."""
    from astro_pipeline.fileio import atomic_write as write_atomically
    from astro_pipeline.fileio import sha256_file

    written = write_atomically(path, writer)
    return ProductFile(path=written.resolve(), sha256=sha256_file(written))


def _strip_suffix(name: str) -> str:
    low = name.lower()
    for s in _SUFFIXES:
        if low.endswith(s) and len(name) > len(s):
            return name[: -len(s)]
    return Path(name).stem or name


def output_stem(source: Path, *, input_root: Path | None, output_dir: Path, suffix: str = "") -> Path:
    """``output_dir / <source relative to input_root without extension><suffix>`` (no extension)."""
    source = Path(source)
    rel_parent = Path()
    if input_root is not None:
        try:
            rel_parent = source.resolve().parent.relative_to(Path(input_root).resolve())
        except ValueError:
            rel_parent = Path()
    return Path(output_dir) / rel_parent / (_strip_suffix(source.name) + suffix)


def _to_uint(img: np.ndarray, dtype: type) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.rint(np.clip(img, 0.0, 1.0) * top).astype(dtype)


def _preview(img: np.ndarray, max_side: int = PNG_MAX_SIDE) -> np.ndarray:
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


def _json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


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


def _wcs_header(wcs: Any | None, scale: int) -> Any:
    from astropy.io import fits

    if wcs is None:
        return fits.Header()
    w = scale_wcs(wcs, scale)
    return w.to_header(relax=True)


# ---------------------------------------------------------------------------------------------
# Writers


def _provenance_text(prov: dict[str, Any]) -> str:
    return json.dumps(_json_safe(prov), sort_keys=True)


def _write_png(path: Path, img: np.ndarray, meta: dict[str, Any], label: str) -> ProductFile:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    arr = _preview(img)
    info = PngInfo()
    info.add_text("Description", label)
    info.add_text("Software", "astro-pipeline")
    info.add_text("Comment", _provenance_text(meta))
    if meta.get("credit"):
        info.add_text("Copyright", f"{meta.get('credit')}; {meta.get('license') or ''}".strip("; "))
    mode = "RGB" if arr.ndim == 3 else "L"
    return atomic_write(path, lambda tmp: Image.fromarray(arr, mode=mode).save(tmp, format="PNG", pnginfo=info))


def _write_tiff(path: Path, img: np.ndarray, meta: dict[str, Any], label: str) -> ProductFile:
    import tifffile

    arr = _to_uint(np.asarray(img), np.uint16)
    desc = json.dumps({"label": label, "provenance": _json_safe(meta)}, sort_keys=True)
    photometric = "rgb" if arr.ndim == 3 else "minisblack"
    return atomic_write(
        path,
        lambda tmp: tifffile.imwrite(tmp, arr, photometric=photometric, description=desc, software="astro-pipeline", metadata=None),
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

    hdr = _wcs_header(wcs, scale)
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


def _write_fits_cube(path: Path, img: np.ndarray, meta: dict[str, Any], *, wcs: Any | None, scale: int,
                     label: str, operation: str) -> ProductFile:
    from astropy.io import fits

    hdr = _fits_header(meta, wcs=wcs, scale=scale, label=label, operation=operation)
    cube = np.ascontiguousarray(np.moveaxis(np.asarray(img, dtype=np.float32), -1, 0)) if img.ndim == 3 else np.asarray(img, np.float32)
    if cube.ndim == 3:
        hdr["CNAME3"] = ("RGB", "axis 3: R, G, B display planes in [0, 1]")
    hdu = fits.PrimaryHDU(cube, header=hdr)
    return atomic_write(path, lambda tmp: hdu.writeto(tmp, overwrite=True, output_verify="silentfix"))


def _write_flux_fits(path: Path, flux: np.ndarray, meta: dict[str, Any], *, wcs: Any | None, scale: int,
                     bunit: str | None) -> ProductFile:
    from astropy.io import fits

    hdr = _fits_header(meta, wcs=wcs, scale=scale, label=FLUX_LABEL, operation="upscale-flux")
    if bunit:
        hdr["BUNIT"] = (bunit, "same unit as the input")
    hdr["FLUXCONS"] = (True, "4x4 block means equal the input pixels")
    hdu = fits.PrimaryHDU(np.asarray(flux, dtype=np.float32), header=hdr)
    return atomic_write(path, lambda tmp: hdu.writeto(tmp, overwrite=True, output_verify="silentfix"))


# ---------------------------------------------------------------------------------------------
# Linear flux from the SR output


def invert_stretch(display: np.ndarray, stretch: Any) -> np.ndarray:
    """Linear values whose stretch is ``display`` (monotone inversion of ``apply_stretch`` on a fine grid)."""
    from astro_pipeline.ingest.stretch import apply_stretch

    lo, hi = float(stretch.vmin), float(stretch.vmax)
    grid = np.linspace(lo, hi, 8193)
    ys = apply_stretch(grid.astype(np.float32), stretch).astype(np.float64)
    ys = np.maximum.accumulate(ys)
    keep = np.concatenate([[True], np.diff(ys) > 0])
    return np.interp(np.asarray(display, dtype=np.float64), ys[keep], grid[keep]).astype(np.float32)


def flux_conserving_product(sr_display: np.ndarray, frame: Any, stretch: Any, scale: int) -> np.ndarray:
    """Linear-unit 4x image: the SR detail (display -> linear) shifted per block so that each
    ``scale x scale`` block mean equals the input pixel; invalid input pixels stay NaN."""
    import torch

    from astro_pipeline.models.superres import flux_conserving

    grey = sr_display.mean(axis=-1) if sr_display.ndim == 3 else sr_display
    guess = invert_stretch(grey, stretch)
    valid = np.asarray(frame.mask) & np.isfinite(frame.data)
    lr = np.where(valid, frame.data, 0.0).astype(np.float32)
    with torch.inference_mode():
        out = flux_conserving(torch.from_numpy(guess)[None, None], torch.from_numpy(lr)[None, None], scale=scale)
    res = out[0, 0].numpy().astype(np.float32)
    if not valid.all():
        res[~np.repeat(np.repeat(valid, scale, axis=0), scale, axis=1)] = np.nan
    return res


# ---------------------------------------------------------------------------------------------
# Processing one file


def _model_info(engine: Any) -> dict[str, Any]:
    m = engine.meta
    return {"name": m.name, "version": m.version, "sha256": getattr(m, "sha256", "") or "", "arch": m.arch}


def _error_product(path: Path, operation: str, message: str, *, run_id: str | None, sha: str = "",
                   frame: Any | None = None) -> Product:
    return Product(
        run_id=run_id,
        source_path=str(path),
        source_sha256=sha,
        hdu=getattr(frame, "hdu", None),
        plane=getattr(frame, "plane", None),
        frame_key=frame.key if frame is not None else str(path),
        operation=operation,
        status="error",
        error=message,
        provenance=dict(getattr(frame, "provenance", {}) or {}),
    )


def _lightness_error(rgb: np.ndarray, lightness_in: np.ndarray) -> float:
    from astro_pipeline.color import lightness

    worst = 0.0
    for y0 in range(0, rgb.shape[0], 512):
        d = np.abs(lightness(rgb[y0 : y0 + 512].astype(np.float64)) - lightness_in[y0 : y0 + 512])
        worst = max(worst, float(d.max(initial=0.0)))
    return worst


def process_file(
    path: Path | str,
    *,
    operation: str,
    output_dir: Path | str,
    input_root: Path | str | None = None,
    colorizer: Any | None = None,
    upscaler: Any | None = None,
    settings: Any | None = None,
    run_id: str | None = None,
    on_tiles: Callable[[int], None] | None = None,
) -> list[Product]:
    """Process every frame of one input file; returns one Product per frame (or one error Product)."""
    from astro_pipeline.ingest.frame import IngestError
    from astro_pipeline.ingest.readers import read_frames

    path = Path(path)
    output_dir = Path(output_dir)
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; use one of {OPERATIONS}")
    if operation in ("colorize", "enhance") and colorizer is None:
        raise ValueError(f"{operation} needs a colorizer engine")
    if operation in ("upscale", "enhance") and upscaler is None:
        raise ValueError(f"{operation} needs an upscaler engine")
    try:
        frames = read_frames(path, max_image_pixels=getattr(settings, "max_image_pixels", None))
    except IngestError as exc:
        return [_error_product(path, operation, str(exc), run_id=run_id)]
    except Exception as exc:  # noqa: BLE001 - never a traceback for a bad file
        return [_error_product(path, operation, f"{path}: {type(exc).__name__}: {exc}", run_id=run_id)]
    products = []
    for frame in frames:
        try:
            products.append(
                _process_frame(frame, path=path, operation=operation, output_dir=output_dir,
                               input_root=Path(input_root) if input_root else path.parent,
                               colorizer=colorizer, upscaler=upscaler, run_id=run_id, on_tiles=on_tiles)
            )
        except MemoryError:
            products.append(_error_product(path, operation, f"{frame.key}: not enough memory to process this frame",
                                           run_id=run_id, sha=frame.source_sha256, frame=frame))
        except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the others
            msg = " ".join(str(exc).split())[:500]
            products.append(_error_product(path, operation, f"{frame.key}: {type(exc).__name__}: {msg}",
                                           run_id=run_id, sha=frame.source_sha256, frame=frame))
    return products


def _process_frame(frame: Any, *, path: Path, operation: str, output_dir: Path, input_root: Path,
                   colorizer: Any | None, upscaler: Any | None, run_id: str | None,
                   on_tiles: Callable[[int], None] | None) -> Product:
    from astro_pipeline.color import lightness, lightness_from_grey
    from astro_pipeline.inference import colorize_lightness, upscale_display
    from astro_pipeline.ingest.quality import assess
    from astro_pipeline.ingest.stretch import display_image

    stem = output_stem(path, input_root=input_root, output_dir=output_dir, suffix=frame.suffix)
    if any(stem.with_name(stem.name + ext).resolve() == path.resolve() for ext in (".png", ".tif", ".fits")):
        raise ValueError(f"the product {stem}.* would overwrite the input; choose another --output")
    quality = assess(frame)
    disp, stretch = display_image(frame)
    metrics: dict[str, Any] = {f"quality_{k}": v for k, v in quality.metrics.items()}
    params: dict[str, Any] = {"operation": operation}
    models: list[dict[str, Any]] = []
    tiles = 0
    scale = 1
    t0 = time.perf_counter()

    result = disp
    if operation in ("colorize", "enhance"):
        L = lightness(disp) if disp.ndim == 3 else lightness_from_grey(disp)
        result = colorize_lightness(colorizer, L)
        metrics["lightness_max_abs_error"] = _lightness_error(result, L)
        tiles += colorizer.stats.tiles
        models.append(_model_info(colorizer))
        params["colorizer"] = colorizer.describe()
        if on_tiles:
            on_tiles(colorizer.stats.tiles)
    colorized = result if operation == "enhance" else None  # kept: curators compare it with the 4x product
    if operation in ("upscale", "enhance"):
        result = upscale_display(upscaler, result)
        scale = upscaler.scale
        tiles += upscaler.stats.tiles
        models.append(_model_info(upscaler))
        params["upscaler"] = upscaler.describe()
        if on_tiles:
            on_tiles(upscaler.stats.tiles)
    if result.ndim == 2:
        result = np.repeat(result[..., None], 3, axis=-1)
    metrics["inference_seconds"] = round(time.perf_counter() - t0, 4)
    metrics["output_height"], metrics["output_width"] = int(result.shape[0]), int(result.shape[1])

    prov = dict(frame.provenance or {})
    prov.setdefault("credit", None)
    prov.setdefault("license", None)
    meta = {
        "label": AI_LABEL,
        "operation": operation,
        "source_name": path.name,
        "source_path": str(path),
        "source_sha256": frame.source_sha256,
        "hdu": frame.hdu,
        "plane": frame.plane,
        "provenance": prov,
        "stretch": stretch.as_dict(),
        "models": models,
        "credit": prov.get("credit"),
        "license": prov.get("license"),
    }
    files: dict[str, ProductFile] = {}
    files["png"] = _write_png(stem.with_name(stem.name + ".png"), result, meta, AI_LABEL)
    files["tif"] = _write_tiff(stem.with_name(stem.name + ".tif"), result, meta, AI_LABEL)
    if colorized is not None:
        files["colorized"] = _write_png(stem.with_name(stem.name + "_color.png"), colorized,
                                        dict(meta, operation="colorize"), AI_LABEL)
    if frame.format == "fits":
        files["fits"] = _write_fits_cube(stem.with_name(stem.name + ".fits"), result, meta, wcs=frame.wcs,
                                         scale=scale, label=AI_LABEL, operation=operation)
        if operation == "upscale" and not frame.is_display:
            flux = flux_conserving_product(result, frame, stretch, scale)
            bunit = prov.get("bunit") or (frame.header.get("BUNIT") if frame.header is not None else None)
            flux_meta = dict(meta, label=FLUX_LABEL)
            files["fits_flux"] = _write_flux_fits(stem.with_name(stem.name + "_flux.fits"), flux, flux_meta,
                                                  wcs=frame.wcs, scale=scale, bunit=bunit)
            blocks = flux.reshape(frame.shape[0], scale, frame.shape[1], scale).mean(axis=(1, 3))
            valid = np.asarray(frame.mask) & np.isfinite(frame.data)
            if valid.any():
                metrics["flux_block_max_abs_error"] = float(np.abs(blocks[valid] - frame.data[valid]).max())
    return Product(
        run_id=run_id,
        source_path=str(path),
        source_sha256=frame.source_sha256,
        hdu=frame.hdu,
        plane=frame.plane,
        frame_key=frame.key,
        operation=operation,
        status="ok",
        error=None,
        provenance=_json_safe(prov),
        metrics=_json_safe(metrics),
        flags=[f.as_dict() for f in quality.flags],
        stretch=stretch.as_dict(),
        models=models,
        params=_json_safe(params),
        tile_count=tiles,
        files=files,
    )


# ---------------------------------------------------------------------------------------------
# Classical baseline: Lupton RGB composites of three filters of one field

_FILTER_RE = re.compile(r"(?i)(?<![a-z0-9])(f\d{3,4}(?:w|m|n|lp|x|w2)?)(?![a-z0-9])")


def filter_of(product: Product) -> str | None:
    """The filter of a FITS product: from the header provenance, else from the file name."""
    f = (product.provenance or {}).get("filter")
    if f and str(f).strip().upper() not in ("", "CLEAR", "CLEAR1L", "CLEAR2L", "CLEAR2S", "N/A"):
        return str(f).strip().upper()
    m = _FILTER_RE.search(Path(product.source_path).name.replace("_", " "))
    return m.group(1).upper() if m else None


def _wavelength(filt: str) -> float:
    m = re.search(r"(\d{3,4})", filt)
    return float(m.group(1)) if m else math.inf


def _field_key(product: Product) -> str | None:
    prov = product.provenance or {}
    target = prov.get("target")
    if target and str(target).strip().upper() not in ("ANY", "NONE", ""):
        return f"target:{str(target).strip().upper()}"
    ra, dec = prov.get("ra"), prov.get("dec")
    if ra is None or dec is None:
        return None
    return f"pos:{round(float(ra), 3)}:{round(float(dec), 3)}"


def write_lupton_composites(products: Iterable[Product], *, output_dir: Path | str, input_root: Path | str | None = None,
                            Q: float = 8.0, stretch: float = 0.5) -> list[Path]:
    """For each field with three or more filters among the ok FITS products, write a classical
    ``make_lupton_rgb`` composite (bluest -> B, middle -> G, reddest -> R) and attach it to the
    member products as ``files["lupton"]``. Frames must share shape and pixel grid."""
    from astropy.visualization import make_lupton_rgb

    from astro_pipeline.ingest.readers import read_frames

    groups: dict[str, dict[str, Product]] = {}
    for p in products:
        if p.status != "ok" or "fits" not in p.files:
            continue
        key, filt = _field_key(p), filter_of(p)
        if key is None or filt is None:
            continue
        groups.setdefault(key, {}).setdefault(filt, p)
    written: list[Path] = []
    for key, by_filter in sorted(groups.items()):
        if len(by_filter) < 3:
            continue
        filters = sorted(by_filter, key=_wavelength)
        chosen = [filters[0], filters[len(filters) // 2], filters[-1]]
        members = [by_filter[f] for f in chosen]
        planes, wcss = [], []
        for m in members:
            frames = [f for f in read_frames(m.source_path) if f.hdu == m.hdu and f.plane == m.plane]
            if not frames:
                break
            fr = frames[0]
            data = np.where(fr.mask & np.isfinite(fr.data), fr.data, np.nan).astype(np.float64)
            med = float(np.nanmedian(data))
            top = float(np.nanpercentile(data, 99.5))
            span = top - med if top > med else 1.0
            planes.append(np.nan_to_num((data - med) / span, nan=0.0))
            wcss.append(fr.wcs)
        if len(planes) != 3 or len({p.shape for p in planes}) != 1:
            continue
        if all(w is not None for w in wcss):
            h, w_ = planes[0].shape
            ref = wcss[0].pixel_to_world(w_ / 2, h / 2)
            if any(ref.separation(wc.pixel_to_world(w_ / 2, h / 2)).arcsec > 0.5 * 3600 * abs(
                    float(wcss[0].proj_plane_pixel_scales()[0].value)) for wc in wcss[1:]):
                continue  # not on one pixel grid
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 where all three planes are 0
            rgb = make_lupton_rgb(planes[2], planes[1], planes[0], minimum=0.0, stretch=stretch, Q=Q)
        stem = output_stem(Path(members[0].source_path), input_root=input_root, output_dir=Path(output_dir))
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", key.split(":", 1)[1]) + "_" + "_".join(f.lower() for f in chosen)
        out = stem.parent / f"{name}_lupton.png"
        meta = {
            "label": "classical make_lupton_rgb composite (Lupton et al. 2004), not AI-generated",
            "filters": {"R": chosen[2], "G": chosen[1], "B": chosen[0]},
            "Q": Q,
            "stretch": stretch,
            "sources": [{"path": m.source_path, "sha256": m.source_sha256, "hdu": m.hdu} for m in members],
        }
        pf = _write_png(out, rgb.astype(np.float32) / 255.0, meta, meta["label"])
        for m in members:
            m.files["lupton"] = pf
        written.append(pf.path)
    return written
