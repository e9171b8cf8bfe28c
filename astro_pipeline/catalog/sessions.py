"""Review page sign-in sessions: created at sign-in, looked up per request, revoked at sign-out.

Functions take a ``Connection`` inside a transaction (``Catalog`` wraps them). Keys are stored
as their sha256 only; the caller hashes the cookie's random key.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select, update

from astro_pipeline.catalog import tables as t
from astro_pipeline.catalog.views import ReviewSession

__all__ = ["PRUNE_AFTER", "create_session", "find_session", "revoke_session"]

#: Expired or revoked sessions older than this are deleted when a new one is created.
PRUNE_AFTER = timedelta(days=30)


def create_session(conn: Connection, key_sha256: str, *, reviewer: str, token_sha256: str, csrf: str,
                   expires_at: datetime, client: str | None = None) -> int:
    """Record a new session (and drop long-dead ones); returns its row id."""
    now = t.utcnow()
    conn.execute(delete(t.review_sessions).where(t.review_sessions.c.expires_at < now - PRUNE_AFTER))
    return int(conn.execute(t.review_sessions.insert().values(
        key_sha256=key_sha256, reviewer=reviewer, token_sha256=token_sha256, csrf=csrf,
        client=(client or None) and client[:64], created_at=now, expires_at=expires_at,
    ).returning(t.review_sessions.c.id)).scalar_one())


def find_session(conn: Connection, key_sha256: str) -> ReviewSession | None:
    """The session with this key hash (revoked or expired ones too: the caller decides)."""
    row = conn.execute(select(t.review_sessions).where(t.review_sessions.c.key_sha256 == key_sha256)).first()
    if row is None:
        return None
    return ReviewSession(id=row.id, reviewer=row.reviewer, token_sha256=row.token_sha256, csrf=row.csrf,
                         client=row.client, created_at=row.created_at, expires_at=row.expires_at,
                         revoked_at=row.revoked_at)


def revoke_session(conn: Connection, key_sha256: str) -> bool:
    """Mark the session revoked (idempotent); False when no such session exists."""
    sessions = t.review_sessions
    found = conn.execute(select(sessions.c.id, sessions.c.revoked_at).where(sessions.c.key_sha256 == key_sha256)).first()
    if found is None:
        return False
    if found.revoked_at is None:
        conn.execute(update(sessions).where(sessions.c.id == found.id).values(revoked_at=t.utcnow()))
    return True
