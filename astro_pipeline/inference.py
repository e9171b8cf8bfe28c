"""Batched, device- and precision-aware streaming of tiles through a model.

Why: images of any size go through fixed-size models with memory bounded by the batch. Tiles
are cut lazily from the (possibly memory-mapped) input, run in batches under
``torch.inference_mode`` on CUDA (else CPU) at the fastest safe precision, and blended into a
:class:`~astro_pipeline.tiles.StitchAccumulator` (which may write into a memmap).

Precision "auto": CUDA -> bf16 autocast (fp16 on GPUs without bf16) with a NaN check and fp32
fallback; CPU -> bf16 autocast only where the CPU has bf16 instructions (AVX512-BF16 or AMX),
else fp32. Batch size and memory format "auto" are chosen per machine by a short calibration
(:mod:`astro_pipeline.engine_tuning`, cached in a file): on a 2-core AVX2 CPU batch 1 in
channels_last wins, because larger batches spill the 4x tail's activations out of L3. On CUDA
out-of-memory the batch is halved and retried.

The colorizer path keeps the input's own lightness: L* in, predicted chroma (a*, b*) out,
recombined with the original L* and mapped into the sRGB gamut by reducing chroma only.

Frame-level context (a small, general hook): a model with a ``frame_context(view, **frame_inputs)``
method gets it called once per :meth:`Engine.run`, on a block-averaged view of the whole frame
(long side at most ``model.context_side``), and the result goes to every tile's forward as
``context=``, beside the per-frame ``frame_inputs`` (for example a band mask). Tiles of one frame
then share one palette instead of each guessing its own.

No astropy here (the benchmark imports this module on bare machines).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from astro_pipeline import engine_tuning
from astro_pipeline.tiles import StitchAccumulator, TileGrid, release_rows

__all__ = [
    "Engine",
    "EngineStats",
    "colorize_display",
    "band_model_lightness_input",
    "colorize_lightness",
    "is_band_model",
    "cpu_supports_bf16",
    "complete_bands",
    "default_overlap",
    "frame_view",
    "lab_to_srgb_keep_lightness",
    "resolve_device",
    "resolve_precision",
    "upscale_display",
]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # pragma: no cover - private probes may change between torch versions
            pass
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; anything else is validated."""
    if isinstance(device, torch.device):
        return device
    text = (device or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(text)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision to run at: ``fp32``, ``bf16`` or ``fp16`` (``auto`` picks the fastest safe one)."""
    p = (precision or "auto").strip().lower()
    if p not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        if p == "auto":  # bf16 keeps fp32's range (fewer overflows), same tensor-core speed
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if p == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError("bf16 requested but this GPU does not support it")
        return p
    if p == "auto":
        return "bf16" if cpu_supports_bf16() else "fp32"
    if p == "fp16":
        raise ValueError("fp16 is not supported on CPU; use fp32 or bf16")
    return p


def default_overlap(tile: int) -> int:
    """Overlap between neighbouring tiles: an eighth of the tile (at least 4 px when it fits)."""
    return min(max(tile // 8, 4), tile // 2)


@dataclass
class EngineStats:
    """What the last :meth:`Engine.run` did (for products, manifests and benchmarks)."""

    tiles: int = 0
    batches: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    precision: str = ""
    device: str = ""
    batch_size: int = 0
    memory_format: str = ""
    fallbacks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tiles": self.tiles,
            "batches": self.batches,
            "seconds": round(self.seconds, 4),
            "model_seconds": round(self.model_seconds, 4),
            "precision": self.precision,
            "device": self.device,
            "batch_size": self.batch_size,
            "memory_format": self.memory_format,
            "fallbacks": list(self.fallbacks),
        }


class Engine:
    """Runs a registry model over whole images, tile by tile, in batches.

    ``meta`` is the model's :class:`~astro_pipeline.models.registry.WeightsMeta` (task, tile size,
    scale). ``run`` takes ``(H, W[, C])`` float32 and returns ``(H*s, W*s, C_out)`` float32.
    ``batch_size`` and ``memory_format`` ("contiguous" | "channels_last") may be "auto": timed on
    this machine once (see :mod:`astro_pipeline.engine_tuning`), remembered in
    ``calibration_cache`` (a JSON file) when given. Not thread-safe: use one Engine per thread.
    """

    def __init__(
        self,
        model: nn.Module,
        meta: Any,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int | str = "auto",
        memory_format: str = "auto",
        calibration_cache: str | Path | None = None,
        compile: bool = False,
        tile_size: int | None = None,
        overlap: int | None = None,
        pad_mode: str = "reflect",
    ) -> None:
        auto_batch = isinstance(batch_size, str)
        if auto_batch and str(batch_size).strip().lower() != "auto":
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
        if not auto_batch and int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        mf = (memory_format or "auto").strip().lower()
        if mf not in ("auto", *engine_tuning.MEMORY_FORMATS):
            raise ValueError(f"memory_format must be auto, contiguous or channels_last, got {memory_format!r}")
        self.meta = meta
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = 0 if auto_batch else int(batch_size)
        self.tile_size = int(tile_size or meta.tile_size)
        if self.tile_size < 4:
            raise ValueError(f"tile size must be >= 4, got {self.tile_size}")
        self.overlap = default_overlap(self.tile_size) if overlap is None else int(overlap)
        self.pad_mode = pad_mode
        self.scale = int(getattr(meta, "scale", 1) or 1)
        kwargs = dict(getattr(meta, "kwargs", {}) or {})
        self.in_channels = int(getattr(model, "in_channels", 0) or kwargs.get("in_channels", 1 if meta.task == "colorize" else 3))
        model = model.to(self.device).eval()
        model.requires_grad_(False)
        self.choice: engine_tuning.EngineChoice | None = None
        if auto_batch:
            self.choice = engine_tuning.choose(
                model, in_channels=self.in_channels, tile=self.tile_size, device=self.device, precision=self.precision,
                batches=engine_tuning.candidate_batches(self.device),
                formats=engine_tuning.MEMORY_FORMATS if mf == "auto" else (mf,), cache=calibration_cache)
            self.batch_size, mf = self.choice.batch_size, self.choice.memory_format
        elif mf == "auto":
            mf = engine_tuning.default_memory_format(self.device, self.precision)
        self.memory_format = mf
        self.channels_last = mf == "channels_last"
        model = model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        self.model = model
        self.forward: Callable[[torch.Tensor], torch.Tensor] = model
        self.compiled = False
        self.notes: list[str] = []
        if compile:
            try:
                self.forward = torch.compile(model)
                self.compiled = True
            except Exception as exc:  # compile is an optimisation; never fail the run for it
                self.notes.append(f"torch.compile unavailable: {exc}")
        self.stats = self._new_stats()
        self._extras: dict[str, torch.Tensor] = {}

    def _new_stats(self) -> EngineStats:
        return EngineStats(precision=self.precision, device=str(self.device), batch_size=self.batch_size,
                           memory_format=self.memory_format)

    # ------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The settings that shaped an output (recorded in products)."""
        return {
            "device": str(self.device),
            "precision": self.precision,
            "batch_size": self.batch_size,
            "memory_format": self.memory_format,
            "calibration": None if self.choice is None else {
                "source": self.choice.source, "choice": self.choice.label(),
                "tiles_per_s": {k: round(v, 2) for k, v in self.choice.tiles_per_s.items()}},
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "scale": self.scale,
            "compiled": self.compiled,
            "notes": list(self.notes),
        }

    def _forward_once(self, x: torch.Tensor, precision: str) -> torch.Tensor:
        if self.compiled:
            try:
                return self._forward_plain(x, precision)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:  # a compile failure shows up on the first call: run eagerly
                self.notes.append(f"torch.compile failed ({type(exc).__name__}: {exc}); running eagerly")
                self.forward = self.model
                self.compiled = False
        return self._forward_plain(x, precision)

    def _forward_plain(self, x: torch.Tensor, precision: str) -> torch.Tensor:
        extras = self._extras
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        if precision == "fp32":
            return self.forward(x, **extras).float()
        with torch.autocast(device_type=self.device.type, dtype=_DTYPES[precision]):
            y = self.forward(x, **extras)
        return y.float()

    def _frame_extras(self, image: np.ndarray, frame_inputs: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
        """Per-frame keyword inputs of every tile's forward: ``frame_inputs`` and, for a model with a
        ``frame_context`` method, the context it computes once from a downsampled view of the frame."""
        extras = {k: torch.as_tensor(np.asarray(v, dtype=np.float32))[None].to(self.device) for k, v in (frame_inputs or {}).items()}
        context_fn = getattr(self.model, "frame_context", None)
        if context_fn is not None:
            view = frame_view(image, max_side=int(getattr(self.model, "context_side", 512)))
            v = self._prepare(view)[None].astype(np.float32, copy=False)
            with torch.inference_mode():
                extras["context"] = context_fn(torch.from_numpy(v).to(self.device), **extras).float()
        return extras

    def _forward_checked(self, x: torch.Tensor) -> torch.Tensor:
        """Forward at the engine's precision; non-finite output from finite input -> fp32 from now on."""
        y = self._forward_once(x, self.precision)
        if self.precision != "fp32" and not bool(torch.isfinite(y).all()) and bool(torch.isfinite(x).all()):
            self.stats.fallbacks.append(f"{self.precision} produced NaN/inf; switched to fp32")
            self.precision = "fp32"
            self.stats.precision = "fp32"
            y = self._forward_once(x, "fp32")
        return y

    def _forward_batch(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, T, T) float32 numpy -> (N, T*s, T*s, C_out) float32 numpy, halving on CUDA OOM."""
        try:
            with torch.inference_mode():
                x = torch.from_numpy(batch).to(self.device, non_blocking=True)
                y = self._forward_checked(x)
                expect = batch.shape[-1] * self.scale
                if y.shape[-1] != expect or y.shape[-2] != expect:
                    y = torch.nn.functional.interpolate(y, size=(expect, expect), mode="bilinear", align_corners=False)
                return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        except torch.cuda.OutOfMemoryError:
            if len(batch) <= 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = max(1, len(batch) // 2)
            self.batch_size = max(1, min(self.batch_size, half))
            self.stats.batch_size = self.batch_size
            self.stats.fallbacks.append(f"CUDA out of memory; batch size halved to {self.batch_size}")
            return np.concatenate([self._forward_batch(batch[:half]), self._forward_batch(batch[half:])])

    def _prepare(self, tile: np.ndarray) -> np.ndarray:
        """A tile (T, T[, C]) -> (C_in, T, T) for the model (grey replicated for RGB models)."""
        if tile.ndim == 2:
            tile = tile[None]
        else:
            tile = np.moveaxis(tile, -1, 0)
        c = tile.shape[0]
        if c == self.in_channels:
            return tile
        if c == 1:
            return np.repeat(tile, self.in_channels, axis=0)
        raise ValueError(f"image has {c} channels but the model takes {self.in_channels}")

    def run(
        self,
        image: np.ndarray,
        *,
        out: np.ndarray | None = None,
        order: Sequence[int] | None = None,
        frame_inputs: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        """Run the model over ``image`` (H, W[, C]) and return the stitched (H*s, W*s, C_out) float32.

        ``out`` may be a preallocated array or memmap of that shape; ``order`` a permutation of
        tile indices (the result does not depend on it);
        ``frame_inputs`` are per-frame arrays passed (with a batch axis of 1) to every forward.
        """
        if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        grid = TileGrid(h, w, tile=self.tile_size, overlap=self.overlap, pad_mode=self.pad_mode)
        indices = list(range(len(grid))) if order is None else [int(i) for i in order]
        if sorted(indices) != list(range(len(grid))):
            raise ValueError("order must be a permutation of the tile indices")
        acc: StitchAccumulator | None = None
        stats = self.stats = self._new_stats()
        self._extras = self._frame_extras(image, frame_inputs)
        # input rows above every remaining tile are never read again: a memmapped input lets them go
        ys = [grid.tile_at(i).y0 for i in indices]
        rest_min = np.minimum.accumulate(np.asarray(ys[::-1] or [0]))[::-1]
        released = 0
        pos = 0
        while pos < len(indices):
            chunk = [grid.tile_at(i) for i in indices[pos : pos + self.batch_size]]
            pos += len(chunk)
            batch = np.stack([self._prepare(grid.extract(image, t)) for t in chunk]).astype(np.float32, copy=False)
            m0 = time.perf_counter()
            result = self._forward_batch(batch)
            stats.model_seconds += time.perf_counter() - m0
            if acc is None:
                acc = StitchAccumulator(grid, scale=self.scale, channels=result.shape[-1], out=out)
            for t, values in zip(chunk, result, strict=True):
                acc.add(t, values)
            stats.tiles += len(chunk)
            stats.batches += 1
            if isinstance(image, np.memmap) and pos < len(indices) and rest_min[pos] > released:
                release_rows(image, released, int(rest_min[pos]))
                released = int(rest_min[pos])
        assert acc is not None
        res = acc.finish()
        stats.seconds = time.perf_counter() - t0
        stats.precision = self.precision
        stats.fallbacks.extend(self.notes)
        self._extras = {}
        return res


# ---------------------------------------------------------------------------------------------
# Colour: keep the input's own lightness


#: Linear sRGB -> CIE XYZ (IEC 61966-2-1, D65), as in :mod:`astro_pipeline.color`.
_XYZ_FROM_RGB = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)


def _lab_to_linear_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab -> linear sRGB without any clipping (so gamut excursions are visible)."""
    from astro_pipeline.color import D65_WHITE

    delta = 6.0 / 29.0
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > delta, f**3, 3.0 * delta**2 * (f - 4.0 / 29.0)) * D65_WHITE
    return xyz @ _RGB_FROM_XYZ.T


