"""Idempotent writes: upserts keyed by archive id, content sha256, frame and product key.

Every function takes a ``Connection`` inside an open write transaction, so a caller can group
several writes atomically (a product and its files land together or not at all). Upserts use
``INSERT ... ON CONFLICT DO UPDATE``, which is race-free across processes on SQLite and PostgreSQL.
The product writer takes the typed :class:`~astro_pipeline.products.types.Product`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
from astro_pipeline.catalog import tables as t
from astro_pipeline.catalog.keys import digest, models_hash, params_hash, product_key, to_index
from astro_pipeline.fields.geometry import FrameGeometry, NoFootprint
from astro_pipeline.ingest.frame import QualityReport, StretchParams
from astro_pipeline.jsondata import jsonable
from astro_pipeline.products.composites import Composite
from astro_pipeline.products.process import ProcessedInput
from astro_pipeline.products.types import FileKind, Product, ProductFile

__all__ = [
    "attach_composite",
    "key_of",
    "record_deleted",
    "record_input",
    "record_product",
    "upsert_file",
    "upsert_frame",
    "upsert_record",
]


def _insert(conn: Connection, table: Table) -> Any:
    return (postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table))


def _upsert(conn: Connection, table: Table, values: dict[str, Any], keys: list[str],
            update_cols: dict[str, Any]) -> int:
    stmt = _insert(conn, table).values(**values)
    set_ = {k: (stmt.excluded[k] if v is _EXCLUDED else v) for k, v in update_cols.items()}
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_=set_).returning(table.c.id)
    return int(conn.execute(stmt).scalar_one())


_EXCLUDED = object()  # marker: "take the value being inserted"


def upsert_record(conn: Connection, record: ArchiveRecord, *, run_id: str | None = None) -> int:
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
                downloaded_at: datetime | None = None, n_frames: int | None = None, run_id: str | None = None,
                move_path: bool = True) -> int:
    """Insert or refresh a file by content hash.

    ``move_path``: the file is at ``path`` now (recorded as its location, and no longer deleted).
    """
    now = t.utcnow()
    values = {"sha256": sha256, "size": size, "path": str(path), "record_id": record_id,
              "verified_against": verified_against, "downloaded_at": downloaded_at, "n_frames": n_frames,
              "first_seen": now, "last_seen": now, "last_run_id": run_id}
    upd: dict[str, Any] = {k: _EXCLUDED for k in ("size", "verified_against", "downloaded_at", "n_frames",
                                                  "last_run_id") if values[k] is not None}
    upd["last_seen"] = _EXCLUDED
    if move_path:
        upd["path"] = _EXCLUDED
        upd["deleted_at"] = None
    if record_id is not None:  # the first record that delivered these bytes stays their source
        upd["record_id"] = func.coalesce(t.files.c.record_id, record_id)
    return _upsert(conn, t.files, values, ["sha256"], upd)


def record_deleted(conn: Connection, sha256: str, *, when: datetime | None = None) -> bool:
    """Record that retention deleted the file with this content at its recorded path."""
    result = conn.execute(update(t.files).where(t.files.c.sha256 == sha256).values(deleted_at=when or t.utcnow()))
    return result.rowcount > 0


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
                 provenance: Mapping[str, Any] | None = None, quality: QualityReport | None = None,
                 stretch: StretchParams | None = None, notes: Sequence[str] | None = None,
                 kind: str | None = None, ra: float | None = None, dec: float | None = None,
                 run_id: str | None = None, footprint: FrameGeometry | NoFootprint | None = None) -> int:
    """Insert or refresh a frame; a given quality report replaces its metrics and flags, given notes its
    notes, a given footprint its footprint."""
    prov = jsonable(dict(provenance or {}))
    if ra is None or dec is None:
        ra, dec = _position(prov)
    flags = {f.name: f for f in quality.flags} if quality is not None else {}
    now = t.utcnow()
    values = {"file_id": file_id, "hdu_idx": to_index(hdu), "plane_idx": to_index(plane), "frame_key": frame_key,
              "kind": kind or _frame_kind(conn, file_id, prov), "ra": ra, "dec": dec,
              "provenance": prov or None, "stretch": stretch.as_dict() if stretch is not None else None,
              "notes": list(notes) if notes is not None else None, "flag_count": len(flags),
              "footprint": jsonable(footprint.as_dict()) if footprint is not None else None,
              "first_seen": now, "updated_at": now, "last_run_id": run_id}
    upd: dict[str, Any] = {"frame_key": _EXCLUDED, "updated_at": _EXCLUDED}
    for col in ("ra", "dec", "provenance", "stretch", "last_run_id", "footprint"):
        if values[col] is not None:
            upd[col] = _EXCLUDED
    if notes is not None:
        upd["notes"] = _EXCLUDED
    if kind is not None:
        upd["kind"] = _EXCLUDED
    if quality is not None:
        upd["flag_count"] = _EXCLUDED
    frame_id = _upsert(conn, t.frames, values, ["file_id", "hdu_idx", "plane_idx"], upd)
    if quality is not None:
        conn.execute(delete(t.frame_metrics).where(t.frame_metrics.c.frame_id == frame_id))
        conn.execute(delete(t.frame_flags).where(t.frame_flags.c.frame_id == frame_id))
        if quality.metrics:
            conn.execute(t.frame_metrics.insert(), [
                {"frame_id": frame_id, "name": str(k), "value": jsonable(v)} for k, v in quality.metrics.items()])
        if flags:
            conn.execute(t.frame_flags.insert(), [
                {"frame_id": frame_id, "name": f.name, "value": f.value, "threshold": f.threshold,
                 "comparison": f.comparison, "message": f.message} for f in flags.values()])
    return frame_id


def key_of(product: Product) -> str:
    """The product's catalog key: input content, frame, operation, model versions and parameters."""
    models = [m.as_dict() for m in product.models]
    return product_key(source_sha256=product.source_sha256 or None, source_path=product.source_path,
                       hdu=product.hdu, plane=product.plane, operation=str(product.operation),
                       models_h=models_hash(models), params_h=params_hash(jsonable(product.params)))


