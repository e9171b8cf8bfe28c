"""Idempotent writes: upserts keyed by archive id, content sha256, frame and product key.

Every function takes a ``Connection`` inside an open write transaction, so a caller can group
several writes atomically (a product and its files land together or not at all). Upserts use
``INSERT ... ON CONFLICT DO UPDATE``, which is race-free across processes on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from astro_pipeline.catalog import tables as t
from astro_pipeline.catalog.keys import jsonable, models_hash, params_hash, product_key, to_index

__all__ = ["normalize_quality", "record_product", "upsert_file", "upsert_frame", "upsert_record"]


def _insert(conn: Connection, table: Table) -> Any:
    return (postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table))


def _upsert(conn: Connection, table: Table, values: dict[str, Any], keys: list[str],
            update_cols: dict[str, Any]) -> int:
    stmt = _insert(conn, table).values(**values)
    set_ = {k: (stmt.excluded[k] if v is _EXCLUDED else v) for k, v in update_cols.items()}
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_=set_).returning(table.c.id)
    return int(conn.execute(stmt).scalar_one())


_EXCLUDED = object()  # marker: "take the value being inserted"


def upsert_record(conn: Connection, record: Any, *, run_id: str | None = None) -> int:
    """Insert or refresh an ``ArchiveRecord``; fields the new listing lacks keep their old values."""
    now = t.utcnow()
    values = {
        "archive": record.archive, "archive_id": record.id, "obs_id": record.obs_id, "title": record.title,
        "target": record.target, "ra": record.ra, "dec": record.dec, "instrument": record.instrument,
        "filters": list(record.filters or []), "exposure_s": record.exposure_s, "date_obs": record.date_obs,
        "url": record.url, "preview_url": record.preview_url, "filename": record.filename, "size": record.size,
        "published_sha256": record.sha256, "credit": record.credit, "license": record.license,
        "release": record.release, "kind": record.kind or "science", "extra": jsonable(record.extra or {}),
        "first_seen": now, "last_seen": now, "last_run_id": run_id,
    }
    fixed = {"archive", "archive_id", "first_seen"}
    upd = {k: _EXCLUDED for k, v in values.items() if k not in fixed and v not in (None, [], {})}
    upd["last_seen"] = _EXCLUDED
    return _upsert(conn, t.archive_records, values, ["archive", "archive_id"], upd)


def upsert_file(conn: Connection, sha256: str, *, path: str | Path, size: int | None = None,
                record_id: int | None = None, verified_against: str | None = None,
                downloaded_at: Any = None, n_frames: int | None = None, run_id: str | None = None,
                move_path: bool = True) -> int:
    """Insert or refresh a file by content hash. ``move_path`` records ``path`` as its new location."""
    now = t.utcnow()
    values = {"sha256": sha256, "size": size, "path": str(path), "record_id": record_id,
              "verified_against": verified_against, "downloaded_at": downloaded_at, "n_frames": n_frames,
              "first_seen": now, "last_seen": now, "last_run_id": run_id}
    upd: dict[str, Any] = {k: _EXCLUDED for k in ("size", "verified_against", "downloaded_at", "n_frames",
                                                  "last_run_id") if values[k] is not None}
    upd["last_seen"] = _EXCLUDED
    if move_path:
        upd["path"] = _EXCLUDED
    if record_id is not None:  # the first record that delivered these bytes stays their source
        upd["record_id"] = func.coalesce(t.files.c.record_id, record_id)
    return _upsert(conn, t.files, values, ["sha256"], upd)


def normalize_quality(quality: Any) -> tuple[dict[str, float | None], list[dict[str, Any]]] | None:
    """(metrics, flags) from a ``QualityReport``, a ``{"metrics","flags"}`` dict, or None."""
    if quality is None:
        return None
    if isinstance(quality, Mapping):
        metrics, flags = quality.get("metrics") or {}, quality.get("flags") or []
    else:
        metrics, flags = quality.metrics, quality.flags
    flag_dicts = [jsonable(f.as_dict() if hasattr(f, "as_dict") else dict(f)) for f in flags]
    return {str(k): jsonable(v) for k, v in metrics.items()}, flag_dicts


def _frame_kind(conn: Connection, file_id: int, provenance: Mapping[str, Any]) -> str:
    kind = conn.execute(select(t.archive_records.c.kind).join(t.files, t.files.c.record_id == t.archive_records.c.id)
                        .where(t.files.c.id == file_id)).scalar()
    if kind == "color" or provenance.get("is_color") or provenance.get("kind") in {"color", "colour"}:
        return "color"
    return "grey"


def _position(provenance: Mapping[str, Any]) -> tuple[float | None, float | None]:
    for ra_key, dec_key in (("ra", "dec"), ("ra_deg", "dec_deg"), ("crval1", "crval2")):
        ra, dec = provenance.get(ra_key), provenance.get(dec_key)
        if isinstance(ra, int | float) and isinstance(dec, int | float):
            return float(ra), float(dec)
    return None, None


def upsert_frame(conn: Connection, file_id: int, *, frame_key: str, hdu: int | None, plane: int | None,
                 provenance: Mapping[str, Any] | None = None, quality: Any = None,
                 stretch: Mapping[str, Any] | None = None, kind: str | None = None,
                 ra: float | None = None, dec: float | None = None, run_id: str | None = None) -> int:
    """Insert or refresh a frame; a given quality report replaces its metrics and flags."""
    prov = jsonable(dict(provenance or {}))
    q = normalize_quality(quality)
    if ra is None or dec is None:
        ra, dec = _position(prov)
    now = t.utcnow()
    values = {"file_id": file_id, "hdu_idx": to_index(hdu), "plane_idx": to_index(plane), "frame_key": frame_key,
              "kind": kind or _frame_kind(conn, file_id, prov), "ra": ra, "dec": dec,
              "provenance": prov or None, "stretch": jsonable(dict(stretch)) if stretch else None,
              "flag_count": len(q[1]) if q else 0, "first_seen": now, "updated_at": now, "last_run_id": run_id}
    upd: dict[str, Any] = {"frame_key": _EXCLUDED, "updated_at": _EXCLUDED}
    for col in ("ra", "dec", "provenance", "stretch", "last_run_id"):
        if values[col] is not None:
            upd[col] = _EXCLUDED
    if kind is not None:
        upd["kind"] = _EXCLUDED
    if q is not None:
        upd["flag_count"] = _EXCLUDED
    frame_id = _upsert(conn, t.frames, values, ["file_id", "hdu_idx", "plane_idx"], upd)
    if q is not None:
        metrics, flags = q
        conn.execute(delete(t.frame_metrics).where(t.frame_metrics.c.frame_id == frame_id))
        conn.execute(delete(t.frame_flags).where(t.frame_flags.c.frame_id == frame_id))
        if metrics:
            conn.execute(t.frame_metrics.insert(), [
                {"frame_id": frame_id, "name": k, "value": v if isinstance(v, int | float) else None}
                for k, v in metrics.items()])
        unique_flags = {f["name"]: f for f in flags}
        if unique_flags:
            conn.execute(t.frame_flags.insert(), [
                {"frame_id": frame_id, "name": f["name"], "value": f.get("value"), "threshold": f.get("threshold"),
                 "comparison": f.get("comparison"), "message": f.get("message")} for f in unique_flags.values()])
            if len(unique_flags) != len(flags):
                conn.execute(update(t.frames).where(t.frames.c.id == frame_id).values(flag_count=len(unique_flags)))
    return frame_id


def _file_entry(value: Any) -> tuple[str, str | None]:
    if isinstance(value, str | os.PathLike):
        return str(value), None
    if isinstance(value, Mapping):
        return str(value["path"]), value.get("sha256")
    return str(value.path), getattr(value, "sha256", None)


def _quality_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The frame's quality metrics inside a product's metrics.

    ``products.process_file`` stores them as ``quality_<name>``; a nested ``metrics["quality"]``
    dict is accepted too; otherwise every numeric metric counts.
    """
    prefixed = {k[len("quality_"):]: v for k, v in metrics.items() if k.startswith("quality_")}
    if prefixed:
        return prefixed
    nested = metrics.get("quality")
    if isinstance(nested, Mapping):
        return dict(nested)
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def record_product(conn: Connection, product: Any, *, run_id: str | None = None) -> int:
    """Record a ``Product`` (any object with the contract's attributes), its frame, quality and files."""
    g = lambda name, default=None: getattr(product, name, default)  # noqa: E731
    run_id = run_id or g("run_id")
    sha, source_path = g("source_sha256") or None, str(g("source_path"))
    hdu, plane, status = g("hdu"), g("plane"), g("status", "ok")
    provenance = jsonable(dict(g("provenance") or {}))
    metrics, flags = dict(g("metrics") or {}), list(g("flags") or [])
    quality_metrics = _quality_metrics(metrics)
    stretch = g("stretch")
    if stretch is not None and not isinstance(stretch, Mapping):
        stretch = stretch.as_dict()
    frame_key = g("frame_key") or source_path
    file_id = frame_id = None
    if sha:
        n_frames = provenance.get("n_frames_in_file")
        file_id = upsert_file(conn, sha, path=source_path, n_frames=n_frames if isinstance(n_frames, int) else None,
                              run_id=run_id, move_path=False)
        if status == "ok" or quality_metrics or flags:
            quality = {"metrics": quality_metrics, "flags": flags} if (quality_metrics or flags) else None
            frame_id = upsert_frame(conn, file_id, frame_key=frame_key, hdu=hdu, plane=plane, provenance=provenance,
                                    quality=quality, stretch=stretch, run_id=run_id)
    models = jsonable(list(g("models") or []))
    params = jsonable(dict(g("params") or {}))
    m_h, p_h = models_hash(models), params_hash(params)
    operation = str(g("operation"))
    key = product_key(source_sha256=sha, source_path=source_path, hdu=hdu, plane=plane, operation=operation,
                      models_h=m_h, params_h=p_h)
    now = t.utcnow()
    values = {"product_key": key, "run_id": run_id, "file_id": file_id, "frame_id": frame_id,
              "source_path": source_path, "source_sha256": sha, "hdu_idx": to_index(hdu), "plane_idx": to_index(plane),
              "frame_key": frame_key, "operation": operation, "status": status, "error": g("error"),
              "models": models, "models_hash": m_h, "params": params, "params_hash": p_h,
              "provenance": provenance, "metrics": jsonable(metrics), "flags": jsonable(flags),
              "stretch": jsonable(dict(stretch)) if stretch else None, "tile_count": g("tile_count"),
              "attempts": 1, "created_at": now, "updated_at": now}
    upd: dict[str, Any] = {k: _EXCLUDED for k in values if k not in {"product_key", "created_at", "attempts"}}
    upd["attempts"] = t.products.c.attempts + 1
    if file_id is None:
        upd.pop("file_id")
    if frame_id is None:
        upd.pop("frame_id")
    product_id = _upsert(conn, t.products, values, ["product_key"], upd)
    conn.execute(delete(t.product_files).where(t.product_files.c.product_id == product_id))
    entries = [(kind, *_file_entry(v)) for kind, v in (g("files") or {}).items()]
    if entries:
        conn.execute(t.product_files.insert(), [
            {"product_id": product_id, "kind": kind, "path": path, "sha256": fsha} for kind, path, fsha in entries])
    return product_id