def lab_to_srgb_keep_lightness(lightness: np.ndarray, ab: np.ndarray, *, rows_per_chunk: int = 256) -> np.ndarray:
    """sRGB (H, W, 3) float32 whose CIE L* equals ``lightness`` (H, W): out-of-gamut chroma is
    scaled down (hue kept) until the colour fits, instead of clipping RGB (which would change L*)."""
    from astro_pipeline.color import linear_to_srgb

    h, w = lightness.shape
    out = np.empty((h, w, 3), dtype=np.float32)
    tol = 1e-7
    for y0 in range(0, h, rows_per_chunk):
        L = np.clip(np.asarray(lightness[y0 : y0 + rows_per_chunk], dtype=np.float64), 0.0, 100.0)
        AB = np.asarray(ab[y0 : y0 + rows_per_chunk], dtype=np.float64)
        lin = _lab_to_linear_rgb(np.concatenate([L[..., None], AB], axis=-1))
        bad = ((lin < -tol) | (lin > 1 + tol)).any(axis=-1)
        if bad.any():
            Lb, ABb = L[bad], AB[bad]
            lo = np.zeros(len(Lb))  # chroma factor 0 (grey) is always in gamut
            hi = np.ones_like(lo)
            for _ in range(24):
                mid = 0.5 * (lo + hi)
                trial = _lab_to_linear_rgb(np.concatenate([Lb[:, None], ABb * mid[:, None]], axis=-1))
                ok = ((trial >= -tol) & (trial <= 1 + tol)).all(axis=-1)
                lo = np.where(ok, mid, lo)
                hi = np.where(ok, hi, mid)
            lin[bad] = _lab_to_linear_rgb(np.concatenate([Lb[:, None], ABb * lo[:, None]], axis=-1))
        out[y0 : y0 + rows_per_chunk] = linear_to_srgb(np.clip(lin, 0.0, 1.0))
    return out


