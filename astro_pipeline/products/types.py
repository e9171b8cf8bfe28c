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

from astro_pipeline.fields.geometry import FrameGeometry, NoFootprint
from astro_pipeline.ingest.frame import QualityReport, StretchParams

__all__ = ["FRAME_OPERATIONS", "ChannelRecord", "ChannelSource", "FileKind", "ModelRecord", "Operation", "Product", "ProductFile",
           "ProductStatus", "channels_text"]


class Operation(StrEnum):
    """What is made from an input: colour at the same size, 4x super-resolution, or both; or colour
    composed from several bands of one field (``compose``: its inputs are in the product's channels)."""

    COLORIZE = "colorize"
    UPSCALE = "upscale"
    ENHANCE = "enhance"
    COMPOSE = "compose"

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


#: The operations that run on one frame at a time (the ``colorize``/``upscale``/``enhance`` commands).
FRAME_OPERATIONS: tuple[Operation, ...] = (Operation.COLORIZE, Operation.UPSCALE, Operation.ENHANCE)


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
class ChannelSource:
    """One band that went into a colour channel: which frame, which filter, how it was scaled.

    ``flux`` says how the band reached the common flux unit (``PHOTFNU``, ``PHOTFLAM``, ``BUNIT``),
    or why it could not and was normalised on its own (``per-band: <reason>``), or ``display`` for
    an 8-bit display image taken as it is; ``factor`` (native unit -> common unit), ``sky`` and
    ``noise`` (native units) reproduce the channel from the frame with the product's stretch.
    """

    filter: str | None
    pivot_nm: float | None
    weight: float
    source_path: str
    source_sha256: str
    hdu: int | None = None
    plane: int | None = None
    flux: str = ""
    factor: float | None = None
    sky: float | None = None
    noise: float | None = None

    @property
    def label(self) -> str:
        return self.filter or Path(self.source_path).name

    def as_dict(self) -> dict[str, Any]:
        return {"filter": self.filter, "pivot_nm": self.pivot_nm, "weight": self.weight,
                "source_path": self.source_path, "source_sha256": self.source_sha256, "hdu": self.hdu,
                "plane": self.plane, "flux": self.flux, "factor": self.factor, "sky": self.sky, "noise": self.noise}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelSource:
        def num(v: Any) -> float | None:
            return None if v is None else float(v)

        return cls(filter=d.get("filter"), pivot_nm=num(d.get("pivot_nm")), weight=float(d.get("weight", 1.0)),
                   source_path=str(d.get("source_path", "")), source_sha256=str(d.get("source_sha256", "")),
                   hdu=d.get("hdu"), plane=d.get("plane"), flux=str(d.get("flux") or ""), factor=num(d.get("factor")),
                   sky=num(d.get("sky")), noise=num(d.get("noise")))


@dataclass(frozen=True, kw_only=True)
class ChannelRecord:
    """Where one channel of a colour product came from: given bands, or inferred (and how).

    ``slot`` is ``R``, ``G`` or ``B`` (or ``L``: the band whose lightness a colorizer kept);
    ``inferred`` is None for a channel of real bands, else the method: ``mean`` (of the other two,
    HLA's rule), ``nearer`` (the nearer given band's values), ``model`` (a band-completion model) or
    ``colorizer`` (one band: the colorizer's chroma); ``model`` names the weights where one inferred it.
    """

    slot: str
    sources: tuple[ChannelSource, ...] = ()
    inferred: str | None = None
    from_slots: tuple[str, ...] = ()
    model: ModelRecord | None = None

    @property
    def label(self) -> str:
        """``R:F814W``, ``R:F775W+F814W``, ``G:inferred(mean)``, ``B:inferred(nearer G)``, ``G:inferred(bandcolor 1.2)``."""
        if self.inferred is None:
            return f"{self.slot}:{'+'.join(s.label for s in self.sources)}"
        if self.model is not None:
            how = f"{self.model.name} {self.model.version}".strip()
        elif self.inferred == "nearer" and self.from_slots:
            how = f"nearer {self.from_slots[0]}"
        else:
            how = self.inferred
        return f"{self.slot}:inferred({how})"

    def as_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "label": self.label, "inferred": self.inferred,
                "from_slots": list(self.from_slots), "model": self.model.as_dict() if self.model else None,
                "sources": [s.as_dict() for s in self.sources]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelRecord:
        return cls(slot=str(d["slot"]), sources=tuple(ChannelSource.from_dict(s) for s in d.get("sources") or []),
                   inferred=d.get("inferred"), from_slots=tuple(d.get("from_slots") or ()),
                   model=ModelRecord.from_dict(d["model"]) if d.get("model") else None)


def channels_text(channels: tuple[ChannelRecord, ...] | list[ChannelRecord]) -> str:
    """``R:F814W, G:inferred(mean), B:F435W``: the channels of a colour product, as the records say them."""
    return ", ".join(c.label for c in channels)


@dataclass(frozen=True, kw_only=True)
class ProductFile:
    """One written file: absolute path and sha256 of its bytes."""

    path: Path
    sha256: str


@dataclass(kw_only=True)
class Product:
    """Everything one input frame produced, or why it failed: the source of catalog and manifest rows.

    ``frame_key`` is None when no frame could be read (the file itself is bad), and for a
    ``compose`` product, which has several frames: ``source_*``/``hdu``/``plane`` then name its
    reference band and ``channels`` every band (which channel came from which filter, which was
    inferred). ``quality``, ``stretch``, ``notes`` and ``footprint`` (where it lies on the sky, for
    field grouping) describe the frame; ``metrics`` the product (lightness kept, time in the engines,
    output size, flux-block error); ``files`` maps a :class:`FileKind` to its file.
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
    footprint: FrameGeometry | NoFootprint | None = None  # linear science frames: grid and coverage, or why none
    tile_count: int = 0
    files: dict[str, ProductFile] = field(default_factory=dict)
    channels: tuple[ChannelRecord, ...] = ()  # compose: each channel's bands, or how it was inferred

    @property
    def ok(self) -> bool:
        return self.status is ProductStatus.OK

    @property
    def inferred_channels(self) -> list[str]:
        """Slots of the channels that no real band gave (``["G"]``); empty for frame products."""
        return [c.slot for c in self.channels if c.inferred is not None]

    @property
    def visualisation(self) -> bool:
        """True when the images show more than the data: an AI-made colour or 4x image, or any
        inferred channel. False only for a composite of real bands (display-stretched, still not photometry)."""
        if self.operation is Operation.COMPOSE:
            return bool(self.inferred_channels)
        return True

    @property
    def flag_names(self) -> list[str]:
        return self.quality.flag_names if self.quality is not None else []
