"""Inference benchmark: model throughput vs the machine's matmul rate, engine overhead, batching gain,
and peak memory (RSS) of a 4k x 4k -> 16k x 16k upscale against a 1k x 1k one.

Prints one table. Needs only torch, numpy and this package's ``tiles``, ``inference`` and
``models`` modules (no astropy, Prefect or Playwright), so it also runs on a bare GPU machine::

    python benchmarks/bench_inference.py            # about 2-4 minutes on 2 CPU cores
    python benchmarks/bench_inference.py --quick    # fewer repeats, smoke run
    python benchmarks/bench_inference.py --device cuda

First a batching diagnosis of the shipped SRResNet: time per network segment (median of interleaved
runs) at batch 1, 4 and 16 in NCHW (contiguous) and channels_last, the bytes each segment moves per
tile (activations in + out, counted by forward hooks: this VM exposes no hardware cache counters),
the largest layer's working set at each batch against the L2/L3 sizes, and the same totals at 1
thread and at every core. Then the engine's own calibration (:mod:`astro_pipeline.engine_tuning`,
measured fresh, not read from the cache), its choice and the gain over the old fixed batch 16.

Rows: ``matmul`` (torch.mm GFLOP/s per precision, the reference); ``model`` (tiles/s and achieved
GFLOP/s per model and precision, ratio = share of the matmul rate); ``overhead`` (the Engine at its
calibrated setting on a whole image vs the bare model looping over pre-cut tiles at that setting;
median of interleaved runs, target < 1.10); ``batching`` (the engine at its calibrated setting vs a
naive one-tile fp32 NCHW loop; done when >= 1.3x, or when batch 1 is measured best and chosen);
``rss`` (peak RSS of separate processes upscaling 1k and 4k inputs through the real engine with a
near-free stand-in model, output written band by band into a memmap; target < 1.5).

Timings on a shared machine: every comparison interleaves its candidates and reports medians, so a
burst of other work lands on all of them; the header prints the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

try:  # run as a script from a checkout without installing the package
    import astro_pipeline  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from astro_pipeline import engine_tuning
from astro_pipeline.inference import Engine, cpu_supports_bf16, resolve_device
from astro_pipeline.models.registry import build_model, default_meta
from astro_pipeline.tiles import TileGrid, open_output_memmap

__all__ = ["batching_diagnosis", "format_diagnosis", "main", "matmul_gflops", "model_flops_per_tile", "run_benchmarks"]

_DT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: "wall": perf_counter; "cpu": this process's CPU time (set with 1 torch thread: on a machine shared
#: with other jobs, CPU time is what the work cost, wall time is mostly waiting for a core).
CLOCK = {"name": "wall", "fn": time.perf_counter}


def use_clock(name: str) -> None:
    """Select the clock used by every measurement ("wall" or "cpu")."""
    if name not in ("wall", "cpu"):
        raise ValueError(f"clock must be wall or cpu, got {name!r}")
    CLOCK["name"], CLOCK["fn"] = name, (time.perf_counter if name == "wall" else time.process_time)


def _timed(fn: Callable[[], Any], device: torch.device, *, min_time: float, min_iters: int = 2,
           max_iters: int = 1000, warmup: Callable[[], Any] | None = None) -> float:
    """Seconds per call: the fastest of repeated calls (robust on a shared machine), after a warm-up
    call (``warmup`` or ``fn`` itself), repeating until ``min_time`` and ``min_iters`` are reached."""
    clock = CLOCK["fn"]
    (warmup or fn)()
    _sync(device)
    best, n, start = float("inf"), 0, clock()
    while True:
        t0 = clock()
        fn()
        _sync(device)
        best = min(best, clock() - t0)
        n += 1
        if (clock() - start >= min_time and n >= min_iters) or n >= max_iters:
            return best


def _peak_rss_mb() -> float:
    """Peak resident set of this process image in MB (VmHWM: reset by exec, unlike ru_maxrss)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def precisions_for(device: torch.device) -> list[str]:
    """Precisions worth measuring here: fp32 always; bf16 where the hardware has it; fp16 on CUDA."""
    if device.type == "cuda":
        out = ["fp32", "fp16"]
        if torch.cuda.is_bf16_supported():
            out.append("bf16")
        return out
    return ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"]


