"""Colour from real bands: slots by the wavelength rule, one flux scale and stretch, the missing channel.

* ``bands``: :class:`Band` (a frame in a slot), assignment by option or filter, the one-grid check;
* ``flux``: each band on one flux scale (PHOTFNU / PHOTFLAM / BUNIT), its sky and noise;
* ``stretch``: the shared asinh (or ``make_lupton_rgb``) with recorded parameters;
* ``fill``: the missing channel (the band-completion model's interface, or the rule);
* ``rgb``: :func:`compose_bands`, the one in-memory path, and its :class:`Composed`.

The Python API's ``astro_pipeline.compose`` and ``astro-pipeline compose`` call ``compose_bands``;
``products.composed`` writes its files. See ``docs/compose.md``.
"""

from astro_pipeline.composition.bands import Band, GridError, assign_bands, check_same_grid
from astro_pipeline.composition.fill import BandCompletion, find_band_completion, rule_fill
from astro_pipeline.composition.rgb import Composed, compose_bands

__all__ = ["Band", "BandCompletion", "Composed", "GridError", "assign_bands", "check_same_grid", "compose_bands",
           "find_band_completion", "rule_fill"]
