"""Sweep benchmark: steady-state time per image of the sample sweep vs model-only inference time.

Runs the real ``archive_sweep`` flow (Prefect ephemeral mode, thread task runner) over the built-in
sample served by the local replica, exactly as ``astro-pipeline sweep --sample`` does (same settings
overrides, HLA datasets as cutouts), then reports:

* ``steady-state per image``: wall time of the fetch+process phase divided by the images made
  (excludes start-up: Prefect's temporary server, listing, model loading, manifests);
* ``model-only per image``: time inside the models' forward passes for the same tiles, measured
  by the engine during the same run;
* ``overhead ratio`` = steady-state / model-only (target < 2x);
* where the rest goes, per image: download, ingest (re-read timed after the run), tiling
  (engine time outside the forward pass), writing products, catalog, and orchestration (the
  wall time not covered by the per-item stages; negative when threads overlapped work).

    python benchmarks/bench_sweep.py                 # full sample, shipped weights
    python benchmarks/bench_sweep.py --mini --weights-dir /tmp/tiny --archives mast
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mini", action="store_true", help="use the mini sample")
    ap.add_argument("--weights-dir", type=Path, default=None, help="folder with colorizer/superres weights")
    ap.add_argument("--archives", default="mast,hla,esahubble", help="comma-separated archives to sweep")
    ap.add_argument("--output", type=Path, default=None, help="output folder (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

    from astro_pipeline.archives.replica.server import ReplicaServer
    from astro_pipeline.config import get_settings
    from astro_pipeline.ingest.readers import read_frames
    from astro_pipeline.sample import build_sample
    from astro_pipeline.sample_watch_list import sample_overrides, sample_watch_list
    from flows.common import build_task_runner
    from flows.sweep import archive_sweep

    archives = [a.strip() for a in args.archives.split(",") if a.strip()]
    out = args.output or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    t_start = time.perf_counter()
    index = build_sample(mini=args.mini, cache_dir=get_settings().cache_dir)
    with ReplicaServer(index.root) as replica:
        overrides: dict[str, Any] = {"output_dir": str(out), **sample_overrides(replica.url, get_settings())}
        if args.weights_dir:
            overrides["weights_dir"] = str(args.weights_dir.resolve())
        settings = get_settings().with_overrides(**overrides)
        flow = archive_sweep.with_options(task_runner=build_task_runner(settings))
        report = flow(regions=sample_watch_list(index, archives=archives), overrides=overrides)
    total = time.perf_counter() - t_start

    made = [it for it in report.items if it.status in ("ok", "partial")]
    n = len(made)
    if n == 0:
        print(f"nothing was processed: {report.counts}", file=sys.stderr)
        return 1
    stage = {k: sum(it.timings.get(k, 0.0) for it in made) / n
             for k in ("download", "model", "tiling", "ingest+write", "catalog")}
    ingest = 0.0
    for it in made:  # re-read each raw file to split ingest from writing
        if it.raw_path and Path(it.raw_path).is_file():
            t0 = time.perf_counter()
            read_frames(Path(it.raw_path), max_image_pixels=settings.pixel_limit)
            ingest += time.perf_counter() - t0
    ingest /= n
    steady = report.work_seconds / n
    model = stage["model"]
    writing = max(0.0, stage["ingest+write"] - ingest)
    covered = stage["download"] + model + stage["tiling"] + ingest + writing + stage["catalog"]
    workers = getattr(flow.task_runner, "_max_workers", None) or 1
    rows = [
        ("images processed", f"{n}", ""),
        ("tiles through the models", f"{sum(it.tiles for it in made)}", ""),
        ("steady-state per image (wall)", f"{steady:.3f} s", "fetch+process phase / images"),
        ("model-only per image", f"{model:.3f} s", "forward passes, same tiles, same run"),
        ("overhead ratio", f"{steady / model:.2f}x" if model else "n/a", "target < 2x"),
        ("download", f"{stage['download']:.3f} s", "per image, in its task"),
        ("ingest (read + mask + WCS)", f"{ingest:.3f} s", "re-timed after the run"),
        ("tiling + stitching", f"{stage['tiling']:.3f} s", "engine time outside forward passes"),
        ("writing products (+ stretch, quality)", f"{writing:.3f} s", ""),
        ("catalog", f"{stage['catalog']:.3f} s", "file record and 'done' check (products: in writing)"),
        ("orchestration / overlap", f"{steady - covered / workers:+.3f} s",
         f"wall minus stage sum / {workers} task threads"),
        ("start-up + listing + manifests", f"{total - report.work_seconds:.1f} s", "whole run, excluded above"),
        ("whole run", f"{total:.1f} s", f"counts {report.counts}"),
    ]
    print("| measure | value | note |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    if args.json:
        args.json.write_text(json.dumps({r[0]: r[1] for r in rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
