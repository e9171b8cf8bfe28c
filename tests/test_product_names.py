"""Product names say what a file is, and no product replaces a file another product records.

Issue 14: ``colorize X`` then ``upscale X`` into one folder used to replace the colour PNG with the
4x one while the colorize manifest still said ``ok`` with the old sha256. Now every name carries
the operation and scale, two inputs whose stems collide get the input's content hash in the
stem, and rerunning the same operation on the same input replaces its own files only through
``--overwrite``, a new model version or ``--force``, marking the older catalog row superseded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from PIL import Image
from typer.testing import CliRunner
from model_helpers import random_weights, save_tiny_weights

from astro_pipeline.cli import app
from astro_pipeline.models.registry import save_weights
from astro_pipeline.products.types import FileKind, Operation


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("weights")
    out = save_tiny_weights(d)
    model, meta = random_weights("colorize", tiny=True, seed=6)
    meta.version = "0.0.1-random"  # a new version of the colorizer
    out["colorize_v2"] = save_weights(model, d / "tiny-colorize-v2.safetensors", meta)
    return out


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fits(path: Path, seed: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = rng.normal(10, 1, (24, 20)).astype(np.float32)
    data[8:11, 6:9] += 300.0
    fits.PrimaryHDU(data).writeto(path)
    return path


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random((18, 22)) * 255).astype(np.uint8)).save(path)
    return path


def _manifest_files(out: Path) -> list[tuple[str, str, Path, str, bool]]:
    """(run, kind, file, recorded sha256, superseded) of every product file in every run manifest."""
    rows = []
    for parquet in sorted((out / "manifests").glob("*.parquet")):
        df = pd.read_parquet(parquet)
        kinds = [c[: -len("_path")] for c in df.columns if c.endswith("_path") and c not in ("source_path", "raw_path")]
        for _, row in df.iterrows():
            for kind in kinds:
                if isinstance(row[f"{kind}_path"], str):
                    rows.append((parquet.stem, kind, out / row[f"{kind}_path"], row[f"{kind}_sha256"],
                                 not pd.isna(row["superseded_by"])))
    return rows


def _assert_manifests_true(out: Path) -> None:
    """Every current manifest row names a file whose bytes have the recorded sha256."""
    rows = _manifest_files(out)
    assert rows
    for run, kind, path, sha, superseded in rows:
        if not superseded:
            assert path.is_file() and _sha(path) == sha, (run, kind, path)


# ---------------------------------------------------------------------------------- the scheme


def test_names_carry_operation_and_scale(tmp_path):
    from astro_pipeline.products.naming import field_product_path, product_path

    stem = tmp_path / "m101_drz"
    names = {(op, kind): product_path(stem, kind, operation=op, scale=1 if op is Operation.COLORIZE else 4).name
             for op in Operation for kind in (FileKind.PNG, FileKind.TIF, FileKind.FITS)}
    assert names[(Operation.COLORIZE, FileKind.PNG)] == "m101_drz_color.png"
    assert names[(Operation.COLORIZE, FileKind.FITS)] == "m101_drz_color.fits"
    assert names[(Operation.UPSCALE, FileKind.PNG)] == "m101_drz_x4.png"
    assert names[(Operation.UPSCALE, FileKind.TIF)] == "m101_drz_x4.tif"
    assert names[(Operation.ENHANCE, FileKind.PNG)] == "m101_drz_color_x4.png"
    assert names[(Operation.ENHANCE, FileKind.FITS)] == "m101_drz_color_x4.fits"
    assert len(set(names.values())) == len(names)  # no two operations share a name
    assert product_path(stem, FileKind.FITS_FLUX, operation=Operation.UPSCALE, scale=4).name == "m101_drz_flux_x4.fits"
    assert product_path(stem, FileKind.COLORIZED, operation=Operation.ENHANCE, scale=4).name == \
        "m101_drz_color_x4_colorstep.png"
    assert field_product_path(tmp_path, "NGC 5457", FileKind.PNG).name == "NGC_5457_rgb.png"
    assert field_product_path(tmp_path, "NGC 5457", FileKind.FITS, scale=4).name == "NGC_5457_rgb_x4.fits"


def test_choose_stem_adds_the_content_hash_only_when_taken(tmp_path):
    from astro_pipeline.products.naming import choose_stem

    stem, sha = tmp_path / "x", "ab12cd34" + "0" * 56
    kinds = (FileKind.PNG, FileKind.TIF)
    assert choose_stem(stem, kinds=kinds, operation=Operation.COLORIZE, scale=1, content_sha256=sha,
                       free=lambda paths: True) == stem
    taken = {tmp_path / "x_color.tif"}
    chosen = choose_stem(stem, kinds=kinds, operation=Operation.COLORIZE, scale=1, content_sha256=sha,
                         free=lambda paths: not taken & set(paths))
    assert chosen == tmp_path / "x-ab12cd34"


# ---------------------------------------------------------------------------------- the CLI


def test_colorize_then_upscale_then_enhance_into_one_folder_keeps_every_file(tmp_path, weights):
    src = _fits(tmp_path / "in" / "m101_drz.fits")
    out = tmp_path / "out"
    assert _invoke("colorize", str(src), "-o", str(out), "--weights", str(weights["colorize"]),
                   "--run-id", "c1").exit_code == 0
    colour = {n: _sha(out / n) for n in ("m101_drz_color.png", "m101_drz_color.tif", "m101_drz_color.fits")}
    assert _invoke("upscale", str(src), "-o", str(out), "--weights", str(weights["superres"]),
                   "--run-id", "u1").exit_code == 0
    assert _invoke("enhance", str(src), "-o", str(out), "--colorizer", str(weights["colorize"]),
                   "--upscaler", str(weights["superres"]), "--run-id", "e1").exit_code == 0
    assert {n: _sha(out / n) for n in colour} == colour  # the colour products are untouched
    assert Image.open(out / "m101_drz_color.png").size == (20, 24)
    assert Image.open(out / "m101_drz_x4.png").size == (80, 96)
    assert Image.open(out / "m101_drz_color_x4.png").size == (80, 96)
    for name in ("m101_drz_x4.tif", "m101_drz_x4.fits", "m101_drz_flux_x4.fits", "m101_drz_color_x4.tif",
                 "m101_drz_color_x4.fits", "m101_drz_color_x4_colorstep.png"):
        assert (out / name).is_file(), name
    assert not (out / "m101_drz.png").exists()
    _assert_manifests_true(out)
    runs = {r for r, *_ in _manifest_files(out)}
    assert runs == {"c1", "u1", "e1"}


def test_two_inputs_whose_stems_collide_keep_both_products(tmp_path, weights):
    a, b = _png(tmp_path / "a" / "x.png", 1), _png(tmp_path / "b" / "x.png", 2)
    out = tmp_path / "out"
    res = _invoke("colorize", str(a), str(b), "-o", str(out), "--weights", str(weights["colorize"]), "--run-id", "c1")
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out / "manifests" / "c1.parquet").set_index("input_sha256")
    sha_b = _sha(b)
    assert df.loc[_sha(a), "png_path"] == "x_color.png"
    assert df.loc[sha_b, "png_path"] == f"x-{sha_b[:8]}_color.png"
    _assert_manifests_true(out)
    # a later run on b alone keeps b's own name, and does not touch a's file
    a_png = _sha(out / "x_color.png")
    res = _invoke("colorize", str(b), "-o", str(out), "--weights", str(weights["colorize"]), "--run-id", "c2",
                  "--overwrite")
    assert res.exit_code == 0, res.output
    assert pd.read_parquet(out / "manifests" / "c2.parquet")["png_path"].tolist() == [f"x-{sha_b[:8]}_color.png"]
    assert _sha(out / "x_color.png") == a_png
    _assert_manifests_true(out)


def test_stems_that_collide_across_operations(tmp_path, weights):
    """``a_color.png`` upscaled and ``a.png`` enhanced both want ``a_color_x4.png``: the second is renamed."""
    first, second = _png(tmp_path / "in" / "a_color.png", 3), _png(tmp_path / "in" / "a.png", 4)
    out = tmp_path / "out"
    assert _invoke("upscale", str(first), "-o", str(out), "--weights", str(weights["superres"]),
                   "--run-id", "u1").exit_code == 0
    kept = _sha(out / "a_color_x4.png")
    assert _invoke("enhance", str(second), "-o", str(out), "--colorizer", str(weights["colorize"]),
                   "--upscaler", str(weights["superres"]), "--run-id", "e1").exit_code == 0
    assert _sha(out / "a_color_x4.png") == kept
    assert (out / f"a-{_sha(second)[:8]}_color_x4.png").is_file()
    _assert_manifests_true(out)


def test_a_file_no_product_records_is_left_alone(tmp_path, weights):
    src = _png(tmp_path / "in" / "x.png", 5)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_color.png").write_bytes(b"a file of the user's")
    assert _invoke("colorize", str(src), "-o", str(out), "--weights", str(weights["colorize"]),
                   "--run-id", "c1").exit_code == 0
    assert (out / "x_color.png").read_bytes() == b"a file of the user's"
    assert (out / f"x-{_sha(src)[:8]}_color.png").is_file()
    _assert_manifests_true(out)


def test_a_product_the_catalog_forgot_is_recognised_by_its_own_provenance(tmp_path, weights):
    """Without the catalog (deleted), the files' embedded provenance says they are this input's colorize."""
    src = _png(tmp_path / "in" / "x.png", 6)
    out = tmp_path / "out"
    args = ["colorize", str(src), "-o", str(out), "--weights", str(weights["colorize"])]
    assert _invoke(*args, "--run-id", "c1").exit_code == 0
    (out / "catalog.sqlite").unlink()
    for extra in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        (out / extra).unlink(missing_ok=True)
    assert _invoke(*args, "--run-id", "c2").exit_code == 0
    assert pd.read_parquet(out / "manifests" / "c2.parquet")["png_path"].tolist() == ["x_color.png"]
    assert sorted(p.name for p in out.glob("x*")) == ["x_color.png", "x_color.tif"]


# ---------------------------------------------------------------------------------- reruns


def test_rerun_skips_and_overwrite_supersedes_the_old_row(tmp_path, weights):
    from astro_pipeline.catalog import Catalog

    src = _fits(tmp_path / "in" / "f_drz.fits")
    out = tmp_path / "out"
    args = ["colorize", str(src), "-o", str(out), "--weights", str(weights["colorize"])]
    assert _invoke(*args, "--run-id", "c1").exit_code == 0
    before = _sha(out / "f_drz_color.fits")
    inode = (out / "f_drz_color.fits").stat().st_ino
    res = _invoke(*args, "--run-id", "c2")  # same input, same weights: done, nothing replaced
    assert res.exit_code == 0, res.output
    assert "1 skipped" in res.output and "--overwrite" in res.output
    assert len(pd.read_parquet(out / "manifests" / "c2.parquet")) == 0
    assert _sha(out / "f_drz_color.fits") == before and (out / "f_drz_color.fits").stat().st_ino == inode
    _assert_manifests_true(out)

    res = _invoke(*args, "--run-id", "c3", "--overwrite")
    assert res.exit_code == 0, res.output
    # rewritten: an atomic replace gives a new file (a new inode; its content may match to the byte,
    # since FITS DATE has a resolution of one second)
    assert (out / "f_drz_color.fits").stat().st_ino != inode
    c1 = pd.read_parquet(out / "manifests" / "c1.parquet")  # re-exported: c1's row is marked
    c3 = pd.read_parquet(out / "manifests" / "c3.parquet")
    assert c1.loc[0, "superseded_by"] == c3.loc[0, "product_id"] and pd.isna(c3.loc[0, "superseded_by"])
    assert c1.loc[0, "fits_sha256"] == before and c3.loc[0, "fits_sha256"] == _sha(out / "f_drz_color.fits")
    _assert_manifests_true(out)
    with Catalog.for_output(out) as cat:
        stats = cat.stats()
        assert stats["products"] == 2 and stats["products_superseded"] == 1


def test_a_new_model_version_replaces_the_files_and_supersedes(tmp_path, weights):
    from astro_pipeline.catalog import Catalog

    src = _png(tmp_path / "in" / "x.png", 7)
    out = tmp_path / "out"
    assert _invoke("colorize", str(src), "-o", str(out), "--weights", str(weights["colorize"]),
                   "--run-id", "v1").exit_code == 0
    res = _invoke("colorize", str(src), "-o", str(out), "--weights", str(weights["colorize_v2"]), "--run-id", "v2")
    assert res.exit_code == 0, res.output
    v1, v2 = (pd.read_parquet(out / "manifests" / f"{r}.parquet").iloc[0] for r in ("v1", "v2"))
    assert v1["png_path"] == v2["png_path"] == "x_color.png"
    assert v1["superseded_by"] == v2["product_id"] and v2["model_versions"] == "0.0.1-random"
    _assert_manifests_true(out)
    with Catalog.for_output(out) as cat:
        sha = _sha(src)
        assert cat.is_done(sha, {"random-colorize": "0.0.1-random"}, None, operation="colorize")
        assert not cat.is_done(sha, {"random-colorize": "0.0.0-random"}, None, operation="colorize")


def test_a_products_files_are_written_all_or_none(tmp_path, weights):
    """A product whose FITS cube cannot be written leaves no PNG or TIFF behind (nor temporary files)."""
    from astro_pipeline.config import QualityThresholds, Settings
    from astro_pipeline.engines import Engines, load_engine
    from astro_pipeline.products import process_file

    src = _fits(tmp_path / "in" / "f_drz.fits")
    out = tmp_path / "out"
    (out / "f_drz_color.fits").mkdir(parents=True)  # a folder where the cube would go
    engine = load_engine(weights["colorize"], task="colorize", settings=Settings())
    (product,) = process_file(src, operation=Operation.COLORIZE, engines=Engines(colorizer=engine), output_dir=out,
                              quality=QualityThresholds(), max_image_pixels=Settings().pixel_limit,
                              memory_budget=Settings().memory_budget_bytes).products
    assert not product.ok and "f_drz_color.fits" in (product.error or "")
    assert sorted(p.name for p in out.iterdir()) == ["f_drz_color.fits"]  # the folder only


# ---------------------------------------------------------------------------------- the catalog rule


def test_catalog_supersedes_rows_whose_files_were_rewritten(tmp_path):
    from astro_pipeline.catalog import Catalog
    from astro_pipeline.products.types import ModelRecord, Product, ProductFile, ProductStatus

    png = tmp_path / "x_color.png"

    def product(run: str, version: str, sha: str, *, path: Path = png) -> Product:
        return Product(run_id=run, source_path=str(tmp_path / "x.png"), source_sha256="ab" * 32, hdu=None,
                       plane=None, frame_key="x.png", operation=Operation.COLORIZE, status=ProductStatus.OK,
                       models=(ModelRecord(name="col", version=version),),
                       files={"png": ProductFile(path=path, sha256=sha)})

    with Catalog.for_output(tmp_path) as cat:
        for run in ("r1", "r2", "r3", "r4"):
            cat.start_run("colorize", {}, run_id=run)
        first = cat.record_product(product("r1", "v1", "1" * 64))
        second = cat.record_product(product("r2", "v2", "2" * 64))  # new version, same file
        third = cat.record_product(product("r3", "v2", "3" * 64))  # the same work again (--force)
        assert len({first, second, third}) == 3
        assert cat.record_product(product("r3", "v2", "4" * 64)) == third  # the same run: updated in place
        rows = {r.id: r for r in cat.read(lambda c: c.exec_driver_sql(
            "SELECT id, run_id, superseded_by, attempts FROM products").all())}
        assert rows[first].superseded_by == second and rows[second].superseded_by == third
        assert rows[third].superseded_by is None and rows[third].attempts == 3  # r2's attempt, r3's two
        current = cat.current_products(["ab" * 32], operation=Operation.COLORIZE, models={"col": "v2"})
        assert [p.files["png"].sha256 for p in current] == ["4" * 64]
        assert not cat.is_done("ab" * 32, {"col": "v1"}, None, operation="colorize")
        assert cat.superseded_runs("r3") == ["r2"]
        owners = cat.file_owners([png])
        assert {o.operation for o in owners[png]} == {"colorize"}


def test_save_products_names_files_the_same_way_without_a_catalog(tmp_path, weights):
    """The path the Python API's ``.save`` takes: no catalog, the files' own provenance decides."""
    from astro_pipeline.config import QualityThresholds, Settings
    from astro_pipeline.engines import Engines, load_engine
    from astro_pipeline.ingest.readers import read_frames
    from astro_pipeline.products import render_frame, save_products

    engines = Engines(colorizer=load_engine(weights["colorize"], task="colorize", settings=Settings()))
    rendered = {}
    for name, seed in (("a", 8), ("b", 9)):
        (frame,) = read_frames(_png(tmp_path / name / "x.png", seed), max_image_pixels=Settings().pixel_limit)
        rendered[name] = (render_frame(frame, operation=Operation.COLORIZE, engines=engines,
                                       quality=QualityThresholds()), frame)
    out = tmp_path / "out"
    first = save_products(*rendered["a"], stem=out / "x")
    again = save_products(*rendered["a"], stem=out / "x")  # its own files: replaced in place
    other = save_products(*rendered["b"], stem=out / "x")  # another input: its own name
    assert first["png"].path == again["png"].path == (out / "x_color.png").resolve()
    sha_b = rendered["b"][1].source_sha256
    assert other["png"].path == (out / f"x-{sha_b[:8]}_color.png").resolve()
    for files in (again, other):
        assert all(_sha(f.path) == f.sha256 for f in files.values())
