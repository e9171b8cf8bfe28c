"""The Python API for notebooks: ``colorize``, ``upscale``, ``enhance``, ``inspect``, ``compose`` (also on ``astro_pipeline``).

* ``operations``: the four functions, over the one processing path (``products.process``);
* ``result``: :class:`Result`, what the first three give back (image, linear data, WCS, records, ``save``);
* ``colour``: ``compose`` (colour from real bands) and its :class:`ComposeResult` (a ``Result`` plus ``channels``).

See ``docs/python_api.md``.
"""

from astro_pipeline.api.colour import ComposeResult, compose
from astro_pipeline.api.operations import FrameReport, colorize, engines_for, enhance, inspect, upscale
from astro_pipeline.api.result import Result

__all__ = ["ComposeResult", "FrameReport", "Result", "colorize", "compose", "engines_for", "enhance", "inspect",
           "upscale"]
