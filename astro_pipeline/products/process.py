"""Processing one input: read its frames, assess, stretch, run the engines, write the products.

Three layers, so that every caller shares the same path:

* :func:`render_frame` runs one :class:`~astro_pipeline.ingest.frame.Frame` through quality,
  stretch and the engines, in memory (:class:`Rendered`: the display image, the linear 4x flux
  image where there is one, and their records);
* :func:`save_products` names a rendered frame's files (``naming.choose_stem``: never over another
  product's file) and :func:`write_products` writes them, all or none;
* :func:`process_file` does both for every frame of a file and never raises for a bad input: a
  frame or file that fails becomes a ``Product`` with status ``error`` naming it and the problem.
  Before any pixel is read, the job's peak memory is estimated from the headers
  (``job_estimate``) and held against the memory budget (``memory.reserve``): a file over the
  budget is an error naming the estimate and the setting to change.

Recording in the catalog is ``astro_pipeline.processing``'s job, which the sweep and the CLI call.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from astro_pipeline.config import QualityThresholds
from astro_pipeline.fields.geometry import footprint_of
from astro_pipeline.fileio import StagedWrites
from astro_pipeline.ingest.frame import Frame, ImageGeometry, IngestError, QualityReport, StretchParams
from astro_pipeline.jsondata import jsonable
from astro_pipeline.memory import MemoryBudgetError, reserve
from astro_pipeline.products.claims import FileOwner, Recorded, free_for
from astro_pipeline.products.naming import choose_stem, output_stem, product_paths
from astro_pipeline.products.types import FileKind, ModelRecord, Operation, Product, ProductFile, ProductStatus
from astro_pipeline.products.writers import AI_LABEL, FLUX_LABEL, write_fits_cube, write_flux_fits, write_png, write_tiff

if TYPE_CHECKING:  # pragma: no cover
    from astro_pipeline.engines import Engines

__all__ = [
    "ProcessedInput",
    "Rendered",
    "flux_conserving_product",
    "frame_product",
    "invert_stretch",
    "process_file",
    "product_kinds",
    "save_products",
    "render_frame",
    "write_products",
]


@dataclass(kw_only=True)
class Rendered:
    """What the engines made of one frame, before anything is written."""

    operation: Operation
    image: np.ndarray  # (H', W', 3) float32 display result in [0, 1]
    colorized: np.ndarray | None  # enhance: the same-size colour step, kept for curators
    flux: np.ndarray | None  # upscale of a science frame: linear 4x image, flux-conserving
    scale: int  # output pixels per input pixel, per axis
    quality: QualityReport
    stretch: StretchParams
    models: tuple[ModelRecord, ...]
    params: dict[str, Any]
    metrics: dict[str, float]
    tiles: int


@dataclass(kw_only=True)
class ProcessedInput:
    """What one input file gave: its identity, how many frames it holds, one product per frame."""

    path: Path
    sha256: str  # "" when the file could not even be hashed (missing, unreadable)
    size: int | None
    n_frames: int | None  # frames the reader found; None when the file could not be read
    products: list[Product] = field(default_factory=list)

    @property
    def failed(self) -> list[Product]:
        return [p for p in self.products if not p.ok]


# ---------------------------------------------------------------------------------------------
# Linear flux from the SR output


def invert_stretch(display: np.ndarray, stretch: StretchParams) -> np.ndarray:
    """Linear values whose stretch is ``display`` (monotone inversion of ``apply_stretch`` on a fine grid)."""
    from astro_pipeline.ingest.stretch import apply_stretch

    lo, hi = float(stretch.vmin), float(stretch.vmax)
    grid = np.linspace(lo, hi, 8193)
    ys = apply_stretch(grid.astype(np.float32), stretch).astype(np.float64)
    ys = np.maximum.accumulate(ys)
    keep = np.concatenate([[True], np.diff(ys) > 0])
    return np.interp(np.asarray(display, dtype=np.float64), ys[keep], grid[keep]).astype(np.float32)


def flux_conserving_product(sr_display: np.ndarray, frame: Frame, stretch: StretchParams, scale: int) -> np.ndarray:
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


def _lightness_error(rgb: np.ndarray, lightness_in: np.ndarray) -> float:
    from astro_pipeline.color import lightness

    worst = 0.0
    for y0 in range(0, rgb.shape[0], 512):
        d = np.abs(lightness(rgb[y0 : y0 + 512].astype(np.float64)) - lightness_in[y0 : y0 + 512])
        worst = max(worst, float(d.max(initial=0.0)))
    return worst


# ---------------------------------------------------------------------------------------------
# One frame


def render_frame(frame: Frame, *, operation: Operation, engines: Engines, quality: QualityThresholds) -> Rendered:
    """Assess ``frame`` against ``quality``, stretch it, and run ``operation``'s engines on it."""
    from astro_pipeline.color import lightness, lightness_from_grey
    from astro_pipeline.inference import colorize_lightness, upscale_display
    from astro_pipeline.ingest.quality import assess
    from astro_pipeline.ingest.stretch import display_image

    colorizer, upscaler = engines.for_operation(operation)
    report = assess(frame, quality)
    disp, stretch = display_image(frame)
    params: dict[str, Any] = {"operation": str(operation)}
    metrics: dict[str, float] = {}
    models: list[ModelRecord] = []
    tiles, scale = 0, 1
    t0 = time.perf_counter()
    result = disp
    if colorizer is not None:
        lum = lightness(disp) if disp.ndim == 3 else lightness_from_grey(disp)
        result = colorize_lightness(colorizer, lum)
        metrics["lightness_max_abs_error"] = _lightness_error(result, lum)
        tiles += colorizer.stats.tiles
        models.append(ModelRecord.from_meta(colorizer.meta))
        params["colorizer"] = colorizer.describe()
    colorized = result if operation is Operation.ENHANCE else None
    if upscaler is not None:
        result = upscale_display(upscaler, result)
        scale = int(upscaler.scale)
        tiles += upscaler.stats.tiles
        models.append(ModelRecord.from_meta(upscaler.meta))
        params["upscaler"] = upscaler.describe()
    if result.ndim == 2:
        result = np.repeat(result[..., None], 3, axis=-1)
    metrics["inference_seconds"] = round(time.perf_counter() - t0, 4)
    metrics["output_height"], metrics["output_width"] = float(result.shape[0]), float(result.shape[1])
    flux = None
    if operation is Operation.UPSCALE and frame.format == "fits" and not frame.is_display:
        flux = flux_conserving_product(result, frame, stretch, scale)
        blocks = flux.reshape(frame.shape[0], scale, frame.shape[1], scale).mean(axis=(1, 3))
        valid = np.asarray(frame.mask) & np.isfinite(frame.data)
        if valid.any():
            metrics["flux_block_max_abs_error"] = float(np.abs(blocks[valid] - frame.data[valid]).max())
    return Rendered(operation=operation, image=result, colorized=colorized, flux=flux, scale=scale, quality=report,
                    stretch=stretch, models=tuple(models), params=jsonable(params), metrics=metrics, tiles=tiles)