def is_band_model(engine: Engine) -> bool:
    """True for a band-aware colour model (bands or lightness in, frame context), False for an L -> ab colorizer."""
    return getattr(engine.model, "frame_context", None) is not None and engine.in_channels == 4


def colorize_lightness(engine: Engine, lightness: np.ndarray) -> np.ndarray:
    """L* (H, W) in [0, 100] -> sRGB (H, W, 3) float32 in [0, 1] with exactly that L*."""
    if lightness.ndim != 2:
        raise ValueError(f"expected an (H, W) lightness map, got shape {lightness.shape}")
    if engine.scale != 1:
        raise ValueError("the colorizer must keep the image size (scale 1)")
    if is_band_model(engine):
        ab = engine.run(band_model_lightness_input(engine, lightness), frame_inputs={"mask": np.zeros(3, np.float32)})
    else:
        lnorm = (np.asarray(lightness, dtype=np.float32) / np.float32(50.0)) - np.float32(1.0)
        ab = engine.run(lnorm)
    if ab.shape[-1] != 2:
        raise ValueError(f"colorizer returned {ab.shape[-1]} channels, expected 2 (a*, b*)")
    ab *= np.float32(110.0)
    return lab_to_srgb_keep_lightness(lightness, ab)


def colorize_display(engine: Engine, grey: np.ndarray) -> np.ndarray:
    """Grey display values (H, W) in [0, 1] -> sRGB (H, W, 3) whose L* is the grey's own L*."""
    from astro_pipeline.color import lightness_from_grey

    g = np.clip(np.asarray(grey, dtype=np.float32), 0.0, 1.0)
    return colorize_lightness(engine, lightness_from_grey(g))


