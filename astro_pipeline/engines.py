"""The models a run uses: weights loaded once per process and thread, guarded per call, identified.

:func:`load_engine` builds one inference ``Engine`` from weights named or given by path and
checks they are for the task; :func:`load_engines` gives the colorizer and upscaler of an
operation, cached per thread (engines are not thread-safe); :func:`model_versions` reads only
the weights' metadata, which is all a planner needs to ask the catalog what is done. A flow wraps
the engines with a guard (:meth:`Engines.with_guard`) so that only one model call at a time
uses a machine's CPU threads or GPU.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astro_pipeline.config import Settings
from astro_pipeline.products.types import ModelRecord, Operation

__all__ = ["DEFAULT_WEIGHTS", "Engines", "GuardedEngine", "TaskMismatchError", "load_engine", "load_engines",
           "model_versions"]

#: Default weights names per task (``<weights_dir>/<name>.safetensors``).
DEFAULT_WEIGHTS: dict[str, str] = {"colorize": "colorizer", "superres": "superres"}


class TaskMismatchError(ValueError):
    """Weights for another task than the one asked for (e.g. colorizer weights given to upscale)."""


class GuardedEngine:
    """An inference engine whose ``run`` holds a guard (e.g. a concurrency slot) and is timed.

    Reading and product writing of other items proceed in parallel; only the model calls are
    serialised by the guard. ``take_seconds`` reports the time spent inside ``run`` per thread.
    """

    def __init__(self, engine: Any, guard: Callable[[], AbstractContextManager[Any]] | None = None) -> None:
        self.engine = engine
        self.guard = guard
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def run(self, image: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        ctx = self.guard() if self.guard is not None else nullcontext()
        with ctx:
            t0 = time.perf_counter()
            try:
                return self.engine.run(image, *args, **kwargs)
            finally:
                loc = self._local
                loc.seconds = getattr(loc, "seconds", 0.0) + time.perf_counter() - t0
                stats = self.engine.stats
                loc.model_seconds = getattr(loc, "model_seconds", 0.0) + float(stats.model_seconds)
                loc.tiles = getattr(loc, "tiles", 0) + int(stats.tiles)

    def take_seconds(self) -> tuple[float, float, int]:
        """(seconds in ``run``, of which in the model's forward, tiles) for this thread since the last call."""
        loc = self._local
        out = (float(getattr(loc, "seconds", 0.0)), float(getattr(loc, "model_seconds", 0.0)),
               int(getattr(loc, "tiles", 0)))
        loc.seconds, loc.model_seconds, loc.tiles = 0.0, 0.0, 0
        return out


@dataclass(frozen=True, kw_only=True)
class Engines:
    """The colorizer and upscaler of a run (either may be absent when no operation needs it)."""

    colorizer: Any | None = None  # inference.Engine or GuardedEngine
    upscaler: Any | None = None

    def for_operation(self, operation: Operation) -> tuple[Any | None, Any | None]:
        """(colorizer, upscaler) that ``operation`` runs, each None when it does not run it."""
        op = Operation(operation)
        if op.colorizes and self.colorizer is None:
            raise ValueError(f"{op} needs a colorizer engine")
        if op.upscales and self.upscaler is None:
            raise ValueError(f"{op} needs an upscaler engine")
        return (self.colorizer if op.colorizes else None, self.upscaler if op.upscales else None)

    def models(self, operation: Operation) -> tuple[ModelRecord, ...]:
        return tuple(ModelRecord.from_meta(e.meta) for e in self.for_operation(operation) if e is not None)

    def versions_for(self, operation: Operation) -> dict[str, str]:
        """``{model name: version}`` of the models ``operation`` uses: what "done" means in the catalog."""
        return {m.name: m.version for m in self.models(operation)}

    def with_guard(self, guard: Callable[[], AbstractContextManager[Any]] | None) -> Engines:
        def wrap(engine: Any | None) -> Any | None:
            if engine is None:
                return None
            return GuardedEngine(engine.engine if isinstance(engine, GuardedEngine) else engine, guard)

        return Engines(colorizer=wrap(self.colorizer), upscaler=wrap(self.upscaler))

    def take_inference_seconds(self) -> tuple[float, float, int]:
        """(engine seconds, model-forward seconds, tiles) this thread spent since the last call."""
        parts = [e.take_seconds() for e in (self.colorizer, self.upscaler) if isinstance(e, GuardedEngine)]
        return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts))


def load_engine(name_or_path: str | Path, *, task: str, settings: Settings, tile_size: int | None = None) -> Any:
    """An inference engine for ``task`` ("colorize" | "superres") from named or given weights.

    Raises ``WeightsError`` (missing or malformed weights) or :class:`TaskMismatchError`.
    """
    from astro_pipeline.engine_tuning import CALIBRATION_FILE
    from astro_pipeline.inference import Engine
    from astro_pipeline.models.registry import load_weights

    model, meta = load_weights(name_or_path, weights_dir=settings.weights_dir)
    if meta.task != task:
        raise TaskMismatchError(f"{name_or_path}: these are {meta.task!r} weights, not {task!r} weights")
    return Engine(model, meta, device=settings.device, precision=settings.precision, batch_size=settings.batch_size,
                  memory_format=settings.memory_format, calibration_cache=Path(settings.cache_dir) / CALIBRATION_FILE,
                  compile=settings.compile, tile_size=tile_size)


_CACHE_LOCK = threading.Lock()
_CACHE: dict[tuple[Any, ...], Any] = {}


def load_engines(operation: Operation, settings: Settings, *, colorizer: str | Path | None = None,
                 upscaler: str | Path | None = None, tile_size: int | None = None) -> Engines:
    """The engines ``operation`` needs (default weights names unless given), loaded once per thread.

    The cache is keyed by the weights file (and its modification time: retrained weights are
    loaded afresh), the device as resolved (``auto`` and ``cpu`` on a
    machine without CUDA are one key), precision, batch size, compile and tile size: asking for
    another device loads the weights once more onto that device, and the first engine stays usable.
    """
    from astro_pipeline.inference import resolve_device
    from astro_pipeline.models.registry import resolve_weights_path

    op = Operation(operation)
    chosen = {"colorize": colorizer or DEFAULT_WEIGHTS["colorize"], "superres": upscaler or DEFAULT_WEIGHTS["superres"]}
    device = str(resolve_device(settings.device))
    engines: dict[str, Any] = {}
    for task in op.model_tasks:
        path = resolve_weights_path(chosen[task], weights_dir=settings.weights_dir)
        key = (str(path), path.stat().st_mtime_ns, task, device, settings.precision, settings.batch_size,
               settings.memory_format, settings.compile, tile_size, threading.get_ident())
        with _CACHE_LOCK:
            engine = _CACHE.get(key)
            if engine is None:
                engine = _CACHE[key] = load_engine(path, task=task, settings=settings, tile_size=tile_size)
        engines[task] = engine
    return Engines(colorizer=engines.get("colorize"), upscaler=engines.get("superres"))


def model_versions(settings: Settings) -> dict[Operation, dict[str, str]]:
    """``{operation: {model name: version}}`` of the default weights, from their metadata alone."""
    from astro_pipeline.models.registry import read_meta

    metas = {task: read_meta(name, weights_dir=settings.weights_dir) for task, name in DEFAULT_WEIGHTS.items()}
    return {op: {str(metas[t].name): str(metas[t].version) for t in op.model_tasks} for op in Operation}
