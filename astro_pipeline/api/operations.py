"""``colorize``, ``upscale``, ``enhance`` and ``inspect`` for notebooks: one frame in, a :class:`Result` out.

A thin layer over the processing path the CLI and the sweep share: the input becomes a
``Frame`` (``ingest.objects.frames_from``, the readers for files), ``products.process.render_frame``
assesses, stretches and runs the engines, and ``Result.save`` writes through
``products.process.write_products``. Engines come from ``engines.load_engines``: loaded once per
process (and thread, device, precision, batch size, tile size) and reused by every later call.

What is display and what is science data:

* a ``uint8`` numpy array, and an 8-bit file (PNG, JPEG, integer TIFF), is a display image: it is
  not stretched (colorize keeps its own lightness);
* a float or 16/32-bit integer array, an astropy ``ImageHDU``/``PrimaryHDU``, and a ``CCDData``
  are linear science data: masked (NaN, BLANK, a given ``mask``) and stretched (ZScale + asinh,
  recorded in ``Result.stretch``) like a FITS frame; ``upscale`` also returns the
  flux-conserving linear 4x image (``Result.data``);
* files are decided as the readers decide (FITS and float TIFF are science data).

``display=True``/``False`` overrides the rule for an array.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from astro_pipeline.api.result import Result
from astro_pipeline.config import Settings
from astro_pipeline.ingest.frame import Flag, Frame, QualityReport
from astro_pipeline.products.types import Operation

if TYPE_CHECKING:  # pragma: no cover
    from astropy.io.fits import Header
    from astropy.wcs import WCS

    from astro_pipeline.engines import Engines
    from astro_pipeline.ingest.objects import ImageInput

__all__ = ["FrameReport", "colorize", "engines_for", "enhance", "inspect", "upscale"]


def _settings(settings: Settings | None, **overrides: Any) -> Settings:
    """The process settings (or the given ones) with the call's options on top."""
    if settings is None:
        from astro_pipeline.config import get_settings

        settings = get_settings()
    return settings.with_overrides(**overrides)


def engines_for(operation: Operation | str, *, colorizer: str | Path | None = None, upscaler: str | Path | None = None,
                device: str | None = None, batch_size: int | None = None, tile_size: int | None = None,
                precision: str | None = None, compile: bool = False, settings: Settings | None = None) -> Engines:
    """The engines an operation runs, from the process-wide cache (``engines.load_engines``).

    The first call loads the weights; later calls with the same weights and options get the same
    engines. ``device=`` ("cpu", "cuda", "cuda:1", "auto") puts the models on that device.
    """
    from astro_pipeline.engines import load_engines

    st = _settings(settings, device=device, batch_size=batch_size, precision=precision, compile=compile or None)
    return load_engines(Operation(operation), st, colorizer=colorizer, upscaler=upscaler, tile_size=tile_size)


def _frame(image: ImageInput, settings: Settings, *, frame: int | None, name: str | None, wcs: WCS | None,
           mask: np.ndarray | None, header: Header | dict[str, Any] | None, display: bool | None) -> tuple[Frame, Path | None, str]:
    from astro_pipeline.ingest.objects import check_name, default_name, frames_from, select_frame

    frames = frames_from(image, max_image_pixels=settings.pixel_limit, name=name, wcs=wcs, mask=mask,
                         header=header, display=display)
    source = Path(image) if isinstance(image, str | Path) or hasattr(image, "__fspath__") else None
    if source is not None and name is not None:
        raise ValueError("name= names in-memory data; a file's products are named for the file")
    return select_frame(frames, frame), source, check_name(name) if name else default_name(image)