def _file_meta(frame: Frame, rendered: Rendered) -> dict[str, Any]:
    """The description embedded in every file of a product (PNG/TIFF text, FITS keywords)."""
    prov = jsonable(dict(frame.provenance or {}))
    prov.setdefault("credit", None)
    prov.setdefault("license", None)
    return {
        "label": AI_LABEL,
        "operation": str(rendered.operation),
        "source_name": Path(frame.source_path).name,
        "source_path": str(frame.source_path),
        "source_sha256": frame.source_sha256,
        "hdu": frame.hdu,
        "plane": frame.plane,
        "provenance": prov,
        "stretch": rendered.stretch.as_dict(),
        "models": [m.as_dict() for m in rendered.models],
        "credit": prov.get("credit"),
        "license": prov.get("license"),
    }


def product_kinds(rendered: Rendered, frame: Frame) -> list[FileKind]:
    """The files a rendered frame gets: PNG and TIFF always, the colour step (enhance), the FITS cube
    (FITS inputs) and the flux-conserving FITS (upscale of a science frame)."""
    kinds = [FileKind.PNG, FileKind.TIF]
    if rendered.colorized is not None:
        kinds.append(FileKind.COLORIZED)
    if frame.format == "fits":
        kinds.append(FileKind.FITS)
    if rendered.flux is not None:
        kinds.append(FileKind.FITS_FLUX)
    return kinds


