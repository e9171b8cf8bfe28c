"""Typed records every archive client returns: what an archive offers, and what we downloaded."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ArchiveRecord", "DownloadedFile"]


class ArchiveRecord(BaseModel):
    """One downloadable item an archive offers (a product file, a cutout, a release image)."""

    archive: str  # "mast" | "hla" | "esahubble"
    id: str  # archive-unique id: MAST dataURI / HLA dataset+format / ESA image id
    obs_id: str | None = None
    title: str | None = None
    target: str | None = None
    ra: float | None = None  # deg, ICRS
    dec: float | None = None  # deg, ICRS
    instrument: str | None = None
    filters: list[str] = Field(default_factory=list)
    exposure_s: float | None = None
    date_obs: str | None = None  # ISO date(time)
    url: str  # what to download
    preview_url: str | None = None
    filename: str | None = None  # suggested (sanitised before use)
    size: int | None = None  # declared bytes, when the archive publishes it
    sha256: str | None = None  # published checksum, when the archive publishes one
    credit: str | None = None
    license: str | None = None
    release: str | None = None  # ESA release id (dedupe key)
    kind: str = "science"  # "science" (grey FITS) | "color" (colour release image) | "preview"
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.archive}:{self.id}"


class DownloadedFile(BaseModel):
    """A file on disk, verified: its size and sha256, and the record it came from."""

    record: ArchiveRecord
    path: Path
    size: int
    sha256: str
    verified_against: str  # "sha256" (published) | "size" (declared/Content-Length) | "none"
    downloaded_at: datetime
    skipped: bool = False  # True when an already-verified file was reused
