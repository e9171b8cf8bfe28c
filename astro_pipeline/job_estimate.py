"""The peak memory of processing one input, estimated from its headers before any pixel is read.

Why: a legal 2 MB gzip FITS of 16384^2 float64 pixels took 13 GB before anything refused it. The
processing path (``products.process``) calls :func:`estimate_job` from the reader's ``admit`` hook
with the geometry of the input's images, and refuses the input when the estimate is over the memory
budget (``astro_pipeline.memory``).

The model follows the code, phase by phase, and takes the largest phase:

* held for the whole job: the frames read from the file (float32 pixels and masks, every plane of
  every image, with the source's decoded bytes while they are read) and the frame's display image;
* ``stretch``: quality metrics and the display stretch (temporaries of a few float32 copies);
* ``colour``: lightness, the colorizer's tiles in flight, its stitch buffer and (a*, b*) output, the
  sRGB result and the Lab->sRGB conversion's row-chunk temporaries;
* ``upscale``: the super-resolution tiles in flight, stitch buffer and the 4x RGB float32 output
  (held by ``StitchAccumulator`` in memory, or in its memory-mapped output: pages written count
  until the kernel writes them back);
* ``flux`` (upscale of FITS): the flux-conserving linear image and its float64 stretch inversion;
* ``products``: the result images held while PNG, TIFF and FITS writers make their integer and
  byte-swapped copies.

Tiles in flight are ``batch x`` the tile's input and output arrays plus the model's activations,
traced once per model on PyTorch's meta device (shapes only, no compute) and doubled for the
allocator's and convolutions' workspace (CPU; a CUDA model's activations are on the GPU). The
estimate is meant as an upper bound: ``tests/test_memory_budget.py`` checks it against the peak a
child process measures (colorize of 1536^2 with the shipped colorizer: 90 MiB measured above a 64^2
job, 296 MiB estimated), so it refuses early rather than late.
"""

from __future__ import annotations

import copy
import functools
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from astro_pipeline.ingest.frame import ImageGeometry
from astro_pipeline.memory import format_bytes
from astro_pipeline.products.types import Operation

__all__ = ["ACTIVATION_OVERHEAD", "JobEstimate", "activation_bytes_per_tile", "estimate_job"]

#: Measured RSS of a batch over the traced live activations (allocator caching, convolution workspace).
ACTIVATION_OVERHEAD = 2.0
#: Bytes per pixel of float32 temporaries that quality assessment and the display stretch hold at once.
_STRETCH_BYTES_PER_PIXEL = 24
#: Bytes per output pixel the product writers hold besides the RGB float32 result (TIFF's clipped,
#: scaled and rounded copies; the FITS cube's plane-first copy).
_WRITER_BYTES_PER_PIXEL = 26
#: Bytes per output pixel of the flux-conserving product's making (float64 stretch inversion, block means).
_FLUX_BYTES_PER_PIXEL = 32
#: Rows the Lab->sRGB conversion handles at a time, and the float64 arrays of 3 channels it holds for them.
_LAB_ROWS, _LAB_ARRAYS = 256, 10


@dataclass(frozen=True)
class JobEstimate:
    """Bytes a job holds throughout (``held``) and in each phase; the peak is the largest phase."""

    what: str
    held: dict[str, int]
    phases: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda k: sum(self.phases[k].values())) if self.phases else "reading"

    @property
    def parts(self) -> dict[str, int]:
        """What the peak is made of: the held parts and the peak phase's."""
        out = dict(self.held)
        for key, value in self.phases.get(self.peak_phase, {}).items():
            out[key] = out.get(key, 0) + value
        return out

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        """``peak in colour: input 1.0 GiB + working images ... = 3.2 GiB``."""
        terms = " + ".join(f"{k} {format_bytes(v)}" for k, v in self.parts.items() if v)
        return f"peak in {self.peak_phase}: {terms} = {format_bytes(self.total)}"


# ---------------------------------------------------------------------------------------------
# Model activations, traced on the meta device