def matmul_gflops(device: torch.device, precision: str, *, n: int, min_time: float) -> float:
    """Practical matmul peak: GFLOP/s of torch.mm on n x n matrices at this precision."""
    a = torch.randn(n, n, device=device, dtype=_DT[precision])
    b = torch.randn(n, n, device=device, dtype=_DT[precision])
    with torch.inference_mode():
        sec = _timed(lambda: torch.mm(a, b), device, min_time=min_time, min_iters=3)
    return 2.0 * n**3 / sec / 1e9


def model_flops_per_tile(model: nn.Module, in_channels: int, tile: int) -> float:
    """FLOPs of one forward on one tile (torch's FLOP counter: 2 per multiply-add in conv/matmul)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, in_channels, tile, tile)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return float(counter.get_total_flops())


def _bare_loop(model: nn.Module, tiles: torch.Tensor, *, batch: int, precision: str, device: torch.device,
               channels_last: bool) -> Callable[[], None]:
    """The bare model over pre-cut tiles already on the device: the engine's lower bound."""
    def run() -> None:
        with torch.inference_mode():
            for i in range(0, len(tiles), batch):
                x = tiles[i : i + batch]
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                if precision == "fp32":
                    model(x)
                else:
                    with torch.autocast(device_type=device.type, dtype=_DT[precision]):
                        model(x)
    return run


def resolve_precision_for(device: torch.device) -> str:
    from astro_pipeline.inference import resolve_precision

    return resolve_precision("auto", device)


def _interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, *, runs: int, seed: int = 0) -> dict[str, float]:
    """Median seconds per call of each function, run in a fresh shuffled order each round (after one
    warm-up call each), so load from other jobs falls on every candidate alike."""
    clock = CLOCK["fn"]
    for fn in fns.values():
        fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    rnd = random.Random(seed)
    for _ in range(runs):
        rnd.shuffle(order)
        for k in order:
            t0 = clock()
            fns[k]()
            _sync(device)
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _segments(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's top-level stages, Sequentials split into their layers (SRResNet: head, body,
    body_tail, upsample.0-5, tail.0-2)."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential) and name in ("upsample", "tail"):
            out += [(f"{name}.{i} {type(c).__name__}", c) for i, c in enumerate(child)]
        else:
            out.append((f"{name} ({len(child)} blocks)" if isinstance(child, nn.Sequential) and name == "body" else name, child))
    return out


