"""The Python API for notebooks: ``colorize``, ``upscale``, ``enhance``, ``inspect`` (also on ``astro_pipeline``).

* ``operations``: the four functions, over the one processing path (``products.process``);
* ``result``: :class:`Result`, what the first three give back (image, linear data, WCS, records, ``save``).

See ``docs/python_api.md``.
"""

from astro_pipeline.api.operations import FrameReport, colorize, engines_for, enhance, inspect, upscale
from astro_pipeline.api.result import Result

__all__ = ["FrameReport", "Result", "colorize", "engines_for", "enhance", "inspect", "upscale"]
