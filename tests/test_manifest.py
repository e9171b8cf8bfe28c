"""Per-run manifest: one row per frame (failures too), relative paths of existing files, parquet + csv."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from astro_pipeline.manifest import manifest_columns, write_run_manifest
from astro_pipeline.products import Product, ProductFile


def _file(path: Path, data: bytes) -> ProductFile:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return ProductFile(path=path.resolve(), sha256=hashlib.sha256(data).hexdigest())


def _products(out: Path) -> list[Product]:
    ok = Product(
        run_id="run-1", source_path="/data/a_drz.fits", source_sha256="ab" * 32, hdu=1, plane=None,
        frame_key="/data/a_drz.fits[1]", operation="upscale", status="ok",
        provenance={"target": "M101", "filter": "F814W", "ra": 210.8, "dec": 54.3, "bunit": "ELECTRONS/S"},
        metrics={"quality_snr": 12.5, "inference_seconds": 0.5, "note": "x"},
        flags=[{"name": "noisy", "value": 2.0, "threshold": 3.0, "comparison": "<", "message": ""}],
        stretch={"method": "zscale+asinh", "vmin": 0.1, "vmax": 9.0, "asinh_a": 0.1, "percentiles": None},
        models=[{"name": "superres", "version": "1.0.0", "sha256": "cd" * 32, "arch": "SRResNet"}],
        params={"operation": "upscale", "upscaler": {"tile_size": 64}}, tile_count=12,
        files={
            "png": _file(out / "sub" / "a_drz.png", b"png-bytes"),
            "fits": _file(out / "sub" / "a_drz.fits", b"fits-bytes"),
            "tif": ProductFile(path=(out / "sub" / "gone.tif").resolve(), sha256="00" * 32),  # never written
        },
    )
    bad = Product(run_id="run-1", source_path="/data/bad.fits", source_sha256="", hdu=None, plane=None,
                  frame_key="/data/bad.fits", operation="upscale", status="error",
                  error="/data/bad.fits: truncated FITS file")
    return [ok, bad]


def test_manifest_row_columns(tmp_path):
    ok, bad = _products(tmp_path)
    row = manifest_columns(ok, output_dir=tmp_path)
    assert row["png_path"] == "sub/a_drz.png" and row["png_sha256"] == hashlib.sha256(b"png-bytes").hexdigest()
    assert row["fits_path"] == "sub/a_drz.fits"
    assert row["tif_path"] is None and row["tif_sha256"] is None  # only files that exist
    assert row["fits_flux_path"] is None and "lupton_path" in row
    assert row["flags"] == "noisy" and row["model_versions"] == "1.0.0" and row["metric_quality_snr"] == 12.5
    assert row["target"] == "M101" and row["stretch_vmax"] == 9.0 and row["tile_count"] == 12
    brow = manifest_columns(bad, output_dir=tmp_path)
    assert brow["status"] == "error" and "truncated" in brow["error"] and brow["png_path"] is None


def test_write_run_manifest_parquet_and_csv(tmp_path):
    prods = _products(tmp_path)
    extra = {"/data/a_drz.fits": {"archive": "mast", "obs_id": "j8m101"}}
    parquet, csv = write_run_manifest(prods, output_dir=tmp_path, run_id="run-1", extra=extra)
    assert parquet == tmp_path / "manifests" / "run-1.parquet" and csv.name == "run-1.csv"
    df = pd.read_parquet(parquet)
    dc = pd.read_csv(csv)
    assert len(df) == len(dc) == 2
    assert list(df["status"]) == ["ok", "error"]
    assert df.loc[0, "png_path"] == "sub/a_drz.png" and (tmp_path / df.loc[0, "png_path"]).is_file()
    assert pd.isna(df.loc[1, "png_path"]) and df.loc[1, "error"].startswith("/data/bad.fits")
    assert df.loc[0, "archive"] == "mast" and pd.isna(df.loc[1, "archive"])
    assert int(df.loc[0, "hdu"]) == 1 and pd.isna(df.loc[1, "hdu"])
    assert list(df.columns[:4]) == ["run_id", "status", "error", "operation"]
    assert not list((tmp_path / "manifests").glob(".*")), "temporary files left behind"
    # rewriting replaces atomically
    write_run_manifest(prods[:1], output_dir=tmp_path, run_id="run-1")
    assert len(pd.read_parquet(parquet)) == 1


def test_empty_and_bad_run_ids(tmp_path):
    parquet, _ = write_run_manifest([], output_dir=tmp_path, run_id="empty")
    assert len(pd.read_parquet(parquet)) == 0
    with pytest.raises(ValueError, match="bad run id"):
        write_run_manifest([], output_dir=tmp_path, run_id="../x")
