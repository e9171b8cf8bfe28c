"""Read queries: what is done, flagged frames, approved training items, products, runs and stats.

Each function takes an open ``Connection`` (one snapshot) and returns views from ``views.py``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, and_, exists, func, or_, select
from sqlalchemy.sql import Subquery

from astro_pipeline.catalog import tables as t
from astro_pipeline.catalog.keys import index_or_none, models_hash, params_hash
from astro_pipeline.catalog.views import (
    Decision,
    FrameFilter,
    FrameView,
    ManifestRow,
    ProductFileView,
    ProductView,
    RunInfo,
    RunSummary,
)
from astro_pipeline.fields.geometry import footprint_from_dict
from astro_pipeline.ingest.frame import QualityReport, StretchParams
from astro_pipeline.products.claims import FileOwner
from astro_pipeline.products.types import (
    ChannelRecord,
    FileKind,
    ModelRecord,
    Operation,
    Product,
    ProductFile,
    ProductStatus,
)
from astro_pipeline.sky import separation_deg

__all__ = [
    "current_decisions",
    "current_products",
    "file_owners",
    "frame_views",
    "is_done",
    "manifest_rows",
    "normalize_kind",
    "run_info",
    "run_summary",
    "select_frames",
    "stats",
    "superseded_runs",
]


def normalize_kind(kind: str) -> str:
    """``"color"``/``"colour"`` -> ``"color"``; ``"grey"``/``"gray"``/``"science"`` -> ``"grey"``."""
    k = kind.strip().lower()
    if k in {"color", "colour"}:
        return "color"
    if k in {"grey", "gray", "science"}:
        return "grey"
    raise ValueError(f"unknown image kind {kind!r}; use 'color' or 'grey'")


def current_decisions() -> Subquery:
    """Per frame, the latest decision that no undo reversed: (frame_id, review_id, decision, ...)."""
    r = t.reviews
    undo = t.reviews.alias("undo")
    effective = (
        select(r.c.frame_id, func.max(r.c.id).label("review_id"))
        .where(r.c.action == "decision", ~exists().where(undo.c.undoes_id == r.c.id))
        .group_by(r.c.frame_id)
        .subquery("effective")
    )
    return (
        select(effective.c.frame_id, effective.c.review_id, r.c.decision, r.c.note, r.c.reviewer, r.c.created_at)
        .select_from(effective.join(r, r.c.id == effective.c.review_id))
        .subquery("current_decision")
    )


# --- done -----------------------------------------------------------------------------------

def _product_states(conn: Connection, models: Any, params: Mapping[str, Any] | None,
                    operation: str | None, sha256: str | None = None) -> dict[str, dict[tuple[int, int], bool]]:
    """``{input sha256: {(hdu_idx, plane_idx): any ok}}`` for products made with these models/params."""
    p = t.products
    q = select(p.c.source_sha256, p.c.hdu_idx, p.c.plane_idx, p.c.status).where(
        p.c.models_hash == models_hash(models), p.c.source_sha256.is_not(None), p.c.superseded_by.is_(None))
    if params is not None:
        q = q.where(p.c.params_hash == params_hash(params))
    if operation is not None:
        q = q.where(p.c.operation == operation)
    if sha256 is not None:
        q = q.where(p.c.source_sha256 == sha256)
    states: dict[str, dict[tuple[int, int], bool]] = defaultdict(dict)
    for sha, hdu, plane, status in conn.execute(q):
        key = (hdu, plane)
        states[sha][key] = states[sha].get(key, False) or status == "ok"
    return states


def is_done(conn: Connection, input_sha256: str, models: Any, params: Mapping[str, Any] | None,
            operation: str | None = None) -> bool:
    """True when every frame of the input has a current ok product with these model versions and params.

    Superseded rows do not count (their files were replaced). "Every frame" is every frame the
    reader found (``files.n_frames``): a file whose later frames never got a product is
    incomplete, not done.
    """
    frames = _product_states(conn, models, params, operation, input_sha256).get(input_sha256)
    n_frames = conn.execute(select(t.files.c.n_frames).where(t.files.c.sha256 == input_sha256)).scalar()
    if not frames or not all(frames.values()):
        return False
    return n_frames is None or len(frames) >= n_frames


# --- frames -------------------------------------------------------------------------------------

def select_frames(conn: Connection, flt: FrameFilter) -> tuple[list[int], int]:
    """Frame ids matching ``flt`` (newest first, paged) and the total number matching."""
    fr, fi, rec = t.frames, t.files, t.archive_records
    cur = current_decisions()
    ra = func.coalesce(fr.c.ra, rec.c.ra)
    dec = func.coalesce(fr.c.dec, rec.c.dec)
    q = (select(fr.c.id, ra, dec)
         .select_from(fr.join(fi, fi.c.id == fr.c.file_id)
                      .outerjoin(rec, rec.c.id == fi.c.record_id)
                      .outerjoin(cur, cur.c.frame_id == fr.c.id))
         .order_by(fr.c.updated_at.desc(), fr.c.id.desc()))
    if flt.flagged_only:
        q = q.where(fr.c.flag_count > 0)
    if flt.flag:
        q = q.where(exists().where(and_(t.frame_flags.c.frame_id == fr.c.id, t.frame_flags.c.name == flt.flag)))
    if flt.archive:
        q = q.where(rec.c.archive == flt.archive)
    if flt.kind:
        q = q.where(fr.c.kind == normalize_kind(flt.kind))
    if flt.run_id:
        q = q.where(or_(fr.c.last_run_id == flt.run_id, exists().where(
            and_(t.products.c.frame_id == fr.c.id, t.products.c.run_id == flt.run_id))))
    if flt.decision == "undecided":
        q = q.where(cur.c.decision.is_(None))
    elif flt.decision:
        q = q.where(cur.c.decision == flt.decision)
    region = flt.radius_deg is not None
    if region:
        assert flt.ra is not None and flt.dec is not None and flt.radius_deg is not None
        q = q.where(dec.between(flt.dec - flt.radius_deg, flt.dec + flt.radius_deg))
    rows = list(conn.execute(q))
    if region:
        assert flt.ra is not None and flt.dec is not None and flt.radius_deg is not None
        rows = [r for r in rows if r[1] is not None and r[2] is not None]
        if rows:
            sep = separation_deg(flt.ra, flt.dec, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))
            rows = [r for r, s in zip(rows, np.atleast_1d(sep), strict=True) if s <= flt.radius_deg]
    ids = [int(r[0]) for r in rows]
    end = None if flt.limit is None else flt.offset + flt.limit
    return ids[flt.offset:end], len(ids)


def _chunks(items: Sequence[int], size: int = 500) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def frame_views(conn: Connection, frame_ids: Sequence[int]) -> list[FrameView]:
    """Full views of these frames, in the given order (missing ids are skipped)."""
    if not frame_ids:
        return []
    fr, fi, rec = t.frames, t.files, t.archive_records
    cur = current_decisions()
    rows: dict[int, Any] = {}
    flags: dict[int, list[dict[str, Any]]] = defaultdict(list)
    metrics: dict[int, dict[str, float | None]] = defaultdict(dict)
    prods: dict[int, list[Any]] = defaultdict(list)
    pfiles: dict[int, dict[str, ProductFileView]] = defaultdict(dict)
    for chunk in _chunks(list(frame_ids)):
        q = (select(fr, fi.c.sha256, fi.c.path.label("raw_path"),
                    rec.c.archive, rec.c.archive_id, rec.c.obs_id, rec.c.title, rec.c.target,
                    rec.c.instrument, rec.c.filters, rec.c.ra.label("rec_ra"), rec.c.dec.label("rec_dec"),
                    rec.c.date_obs, rec.c.credit, rec.c.license, rec.c.url, rec.c.preview_url, rec.c.release,
                    cur.c.review_id, cur.c.decision, cur.c.note, cur.c.reviewer, cur.c.created_at.label("reviewed_at"))
             .select_from(fr.join(fi, fi.c.id == fr.c.file_id).outerjoin(rec, rec.c.id == fi.c.record_id)
                          .outerjoin(cur, cur.c.frame_id == fr.c.id))
             .where(fr.c.id.in_(chunk)))
        rows.update({row.id: row for row in conn.execute(q)})
        for row in conn.execute(select(t.frame_flags).where(t.frame_flags.c.frame_id.in_(chunk))
                                .order_by(t.frame_flags.c.name)):
            flags[row.frame_id].append({"name": row.name, "value": row.value, "threshold": row.threshold,
                                        "comparison": row.comparison, "message": row.message or ""})
        for row in conn.execute(select(t.frame_metrics).where(t.frame_metrics.c.frame_id.in_(chunk))):
            metrics[row.frame_id][row.name] = row.value
        prod_rows = list(conn.execute(select(t.products).where(t.products.c.frame_id.in_(chunk))
                                      .order_by(t.products.c.id)))
        for row in prod_rows:
            prods[row.frame_id].append(row)
        pids = [row.id for row in prod_rows]
        for pchunk in _chunks(pids):
            for row in conn.execute(select(t.product_files).where(t.product_files.c.product_id.in_(pchunk))):
                pfiles[row.product_id][row.kind] = ProductFileView(id=row.id, kind=row.kind, path=row.path,
                                                                   sha256=row.sha256)
    out: list[FrameView] = []
    for fid in frame_ids:
        row = rows.get(fid)
        if row is None:
            continue
        decision = None
        if row.review_id is not None:
            decision = Decision(review_id=row.review_id, decision=row.decision, note=row.note,
                                reviewer=row.reviewer, at=row.reviewed_at)
        products = [ProductView(id=p.id, run_id=p.run_id, operation=p.operation, status=p.status, error=p.error,
                                models=p.models or [], params=p.params or {}, tile_count=p.tile_count,
                                updated_at=p.updated_at, files=pfiles.get(p.id, {}), superseded_by=p.superseded_by)
                    for p in prods.get(fid, [])]
        out.append(FrameView(
            frame_id=row.id, frame_key=row.frame_key, hdu=index_or_none(row.hdu_idx),
            plane=index_or_none(row.plane_idx), kind=row.kind, file_id=row.file_id, sha256=row.sha256,
            raw_path=row.raw_path, archive=row.archive, archive_id=row.archive_id, obs_id=row.obs_id,
            title=row.title, target=row.target, instrument=row.instrument,
            filter="/".join(row.filters) if row.filters else None,
            ra=row.ra if row.ra is not None else row.rec_ra, dec=row.dec if row.dec is not None else row.rec_dec,
            date_obs=row.date_obs, credit=row.credit, license=row.license, source_url=row.url,
            preview_url=row.preview_url, flags=flags.get(fid, []), metrics=metrics.get(fid, {}),
            stretch=row.stretch, provenance=row.provenance or {}, decision=decision, products=products,
            updated_at=row.updated_at, last_run_id=row.last_run_id, release=row.release, notes=list(row.notes or [])))
    return out


# --- products, as the processing path made them ------------------------------------------------

def _product(row: Any, files: dict[str, ProductFile], notes: list[str] | None,
             footprint: dict[str, Any] | None = None) -> Product:
    """The typed product a ``products`` row records (with its files, its frame's reader notes and footprint)."""
    quality = None
    if row.quality_metrics is not None or row.flags:
        quality = QualityReport.from_dict({"metrics": row.quality_metrics or {}, "flags": row.flags or []})
    return Product(
        run_id=row.run_id, source_path=row.source_path, source_sha256=row.source_sha256 or "",
        hdu=index_or_none(row.hdu_idx), plane=index_or_none(row.plane_idx), frame_key=row.frame_key,
        operation=Operation(row.operation), status=ProductStatus(row.status), error=row.error,
        provenance=dict(row.provenance or {}), quality=quality,
        stretch=StretchParams.from_dict(row.stretch) if row.stretch else None,
        models=tuple(ModelRecord.from_dict(m) for m in row.models or []), params=dict(row.params or {}),
        metrics={str(k): v for k, v in (row.metrics or {}).items()}, notes=tuple(notes or ()),
        tile_count=int(row.tile_count or 0), files=files, footprint=footprint_from_dict(footprint),
        channels=tuple(ChannelRecord.from_dict(c) for c in row.channels or ()))


def _files_of(conn: Connection, product_ids: Sequence[int]) -> dict[int, dict[str, ProductFile]]:
    out: dict[int, dict[str, ProductFile]] = defaultdict(dict)
    pf = t.product_files
    for chunk in _chunks(list(product_ids)):
        for pid, kind, path, sha in conn.execute(select(pf.c.product_id, pf.c.kind, pf.c.path, pf.c.sha256)
                                                 .where(pf.c.product_id.in_(chunk))):
            out[pid][kind] = ProductFile(path=Path(path), sha256=sha or "")
    return out


def current_products(conn: Connection, sha256s: Iterable[str], *, operation: str, models: Any) -> list[Product]:
    """The current ok products of these inputs made by ``operation`` with these model versions (newest per frame)."""
    wanted = sorted({s for s in sha256s if s})
    if not wanted:
        return []
    p = t.products
    rows: dict[tuple[str, int, int], Any] = {}
    for chunk in _chunks(wanted):  # type: ignore[arg-type]
        q = (select(p, t.frames.c.notes, t.frames.c.footprint)
             .select_from(p.outerjoin(t.frames, t.frames.c.id == p.c.frame_id))
             .where(p.c.source_sha256.in_(chunk), p.c.operation == str(operation), p.c.status == "ok",
                    p.c.models_hash == models_hash(models), p.c.superseded_by.is_(None)).order_by(p.c.id))
        for row in conn.execute(q):
            rows[(row.source_sha256, row.hdu_idx, row.plane_idx)] = row  # later ids replace earlier ones
    files = _files_of(conn, [r.id for r in rows.values()])
    return [_product(r, files.get(r.id, {}), r.notes, r.footprint) for r in sorted(rows.values(), key=lambda r: r.id)]


def manifest_rows(conn: Connection, run_id: str | None = None) -> list[ManifestRow]:
    """One row per product (of one run, or all), joined with its input file, archive record and review."""
    p, fi, rec = t.products, t.files, t.archive_records
    cur = current_decisions()
    q = (select(p, fi.c.path.label("raw_path"), fi.c.deleted_at, rec.c.archive, rec.c.archive_id, rec.c.obs_id,
                rec.c.url.label("source_url"), rec.c.title, rec.c.target.label("rec_target"), rec.c.ra.label("rec_ra"),
                rec.c.dec.label("rec_dec"), rec.c.date_obs.label("rec_date_obs"),
                rec.c.instrument.label("rec_instrument"), rec.c.filters, rec.c.credit.label("rec_credit"),
                rec.c.license.label("rec_license"), t.frames.c.ra.label("frame_ra"), t.frames.c.dec.label("frame_dec"),
                t.frames.c.notes, t.frames.c.field_note, cur.c.review_id, cur.c.decision,
                cur.c.note.label("review_note"), cur.c.reviewer,
                cur.c.created_at.label("reviewed_at"))
         .select_from(p.outerjoin(fi, fi.c.id == p.c.file_id).outerjoin(rec, rec.c.id == fi.c.record_id)
                      .outerjoin(t.frames, t.frames.c.id == p.c.frame_id)
                      .outerjoin(cur, cur.c.frame_id == p.c.frame_id))
         .order_by(p.c.id))
    if run_id is not None:
        q = q.where(p.c.run_id == run_id)
    found = list(conn.execute(q))
    files = _files_of(conn, [r.id for r in found])
    in_field = _fields_of(conn, [r.frame_id for r in found if r.frame_id is not None])
    out = []
    for r in found:
        review = None
        if r.review_id is not None:
            review = Decision(review_id=r.review_id, decision=r.decision, note=r.review_note, reviewer=r.reviewer,
                              at=r.reviewed_at)
        out.append(ManifestRow(
            product=_product(r, files.get(r.id, {}), r.notes), product_id=r.id, frame_id=r.frame_id,
            created_at=r.created_at, updated_at=r.updated_at, archive=r.archive, archive_id=r.archive_id,
            obs_id=r.obs_id, source_url=r.source_url, title=r.title, filters=list(r.filters or []),
            target=r.rec_target, ra=r.frame_ra if r.frame_ra is not None else r.rec_ra,
            dec=r.frame_dec if r.frame_dec is not None else r.rec_dec, date_obs=r.rec_date_obs,
            instrument=r.rec_instrument, credit=r.rec_credit, license=r.rec_license,
            raw_path=r.raw_path or r.source_path, raw_deleted=r.deleted_at is not None, review=review,
            field_id=in_field.get(r.frame_id, (None, None))[0], field_name=in_field.get(r.frame_id, (None, None))[1],
            field_note=r.field_note, superseded_by=r.superseded_by, superseded_at=r.superseded_at))
    return out


def _fields_of(conn: Connection, frame_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    """``{frame id: (field id, name)}`` of the newest field each frame is a member of."""
    out: dict[int, tuple[int, str]] = {}
    m, f = t.field_members, t.fields
    for chunk in _chunks(sorted(set(frame_ids))):
        q = (select(m.c.frame_id, f.c.id, f.c.name).select_from(m.join(f, f.c.id == m.c.field_id))
             .where(m.c.frame_id.in_(chunk)).order_by(f.c.id))
        for frame_id, field_id, name in conn.execute(q):
            out[frame_id] = (field_id, name)  # later (newer) fields replace earlier ones
    return out


def file_owners(conn: Connection, paths: Sequence[str]) -> dict[str, list[FileOwner]]:
    """Who the catalog says owns each of these paths: one owner per product row recording it
    (a composite's file, recorded by each member, as ``lupton`` of that member's frame)."""
    pf, p = t.product_files, t.products
    out: dict[str, list[FileOwner]] = defaultdict(list)
    for i in range(0, len(paths), 500):
        q = (select(pf.c.path, pf.c.kind, p.c.operation, p.c.source_sha256, p.c.source_path, p.c.hdu_idx,
                    p.c.plane_idx, p.c.channels)
             .select_from(pf.join(p, p.c.id == pf.c.product_id)).where(pf.c.path.in_(paths[i:i + 500])))
        for path, kind, operation, sha, source_path, hdu, plane, channels in conn.execute(q):
            op = str(FileKind.LUPTON) if kind == FileKind.LUPTON else operation
            bands = _channel_sources(channels) if op == str(Operation.COMPOSE) else frozenset()
            if bands:  # a composite from bands is owned by all of them, not by its reference band alone
                out[path].append(FileOwner(op, bands))
                continue
            out[path].append(FileOwner.of_frame(op, sha or f"path:{source_path}", index_or_none(hdu),
                                                index_or_none(plane)))
    return dict(out)


def _channel_sources(channels: Any) -> frozenset[tuple[str, int | None, int | None]]:
    """(sha256, HDU, plane) of every band a composed product's channel records name."""
    found: set[tuple[str, int | None, int | None]] = set()
    for channel in channels or ():
        for src in (channel or {}).get("sources") or ():
            if src.get("source_sha256"):
                hdu, plane = src.get("hdu"), src.get("plane")
                found.add((str(src["source_sha256"]), None if hdu is None or int(hdu) < 0 else int(hdu),
                           None if plane is None or int(plane) < 0 else int(plane)))
    return frozenset(found)


def superseded_runs(conn: Connection, run_id: str) -> list[str]:
    """The other runs that have rows (frame or field products) superseded by rows of ``run_id``
    (their manifests changed)."""
    runs: set[str] = set()
    for table in (t.products, t.field_products):
        old, new = table.alias("old"), table.alias("new")
        q = (select(old.c.run_id).distinct().select_from(old.join(new, new.c.id == old.c.superseded_by))
             .where(new.c.run_id == run_id, old.c.run_id.is_not(None), old.c.run_id != run_id))
        runs |= {str(r) for r in conn.execute(q).scalars()}
    return sorted(runs)


# --- runs and stats -----------------------------------------------------------------------------

def _run_info(row: Any) -> RunInfo:
    return RunInfo(id=row.id, flow=row.flow, params=row.params or {}, status=row.status,
                   started_at=row.started_at, finished_at=row.finished_at, counts=row.counts or {},
                   error=row.error, host=row.host, pid=row.pid)


def run_info(conn: Connection, run_id: str) -> RunInfo | None:
    row = conn.execute(select(t.runs).where(t.runs.c.id == run_id)).first()
    return None if row is None else _run_info(row)


def recent_runs(conn: Connection, limit: int = 20) -> list[RunInfo]:
    q = select(t.runs).order_by(t.runs.c.started_at.desc(), t.runs.c.id.desc()).limit(limit)
    return [_run_info(row) for row in conn.execute(q)]


def run_summary(conn: Connection, run_id: str, *, max_errors: int = 50) -> RunSummary | None:
    info = run_info(conn, run_id)
    if info is None:
        return None
    p = t.products
    rows = list(conn.execute(select(p.c.status, p.c.operation, p.c.flags, p.c.frame_id, p.c.file_id,
                                    p.c.tile_count, p.c.source_path, p.c.error)
                             .where(p.c.run_id == run_id).order_by(p.c.id)))
    flags: Counter[str] = Counter()
    flagged_frames: set[tuple[int | None, str]] = set()
    for row in rows:
        for flag in row.flags or []:
            name = flag.get("name") if isinstance(flag, Mapping) else str(flag)
            if (row.frame_id, name) not in flagged_frames:
                flagged_frames.add((row.frame_id, name))
                flags[name] += 1
    return RunSummary(
        run=info,
        products_by_status=dict(Counter(r.status for r in rows)),
        products_by_operation=dict(Counter(r.operation for r in rows)),
        flags=dict(flags),
        frames=len({r.frame_id for r in rows if r.frame_id is not None}),
        files=len({r.file_id for r in rows if r.file_id is not None}),
        tiles=sum(r.tile_count or 0 for r in rows),
        errors=[(r.source_path, r.error or "") for r in rows if r.status != "ok"][:max_errors],
    )


def stats(conn: Connection) -> dict[str, Any]:
    """Row counts per table and the breakdowns an operator asks for first."""
    def count(table: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def grouped(col: Any) -> dict[str, int]:
        return {str(k): int(v) for k, v in conn.execute(select(col, func.count()).group_by(col).order_by(col))}

    cur = current_decisions()
    return {
        "records": count(t.archive_records),
        "records_by_archive": grouped(t.archive_records.c.archive),
        "files": count(t.files),
        "bytes": int(conn.execute(select(func.coalesce(func.sum(t.files.c.size), 0))).scalar_one()),
        "frames": count(t.frames),
        "frames_flagged": int(conn.execute(select(func.count()).where(t.frames.c.flag_count > 0)).scalar_one()),
        "flags": grouped(t.frame_flags.c.name),
        "products": count(t.products),
        "products_by_status": grouped(t.products.c.status),
        "products_by_operation": grouped(t.products.c.operation),
        "products_superseded": int(conn.execute(select(func.count()).where(
            t.products.c.superseded_by.is_not(None))).scalar_one()),
        "product_files": count(t.product_files),
        "reviews": count(t.reviews),
        "decisions": {str(k): int(v) for k, v in conn.execute(
            select(cur.c.decision, func.count()).group_by(cur.c.decision).order_by(cur.c.decision))},
        "runs": count(t.runs),
        "runs_by_status": grouped(t.runs.c.status),
    }
