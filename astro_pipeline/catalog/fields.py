"""The fields' records: each field with its reference grid and members, and why a frame is in none.

Writes take a ``Connection`` inside an open write transaction (like ``writes.py``); a field is
keyed by ``field_key`` (a hash of its frames), so recording the same grouping twice changes
nothing but timestamps. Reads return :class:`~astro_pipeline.catalog.views.FieldView` s.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select, update

from astro_pipeline.catalog import tables as t
from astro_pipeline.catalog.keys import models_hash, params_hash
from astro_pipeline.catalog.views import FieldMemberView, FieldProductView, FieldView, ProductFileView
from astro_pipeline.catalog.writes import _EXCLUDED, _upsert, key_of, supersede_by_paths
from astro_pipeline.fields.grouping import FieldGrouping, FieldPlan, MemberRole
from astro_pipeline.fields.result import FieldProduct, FieldStatus
from astro_pipeline.jsondata import jsonable
from astro_pipeline.products.types import Product

__all__ = ["field_product_done", "field_product_views", "field_views", "record_field_product", "record_field_status", "record_grouping", "set_member_role"]


def _frame_and_product(conn: Connection, product: Product) -> tuple[int | None, int | None]:
    row = conn.execute(select(t.products.c.id, t.products.c.frame_id)
                       .where(t.products.c.product_key == key_of(product))).first()
    return (None, None) if row is None else (row.frame_id, row.id)


def _record_plan(conn: Connection, plan: FieldPlan, *, run_id: str | None) -> int | None:
    ids = {m.frame_id: _frame_and_product(conn, m.product) for m in plan.members}
    if any(frame_id is None for frame_id, _ in ids.values()):
        return None  # a member the catalog does not know (never recorded): nothing to attach the field to
    now = t.utcnow()
    ra, dec = plan.grid.centre
    values = {"field_key": plan.key, "name": plan.name, "grid": jsonable(plan.grid.as_dict()),
              "pixel_scale_arcsec": plan.grid.pixel_scale_arcsec, "ra": ra, "dec": dec, "filters": plan.filters,
              "n_members": len(plan.members), "reference_frame_id": ids[plan.reference.frame_id][0],
              "status": str(FieldStatus.GROUPED), "note": None, "first_seen": now, "updated_at": now,
              "last_run_id": run_id}
    keep = {"field_key", "first_seen", "status", "note"}  # a composed field stays composed until recomposed
    field_id = _upsert(conn, t.fields, values, ["field_key"], {k: _EXCLUDED for k in values if k not in keep})
    conn.execute(t.field_members.delete().where(t.field_members.c.field_id == field_id))
    conn.execute(t.field_members.insert(), [
        {"field_id": field_id, "frame_id": ids[m.frame_id][0], "product_id": ids[m.frame_id][1], "filter": m.filter,
         "exptime": m.exptime, "role": str(m.role), "overlap": m.overlap, "coverage": m.coverage, "note": m.note}
        for m in plan.members])
    frame_ids = [ids[m.frame_id][0] for m in plan.members]
    conn.execute(update(t.frames).where(t.frames.c.id.in_(frame_ids)).values(field_note=None))
    return field_id


def record_grouping(conn: Connection, grouping: FieldGrouping, *, run_id: str | None) -> dict[str, int]:
    """Record every field (upserted by key, members replaced) and each left-out frame's reason.

    Returns ``{field_key: field id}`` of the fields recorded.
    """
    out: dict[str, int] = {}
    for plan in grouping.fields:
        field_id = _record_plan(conn, plan, run_id=run_id)
        if field_id is not None:
            out[plan.key] = field_id
    for left in grouping.left_out:
        frame_id, _ = _frame_and_product(conn, left.product)
        if frame_id is not None:
            conn.execute(update(t.frames).where(t.frames.c.id == frame_id).values(field_note=left.reason))
    return out


def record_field_status(conn: Connection, field_id: int, status: FieldStatus, note: str | None = None, *,
                        run_id: str | None = None) -> None:
    """A field's state after alignment or composition, with the reason where it was refused or failed."""
    values: dict[str, Any] = {"status": str(status), "note": note, "updated_at": t.utcnow()}
    if run_id is not None:
        values["last_run_id"] = run_id
    conn.execute(update(t.fields).where(t.fields.c.id == field_id).values(**values))


def set_member_role(conn: Connection, field_id: int, product: Product, role: MemberRole, note: str | None) -> None:
    """Change one member's role (e.g. ``failed`` with the alignment error)."""
    frame_id, _ = _frame_and_product(conn, product)
    if frame_id is None:
        return
    conn.execute(update(t.field_members)
                 .where(t.field_members.c.field_id == field_id, t.field_members.c.frame_id == frame_id)
                 .values(role=str(role), note=note))


