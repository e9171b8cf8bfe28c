"""What the field step did with one field: its state, why, and what it wrote (``steps.field_run``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from astro_pipeline.products.types import ModelRecord, Operation, ProductFile, ProductStatus

__all__ = ["FieldFileKind", "FieldProduct", "FieldResult", "FieldStatus"]


class FieldStatus(StrEnum):
    """A field's state in the catalog (``fields.status``)."""

    GROUPED = "grouped"  # found; no product yet
    REFUSED = "refused"  # over the memory limit: not aligned
    FAILED = "failed"  # fewer than two bands could be aligned, or composing failed
    COMPOSED = "composed"  # its products are written


class FieldFileKind(StrEnum):
    """The files of a field product (manifest columns ``<kind>_path``): the colour image on the
    field's grid, and its 4x version through the SR model."""

    PNG = "png"
    TIF = "tif"
    FITS = "fits"  # RGB cube with the reference WCS
    PNG_4X = "png_4x"
    TIF_4X = "tif_4x"
    FITS_4X = "fits_4x"  # RGB cube with the reference WCS scaled 4x


@dataclass(kw_only=True)
class FieldProduct:
    """One colour product of a field, as the catalog records it (``catalog.fields.record_field_product``).

    ``channels`` says which filter went to which channel (or how a channel was inferred), ``bands``
    the frames used (filter, frame key, input sha256, file name), ``notes`` the members left out
    and why.
    """

    key: str
    field_key: str
    field_name: str
    run_id: str | None
    operation: Operation
    status: ProductStatus
    error: str | None = None
    channels: dict[str, str] = field(default_factory=dict)
    bands: list[dict[str, Any]] = field(default_factory=list)
    models: tuple[ModelRecord, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    files: dict[str, ProductFile] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is ProductStatus.OK


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
    channels: str | None = None  # "R:F814W, G:inferred(mean), B:F606W" once composed
    seconds: float = 0.0