def write_products(rendered: Rendered, frame: Frame, *, stem: Path) -> dict[str, ProductFile]:
    """Write a rendered frame's files under ``stem`` (named by ``naming.product_path``), all or none.

    Every file is staged under a temporary name and the set is renamed into place together, so a
    failure part-way leaves the files that were there before (and no half product). Returns the
    files by kind.
    """
    meta = _file_meta(frame, rendered)
    op = str(rendered.operation)
    paths = product_paths(stem, product_kinds(rendered, frame), operation=rendered.operation, scale=rendered.scale)
    files: dict[FileKind, ProductFile] = {}
    with StagedWrites() as stage:
        files[FileKind.PNG] = write_png(paths[FileKind.PNG], rendered.image, meta, AI_LABEL, stage=stage)
        files[FileKind.TIF] = write_tiff(paths[FileKind.TIF], rendered.image, meta, AI_LABEL, stage=stage)
        if rendered.colorized is not None:
            files[FileKind.COLORIZED] = write_png(paths[FileKind.COLORIZED], rendered.colorized,
                                                  dict(meta, step=str(Operation.COLORIZE)), AI_LABEL, stage=stage)
        if FileKind.FITS in paths:
            files[FileKind.FITS] = write_fits_cube(paths[FileKind.FITS], rendered.image, meta, wcs=frame.wcs,
                                                   scale=rendered.scale, label=AI_LABEL, operation=op, stage=stage)
        if rendered.flux is not None:
            bunit = (frame.provenance or {}).get("bunit") or (frame.header.get("BUNIT") if frame.header is not None
                                                              else None)
            files[FileKind.FITS_FLUX] = write_flux_fits(paths[FileKind.FITS_FLUX], rendered.flux,
                                                        dict(meta, label=FLUX_LABEL), wcs=frame.wcs,
                                                        scale=rendered.scale, bunit=bunit, stage=stage)
    return {str(k): v for k, v in files.items()}


def save_products(rendered: Rendered, frame: Frame, *, stem: Path, recorded: Recorded | None = None,
                  protect: Collection[Path] = ()) -> dict[str, ProductFile]:
    """Write a rendered frame's files under ``stem`` or, where another product or file owns one of
    those names, under ``<stem>-<input hash>`` (``naming.choose_stem``); returns them by kind.

    The one way products get their names: the CLI, the sweep and the Python API's ``.save`` call
    it. ``recorded`` is the catalog's side (``Catalog.file_owners``); without it, existing files
    are judged by their embedded provenance. ``protect`` (the input) is never written.
    """
    owner = FileOwner.of_frame(str(rendered.operation), frame.source_sha256, frame.hdu, frame.plane)
    chosen = choose_stem(stem, kinds=product_kinds(rendered, frame), operation=rendered.operation,
                         scale=rendered.scale, content_sha256=frame.source_sha256,
                         free=free_for(owner, recorded=recorded, protect=protect))
    return write_products(rendered, frame, stem=chosen)


# ---------------------------------------------------------------------------------------------
# One file


def frame_product(frame: Frame, operation: Operation, run_id: str | None, *, status: ProductStatus,
                  error: str | None = None, rendered: Rendered | None = None,
                  files: dict[str, ProductFile] | None = None) -> Product:
    """The typed :class:`Product` of one frame: rendered (with its files) or failed (with its error)."""
    return Product(
        run_id=run_id, source_path=str(frame.source_path), source_sha256=frame.source_sha256, hdu=frame.hdu,
        plane=frame.plane, frame_key=frame.key, operation=operation, status=status, error=error,
        provenance=jsonable(dict(frame.provenance or {})), notes=tuple(frame.notes), footprint=footprint_of(frame),
        quality=rendered.quality if rendered else None, stretch=rendered.stretch if rendered else None,
        models=rendered.models if rendered else (), params=rendered.params if rendered else {},
        metrics=rendered.metrics if rendered else {}, tile_count=rendered.tiles if rendered else 0,
        files=files or {},
    )


def _file_error(path: Path, operation: Operation, message: str, run_id: str | None, sha: str) -> Product:
    return Product(run_id=run_id, source_path=str(path), source_sha256=sha, hdu=None, plane=None, frame_key=None,
                   operation=operation, status=ProductStatus.ERROR, error=message)


def _identity(path: Path) -> tuple[str, int | None]:
    """(sha256, size) of a readable regular file, else ("", None)."""
    from astro_pipeline.fileio import sha256_file

    try:
        if path.is_file():
            return sha256_file(path), path.stat().st_size
    except OSError:
        pass
    return "", None


