"""Training: data sources, datasets, losses, the loop, evaluation and the promotion gate.

Public entry points: :func:`run_training` (one model, resumable) and
``astro_pipeline.training.evaluate.evaluate_models``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_training", "TrainingResult"]


def __getattr__(name: str) -> Any:  # lazy: importing the package does not import torch
    if name in __all__:
        from astro_pipeline.training import loop

        return getattr(loop, name)
    raise AttributeError(name)
