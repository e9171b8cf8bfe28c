"""The types that move through ingestion: ``Frame``, ``StretchParams``, ``Flag``, ``QualityReport``.

A Frame is one science image (a FITS SCI extension or primary, a plane of a cube, or a
display image from PNG/JPEG/TIF), with a validity mask and everything needed to trace it
back to its source file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Flag", "Frame", "ImageGeometry", "IngestError", "QualityReport", "StretchParams"]


class IngestError(Exception):
    """A file that cannot be read as an image. The message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True, kw_only=True)
class ImageGeometry:
    """One image of a file as its header declares it, before any pixel is read.

    What a memory estimate needs: ``planes`` frames of ``height x width`` pixels with ``channels``
    samples each (1 grey, 3 colour), decoded from ``source_bytes_per_sample`` bytes per sample,
    read with ``aux_images`` same-size companion images (WHT, DQ). ``label`` names it in messages.
    """

    label: str
    height: int
    width: int
    planes: int = 1
    channels: int = 1
    source_bytes_per_sample: int = 4
    aux_images: int = 0

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def describe(self) -> str:
        planes = f" x {self.planes} planes" if self.planes > 1 else ""
        return f"{self.label} ({self.width}x{self.height}{planes})"


@dataclass
class Frame:
    """One image plane with its validity mask, WCS and provenance.

    ``data`` is float32 in native byte order: (H, W) for grey science/display frames, or
    (H, W, 3) for colour display images (sRGB values in [0, 1]). ``mask`` is (H, W) bool,
    True where the pixel is valid. ``is_display`` marks 8/16-bit display images (PNG, JPEG,
    integer TIF), which are never stretched; science frames (FITS, float TIF) are linear.
    """

    data: np.ndarray
    mask: np.ndarray
    source_path: Path
    source_sha256: str
    format: str  # "fits" | "tiff" | "png" | "jpeg"
    hdu: int | None = None
    plane: int | None = None
    n_frames_in_file: int = 1
    wcs: Any | None = None  # astropy.wcs.WCS (celestial) or None
    header: Any | None = None  # astropy.io.fits.Header of the science HDU, FITS only
    provenance: dict[str, Any] = field(default_factory=dict)
    is_display: bool = False
    saturated: np.ndarray | None = None  # (H, W) bool from DQ flags, where known
    notes: list[str] = field(default_factory=list)  # e.g. "alpha channel dropped"

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.data.shape[0]), int(self.data.shape[1])

    @property
    def is_color(self) -> bool:
        return self.data.ndim == 3

    @property
    def suffix(self) -> str:
        """Product-name suffix: ``""`` for single-frame files, else ``_<hdu>`` / ``_p<plane>``."""
        if self.n_frames_in_file <= 1:
            return ""
        parts = []
        if self.hdu is not None:
            parts.append(str(self.hdu))
        if self.plane is not None:
            parts.append(f"p{self.plane}")
        return "_" + "_".join(parts) if parts else ""

    @property
    def key(self) -> str:
        """Identifies the frame within its file, e.g. ``x.fits[1]`` or ``cube.fits[0,p2]``."""
        loc = ",".join(
            s for s in (
                str(self.hdu) if self.hdu is not None else "",
                f"p{self.plane}" if self.plane is not None else "",
            ) if s
        )
        return f"{self.source_path}[{loc}]" if loc else str(self.source_path)


@dataclass(frozen=True)
class StretchParams:
    """A recorded display stretch: limits, then asinh. Enough to reproduce a product exactly."""

    method: str  # "zscale+asinh" | "percentile+asinh" | "none"
    vmin: float
    vmax: float
    asinh_a: float = 0.1
    percentiles: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "vmin": float(self.vmin),
            "vmax": float(self.vmax),
            "asinh_a": float(self.asinh_a),
            "percentiles": list(self.percentiles) if self.percentiles else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StretchParams:
        pct = d.get("percentiles")
        return cls(method=str(d["method"]), vmin=float(d["vmin"]), vmax=float(d["vmax"]),
                   asinh_a=float(d.get("asinh_a", 0.1)), percentiles=(float(pct[0]), float(pct[1])) if pct else None)


@dataclass(frozen=True)
class Flag:
    """A named quality flag with the value that tripped it and the threshold it crossed."""

    name: str
    value: float
    threshold: float
    comparison: str  # ">" : flagged when value > threshold; "<" : flagged when value < threshold
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": float(self.value),
            "threshold": float(self.threshold),
            "comparison": self.comparison,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Flag:
        return cls(name=str(d["name"]), value=float(d["value"]), threshold=float(d["threshold"]),
                   comparison=str(d["comparison"]), message=str(d.get("message") or ""))


@dataclass
class QualityReport:
    """Quality metrics of one frame and the flags they raised."""

    metrics: dict[str, float | None]
    flags: list[Flag] = field(default_factory=list)

    @property
    def flag_names(self) -> list[str]:
        return [f.name for f in self.flags]

    def as_dict(self) -> dict[str, Any]:
        return {
            "metrics": {k: (None if v is None else float(v)) for k, v in self.metrics.items()},
            "flags": [f.as_dict() for f in self.flags],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QualityReport:
        return cls(metrics={str(k): (None if v is None else float(v)) for k, v in (d.get("metrics") or {}).items()},
                   flags=[Flag.from_dict(f) for f in d.get("flags") or []])
