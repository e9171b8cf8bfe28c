"""Read-only views the catalog's queries return: frames with flags and products, manifest rows, runs, reviews."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from astro_pipeline.products.types import Product

__all__ = [
    "DECISIONS",
    "Decision",
    "FieldMemberView",
    "FieldProductView",
    "FieldView",
    "FrameFilter",
    "FrameView",
    "ManifestRow",
    "ProductFileView",
    "ProductView",
    "ReviewEvent",
    "ReviewSession",
    "RunInfo",
    "RunSummary",
]

#: Curator decisions, in the order the review page offers them.
DECISIONS: tuple[str, ...] = ("approved", "rejected", "needs_look")


@dataclass(frozen=True, kw_only=True)
class ProductFileView:
    """One written product file, addressable by catalog id (the review page serves it by id)."""

    id: int
    kind: str
    path: str
    sha256: str | None


@dataclass(frozen=True, kw_only=True)
class ProductView:
    id: int
    run_id: str | None
    operation: str
    status: str
    error: str | None
    models: list[dict[str, Any]]
    params: dict[str, Any]
    tile_count: int | None
    updated_at: datetime
    files: dict[str, ProductFileView]
    superseded_by: int | None = None  # the product that replaced this one's files (its files may have changed)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """A frame's current curator decision (the latest one not undone)."""

    review_id: int
    decision: str
    note: str | None
    reviewer: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class ReviewEvent:
    """One row of a frame's append-only review history."""

    id: int
    frame_id: int
    action: str  # "decision" | "undo"
    decision: str | None
    note: str | None
    reviewer: str
    at: datetime
    undoes_id: int | None
    undone: bool  # a later undo reversed this decision


@dataclass(frozen=True, kw_only=True)
class ReviewSession:
    """A review page sign-in as the catalog keeps it (the key itself is never stored)."""

    id: int
    reviewer: str
    token_sha256: str
    csrf: str
    client: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class FrameView:
    """A frame with where it came from, its quality flags, products and curator decision."""

    frame_id: int
    frame_key: str
    hdu: int | None
    plane: int | None
    kind: str  # "grey" | "color"
    file_id: int
    sha256: str
    raw_path: str  # the downloaded/input file; may be gone after retention
    archive: str | None
    archive_id: str | None
    obs_id: str | None
    title: str | None
    target: str | None
    instrument: str | None
    filter: str | None
    ra: float | None
    dec: float | None
    date_obs: str | None
    credit: str | None
    license: str | None
    source_url: str | None
    preview_url: str | None
    flags: list[dict[str, Any]]  # {"name","value","threshold","comparison","message"}
    metrics: dict[str, float | None]
    stretch: dict[str, Any] | None
    provenance: dict[str, Any]
    decision: Decision | None
    products: list[ProductView]
    updated_at: datetime
    last_run_id: str | None
    release: str | None = None  # ESA/Hubble release id of colour images (a natural training group)
    notes: list[str] = field(default_factory=list)  # the reader's notes on the frame

    @property
    def path(self) -> str:
        """The input file (``raw_path``): what training reads."""
        return self.raw_path

    @property
    def flag_names(self) -> list[str]:
        return [f["name"] for f in self.flags]

    @property
    def raw_exists(self) -> bool:
        return Path(self.raw_path).is_file()

    def product_paths(self, operation: str | None = None) -> dict[str, str]:
        """``{kind: path}`` of the current ok products (of one operation, if given)."""
        out: dict[str, str] = {}
        for p in self.products:
            if p.status == "ok" and p.superseded_by is None and (operation is None or p.operation == operation):
                out.update({k: f.path for k, f in p.files.items()})
        return out


@dataclass(frozen=True, kw_only=True)
class FieldMemberView:
    """One frame of a field: which file, which filter, what it does in the field's product, and why."""

    frame_id: int
    product_id: int | None
    frame_key: str
    sha256: str
    raw_path: str
    archive: str | None
    instrument: str | None
    filter: str
    exptime: float | None
    role: str  # band | shallower | off_reference | failed
    overlap: float | None
    coverage: float | None
    note: str | None
    reference: bool