def process_file(
    path: Path | str,
    *,
    operation: Operation | str,
    engines: Engines,
    output_dir: Path | str,
    quality: QualityThresholds,
    max_image_pixels: int,
    memory_budget: int,
    input_root: Path | str | None = None,
    run_id: str | None = None,
    recorded: Recorded | None = None,
) -> ProcessedInput:
    """Process every frame of one input file into products under ``output_dir``.

    Products mirror the input's path relative to ``input_root`` (default: its folder), named by
    ``naming``. ``recorded`` gives the owners the catalog records for paths (``Catalog.file_owners``):
    a product never replaces a file another product owns, it takes ``<stem>-<input hash>``
    instead (``naming.choose_stem``). Never raises for a bad file or frame: those become error
    products naming the file and the problem. ``memory_budget`` (bytes,
    ``Settings.memory_budget_bytes``): the job's estimated peak is reserved from it before any pixel
    is read, and a file over it is refused.
    """
    with ExitStack() as held:
        return _process_file(Path(path), Operation(operation), engines=engines, output_dir=Path(output_dir),
                             quality=quality, max_image_pixels=max_image_pixels, memory_budget=memory_budget,
                             input_root=input_root, run_id=run_id, recorded=recorded, held=held)


def _what(operation: Operation, images: Sequence[ImageGeometry]) -> str:
    """``colorize of HDU 1 [SCI,1] (4096x4096)`` (``and 3 more images`` for a file of several)."""
    big = max(images, key=lambda g: g.pixels * g.channels * g.planes)
    more = f" and {len(images) - 1} more image(s)" if len(images) > 1 else ""
    return f"{operation} of {big.describe()}{more}"


def _process_file(path: Path, op: Operation, *, engines: Engines, output_dir: Path, quality: QualityThresholds,
                  max_image_pixels: int, memory_budget: int, input_root: Path | str | None, run_id: str | None,
                  recorded: Recorded | None, held: ExitStack) -> ProcessedInput:
    from astro_pipeline.ingest.readers import read_frames
    from astro_pipeline.job_estimate import estimate_job

    engines.for_operation(op)  # a missing engine is the caller's mistake, not the file's: raise now
    root = Path(input_root) if input_root is not None else path.parent

    def admit(images: Sequence[ImageGeometry]) -> None:
        """Hold the job's estimated peak against the budget while the file is processed (or refuse it)."""
        estimate = estimate_job(images, operation=op, engines=engines)
        held.enter_context(reserve(estimate.total, what=_what(op, images), budget=memory_budget,
                                   detail=estimate.describe()))

    try:
        frames = read_frames(path, max_image_pixels=max_image_pixels, admit=admit)
    except MemoryBudgetError as exc:
        sha, size = _identity(path)
        return ProcessedInput(path=path, sha256=sha, size=size, n_frames=None,
                              products=[_file_error(path, op, f"{path}: {exc}", run_id, sha)])
    except IngestError as exc:
        sha, size = _identity(path)
        return ProcessedInput(path=path, sha256=sha, size=size, n_frames=None,
                              products=[_file_error(path, op, str(exc), run_id, sha)])
    except Exception as exc:  # noqa: BLE001 - never a traceback for a bad file
        sha, size = _identity(path)
        return ProcessedInput(path=path, sha256=sha, size=size, n_frames=None,
                              products=[_file_error(path, op, f"{path}: {type(exc).__name__}: {exc}", run_id, sha)])
    out = ProcessedInput(path=path, sha256=frames[0].source_sha256, size=path.stat().st_size, n_frames=len(frames))
    for frame in frames:
        out.products.append(_process_frame(frame, path=path, operation=op, engines=engines, output_dir=output_dir,
                                           input_root=root, quality=quality, run_id=run_id, recorded=recorded))
    return out


def _process_frame(frame: Frame, *, path: Path, operation: Operation, engines: Engines, output_dir: Path,
                   input_root: Path, quality: QualityThresholds, run_id: str | None,
                   recorded: Recorded | None) -> Product:
    stem = output_stem(path, input_root=input_root, output_dir=output_dir, suffix=frame.suffix)
    try:
        rendered = render_frame(frame, operation=operation, engines=engines, quality=quality)
        files = save_products(rendered, frame, stem=stem, recorded=recorded, protect={path})
    except MemoryError:
        return frame_product(frame, operation, run_id, status=ProductStatus.ERROR,
                              error=f"{frame.key}: not enough memory to process this frame")
    except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the others
        msg = " ".join(str(exc).split())[:500]
        return frame_product(frame, operation, run_id, status=ProductStatus.ERROR,
                              error=f"{frame.key}: {type(exc).__name__}: {msg}")
    return frame_product(frame, operation, run_id, status=ProductStatus.OK, rendered=rendered, files=files)
