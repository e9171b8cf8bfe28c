"""The manifest: one row per product (failures too), a pure function of catalog rows, parquet + csv."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from astro_pipeline.catalog import Catalog, export_run_manifest
from astro_pipeline.catalog.export import manifest_frame
from astro_pipeline.catalog.queries import manifest_rows
from astro_pipeline.ingest.frame import Flag, QualityReport, StretchParams
from astro_pipeline.products import ModelRecord, Operation, ProcessedInput, Product, ProductFile, ProductStatus


def _file(path: Path, data: bytes) -> ProductFile:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return ProductFile(path=path.resolve(), sha256=hashlib.sha256(data).hexdigest())


def _inputs(out: Path) -> list[ProcessedInput]:
    ok = Product(
        run_id="run-1", source_path="/data/a_drz.fits", source_sha256="ab" * 32, hdu=1, plane=None,
        frame_key="/data/a_drz.fits[1]", operation=Operation.UPSCALE, status=ProductStatus.OK,
        provenance={"target": "M101", "filter": "F814W", "ra": 210.8, "dec": 54.3, "bunit": "ELECTRONS/S"},
        quality=QualityReport(metrics={"snr": 12.5}, flags=[Flag("noisy", 2.0, 3.0, "<")]),
        metrics={"inference_seconds": 0.5},
        stretch=StretchParams(method="zscale+asinh", vmin=0.1, vmax=9.0),
        models=(ModelRecord(name="superres", version="1.0.0", sha256="cd" * 32, arch="SRResNet"),),
        params={"operation": "upscale", "upscaler": {"tile_size": 64}}, tile_count=12,
        notes=("WCS unreadable: no CTYPE",),
        files={
            "png": _file(out / "sub" / "a_drz.png", b"png-bytes"),
            "fits": _file(out / "sub" / "a_drz.fits", b"fits-bytes"),
            "tif": ProductFile(path=(out / "sub" / "gone.tif").resolve(), sha256="00" * 32),  # deleted since
        },
    )
    bad = Product(run_id="run-1", source_path="/data/bad.fits", source_sha256="", hdu=None, plane=None,
                  frame_key=None, operation=Operation.UPSCALE, status=ProductStatus.ERROR,
                  error="/data/bad.fits: truncated FITS file")
    return [ProcessedInput(path=Path("/data/a_drz.fits"), sha256="ab" * 32, size=10, n_frames=1, products=[ok]),
            ProcessedInput(path=Path("/data/bad.fits"), sha256="", size=None, n_frames=None, products=[bad])]


@pytest.fixture()
def cat(tmp_path: Path):
    with Catalog.for_output(tmp_path) as c:
        for processed in _inputs(tmp_path):
            c.record_input(processed, run_id="run-1")
        yield c


def test_manifest_row_columns(cat: Catalog, tmp_path: Path) -> None:
    frame = manifest_frame(cat.read(lambda c: manifest_rows(c, "run-1")), output_dir=tmp_path)
    row, brow = frame.iloc[0], frame.iloc[1]
    assert row["png_path"] == "sub/a_drz.png" and row["png_sha256"] == hashlib.sha256(b"png-bytes").hexdigest()
    assert row["fits_path"] == "sub/a_drz.fits"
    # what the catalog recorded, not what the disk holds now: the manifest is a function of catalog rows
    assert row["tif_path"] == "sub/gone.tif" and row["tif_sha256"] == "00" * 32
    assert pd.isna(row["fits_flux_path"]) and "lupton_path" in frame.columns
    assert row["flags"] == "noisy" and row["model_versions"] == "1.0.0" and row["metric_quality_snr"] == 12.5
    assert row["metric_inference_seconds"] == 0.5 and row["notes"] == "WCS unreadable: no CTYPE"
    assert row["target"] == "M101" and row["stretch_vmax"] == 9.0 and row["tile_count"] == 12
    assert not row["raw_deleted"] and row["raw_path"] == "/data/a_drz.fits"
    assert brow["status"] == "error" and "truncated" in brow["error"] and pd.isna(brow["png_path"])
    assert pd.isna(brow["frame_key"]) and pd.isna(brow["notes"])


def test_run_manifest_parquet_and_csv(cat: Catalog, tmp_path: Path) -> None:
    parquet, csv = export_run_manifest(cat, "run-1", output_dir=tmp_path)
    assert parquet == tmp_path / "manifests" / "run-1.parquet" and csv.name == "run-1.csv"
    df = pd.read_parquet(parquet)
    dc = pd.read_csv(csv)
    assert len(df) == len(dc) == 2
    assert list(df["status"]) == ["ok", "error"]
    assert df.loc[0, "png_path"] == "sub/a_drz.png" and (tmp_path / df.loc[0, "png_path"]).is_file()
    assert pd.isna(df.loc[1, "png_path"]) and df.loc[1, "error"].startswith("/data/bad.fits")
    assert int(df.loc[0, "hdu"]) == 1 and pd.isna(df.loc[1, "hdu"])
    assert list(df.columns[:4]) == ["run_id", "status", "error", "operation"]
    assert not list((tmp_path / "manifests").glob(".*")), "temporary files left behind"
    # rewriting replaces atomically, from what the catalog now holds
    cat.record_raw_deleted("ab" * 32)
    export_run_manifest(cat, "run-1", output_dir=tmp_path)
    again = pd.read_parquet(parquet)
    assert len(again) == 2 and bool(again.loc[0, "raw_deleted"]) and not bool(again.loc[1, "raw_deleted"])


def test_empty_and_bad_run_ids(cat: Catalog, tmp_path: Path) -> None:
    parquet, _ = export_run_manifest(cat, "empty", output_dir=tmp_path)
    assert len(pd.read_parquet(parquet)) == 0
    with pytest.raises(ValueError, match="bad run id"):
        export_run_manifest(cat, "../x", output_dir=tmp_path)
