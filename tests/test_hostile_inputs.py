"""The three bomb inputs of issue 21 through ``astro-pipeline colorize`` in a child process, built at run
time: each stays under 1 GB of peak memory (``ru_maxrss`` of the child).

* a legal 16384^2 BITPIX=-64 gzip FITS (2 MB on disk, 2 GiB of data): refused with its estimate;
* a 12000^2 8-bit grey PNG (under 1 MB): refused with its estimate;
* a 64x64 FITS followed by 2 GiB of zeros, gzip-compressed: processed, the trailer ignored and noted.

The budget is pinned at 4 GiB (a small worker), so the outcome does not depend on this machine's memory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import run_measured, write_fits_gz, write_grey_png

pytestmark = pytest.mark.slow

GiB = 2**30
LIMIT = 1_000_000_000  # bytes: the bound on peak memory

_CHILD = """
import sys
from astro_pipeline.cli import main
sys.argv = ["astro-pipeline"] + sys.argv[1:]
main()
"""


def _make(case: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if case == "fits-16384sq-bitpix-64-gzip":
        return write_fits_gz(folder / "bomb.fits.gz", shape=(16384, 16384), bitpix=-64)
    if case == "png-12000sq":
        return write_grey_png(folder / "bomb.png", 12000)
    data = np.random.default_rng(1).normal(100, 5, (64, 64)).astype(np.float32)
    return write_fits_gz(folder / "trailer.fits.gz", shape=(64, 64), data=data, trailer_bytes=2 * GiB)


@pytest.mark.parametrize("case", ["fits-16384sq-bitpix-64-gzip", "png-12000sq", "fits-64sq-2GiB-trailer-gzip"])
def test_bomb_inputs_stay_under_1_GB(tmp_path: Path, case: str) -> None:
    src = _make(case, tmp_path / "in")
    out = tmp_path / "out"
    env = dict(os.environ, ASTRO_PIPELINE_DEVICE="cpu", ASTRO_PIPELINE_MEMORY_BUDGET="4GiB")
    child = run_measured([sys.executable, "-c", _CHILD, "colorize", str(src), "--output", str(out), "--run-id", "h1"],
                         env=env, timeout=300, workdir=tmp_path / "child", kill_above_bytes=2 * GiB)
    print(f"{case}: {src.stat().st_size:,} bytes on disk, peak {child.maxrss_mib:.0f} MiB in {child.seconds:.1f} s")
    row = pd.read_parquet(out / "manifests" / "h1.parquet").iloc[0]
    if case == "fits-64sq-2GiB-trailer-gzip":
        assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
        assert row["status"] == "ok" and (out / "trailer_color.png").is_file()
        assert "data after the last HDU (from decompressed byte 20,160) ignored, not decompressed" in str(row["notes"])
    else:
        assert child.returncode == 1, child.stdout[-3000:] + child.stderr[-3000:]
        assert row["status"] == "error"
        assert "colorize of " in row["error"] and " needs an estimated " in row["error"]
        assert "above the memory budget of 4.0 GiB (setting memory_budget, env ASTRO_PIPELINE_MEMORY_BUDGET)" in row["error"]
    assert child.maxrss_bytes < LIMIT
