"""Pluggable training-data sources: each is a callable returning the images it offers.

A source returns :class:`TrainingItem` records (path, kind, group, sha256). ``kind`` is "color"
(trains both models) or "grey" (trains SR only). ``group`` is what the train/validation split
keys on: the ESA release id for Hubble colour images, so crops of one mosaic never straddle the
split. Sources are named by short strings on the CLI and in flows: ``hubble`` (the shared 327
ESA/Hubble images), ``folder:PATH`` (any folder of colour images), ``approved[:KIND]`` (items a
curator approved in the catalog; imported lazily).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astro_pipeline.fileio import sha256_file

__all__ = [
    "TrainingItem",
    "Source",
    "FolderSource",
    "ApprovedSource",
    "parse_source",
    "collect_items",
    "split_by_group",
    "training_data_hash",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
Source = Callable[[], list["TrainingItem"]]


@dataclass(frozen=True)
class TrainingItem:
    """One training image: where it is, what it trains, which split group it belongs to."""

    path: Path
    kind: str  # "color" | "grey"
    group: str  # split key (ESA release id, or the file stem)
    sha256: str


class FolderSource:
    """All colour images in a folder (recursively). A ``CREDITS.csv`` beside or above the images
    (columns ``file``, ``release``, optional ``sha256``) supplies the release group of each file."""

    def __init__(self, root: str | Path, *, kind: str = "color") -> None:
        self.root = Path(root)
        self.kind = kind
        self.name = f"folder:{self.root}"

    def _credits(self) -> dict[str, dict[str, str]]:
        for cand in (self.root / "CREDITS.csv", self.root.parent / "CREDITS.csv"):
            if cand.is_file():
                with open(cand, newline="") as fh:
                    return {Path(r["file"]).name: r for r in csv.DictReader(fh)}
        return {}

    def __call__(self) -> list[TrainingItem]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: training image folder does not exist")
        credits = self._credits()
        items = []
        for path in sorted(self.root.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith(".") or not path.is_file():
                continue
            row = credits.get(path.name, {})
            group = row.get("release") or path.stem
            items.append(TrainingItem(path=path, kind=self.kind, group=group, sha256=row.get("sha256") or sha256_file(path)))
        if not items:
            raise FileNotFoundError(f"{self.root}: no training images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
        return items


class ApprovedSource:
    """Curator-approved items from the catalog (``Catalog.approved_items(kind)``), imported lazily.

    Accepts items as objects or dicts with a ``path`` (and optionally ``sha256``, ``release`` or
    ``group``); colour items train both models, grey frames train SR only.
    """

    def __init__(self, kind: str = "color", *, catalog_url: str | None = None) -> None:
        self.kind = kind
        self.catalog_url = catalog_url
        self.name = f"approved:{kind}"

    def __call__(self) -> list[TrainingItem]:
        from astro_pipeline.catalog import Catalog  # lazy: the catalog is optional for training

        catalog = Catalog(self.catalog_url)
        out = []
        for it in catalog.approved_items(self.kind):
            get: Callable[[str], Any] = (it.get if isinstance(it, dict) else lambda k, _it=it: getattr(_it, k, None))
            path = Path(str(get("path")))
            if not path.is_file():
                continue
            group = str(get("release") or get("group") or get("field") or path.stem)
            out.append(TrainingItem(path=path, kind=self.kind, group=group, sha256=str(get("sha256") or sha256_file(path))))
        return out


def parse_source(spec: str) -> Source:
    """``hubble`` | ``folder:PATH`` | ``approved`` | ``approved:grey`` | a bare folder path."""
    if spec == "hubble":
        from astro_pipeline.config import shared_dir

        return FolderSource(shared_dir() / "data" / "hubble_color" / "train")
    if spec.startswith("folder:"):
        return FolderSource(spec.split(":", 1)[1])
    if spec == "approved" or spec.startswith("approved:"):
        kind = spec.split(":", 1)[1] if ":" in spec else "color"
        if kind not in ("color", "grey"):
            raise ValueError(f"approved source kind must be color or grey, got {kind!r}")
        return ApprovedSource(kind)
    if Path(spec).is_dir():
        return FolderSource(spec)
    raise ValueError(f"unknown training source {spec!r} (use hubble, folder:PATH, approved[:color|grey])")


def collect_items(sources: list[Source | str]) -> list[TrainingItem]:
    """All items of all sources, de-duplicated by sha256, in a deterministic order."""
    seen: dict[str, TrainingItem] = {}
    for src in sources:
        fn = parse_source(src) if isinstance(src, str) else src
        for item in fn():
            seen.setdefault(item.sha256, item)
    return sorted(seen.values(), key=lambda i: (i.group, i.path.name, i.sha256))


def split_by_group(items: list[TrainingItem], *, val_fraction: float = 0.12, salt: str = "astro-val-v1") -> tuple[list[TrainingItem], list[TrainingItem]]:
    """Deterministic train/validation split by group: a group goes to validation when the hash of
    its name falls under ``val_fraction``. Never splits a group (an ESA release) across the two."""
    train, val = [], []
    for item in items:
        h = int(hashlib.sha256(f"{salt}:{item.group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (val if h < val_fraction else train).append(item)
    return train, val


def training_data_hash(items: list[TrainingItem], recipe: dict[str, Any]) -> str:
    """sha256 over the sorted training-file hashes plus the recipe JSON (sorted keys)."""
    import json

    h = hashlib.sha256()
    for digest in sorted(i.sha256 for i in items):
        h.update(digest.encode())
    h.update(json.dumps(recipe, sort_keys=True, default=str).encode())
    return h.hexdigest()
