"""``astro-pipeline colorize | upscale | enhance``: flat folders, per-file errors, exit codes, manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner
from model_helpers import save_tiny_weights

from astro_pipeline.cli import app


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("weights")
    return save_tiny_weights(d)


@pytest.fixture()
def flat_dir(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((20, 28, 3)) * 255).astype(np.uint8)).save(d / "colour.png")
    Image.fromarray((rng.random((18, 22)) * 255).astype(np.uint8)).save(d / "grey.jpg", quality=95)
    tifffile.imwrite(d / "deep.tif", (rng.random((16, 24)) * 65535).astype(np.uint16))
    return d


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_colorize_flat_directory_same_size(flat_dir, tmp_path, weights):
    out = tmp_path / "out"
    res = _invoke(["colorize", str(flat_dir), "--output", str(out), "--weights", str(weights["colorize"]),
                   "--device", "cpu", "--batch-size", "2", "--run-id", "c1"])
    assert res.exit_code == 0, res.output
    for name, size in [("colour", (28, 20)), ("grey", (22, 18)), ("deep", (24, 16))]:
        im = Image.open(out / f"{name}_color.png")
        assert im.size == size and im.mode == "RGB"
        assert (out / f"{name}_color.tif").is_file()
    df = pd.read_parquet(out / "manifests" / "c1.parquet")
    assert sorted(Path(p).name for p in df["source_path"]) == ["colour.png", "deep.tif", "grey.jpg"]
    assert set(df["status"]) == {"ok"} and set(df["png_path"]) == {"colour_color.png", "grey_color.png",
                                                                    "deep_color.png"}
    assert (out / "manifests" / "c1.csv").is_file()
    assert (df["metric_lightness_max_abs_error"] < 0.5).all()


def test_upscale_4x_with_bad_file_carries_on(flat_dir, tmp_path, weights):
    (flat_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    out = tmp_path / "out"
    res = _invoke(["upscale", str(flat_dir), "--output", str(out), "--weights", str(weights["superres"]),
                   "--tile-size", "16", "--run-id", "u1"])
    assert res.exit_code == 1
    assert "broken.png" in res.output and "Traceback" not in res.output
    assert Image.open(out / "colour_x4.png").size == (112, 80)
    assert Image.open(out / "grey_x4.png").size == (88, 72)
    df = pd.read_parquet(out / "manifests" / "u1.parquet")
    assert len(df) == 4 and (df["status"] == "error").sum() == 1
    bad = df[df["status"] == "error"].iloc[0]
    assert "broken.png" in bad["error"] and pd.isna(bad["png_path"])
    assert set(df.loc[df["status"] == "ok", "params"].map(lambda s: '"tile_size":16' in s)) == {True}


def test_enhance_colorizes_then_upscales_and_skips_own_outputs(flat_dir, weights):
    out = flat_dir / "products"  # output inside the input folder: a re-run must not eat its own products
    args = ["enhance", str(flat_dir), "--output", str(out), "--colorizer", str(weights["colorize"]),
            "--upscaler", str(weights["superres"]), "--run-id", "e1"]
    assert _invoke(args).exit_code == 0
    assert Image.open(out / "grey_color_x4.png").size == (88, 72)
    colorized = Image.open(out / "grey_color_x4_colorstep.png")  # the same-size colour step, kept for curators
    assert colorized.size == (22, 18) and colorized.mode == "RGB"
    assert pd.read_parquet(out / "manifests" / "e1.parquet")["colorized_path"].notna().all()
    args[-1] = "e2"
    res = _invoke(args)  # done with these weights: skipped, nothing replaced
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(out / "manifests" / "e2.parquet")) == 0 and "3 skipped" in res.output
    res = _invoke([*args[:-1], "e3", "--overwrite"])  # redone: the products are not read back as inputs
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(out / "manifests" / "e3.parquet")) == 3
    df = pd.read_parquet(out / "manifests" / "e1.parquet")
    assert set(df["model_names"]) == {"random-colorize;random-superres"} and df["superseded_by"].notna().all()
    # both runs are in the catalog under --output; the products carry their files
    from astro_pipeline.catalog import Catalog

    cat = Catalog.for_output(out)
    try:
        runs = {r.id: r for r in cat.recent_runs(5)}
        assert set(runs) == {"e1", "e2", "e3"} and {r.flow for r in runs.values()} == {"enhance"}
        assert runs["e1"].status == "completed" and runs["e1"].counts.get("products_ok") == 3
        assert cat.stats()["products"] >= 3
    finally:
        cat.close()


def test_missing_default_weights_names_the_option(flat_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ASTRO_PIPELINE_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    res = _invoke(["colorize", str(flat_dir), "--output", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "--weights" in res.output and "Traceback" not in res.output
    res = _invoke(["enhance", str(flat_dir), "--output", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--colorizer" in res.output


def test_wrong_task_weights_and_no_inputs(flat_dir, tmp_path, weights):
    res = _invoke(["upscale", str(flat_dir), "--output", str(tmp_path / "o"), "--weights", str(weights["colorize"])])
    assert res.exit_code == 2 and "superres" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _invoke(["colorize", str(empty), "--output", str(tmp_path / "o"), "--weights", str(weights["colorize"])])
    assert res.exit_code == 2 and "no input files" in res.output


def test_fits_inputs_keep_relative_paths(tmp_path, weights):
    from astropy.io import fits

    src = tmp_path / "raw" / "m101"
    src.mkdir(parents=True)
    data = np.random.default_rng(1).normal(10, 1, (20, 20)).astype(np.float32)
    fits.PrimaryHDU(data).writeto(src / "a_drz.fits")
    out = tmp_path / "out"
    res = _invoke(["upscale", str(tmp_path / "raw"), "--output", str(out), "--weights", str(weights["superres"]),
                   "--run-id", "f1"])
    assert res.exit_code == 0, res.output
    for name in ("a_drz_x4.png", "a_drz_x4.tif", "a_drz_x4.fits", "a_drz_flux_x4.fits"):
        assert (out / "m101" / name).is_file(), name
    df = pd.read_parquet(out / "manifests" / "f1.parquet")
    assert df.loc[0, "fits_flux_path"] == "m101/a_drz_flux_x4.fits"


# ---------------------------------------------------------------------------------- defects (issue 13)


def _two_frame_fits(path: Path, *, wht_shape: tuple[int, int] = (20, 20)) -> Path:
    from astropy.io import fits

    rng = np.random.default_rng(3)
    hdus = [fits.PrimaryHDU()]
    for ver in (1, 2):
        hdus.append(fits.ImageHDU(rng.normal(10, 1, (20, 20)).astype(np.float32), name="SCI", ver=ver))
        hdus.append(fits.ImageHDU(np.ones(wht_shape if ver == 1 else (20, 20), np.float32), name="WHT", ver=ver))
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path)
    return path


def test_n_frames_is_recorded_for_a_file_whose_second_frame_fails(tmp_path, weights):
    """A real two-frame FITS whose second frame cannot be written: the catalog knows the file has 2 frames."""
    import sqlite3

    from astro_pipeline.catalog import Catalog

    src = _two_frame_fits(tmp_path / "in" / "mef_drz.fits")
    out = tmp_path / "out"
    (out / "mef_drz_3_x4.png").mkdir(parents=True)  # a folder where frame 2 (HDU 3) wants its PNG
    res = _invoke(["upscale", str(src), "--output", str(out), "--weights", str(weights["superres"]),
                   "--run-id", "m1"])
    assert res.exit_code == 1 and "mef_drz" in res.output
    df = pd.read_parquet(out / "manifests" / "m1.parquet")
    assert sorted(zip(df["hdu"], df["status"], strict=True)) == [(1, "ok"), (3, "error")]
    db = sqlite3.connect(out / "catalog.sqlite")
    try:
        (n_frames, sha), = db.execute("SELECT n_frames, sha256 FROM files").fetchall()
    finally:
        db.close()
    assert n_frames == 2
    ok = df[df["status"] == "ok"].iloc[0]
    versions = dict(zip(ok["model_names"].split(";"), ok["model_versions"].split(";"), strict=True))
    with Catalog.for_output(out) as cat:
        assert not cat.is_done(sha, versions, None, operation="upscale")  # frame 2 of 2 is not done


def test_reader_notes_reach_the_catalog_and_the_manifest(tmp_path, weights):
    from astro_pipeline.catalog import Catalog

    src = _two_frame_fits(tmp_path / "in" / "notes_drz.fits", wht_shape=(10, 20))  # SCI 1's WHT does not fit
    out = tmp_path / "out"
    res = _invoke(["upscale", str(src), "--output", str(out), "--weights", str(weights["superres"]),
                   "--run-id", "n1"])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out / "manifests" / "n1.parquet").sort_values("hdu")
    assert "notes" in df.columns
    first, second = df["notes"].tolist()
    assert "WHT extension shape (10, 20) does not match SCI (20, 20); ignored" in first and pd.isna(second)
    with Catalog.for_output(out) as cat:
        frames = {v.hdu: v for v in cat.flagged_frames(flagged_only=False)}
    assert frames[1].notes == ["WHT extension shape (10, 20) does not match SCI (20, 20); ignored"]
    assert frames[3].notes == []