def _cache_bytes(level: int) -> int | None:
    """Size of a CPU cache level from sysfs (per instance), or None."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for idx in sorted(base.glob("index*")):
            if (idx / "level").read_text().strip() == str(level) and (idx / "type").read_text().strip() in ("Unified", "Data"):
                text = (idx / "size").read_text().strip().upper()
                mult = {"K": 1024, "M": 1024**2}.get(text[-1], 1)
                return int(text.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return None


def _traffic(model: nn.Module, segments: list[tuple[str, nn.Module]], in_channels: int, tile: int) -> dict[str, Any]:
    """Per segment: bytes its leaf layers read + write per tile (activations and weights), output shape;
    and the largest single-layer working set (input + output) per tile."""
    seg_of: dict[int, str] = {}
    for name, seg in segments:
        for leaf in seg.modules():
            if not list(leaf.children()):
                seg_of[id(leaf)] = name
    moved = {name: 0 for name, _ in segments}
    shape: dict[str, str] = {}
    largest = [0, ""]
    hooks = []

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        name = seg_of[id(mod)]
        act = (inp[0].numel() + out.numel()) * out.element_size()
        moved[name] += act + sum(p.numel() * p.element_size() for p in mod.parameters(recurse=False))
        if act > largest[0]:
            largest[0], largest[1] = act, f"{name}: {tuple(inp[0].shape[1:])} -> {tuple(out.shape[1:])}"

    def seg_hook(name: str) -> Callable[..., None]:
        def fn(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            shape[name] = "x".join(str(d) for d in out.shape[1:])
        return fn

    for leaf_id_mod in model.modules():
        if id(leaf_id_mod) in seg_of:
            hooks.append(leaf_id_mod.register_forward_hook(hook))
    for name, seg in segments:
        hooks.append(seg.register_forward_hook(seg_hook(name)))
    try:
        with torch.inference_mode():
            model(torch.zeros(1, in_channels, tile, tile, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return {"moved": moved, "shape": shape, "largest": largest[0], "largest_layer": largest[1]}


def batching_diagnosis(model: nn.Module, *, in_channels: int, tile: int, device: torch.device, precision: str,
                       batches: tuple[int, ...] = (1, 4, 16), runs: int = 5, label: str = "") -> dict[str, Any]:
    """Time per segment at each (batch, memory format), totals at 1 thread and all cores, traffic,
    and a fresh engine calibration. Returns a dict for :func:`format_diagnosis`."""
    segments = _segments(model)
    traffic = _traffic(model, segments, in_channels, tile)
    load = machine_busy()[1]
    n = max(batches)
    tiles = torch.rand(n, in_channels, tile, tile, device=device)
    fmts = engine_tuning.MEMORY_FORMATS
    cands = [(b, f) for f in fmts for b in batches]
    clock = CLOCK["fn"]
    seg_t: dict[tuple[int, str], dict[str, list[float]]] = {c: {s: [] for s, _ in segments} for c in cands}
    tot_t: dict[tuple[int, str], list[float]] = {c: [] for c in cands}
    starts: dict[str, float] = {}
    acc: dict[str, float] = {}
    hooks = []
    for name, seg in segments:
        hooks.append(seg.register_forward_pre_hook(lambda m, i, name=name: starts.__setitem__(name, clock())))
        hooks.append(seg.register_forward_hook(
            lambda m, i, o, name=name: acc.__setitem__(name, acc.get(name, 0.0) + clock() - starts[name])))

    def run(b: int, f: str) -> float:
        engine_tuning.set_memory_format(model, f)
        acc.clear()
        t = engine_tuning.time_tiles(model, tiles, b, f, precision, device)
        return t

    try:
        for c in cands:
            run(*c)  # warm-up
        rnd = random.Random(1)
        order = list(cands)
        for _ in range(runs):
            rnd.shuffle(order)
            for c in order:
                tot_t[c].append(run(*c) / n)
                for s, _ in segments:
                    seg_t[c][s].append(acc.get(s, 0.0) / n)
    finally:
        for h in hooks:
            h.remove()
    # threads: totals only, at 1 thread and at every core (hooks off)
    thread_t: dict[tuple[int, int, str], float] = {}
    if device.type == "cpu":
        old = torch.get_num_threads()
        counts = sorted({1, os.cpu_count() or 1})
        ends = (min(batches), max(batches))
        keys = [(t, b, f) for t in counts for b in ends for f in fmts]
        samples: dict[tuple[int, int, str], list[float]] = {k: [] for k in keys}
        try:
            rnd = random.Random(2)
            for _ in range(max(3, runs - 2)):
                rnd.shuffle(keys)
                for t, b, f in keys:
                    torch.set_num_threads(t)
                    samples[(t, b, f)].append(run(b, f) / n)
        finally:
            torch.set_num_threads(old)
        thread_t = {k: statistics.median(v) for k, v in samples.items()}
    choice = engine_tuning.calibrate(model, in_channels=in_channels, tile=tile, device=device, precision=precision,
                                     batches=engine_tuning.candidate_batches(device))
    return {
        "label": label, "precision": precision, "device": str(device), "batches": batches, "formats": fmts,
        "runs": runs, "threads": torch.get_num_threads() if device.type == "cpu" else 0,
        "segments": [s for s, _ in segments], "traffic": traffic,
        "seg_ms": {c: {s: 1000 * statistics.median(v) for s, v in seg_t[c].items()} for c in cands},
        "total_ms": {c: 1000 * statistics.median(v) for c, v in tot_t.items()},
        "thread_ms": {k: 1000 * v for k, v in thread_t.items()},
        "l2": _cache_bytes(2), "l3": _cache_bytes(3), "choice": choice, "load": load, "cores": os.cpu_count() or 1,
    }


def format_diagnosis(d: dict[str, Any]) -> str:
    """The diagnosis as markdown tables plus the reading of them."""
    cands = [(b, f) for f in d["formats"] for b in d["batches"]]
    short = {"contiguous": "NCHW", "channels_last": "CL"}
    head = [f"b{b} {short[f]}" for b, f in cands]
    mb = 1024**2
    lines = [f"Batching diagnosis: {d['label']} at {d['precision']} on {d['device']}, {d['threads']} threads; ms per tile, "
             f"median of {d['runs']} interleaved runs (16 random tiles per run). Bytes from forward hooks "
             "(activations in + out + weights, per tile; no hardware counters on this machine).", "",
             "| segment | output (C x H x W) | MB moved per tile | " + " | ".join(head) + " |",
             "|---|---|---|" + "---|" * len(head)]
    tr = d["traffic"]
    for s in d["segments"]:
        lines.append(f"| {s} | {tr['shape'].get(s, '')} | {tr['moved'][s] / mb:.2f} | "
                     + " | ".join(f"{d['seg_ms'][c][s]:.2f}" for c in cands) + " |")
    rest = {c: d["total_ms"][c] - sum(d["seg_ms"][c].values()) for c in cands}
    lines.append("| (global bicubic skip, adds, layout copies) | | | " + " | ".join(f"{rest[c]:.2f}" for c in cands) + " |")
    lines.append(f"| **total** | | {sum(tr['moved'].values()) / mb:.1f} | " + " | ".join(f"**{d['total_ms'][c]:.1f}**" for c in cands) + " |")
    lines.append(f"| largest layer working set at this batch (MB) | {tr['largest_layer']} | | "
                 + " | ".join(f"{b * tr['largest'] / mb:.0f}" for b, _ in cands) + " |")
    if d["thread_ms"]:
        counts = sorted({t for t, _, _ in d["thread_ms"]})
        lines += ["", "| threads | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
        for t in counts:
            lines.append(f"| {t} | " + " | ".join(f"{d['thread_ms'][(t, b, f)]:.1f}" if (t, b, f) in d["thread_ms"] else ""
                                                  for b, f in cands) + " |")
    l2, l3 = d["l2"], d["l3"]
    caches = ", ".join(x for x in (f"L2 {l2 / mb:.1f} MB per core" if l2 else "", f"L3 {l3 / mb:.0f} MB" if l3 else "") if x)
    ch: engine_tuning.EngineChoice = d["choice"]
    lines += ["", f"Caches: {caches or 'unknown'}.", "", diagnosis_reading(d)]
    gain_old = ch.gain_over(max(d["batches"]), "contiguous")
    lines += ["",
              f"Engine calibration (fresh, median of 3 interleaved rounds): {', '.join(f'{k} {v:.1f}' for k, v in ch.tiles_per_s.items())} tiles/s "
              f"-> chooses **{ch.label()}**" + (f", x{gain_old:.2f} the throughput of the old fixed b{max(d['batches'])}/NCHW" if gain_old else "") + "."]
    return "\n".join(lines)


def diagnosis_reading(d: dict[str, Any]) -> str:
    """What the diagnosis numbers say, in words chosen by the numbers (quiet and loaded machines differ)."""
    mb = 1024**2
    short = {"contiguous": "NCHW", "channels_last": "CL"}
    batches, fmts, tot, tr = d["batches"], d["formats"], d["total_ms"], d["traffic"]
    b_lo, b_hi = min(batches), max(batches)
    cands = [(b, f) for f in fmts for b in batches]
    best = min(cands, key=lambda c: tot[c])
    old = (b_hi, "contiguous")
    out = [f"Reading (load average {d.get('load', 0.0):.1f} on {d.get('cores', 0)} cores): fastest is b{best[0]} "
           f"{short[best[1]]} at {tot[best]:.1f} ms/tile; the old fixed b{b_hi} NCHW takes {tot[old]:.1f} "
           f"(x{tot[old] / tot[best]:.2f})."]
    if len(fmts) == 2:
        gain = [tot[(b, "contiguous")] / tot[(b, "channels_last")] for b in batches]
        where = "at every batch" if min(gain) > 1 else "at some batches"
        out.append(f"channels_last beats NCHW {where} (x{min(gain):.2f}-x{max(gain):.2f}): oneDNN reorders NCHW activations "
                   "into its blocked layout and back around every convolution.")
    l3 = d.get("l3") or 0
    fits = max(1, int(l3 // max(tr["largest"], 1))) if l3 else None
    out.append(f"The largest layer ({tr['largest_layer']}) holds {tr['largest'] / mb:.0f} MB per tile, x batch; "
               + (f"from batch {fits + 1} up it no longer fits the {l3 / mb:.0f} MB L3." if fits else "cache size unknown."))
    f = best[1]
    if best[0] == b_lo:
        grow = max(d["segments"], key=lambda s: d["seg_ms"][(b_hi, f)][s] - d["seg_ms"][(b_lo, f)][s])
        out.append(f"Batch {b_lo} wins: per tile the arithmetic and bytes are the same at every batch, so the loss at b{b_hi} "
                   f"({tot[(b_hi, f)]:.1f} ms/tile) is memory traffic, largest in {grow}; a 64 px tile already gives each "
                   "convolution 4096 output positions, enough for every core, so batching buys no parallelism here.")
    else:
        th = d.get("thread_ms") or {}
        n = max((t for t, _, _ in th), default=1)
        one, many = th.get((1, b_lo, f)), th.get((n, b_lo, f))
        if one and many and n > 1 and many > one:
            out.append(f"Batch {best[0]} wins because the cores are shared: at b{b_lo} {short[f]}, {n} threads take {many:.0f} ms/tile "
                       f"and 1 thread {one:.0f}, i.e. more threads are slower. Other jobs hold the cores, every batch ends in an "
                       "OpenMP barrier that waits for a descheduled thread, so fewer, larger batches pay that wait less often; and "
                       "the L3 is shared with the other jobs' data, so batch 1's cache advantage (quiet machine) is gone.")
        else:
            out.append(f"Batch {best[0]} wins: larger batches amortise the per-call cost on this device.")
    if d.get("thread_ms"):
        tb = min(d["thread_ms"], key=lambda k: d["thread_ms"][k])
        out.append(f"Over threads too, the fastest is {tb[0]} thread(s) at b{tb[1]} {short[tb[2]]} ({d['thread_ms'][tb]:.1f} ms/tile); "
                   "the thread count is a process-wide setting the engine leaves alone.")
    return " ".join(out)


DIAGNOSIS: dict[str, Any] = {}


def _models(quick: bool) -> list[tuple[str, str, dict[str, Any], int]]:
    """(label, arch, kwargs, tile) of the shipping configurations plus the large SRResNet of the probe."""
    col, sr = default_meta("colorize", name="colorizer"), default_meta("superres", name="superres")
    out = [
        (f"UNet b{col.kwargs['base_channels']} d{col.kwargs['depth']} {col.tile_size}px", col.arch, col.kwargs, col.tile_size),
        (f"SRResNet {sr.kwargs['channels']}x{sr.kwargs['blocks']} {sr.tile_size}px", sr.arch, sr.kwargs, sr.tile_size),
    ]
    if not quick:
        out.append(("SRResNet 64x16 64px", "SRResNet", {"channels": 64, "blocks": 16, "scale": 4}, 64))
    return out


class NearFreeUpscaler(nn.Module):
    """Stand-in for the memory benchmark: nearest-neighbour 4x, almost no compute."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=4, mode="nearest")