def _trace_live_peak(model: Any, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """(peak bytes of live intermediate tensors, output shape) of one forward on a meta input.

    Every tensor an op returns is counted from its creation to its release (a weakref finalizer), so
    the peak is what inference mode holds at once; views and in-place results are not new memory.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    class Live(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.live = 0
            self.peak = 0
            self._lock = threading.Lock()

        def _release(self, nbytes: int) -> None:
            with self._lock:
                self.live -= nbytes

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            given = {id(a) for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)}
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.device.type == "meta" and id(t) not in given and t._base is None:
                    nbytes = t.numel() * t.element_size()
                    with self._lock:
                        self.live += nbytes
                        self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self._release, nbytes)
            return out

    meta_model = copy.deepcopy(model).to("meta")
    mode = Live()
    with torch.inference_mode(), mode:
        y = meta_model(torch.empty(shape, device="meta"))
    return mode.peak, tuple(y.shape)


@functools.lru_cache(maxsize=32)
def _traced(model_id: int, model_ref: Any, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    model = model_ref()
    if model is None:  # pragma: no cover - the engine went away between the call and the trace
        raise RuntimeError("model released")
    return _trace_live_peak(model, shape)


def activation_bytes_per_tile(engine: Any) -> int:
    """Live activation bytes of one tile through ``engine``'s model (0 on CUDA: those are GPU memory)."""
    if getattr(getattr(engine, "device", None), "type", "cpu") == "cuda":
        return 0
    model = engine.model
    shape = (1, int(engine.in_channels), int(engine.tile_size), int(engine.tile_size))
    try:
        peak, _ = _traced(id(model), weakref.ref(model), shape)
    except Exception:  # noqa: BLE001 - an op the meta device cannot run: assume 64 float32 maps at output size
        side = int(engine.tile_size) * int(engine.scale)
        peak = side * side * 4 * 64
    return int(peak)


# ---------------------------------------------------------------------------------------------
# The job


def _tiles(height: int, width: int, engine: Any) -> tuple[int, int]:
    """(tiles in flight bytes, stitch buffer bytes) of ``engine`` over a ``height x width`` image."""
    from astro_pipeline.tiles import TileGrid

    t, s = int(engine.tile_size), int(engine.scale)
    grid = TileGrid(height, width, tile=t, overlap=int(engine.overlap))
    batch = max(1, min(int(engine.batch_size), len(grid)))
    c_in = int(engine.in_channels)
    c_out = 2 if getattr(engine.meta, "task", "") == "colorize" else 3
    io = batch * (c_in * t * t * 4 * 3 + c_out * (t * s) ** 2 * 4 * 2)  # tiles cut, stacked, on the device; results back
    inflight = io + int(batch * activation_bytes_per_tile(engine) * ACTIVATION_OVERHEAD)
    stitch = 2 * (t * s) * (width * s) * c_out * 4  # the pending bands of about two tile rows
    return inflight, stitch


def estimate_job(images: Sequence[ImageGeometry], *, operation: Operation | str, engines: Any) -> JobEstimate:
    """The peak memory of running ``operation`` over every frame of an input whose images are ``images``.

    ``engines`` is the run's :class:`~astro_pipeline.engines.Engines` (tile size, batch, scale and
    model of each engine come from it).
    """
    op = Operation(operation)
    if not images:
        return JobEstimate(what=str(op), held={})
    colorizer, upscaler = engines.for_operation(op)
    # Held: every frame the file gives (all planes), and the largest image's source bytes while it is decoded.
    frames = sum(g.planes * g.pixels * (4 * g.channels + 1 + (1 if g.aux_images else 0)) for g in images)
    decoding = max(g.planes * g.pixels * (g.channels * (g.source_bytes_per_sample + 4)) + 4 * g.aux_images * g.pixels
                   for g in images)
    big = max(images, key=lambda g: g.pixels * g.channels)
    n, c, h, w = big.pixels, big.channels, big.height, big.width
    held = {"input": frames + decoding, "working images": 4 * c * n}  # the display image
    phases: dict[str, dict[str, int]] = {"stretch": {"working images": _STRETCH_BYTES_PER_PIXEL * n}}
    kept: dict[str, int] = {}  # images held after their phase (the colorized image for enhance, lightness)
    if colorizer is not None:
        inflight, stitch = _tiles(h, w, colorizer)
        lab_rows = min(_LAB_ROWS, h) * w * 3 * 8 * _LAB_ARRAYS
        phases["colour"] = {"working images": 8 * n + lab_rows, "tiles in flight": inflight, "stitch buffer": stitch,
                            "output": 8 * n + 12 * n}  # (a*, b*) stitched, then the sRGB result
        kept = {"working images": 4 * n, "output": 12 * n}  # lightness (for its check), the colour image
    scale = 1
    if upscaler is not None:
        scale = int(upscaler.scale)
        inflight, stitch = _tiles(h, w, upscaler)
        phases["upscale"] = _plus(kept, {"tiles in flight": inflight, "stitch buffer": stitch,
                                         "output": n * scale * scale * 3 * 4})
    out_px = n * scale * scale
    result = {"output": out_px * 3 * 4}
    if op is Operation.ENHANCE:
        result = _plus(result, {"output": 12 * n})  # the colorized image, kept for curators
    writers = {"products": _WRITER_BYTES_PER_PIXEL * out_px + 3 * n}  # + the colorized PNG's 8-bit copy
    if op is Operation.UPSCALE:
        phases["flux"] = _plus(result, {"products": _FLUX_BYTES_PER_PIXEL * out_px})
        writers = _plus(writers, {"products": 4 * out_px * 2})  # the flux image and its FITS copy
    phases["products"] = _plus(_plus(result, writers), {"working images": 4 * n} if colorizer is not None else {})
    return JobEstimate(what=f"{op} of {big.describe()}", held=held, phases=phases)


def _plus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out