def band_model_lightness_input(engine: Engine, lightness: np.ndarray) -> np.ndarray:
    """The grey a band model sees for lightness alone: the product's L* with its sky moved to the
    training images' sky L* (recorded in the weights as ``extra.sky_lightness``), as display grey.

    Only the model input changes; the product is recombined with its own L*.
    """
    from astro_pipeline.color import grey_from_lightness
    from astro_pipeline.sky_level import prepare_model_lightness

    target = (getattr(engine.meta, "extra", None) or {}).get("sky_lightness")
    L = prepare_model_lightness(lightness, target=None if target is None else float(target))
    return grey_from_lightness(L).astype(np.float32, copy=False)


def complete_bands(engine: Engine, bands: np.ndarray, present: Sequence[bool]) -> np.ndarray:
    """Band completion: (H, W, 3) display values in R, G, B slot order with ``present`` (3 flags) ->
    (H, W, 3) float32 in [0, 1] whose given slots are exactly the input's and whose missing slots
    the band model infers (in the frame's own context). Three given: returned as they are.

    This is what ``composition.fill.EngineBandCompletion.complete`` runs for ``compose`` when the
    colorizer weights it is given are a band model (the default colorizer is not)."""
    arr = np.asarray(bands, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) bands in R, G, B slot order, got shape {arr.shape}")
    mask = np.asarray([bool(p) for p in present], dtype=np.float32)
    if mask.shape != (3,):
        raise ValueError(f"present must name three slots (R, G, B), got {present!r}")
    if mask.sum() == 0:
        raise ValueError("no band given: use colorize_lightness for lightness alone")
    if mask.sum() == 3:
        return np.clip(arr, 0.0, 1.0)
    if not is_band_model(engine):
        raise ValueError("band completion needs a band-aware colour model (BandColorizer weights)")
    planes = np.zeros(arr.shape[:2] + (4,), dtype=np.float32)
    planes[..., :3] = np.clip(arr, 0.0, 1.0) * mask
    out = engine.run(planes, frame_inputs={"mask": mask})
    if out.shape[-1] != 3:
        raise ValueError(f"band model returned {out.shape[-1]} channels, expected 3")
    np.clip(out, 0.0, 1.0, out=out)
    given = mask > 0
    out[..., given] = np.clip(arr[..., given], 0.0, 1.0)
    return out