def _run(operation: Operation, image: ImageInput, *, colorizer: str | Path | None, upscaler: str | Path | None,
         device: str | None, batch_size: int | None, tile_size: int | None, precision: str | None, compile: bool,
         frame: int | None, name: str | None, wcs: WCS | None, mask: np.ndarray | None,
         header: Header | dict[str, Any] | None, display: bool | None, settings: Settings | None) -> Result:
    from astro_pipeline.products.process import render_frame

    st = _settings(settings, device=device, batch_size=batch_size, precision=precision, compile=compile or None)
    fr, source, product_name = _frame(image, st, frame=frame, name=name, wcs=wcs, mask=mask, header=header,
                                      display=display)
    engines = engines_for(operation, colorizer=colorizer, upscaler=upscaler, tile_size=tile_size, settings=st)
    _check_memory(operation, fr, engines, st, label=product_name)
    rendered = render_frame(fr, operation=operation, engines=engines, quality=st.quality)
    return Result.of(rendered, fr, source=source, name=product_name)


def _check_memory(operation: Operation, fr: Frame, engines: Any, settings: Settings, *, label: str) -> None:
    """Raise ``MemoryBudgetError`` (the estimate and the setting to change) before inference of a frame
    whose job is estimated over ``settings.memory_budget``, as the CLI and the sweep refuse it."""
    from astro_pipeline.ingest.frame import ImageGeometry
    from astro_pipeline.job_estimate import estimate_job
    from astro_pipeline.memory import check_budget

    h, w = fr.data.shape[:2]
    geometry = ImageGeometry(label=label, height=int(h), width=int(w), channels=fr.data.shape[2] if fr.data.ndim == 3 else 1)
    estimate = estimate_job([geometry], operation=operation, engines=engines)
    check_budget(estimate.total, what=f"{operation} of {geometry.describe()}", budget=settings.memory_budget_bytes,
                 detail=estimate.describe())


_ARGS_DOC = """
    ``image``: a path (FITS, TIF, PNG, JPEG), a numpy array, an astropy ``ImageHDU``/``PrimaryHDU``
    or a ``CCDData``. A uint8 array (or an 8-bit file) is a display image and is not stretched; a
    float or 16/32-bit integer array, an HDU or a CCDData is linear science data, masked and
    stretched like a FITS frame (``display=`` overrides the rule for an array).

    Options, as the CLI's: ``device`` ("auto", "cpu", "cuda", "cuda:N"), ``batch_size``,
    ``tile_size`` (input pixels per tile), ``precision`` ("auto", "fp32", "bf16", "fp16"),
    ``compile``. For in-memory data: ``wcs`` (an astropy WCS), ``mask`` (True where a pixel is
    bad), ``header`` (a FITS header or dict: FILTER, BUNIT, ... for the records), ``name`` (the
    products' file name in ``save``). ``frame``: which frame of a multi-frame input (index in
    reading order; required when there are several). ``settings``: a ``Settings`` instead of the
    process's (weights folder, quality thresholds, pixel limit).
"""


def colorize(image: ImageInput, *, weights: str | Path | None = None, device: str | None = None,
             batch_size: int | None = None, tile_size: int | None = None, precision: str | None = None,
             compile: bool = False, frame: int | None = None, name: str | None = None, wcs: WCS | None = None,
             mask: np.ndarray | None = None, header: Header | dict[str, Any] | None = None,
             display: bool | None = None, settings: Settings | None = None) -> Result:
    """Colour at the same size: the colorizer predicts chroma, the input's own lightness is kept.

    ``weights``: colorizer weights name (in ``weights/``) or path; default the shipped colorizer.
    """
    return _run(Operation.COLORIZE, image, colorizer=weights, upscaler=None, device=device, batch_size=batch_size,
                tile_size=tile_size, precision=precision, compile=compile, frame=frame, name=name, wcs=wcs,
                mask=mask, header=header, display=display, settings=settings)


def upscale(image: ImageInput, *, weights: str | Path | None = None, device: str | None = None,
            batch_size: int | None = None, tile_size: int | None = None, precision: str | None = None,
            compile: bool = False, frame: int | None = None, name: str | None = None, wcs: WCS | None = None,
            mask: np.ndarray | None = None, header: Header | dict[str, Any] | None = None,
            display: bool | None = None, settings: Settings | None = None) -> Result:
    """4x super-resolution; for science data ``Result.data`` is the flux-conserving linear 4x image.

    ``weights``: super-resolution weights name or path; default the shipped ``superres``.
    """
    return _run(Operation.UPSCALE, image, colorizer=None, upscaler=weights, device=device, batch_size=batch_size,
                tile_size=tile_size, precision=precision, compile=compile, frame=frame, name=name, wcs=wcs,
                mask=mask, header=header, display=display, settings=settings)


