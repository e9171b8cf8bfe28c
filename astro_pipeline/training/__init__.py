"""Training: data sources, datasets, losses, the loop, evaluation and the promotion gate.

Public entry points: :func:`run_training` (one model, resumable),
``astro_pipeline.training.evaluate.evaluate_models`` (the report; colour methods plug in through
``training.colour_cases.ColourMethod``) and ``astro_pipeline.training.sky_gap.default_sky_gap``
(the colorizer's input against its training images).
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_training", "TrainingResult"]


def __getattr__(name: str) -> Any:  # lazy: importing the package does not import torch
    if name in __all__:
        from astro_pipeline.training import loop

        return getattr(loop, name)
    raise AttributeError(name)
