"""The catalog on real SQLite files: schema versions, idempotent upserts, "done", queries, reviews,
manifests (read back with pandas and DuckDB) and the CLI."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
from astro_pipeline.catalog import Catalog, CatalogError, FrameFilter, NotFoundError, export_cumulative_manifest
from astro_pipeline.catalog import schema as catalog_schema
from astro_pipeline.ingest.frame import Flag, QualityReport, StretchParams
from astro_pipeline.products import ModelRecord, Operation, ProcessedInput, Product, ProductFile, ProductStatus

MODELS_V1 = (ModelRecord(name="colorizer", version="v1", sha256="c1" * 32, arch="unet"),
             ModelRecord(name="superres", version="v1", sha256="s1" * 32, arch="srresnet"))
MODELS_V2 = (ModelRecord(name="colorizer", version="v2", sha256="c2" * 32, arch="unet"),
             ModelRecord(name="superres", version="v1", sha256="s1" * 32, arch="srresnet"))
PARAMS = {"tile": 256, "overlap": 32, "stretch": "zscale+asinh"}


def record(n: int, *, archive: str = "mast", ra: float = 210.8, dec: float = 54.35, kind: str = "science",
           **kw: Any) -> ArchiveRecord:
    return ArchiveRecord(archive=archive, id=f"{archive}:obs{n}", obs_id=f"obs{n}", target="M101", ra=ra, dec=dec,
                         instrument="ACS/WFC", filters=["F814W"], url=f"http://127.0.0.1:9/{archive}/{n}",
                         credit="NASA/ESA", license="public domain", kind=kind, **kw)


def downloaded(tmp: Path, rec: ArchiveRecord, n: int) -> DownloadedFile:
    path = tmp / "raw" / f"{rec.archive}_{n}.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * (n + 1))
    return DownloadedFile(record=rec, path=path, size=n + 1, sha256=f"{n:064x}", verified_against="size",
                          downloaded_at=datetime.now(UTC))


def noisy(snr: float = 1.5) -> QualityReport:
    return QualityReport(metrics={"snr": snr, "blank_fraction": 0.1},
                         flags=[Flag("noisy", snr, 3.0, "<", "SNR below threshold")])


def product_for(tmp: Path, dl: DownloadedFile, *, hdu: int | None = 1, run_id: str | None = None,
                status: str = "ok", models: tuple[ModelRecord, ...] | None = None, flags: bool = True,
                operation: str = "enhance") -> Product:
    out = tmp / "products"
    out.mkdir(exist_ok=True)
    png = out / f"{dl.sha256[-6:]}_{hdu}_{operation}.png"
    png.write_bytes(b"png")
    ok = status == "ok"
    return Product(
        run_id=run_id, source_path=str(dl.path), source_sha256=dl.sha256, hdu=hdu, plane=None,
        frame_key=f"{dl.path}[{hdu}]", operation=Operation(operation), status=ProductStatus(status),
        error=None if ok else f"{dl.path}: broken", metrics={"snr": 1.5}, models=models or MODELS_V1,
        params=dict(PARAMS), tile_count=4,
        quality=QualityReport(metrics={"snr": 1.5}, flags=[Flag("noisy", 1.5, 3.0, "<")] if flags and ok else []),
        stretch=StretchParams(method="zscale+asinh", vmin=0.1, vmax=9.0),
        files={"png": ProductFile(path=png, sha256="ab" * 32), "fits": ProductFile(path=png.with_suffix(".fits"),
                                                                                    sha256="cd" * 32)}
        if ok else {})


@pytest.fixture()
def cat(tmp_path: Path) -> Catalog:
    c = Catalog.for_output(tmp_path / "out")
    yield c
    c.close()


def count(c: Catalog, table: str) -> int:
    return c.read(lambda conn: conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


# --- schema -------------------------------------------------------------------------------------

def test_default_location_wal_and_schema_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from astro_pipeline.config import get_settings

    monkeypatch.setenv("ASTRO_PIPELINE_OUTPUT_DIR", str(tmp_path / "o"))
    get_settings.cache_clear()
    with Catalog(settings=get_settings()) as c:
        assert c.url == f"sqlite:///{(tmp_path / 'o' / 'catalog.sqlite').resolve()}"
        assert c.schema_version == catalog_schema.LATEST
        assert c.read(lambda conn: conn.exec_driver_sql("PRAGMA journal_mode").scalar()) == "wal"
        assert c.read(lambda conn: conn.exec_driver_sql("PRAGMA busy_timeout").scalar()) >= 10_000
    with Catalog(settings=get_settings()) as again:  # reopening neither recreates nor re-stamps
        assert again.read(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM schema_version").scalar()) == 1


def test_upgrade_steps_run_in_order_and_newer_schema_is_refused(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    Catalog.for_output(tmp_path).close()
    base = catalog_schema.LATEST  # a fresh catalog is stamped with the current version only

    def add_column(conn: Any) -> None:
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN note TEXT")

    monkeypatch.setattr(catalog_schema, "LATEST", base + 1)
    monkeypatch.setattr(catalog_schema, "UPGRADES", {**catalog_schema.UPGRADES, base + 1: ("runs.note", add_column)})
    with Catalog.for_output(tmp_path) as c:
        assert c.schema_version == base + 1
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    assert "note" in [r[1] for r in db.execute("PRAGMA table_info(runs)")]
    assert [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY version")] == [base, base + 1]
    db.close()
    monkeypatch.setattr(catalog_schema, "LATEST", base)
    with pytest.raises(CatalogError, match=f"schema version {base + 1}, newer than this code's {base}"):
        Catalog.for_output(tmp_path)


def test_version_1_catalog_is_upgraded_in_place(tmp_path: Path) -> None:
    """A version-1 catalog is upgraded step by step: review sessions (2), then deleted_at / notes /
    quality_metrics (3), with its products' quality metrics moved out of ``metrics`` (where versions
    1 and 2 kept them under a ``quality_`` prefix), then superseded_by / superseded_at and the
    product-path index (4), then products.channels (5), then the fields' tables and frame footprints (6),
    then field products' superseded_by / superseded_at and their file-path index (7)."""
    import json

    Catalog.for_output(tmp_path).close()
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    db.execute("DROP INDEX ix_product_files_path")
    for table, column in (("files", "deleted_at"), ("frames", "notes"), ("products", "quality_metrics"),
                          ("products", "superseded_by"), ("products", "superseded_at"), ("products", "channels"),
                          ("frames", "footprint"), ("frames", "field_note")):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")  # back to the version-1 shape
    db.execute("DROP TABLE review_sessions")
    for table in ("field_product_files", "field_products", "field_members", "fields"):
        db.execute(f"DROP TABLE {table}")
    db.execute("DELETE FROM schema_version")
    db.execute("INSERT INTO schema_version VALUES (1, 'initial catalog tables', '2026-01-01 00:00:00')")
    db.execute("INSERT INTO products (product_key, source_path, hdu_idx, plane_idx, operation, status, models, "
               "models_hash, params, params_hash, metrics, attempts, created_at, updated_at) VALUES "
               "('k', '/x.fits', -1, -1, 'upscale', 'ok', '[]', 'h', '{}', 'h', ?, 1, '2026-01-01', '2026-01-01')",
               (json.dumps({"quality_snr": 4.5, "quality_noise": 0.2, "inference_seconds": 1.0}),))
    db.commit()
    db.close()
    with Catalog.for_output(tmp_path) as c:
        assert c.schema_version == catalog_schema.LATEST == 7
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    try:
        assert "deleted_at" in [r[1] for r in db.execute("PRAGMA table_info(files)")]
        assert "notes" in [r[1] for r in db.execute("PRAGMA table_info(frames)")]
        assert "channels" in [r[1] for r in db.execute("PRAGMA table_info(products)")]  # version 5
        metrics, quality = db.execute("SELECT metrics, quality_metrics FROM products").fetchone()
        assert json.loads(metrics) == {"inference_seconds": 1.0}
        assert json.loads(quality) == {"snr": 4.5, "noise": 0.2}
        assert [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY version")] == [1, 2, 3, 4, 5, 6, 7]
        assert {"superseded_by", "superseded_at"} <= {r[1] for r in db.execute("PRAGMA table_info(field_products)")}
        assert "ix_field_product_files_path" in [r[1] for r in db.execute("PRAGMA index_list(field_product_files)")]
        assert db.execute("SELECT superseded_by, superseded_at FROM products").fetchone() == (None, None)
        assert "ix_product_files_path" in [r[1] for r in db.execute("PRAGMA index_list(product_files)")]
        assert {"footprint", "field_note"} <= {r[1] for r in db.execute("PRAGMA table_info(frames)")}
        assert db.execute("SELECT count(*) FROM fields").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM review_sessions").fetchone() == (0,)
    finally:
        db.close()


def test_foreign_database_and_missing_catalog_are_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    db.execute("CREATE TABLE runs (x INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(CatalogError, match="not an astro-pipeline catalog"):
        Catalog.for_output(tmp_path)
    with pytest.raises(CatalogError, match="no catalog at .*nowhere"):
        Catalog.for_output(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()


# --- upserts --------------------------------------------------------------------------------------

def test_upserts_are_idempotent_by_archive_id_and_content_hash(cat: Catalog, tmp_path: Path) -> None:
    rec = record(1)
    dl = downloaded(tmp_path, rec, 1)
    assert cat.upsert_file(dl) == cat.upsert_file(dl)
    # A later listing without credit keeps the known credit; a new title replaces the old one.
    rid = cat.upsert_record(rec.model_copy(update={"credit": None, "title": "new title"}))
    assert rid == cat.upsert_record(rec)
    row = cat.read(lambda c: c.exec_driver_sql("SELECT credit, title FROM archive_records").one())
    assert tuple(row) == ("NASA/ESA", "new title")
    # The same bytes from a second archive: one file row, first source kept.
    other = dl.model_copy(update={"record": record(1, archive="hla")})
    assert cat.upsert_file(other) == cat.upsert_file(dl)
    assert (count(cat, "archive_records"), count(cat, "files")) == (2, 1)
    source = cat.file_for_record("mast", "mast:obs1")
    assert source is not None and source["sha256"] == dl.sha256
    assert cat.file_for_record("hla", "hla:obs1") is None

    frame = cat.upsert_frame(dl.sha256, f"{dl.path}[1]", 1, None, {"ra": 210.9, "dec": 54.3}, noisy())
    assert frame == cat.upsert_frame(dl.sha256, f"{dl.path}[1]", 1, None, None, noisy(1.0))
    view = cat.frame(frame)
    assert view is not None and view.flags[0]["value"] == 1.0 and view.ra == 210.9 and view.kind == "grey"
    # A clean re-assessment clears the flags.
    cat.upsert_frame(dl.sha256, f"{dl.path}[1]", 1, None, None, QualityReport(metrics={"snr": 9.0}))
    assert cat.frame(frame).flags == [] and cat.flagged_frames() == []  # type: ignore[union-attr]

    p = product_for(tmp_path, dl)
    first = cat.record_product(p)
    assert cat.record_product(p) == first
    assert (count(cat, "products"), count(cat, "product_files")) == (1, 2)
    assert cat.read(lambda c: c.exec_driver_sql("SELECT attempts FROM products").scalar()) == 2
    with pytest.raises(NotFoundError, match="no file with sha256"):
        cat.upsert_frame("f" * 64, "x", None, None)


def test_done_means_every_frame_ok_with_these_models_and_params(cat: Catalog, tmp_path: Path) -> None:
    dl = downloaded(tmp_path, record(1), 1)
    cat.upsert_file(dl, n_frames=2)
    versions = {"colorizer": "v1", "superres": "v1"}
    assert not cat.is_done(dl.sha256, versions, PARAMS)
    cat.record_product(product_for(tmp_path, dl, hdu=1))
    assert not cat.is_done(dl.sha256, versions, PARAMS)  # 1 of 2 frames
    cat.record_product(product_for(tmp_path, dl, hdu=2, status="error"))
    assert not cat.is_done(dl.sha256, versions, PARAMS)  # a frame failed
    cat.record_product(product_for(tmp_path, dl, hdu=2))  # retried, now ok (same key: replaced)
    assert cat.is_done(dl.sha256, versions, PARAMS)
    assert cat.is_done(dl.sha256, MODELS_V1, PARAMS, operation="enhance")  # a Product's models list works too
    assert not cat.is_done(dl.sha256, versions, PARAMS, operation="colorize")
    assert not cat.is_done(dl.sha256, {"colorizer": "v2", "superres": "v1"}, PARAMS)
    assert not cat.is_done(dl.sha256, versions, {**PARAMS, "tile": 512})
    assert count(cat, "products") == 2


# --- queries --------------------------------------------------------------------------------------

def test_flagged_frames_filters(cat: Catalog, tmp_path: Path) -> None:
    r1 = cat.start_run("sweep", {})
    r2 = cat.start_run("sweep", {})
    near_zero = record(1, ra=359.95, dec=0.0)  # the region must wrap RA 360 -> 0
    m101 = record(2, ra=210.80, dec=54.35)
    hla = record(3, archive="hla", ra=202.47, dec=47.19)
    clean = record(4)
    for n, (rec, run) in enumerate([(near_zero, r1), (m101, r1), (hla, r2), (clean, r2)], start=1):
        dl = downloaded(tmp_path, rec, n)
        cat.upsert_file(dl, run_id=run)
        cat.record_product(product_for(tmp_path, dl, run_id=run, flags=rec is not clean))
    names = lambda views: [v.archive_id for v in views]  # noqa: E731
    assert names(cat.flagged_frames()) == ["hla:obs3", "mast:obs2", "mast:obs1"]  # newest first, clean left out
    assert names(cat.flagged_frames(archive="hla")) == ["hla:obs3"]
    assert names(cat.flagged_frames(run_id=r1)) == ["mast:obs2", "mast:obs1"]
    assert names(cat.flagged_frames(flag="noisy", limit=1, offset=1)) == ["mast:obs2"]
    assert cat.flagged_frames(flag="saturated") == []
    assert names(cat.flagged_frames(ra=0.02, dec=0.01, radius_deg=0.1)) == ["mast:obs1"]
    assert names(cat.flagged_frames(FrameFilter(ra=210.7, dec=54.3, radius_deg=0.1))) == ["mast:obs2"]
    v = cat.flagged_frames(archive="hla")[0]
    assert v.flags[0] == {"name": "noisy", "value": 1.5, "threshold": 3.0, "comparison": "<", "message": ""}
    assert v.products[0].files["png"].path.endswith(".png") and v.products[0].run_id == r2
    assert cat.product_file(v.products[0].files["png"].id).path == v.products[0].files["png"].path  # type: ignore[union-attr]
    assert cat.product_file(10_000) is None
    cat.add_review(v.frame_id, "approved", None, "ann")
    assert names(cat.flagged_frames(decision="undecided")) == ["mast:obs2", "mast:obs1"]
    assert cat.count_frames(decision="undecided") == 2 and cat.count_frames(decision="approved") == 1
    with pytest.raises(ValueError, match="needs all of ra, dec and radius_deg"):
        cat.flagged_frames(ra=1.0)
    with pytest.raises(ValueError, match="unknown decision filter"):
        cat.flagged_frames(decision="maybe")


def test_approved_items_by_kind_exclude_rejected_and_undone(cat: Catalog, tmp_path: Path) -> None:
    grey = [downloaded(tmp_path, record(n), n) for n in range(3)]
    color = downloaded(tmp_path, record(9, archive="esahubble", kind="color", release="heic0506"), 9)
    ids = []
    for dl in [*grey, color]:
        cat.upsert_file(dl)
        ids.append(cat.upsert_frame(dl.sha256, str(dl.path), None, None, {}, noisy()))
    cat.add_reviews(ids, "approved", "bulk", "ann")
    cat.add_review(ids[1], "rejected", "satellite trail", "bob")
    cat.undo_review(ids[2], "ann")
    grey_items = cat.approved_items("grey")
    assert [v.frame_id for v in grey_items] == [ids[0]]
    assert grey_items[0].raw_path == grey_items[0].path == str(grey[0].path) and grey_items[0].raw_exists
    assert grey_items[0].instrument == "ACS/WFC" and grey_items[0].filter == "F814W"
    colour = cat.approved_items("colour")
    assert [(v.frame_id, v.kind, v.archive, v.release) for v in colour] == [(ids[3], "color", "esahubble", "heic0506")]
    assert cat.rejected_inputs() == {(grey[1].sha256, None, None)}
    with pytest.raises(ValueError, match="unknown image kind"):
        cat.approved_items("infrared")


def test_reviews_are_append_only_and_undo_steps_back(cat: Catalog, tmp_path: Path) -> None:
    dl = downloaded(tmp_path, record(1), 1)
    cat.upsert_file(dl)
    frame = cat.upsert_frame(dl.sha256, str(dl.path), None, None, {}, noisy())
    assert cat.current_decision(frame) is None and cat.undo_review(frame, "ann") is None
    first = cat.add_review(frame, "needs_look", "check the halo", "ann")
    second = cat.add_review(frame, "rejected", None, "bob")
    assert cat.current_decision(frame).decision == "rejected"  # type: ignore[union-attr]
    assert cat.undo_review(frame, "bob") == second
    current = cat.current_decision(frame)
    assert current is not None and (current.decision, current.note, current.reviewer) == (
        "needs_look", "check the halo", "ann")
    assert cat.undo_review(frame, "bob") == first
    assert cat.current_decision(frame) is None
    cat.add_review(frame, "approved", "fine after all", "ann")
    history = cat.review_history(frame)
    assert [(e.action, e.decision, e.undone) for e in history] == [
        ("decision", "needs_look", True), ("decision", "rejected", True), ("undo", None, False),
        ("undo", None, False), ("decision", "approved", False)]
    assert history[2].undoes_id == second and history[2].reviewer == "bob" and history[0].at.tzinfo is not None
    with pytest.raises(ValueError, match="unknown review decision"):
        cat.add_review(frame, "maybe", None, "ann")
    with pytest.raises(ValueError, match="reviewer"):
        cat.add_review(frame, "approved", None, " ")
    with pytest.raises(NotFoundError, match="no frame with id 999"):
        cat.add_reviews([frame, 999], "approved", None, "ann")
    assert len(cat.review_history(frame)) == 5  # the failed bulk action wrote nothing
    url = cat.url
    cat.close()
    with Catalog(url) as reopened:  # decisions survive a restart
        assert reopened.current_decision(frame).decision == "approved"  # type: ignore[union-attr]


def test_runs_and_run_summary(cat: Catalog, tmp_path: Path) -> None:
    run = cat.start_run("archive-sweep", {"regions": ["m101"], "path": tmp_path})
    assert cat.start_run("archive-sweep", {}, run_id=run) == run  # idempotent by id
    info = cat.run(run)
    assert info is not None and info.status == "running" and info.display_status == "running"
    assert info.params == {"regions": ["m101"], "path": str(tmp_path)}
    dl = downloaded(tmp_path, record(1), 1)
    cat.upsert_file(dl, run_id=run)
    cat.record_input(ProcessedInput(path=dl.path, sha256=dl.sha256, size=dl.size, n_frames=2, products=[
        product_for(tmp_path, dl, run_id=run, hdu=1),
        product_for(tmp_path, dl, run_id=run, hdu=2, status="error", flags=False)]), run_id=run)
    cat.finish_run(run, "completed_with_errors", {"files": 1, "bytes": 2})
    s = cat.run_summary(run)
    assert s.run.status == "completed_with_errors" and s.run.duration_s is not None and s.run.duration_s >= 0
    assert s.products_by_status == {"ok": 1, "error": 1} and s.flags == {"noisy": 1}
    assert s.files == 1 and s.tiles == 8 and s.errors == [(str(dl.path), f"{dl.path}: broken")]
    with pytest.raises(NotFoundError):
        cat.run_summary("nope")
    with pytest.raises(NotFoundError):
        cat.finish_run("nope", "ok")
    with pytest.raises(ValueError, match="bad run status"):
        cat.finish_run(run, "")
    # A run whose process died without finishing shows as "died".
    dead = cat.start_run("sweep", {})
    cat.write(lambda c: c.exec_driver_sql("UPDATE runs SET pid = 2147483646 WHERE id = ?", (dead,)))
    assert cat.run(dead).display_status == "died"  # type: ignore[union-attr]
    assert [r.id for r in cat.recent_runs(1)] == [dead]


# --- manifests ------------------------------------------------------------------------------------

REQUIRED_COLUMNS = [
    "run_id", "archive", "obs_id", "source_url", "input_sha256", "target", "ra", "dec", "date_obs",
    "instrument", "filters", "credit", "license", "stretch_method", "stretch_vmin", "stretch_vmax", "metrics",
    "flags", "tile_count", "model_names", "model_versions", "model_sha256", "png_path", "png_sha256",
    "fits_path", "fits_sha256", "raw_path", "status", "error", "review_decision",
]


def test_cumulative_manifest_read_by_pandas_and_duckdb(cat: Catalog, tmp_path: Path) -> None:
    import duckdb
    import pandas as pd

    from astro_pipeline.catalog import export_run_manifest

    run = cat.start_run("sweep", {})
    dls = [downloaded(tmp_path, record(n), n) for n in range(3)]
    for dl in dls:
        cat.upsert_file(dl, run_id=run)
    cat.record_product(product_for(tmp_path, dls[0], run_id=run))
    cat.record_product(product_for(tmp_path, dls[1], run_id=run, status="error"))
    cat.record_product(product_for(tmp_path, dls[2], run_id="other-run"))
    fid = cat.flagged_frames(run_id=run)[0].frame_id
    cat.add_review(fid, "approved", "<b>nice</b>", "ann")
    dls[0].path.unlink()  # retention removed the raw download, and recorded it
    assert cat.record_raw_deleted(dls[0].sha256)

    out = tmp_path / "out"
    path = export_cumulative_manifest(cat, output_dir=out)
    assert path == out / "manifests" / "all.parquet" and not list(path.parent.glob(".*tmp"))
    df = pd.read_parquet(path)
    assert len(df) == 3 and [c for c in REQUIRED_COLUMNS if c not in df.columns] == []
    ok = df[df.input_sha256 == dls[0].sha256].iloc[0]
    assert ok.run_id == run and ok.archive == "mast" and ok.obs_id == "obs0" and ok.target == "M101"
    assert ok.model_versions == "v1;v1" and ok.png_sha256 == "ab" * 32 and ok["flags"] == "noisy"
    assert ok.review_decision == "approved" and ok.review_note == "<b>nice</b>" and ok.metric_snr == 1.5
    assert ok.raw_path == str(dls[0].path) and bool(ok.raw_deleted)
    err = df[df.status == "error"].iloc[0]
    assert err.error.endswith("broken") and pd.isna(err.png_path)

    con = duckdb.connect()
    rows = con.execute(f"SELECT status, count(*) FROM read_parquet('{path}') GROUP BY status ORDER BY status").fetchall()
    assert rows == [("error", 1), ("ok", 2)]
    parquet, csv = export_run_manifest(cat, run, output_dir=out)
    assert pd.read_csv(csv)["run_id"].tolist() == [run, run]
    assert con.execute(f"SELECT count(*) FROM '{parquet}' WHERE review_decision = 'approved'").fetchone() == (1,)
    con.close()


def test_products_round_trip_typed_and_the_manifest_prefers_archive_records(cat: Catalog, tmp_path: Path) -> None:
    """A typed ``Product`` records as-is and reads back equal; the manifest prefers the archive record."""
    from astro_pipeline.catalog import export_run_manifest
    from astro_pipeline.catalog.writes import key_of

    dl = downloaded(tmp_path, record(1), 1)
    png = tmp_path / "out" / "products" / "a.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"png")
    real = Product(
        run_id="r1", source_path=str(dl.path), source_sha256=dl.sha256, hdu=1, plane=None,
        frame_key=f"{dl.path}[1]", operation=Operation.COLORIZE, status=ProductStatus.OK,
        provenance={"target": "HEADER-TARGET", "filter": "F814W", "ra": 210.81, "dec": 54.36},
        quality=QualityReport(metrics={"snr": 2.0, "saturated_fraction": 0.0}, flags=[Flag("noisy", 2.0, 3.0, "<")]),
        metrics={"inference_seconds": 0.1}, stretch=StretchParams(method="zscale+asinh", vmin=0.0, vmax=1.0),
        models=MODELS_V1[:1], params={"operation": "colorize"}, tile_count=2, notes=("DQ extension shape (1, 2) "
                                                                                   "does not match SCI; ignored",),
        files={"png": ProductFile(path=png, sha256="ab" * 32)})
    cat.record_input(ProcessedInput(path=dl.path, sha256=dl.sha256, size=dl.size, n_frames=1, products=[real]),
                     run_id="r1", downloaded=dl)
    frame = cat.flagged_frames()[0]
    assert frame.metrics == {"snr": 2.0, "saturated_fraction": 0.0} and frame.ra == 210.81
    assert frame.notes == list(real.notes)
    assert cat.is_done(dl.sha256, {"colorizer": "v1"}, None, operation="colorize")
    (back,) = cat.current_products([dl.sha256], operation=Operation.COLORIZE, models={"colorizer": "v1"})
    assert back == real and key_of(back) == key_of(real)
    parquet, _ = export_run_manifest(cat, "r1", output_dir=tmp_path / "out")
    import pandas as pd

    row = pd.read_parquet(parquet).iloc[0]
    assert row.png_path == "products/a.png" and row.target == "M101" and row["filter"] == "F814W"
    assert row.metric_quality_snr == 2.0 and row.metric_inference_seconds == 0.1 and row.archive == "mast"
    assert row.notes == real.notes[0] and not row.raw_deleted


def test_empty_catalog_exports_a_readable_manifest(cat: Catalog, tmp_path: Path) -> None:
    import duckdb
    import pandas as pd

    path = export_cumulative_manifest(cat, output_dir=tmp_path, csv=True)
    assert len(pd.read_parquet(path)) == 0 and "run_id" in pd.read_csv(path.with_suffix(".csv")).columns
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM '{path}'").fetchall() == [(0,)]
    con.close()


# --- CLI ------------------------------------------------------------------------------------------

def test_cli_runs_stats_and_export(cat: Catalog, tmp_path: Path) -> None:
    from astro_pipeline.cli import app

    run = cat.start_run("archive-sweep", {})
    dl = downloaded(tmp_path, record(1), 1)
    cat.upsert_file(dl, run_id=run)
    cat.record_product(product_for(tmp_path, dl, run_id=run))
    cat.finish_run(run, "completed", {"files": 1})
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["runs", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert run in res.output and "completed" in res.output and "noisy=1" in res.output
    res = runner.invoke(app, ["runs", "--catalog", cat.url, "--json"])
    assert res.exit_code == 0 and '"status": "completed"' in res.output
    res = runner.invoke(app, ["catalog", "stats", "-o", str(out)])
    assert res.exit_code == 0 and "products" in res.output and "ok=1" in res.output
    res = runner.invoke(app, ["catalog", "export", "--output", str(out)])
    assert res.exit_code == 0 and (out / "manifests" / "all.parquet").is_file()
    assert (out / "manifests" / "all.csv").is_file()
    res = runner.invoke(app, ["runs", "--output", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "no catalog at" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "empty").exists()


def test_atomic_manifest_write_leaves_old_file_on_failure(cat: Catalog, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    path = export_cumulative_manifest(cat, output_dir=tmp_path)
    before = path.read_bytes()

    def boom(self: Any, *a: Any, **k: Any) -> None:
        Path(a[0]).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        export_cumulative_manifest(cat, output_dir=tmp_path)
    assert path.read_bytes() == before and os.listdir(path.parent) == ["all.parquet"]


def test_recording_run_counts_downloads_and_products_and_records_failures(tmp_path: Path) -> None:
    from astro_pipeline.archives.download import TransientDownloadError
    from astro_pipeline.catalog import recording_run

    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    dl = downloaded(tmp_path, record(1), 1)
    with recording_run("fetch-mast", {"ra": 210.8}, url=url) as run:
        run.records([record(1), record(2)])
        run.downloads([dl, TransientDownloadError("http://127.0.0.1:9/x", "HTTP 503 after 5 attempts")])
        run.inputs([ProcessedInput(path=dl.path, sha256=dl.sha256, size=dl.size, n_frames=1,
                                   products=[product_for(tmp_path, dl)])])
    with pytest.raises(RuntimeError, match="boom"), recording_run("enhance", {}, url=url) as failing:
        raise RuntimeError("boom")
    with Catalog(url) as cat:
        done = cat.run(run.run_id)
        assert done is not None and done.status == "completed_with_errors"
        assert done.counts == {"listed": 2, "downloaded": 1, "bytes": 2, "download_failed": 1, "products_ok": 1}
        assert cat.run_summary(run.run_id).products_by_status == {"ok": 1}  # products took the run's id
        failed = cat.run(failing.run_id)
        assert failed is not None and failed.status == "failed" and failed.error == "RuntimeError: boom"