def enhance(image: ImageInput, *, colorizer: str | Path | None = None, upscaler: str | Path | None = None,
            device: str | None = None, batch_size: int | None = None, tile_size: int | None = None,
            precision: str | None = None, compile: bool = False, frame: int | None = None, name: str | None = None,
            wcs: WCS | None = None, mask: np.ndarray | None = None, header: Header | dict[str, Any] | None = None,
            display: bool | None = None, settings: Settings | None = None) -> Result:
    """Colorize, then 4x super-resolution; ``Result.colorized`` keeps the same-size colour step.

    ``colorizer`` / ``upscaler``: weights names or paths (the CLI's ``--colorizer`` / ``--upscaler``).
    """
    return _run(Operation.ENHANCE, image, colorizer=colorizer, upscaler=upscaler, device=device,
                batch_size=batch_size, tile_size=tile_size, precision=precision, compile=compile, frame=frame,
                name=name, wcs=wcs, mask=mask, header=header, display=display, settings=settings)


for _fn in (colorize, upscale, enhance):
    _fn.__doc__ = (_fn.__doc__ or "") + _ARGS_DOC


# ---------------------------------------------------------------------------------------------- inspect


@dataclass(frozen=True, kw_only=True)
class FrameReport:
    """The quality report of one frame: its metrics, and each flag with its value and threshold."""

    frame_key: str
    hdu: int | None
    plane: int | None
    format: str
    shape: tuple[int, ...]
    is_display: bool
    provenance: dict[str, Any]
    notes: tuple[str, ...]
    quality: QualityReport

    @classmethod
    def of(cls, frame: Frame, quality: QualityReport) -> FrameReport:
        return cls(frame_key=frame.key, hdu=frame.hdu, plane=frame.plane, format=frame.format,
                   shape=tuple(int(s) for s in frame.data.shape), is_display=frame.is_display,
                   provenance=dict(frame.provenance or {}), notes=tuple(frame.notes), quality=quality)

    @property
    def metrics(self) -> dict[str, float | None]:
        return self.quality.metrics

    @property
    def flags(self) -> list[Flag]:
        """Raised flags; each has ``name``, ``value``, ``threshold``, ``comparison`` and ``message``."""
        return self.quality.flags

    @property
    def flag_names(self) -> list[str]:
        return self.quality.flag_names

    def as_dict(self) -> dict[str, Any]:
        """Plain data (the fields of ``astro-pipeline inspect --json``, less the file's identity)."""
        from astro_pipeline.jsondata import jsonable

        return jsonable({"frame": self.frame_key, "hdu": self.hdu, "plane": self.plane, "format": self.format,
                         "shape": list(self.shape), "is_display": self.is_display, "provenance": self.provenance,
                         "notes": list(self.notes), **self.quality.as_dict()})

    def __repr__(self) -> str:  # the quality report in full is a print away
        return f"FrameReport({self.frame_key}, shape={self.shape}, flags={self.flag_names})"


def inspect(image: ImageInput, *, frame: int | None = None, name: str | None = None, wcs: WCS | None = None,
            mask: np.ndarray | None = None, header: Header | dict[str, Any] | None = None,
            display: bool | None = None, settings: Settings | None = None) -> list[FrameReport]:
    """Quality reports, one per frame (or only ``frame``), under the settings' quality thresholds.

    Same inputs and display rule as :func:`colorize`; a bad file raises ``IngestError`` naming it.
    """
    from astro_pipeline.ingest.objects import frames_from
    from astro_pipeline.ingest.quality import assess

    st = _settings(settings)
    frames = frames_from(image, max_image_pixels=st.pixel_limit, name=name, wcs=wcs, mask=mask, header=header,
                         display=display)
    if frame is not None:
        from astro_pipeline.ingest.objects import select_frame

        frames = [select_frame(frames, frame)]
    return [FrameReport.of(f, assess(f, st.quality)) for f in frames]
