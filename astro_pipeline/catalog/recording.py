"""Record one CLI command as a catalog run: listings, downloads and processed inputs in, counts out.

``fetch`` and ``colorize``/``upscale``/``enhance`` commands wrap their work in ``recording_run`` so
the catalog (and ``astro-pipeline runs``) sees every run, not only sweeps::

    with recording_run("fetch-mast", {"ra": ra, "dec": dec}, settings=settings) as run:
        run.downloads(client.fetch(records, output))     # DownloadedFile | DownloadError items
        run.inputs([processing.process_input(...)])       # or the processing path records itself
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from astro_pipeline.archives.download import DownloadError
from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
from astro_pipeline.catalog.store import Catalog, RunStatus
from astro_pipeline.config import Settings
from astro_pipeline.products.process import ProcessedInput

__all__ = ["RunRecorder", "recording_run"]


class RunRecorder:
    """Counts and records what one run fetched and made (see ``recording_run``)."""

    def __init__(self, catalog: Catalog, run_id: str) -> None:
        self.catalog = catalog
        self.run_id = run_id
        self.counts: Counter[str] = Counter()

    def records(self, records: Iterable[ArchiveRecord]) -> list[int]:
        """Record archive listings (what was offered)."""
        ids = self.catalog.upsert_records(records, run_id=self.run_id)
        self.counts["listed"] += len(ids)
        return ids

    def downloads(self, results: Iterable[DownloadedFile | DownloadError]) -> list[DownloadedFile | DownloadError]:
        """Record each ``DownloadedFile``; each ``DownloadError`` counts as failed."""
        items = list(results)
        for item in items:
            if isinstance(item, DownloadedFile):
                self.catalog.upsert_file(item, run_id=self.run_id)
                self.counts["skipped_verified" if item.skipped else "downloaded"] += 1
                self.counts["bytes"] += int(item.size or 0)
            else:
                self.counts["download_failed"] += 1
        return items

    def count(self, processed: ProcessedInput) -> None:
        """Count an input the processing path has recorded (products by status)."""
        for p in processed.products:
            self.counts[f"products_{p.status}"] += 1

    def inputs(self, processed: Iterable[ProcessedInput]) -> list[ProcessedInput]:
        """Record processed inputs (files, frames, products) and count their products."""
        items = list(processed)
        for item in items:
            self.catalog.record_input(item, run_id=self.run_id)
            self.count(item)
        return items

    @property
    def status(self) -> RunStatus:
        failed = self.counts["download_failed"] + self.counts["products_error"]
        return RunStatus.COMPLETED_WITH_ERRORS if failed else RunStatus.COMPLETED


@contextmanager
def recording_run(flow: str, params: Mapping[str, Any] | None = None, *, settings: Settings | None = None,
                  url: str | None = None, run_id: str | None = None) -> Iterator[RunRecorder]:
    """A catalog run (at ``url``, or the catalog ``settings`` name) around a block: "completed" (or
    "completed_with_errors") on success, "cancelled" on Ctrl-C, "failed" with the error on any other
    exception (which propagates)."""
    catalog = Catalog(url, settings=settings)
    try:
        recorder = RunRecorder(catalog, catalog.start_run(flow, params or {}, run_id=run_id))
        try:
            yield recorder
        except KeyboardInterrupt:
            catalog.finish_run(recorder.run_id, RunStatus.CANCELLED, dict(recorder.counts), error="interrupted")
            raise
        except BaseException as exc:
            catalog.finish_run(recorder.run_id, RunStatus.FAILED, dict(recorder.counts),
                               error=f"{type(exc).__name__}: {exc}")
            raise
        catalog.finish_run(recorder.run_id, recorder.status, dict(recorder.counts))
    finally:
        catalog.close()
