"""The product contract: what one input frame produced, typed from the engines to the catalog.

A :class:`Product` is the one record every step hands on: the processing path builds it, the
catalog writer takes it (``catalog.writes.record_product``), the manifest is rebuilt from it, and
the Python API returns it. Nested records are typed too: the frame's quality (``QualityReport``
with its ``Flag`` s), its display stretch (``StretchParams``), the models that made it
(:class:`ModelRecord`) and the reader's notes about the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from astro_pipeline.ingest.frame import QualityReport, StretchParams

__all__ = ["FileKind", "ModelRecord", "Operation", "Product", "ProductFile", "ProductStatus"]


class Operation(StrEnum):
    """What is made from an input: colour at the same size, 4x super-resolution, or both."""

    COLORIZE = "colorize"
    UPSCALE = "upscale"
    ENHANCE = "enhance"

    @property
    def colorizes(self) -> bool:
        return self in (Operation.COLORIZE, Operation.ENHANCE)

    @property
    def upscales(self) -> bool:
        return self in (Operation.UPSCALE, Operation.ENHANCE)

    @property
    def model_tasks(self) -> tuple[str, ...]:
        """The weights tasks (``WeightsMeta.task``) this operation runs, in order."""
        return (("colorize",) if self.colorizes else ()) + (("superres",) if self.upscales else ())


class ProductStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


class FileKind(StrEnum):
    """The files a product may have (manifest columns ``<kind>_path`` / ``<kind>_sha256``)."""

    PNG = "png"  # 8-bit preview of the result
    TIF = "tif"  # 16-bit TIFF of the result
    FITS = "fits"  # float RGB cube with the (scaled) WCS, FITS inputs only
    FITS_FLUX = "fits_flux"  # flux-conserving linear 4x FITS (upscale of science FITS)
    COLORIZED = "colorized"  # enhance: the same-size colour step
    LUPTON = "lupton"  # classical make_lupton_rgb composite of three filters (shared by the members)


@dataclass(frozen=True, kw_only=True)
class ModelRecord:
    """Which weights made a product: the catalog's notion of "the same models"."""

    name: str
    version: str
    sha256: str = ""
    arch: str = ""

    @classmethod
    def from_meta(cls, meta: Any) -> ModelRecord:
        """From a ``WeightsMeta``."""
        return cls(name=str(meta.name), version=str(meta.version), sha256=str(getattr(meta, "sha256", "") or ""),
                   arch=str(meta.arch))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelRecord:
        return cls(name=str(d["name"]), version=str(d.get("version", "")), sha256=str(d.get("sha256") or ""),
                   arch=str(d.get("arch") or ""))

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "arch": self.arch}


@dataclass(frozen=True, kw_only=True)
class ProductFile:
    """One written file: absolute path and sha256 of its bytes."""

    path: Path
    sha256: str


@dataclass(kw_only=True)
class Product:
    """Everything one input frame produced, or why it failed: the source of catalog and manifest rows.

    ``frame_key`` is None when no frame could be read (the file itself is bad); ``quality``,
    ``stretch`` and ``notes`` describe the frame; ``metrics`` the product (lightness kept, time in
    the engines, output size, flux-block error); ``files`` maps a :class:`FileKind` to its file.
    """

    run_id: str | None
    source_path: str
    source_sha256: str
    hdu: int | None
    plane: int | None
    frame_key: str | None
    operation: Operation
    status: ProductStatus
    error: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # header facts: target, filter, ra, dec, ...
    quality: QualityReport | None = None
    stretch: StretchParams | None = None
    models: tuple[ModelRecord, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # how the engines ran (tile size, precision, ...)
    metrics: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # the reader's notes on the frame ("WCS unreadable: ...")
    tile_count: int = 0
    files: dict[str, ProductFile] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is ProductStatus.OK

    @property
    def flag_names(self) -> list[str]:
        return self.quality.flag_names if self.quality is not None else []