def _retired_key(key: str, product_id: int) -> str:
    """The key a superseded row keeps, so that the work's key names the current row only."""
    return digest([key, "superseded", int(product_id)])


def record_product(conn: Connection, product: Product, *, file_id: int | None = None,
                   run_id: str | None = None) -> int:
    """Record one product, its frame (provenance, quality, stretch, reader notes) and its files.

    ``file_id``: the input's file row (found by the product's sha256 when not given). The same
    work (same key) recorded again by the same run updates its row; recorded by another run
    (``--force``, ``--overwrite``, a retry) it gets a new row and the old one is kept, superseded,
    with its attempts carried over. Any other row that records a file this product wrote is
    superseded too (a new model version writes the same names): a current row never points at a
    file that changed under it.
    """
    run_id = run_id or product.run_id
    sha = product.source_sha256 or None
    if file_id is None and sha:
        file_id = upsert_file(conn, sha, path=product.source_path, run_id=run_id, move_path=False)
    frame_id = None
    if file_id is not None and product.frame_key is not None:
        frame_id = upsert_frame(conn, file_id, frame_key=product.frame_key, hdu=product.hdu, plane=product.plane,
                                provenance=product.provenance, quality=product.quality, stretch=product.stretch,
                                notes=product.notes, run_id=run_id, footprint=product.footprint)
    p = t.products
    key = key_of(product)
    earlier = conn.execute(select(p.c.id, p.c.run_id, p.c.attempts).where(p.c.product_key == key)).first()
    redone, attempts = None, 0
    if earlier is not None and earlier.run_id != run_id:  # another run redid this work: keep its row, marked
        redone, attempts = int(earlier.id), int(earlier.attempts)
        conn.execute(update(p).where(p.c.id == redone).values(product_key=_retired_key(key, redone)))
    models = [m.as_dict() for m in product.models]
    params = jsonable(product.params)
    quality = product.quality
    now = t.utcnow()
    values = {"product_key": key, "run_id": run_id, "file_id": file_id, "frame_id": frame_id,
              "source_path": product.source_path, "source_sha256": sha, "hdu_idx": to_index(product.hdu),
              "plane_idx": to_index(product.plane), "frame_key": product.frame_key,
              "operation": str(product.operation), "status": str(product.status), "error": product.error,
              "models": models, "models_hash": models_hash(models), "params": params,
              "params_hash": params_hash(params), "provenance": jsonable(product.provenance),
              "metrics": jsonable(product.metrics),
              "quality_metrics": jsonable(quality.metrics) if quality is not None else None,
              "flags": [f.as_dict() for f in quality.flags] if quality is not None else [],
              "stretch": product.stretch.as_dict() if product.stretch is not None else None,
              "tile_count": product.tile_count,
              "channels": [c.as_dict() for c in product.channels] if product.channels else None,
              "attempts": attempts + 1, "created_at": now, "updated_at": now,
              "superseded_by": None, "superseded_at": None}
    upd: dict[str, Any] = {k: _EXCLUDED for k in values if k not in {"product_key", "created_at", "attempts"}}
    upd["attempts"] = p.c.attempts + 1
    if file_id is None:
        upd.pop("file_id")
    if frame_id is None:
        upd.pop("frame_id")
    product_id = _upsert(conn, p, values, ["product_key"], upd)
    conn.execute(delete(t.product_files).where(t.product_files.c.product_id == product_id))
    if product.files:
        conn.execute(t.product_files.insert(), [
            {"product_id": product_id, "kind": str(kind), "path": str(pf.path), "sha256": pf.sha256}
            for kind, pf in product.files.items()])
    _supersede(conn, product_id, redone=redone,
               paths=[str(pf.path) for kind, pf in product.files.items() if kind != FileKind.LUPTON], when=now)
    return product_id


