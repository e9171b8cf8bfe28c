"""astro_pipeline: Hubble archive sweeps to colour, 4x super-resolved, manifest-tracked products.

Data path, top to bottom: ``archives`` (find, fetch) -> ``ingest`` (read, mask, stretch, flag)
-> ``tiles`` (cut, stitch) -> ``models`` + ``inference`` (colorize, 4x SR) -> ``products``
(PNG/TIFF/FITS with WCS) -> ``catalog`` + ``manifest`` (what came from where, made by which model).

For notebooks: ``astro_pipeline.colorize``, ``upscale``, ``enhance`` and ``inspect`` take a path, a
numpy array, an astropy HDU or a CCDData, and ``compose`` makes colour from real bands
(``astro_pipeline.api``; docs/python_api.md, docs/compose.md). They are imported on first use, so
``import astro_pipeline`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("ComposeResult", "FrameReport", "Result", "colorize", "compose", "enhance", "inspect", "upscale")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from astro_pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'astro_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
