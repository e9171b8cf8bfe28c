"""Database connections for the catalog: SQLite in WAL mode (busy timeout) or PostgreSQL by URL.

SQLite write transactions start with ``BEGIN IMMEDIATE`` so two processes never both hold a
read snapshot and then race to upgrade it (which SQLite answers with an immediate "database
is locked"); they queue on the busy timeout instead. ``run_write`` retries the few errors a
concurrent writer can still cause.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

__all__ = ["BUSY_TIMEOUT_S", "CatalogError", "is_sqlite", "make_engine", "redact", "run_read", "run_write",
           "storage_error"]

T = TypeVar("T")

#: How long a SQLite writer waits for another writer's lock before giving up.
BUSY_TIMEOUT_S = 60.0
_WRITE_OPTION = "astro_catalog_write"


class CatalogError(Exception):
    """A catalog problem with a message that names the database and what went wrong."""


#: SQLite failures that are about the file or the disk, not the query, and what to say about them.
_STORAGE_PROBLEMS: dict[str, str] = {
    "readonly database": "is read-only",
    "unable to open database file": "cannot be opened",
    "disk i/o error": "hit a disk I/O error",
    "database or disk is full": "is on a full disk",
    "file is not a database": "is not a SQLite database",
    "database disk image is malformed": "is corrupt",
}


def storage_error(exc: DBAPIError, url: str) -> CatalogError | None:
    """A CatalogError naming the database for a storage problem (read-only file or folder, full or
    failing disk, unreachable server); None for anything else (a query bug stays what it is)."""
    if not isinstance(exc, OperationalError):
        return None
    text = " ".join(str(exc.orig if exc.orig is not None else exc).split())
    lowered = text.lower()
    if make_url(url).get_backend_name() != "sqlite":
        return CatalogError(f"catalog {redact(url)}: {text[:300]}")
    for needle, what in _STORAGE_PROBLEMS.items():
        if needle in lowered:
            return CatalogError(f"catalog {redact(url)} {what} ({text[:200]}); check the file, its folder and the disk")
    return None


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout, foreign keys and explicit BEGINs."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
        _configure_sqlite(engine)
    elif backend == "postgresql":
        engine = create_engine(url, pool_pre_ping=True)
    else:
        raise CatalogError(f"catalog URL {redact(url)}: unsupported database {backend!r} (use sqlite or postgresql)")
    _guard_fork(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see module docstring)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: consistent after any crash
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def _guard_fork(engine: Engine) -> None:
    """Never reuse a pooled connection inherited across fork() (SQLAlchemy's documented recipe)."""

    @event.listens_for(engine, "connect")
    def _remember_pid(_dbapi_conn: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _check_pid(_dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            from sqlalchemy import exc

            record.dbapi_connection = proxy.dbapi_connection = None
            raise exc.DisconnectionError("connection belongs to a parent process")


def _retryable(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    if isinstance(exc, OperationalError) and ("locked" in text or "busy" in text):
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in {"40001", "40P01"}  # serialization failure, deadlock


def run_write(engine: Engine, fn: Callable[[Connection], T], *, attempts: int = 8,
              retry_integrity: bool = False) -> T:
    """Run ``fn(conn)`` in one write transaction, retrying lock/serialization conflicts.

    ``retry_integrity`` also retries unique-constraint races (for read-then-insert steps).
    """
    for attempt in range(attempts):
        try:
            with engine.connect() as conn:
                conn.execution_options(**{_WRITE_OPTION: True})
                with conn.begin():
                    return fn(conn)
        except IntegrityError:
            if not retry_integrity or attempt == attempts - 1:
                raise
        except DBAPIError as exc:
            if not _retryable(exc) or attempt == attempts - 1:
                raise
        time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def run_read(engine: Engine, fn: Callable[[Connection], T]) -> T:
    """Run ``fn(conn)`` in one read transaction (a consistent snapshot)."""
    with engine.connect() as conn, conn.begin():
        return fn(conn)
