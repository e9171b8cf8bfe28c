"""``Catalog``: the one object flows, the CLI, the review page and training use to read and write.

It opens (and creates or upgrades) the database, and wraps each call in one transaction:
writes retry lock conflicts, reads see one consistent snapshot.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from astro_pipeline.catalog import fields, queries, reviews, sessions, writes
from astro_pipeline.catalog import tables as t
from astro_pipeline.catalog.db import CatalogError, make_engine, redact, run_read, run_write, storage_error
from astro_pipeline.catalog.reviews import NotFoundError
from astro_pipeline.catalog.schema import migrate
from astro_pipeline.catalog.views import (
    Decision,
    FieldProductView,
    FieldView,
    FrameFilter,
    FrameView,
    ProductFileView,
    ReviewEvent,
    ReviewSession,
    RunInfo,
    RunSummary,
)
from astro_pipeline.fields.grouping import FieldGrouping, MemberRole
from astro_pipeline.fields.result import FieldProduct, FieldStatus
from astro_pipeline.ingest.frame import QualityReport, StretchParams
from astro_pipeline.jsondata import jsonable
from astro_pipeline.products.composites import Composite
from astro_pipeline.products.claims import FileOwner
from astro_pipeline.products.process import ProcessedInput
from astro_pipeline.products.types import FileKind, Operation, Product

if TYPE_CHECKING:  # pragma: no cover
    from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
    from astro_pipeline.config import Settings

__all__ = ["RUN_STATUSES", "Catalog", "RunStatus", "new_run_id"]

T = TypeVar("T")


class RunStatus(StrEnum):
    """How a run ended (``running`` while it goes)."""

    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Usual run statuses; any short word is accepted (flows may add their own).
RUN_STATUSES: tuple[str, ...] = tuple(RunStatus)


def _filter(filters: FrameFilter | None, kw: dict[str, Any]) -> FrameFilter:
    if filters is not None and kw:
        raise TypeError("pass either a FrameFilter or filter keywords, not both")
    return filters if filters is not None else FrameFilter(**kw)


def new_run_id(flow: str = "run") -> str:
    """A sortable, unique run id: ``<UTC time>-<flow>-<random>``."""
    stamp = t.utcnow().strftime("%Y%m%dT%H%M%SZ")
    slug = "".join(c if c.isalnum() else "-" for c in flow.lower()).strip("-")[:32] or "run"
    return f"{stamp}-{slug}-{uuid.uuid4().hex[:6]}"


class Catalog:
    """The pipeline catalog (SQLite WAL at ``<output>/catalog.sqlite`` by default, or PostgreSQL).

    ``create=False`` refuses to create a missing SQLite file (read-only CLI commands use it).
    """

    def __init__(self, url: str | None = None, *, settings: Settings | None = None, create: bool = True) -> None:
        if url is None:
            if settings is None:
                raise TypeError("Catalog needs a database URL or the settings that name one")
            url = settings.catalog_database_url
        self.url: str = url
        parsed = make_url(url)
        if not create and parsed.get_backend_name() == "sqlite":
            db = parsed.database or ""
            if db and db != ":memory:" and not Path(db).is_file():
                raise CatalogError(f"no catalog at {db} (nothing has run with this output folder yet)")
        self.engine = make_engine(url)
        try:
            self.schema_version = migrate(self.engine)
        except DBAPIError as exc:
            self.engine.dispose()
            raise storage_error(exc, url) or exc from exc
        except Exception:
            self.engine.dispose()
            raise

    @classmethod
    def for_output(cls, output_dir: str | Path, *, create: bool = True) -> Catalog:
        """The default SQLite catalog of an output folder."""
        return cls(f"sqlite:///{(Path(output_dir) / 'catalog.sqlite').resolve()}", create=create)

    def __repr__(self) -> str:
        return f"Catalog({redact(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, fn: Callable[[Connection], T], **kw: Any) -> T:
        """Run ``fn(conn)`` in one write transaction (retried on lock conflicts).

        A storage failure (read-only file, full disk) becomes a ``CatalogError`` naming the database.
        """
        try:
            return run_write(self.engine, fn, **kw)
        except DBAPIError as exc:
            raise storage_error(exc, self.url) or exc from exc

    def read(self, fn: Callable[[Connection], T]) -> T:
        try:
            return run_read(self.engine, fn)
        except DBAPIError as exc:
            raise storage_error(exc, self.url) or exc from exc

    # --- runs ------------------------------------------------------------------------------------
    def start_run(self, flow: str, params: Mapping[str, Any] | None = None, *, run_id: str | None = None) -> str:
        """Record a run as started; returns its id (``run_id`` if given: starting twice is a no-op)."""
        rid = run_id or new_run_id(flow)
        values = {"id": rid, "flow": flow, "params": jsonable(dict(params or {})), "status": "running",
                  "started_at": t.utcnow(), "counts": {}, "host": socket.gethostname(), "pid": os.getpid()}

        def step(conn: Connection) -> None:
            if conn.execute(select(t.runs.c.id).where(t.runs.c.id == rid)).first() is None:
                conn.execute(t.runs.insert().values(**values))

        self.write(step, retry_integrity=True)
        return rid

    def finish_run(self, run_id: str, status: str, counts: Mapping[str, Any] | None = None, *,
                   error: str | None = None) -> None:
        """Record how a run ended, with its counts (files, bytes, products...)."""
        if not status or not status.replace("_", "").replace("-", "").isalnum() or len(status) > 32:
            raise ValueError(f"bad run status {status!r}; use a short word such as {', '.join(RUN_STATUSES)}")

        def step(conn: Connection) -> None:
            result = conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(
                status=status, counts=jsonable(dict(counts or {})), error=error,
                finished_at=None if status == "running" else t.utcnow()))
            if result.rowcount == 0:
                raise NotFoundError(f"no run {run_id!r} in catalog {redact(self.url)}")

        self.write(step)

    def recent_runs(self, limit: int = 20) -> list[RunInfo]:
        return self.read(lambda c: queries.recent_runs(c, limit))

    def run(self, run_id: str) -> RunInfo | None:
        return self.read(lambda c: queries.run_info(c, run_id))

    def run_summary(self, run_id: str) -> RunSummary:
        summary = self.read(lambda c: queries.run_summary(c, run_id))
        if summary is None:
            raise NotFoundError(f"no run {run_id!r} in catalog {redact(self.url)}")
        return summary

    # --- archive records and files ---------------------------------------------------------------
    def upsert_record(self, record: ArchiveRecord, *, run_id: str | None = None) -> int:
        """Insert or refresh an ``ArchiveRecord`` (keyed by archive and id); returns its row id."""
        return self.write(lambda c: writes.upsert_record(c, record, run_id=run_id))

    def upsert_records(self, records: Iterable[ArchiveRecord], *, run_id: str | None = None) -> list[int]:
        items = list(records)
        return self.write(lambda c: [writes.upsert_record(c, r, run_id=run_id) for r in items])

    def upsert_file(self, downloaded: DownloadedFile, *, run_id: str | None = None, n_frames: int | None = None) -> int:
        """Record a ``DownloadedFile`` and its record (keyed by content sha256); returns the file id."""

        def step(conn: Connection) -> int:
            record_id = writes.upsert_record(conn, downloaded.record, run_id=run_id)
            return writes.upsert_file(conn, downloaded.sha256, path=downloaded.path, size=downloaded.size,
                                      record_id=record_id, verified_against=downloaded.verified_against,
                                      downloaded_at=downloaded.downloaded_at, n_frames=n_frames, run_id=run_id)

        return self.write(step)

    def file_for_record(self, archive: str, archive_id: str) -> dict[str, Any] | None:
        """``{"id","sha256","path","size"}`` of the file downloaded for a record, if any."""
        def step(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(select(t.files.c.id, t.files.c.sha256, t.files.c.path, t.files.c.size)
                               .join(t.archive_records, t.files.c.record_id == t.archive_records.c.id)
                               .where(t.archive_records.c.archive == archive,
                                      t.archive_records.c.archive_id == archive_id)).first()
            return None if row is None else dict(row._mapping)
        return self.read(step)

    # --- frames and products ---------------------------------------------------------------------
    def upsert_frame(self, sha256: str, frame_key: str, hdu: int | None, plane: int | None,
                     provenance: Mapping[str, Any] | None = None, quality: QualityReport | None = None, *,
                     stretch: StretchParams | None = None, notes: Sequence[str] | None = None,
                     kind: str | None = None, ra: float | None = None, dec: float | None = None,
                     run_id: str | None = None) -> int:
        """Insert or refresh a frame of the (known) file with this sha256; a quality report replaces its flags."""

        def step(conn: Connection) -> int:
            file_id = conn.execute(select(t.files.c.id).where(t.files.c.sha256 == sha256)).scalar()
            if file_id is None:
                raise NotFoundError(f"no file with sha256 {sha256} in the catalog (record it first)")
            return writes.upsert_frame(conn, file_id, frame_key=frame_key, hdu=hdu, plane=plane,
                                       provenance=provenance, quality=quality, stretch=stretch, notes=notes,
                                       kind=kind, ra=ra, dec=dec, run_id=run_id)

        return self.write(step)

    def record_input(self, processed: ProcessedInput, *, run_id: str | None = None,
                     downloaded: DownloadedFile | None = None) -> list[int]:
        """Record a processed input in one transaction: its file (and archive record, when
        downloaded), how many frames it has, and every product with its frame and files."""
        return self.write(lambda c: writes.record_input(c, processed, run_id=run_id, downloaded=downloaded))

    def record_product(self, product: Product, *, run_id: str | None = None) -> int:
        """Record one ``Product`` with its frame, quality flags and files, atomically; returns its id."""
        return self.write(lambda c: writes.record_product(c, product, run_id=run_id))

    def record_raw_deleted(self, sha256: str) -> bool:
        """Record that retention deleted this input's raw file (the manifest's ``raw_deleted``)."""
        return self.write(lambda c: writes.record_deleted(c, sha256))

    def attach_composites(self, composites: Iterable[Composite]) -> int:
        """Add each composite's file to its member products (``files["lupton"]``); returns files attached."""
        items = list(composites)
        return self.write(lambda c: sum(writes.attach_composite(c, comp, kind=FileKind.LUPTON) for comp in items))

    # --- fields ----------------------------------------------------------------------------------
    def record_fields(self, grouping: FieldGrouping, *, run_id: str | None = None) -> dict[str, int]:
        """Record a grouping's fields (reference grid, members, roles) and why other frames are in none,
        in one transaction; returns ``{field_key: field id}``."""
        return self.write(lambda c: fields.record_grouping(c, grouping, run_id=run_id))

    def record_field_status(self, field_id: int, status: FieldStatus, note: str | None = None, *,
                            run_id: str | None = None) -> None:
        """A field's state and, where refused or failed, why."""
        self.write(lambda c: fields.record_field_status(c, field_id, status, note, run_id=run_id))

    def set_field_member_role(self, field_id: int, product: Product, role: MemberRole, note: str | None) -> None:
        self.write(lambda c: fields.set_member_role(c, field_id, product, role, note))

    def fields(self, *, field_ids: Sequence[int] | None = None, run_id: str | None = None,
               frame_ids: Iterable[int] | None = None) -> list[FieldView]:
        """Fields with their members: all, these ids, those a run recorded, or those holding these frames."""
        return self.read(lambda c: fields.field_views(c, field_ids=field_ids, run_id=run_id, frame_ids=frame_ids))

    def record_field_product(self, field_id: int, product: FieldProduct) -> int:
        """Record a field product and its files, and mark its field composed when it is ok."""

        def step(conn: Connection) -> int:
            fp_id = fields.record_field_product(conn, field_id, product)
            if product.ok:
                fields.record_field_status(conn, field_id, FieldStatus.COMPOSED, None, run_id=product.run_id)
            return fp_id

        return self.write(step)

    def field_product_done(self, key: str) -> bool:
        return self.read(lambda c: fields.field_product_done(c, key))

    def field_products(self, *, run_id: str | None = None, field_ids: Sequence[int] | None = None,
                       ids: Sequence[int] | None = None, current: bool = False) -> list[FieldProductView]:
        """Field products with their field, members and files (of a run, of fields, or by id;
        ``current``: only those not superseded)."""
        return self.read(lambda c: fields.field_product_views(c, run_id=run_id, field_ids=field_ids, ids=ids,
                                                              current=current))

    def field_product_file(self, file_id: int) -> ProductFileView | None:
        """A field product's file by catalog id (the review page serves field images only this way)."""
        row = self.read(lambda c: c.execute(select(t.field_product_files).where(
            t.field_product_files.c.id == file_id)).first())
        return None if row is None else ProductFileView(id=row.id, kind=row.kind, path=row.path, sha256=row.sha256)

    def current_products(self, sha256s: Iterable[str], *, operation: Operation,
                         models: Mapping[str, str]) -> list[Product]:
        """The ok products of these inputs by ``operation`` with these model versions, newest per frame."""
        wanted = list(sha256s)
        return self.read(lambda c: queries.current_products(c, wanted, operation=operation, models=models))

    def file_owners(self, paths: Sequence[Path]) -> dict[Path, list[FileOwner]]:
        """Who the catalog's product rows say owns each path (absent: no row records it);
        the ``recorded`` side of ``products.claims.free_for``."""
        wanted = {str(Path(p)): Path(p) for p in paths}
        found = self.read(lambda c: queries.file_owners(c, list(wanted)))
        return {wanted[k]: v for k, v in found.items()}

    def superseded_runs(self, run_id: str) -> list[str]:
        """Other runs whose product rows rows of ``run_id`` superseded (their manifests need re-exporting)."""
        return self.read(lambda c: queries.superseded_runs(c, run_id))

    def is_done(self, input_sha256: str, model_versions: Any, params: Mapping[str, Any] | None, *,
                operation: str | None = None) -> bool:
        """True when every frame of this input has an ok product with these model versions and params.

        ``model_versions``: ``{name: version}`` or a Product's ``models`` list.
        """
        return self.read(lambda c: queries.is_done(c, input_sha256, model_versions, params, operation))

    def flagged_frames(self, filters: FrameFilter | None = None, **kw: Any) -> list[FrameView]:
        """Flagged frames, newest first. Filters: flag, archive, run_id, ra/dec/radius_deg, decision, kind."""
        flt = _filter(filters, kw)
        return self.read(lambda c: queries.frame_views(c, queries.select_frames(c, flt)[0]))

    def count_frames(self, filters: FrameFilter | None = None, **kw: Any) -> int:
        """How many frames match (e.g. ``decision="undecided"``: what is left to review)."""
        flt = dataclasses.replace(_filter(filters, kw), limit=None, offset=0)
        return self.read(lambda c: queries.select_frames(c, flt)[1])

    def frame(self, frame_id: int) -> FrameView | None:
        views = self.read(lambda c: queries.frame_views(c, [frame_id]))
        return views[0] if views else None

    def product_file(self, product_file_id: int) -> ProductFileView | None:
        """A product file by catalog id (the review page serves images only this way)."""
        row = self.read(lambda c: c.execute(select(t.product_files).where(
            t.product_files.c.id == product_file_id)).first())
        return None if row is None else ProductFileView(id=row.id, kind=row.kind, path=row.path, sha256=row.sha256)

    def approved_items(self, kind: str) -> list[FrameView]:
        """Frames a curator approved, of kind ``"color"`` or ``"grey"``, for training (oldest first).

        Each view has ``raw_path`` (the input file), ``hdu``/``plane``, metadata and product paths.
        Rejected frames never appear (their current decision is not "approved").
        """
        flt = FrameFilter(flagged_only=False, decision="approved", kind=queries.normalize_kind(kind))
        return self.read(lambda c: queries.frame_views(c, sorted(queries.select_frames(c, flt)[0])))

    def rejected_inputs(self) -> set[tuple[str, int | None, int | None]]:
        """(sha256, hdu, plane) of every frame whose current decision is "rejected" (exclude everywhere)."""
        flt = FrameFilter(flagged_only=False, decision="rejected")

        def step(conn: Connection) -> set[tuple[str, int | None, int | None]]:
            return {(v.sha256, v.hdu, v.plane) for v in queries.frame_views(conn, queries.select_frames(conn, flt)[0])}

        return self.read(step)

    # --- reviews ---------------------------------------------------------------------------------
    def add_review(self, frame_id: int, decision: str, note: str | None = None, reviewer: str = "") -> int:
        """Append a decision (approved | rejected | needs_look) for a frame; returns the review id."""
        return self.write(lambda c: reviews.add_reviews(c, [frame_id], decision, note, reviewer))[0]

    def add_reviews(self, frame_ids: Sequence[int], decision: str, note: str | None = None,
                    reviewer: str = "") -> list[int]:
        """The same decision for many frames (a bulk action), all or none."""
        return self.write(lambda c: reviews.add_reviews(c, frame_ids, decision, note, reviewer))

    def undo_review(self, frame_id: int, reviewer: str) -> int | None:
        """Reverse the frame's current decision (appends an undo); returns the undone review id or None."""
        return self.write(lambda c: reviews.undo_review(c, frame_id, reviewer), retry_integrity=True)

    def current_decision(self, frame_id: int) -> Decision | None:
        return self.read(lambda c: reviews.current_decision(c, frame_id))

    def review_history(self, frame_id: int) -> list[ReviewEvent]:
        return self.read(lambda c: reviews.review_history(c, frame_id))

    # --- review page sessions --------------------------------------------------------------------
    def create_review_session(self, key_sha256: str, *, reviewer: str, csrf: str, expires_at: Any,
                              token_sha256: str, client: str | None = None) -> int:
        """Record a sign-in (the sha256 of its cookie key); returns the session's row id."""
        return self.write(lambda c: sessions.create_session(c, key_sha256, reviewer=reviewer, csrf=csrf,
                                                            expires_at=expires_at, token_sha256=token_sha256,
                                                            client=client))

    def review_session(self, key_sha256: str) -> ReviewSession | None:
        """The sign-in with this key hash, revoked or not (None when unknown)."""
        return self.read(lambda c: sessions.find_session(c, key_sha256))

    def revoke_review_session(self, key_sha256: str) -> bool:
        """Sign-out: revoke the session for good; False when unknown."""
        return self.write(lambda c: sessions.revoke_session(c, key_sha256))

    # --- overview --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        out = self.read(queries.stats)
        out["schema_version"] = self.schema_version
        out["url"] = redact(self.url)
        return out
