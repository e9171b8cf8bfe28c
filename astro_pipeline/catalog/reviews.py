"""Curator reviews: an append-only history per frame. Undo appends a row that reverses one decision.

The current decision of a frame is its latest decision that no undo row points at, so undo
steps back through history and nothing is ever deleted or overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, exists, select

from astro_pipeline.catalog import tables as t
from astro_pipeline.catalog.db import CatalogError
from astro_pipeline.catalog.views import DECISIONS, Decision, ReviewEvent

__all__ = ["NotFoundError", "add_reviews", "current_decision", "review_history", "undo_review"]


class NotFoundError(CatalogError, LookupError):
    """A catalog id that does not exist."""


def _check(decision: str, reviewer: str) -> None:
    if decision not in DECISIONS:
        raise ValueError(f"unknown review decision {decision!r}; use one of {', '.join(DECISIONS)}")
    if not reviewer or not reviewer.strip():
        raise ValueError("a review needs a reviewer name")


def add_reviews(conn: Connection, frame_ids: Sequence[int], decision: str, note: str | None,
                reviewer: str) -> list[int]:
    """Append one decision per frame (all or none); returns the new review ids."""
    _check(decision, reviewer)
    ids = list(dict.fromkeys(int(f) for f in frame_ids))
    found = {row[0] for row in conn.execute(select(t.frames.c.id).where(t.frames.c.id.in_(ids)))} if ids else set()
    missing = [f for f in ids if f not in found]
    if missing:
        raise NotFoundError(f"no frame with id {', '.join(map(str, missing))} in the catalog")
    now = t.utcnow()
    out: list[int] = []
    for fid in ids:
        out.append(conn.execute(t.reviews.insert().values(
            frame_id=fid, action="decision", decision=decision, note=(note or None), reviewer=reviewer.strip(),
            created_at=now).returning(t.reviews.c.id)).scalar_one())
    return out


def _latest_effective(conn: Connection, frame_id: int) -> int | None:
    r, undo = t.reviews, t.reviews.alias("undo")
    return conn.execute(
        select(r.c.id).where(r.c.frame_id == frame_id, r.c.action == "decision",
                             ~exists().where(undo.c.undoes_id == r.c.id))
        .order_by(r.c.id.desc()).limit(1)).scalar()


def undo_review(conn: Connection, frame_id: int, reviewer: str) -> int | None:
    """Reverse the frame's current decision; returns the id of the decision undone, or None."""
    if not reviewer or not reviewer.strip():
        raise ValueError("an undo needs a reviewer name")
    target = _latest_effective(conn, frame_id)
    if target is None:
        return None
    conn.execute(t.reviews.insert().values(frame_id=frame_id, action="undo", decision=None, note=None,
                                           reviewer=reviewer.strip(), created_at=t.utcnow(), undoes_id=target))
    return int(target)


def current_decision(conn: Connection, frame_id: int) -> Decision | None:
    target = _latest_effective(conn, frame_id)
    if target is None:
        return None
    row = conn.execute(select(t.reviews).where(t.reviews.c.id == target)).one()
    return Decision(review_id=row.id, decision=row.decision, note=row.note, reviewer=row.reviewer,
                    at=row.created_at)


def review_history(conn: Connection, frame_id: int) -> list[ReviewEvent]:
    """Every review row of the frame, oldest first, each decision marked if it was undone."""
    rows = list(conn.execute(select(t.reviews).where(t.reviews.c.frame_id == frame_id).order_by(t.reviews.c.id)))
    undone = {row.undoes_id for row in rows if row.undoes_id is not None}
    return [ReviewEvent(id=row.id, frame_id=row.frame_id, action=row.action, decision=row.decision, note=row.note,
                        reviewer=row.reviewer, at=row.created_at, undoes_id=row.undoes_id, undone=row.id in undone)
            for row in rows]
