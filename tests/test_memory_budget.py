"""The memory budget (issue 21): a setting, a check with a message that says what to change, jobs
estimated from their headers before any pixel is read, refused when over, the run going on."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from hostile_inputs import run_measured
from model_helpers import random_weights
from pydantic import ValidationError
from typer.testing import CliRunner

from astro_pipeline.cli import app
from astro_pipeline.config import Settings, get_settings
from astro_pipeline.engines import Engines
from astro_pipeline.inference import Engine
from astro_pipeline.ingest.frame import ImageGeometry
from astro_pipeline.job_estimate import estimate_job
from astro_pipeline.memory import (
    READ_BYTES_PER_PIXEL,
    MemoryBudgetError,
    check_budget,
    format_bytes,
    parse_budget,
    physical_memory_bytes,
    reserve,
)
from astro_pipeline.models.registry import save_weights
from astro_pipeline.products.types import Operation

GiB, MiB = 2**30, 2**20


def test_check_budget_passes_under_and_refuses_over_with_what_to_change() -> None:
    check_budget(GiB, what="colorize of a.fits", budget=2 * GiB)
    with pytest.raises(MemoryBudgetError, match=r"^colorize of a.fits needs an estimated 3.0 GiB of memory, above the "
                                                r"memory budget of 2.0 GiB \(setting memory_budget, env "
                                                r"ASTRO_PIPELINE_MEMORY_BUDGET\)") as err:
        check_budget(3 * GiB, what="colorize of a.fits", budget=2 * GiB)
    assert (err.value.estimate_bytes, err.value.budget_bytes, err.value.what) == (3 * GiB, 2 * GiB, "colorize of a.fits")


def test_budget_setting_defaults_to_60_percent_of_physical_memory() -> None:
    phys = physical_memory_bytes()
    assert 0 < phys <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    settings = Settings()
    assert settings.memory_budget == "60%" and settings.memory_budget_bytes == int(0.6 * phys)
    assert Settings(memory_budget="2GiB").memory_budget_bytes == 2 * GiB
    assert parse_budget("1500MB", physical=phys) == 1_500_000_000 and parse_budget("123456", physical=phys) == 123456
    assert parse_budget("25%", physical=8 * GiB) == 2 * GiB and parse_budget("0.5 TiB", physical=1) == 512 * GiB
    for bad in ["0", "150%", "lots", "-3GiB", "0%"]:
        with pytest.raises(ValidationError, match="memory_budget"):
            Settings(memory_budget=bad)


def test_pixel_limit_follows_from_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(memory_budget="1GiB").pixel_limit == GiB // READ_BYTES_PER_PIXEL
    assert Settings(memory_budget="1GiB", max_image_pixels=5000).pixel_limit == 5000  # an explicit lower limit wins
    assert Settings(memory_budget="1GiB", max_image_pixels=10**12).pixel_limit == GiB // READ_BYTES_PER_PIXEL
    monkeypatch.setenv("ASTRO_PIPELINE_MEMORY_BUDGET", "160MB")
    get_settings.cache_clear()
    assert get_settings().pixel_limit == 160_000_000 // READ_BYTES_PER_PIXEL


def test_jobs_share_the_budget_a_job_over_it_is_refused_at_once() -> None:
    """Two jobs of 60% each run one after the other; one of 120% never waits, it is refused."""
    budget = 1000
    order: list[str] = []
    first_in = threading.Event()

    def job(name: str) -> None:
        with reserve(600, what=name, budget=budget):
            order.append(f"{name} in")
            first_in.set()
            time.sleep(0.3)
            order.append(f"{name} out")

    a = threading.Thread(target=job, args=("a",))
    a.start()
    first_in.wait(5)
    b = threading.Thread(target=job, args=("b",))
    b.start()
    a.join(5)
    b.join(5)
    assert order == ["a in", "a out", "b in", "b out"]
    t0 = time.monotonic()
    with pytest.raises(MemoryBudgetError, match="needs an estimated 1.2 KiB"):
        with reserve(1200, what="big", budget=budget):
            pass
    assert time.monotonic() - t0 < 0.5


def _engines(batch: int = 16) -> Engines:
    made = {}
    for task in ("colorize", "superres"):
        model, meta = random_weights(task, tiny=True, seed=3)
        made[task] = Engine(model, meta, device="cpu", precision="fp32", batch_size=batch)
    return Engines(colorizer=made["colorize"], upscaler=made["superres"])


def _geom(side: int, **kw: int) -> list[ImageGeometry]:
    return [ImageGeometry(label="HDU 0", height=side, width=side, **kw)]


def test_estimate_names_its_parts_and_grows_with_the_job() -> None:
    engines = _engines()
    c1 = estimate_job(_geom(2048), operation=Operation.COLORIZE, engines=engines)
    c2 = estimate_job(_geom(4096), operation=Operation.COLORIZE, engines=engines)
    named = set(c1.held).union(*c1.phases.values())
    assert {"input", "working images", "tiles in flight", "stitch buffer", "output", "products"} <= named
    assert set(c1.phases) == {"stretch", "colour", "products"} and c1.phases["colour"]["tiles in flight"] > 0
    assert c1.total == sum(c1.parts.values()) == max(sum(p.values()) for p in c1.phases.values()) + sum(c1.held.values())
    assert c2.held["input"] == 4 * c1.held["input"] and c2.phases["products"] == {
        k: 4 * v for k, v in c1.phases["products"].items()}  # per-pixel parts scale with the pixels...
    assert 2.5 < c2.total / c1.total <= 4  # ...row-chunk temporaries with the width, tiles in flight not at all
    up = estimate_job(_geom(2048), operation=Operation.UPSCALE, engines=engines)
    assert up.parts["output"] >= 16 * 2048**2 * 3 * 4 and up.total > 8 * c1.total  # 4x on each axis, RGB float32
    enh = estimate_job(_geom(2048), operation=Operation.ENHANCE, engines=engines)
    assert {"colour", "upscale"} <= set(enh.phases) and "flux" in up.phases and "flux" not in enh.phases
    assert enh.phases["products"]["output"] > up.phases["products"]["output"]  # the colorized image kept besides
    small_batch = estimate_job(_geom(2048), operation=Operation.COLORIZE, engines=_engines(batch=2))
    assert small_batch.phases["colour"]["tiles in flight"] < c1.phases["colour"]["tiles in flight"] / 4
    deep = estimate_job(_geom(2048, source_bytes_per_sample=8, planes=2), operation=Operation.COLORIZE, engines=engines)
    assert deep.held["input"] > 2 * c1.held["input"]  # both planes held, float64 source decoded
    assert c2.describe().startswith("peak in ") and c2.describe().endswith(format_bytes(c2.total))


def _fits(path: Path, side: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(np.random.default_rng(side).normal(100, 5, (side, side)).astype(np.float32)).writeto(path)
    return path


def test_a_job_over_the_budget_is_refused_with_its_estimate_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None) -> None:
    small = _fits(tmp_path / "in" / "small.fits", 32)
    large = _fits(tmp_path / "in" / "large.fits", 1024)
    model, meta = random_weights("colorize", tiny=True, seed=3)
    weights = save_weights(model, tmp_path / "tiny-colorize.safetensors", meta)
    monkeypatch.setenv("ASTRO_PIPELINE_MEMORY_BUDGET", "16MiB")
    get_settings.cache_clear()
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["colorize", str(large), str(small), "--output", str(out), "--weights", str(weights),
                                   "--device", "cpu", "--run-id", "b1"], catch_exceptions=False)
    assert res.exit_code == 1, res.output
    df = pd.read_parquet(out / "manifests" / "b1.parquet").set_index(
        pd.read_parquet(out / "manifests" / "b1.parquet")["source_path"].map(lambda p: Path(p).name))
    assert df.loc["small.fits", "status"] == "ok" and (out / "small_color.png").is_file()
    err = df.loc["large.fits", "error"]
    assert df.loc["large.fits", "status"] == "error" and not (out / "large_color.png").exists()
    assert "large.fits" in err and "colorize of HDU 0 (1024x1024) needs an estimated" in err
    assert "above the memory budget of 16.0 MiB (setting memory_budget, env ASTRO_PIPELINE_MEMORY_BUDGET)" in err


_CHILD = """
import resource, sys
from astro_pipeline.cli import main
sys.argv = ["astro-pipeline"] + sys.argv[1:]
try:
    main()
