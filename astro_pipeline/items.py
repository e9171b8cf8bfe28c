"""The sweep's unit of work: a planned item (:class:`ItemPlan`) and what happened to it (:class:`ItemResult`).

The planner (``planning``) makes plans and the results of items it does not run (already done,
over budget); the item steps (``steps``) turn each plan into a result; the run report
(``run_report``) counts results by :class:`ItemStatus`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from astro_pipeline.archives.records import ArchiveRecord
from astro_pipeline.products.types import Operation, Product

__all__ = ["ItemPlan", "ItemResult", "ItemStatus", "PlanReason"]


class ItemStatus(StrEnum):
    """What happened to one item, in the order the summary reports them."""

    OK = "ok"  # every frame gave its products
    PARTIAL = "partial"  # some frames failed
    ERROR = "error"  # the file or every frame failed
    DOWNLOAD_FAILED = "download_failed"
    LIST_FAILED = "list_failed"  # an archive could not be listed for a region (the item is that listing)
    ALREADY_DONE = "already_done"  # the planner found it done: not fetched
    SKIPPED_DONE = "skipped_done"  # found done by content hash after the (reused) download
    OVER_BUDGET = "over_budget"  # max_files_per_run / max_bytes_per_run
    LOW_DISK = "low_disk"  # min_free_disk_bytes
    PLANNED = "planned"  # a dry run's item


class PlanReason(StrEnum):
    NEW = "new"  # the catalog lacks its products
    FORCE = "force"  # redone on request
    DONE = "done"  # the catalog holds its products (not run)


@dataclass(frozen=True, kw_only=True)
class ItemPlan:
    """One record the run intends to fetch and process (or found done)."""

    record: ArchiveRecord
    region: str
    operation: Operation
    reason: PlanReason = PlanReason.NEW
    known_sha256: str | None = None  # the content hash the catalog already knows for the record

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def label(self) -> str:
        """A short name for people: the record's file name, else its id."""
        return self.record.filename or self.record.id


@dataclass(kw_only=True)
class ItemResult:
    """What happened to one item, with its products and time per stage.

    An item is a planned record (:meth:`of`), or an archive listing that failed (:meth:`listing_failed`:
    no record, no operation).
    """

    key: str
    archive: str
    record_id: str
    region: str
    status: ItemStatus
    operation: Operation | None = None
    record: ArchiveRecord | None = None
    error: str | None = None
    raw_path: str | None = None
    sha256: str | None = None  # the input's content hash, where known
    size: int | None = None
    raw_deleted: bool = False
    products: list[Product] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    tiles: int = 0

    @classmethod
    def of(cls, plan: ItemPlan, status: ItemStatus, **fields: Any) -> ItemResult:
        """The result of a planned item (``sha256`` defaults to what the catalog knew of it)."""
        fields.setdefault("sha256", plan.known_sha256)
        return cls(key=plan.key, archive=plan.record.archive, record_id=plan.record.id, region=plan.region,
                   status=status, operation=plan.operation, record=plan.record, **fields)

    @classmethod
    def listing_failed(cls, archive: str, region: str, error: str) -> ItemResult:
        """An archive that could not be listed for a region (after the listing's own retries)."""
        return cls(key=f"list:{region}:{archive}", archive=archive, record_id="(listing)", region=region,
                   status=ItemStatus.LIST_FAILED, error=error)

    @property
    def label(self) -> str:
        """A short name for people: the record's file name, else its id (as ``ItemPlan.label``)."""
        return (self.record.filename or self.record.id) if self.record is not None else self.record_id

    @property
    def flags(self) -> list[str]:
        return sorted({name for p in self.products for name in p.flag_names})
