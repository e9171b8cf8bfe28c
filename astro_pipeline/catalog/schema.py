"""Schema versioning: a ``schema_version`` table and explicit, numbered upgrade steps.

A fresh database gets the current tables and is stamped ``LATEST``. An older one runs each
step in ``UPGRADES`` above its version, in order, inside one locked transaction, so two
processes opening the catalog at once never both migrate. A database newer than this code is
refused (it may hold columns this code would silently ignore).

To change the schema: edit ``tables.py``, bump ``LATEST``, and add ``UPGRADES[LATEST]``, a
function that brings a ``LATEST - 1`` database to the new shape with explicit DDL.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Column, Connection, Engine, Table, func, inspect, select, text, update

from astro_pipeline.catalog import tables as t
from astro_pipeline.catalog.db import CatalogError, is_sqlite, redact, run_write

__all__ = ["LATEST", "UPGRADES", "current_version", "migrate"]

#: The schema version this code writes.
LATEST = 7


def _add_review_sessions(conn: Connection) -> None:
    """2: revocable review page sign-ins (logout revokes; the revocation survives a restart)."""
    t.review_sessions.create(conn)  # CREATE TABLE and its index, explicit DDL on either database


def _add_column(conn: Connection, table: Table, column: Column) -> None:
    """``ALTER TABLE table ADD COLUMN column`` with the column's type as this database spells it
    (nothing when the table has the column already)."""
    if column.name in {c["name"] for c in inspect(conn).get_columns(table.name)}:
        return
    spelled = column.type.compile(dialect=conn.dialect)
    conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN {column.name} {spelled}'))


def _v3_records(conn: Connection) -> None:
    """3: retention deletions, reader notes, and products' quality metrics in their own column.

    ``files.deleted_at`` (the manifest's ``raw_deleted`` comes from it, no longer from the file
    system at export time), ``frames.notes``, and ``products.quality_metrics``, filled from the
    ``quality_<name>`` keys versions 1 and 2 kept inside ``products.metrics`` (which keeps the rest).
    """
    _add_column(conn, t.files, t.files.c.deleted_at)
    _add_column(conn, t.frames, t.frames.c.notes)
    _add_column(conn, t.products, t.products.c.quality_metrics)
    p = t.products
    for pid, metrics in list(conn.execute(select(p.c.id, p.c.metrics))):
        metrics = dict(metrics or {})
        quality = {k[len("quality_"):]: metrics.pop(k) for k in list(metrics) if k.startswith("quality_")}
        if quality:
            conn.execute(update(p).where(p.c.id == pid).values(metrics=metrics, quality_metrics=quality))


def _v4_superseded(conn: Connection) -> None:
    """4: ``products.superseded_by`` / ``superseded_at`` and an index on ``product_files.path``.

    Rows of earlier versions are all current (nothing marked them); the index answers "which
    product records this path" before a product is written.
    """
    _add_column(conn, t.products, t.products.c.superseded_by)
    _add_column(conn, t.products, t.products.c.superseded_at)
    index = next(i for i in t.product_files.indexes if i.name == "ix_product_files_path")
    if index.name not in {i["name"] for i in inspect(conn).get_indexes(t.product_files.name)}:
        index.create(conn)


def _v5_channels(conn: Connection) -> None:
    """5: ``products.channels``, the channel records of products composed from bands (which
    channel came from which filter and frame, which was inferred and by what); NULL for the rest."""
    _add_column(conn, t.products, t.products.c.channels)


def _v6_fields(conn: Connection) -> None:
    """6: fields: frames' footprints and field notes; ``fields``, ``field_members``, ``field_products``
    and ``field_product_files``."""
    _add_column(conn, t.frames, t.frames.c.footprint)
    _add_column(conn, t.frames, t.frames.c.field_note)
    for table in (t.fields, t.field_members, t.field_products, t.field_product_files):
        table.create(conn, checkfirst=True)  # nothing when the table exists already, as _add_column


def _v7_field_superseded(conn: Connection) -> None:
    """7: ``field_products.superseded_by`` / ``superseded_at`` and an index on ``field_product_files.path``:
    a field product whose files a later one wrote again (a new model version, same names) is marked.
    Rows of earlier versions are all current."""
    _add_column(conn, t.field_products, t.field_products.c.superseded_by)
    _add_column(conn, t.field_products, t.field_products.c.superseded_at)
    index = next(i for i in t.field_product_files.indexes if i.name == "ix_field_product_files_path")
    if index.name not in {i["name"] for i in inspect(conn).get_indexes(t.field_product_files.name)}:
        index.create(conn)


#: version -> (description, step upgrading version-1 to version).
UPGRADES: dict[int, tuple[str, Callable[[Connection], None]]] = {
    2: ("review_sessions: revocable review page sign-ins", _add_review_sessions),
    3: ("files.deleted_at, frames.notes, products.quality_metrics", _v3_records),
    4: ("products.superseded_by/superseded_at, index on product_files.path", _v4_superseded),
    5: ("products.channels: which channel of a composed product came from which band", _v5_channels),
    6: ("frames.footprint, frames.field_note, fields, field_members, field_products, field_product_files",
        _v6_fields),
    7: ("field_products.superseded_by/superseded_at, index on field_product_files.path", _v7_field_superseded),
}

_DESCRIPTION_FRESH = "initial catalog tables"


def current_version(conn: Connection) -> int | None:
    """The database's schema version, or None when it has no catalog yet."""
    if not inspect(conn).has_table(t.schema_version.name):
        return None
    return conn.execute(select(func.max(t.schema_version.c.version))).scalar_one_or_none()


def migrate(engine: Engine) -> int:
    """Create or upgrade the catalog schema to ``LATEST``; returns the version now in force."""

    def step(conn: Connection) -> int:
        if not is_sqlite(engine):  # SQLite's BEGIN IMMEDIATE already serialises writers
            conn.execute(text("SELECT pg_advisory_xact_lock(7341298347)"))
        version = current_version(conn)
        if version is None:
            existing = set(inspect(conn).get_table_names()) & set(t.metadata.tables)
            if existing:
                raise CatalogError(
                    f"catalog {redact(str(engine.url))}: tables {sorted(existing)} exist without a "
                    "schema_version table; this is not an astro-pipeline catalog"
                )
            t.metadata.create_all(conn)
            conn.execute(t.schema_version.insert().values(
                version=LATEST, description=_DESCRIPTION_FRESH, applied_at=t.utcnow()))
            return LATEST
        if version > LATEST:
            raise CatalogError(
                f"catalog {redact(str(engine.url))} has schema version {version}, newer than this "
                f"code's {LATEST}; upgrade astro-pipeline"
            )
        for target in range(version + 1, LATEST + 1):
            if target not in UPGRADES:
                raise CatalogError(f"no upgrade step to catalog schema version {target}")
            description, upgrade = UPGRADES[target]
            upgrade(conn)
            conn.execute(t.schema_version.insert().values(
                version=target, description=description, applied_at=t.utcnow()))
        return LATEST

    with engine.connect() as conn:  # the common case needs no write lock: never wait on a busy writer
        version = current_version(conn)
        conn.rollback()
    if version == LATEST:
        return LATEST
    return run_write(engine, step)
