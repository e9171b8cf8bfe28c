"""What the review pages show: plain view models, independent of how the catalog stores rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DECISIONS",
    "DECISION_LABELS",
    "STATUSES",
    "DecisionView",
    "FieldCard",
    "FlagView",
    "ImageView",
    "QueueFilters",
    "QueueItem",
    "QueuePage",
]

#: Decisions as the catalog stores them, and how the page names them.
DECISIONS: tuple[str, ...] = ("approved", "rejected", "needs_look")
DECISION_LABELS: dict[str, str] = {
    "approved": "approved",
    "rejected": "rejected",
    "needs_look": "needs another look",
}
#: Queue status filter: ``open`` = no decision yet or "needs another look".
STATUSES: tuple[str, ...] = ("open", "all", "undecided", *DECISIONS)


@dataclass(frozen=True)
class FlagView:
    """One quality flag: the measured value and the threshold it crossed."""

    name: str
    value: float | None
    threshold: float | None
    comparison: str = ""
    message: str = ""

    @property
    def text(self) -> str:
        """E.g. ``2.1 < 3`` (flagged because the value is below the threshold)."""
        if self.value is None:
            return ""
        value = _fmt(self.value)
        if self.threshold is None:
            return value
        return f"{value} {self.comparison or 'vs'} {_fmt(self.threshold)}"


@dataclass(frozen=True)
class ImageView:
    """One preview on the page, served by catalog id (never by path)."""

    role: str  # "input" | "color" | "sr"
    label: str
    url: str | None  # None: this product was not made (yet)
    note: str = ""


@dataclass(frozen=True)
class DecisionView:
    """The decision in force for a frame (the latest entry of its review history)."""

    decision: str
    note: str
    reviewer: str
    at: str  # ISO time

    @property
    def label(self) -> str:
        return DECISION_LABELS.get(self.decision, self.decision)

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "label": self.label, "note": self.note,
                "reviewer": self.reviewer, "at": self.at}


@dataclass
class QueueItem:
    """One flagged frame with its products, metadata, flags and current decision."""

    frame_id: int
    frame_key: str
    kind: str  # "science" (grey) | "color"
    archive: str
    obs_id: str
    title: str
    target: str
    instrument: str
    filter: str
    ra: float | None
    dec: float | None
    date_obs: str
    credit: str
    license: str
    run_id: str
    flagged_at: str
    flags: list[FlagView] = field(default_factory=list)
    images: list[ImageView] = field(default_factory=list)
    decision: DecisionView | None = None

    @property
    def position(self) -> str:
        if self.ra is None or self.dec is None:
            return ""
        return f"RA {self.ra:.5f}°, Dec {self.dec:+.5f}°"

    @property
    def is_open(self) -> bool:
        return self.decision is None or self.decision.decision == "needs_look"


@dataclass(frozen=True)
class QueueFilters:
    """The queue's filters (all optional). A sky region needs ra, dec and radius together."""

    flag: str = ""
    archive: str = ""
    run: str = ""
    ra: float | None = None
    dec: float | None = None
    radius: float | None = None  # degrees
    status: str = "open"

    @property
    def has_region(self) -> bool:
        return self.ra is not None and self.dec is not None and self.radius is not None

    def query_args(self) -> dict[str, str]:
        """The filters as URL query arguments (empty ones left out)."""
        out: dict[str, str] = {}
        for name in ("flag", "archive", "run"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        for name in ("ra", "dec", "radius"):
            value = getattr(self, name)
            if value is not None:
                out[name] = repr(value)
        if self.status != "open":
            out["status"] = self.status
        return out


@dataclass
class QueuePage:
    """One page of the queue plus the counts shown above it."""

    items: list[QueueItem]
    total: int  # flagged frames matching the filters (status included)
    left: int  # of the frames matching flag/archive/run/region: still open
    offset: int
    limit: int
    facets: dict[str, list[str]] = field(default_factory=dict)  # flag/archive/run choices


@dataclass(frozen=True)
class FieldCard:
    """A field product beside its member frames: the colour image, its channels, each frame's preview."""

    product_id: int
    name: str
    filters: list[str]
    channels: str  # "R:F160W, G:F606W, B:F435W"
    status: str
    run_id: str
    position: str
    grid: str  # "96 x 96 px at 0.050\"/px"
    image: ImageView  # the colour product on the field's grid
    image_4x: ImageView | None
    members: list[ImageView]  # each member frame, labelled with filter, channel and role
    notes: list[str] = field(default_factory=list)


def _fmt(x: float) -> str:
    if x != x:  # NaN
        return "NaN"
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.4g}"
    return f"{x:.3e}"
