"""Record one CLI command or flow as a catalog run: downloads and products in, status and counts out.

``fetch`` and ``colorize``/``upscale``/``enhance`` commands wrap their work in ``recording_run`` so
the catalog (and ``astro-pipeline runs``) sees every run, not only sweeps::

    with recording_run("fetch-mast", {"ra": ra, "dec": dec}, settings=settings) as run:
        run.downloads(client.fetch(records, output))     # DownloadedFile | DownloadError items
        run.products(process_file(...))                   # Product items
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from astro_pipeline.catalog.store import Catalog

__all__ = ["RunRecorder", "recording_run"]


class RunRecorder:
    """Counts and records what one run fetched and made (see ``recording_run``)."""

    def __init__(self, catalog: Catalog, run_id: str) -> None:
        self.catalog = catalog
        self.run_id = run_id
        self.counts: Counter[str] = Counter()

    def records(self, records: Iterable[Any]) -> list[int]:
        """Record archive listings (what was offered)."""
        ids = self.catalog.upsert_records(records, run_id=self.run_id)
        self.counts["listed"] += len(ids)
        return ids

    def downloads(self, results: Iterable[Any]) -> list[Any]:
        """Record each ``DownloadedFile``; anything else (a ``DownloadError``) counts as failed."""
        items = list(results)
        for item in items:
            if hasattr(item, "sha256") and hasattr(item, "record"):
                self.catalog.upsert_file(item, run_id=self.run_id)
                self.counts["skipped_verified" if getattr(item, "skipped", False) else "downloaded"] += 1
                self.counts["bytes"] += int(item.size or 0)
            else:
                self.counts["download_failed"] += 1
        return items

    def products(self, products: Iterable[Any]) -> list[Any]:
        """Record products (with frames, flags and files) in one transaction."""
        items = list(products)
        for p in items:
            if getattr(p, "run_id", None) is None and hasattr(p, "run_id"):
                p.run_id = self.run_id
        self.catalog.record_products(items, run_id=self.run_id)
        for p in items:
            self.counts[f"products_{getattr(p, 'status', 'ok')}"] += 1
        return items

    @property
    def status(self) -> str:
        failed = self.counts["download_failed"] + self.counts["products_error"]
        return "completed_with_errors" if failed else "completed"


@contextmanager
def recording_run(flow: str, params: Mapping[str, Any] | None = None, *, settings: Any = None,
                  url: str | None = None, run_id: str | None = None) -> Iterator[RunRecorder]:
    """A catalog run around a block: "completed" (or "completed_with_errors") on success,
    "cancelled" on Ctrl-C, "failed" with the error on any other exception (which propagates)."""
    catalog = Catalog(url, settings=settings)
    try:
        recorder = RunRecorder(catalog, catalog.start_run(flow, params or {}, run_id=run_id))
        try:
            yield recorder
        except KeyboardInterrupt:
            catalog.finish_run(recorder.run_id, "cancelled", dict(recorder.counts), error="interrupted")
            raise
        except BaseException as exc:
            catalog.finish_run(recorder.run_id, "failed", dict(recorder.counts), error=f"{type(exc).__name__}: {exc}")
            raise
        catalog.finish_run(recorder.run_id, recorder.status, dict(recorder.counts))
    finally:
        catalog.close()
