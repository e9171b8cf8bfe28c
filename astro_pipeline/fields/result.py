"""What the field step did with one field: its state, why, and what it wrote (``steps.field_run``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from astro_pipeline.products.types import ProductFile

__all__ = ["FieldResult", "FieldStatus"]


class FieldStatus(StrEnum):
    """A field's state in the catalog (``fields.status``)."""

    GROUPED = "grouped"  # found; no product yet
    REFUSED = "refused"  # over the memory limit: not aligned
    FAILED = "failed"  # fewer than two bands could be aligned, or composing failed
    COMPOSED = "composed"  # its products are written


@dataclass(kw_only=True)
class FieldResult:
    """One field of a run: key, name, filters, state, the reason where refused or failed, files written."""

    key: str
    name: str
    filters: list[str]
    status: FieldStatus
    field_id: int | None = None
    note: str | None = None
    left_out: list[str] = field(default_factory=list)  # members left out of the product, with why
    files: dict[str, ProductFile] = field(default_factory=dict)
    seconds: float = 0.0