finally:
    print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_the_estimate_bounds_the_measured_peak(tmp_path: Path) -> None:
    """With the shipped colorizer, a 1536^2 job's measured peak (above a 64^2 job's, which holds the same
    interpreter, libraries and weights) stays within the estimate, in a child process."""
    from astro_pipeline.engines import load_engines

    side = 1536
    env = dict(os.environ, ASTRO_PIPELINE_DEVICE="cpu", ASTRO_PIPELINE_MEMORY_BUDGET="8GiB")
    peaks = {}
    for n in (64, side):
        src = _fits(tmp_path / f"in{n}" / f"f{n}.fits", n)
        child = run_measured([sys.executable, "-c", _CHILD, "colorize", str(src), "--output", str(tmp_path / f"o{n}")],
                             env=env, timeout=600, workdir=tmp_path / f"c{n}")
        assert child.returncode == 0, child.stdout[-2000:] + child.stderr[-2000:]
        peaks[n] = child.maxrss_bytes
    engines = load_engines(Operation.COLORIZE, Settings(device="cpu"))
    estimate = estimate_job(_geom(side), operation=Operation.COLORIZE, engines=engines)
    measured = peaks[side] - peaks[64]
    print(f"colorize {side}^2: measured {measured / MiB:.0f} MiB above a 64^2 job, estimate {estimate.describe()}")
    assert measured <= estimate.total


