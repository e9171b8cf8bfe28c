"""The catalog's tables (SQLAlchemy Core): records, files, frames, quality, products, reviews, runs,
and the review page's sign-in sessions.

Natural keys carry unique constraints so upserts are idempotent across processes:
records by (archive, archive_id), files by content sha256, frames by (file, hdu, plane),
products by a hash of (input sha256, frame, operation, model versions, parameters).
A product row is current until a later one replaces its files or redoes its work
(``superseded_by``, schema 4; field products the same, schema 7); it is kept, marked, so old
runs' manifests stay true.
``None`` hdu/plane are stored as -1 in the key columns because SQL unique constraints
treat NULLs as distinct.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "NO_INDEX",
    "UtcDateTime",
    "archive_records",
    "field_members",
    "field_product_files",
    "field_products",
    "fields",
    "files",
    "frame_flags",
    "frame_metrics",
    "frames",
    "metadata",
    "product_files",
    "products",
    "review_sessions",
    "reviews",
    "runs",
    "schema_version",
    "utcnow",
]

#: Stored in ``hdu_idx``/``plane_idx`` when a frame has no HDU or plane number.
NO_INDEX = -1


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("description", Text, nullable=False),
    Column("applied_at", UtcDateTime, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("flow", String(200), nullable=False),
    Column("params", JSON(none_as_null=True), nullable=False),
    Column("status", String(32), nullable=False),  # running | ok | partial | failed | cancelled
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("counts", JSON(none_as_null=True)),
    Column("error", Text),
    Column("host", String(255)),
    Column("pid", Integer),
    Index("ix_runs_started_at", "started_at"),
)

archive_records = Table(
    "archive_records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("archive", String(32), nullable=False),
    Column("archive_id", String, nullable=False),
    Column("obs_id", String),
    Column("title", Text),
    Column("target", String),
    Column("ra", Float),
    Column("dec", Float),
    Column("instrument", String),
    Column("filters", JSON(none_as_null=True)),
    Column("exposure_s", Float),
    Column("date_obs", String),
    Column("url", Text, nullable=False),
    Column("preview_url", Text),
    Column("filename", String),
    Column("size", BigInteger),
    Column("published_sha256", String(64)),
    Column("credit", Text),
    Column("license", Text),
    Column("release", String),
    Column("kind", String(32), nullable=False),
    Column("extra", JSON(none_as_null=True)),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("last_run_id", String(80)),
    UniqueConstraint("archive", "archive_id", name="uq_archive_records_key"),
)

files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("size", BigInteger),
    Column("path", Text, nullable=False),  # latest known location; may be deleted by retention
    Column("record_id", Integer, ForeignKey("archive_records.id")),
    Column("verified_against", String(16)),
    Column("downloaded_at", UtcDateTime),
    Column("n_frames", Integer),  # frames the reader found in the file (None: never read, or unreadable)
    Column("deleted_at", UtcDateTime),  # when retention deleted the file at ``path`` (None: not deleted)
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("last_run_id", String(80)),
    Index("ix_files_record_id", "record_id"),
)

frames = Table(
    "frames",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("file_id", Integer, ForeignKey("files.id"), nullable=False),
    Column("hdu_idx", Integer, nullable=False),
    Column("plane_idx", Integer, nullable=False),
    Column("frame_key", Text, nullable=False),
    Column("kind", String(16), nullable=False),  # grey | color
    Column("ra", Float),
    Column("dec", Float),
    Column("provenance", JSON(none_as_null=True)),
    Column("stretch", JSON(none_as_null=True)),
    Column("notes", JSON(none_as_null=True)),  # the reader's notes on the frame ["WCS unreadable: ...", ...]
    Column("footprint", JSON(none_as_null=True)),  # linear frames: grid, WCS, coverage; or {"unusable": why}
    Column("field_note", Text),  # why the frame is in no field (set by the field step; None: in one, or not asked)
    Column("flag_count", Integer, nullable=False),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("last_run_id", String(80)),
    UniqueConstraint("file_id", "hdu_idx", "plane_idx", name="uq_frames_key"),
    Index("ix_frames_flagged", "flag_count", "updated_at"),
)

frame_metrics = Table(
    "frame_metrics",
    metadata,
    Column("frame_id", Integer, ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", Float),
)

frame_flags = Table(
    "frame_flags",
    metadata,
    Column("frame_id", Integer, ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", Float),
    Column("threshold", Float),
    Column("comparison", String(4)),
    Column("message", Text),
    Index("ix_frame_flags_name", "name"),
)

products = Table(
    "products",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("product_key", String(64), nullable=False, unique=True),
    Column("run_id", String(80)),
    Column("file_id", Integer, ForeignKey("files.id")),
    Column("frame_id", Integer, ForeignKey("frames.id")),
    Column("source_path", Text, nullable=False),
    Column("source_sha256", String(64)),
    Column("hdu_idx", Integer, nullable=False),
    Column("plane_idx", Integer, nullable=False),
    Column("frame_key", Text),
    Column("operation", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # ok | error
    Column("error", Text),
    Column("models", JSON(none_as_null=True), nullable=False),  # [{"name","version","sha256","arch"}]
    Column("models_hash", String(64), nullable=False),
    Column("params", JSON(none_as_null=True), nullable=False),
    Column("params_hash", String(64), nullable=False),
    Column("provenance", JSON(none_as_null=True)),
    Column("metrics", JSON(none_as_null=True)),  # the product's own: lightness kept, engine seconds, size, ...
    Column("quality_metrics", JSON(none_as_null=True)),  # the frame's quality metrics behind ``flags``
    Column("flags", JSON(none_as_null=True)),
    Column("stretch", JSON(none_as_null=True)),
    Column("tile_count", Integer),
    Column("channels", JSON(none_as_null=True)),  # compose (schema 5): each channel's bands, or how it was inferred
    Column("attempts", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # schema 4: the product (id) whose files replaced this one's, or that redid its work; None while current
    Column("superseded_by", Integer),
    Column("superseded_at", UtcDateTime),
    Index("ix_products_done", "source_sha256", "models_hash", "params_hash"),
    Index("ix_products_run_id", "run_id"),
    Index("ix_products_frame_id", "frame_id"),
)

product_files = Table(
    "product_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("product_id", Integer, ForeignKey("products.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),  # png | tif | fits | fits_flux | lupton | ...
    Column("path", Text, nullable=False),
    Column("sha256", String(64)),
    UniqueConstraint("product_id", "kind", name="uq_product_files_kind"),
    Index("ix_product_files_path", "path"),  # schema 4: who records a path (no product replaces another's file)
)

#: Fields (schema 6): frames of one sky field across filters, found by footprint overlap. A field's
#: key is a hash of its frames, so the same frames give the same field on every run.
fields = Table(
    "fields",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("field_key", String(32), nullable=False, unique=True),
    Column("name", String(80), nullable=False),
    Column("grid", JSON(none_as_null=True), nullable=False),  # the reference grid: shape, WCS cards, coverage
    Column("pixel_scale_arcsec", Float),
    Column("ra", Float),
    Column("dec", Float),
    Column("filters", JSON(none_as_null=True), nullable=False),  # the filters with a band frame
    Column("n_members", Integer, nullable=False),
    Column("reference_frame_id", Integer, ForeignKey("frames.id")),
    Column("status", String(16), nullable=False),  # grouped | refused | failed | composed
    Column("note", Text),  # why a field was refused or failed (over the memory budget, too few bands aligned)
    Column("first_seen", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("last_run_id", String(80)),
)

field_members = Table(
    "field_members",
    metadata,
    Column("field_id", Integer, ForeignKey("fields.id", ondelete="CASCADE"), primary_key=True),
    Column("frame_id", Integer, ForeignKey("frames.id"), primary_key=True),
    Column("product_id", Integer, ForeignKey("products.id")),  # the frame's product the field was grouped from
    Column("filter", String(32), nullable=False),
    Column("exptime", Float),
    Column("role", String(16), nullable=False),  # band | shallower | off_reference | failed
    Column("overlap", Float),  # with the reference frame, over the smaller footprint
    Column("coverage", Float),  # fraction of the field's grid the frame covers
    Column("note", Text),
    Index("ix_field_members_frame_id", "frame_id"),
)

#: A field's colour products (schema 4): composed from its band frames on its grid, with a 4x
#: version where the run upscales. Keyed like frame products: the field, its band frames, the
#: models and the parameters.
field_products = Table(
    "field_products",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("product_key", String(64), nullable=False, unique=True),
    Column("field_id", Integer, ForeignKey("fields.id"), nullable=False),
    Column("run_id", String(80)),
    Column("operation", String(32), nullable=False),  # the run's operation for the field's frames
    Column("status", String(16), nullable=False),  # ok | error
    Column("error", Text),
    Column("channels", JSON(none_as_null=True)),  # {"R": "F160W", "G": "F606W", "B": "F435W"} or inferred(...)
    Column("bands", JSON(none_as_null=True), nullable=False),  # the band frames used: filter, frame, file sha256
    Column("models", JSON(none_as_null=True), nullable=False),
    Column("models_hash", String(64), nullable=False),
    Column("params", JSON(none_as_null=True), nullable=False),
    Column("params_hash", String(64), nullable=False),
    Column("metrics", JSON(none_as_null=True)),
    Column("notes", JSON(none_as_null=True)),  # members left out of this product, and why
    Column("attempts", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("superseded_by", Integer),  # schema 7: the field product that wrote this one's files again
    Column("superseded_at", UtcDateTime),
    Index("ix_field_products_field_id", "field_id"),
    Index("ix_field_products_run_id", "run_id"),
)

field_product_files = Table(
    "field_product_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("field_product_id", Integer, ForeignKey("field_products.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),  # png | tif | fits | png_4x | tif_4x | fits_4x
    Column("path", Text, nullable=False),
    Column("sha256", String(64)),
    UniqueConstraint("field_product_id", "kind", name="uq_field_product_files_kind"),
    Index("ix_field_product_files_path", "path"),  # schema 7: who records a path
)

reviews = Table(
    "reviews",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("frame_id", Integer, ForeignKey("frames.id"), nullable=False),
    Column("action", String(16), nullable=False),  # decision | undo
    Column("decision", String(16)),  # approved | rejected | needs_look (None for undo)
    Column("note", Text),
    Column("reviewer", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("undoes_id", Integer, ForeignKey("reviews.id"), unique=True),  # one undo per decision
    Index("ix_reviews_frame_id", "frame_id", "id"),
)

#: Review page sign-ins (schema 2). The cookie holds a random key; only its sha256 is stored, so a
#: copy of the catalog cannot be replayed. ``revoked_at`` is set at sign-out; rows are kept until
#: they have been expired a while (``catalog.sessions.PRUNE_AFTER``).
review_sessions = Table(
    "review_sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_sha256", String(64), nullable=False, unique=True),
    Column("reviewer", String(200), nullable=False),
    Column("token_sha256", String(64), nullable=False),  # which configured token signed in
    Column("csrf", String(128), nullable=False),
    Column("client", String(64)),  # address the sign-in came from
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
    Index("ix_review_sessions_expires_at", "expires_at"),
)
