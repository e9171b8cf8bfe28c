"""The catalog: what came from where, what was made from it with which model, and what curators decided.

``Catalog`` is the entry point (SQLite WAL at ``<output>/catalog.sqlite`` by default, PostgreSQL by
URL). Tables live in ``tables.py``, schema versions in ``schema.py``, idempotent upserts (the typed
``Product`` writer) in ``writes.py``, queries in ``queries.py``, the review history in
``reviews.py``, the manifest (a pure function of catalog rows) in ``export.py``, the catalog run
around a CLI command in ``recording.py``, and the review page's sign-in sessions in ``sessions.py``.
"""

from __future__ import annotations

from astro_pipeline.catalog.db import CatalogError
from astro_pipeline.catalog.export import (
    catalog_manifest,
    export_cumulative_manifest,
    export_run_manifest,
    refresh_superseded_manifests,
)
from astro_pipeline.catalog.recording import RunRecorder, recording_run
from astro_pipeline.catalog.reviews import NotFoundError
from astro_pipeline.catalog.store import RUN_STATUSES, Catalog, RunStatus, new_run_id
from astro_pipeline.catalog.views import (
    DECISIONS,
    Decision,
    FrameFilter,
    FrameView,
    ManifestRow,
    ProductFileView,
    ProductView,
    ReviewEvent,
    ReviewSession,
    RunInfo,
    RunSummary,
)

__all__ = [
    "DECISIONS",
    "RUN_STATUSES",
    "Catalog",
    "CatalogError",
    "Decision",
    "FrameFilter",
    "FrameView",
    "ManifestRow",
    "NotFoundError",
    "ProductFileView",
    "ProductView",
    "ReviewEvent",
    "ReviewSession",
    "RunInfo",
    "RunRecorder",
    "RunStatus",
    "RunSummary",
    "catalog_manifest",
    "export_cumulative_manifest",
    "export_run_manifest",
    "refresh_superseded_manifests",
    "new_run_id",
    "recording_run",
]
