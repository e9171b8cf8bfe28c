"""Batch size and memory format per device: a short calibration, cached per machine.

Why: batching is not free. On a 2-core AVX2 CPU the 4x SRResNet's last layers hold ~16 MB of
activations per 64 px tile (32 channels at 256 x 256, in and out), so a batch of 16 streams
~256 MB per layer through DRAM while one tile stays in the 32 MB L3; oneDNN convolutions in NCHW
also reorder every activation to their blocked layout and back. The measured result there: batch 1
in channels_last is the fastest, batch 16 in NCHW about 2x slower (``benchmarks/bench_inference.py``
prints the per-layer diagnosis). A GPU wants the opposite. And load changes the answer: when
other jobs hold the cores, every batch ends in an OpenMP barrier that waits for a descheduled
thread, so many small batches lose to a few large ones (measured on the same CPU: b1 ~3x slower
than b16 under load at 2 threads, ~1.3x faster when quiet). So the engine does not guess: it times
the bare model on random tiles for each candidate (interleaved, median of a few rounds, so other
jobs hit every candidate alike) and keeps the fastest, cached in a JSON file keyed by machine,
torch version, threads, model, precision and load class (quiet or busy: 1-minute load average
below or at least the core count). Ties (within ``TIE``) go to the smaller batch (less memory).

No astropy here (the benchmark imports this module on bare machines).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "CALIBRATION_FILE",
    "EngineChoice",
    "MEMORY_FORMATS",
    "calibrate",
    "candidate_batches",
    "choose",
    "default_memory_format",
    "load_class",
    "machine_fingerprint",
    "set_memory_format",
    "time_tiles",
]

#: File name of the per-machine cache under ``Settings.cache_dir``.
CALIBRATION_FILE = "engine-calibration.json"
MEMORY_FORMATS = ("contiguous", "channels_last")
#: Candidates within this fraction of the fastest count as a tie (the smaller batch wins).
TIE = 0.03
#: Tiles timed per candidate and round (at least one whole batch).
MIN_TILES = 8
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_LOCK = threading.Lock()
_MEMO: dict[str, EngineChoice] = {}


@dataclass(frozen=True)
class EngineChoice:
    """The batch size and memory format chosen for one (machine, model, precision), and the evidence."""

    batch_size: int
    memory_format: str
    tiles_per_s: dict[str, float] = field(default_factory=dict)  # "b<batch>/<format>" -> median tiles/s
    source: str = "measured"  # measured | cache | memo
    key: str = ""
    measured_at: str = ""
    load_average: float | None = None
    load_class: str = ""

    def label(self) -> str:
        return f"b{self.batch_size}/{self.memory_format}"

    def gain_over(self, batch: int, memory_format: str) -> float | None:
        """Throughput of the choice over that of another candidate (None if it was not measured)."""
        other = self.tiles_per_s.get(f"b{batch}/{memory_format}")
        mine = self.tiles_per_s.get(self.label())
        return None if not other or not mine else mine / other


@functools.lru_cache(maxsize=4)
def machine_fingerprint(device: str = "cpu") -> dict[str, str]:
    """What makes timings comparable: CPU model and vector flags (or the GPU's name), cores, torch."""
    out = {"machine": platform.machine(), "torch": torch.__version__, "cores": str(os.cpu_count() or 0)}
    dev = torch.device(device)
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
        return out
    model, flags = platform.processor() or "", ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name") and not model.strip():
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    keep = ("avx", "fma", "amx", "sse4", "neon", "asimd", "sve")
                    flags = " ".join(sorted(f for f in line.split(":", 1)[1].split() if f.startswith(keep)))
    except OSError:
        pass
    out.update(cpu=model.strip(), flags=flags)
    return out


def load_class(device: torch.device) -> str:
    """``busy`` when the 1-minute load average reaches the core count (CPU only), else ``quiet``."""
    if device.type != "cpu":
        return "quiet"
    try:
        return "busy" if os.getloadavg()[0] >= (os.cpu_count() or 1) else "quiet"
    except OSError:
        return "quiet"


def _key(model: nn.Module, *, in_channels: int, tile: int, device: torch.device, precision: str,
         batches: Sequence[int], formats: Sequence[str], load: str) -> str:
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    ident = {
        "fingerprint": machine_fingerprint(str(device)),
        "threads": torch.get_num_threads() if device.type == "cpu" else 0,
        "load": load,
        "model": type(model).__name__,
        "shapes": hashlib.sha256(repr(shapes).encode()).hexdigest()[:16],
        "in_channels": in_channels, "tile": tile, "precision": precision,
        "batches": list(batches), "formats": list(formats),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def candidate_batches(device: torch.device, limit: int | None = None) -> tuple[int, ...]:
    """Batch sizes worth timing: small ones on CPU (cache-bound), larger ones on a GPU."""
    base = (1, 4, 16) if device.type == "cpu" else (4, 16, 64)
    if limit is not None:
        base = tuple(b for b in base if b <= limit) or (max(1, int(limit)),)
    return base


def default_memory_format(device: torch.device, precision: str) -> str:
    """The memory format when the batch size is fixed (no calibration): channels_last on CPU (oneDNN's
    own layout; NCHW pays a reorder around every convolution) and for GPU tensor-core precisions."""
    return "channels_last" if device.type == "cpu" or precision != "fp32" else "contiguous"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_memory_format(model: nn.Module, memory_format: str) -> None:
    """Convert the model's parameters in place to ``memory_format``."""
    model.to(memory_format=torch.channels_last if memory_format == "channels_last" else torch.contiguous_format)


def time_tiles(model: nn.Module, tiles: torch.Tensor, batch: int, memory_format: str, precision: str,
         device: torch.device) -> float:
    """Seconds to push all ``tiles`` through ``model`` in batches of ``batch``."""
    mf = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(tiles), batch):
            x = tiles[i : i + batch].contiguous(memory_format=mf)
            if precision == "fp32":
                model(x)
            else:
                with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
                    model(x)
    _sync(device)
    return time.perf_counter() - t0


def calibrate(model: nn.Module, *, in_channels: int, tile: int, device: torch.device, precision: str,
              batches: Sequence[int], formats: Sequence[str] = MEMORY_FORMATS, rounds: int = 3,
              seed: int = 0) -> EngineChoice:
    """Time every (batch, memory format) on the same random tiles and pick the fastest.

    Each round runs the candidates in a fresh shuffled order, each over at least ``MIN_TILES``
    tiles in whole batches; the median over rounds is kept. The model is left in the chosen memory
    format. First use costs seconds to a minute per model on a loaded 2-core CPU; then it is cached.
    """
    import random

    n = max(max(batches), MIN_TILES)
    per = {b: max(b, MIN_TILES) // b * b for b in batches}  # tiles timed per candidate: whole batches, >= MIN_TILES
    gen = torch.Generator().manual_seed(seed)
    tiles = torch.rand(n, in_channels, tile, tile, generator=gen).to(device)
    cands = [(b, f) for f in formats for b in batches]
    times: dict[tuple[int, str], list[float]] = {c: [] for c in cands}
    for f in formats:  # warm-up: first calls create oneDNN/cuDNN primitives; a batch that does not fit is dropped
        set_memory_format(model, f)
        for b in batches:
            try:
                time_tiles(model, tiles[:b], b, f, precision, device)
            except torch.cuda.OutOfMemoryError:
                cands.remove((b, f))
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if not cands:
        raise torch.cuda.OutOfMemoryError(f"out of memory at every candidate batch size {list(batches)}")
    order = list(cands)
    rnd = random.Random(seed)
    for _ in range(max(1, rounds)):
        rnd.shuffle(order)
        for b, f in order:
            set_memory_format(model, f)
            times[(b, f)].append(time_tiles(model, tiles[: per[b]], b, f, precision, device))
    rate = {f"b{b}/{f}": per[b] / statistics.median(times[(b, f)]) for b, f in cands}
    best = max(rate.values())
    # smallest batch within TIE of the best; among those, the faster format
    pick = min(((b, f) for b, f in cands if rate[f"b{b}/{f}"] >= best * (1 - TIE)),
               key=lambda c: (c[0], -rate[f"b{c[0]}/{c[1]}"]))
    set_memory_format(model, pick[1])
    try:
        load: float | None = os.getloadavg()[0]
    except OSError:
        load = None
    return EngineChoice(batch_size=pick[0], memory_format=pick[1], tiles_per_s=rate, source="measured",
                        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), load_average=load,
                        load_class=load_class(device))


def _read_cache(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or corrupt: measure again (it is only a cache)


def _write_cache(path: Path, key: str, choice: EngineChoice) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read_cache(path)
    data[key] = asdict(choice) | {"source": "measured"}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def choose(model: nn.Module, *, in_channels: int, tile: int, device: torch.device, precision: str,
           batches: Sequence[int], formats: Sequence[str] = MEMORY_FORMATS, cache: str | Path | None = None,
           rounds: int = 3) -> EngineChoice:
    """The cached choice for this machine and model, else a fresh :func:`calibrate` (then cached).

    ``cache`` is the JSON file (``Settings.cache_dir / CALIBRATION_FILE``); without it the choice
    is remembered for this process only. The model is put in the chosen memory format.
    """
    formats = tuple(formats)
    load = load_class(device)
    key = _key(model, in_channels=in_channels, tile=tile, device=device, precision=precision,
               batches=batches, formats=formats, load=load)
    with _LOCK:
        hit = _MEMO.get(key)
        if hit is None and cache is not None:
            raw = _read_cache(Path(cache)).get(key)
            if isinstance(raw, dict):
                try:
                    hit = EngineChoice(**{**raw, "source": "cache", "key": key})
                except TypeError:
                    hit = None
            if hit is not None and (hit.batch_size not in batches or hit.memory_format not in formats):
                hit = None
        if hit is None:
            hit = calibrate(model, in_channels=in_channels, tile=tile, device=device, precision=precision,
                            batches=batches, formats=formats, rounds=rounds)
            hit = EngineChoice(**{**asdict(hit), "key": key, "load_class": load})
            if cache is not None:
                try:
                    _write_cache(Path(cache), key, hit)
                except OSError:
                    pass  # a read-only cache folder costs a calibration per process, nothing else
        else:
            set_memory_format(model, hit.memory_format)
        _MEMO[key] = EngineChoice(**{**asdict(hit), "source": "memo" if hit.source == "measured" else hit.source})
        return hit
