"""Field alignment: reproject_interp (bilinear, bicubic) against reproject_exact, same field, same run.

One synthetic star field observed on an ACS-like grid (0.05"/px, the reference) and a
WFC3/IR-like grid (0.13"/px, rotated 57 degrees, shifted), as in ``tests/test_fields.py``. The IR
frame is aligned onto the reference grid by each method (``fields.align`` for the interpolating
ones: masks apart, strips of rows, pixel-area scaling; ``reproject_exact`` called directly on the
same inputs), and for each the benchmark reports:

* seconds per alignment of the IR frame, read once beforehand (median of ``--repeats`` interleaved
  runs; interp: ``fields.align._align``, the data and its validity mask each reprojected; exact: one
  ``reproject_exact`` of the data) and its ratio to bilinear;
* peak Python-heap memory per output pixel (tracemalloc; numpy allocations are traced);
* the centroid offset between the bands (photutils 2-D Gaussian centroids of isolated stars, grid
  pixels): median and 90th percentile;
* the total flux kept on the grid, over the IR frame's own total.

    python benchmarks/bench_fields.py [--size 400] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from field_helpers import frame_product, observe, star_field, tan_wcs, write_frame  # noqa: E402
from test_fields import _centroid_offsets  # noqa: E402

from astro_pipeline.fields.align import _align, align_field, read_member  # noqa: E402
from astro_pipeline.fields.grouping import group_fields  # noqa: E402


def _field(tmp: Path, size: int):
    half = size * 0.05 / 2 * 0.9
    stars = star_field(int(50 * (size / 200) ** 2), seed=11, radius_arcsec=half)
    wa = tan_wcs(size, scale=0.05, orient=20.0)
    n_ir = int(size * 0.05 / 0.13 * 1.15)
    wb = tan_wcs(n_ir, scale=0.13, orient=77.0, offset=(0.4, -0.3))
    a = write_frame(tmp / "acs.fits", observe(wa, size, stars, fwhm_arcsec=0.12, noise=0.2, seed=1), wa,
                    filt="F606W", exptime=900.0)
    b = write_frame(tmp / "ir.fits", observe(wb, n_ir, stars, fwhm_arcsec=0.25, noise=0.4, seed=2), wb,
                    filt="F160W", exptime=1400.0, instrument="WFC3", detector="IR")
    (field,) = group_fields([frame_product(a), frame_product(b)], min_overlap=0.5).fields
    return field, stars


def _exact(field, frame) -> np.ndarray:
    from astropy.wcs.utils import proj_plane_pixel_area
    from reproject import reproject_exact

    data = np.where(frame.mask, frame.data, np.nan)
    out, footprint = reproject_exact((data, frame.wcs), field.grid.wcs, shape_out=field.grid.shape)
    ratio = proj_plane_pixel_area(field.grid.wcs) / proj_plane_pixel_area(frame.wcs)
    return np.where(footprint > 0.999, out * ratio, np.nan).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=400, help="reference grid side (pixels)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fields-"))
    field, stars = _field(tmp, args.size)
    ref = align_field(field, max_image_pixels=10**9, order="bicubic").bands["F606W"].data
    ir_frame = read_member(field.bands["F160W"], max_image_pixels=10**9)
    ir_total = float(np.nansum(np.where(ir_frame.mask, ir_frame.data, 0.0)))
    grid, shape = field.grid.wcs, field.grid.shape
    methods = {  # each from the frame in memory: what differs is the resampling (and, for interp, its mask)
        "interp bilinear": lambda: _align(ir_frame, grid, shape, "bilinear")[0],
        "interp bicubic": lambda: _align(ir_frame, grid, shape, "bicubic")[0],
        "exact": lambda: _exact(field, ir_frame),
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    peaks: dict[str, int] = {}
    outputs: dict[str, np.ndarray] = {}
    for r in range(args.repeats):
        for name, fn in methods.items():  # interleaved, so load changes hit every method alike
            if r == 0:
                tracemalloc.start()
            t0 = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - t0)
            if r == 0:
                peaks[name] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
    n = field.grid.shape[0] * field.grid.shape[1]
    base = statistics.median(times["interp bilinear"])
    rows = []
    for name, out in outputs.items():
        d = _centroid_offsets(ref, out, field.grid.wcs, stars)
        kept = float(np.nansum(out)) / ir_total
        rows.append({"method": name, "seconds": statistics.median(times[name]),
                     "ratio_to_bilinear": statistics.median(times[name]) / base, "peak_bytes_per_pixel": peaks[name] / n,
                     "centroid_median_px": float(np.median(d)), "centroid_p90_px": float(np.percentile(d, 90)),
                     "stars": len(d), "flux_kept": kept})
    print(f"grid {field.grid.shape[1]} x {field.grid.shape[0]} px at 0.05\"/px; IR frame "
          f"{ir_frame.shape[1]} x {ir_frame.shape[0]} px at 0.13\"/px; CPU {platform.processor() or platform.machine()}")
    print(f"{'method':18s} {'s':>7s} {'x bilin':>8s} {'B/px':>7s} {'cen med':>8s} {'cen p90':>8s} {'flux':>6s}")
    for r in rows:
        print(f"{r['method']:18s} {r['seconds']:7.3f} {r['ratio_to_bilinear']:8.2f} {r['peak_bytes_per_pixel']:7.0f} "
              f"{r['centroid_median_px']:8.4f} {r['centroid_p90_px']:8.4f} {r['flux_kept']:6.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
