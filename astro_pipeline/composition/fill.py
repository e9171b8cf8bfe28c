"""The missing channel of a two-band composite: a band-completion model when one is installed, else a rule.

The rule (the naive fill; HLA's colour previews use the first): the missing middle slot (G) is
the mean of R and B; a missing outer slot (R or B) takes the values of the nearer given band,
which is G. Fills work on stretched channels, so the given channels are never touched.

A band-completion model is anything with the :class:`BandCompletion` interface: ``complete``
takes the (H, W, 3) channels in R, G, B order with a ``present`` flag per slot and returns all
three, the given ones unchanged. :func:`find_band_completion` finds one in the weights registry:
the colorizer weights (default ``colorizer``) when their metadata say they take bands
(``color_space`` ``bands+...``, as the band-aware colour model of the issue "Colour that is really
colour" records, or ``task`` ``band_completion``). That model's engine runs through
``inference.complete_bands``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from astro_pipeline.products.types import ModelRecord

if TYPE_CHECKING:  # pragma: no cover
    from astro_pipeline.config import Settings

__all__ = ["BandCompletion", "EngineBandCompletion", "find_band_completion", "is_band_completion", "rule_fill"]


@runtime_checkable
class BandCompletion(Protocol):
    """Infers missing chromatic slots from the given ones."""

    @property
    def model(self) -> ModelRecord:
        """The weights that infer (name, version, sha256, architecture), for the records."""
        ...

    def complete(self, channels: np.ndarray, present: tuple[bool, bool, bool]) -> np.ndarray:
        """(H, W, 3) float32 channels in [0, 1], R, G, B order, and which are given -> all three."""
        ...


def rule_fill(channels: np.ndarray, present: tuple[bool, bool, bool]) -> tuple[np.ndarray, str, tuple[str, ...]]:
    """Fill the one missing slot of two by the rule: (filled channels, method, the slots it came from)."""
    if sum(present) != 2:
        raise ValueError(f"the rule fills one missing slot of three, got present={present}")
    out = np.array(channels, dtype=np.float32, copy=True)
    missing = present.index(False)
    if missing == 1:  # G from R and B
        out[..., 1] = (out[..., 0] + out[..., 2]) * np.float32(0.5)
        return out, "mean", ("R", "B")
    out[..., missing] = out[..., 1]  # R or B from G, the nearer band
    return out, "nearer", ("G",)


def is_band_completion(meta: Any) -> bool:
    """True for weights whose metadata say they complete bands (see the module docstring)."""
    task = str(getattr(meta, "task", ""))
    space = str(getattr(meta, "color_space", ""))
    return task == "band_completion" or (task == "colorize" and space.startswith("bands"))


@dataclass(frozen=True)
class EngineBandCompletion:
    """A band-completion model loaded as an inference ``Engine`` (through the engines cache)."""

    engine: Any

    @property
    def model(self) -> ModelRecord:
        return ModelRecord.from_meta(self.engine.meta)

    def complete(self, channels: np.ndarray, present: tuple[bool, bool, bool]) -> np.ndarray:
        from astro_pipeline import inference

        complete_bands = getattr(inference, "complete_bands", None)
        if complete_bands is None:  # pragma: no cover - the band model's engine support arrives with it
            raise RuntimeError(f"{self.model.name}: this build's inference engine cannot run band-completion models")
        return np.asarray(complete_bands(self.engine, channels, present), dtype=np.float32)


def find_band_completion(settings: Settings, *, weights: str | Path | None = None,
                         tile_size: int | None = None) -> BandCompletion | None:
    """The installed band-completion model (the colorizer weights, default or ``weights``), or None.

    Reads the metadata only, and loads the weights (once per process, ``engines.load_engines``)
    only when they are a band-completion model. Missing weights are "not installed": None.
    """
    from astro_pipeline.engines import DEFAULT_WEIGHTS, load_engines
    from astro_pipeline.models.registry import WeightsError, read_meta, resolve_weights_path
    from astro_pipeline.products.types import Operation

    try:
        path = resolve_weights_path(weights or DEFAULT_WEIGHTS["colorize"], weights_dir=settings.weights_dir)
        meta = read_meta(path)
    except WeightsError:
        if weights is not None:
            raise
        return None
    if not is_band_completion(meta):
        return None
    engines = load_engines(Operation.COLORIZE, settings, colorizer=path, tile_size=tile_size)
    return EngineBandCompletion(engines.colorizer)