def frame_view(image: np.ndarray, *, max_side: int = 512) -> np.ndarray:
    """Block-mean view of a whole frame, (H, W[, C]) -> (h, w[, C]) float32 with max(h, w) <= max_side.

    The factor is ``ceil(max(H, W) / max_side)``; rows and columns past the last whole block are
    dropped. Reads the input in row bands, so a memory-mapped frame is never copied whole.
    """
    h, w = image.shape[:2]
    f = max(1, int(np.ceil(max(h, w) / max_side)))
    if f == 1:
        return np.asarray(image, dtype=np.float32)
    hh, ww = max(1, h // f), max(1, w // f)
    rest = image.shape[2:]
    out = np.empty((hh, ww) + rest, dtype=np.float32)
    band = max(1, 4096 // f)
    for r0 in range(0, hh, band):
        r1 = min(hh, r0 + band)
        block = np.asarray(image[r0 * f : r1 * f, : ww * f], dtype=np.float32)
        out[r0:r1] = block.reshape((r1 - r0, f, ww, f) + rest).mean(axis=(1, 3))
    return out


def upscale_display(engine: Engine, image: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Display image (H, W) or (H, W, 3) in [0, 1] -> (sH, sW, 3) float32 clipped to [0, 1]."""
    res = engine.run(np.asarray(image) if not isinstance(image, np.memmap) else image, out=out)
    if np.issubdtype(res.dtype, np.floating):
        for y0 in range(0, res.shape[0], 1024):  # in place, band by band
            np.clip(res[y0 : y0 + 1024], 0.0, 1.0, out=res[y0 : y0 + 1024])
    return res
