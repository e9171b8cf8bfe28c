"""The sweep's unit of work: a planned item (:class:`ItemPlan`) and what happened to it (:class:`ItemResult`).

The planner (``planning``) makes plans and the results of items it does not run (already done,
over budget); the item steps (``steps``) turn each plan into a result; the run report
(``run_report``) counts results by :class:`ItemStatus`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from astro_pipeline.archives.records import ArchiveRecord
from astro_pipeline.products.types import Operation, Product

__all__ = ["ItemPlan", "ItemResult", "ItemStatus", "PlanReason"]


class ItemStatus(StrEnum):
    """What happened to one item, in the order the summary reports them."""

    OK = "ok"  # every frame gave its products
    PARTIAL = "partial"  # some frames failed
    ERROR = "error"  # the file or every frame failed
    DOWNLOAD_FAILED = "download_failed"
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


@dataclass(kw_only=True)
class ItemResult:
    """What happened to one planned item, with its products and time per stage."""

    plan: ItemPlan
    status: ItemStatus
    error: str | None = None
    raw_path: str | None = None
    sha256: str | None = None
    size: int | None = None
    raw_deleted: bool = False
    products: list[Product] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    tiles: int = 0

    @property
    def key(self) -> str:
        return self.plan.key

    @property
    def record(self) -> ArchiveRecord:
        return self.plan.record

    @property
    def archive(self) -> str:
        return self.plan.record.archive

    @property
    def record_id(self) -> str:
        return self.plan.record.id

    @property
    def region(self) -> str:
        return self.plan.region

    @property
    def operation(self) -> Operation:
        return self.plan.operation

    @property
    def flags(self) -> list[str]:
        return sorted({name for p in self.products for name in p.flag_names})