@pytest.mark.slow
def test_a_sweep_records_refused_jobs_in_its_manifest_and_finishes(
        prefect_harness: None, sweep_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the sweep (Prefect, the replica): with a budget no input fits, every item is an error
    naming its file and the setting, recorded in the manifest, and the flow returns its report."""
    import json

    from flows.sweep import reprocess_region

    for key, value in sweep_env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    region = json.loads(sweep_env["ASTRO_TEST_REGION"])
    out = tmp_path / "out"
    report = reprocess_region(ra=region["ra"], dec=region["dec"], radius_deg=region["radius_deg"], archives=["mast"],
                              overrides={"output_dir": str(out), "memory_budget": "1MiB"})
    assert report.counts.get("error", 0) >= 2 and not report.counts.get("ok"), report.counts
    refused = [it for it in report.items if it.status == "error"]
    for it in refused:
        assert Path(str(it.raw_path)).name in str(it.error) and "above the memory budget of 1.0 MiB" in str(it.error)
    df = pd.read_parquet(report.manifest_parquet)
    assert len(df) >= len(refused) and (df["status"] == "error").all()
    assert df["error"].str.contains(r"needs an estimated .* \(setting memory_budget", regex=True).all(), df["error"]


def test_the_python_api_refuses_a_frame_over_the_budget_before_inference(tmp_path: Path) -> None:
    import astro_pipeline as ap

    model, meta = random_weights("colorize", tiny=True, seed=3)
    weights = save_weights(model, tmp_path / "tiny-colorize.safetensors", meta)
    data = np.random.default_rng(0).normal(100, 5, (256, 256)).astype(np.float32)
    with pytest.raises(MemoryBudgetError, match=r"^colorize of image \(256x256\) needs an estimated .* above the memory "
                                                r"budget of 1.0 MiB \(setting memory_budget"):
        ap.colorize(data, weights=weights, device="cpu", name="image", settings=Settings(memory_budget="1MiB"))
    res = ap.colorize(data, weights=weights, device="cpu", name="image", settings=Settings(memory_budget="2GiB"))
    assert res.image.shape[:2] == (256, 256)