def _supersede(conn: Connection, product_id: int, *, redone: int | None, paths: Sequence[str], when: datetime) -> None:
    """Mark superseded by ``product_id`` the row it redid and every current row recording one of ``paths``."""
    supersede_by_paths(conn, t.products, t.product_files.c.product_id, t.product_files.c.path, product_id,
                       paths=paths, when=when, also={redone} if redone is not None else set())


def supersede_by_paths(conn: Connection, rows: Table, owner: Column[int], path: Column[str], new_id: int, *,
                       paths: Sequence[str], when: datetime, also: set[int] | None = None) -> None:
    """Mark superseded by ``new_id`` the current rows of ``rows`` (frame or field products) whose
    files (``owner``, ``path`` of their files table) record one of ``paths``, and the rows ``also``."""
    ids = set(also or ())
    for i in range(0, len(paths), 500):
        ids |= set(conn.execute(select(owner).where(path.in_(paths[i:i + 500]), owner != new_id)).scalars())
    ids.discard(new_id)
    if ids:
        conn.execute(update(rows).where(rows.c.id.in_(sorted(ids)), rows.c.superseded_by.is_(None))
                     .values(superseded_by=new_id, superseded_at=when))


def record_input(conn: Connection, processed: ProcessedInput, *, run_id: str | None = None,
                 downloaded: DownloadedFile | None = None) -> list[int]:
    """Record one processed input: its file (and archive record, when downloaded), frame count, products."""
    file_id = None
    if downloaded is not None:
        record_id = upsert_record(conn, downloaded.record, run_id=run_id)
        file_id = upsert_file(conn, downloaded.sha256, path=downloaded.path, size=downloaded.size, record_id=record_id,
                              verified_against=downloaded.verified_against, downloaded_at=downloaded.downloaded_at,
                              n_frames=processed.n_frames, run_id=run_id)
    elif processed.sha256:
        file_id = upsert_file(conn, processed.sha256, path=processed.path, size=processed.size,
                              n_frames=processed.n_frames, run_id=run_id)
    return [record_product(conn, p, file_id=file_id, run_id=run_id) for p in processed.products]


def attach_composite(conn: Connection, composite: Composite, *, kind: str) -> int:
    """Add a composite's file to each member product's files (the members' attempts are untouched)."""
    attached = 0
    for member in composite.members:
        pid = conn.execute(select(t.products.c.id).where(t.products.c.product_key == key_of(member))).scalar()
        if pid is None:
            continue
        attached += _put_file(conn, int(pid), kind, composite.file)
    return attached


def _put_file(conn: Connection, product_id: int, kind: str, pf: ProductFile) -> int:
    values = {"product_id": product_id, "kind": kind, "path": str(pf.path), "sha256": pf.sha256}
    stmt = _insert(conn, t.product_files).values(**values)
    stmt = stmt.on_conflict_do_update(index_elements=["product_id", "kind"],
                                      set_={"path": stmt.excluded.path, "sha256": stmt.excluded.sha256})
    conn.execute(stmt)
    return 1
