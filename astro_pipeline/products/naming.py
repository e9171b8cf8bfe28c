"""Where products go and what their files are called: the one naming scheme of every product.

A name says what a file is: the input's stem, the frame (multi-frame files), the operation and
the scale. A product mirrors its input's path relative to an input root under the output folder,
without the input's extension, plus a frame suffix (``_<hdu>``, ``_p<plane>``): the *stem*
(:func:`output_stem`). Each file then adds the operation's tag and its own ending
(:func:`product_path`); fields (composites of several inputs) are named for the field
(:func:`field_product_path`, :func:`composite_path`):

=======================  ==============================================================
colorize                 ``<stem>_color.png`` / ``.tif`` / ``.fits`` (RGB cube, FITS inputs)
upscale (4x)             ``<stem>_x4.png`` / ``.tif`` / ``.fits``; ``<stem>_flux_x4.fits``
enhance (colour, 4x)     ``<stem>_color_x4.png`` / ``.tif`` / ``.fits``;
                         ``<stem>_color_x4_colorstep.png`` (its colour step, at the input size)
field product            ``<field>_rgb.png`` / ``.tif`` / ``.fits``; ``<field>_rgb_x4.*`` at 4x
Lupton baseline          ``<field>_<bluest>_<middle>_<reddest>_lupton.png``
=======================  ==============================================================

Two operations never share a name. Two inputs can still want one (``a/x.fits`` and ``b/x.fits``
into one folder, or ``a_color.png`` upscaled beside ``a.png`` enhanced): :func:`choose_stem` then
adds the input's content hash to the stem (``<stem>-<sha256[:8]>``), so a product never replaces a
file that another product owns (``products.claims`` says who owns a file).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from astro_pipeline.ingest.readers import IMAGE_SUFFIXES
from astro_pipeline.products.types import FileKind, Operation

__all__ = [
    "ProductNameError",
    "choose_composite_path",
    "choose_stem",
    "composite_path",
    "field_product_path",
    "operation_tag",
    "output_stem",
    "product_path",
    "product_paths",
    "safe_name",
    "strip_image_suffix",
]

_LONGEST_FIRST = sorted(IMAGE_SUFFIXES, key=len, reverse=True)
#: What each operation made, before the scale (``_x4``): upscale's display keeps the input's look.
_CONTENT = {"colorize": "color", "upscale": "", "enhance": "color", "compose": "rgb"}
#: File endings per kind, after ``<stem>_<tag>``.
_EXTENSIONS: dict[FileKind, str] = {FileKind.PNG: ".png", FileKind.TIF: ".tif", FileKind.FITS: ".fits"}
#: Lengths of the content-hash disambiguator tried in turn (the full hash last).
_HASH_LENGTHS = (8, 16, 64)


class ProductNameError(ValueError):
    """No name is free for a product (every candidate is owned by another product or file)."""


def strip_image_suffix(name: str) -> str:
    """``m101_drz.fits.gz`` -> ``m101_drz``: the name without any image extension this project reads."""
    low = name.lower()
    for suffix in _LONGEST_FIRST:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def safe_name(text: str) -> str:
    """``NGC 5457`` -> ``NGC_5457``: letters, digits, ``.``, ``_`` and ``-`` only (field names, filters)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "field"


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


def operation_tag(operation: Operation | str, scale: int) -> str:
    """``color``, ``x4``, ``color_x4``, ``rgb``: what an operation made at this scale."""
    content = _CONTENT[str(operation)]
    size = f"x{int(scale)}" if int(scale) != 1 else ""
    return "_".join(part for part in (content, size) if part) or "x1"


def product_path(stem: Path, kind: FileKind | str, *, operation: Operation | str, scale: int) -> Path:
    """The file of ``kind`` for a product stem: ``<stem>_<tag>.png``, ``<stem>_flux_x4.fits``, ..."""
    kind = FileKind(kind)
    tag = operation_tag(operation, scale)
    if kind is FileKind.FITS_FLUX:
        ending = f"_flux_x{int(scale)}.fits"
    elif kind is FileKind.COLORIZED:
        ending = f"_{tag}_colorstep.png"
    elif kind in _EXTENSIONS:
        ending = f"_{tag}{_EXTENSIONS[kind]}"
    else:
        raise ValueError(f"{kind} files are not named after one input (see composite_path)")
    return stem.with_name(stem.name + ending)


def product_paths(stem: Path, kinds: Iterable[FileKind | str], *, operation: Operation | str,
                  scale: int) -> dict[FileKind, Path]:
    """:func:`product_path` for several kinds."""
    return {FileKind(k): product_path(stem, k, operation=operation, scale=scale) for k in kinds}


def choose_stem(stem: Path, *, kinds: Sequence[FileKind | str], operation: Operation | str, scale: int,
                content_sha256: str, free: Callable[[Iterable[Path]], bool]) -> Path:
    """``stem``, or ``<stem>-<content hash>`` when another product or file owns one of its files.

    ``free(paths)`` says whether this product may write all of ``paths`` (``claims.free_for``).
    The hash is the input's, so a rerun finds the same name again; 8 hex digits, then 16, then 64.
    """
    candidates = [stem]
    if content_sha256:
        candidates += [stem.with_name(f"{stem.name}-{content_sha256[:n]}") for n in _HASH_LENGTHS]
    for candidate in candidates:
        if free(product_paths(candidate, kinds, operation=operation, scale=scale).values()):
            return candidate
    raise ProductNameError(f"{product_path(stem, kinds[0], operation=operation, scale=scale)}: every name for this "
                           "product belongs to another product or file; choose another --output")


def field_product_path(folder: Path, field: str, kind: FileKind | str, *, scale: int = 1) -> Path:
    """A field's product from several inputs (``compose``): ``folder/<field>_rgb[_x4].<ext>``."""
    if FileKind(kind) not in _EXTENSIONS:
        raise ValueError(f"a field product has no {kind} file")
    return product_path(Path(folder) / safe_name(field), kind, operation="compose", scale=scale)


def composite_path(folder: Path, field: str, filters: Sequence[str], *, token: str = "") -> Path:
    """``folder/<field>_<filter>_..._lupton.png`` for a field's same-grid Lupton composite (bluest first);
    ``<field>-<token>_...`` with a disambiguating ``token``."""
    name = safe_name(field) + (f"-{token}" if token else "")
    return Path(folder) / f"{name}_{'_'.join(safe_name(f).lower() for f in filters)}_lupton.png"


def choose_composite_path(folder: Path, field: str, filters: Sequence[str], *, members_sha256: Sequence[str],
                          free: Callable[[Iterable[Path]], bool]) -> Path:
    """:func:`composite_path`, or with a hash of its members' inputs when another composite owns that name."""
    token = hashlib.sha256("\n".join(sorted(members_sha256)).encode()).hexdigest()
    for candidate in [composite_path(folder, field, filters),
                      *(composite_path(folder, field, filters, token=token[:n]) for n in _HASH_LENGTHS)]:
        if free([candidate]):
            return candidate
    raise ProductNameError(f"{composite_path(folder, field, filters)}: every name for this composite is taken")
