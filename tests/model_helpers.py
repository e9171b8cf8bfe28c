"""Random-weight models for tests: the registry's networks, seeded, tiny unless asked otherwise.

Import with ``from model_helpers import random_weights`` (``tests/`` is on the path).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from astro_pipeline.models.registry import WeightsMeta, build_model, default_meta, save_weights

__all__ = ["TINY", "random_weights", "save_tiny_weights"]

#: Tiny configurations (seconds to run): (arch, kwargs, tile size) per task.
TINY: dict[str, tuple[str, dict[str, int], int]] = {
    "colorize": ("UNetColorizer", {"base_channels": 8, "depth": 3, "chroma_scale": 2}, 64),
    "superres": ("SRResNet", {"channels": 8, "blocks": 2, "scale": 4}, 32),
}


def random_weights(task: str, *, tiny: bool = True, seed: int = 0) -> tuple[nn.Module, WeightsMeta]:
    """A randomly initialised model of ``task`` ("colorize" | "superres") built via the registry."""
    meta = default_meta(task, name=f"random-{task}", version="0.0.0-random")
    if tiny:
        arch, kwargs, tile = TINY[task]
        meta.arch, meta.kwargs, meta.tile_size = arch, dict(kwargs), tile
        meta.scale = 1 if task == "colorize" else int(kwargs["scale"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(meta.arch, **meta.kwargs)
    model.eval()
    model.requires_grad_(False)
    return model, meta


def save_tiny_weights(folder: Path, *, seed: int = 5) -> dict[str, Path]:
    """Tiny random colorizer and SR weights saved in ``folder``, by task (for CLI tests)."""
    out = {}
    for task in ("colorize", "superres"):
        model, meta = random_weights(task, tiny=True, seed=seed)
        out[task] = save_weights(model, folder / f"tiny-{task}.safetensors", meta)
    return out