@dataclass(frozen=True, kw_only=True)
class FieldView:
    """A field as the catalog records it: its reference grid (shape, WCS cards), members and state."""

    id: int
    key: str
    name: str
    grid: dict[str, Any]
    pixel_scale_arcsec: float | None
    ra: float | None
    dec: float | None
    filters: list[str]
    status: str
    note: str | None
    reference_frame_id: int | None
    first_seen: datetime
    updated_at: datetime
    last_run_id: str | None
    members: list[FieldMemberView]

    @property
    def reference_wcs(self) -> dict[str, Any]:
        """The reference grid's WCS as FITS cards."""
        return dict(self.grid.get("wcs") or {})

    @property
    def bands(self) -> dict[str, FieldMemberView]:
        return {m.filter: m for m in self.members if m.role == "band"}


@dataclass(frozen=True, kw_only=True)
class FieldProductView:
    """A field's colour product as recorded: its field (grid, members), channels, band frames and files."""

    id: int
    key: str
    field: FieldView
    run_id: str | None
    operation: str
    status: str
    error: str | None
    channels: dict[str, str]
    bands: list[dict[str, Any]]
    models: list[dict[str, Any]]
    params: dict[str, Any]
    metrics: dict[str, Any]
    notes: list[str]
    attempts: int
    created_at: datetime
    updated_at: datetime
    files: dict[str, ProductFileView]
    superseded_by: int | None = None  # the field product that wrote this one's files again (None: current)
    superseded_at: datetime | None = None

    @property
    def channels_text(self) -> str:
        """``R:F160W, G:F606W, B:F435W``: which filter made each channel, red first."""
        return ", ".join(f"{k}:{self.channels[k]}" for k in ("R", "G", "B") if k in self.channels)


@dataclass(kw_only=True)
class FrameFilter:
    """Which frames a query returns. ``decision`` is a decision name, ``"undecided"`` or None (any)."""

    flag: str | None = None
    archive: str | None = None
    run_id: str | None = None
    ra: float | None = None
    dec: float | None = None
    radius_deg: float | None = None
    decision: str | None = None
    kind: str | None = None
    flagged_only: bool = True
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        region = (self.ra, self.dec, self.radius_deg)
        if any(v is not None for v in region) and any(v is None for v in region):
            raise ValueError("a sky region needs all of ra, dec and radius_deg")
        if self.radius_deg is not None and self.radius_deg <= 0:
            raise ValueError(f"radius_deg must be positive, got {self.radius_deg}")
        if self.decision not in (None, "undecided", *DECISIONS):
            raise ValueError(f"unknown decision filter {self.decision!r}; use undecided or one of {DECISIONS}")


@dataclass(frozen=True, kw_only=True)
class ManifestRow:
    """One product as the catalog knows it: the typed product, where its input came from, its review.

    ``target`` .. ``license`` are the archive record's (position: the frame's WCS centre first),
    None where the catalog has no record; ``raw_deleted`` is True when retention deleted the input.
    """

    product: Product
    product_id: int
    frame_id: int | None
    created_at: datetime
    updated_at: datetime
    archive: str | None = None
    archive_id: str | None = None
    obs_id: str | None = None
    source_url: str | None = None
    title: str | None = None
    filters: list[str] = field(default_factory=list)
    target: str | None = None
    ra: float | None = None
    dec: float | None = None
    date_obs: str | None = None
    instrument: str | None = None
    credit: str | None = None
    license: str | None = None
    raw_path: str = ""
    raw_deleted: bool = False
    review: Decision | None = None
    superseded_by: int | None = None  # the product whose files replaced this one's (None: current)
    superseded_at: datetime | None = None
    field_id: int | None = None  # the newest field the frame is a member of
    field_name: str | None = None
    field_note: str | None = None  # why the frame is in no field


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    id: str
    flow: str
    params: dict[str, Any]
    status: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, Any]
    error: str | None
    host: str | None
    pid: int | None

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def display_status(self) -> str:
        """``status``, except a "running" run whose process on this host is gone shows "died"."""
        if (self.status == "running" and self.pid and self.host == socket.gethostname()
                and not _pid_alive(self.pid)):
            return "died"
        return self.status


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """What one run made: products per status and operation, flags raised, errors."""

    run: RunInfo
    products_by_status: dict[str, int]
    products_by_operation: dict[str, int]
    flags: dict[str, int]
    frames: int
    files: int
    tiles: int
    errors: list[tuple[str, str]] = field(default_factory=list)  # (source path, error)