def field_views(conn: Connection, *, field_ids: Sequence[int] | None = None, run_id: str | None = None,
                frame_ids: Iterable[int] | None = None) -> list[FieldView]:
    """Fields (all, these ids, those a run recorded, or those holding these frames), newest first."""
    f, m = t.fields, t.field_members
    q = select(f).order_by(f.c.updated_at.desc(), f.c.id.desc())
    if field_ids is not None:
        q = q.where(f.c.id.in_(list(field_ids)))
    if run_id is not None:
        q = q.where(f.c.last_run_id == run_id)
    if frame_ids is not None:
        q = q.where(f.c.id.in_(select(m.c.field_id).where(m.c.frame_id.in_(list(frame_ids)))))
    rows = list(conn.execute(q))
    if not rows:
        return []
    members: dict[int, list[FieldMemberView]] = defaultdict(list)
    fr, fi, rec = t.frames, t.files, t.archive_records
    mq = (select(m, fr.c.frame_key, fi.c.sha256, fi.c.path, rec.c.archive, rec.c.instrument)
          .select_from(m.join(fr, fr.c.id == m.c.frame_id).join(fi, fi.c.id == fr.c.file_id)
                       .outerjoin(rec, rec.c.id == fi.c.record_id))
          .where(m.c.field_id.in_([r.id for r in rows])))
    for r in conn.execute(mq):
        members[r.field_id].append(FieldMemberView(
            frame_id=r.frame_id, product_id=r.product_id, frame_key=r.frame_key, sha256=r.sha256, raw_path=r.path,
            archive=r.archive, instrument=r.instrument, filter=r.filter, exptime=r.exptime, role=r.role,
            overlap=r.overlap, coverage=r.coverage, note=r.note, reference=r.frame_id == _ref(rows, r.field_id)))
    order = {str(role): i for i, role in enumerate(MemberRole)}
    return [FieldView(
        id=r.id, key=r.field_key, name=r.name, grid=dict(r.grid or {}), pixel_scale_arcsec=r.pixel_scale_arcsec,
        ra=r.ra, dec=r.dec, filters=list(r.filters or []), status=r.status, note=r.note,
        reference_frame_id=r.reference_frame_id, first_seen=r.first_seen, updated_at=r.updated_at,
        last_run_id=r.last_run_id,
        members=sorted(members.get(r.id, []), key=lambda v: (not v.reference, order.get(v.role, 9), v.filter,
                                                              v.frame_id)),
    ) for r in rows]


def _ref(rows: Sequence[Any], field_id: int) -> int | None:
    return next((r.reference_frame_id for r in rows if r.id == field_id), None)


# --- field products ---------------------------------------------------------------------------


def record_field_product(conn: Connection, field_id: int, product: FieldProduct) -> int:
    """Record a field product with its files (upserted by key: a retry counts an attempt, and makes
    the row current again). Every other current field product recording one of its files is marked
    superseded by it: a new model version writes the same names, so the older row no longer
    describes what is on disk."""
    models = [m.as_dict() for m in product.models]
    params = jsonable(product.params)
    now = t.utcnow()
    values = {"product_key": product.key, "field_id": field_id, "run_id": product.run_id,
              "operation": str(product.operation), "status": str(product.status), "error": product.error,
              "channels": dict(product.channels), "bands": jsonable(product.bands), "models": models,
              "models_hash": models_hash(models), "params": params, "params_hash": params_hash(params),
              "metrics": jsonable(product.metrics), "notes": list(product.notes), "attempts": 1,
              "created_at": now, "updated_at": now, "superseded_by": None, "superseded_at": None}
    upd: dict[str, Any] = {k: _EXCLUDED for k in values if k not in {"product_key", "created_at", "attempts"}}
    upd["attempts"] = t.field_products.c.attempts + 1
    fp_id = _upsert(conn, t.field_products, values, ["product_key"], upd)
    conn.execute(t.field_product_files.delete().where(t.field_product_files.c.field_product_id == fp_id))
    if product.files:
        conn.execute(t.field_product_files.insert(), [
            {"field_product_id": fp_id, "kind": str(kind), "path": str(pf.path), "sha256": pf.sha256}
            for kind, pf in product.files.items()])
        pf = t.field_product_files
        supersede_by_paths(conn, t.field_products, pf.c.field_product_id, pf.c.path, fp_id,
                           paths=[str(f.path) for f in product.files.values()], when=now)
    return fp_id


def field_product_done(conn: Connection, key: str) -> bool:
    """True when an ok, current field product with this key is recorded (its files are the caller's
    to check); a superseded one's files were written again by another product."""
    fp = t.field_products
    row = conn.execute(select(fp.c.status, fp.c.superseded_by).where(fp.c.product_key == key)).first()
    return row is not None and row.status == "ok" and row.superseded_by is None


def field_product_views(conn: Connection, *, run_id: str | None = None, field_ids: Sequence[int] | None = None,
                        ids: Sequence[int] | None = None, current: bool = False) -> list[FieldProductView]:
    """Field products (of a run, of these fields, or these ids; with ``current`` only those not
    superseded) with their field and files, oldest first."""
    fp = t.field_products
    q = select(fp).order_by(fp.c.id)
    if current:
        q = q.where(fp.c.superseded_by.is_(None))
    if run_id is not None:
        q = q.where(fp.c.run_id == run_id)
    if field_ids is not None:
        q = q.where(fp.c.field_id.in_(list(field_ids)))
    if ids is not None:
        q = q.where(fp.c.id.in_(list(ids)))
    rows = list(conn.execute(q))
    if not rows:
        return []
    fields = {v.id: v for v in field_views(conn, field_ids=sorted({r.field_id for r in rows}))}
    files: dict[int, dict[str, ProductFileView]] = defaultdict(dict)
    pf = t.field_product_files
    for r in conn.execute(select(pf).where(pf.c.field_product_id.in_([r.id for r in rows]))):
        files[r.field_product_id][r.kind] = ProductFileView(id=r.id, kind=r.kind, path=r.path, sha256=r.sha256)
    return [FieldProductView(
        id=r.id, key=r.product_key, field=fields[r.field_id], run_id=r.run_id, operation=r.operation,
        status=r.status, error=r.error, channels=dict(r.channels or {}), bands=list(r.bands or []),
        models=list(r.models or []), params=dict(r.params or {}), metrics=dict(r.metrics or {}),
        notes=list(r.notes or []), attempts=r.attempts, created_at=r.created_at, updated_at=r.updated_at,
        files=files.get(r.id, {}), superseded_by=r.superseded_by, superseded_at=r.superseded_at) for r in rows]