def rss_child(size: int, workdir: str, tile: int, batch: int) -> dict[str, Any]:
    """Upscale a size x size grey memmap to a (4size, 4size, 3) uint8 memmap; report peak RSS."""
    torch.set_num_threads(1)
    base = _peak_rss_mb()
    src = np.lib.format.open_memmap(os.path.join(workdir, f"in{size}.npy"), mode="w+", dtype=np.float32,
                                    shape=(size, size))
    for y0 in range(0, size, 256):  # fill band by band and let the pages go
        yy = np.arange(y0, min(size, y0 + 256), dtype=np.float32)[:, None]
        src[y0 : y0 + 256] = 0.5 + 0.4 * np.sin(yy / 37.0) * np.cos(np.arange(size, dtype=np.float32) / 53.0)
    src.flush()
    del src
    image = np.load(os.path.join(workdir, f"in{size}.npy"), mmap_mode="r")
    out = open_output_memmap(os.path.join(workdir, f"out{size}.npy"), (4 * size, 4 * size, 3), np.uint8)
    meta = SimpleNamespace(task="superres", tile_size=tile, scale=4, kwargs={"in_channels": 3}, name="nearest",
                           version="0", arch="NearFreeUpscaler", sha256="")
    eng = Engine(NearFreeUpscaler(), meta, device="cpu", precision="fp32", batch_size=batch)
    t0 = time.process_time()  # one thread: CPU time, robust on a shared machine
    eng.run(image, out=out)
    sec = time.process_time() - t0
    ok = bool(out[4 * size // 2, 4 * size // 3, 0] == np.rint(255 * image[size // 2, size // 3]))
    peak = _peak_rss_mb()
    del out, image
    for f in (f"in{size}.npy", f"out{size}.npy"):
        os.unlink(os.path.join(workdir, f))
    return {"size": size, "peak_rss_mb": peak, "base_rss_mb": base, "seconds": sec,
            "tiles": eng.stats.tiles, "check": ok}


def _rss_run(size: int, tile: int, batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as d:
        cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", str(size), "--workdir", d,
               "--rss-tile", str(tile), "--batch", str(batch)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"RSS child for {size} failed: {res.stderr[-2000:]}")
        return json.loads(res.stdout.strip().splitlines()[-1])


def machine_busy() -> tuple[bool, float]:
    """(busy, 1-minute load average): busy when other jobs keep more runnable tasks than cores."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return False, 0.0
    return load > 1.5 * (os.cpu_count() or 1), load


def run_benchmarks(*, device: str = "auto", quick: bool = False, batch: int = 16, threads: int | None = None,
                   rss_sizes: tuple[int, int] = (1024, 4096), clock: str = "auto") -> list[dict[str, Any]]:
    """All measurements as table rows (dicts). ``clock`` "auto": CPU time with 1 thread on a busy
    CPU-only machine, else wall time."""
    dev = resolve_device(device)
    if clock == "auto":
        clock = "cpu" if dev.type == "cpu" and machine_busy()[0] else "wall"
    use_clock(clock)
    if clock == "cpu":
        threads = 1
    if threads:
        torch.set_num_threads(threads)
    min_time = 0.3 if quick else 1.0
    rows: list[dict[str, Any]] = []
    precs = precisions_for(dev)
    mm: dict[str, float] = {}
    for p in precs:
        mm[p] = matmul_gflops(dev, p, n=1024 if dev.type == "cpu" else 8192, min_time=min_time)
        rows.append({"bench": "matmul", "subject": "torch.mm", "precision": p, "batch": "",
                     "tiles_s": None, "gflops": mm[p], "ratio": 1.0, "result": "reference peak"})
    torch.manual_seed(0)
    sr_for_engine: tuple[nn.Module, Any] | None = None
    for label, arch, kwargs, tile in _models(quick):
        model = build_model(arch, **kwargs).eval()
        in_ch = 1 if arch == "UNetColorizer" else 3
        flops = model_flops_per_tile(model, in_ch, tile)
        model = model.to(dev)
        for p in precs:
            cl = engine_tuning.default_memory_format(dev, p) == "channels_last"
            m = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            tiles = torch.rand(batch, in_ch, tile, tile, device=dev)
            sec = _timed(_bare_loop(m, tiles, batch=batch, precision=p, device=dev, channels_last=cl), dev,
                         min_time=min_time, min_iters=1 if quick else 2,
                         warmup=_bare_loop(m, tiles[:2], batch=2, precision=p, device=dev, channels_last=cl))
            tps = batch / sec
            rows.append({"bench": "model", "subject": label, "precision": p, "batch": batch, "tiles_s": tps,
                         "gflops": tps * flops / 1e9, "ratio": tps * flops / 1e9 / mm[p],
                         "result": f"{flops / 1e9:.2f} GFLOP/tile"})
        if arch == "SRResNet" and sr_for_engine is None:
            meta = SimpleNamespace(task="superres", tile_size=tile, scale=4, kwargs=dict(kwargs), name=label,
                                   version="bench", arch=arch, sha256="")
            sr_for_engine = (model, meta)

    # Why (or whether) batching pays here, and what the engine's calibration picks.
    assert sr_for_engine is not None
    diag = batching_diagnosis(sr_for_engine[0], in_channels=3, tile=sr_for_engine[1].tile_size, device=dev,
                              precision=resolve_precision_for(dev), runs=3 if quick else 5, label=sr_for_engine[1].name)
    diag_choice: engine_tuning.EngineChoice = diag["choice"]
    rows.append({"bench": "calibration", "subject": f"engine choice for {sr_for_engine[1].name}",
                 "precision": diag["precision"], "batch": diag_choice.batch_size,
                 "tiles_s": diag_choice.tiles_per_s[diag_choice.label()], "gflops": None,
                 "ratio": diag_choice.gain_over(16, "contiguous"),
                 "result": f"{diag_choice.label()}; x{diag_choice.gain_over(16, 'contiguous') or float('nan'):.2f} over the "
                           f"old fixed b16/contiguous, x{diag_choice.gain_over(1, 'contiguous') or float('nan'):.2f} over "
                           "b1/contiguous (calibration, median of 3 interleaved rounds)"})
    DIAGNOSIS.clear()
    DIAGNOSIS.update(diag)

    # The engine at its calibrated setting vs the bare loop at that setting, and vs a naive one-tile loop.
    assert sr_for_engine is not None
    model, meta = sr_for_engine
    auto = Engine(model, meta, device=dev, precision="auto", batch_size=diag_choice.batch_size,
                  memory_format=diag_choice.memory_format)
    p = auto.precision
    side = 2 * 56 + 8 if quick else 4 * 56 + 8  # (side + 8 - 64) / 56 + 1 tiles per axis at overlap 8
    img = np.random.default_rng(0).random((side, side)).astype(np.float32)
    grid = TileGrid(side, side, tile=meta.tile_size, overlap=auto.overlap)
    n_tiles = len(grid)
    cut = torch.from_numpy(np.stack([np.repeat(grid.extract(img, t)[None], 3, axis=0) for t in grid.tiles()])).to(dev)
    bare = _bare_loop(auto.model, cut, batch=auto.batch_size, precision=p, device=dev, channels_last=auto.channels_last)

    def naive() -> None:
        auto.model.to(memory_format=torch.contiguous_format)
        try:
            with torch.no_grad():
                for t in grid.tiles():
                    x = torch.from_numpy(np.repeat(grid.extract(img, t)[None, None], 3, axis=1)).to(dev)
                    auto.model(x).cpu()
        finally:
            auto.model.to(memory_format=torch.channels_last if auto.channels_last else torch.contiguous_format)

    runs = 5 if quick else 7
    med = _interleaved({"bare": bare, "engine": lambda: auto.run(img), "naive": naive}, dev, runs=runs)
    t_bare, t_eng, t_naive = med["bare"], med["engine"], med["naive"]
    setting = f"b{auto.batch_size}/{auto.memory_format}"
    rows.append({"bench": "overhead", "subject": f"Engine ({setting}) vs bare loop ({setting}), {meta.name}",
                 "precision": p, "batch": auto.batch_size, "tiles_s": n_tiles / t_eng, "gflops": None,
                 "ratio": t_eng / t_bare,
                 "result": f"engine overhead {100 * (t_eng / t_bare - 1):+.1f}% over {n_tiles} tiles, median of {runs} "
                           "interleaved runs (target < 10%)"})
    speed = t_naive / t_eng
    if speed >= 1.3:
        verdict = "target met (>= 1.3x)"
    elif auto.batch_size == 1:
        verdict = "batch 1 measured best on this device (see diagnosis) and chosen by the engine"
    else:
        verdict = "below 1.3x with batching chosen: investigate"
    rows.append({"bench": "batching", "subject": f"Engine ({p}, {setting}) vs one-tile fp32 NCHW loop", "precision": p,
                 "batch": auto.batch_size, "tiles_s": n_tiles / t_eng, "gflops": None, "ratio": speed,
                 "result": f"speed-up x{speed:.2f} (naive {n_tiles / t_naive:.1f} tiles/s); {verdict}"})

    # Peak RSS, 1k vs 4k input (4k -> 16k x 16k x 3 output), separate processes.
    small, large = (256, 1024) if quick else rss_sizes
    r1, r2 = _rss_run(small, 64, batch), _rss_run(large, 64, batch)
    ratio = r2["peak_rss_mb"] / r1["peak_rss_mb"]
    for r in (r1, r2):
        rows.append({"bench": "rss", "subject": f"upscale {r['size']}^2 -> {4 * r['size']}^2 (stand-in model, memmap)",
                     "precision": "fp32", "batch": batch, "tiles_s": r["tiles"] / r["seconds"], "gflops": None,
                     "ratio": r["peak_rss_mb"] / r1["peak_rss_mb"],
                     "result": f"peak RSS {r['peak_rss_mb']:.0f} MB (after imports {r['base_rss_mb']:.0f} MB), "
                               f"{r['tiles']} tiles, {'ok' if r['check'] else 'WRONG OUTPUT'}"})
    rows[-1]["result"] += f"; ratio {ratio:.2f} (target < 1.5)"
    return rows


def format_table(rows: list[dict[str, Any]], header: str) -> str:
    """A plain-text (markdown) table of the rows."""
    cols = ["bench", "subject", "precision", "batch", "tiles/s", "GFLOP/s", "ratio", "result"]

    def fmt(v: Any, nd: int = 1) -> str:
        if v is None or v == "":
            return ""
        return f"{v:.{nd}f}" if isinstance(v, float) else str(v)

    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        vals = [r["bench"], r["subject"], r["precision"], fmt(r["batch"]), fmt(r["tiles_s"]), fmt(r["gflops"]),
                fmt(r["ratio"], 3), r["result"]]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="short smoke run (smaller sizes, fewer repeats)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto",
                    help="wall time, or CPU time with 1 thread (auto: cpu when the machine is busy)")
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rss-tile", type=int, default=64, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, args.workdir, args.rss_tile, args.batch)))
        return 0
    t0 = time.perf_counter()
    busy, load = machine_busy()
    rows = run_benchmarks(device=args.device, quick=args.quick, batch=args.batch, threads=args.threads,
                          clock=args.clock)
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    header = (f"bench_inference: torch {torch.__version__}, {name}, bf16 on CPU: "
              f"{'yes' if cpu_supports_bf16() else 'no'}, clock: {CLOCK['name']} "
              f"(load average {load:.1f} on {os.cpu_count()} cores{', busy' if busy else ''}), "
              f"{time.perf_counter() - t0:.0f} s wall")
    if DIAGNOSIS:
        print(format_diagnosis(DIAGNOSIS))
        print()
    print(format_table(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
