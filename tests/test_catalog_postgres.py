"""The catalog on a real PostgreSQL server (``postgres_url`` fixture: skips with the reason when none).

``.ci/run`` starts Debian's PostgreSQL and exports ``ASTRO_PIPELINE_TEST_POSTGRES_URL``; locally:
``export ASTRO_PIPELINE_TEST_POSTGRES_URL=$(bash scripts/start_postgres.sh)``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
from astro_pipeline.catalog import Catalog, CatalogError, export_cumulative_manifest
from astro_pipeline.catalog import schema as catalog_schema
from astro_pipeline.ingest.frame import Flag, QualityReport, StretchParams
from astro_pipeline.products import ModelRecord, Product, ProductFile

pytestmark = pytest.mark.postgres


def _downloaded(tmp: Path, n: int, **kw: object) -> DownloadedFile:
    rec = ArchiveRecord(archive="mast", id=f"mast:obs{n}", obs_id=f"obs{n}", ra=150.0 + n, dec=2.0,
                        url=f"http://127.0.0.1:9/{n}", target="COSMOS", instrument="ACS/WFC", filters=["F814W"],
                        credit="NASA", **kw)  # type: ignore[arg-type]
    path = tmp / f"{n}.fits"
    path.write_bytes(b"x" * (n + 1))
    return DownloadedFile(record=rec, path=path, size=n + 1, sha256=f"{n:064x}", verified_against="size",
                          downloaded_at=datetime.now(UTC))


def _product(dl: DownloadedFile, run_id: str, version: str = "v1") -> Product:
    return Product(run_id=run_id, source_path=str(dl.path), source_sha256=dl.sha256, hdu=1, plane=None,
                   frame_key=f"{dl.path}[1]", operation="enhance", status="ok", provenance={"note": float("nan")},
                   quality=QualityReport(metrics={"snr": 1.0}, flags=[Flag("noisy", 1.0, 3.0, "<")]),
                   stretch=StretchParams(method="zscale+asinh", vmin=0.0, vmax=1.0),
                   models=(ModelRecord(name="colorizer", version=version, sha256="0" * 64, arch="unet"),),
                   params={"tile": 256}, tile_count=3,
                   files={"png": ProductFile(path=dl.path.with_suffix(".png"), sha256="a" * 64)})


def test_catalog_roundtrip_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    with Catalog(postgres_url) as cat:
        assert cat.engine.dialect.name == "postgresql" and cat.schema_version == catalog_schema.LATEST
        assert "astro_test:***@" in repr(cat) or "***" in cat.stats()["url"]  # password never shown
        run = cat.start_run("sweep", {"regions": ["cosmos"]})
        dls = [_downloaded(tmp_path, n) for n in range(3)]
        for dl in dls:
            assert cat.upsert_file(dl, run_id=run) == cat.upsert_file(dl, run_id=run)
        frame = cat.upsert_frame(dls[0].sha256, "f", 1, None, {}, QualityReport(
            metrics={"snr": 1.0}, flags=[Flag("noisy", 1.0, 3.0, "<")]))
        for dl in dls[:2]:
            cat.record_product(_product(dl, run))
            cat.record_product(_product(dl, run))
        assert cat.is_done(dls[0].sha256, {"colorizer": "v1"}, {"tile": 256})
        assert not cat.is_done(dls[0].sha256, {"colorizer": "v2"}, {"tile": 256})
        assert not cat.is_done(dls[2].sha256, {"colorizer": "v1"}, {"tile": 256})  # never processed
        assert [v.archive_id for v in cat.flagged_frames(ra=151.0, dec=2.0, radius_deg=0.5)] == ["mast:obs1"]
        cat.add_review(frame, "approved", "ok", "ann")
        cat.add_review(frame, "rejected", None, "bob")
        assert cat.undo_review(frame, "bob") is not None
        assert cat.current_decision(frame).decision == "approved"  # type: ignore[union-attr]
        assert [v.frame_id for v in cat.approved_items("grey")] == [frame]
        cat.finish_run(run, "completed", {"files": 3})
        summary = cat.run_summary(run)
        assert summary.products_by_status == {"ok": 2} and summary.flags == {"noisy": 2}
        stats = cat.stats()
        assert (stats["files"], stats["products"], stats["product_files"]) == (3, 2, 2)
        path = export_cumulative_manifest(cat, output_dir=tmp_path / "out")
        import pandas as pd

        df = pd.read_parquet(path)
        assert sorted(df.review_decision.fillna("-")) == ["-", "approved"]
    # Reopening neither re-creates nor re-stamps; a newer schema is refused.
    with Catalog(postgres_url) as again:
        assert again.read(lambda c: c.exec_driver_sql("SELECT count(*) FROM schema_version").scalar()) == 1
        again.write(lambda c: c.exec_driver_sql(
            "INSERT INTO schema_version (version, description, applied_at) VALUES (99, 'future', now())"))
    with pytest.raises(CatalogError, match="schema version 99"):
        Catalog(postgres_url)


def test_two_processes_write_at_once_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    from test_catalog_concurrency import check_two_writers, run_two_writers

    n = 12
    run_two_writers(postgres_url, tmp_path, n)  # both also race to create the schema
    with Catalog(postgres_url) as cat:
        check_two_writers(cat, n)
