"""Where products go and what their files are called: one place for the naming scheme.

A product mirrors its input's path relative to an input root under the output folder, without
the input's extension, plus a frame suffix for multi-frame files (``_<hdu>``, ``_p<plane>``);
each file kind then adds its own ending (:func:`product_path`). A field's composite is named for
the field and its filters (:func:`composite_path`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from astro_pipeline.ingest.readers import IMAGE_SUFFIXES
from astro_pipeline.products.types import FileKind

__all__ = ["composite_path", "output_stem", "product_path", "strip_image_suffix"]

#: File-name endings per kind, after the product stem.
_ENDINGS: dict[FileKind, str] = {
    FileKind.PNG: ".png",
    FileKind.TIF: ".tif",
    FileKind.FITS: ".fits",
    FileKind.FITS_FLUX: "_flux.fits",
    FileKind.COLORIZED: "_color.png",
}
_LONGEST_FIRST = sorted(IMAGE_SUFFIXES, key=len, reverse=True)


def strip_image_suffix(name: str) -> str:
    """``m101_drz.fits.gz`` -> ``m101_drz``: the name without any image extension this project reads."""
    low = name.lower()
    for suffix in _LONGEST_FIRST:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def output_stem(source: Path, *, input_root: Path | None, output_dir: Path, suffix: str = "") -> Path:
    """``output_dir / <source relative to input_root, extension stripped><suffix>`` (no extension)."""
    source = Path(source)
    rel_parent = Path()
    if input_root is not None:
        try:
            rel_parent = source.resolve().parent.relative_to(Path(input_root).resolve())
        except ValueError:
            rel_parent = Path()
    return Path(output_dir) / rel_parent / (strip_image_suffix(source.name) + suffix)


def product_path(stem: Path, kind: FileKind) -> Path:
    """The file of ``kind`` for a product stem (``stem.png``, ``stem_flux.fits``, ...)."""
    return stem.with_name(stem.name + _ENDINGS[kind])


def composite_path(folder: Path, field: str, filters: Sequence[str]) -> Path:
    """``folder/<field>_<filter>_..._lupton.png`` for a field's same-grid composite (bluest filter first)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", field)
    return Path(folder) / f"{safe}_{'_'.join(f.lower() for f in filters)}_lupton.png"
