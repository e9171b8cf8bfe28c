"""Cost of SR candidate architectures (issue 22): GMAC per output megapixel and measured CPU time
per 64 px input tile, each as a ratio to the first shipped default (SRResNet 32 channels x 8 blocks)
measured in the same run.

GMACs are counted by torch (:func:`astro_pipeline.models.cost.gmac_per_megapixel`). Times
are medians of interleaved runs at batch 1 (the engine's calibrated setting on these CPUs), so a
burst of other work on a shared machine lands on every candidate alike::

    python benchmarks/bench_sr_candidates.py            # about a minute on 2 CPU cores
    python benchmarks/bench_sr_candidates.py --quick    # fewer repeats, smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

try:  # run as a script from a checkout without installing the package
    import astro_pipeline  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from astro_pipeline.models.cost import gmac_per_megapixel
from astro_pipeline.models.superres import SRResNet

BASELINE = (32, 8)
CANDIDATES = ((32, 8), (32, 16), (32, 24), (48, 8), (48, 12), (64, 16))


def gmac_per_mp(model: torch.nn.Module, tile: int = 64, scale: int = 4) -> float:
    """Multiply-accumulates per output megapixel of one ``tile`` px input tile."""
    return gmac_per_megapixel(model, torch.rand(1, 3, tile, tile), scale=scale)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 9
    models = {c: SRResNet(channels=c[0], blocks=c[1], scale=4).eval() for c in CANDIDATES}
    x = torch.rand(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    for m in models.values():
        m.to(memory_format=torch.channels_last)
    times: dict[tuple[int, int], list[float]] = {c: [] for c in models}
    with torch.inference_mode():
        for m in models.values():
            m(x)  # warm-up
        for _ in range(repeats):
            for c, m in models.items():  # interleaved
                t0 = time.perf_counter()
                m(x)
                times[c].append(time.perf_counter() - t0)
    base_g = gmac_per_mp(models[BASELINE])
    base_t = statistics.median(times[BASELINE])
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else "?"
    print(f"# SR candidate cost; CPU {cpu}; {args.threads} thread(s); load {os.getloadavg()[0]:.1f}; {repeats} repeats")
    print(f"{'candidate':<16}{'GMAC/MP':>10}{'x base':>8}{'ms/tile':>10}{'x base':>8}")
    for c in models:
        g, t = gmac_per_mp(models[c]), statistics.median(times[c])
        print(f"SRResNet {c[0]}x{c[1]:<6}{g:>10.1f}{g / base_g:>8.2f}{t * 1e3:>10.1f}{t / base_t:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
