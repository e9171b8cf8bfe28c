"""Manifests rebuilt from the catalog: ``OUTPUT/manifests/all.parquet`` (cumulative) and per-run files.

One row per product. The product columns are exactly the per-run manifest's
(``manifest.manifest_columns``: ``<kind>_path`` / ``<kind>_sha256`` pairs, stretch, metrics, flags,
models); the catalog adds where the input came from (archive, observation, URL, title, filters,
``raw_path``, which may name a file retention deleted) and the curator's current decision, and
prefers the archive record's target/position/date/instrument/credit/licence over the header's.
pandas and DuckDB read both files directly.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, select

from astro_pipeline.catalog import tables as t
from astro_pipeline.catalog.keys import index_or_none
from astro_pipeline.catalog.queries import current_decisions
from astro_pipeline.fileio import atomic_write
from astro_pipeline.manifest import BASE_COLUMNS, manifest_columns

__all__ = ["CATALOG_COLUMNS", "catalog_manifest", "export_cumulative_manifest", "export_run_manifest"]

#: Columns the catalog adds to the per-run manifest's, placed right after its leading columns.
CATALOG_COLUMNS: tuple[str, ...] = (
    "archive", "archive_id", "obs_id", "source_url", "title", "filters", "raw_path", "raw_deleted",
    "review_decision", "review_note", "reviewer", "reviewed_at", "product_id", "frame_id", "created_at",
    "updated_at",
)


def _product(r: Any, files: dict[str, tuple[str, str | None]]) -> SimpleNamespace:
    """A Product-shaped view of a catalog row, for ``manifest_columns``."""
    return SimpleNamespace(
        run_id=r.run_id, status=r.status, error=r.error, operation=r.operation, source_path=r.source_path,
        source_sha256=r.source_sha256, hdu=index_or_none(r.hdu_idx), plane=index_or_none(r.plane_idx),
        frame_key=r.frame_key, provenance=r.provenance or {}, stretch=r.stretch, metrics=r.metrics or {},
        flags=r.flags or [], tile_count=r.tile_count, models=r.models or [], params=r.params or {},
        files={kind: SimpleNamespace(path=Path(path), sha256=sha) for kind, (path, sha) in files.items()})


def _rows(conn: Connection, run_id: str | None, output_dir: Path | None) -> list[dict[str, Any]]:
    p, fi, rec = t.products, t.files, t.archive_records
    cur = current_decisions()
    q = (select(p, fi.c.path.label("raw_path"), rec.c.archive, rec.c.archive_id, rec.c.obs_id,
                rec.c.url.label("source_url"), rec.c.title, rec.c.target, rec.c.ra.label("rec_ra"),
                rec.c.dec.label("rec_dec"), rec.c.date_obs, rec.c.instrument, rec.c.filters, rec.c.credit,
                rec.c.license, t.frames.c.ra.label("frame_ra"), t.frames.c.dec.label("frame_dec"),
                cur.c.decision, cur.c.note, cur.c.reviewer, cur.c.created_at.label("reviewed_at"))
         .select_from(p.outerjoin(fi, fi.c.id == p.c.file_id).outerjoin(rec, rec.c.id == fi.c.record_id)
                      .outerjoin(t.frames, t.frames.c.id == p.c.frame_id)
                      .outerjoin(cur, cur.c.frame_id == p.c.frame_id))
         .order_by(p.c.id))
    fq = select(t.product_files.c.product_id, t.product_files.c.kind, t.product_files.c.path,
                t.product_files.c.sha256)
    if run_id is not None:
        q = q.where(p.c.run_id == run_id)
        fq = fq.join(p, p.c.id == t.product_files.c.product_id).where(p.c.run_id == run_id)
    prods = list(conn.execute(q))
    files: dict[int, dict[str, tuple[str, str | None]]] = defaultdict(dict)
    for pid, kind, path, sha in conn.execute(fq):
        files[pid][kind] = (path, sha)
    rows = []
    for r in prods:
        row = manifest_columns(_product(r, files.get(r.id, {})), output_dir=output_dir)
        known = {"target": r.target, "ra": r.frame_ra if r.frame_ra is not None else r.rec_ra,
                 "dec": r.frame_dec if r.frame_dec is not None else r.rec_dec, "date_obs": r.date_obs,
                 "instrument": r.instrument, "credit": r.credit, "license": r.license}
        row.update({k: v for k, v in known.items() if v is not None})
        raw = r.raw_path or r.source_path
        row.update({
            "archive": r.archive, "archive_id": r.archive_id, "obs_id": r.obs_id, "source_url": r.source_url,
            "title": r.title, "filters": ",".join(r.filters) if r.filters else None,
            "raw_path": raw, "raw_deleted": not Path(raw).is_file(),
            "review_decision": r.decision, "review_note": r.note, "reviewer": r.reviewer,
            "reviewed_at": r.reviewed_at, "product_id": r.id, "frame_id": r.frame_id,
            "created_at": r.created_at, "updated_at": r.updated_at,
        })
        rows.append(row)
    return rows


def catalog_manifest(catalog: Any, run_id: str | None = None, *, output_dir: str | Path | None = None) -> Any:
    """A pandas DataFrame with one row per product (of one run, or all); paths relative to ``output_dir``."""
    import pandas as pd

    out = Path(output_dir) if output_dir is not None else None
    rows = catalog.read(lambda c: _rows(c, run_id, out))
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="string") for c in (*BASE_COLUMNS, *CATALOG_COLUMNS)})
    frame = pd.DataFrame(rows)
    lead = [c for c in (*BASE_COLUMNS, *CATALOG_COLUMNS) if c in frame.columns]
    frame = frame[[*lead, *(c for c in frame.columns if c not in lead)]]
    for col in ("product_id", "frame_id", "hdu", "plane", "tile_count"):
        frame[col] = frame[col].astype("Int64")
    for col in ("reviewed_at", "created_at", "updated_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    frame["raw_deleted"] = frame["raw_deleted"].astype("boolean")
    for col in frame.columns:  # all-None object columns would become Parquet's null type
        if frame[col].dtype == object:
            frame[col] = frame[col].map(lambda v: v if v is None or isinstance(v, str) else str(v)).astype("string")
    return frame


def export_cumulative_manifest(catalog: Any, *, output_dir: str | Path, csv: bool = False) -> Path:
    """Rebuild ``<output_dir>/manifests/all.parquet`` (and ``all.csv`` if asked) from the whole catalog."""
    frame = catalog_manifest(catalog, output_dir=output_dir)
    out = Path(output_dir) / "manifests" / "all.parquet"
    atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))
    if csv:
        atomic_write(out.with_suffix(".csv"), lambda tmp: frame.to_csv(tmp, index=False))
    return out


def export_run_manifest(catalog: Any, run_id: str, *, output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<output_dir>/manifests/<run_id>.parquet`` and ``.csv`` from the catalog's rows of one run."""
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise ValueError(f"bad run id {run_id!r}")
    frame = catalog_manifest(catalog, run_id, output_dir=output_dir)
    folder = Path(output_dir) / "manifests"
    parquet = atomic_write(folder / f"{run_id}.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    csv_path = atomic_write(folder / f"{run_id}.csv", lambda tmp: frame.to_csv(tmp, index=False))
    return parquet, csv_path
