"""Manifests rebuilt from the catalog: ``OUTPUT/manifests/all.parquet`` (cumulative) and per-run files.

One row per product. Product columns follow the per-run manifest (``<kind>_path`` /
``<kind>_sha256`` pairs, stretch, metrics, flags, models); the catalog adds where the input came
from (archive, observation, URL, position, credit, licence, ``raw_path``, which may point to a
file that retention deleted) and the curator's current decision. pandas and DuckDB read both.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from astro_pipeline.catalog import tables as t
from astro_pipeline.catalog.keys import index_or_none
from astro_pipeline.catalog.queries import current_decisions

__all__ = ["CATALOG_COLUMNS", "catalog_manifest", "export_cumulative_manifest", "export_run_manifest",
           "product_columns"]

#: Columns the catalog adds to each manifest row, in order (product columns follow).
CATALOG_COLUMNS: tuple[str, ...] = (
    "run_id", "product_id", "frame_id", "status", "error", "operation", "archive", "archive_id", "obs_id",
    "source_url", "title", "target", "ra", "dec", "date_obs", "instrument", "filters", "credit", "license",
    "input_sha256", "source_path", "raw_path", "raw_deleted", "hdu", "plane", "frame_key",
    "review_decision", "review_note", "reviewer", "reviewed_at", "created_at", "updated_at",
)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def product_columns(p: Any, files: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
    """The product part of a manifest row (same naming as the per-run manifest)."""
    stretch = p.stretch or {}
    metrics = p.metrics or {}
    flat_metrics = metrics.get("quality") if isinstance(metrics.get("quality"), dict) else metrics
    models = p.models or []
    row: dict[str, Any] = {
        "stretch_method": stretch.get("method"),
        "stretch_vmin": stretch.get("vmin"),
        "stretch_vmax": stretch.get("vmax"),
        "stretch_asinh_a": stretch.get("asinh_a"),
        "stretch": _dumps(p.stretch),
        "metrics": _dumps(p.metrics),
        "flags": ",".join(str(f.get("name")) for f in (p.flags or []) if isinstance(f, dict)),
        "flags_detail": _dumps(p.flags or []),
        "tile_count": p.tile_count,
        "model_names": ";".join(str(m.get("name", "")) for m in models),
        "model_versions": ";".join(str(m.get("version", "")) for m in models),
        "model_sha256": ";".join(str(m.get("sha256", "")) for m in models),
        "models": _dumps(models),
        "params": _dumps(p.params or {}),
    }
    for name, value in flat_metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            row[f"metric_{name}"] = float(value)
    for kind, (path, sha) in sorted(files.items()):
        row[f"{kind}_path"] = path
        row[f"{kind}_sha256"] = sha
    return row


def _rows(conn: Connection, run_id: str | None) -> list[dict[str, Any]]:
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
    if run_id is not None:
        q = q.where(p.c.run_id == run_id)
    prods = list(conn.execute(q))
    files: dict[int, dict[str, tuple[str, str | None]]] = defaultdict(dict)
    fq = select(t.product_files.c.product_id, t.product_files.c.kind, t.product_files.c.path,
                t.product_files.c.sha256)
    if run_id is not None:
        fq = fq.join(p, p.c.id == t.product_files.c.product_id).where(p.c.run_id == run_id)
    for pid, kind, path, sha in conn.execute(fq):
        files[pid][kind] = (path, sha)
    rows = []
    for r in prods:
        raw = r.raw_path or r.source_path
        row: dict[str, Any] = {
            "run_id": r.run_id, "product_id": r.id, "frame_id": r.frame_id, "status": r.status, "error": r.error,
            "operation": r.operation, "archive": r.archive, "archive_id": r.archive_id, "obs_id": r.obs_id,
            "source_url": r.source_url, "title": r.title, "target": r.target,
            "ra": r.frame_ra if r.frame_ra is not None else r.rec_ra,
            "dec": r.frame_dec if r.frame_dec is not None else r.rec_dec,
            "date_obs": r.date_obs, "instrument": r.instrument,
            "filters": ",".join(r.filters) if r.filters else None, "credit": r.credit, "license": r.license,
            "input_sha256": r.source_sha256, "source_path": r.source_path, "raw_path": raw,
            "raw_deleted": not Path(raw).is_file(), "hdu": index_or_none(r.hdu_idx),
            "plane": index_or_none(r.plane_idx), "frame_key": r.frame_key,
            "review_decision": r.decision, "review_note": r.note, "reviewer": r.reviewer,
            "reviewed_at": r.reviewed_at, "created_at": r.created_at, "updated_at": r.updated_at,
        }
        row.update(product_columns(r, files.get(r.id, {})))
        rows.append(row)
    return rows


def catalog_manifest(catalog: Any, run_id: str | None = None) -> Any:
    """A pandas DataFrame with one row per product (of one run, or all)."""
    import pandas as pd

    rows = catalog.read(lambda c: _rows(c, run_id))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in CATALOG_COLUMNS}).astype("string")
    rest = [c for c in dict.fromkeys(k for row in rows for k in row) if c not in CATALOG_COLUMNS]
    frame = frame[[*CATALOG_COLUMNS, *rest]]
    for col in ("product_id", "frame_id", "hdu", "plane", "tile_count"):
        frame[col] = frame[col].astype("Int64")
    for col in ("reviewed_at", "created_at", "updated_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    for col in frame.columns:  # all-None object columns would become Parquet's null type
        if frame[col].dtype == object:
            frame[col] = frame[col].astype("string")
    return frame


def _atomic_write(path: Path, writer: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def export_cumulative_manifest(catalog: Any, *, output_dir: str | Path, csv: bool = False) -> Path:
    """Rebuild ``<output_dir>/manifests/all.parquet`` (and ``all.csv`` if asked) from the catalog."""
    frame = catalog_manifest(catalog)
    out = Path(output_dir) / "manifests" / "all.parquet"
    _atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))
    if csv:
        _atomic_write(out.with_suffix(".csv"), lambda tmp: frame.to_csv(tmp, index=False))
    return out


def export_run_manifest(catalog: Any, run_id: str, *, output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<output_dir>/manifests/<run_id>.parquet`` and ``.csv`` from the catalog's rows of one run."""
    frame = catalog_manifest(catalog, run_id)
    folder = Path(output_dir) / "manifests"
    parquet = _atomic_write(folder / f"{run_id}.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    csv_path = _atomic_write(folder / f"{run_id}.csv", lambda tmp: frame.to_csv(tmp, index=False))
    return parquet, csv_path
