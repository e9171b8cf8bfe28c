"""The sweep's planner: which listings to ask for, and which listed items to fetch, in which order.

A flow asks :func:`listing_requests` what to list (one request per region and archive; an
archive without a position query once for the whole run), runs the listings (each a
:class:`Listing`: records, or why the archive could not be listed), then hands them to
:func:`plan_run`, which orders the items by region, drops duplicates (an item seen by an earlier
region keeps that region), skips what the catalog already holds for the current model versions,
admits the rest under the run's file and byte caps (:class:`RunBudget`), and reports each failed
listing as a ``list_failed`` item. A dry run is the plan alone: :meth:`RunPlan.dry_run_items`.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from astro_pipeline.archives.listing import WHOLE_LIST_ARCHIVES, in_region
from astro_pipeline.archives.records import ArchiveRecord
from astro_pipeline.config import Region, Settings
from astro_pipeline.items import ItemPlan, ItemResult, ItemStatus, PlanReason
from astro_pipeline.products.types import Operation

if TYPE_CHECKING:  # pragma: no cover
    from astro_pipeline.catalog import Catalog

__all__ = ["BudgetDecision", "Listing", "ListingRequest", "RunBudget", "RunPlan", "listing_requests",
           "operation_for", "plan_run"]


@dataclass(frozen=True, eq=False)
class ListingRequest:
    """One listing to run: ``archive`` around ``region``, or its whole list when ``region`` is None.

    Requests are equal (and hash) by archive and region name.
    """

    archive: str
    region: Region | None

    @property
    def name(self) -> str:
        return f"{self.archive}:{self.region.name if self.region is not None else '*'}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ListingRequest) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


@dataclass(frozen=True, kw_only=True)
class Listing:
    """What one listing request gave: its records, or (``error``) why the archive could not be listed."""

    request: ListingRequest
    records: list[ArchiveRecord] = field(default_factory=list)
    error: str | None = None


def listing_requests(regions: Sequence[Region]) -> list[ListingRequest]:
    """The listings a sweep of ``regions`` needs, each once, in region order."""
    out: list[ListingRequest] = []
    seen: set[tuple[str, str | None]] = set()
    for region in regions:
        for archive in region.archives:
            whole = archive in WHOLE_LIST_ARCHIVES
            key = (archive, None if whole else region.name)
            if key not in seen:
                seen.add(key)
                out.append(ListingRequest(archive, None if whole else region))
    return out


def operation_for(record: ArchiveRecord) -> Operation:
    """What the sweep makes from a record: grey science frames are colorized and upscaled
    (``enhance``); colour release images are upscaled only."""
    return Operation.UPSCALE if record.kind == "color" else Operation.ENHANCE


class BudgetDecision(NamedTuple):
    admitted: bool
    status: ItemStatus = ItemStatus.PLANNED
    reason: str = ""


class RunBudget:
    """Per-run caps on files and bytes, and a free-disk guard that stops a run cleanly.

    :meth:`admit` is called once per planned item, in order, before anything is fetched (declared
    sizes count against the byte cap). :meth:`disk_ok` is checked again right before each
    download and each product write, so a filling disk stops the run between items, never
    mid-file. Thread-safe, and picklable for Dask workers.
    """

    def __init__(
        self,
        *,
        max_files: int | None = None,
        max_bytes: int | None = None,
        min_free_bytes: int = 0,
        path: Path | None = None,
        disk_usage: Callable[[Path], Any] = shutil.disk_usage,
    ) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.path = Path(path) if path is not None else Path.cwd()
        self._disk_usage = disk_usage
        self.files = 0
        self.bytes = 0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RunBudget:
        return cls(max_files=settings.max_files_per_run, max_bytes=settings.max_bytes_per_run,
                   min_free_bytes=settings.min_free_disk_bytes, path=Path(settings.output_dir))

    def __getstate__(self) -> dict[str, Any]:  # the lock is not picklable
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def free_bytes(self) -> int:
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return int(self._disk_usage(probe).free)

    def disk_ok(self) -> BudgetDecision:
        free = self.free_bytes()
        if free < self.min_free_bytes:
            return BudgetDecision(
                False, ItemStatus.LOW_DISK,
                f"free disk {free / 1e9:.2f} GB under {self.path} is below the "
                f"{self.min_free_bytes / 1e9:.2f} GB minimum (min_free_disk_bytes)",
            )
        return BudgetDecision(True)

    def admit(self, record: ArchiveRecord) -> BudgetDecision:
        with self._lock:
            if self.max_files is not None and self.files >= self.max_files:
                return BudgetDecision(False, ItemStatus.OVER_BUDGET, f"max_files_per_run={self.max_files} reached")
            size = int(record.size or 0)
            if self.max_bytes is not None and self.bytes + size > self.max_bytes:
                return BudgetDecision(
                    False, ItemStatus.OVER_BUDGET,
                    f"max_bytes_per_run={self.max_bytes} would be exceeded ({self.bytes} + {size} bytes)",
                )
            self.files += 1
            self.bytes += size
            return BudgetDecision(True)


@dataclass(kw_only=True)
class RunPlan:
    """What a run will do: the admitted items in order, and the results of those it will not run."""

    admitted: list[ItemPlan]
    not_run: list[ItemResult] = field(default_factory=list)  # failed listings, already done, over budget
    order: dict[str, int] = field(default_factory=dict)  # item key -> position in the plan

    def dry_run_items(self) -> list[ItemResult]:
        """The plan as a dry run reports it: admitted items ``planned``, then the others."""
        return [ItemResult.of(p, ItemStatus.PLANNED) for p in self.admitted] + list(self.not_run)

    def sort(self, items: Iterable[ItemResult]) -> list[ItemResult]:
        """``items`` in plan order."""
        return sorted(items, key=lambda it: self.order.get(it.key, len(self.order)))


def plan_run(
    regions: Sequence[Region],
    listings: Iterable[Listing],
    *,
    catalog: Catalog | None,
    versions: Mapping[Operation, Mapping[str, str]] | None,
    budget: RunBudget,
    force: bool = False,
) -> RunPlan:
    """Order, dedupe, skip what is done, admit under the budget.

    An item is done when the catalog holds ok products of every frame of its input (known by the
    published sha256, or by the file fetched for it before) made by its operation with the
    current model ``versions``; without a catalog or versions (a dry run without weights) nothing
    is done. ``force`` plans everything again.
    """
    by_request = {listing.request: listing for listing in listings}
    plans: list[ItemPlan] = []
    failed: list[ItemResult] = []
    seen: set[str] = set()
    for region in regions:
        for archive in region.archives:
            request = ListingRequest(archive, None if archive in WHOLE_LIST_ARCHIVES else region)
            listing = by_request.get(request, Listing(request=request))
            if listing.error is not None:
                failed.append(ItemResult.listing_failed(archive, region.name, listing.error))
                continue
            for record in listing.records:
                if record.key in seen or (request.region is None and not in_region(record, region)):
                    continue
                seen.add(record.key)
                plans.append(_plan(record, region.name, catalog=catalog, versions=versions, force=force))
    out = RunPlan(admitted=[], not_run=failed, order={p.key: i for i, p in enumerate(plans)})
    for plan in plans:
        if plan.reason is PlanReason.DONE:
            out.not_run.append(ItemResult.of(plan, ItemStatus.ALREADY_DONE))
            continue
        decision = budget.admit(plan.record)
        if decision.admitted:
            out.admitted.append(plan)
        else:
            out.not_run.append(ItemResult.of(plan, decision.status, error=decision.reason))
    return out


def _plan(record: ArchiveRecord, region: str, *, catalog: Catalog | None,
          versions: Mapping[Operation, Mapping[str, str]] | None, force: bool) -> ItemPlan:
    op = operation_for(record)
    sha = record.sha256
    if catalog is not None and not sha:
        known = catalog.file_for_record(record.archive, record.id)
        sha = known["sha256"] if known else None
    if force:
        return ItemPlan(record=record, region=region, operation=op, reason=PlanReason.FORCE, known_sha256=sha)
    if catalog is not None and versions is not None and sha and catalog.is_done(sha, dict(versions[op]), None,
                                                                                 operation=op):
        return ItemPlan(record=record, region=region, operation=op, reason=PlanReason.DONE, known_sha256=sha)
    return ItemPlan(record=record, region=region, operation=op, known_sha256=sha)
