"""The files of a colour product composed from bands: PNG, 16-bit TIFF, RGB FITS cube with the WCS.

Every file carries the channels' records (which filter made which channel, which was inferred
and how), the shared stretch and the member frames; the FITS cube has them as keywords
(``CHANNELS``, ``CHAN_R``/``_G``/``_B``, ``INFERRED``, ``VISUAL``) beside the reference band's
WCS. A product with any inferred channel is labelled a visualisation, in every file.

Names are the one scheme's (``products.naming``): a field product, ``<field>_rgb.png`` / ``.tif``
/ ``.fits`` (:func:`~astro_pipeline.products.naming.field_product_path`). :func:`save_composed`
chooses the stem as ``products.save_products`` does for one frame (``naming.choose_stem``): where
another product or file owns one of those names, the stem takes a hash of the bands' inputs
(``<field>-<hash>_rgb.*``), so a composite never replaces another's file, nor an input band.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from astro_pipeline.composition.rgb import Composed
from astro_pipeline.fileio import StagedWrites
from astro_pipeline.jsondata import jsonable
from astro_pipeline.products.claims import FileOwner, Recorded, free_for
from astro_pipeline.products.naming import choose_stem, product_paths, safe_name
from astro_pipeline.products.types import FileKind, Operation, ProductFile
from astro_pipeline.products.writers import write_fits_cube, write_png, write_tiff

__all__ = ["composed_cards", "composed_kinds", "composed_meta", "composed_owner", "field_stem", "save_composed", "write_composed"]


def composed_meta(composed: Composed) -> dict[str, Any]:
    """The description embedded in every file of a composed product."""
    ref = composed.reference.frame
    prov = jsonable(dict(ref.provenance or {}))
    prov.setdefault("credit", None)
    prov.setdefault("license", None)
    return {
        "label": composed.label,
        "operation": "compose",
        "visualisation": composed.visualisation,
        "channels": composed.channels_text,
        "channels_detail": [c.as_dict() for c in composed.channels],
        "source_name": Path(str(ref.source_path)).name,
        "source_path": str(ref.source_path),
        "source_sha256": ref.source_sha256,
        "hdu": ref.hdu,
        "plane": ref.plane,
        "sources": [{"path": str(b.frame.source_path), "sha256": b.frame.source_sha256, "hdu": b.frame.hdu,
                     "plane": b.frame.plane, "filter": b.filter} for b in composed.bands],
        "provenance": prov,
        "stretch": composed.stretch.as_dict() if composed.stretch is not None else None,
        "colour_stretch": composed.colour_stretch.as_dict() if composed.colour_stretch is not None else None,
        "models": [m.as_dict() for m in composed.models],
        "credit": prov.get("credit"),
        "license": prov.get("license"),
    }


def composed_cards(composed: Composed) -> dict[str, tuple[Any, str]]:
    """The FITS keywords of a composed product: its channels, what was inferred, the shared stretch."""
    cards: dict[str, tuple[Any, str]] = {
        "CHANNELS": (composed.channels_text, "which filter made each channel, or how inferred"),
        "INFERRED": (bool(composed.inferred), "a channel was inferred, not observed"),
        "VISUAL": (composed.visualisation, "visualisation: shows more than the data"),
    }
    for c in composed.channels:
        if c.slot in ("R", "G", "B"):
            cards[f"CHAN_{c.slot}"] = (c.label.split(":", 1)[1][:60], f"{c.slot} plane of the cube")
        elif c.slot == "L":
            cards["CHAN_L"] = (c.label.split(":", 1)[1][:60], "band whose lightness was kept")
    st = composed.colour_stretch
    if st is not None:
        cards.update({"CSTRMETH": (st.method, "shared colour stretch"),
                      "CSTRMAX": (float(st.maximum), "white point, common unit, sky subtracted"),
                      "CSTRA": (float(st.asinh_a), "asinh knee as a fraction of CSTRMAX"),
                      "CSTRUNIT": (st.unit, "common flux unit (per-band: normalised)")})
    # a long value keeps its card to itself (a comment beside it would be cut, with a warning)
    return {k: (v, c if len(str(v)) + len(c) <= 60 else "") for k, (v, c) in cards.items()}


def composed_kinds(composed: Composed) -> list[FileKind]:
    """PNG and TIFF always; the RGB FITS cube for science bands or a WCS."""
    kinds = [FileKind.PNG, FileKind.TIF]
    if not composed.reference.frame.is_display or composed.wcs is not None:
        kinds.append(FileKind.FITS)
    return kinds


def composed_owner(composed: Composed) -> FileOwner:
    """The owner of a composite's files: ``compose`` of every band's input frame (``products.claims``)."""
    return FileOwner(str(Operation.COMPOSE),
                     frozenset((b.frame.source_sha256, b.frame.hdu, b.frame.plane) for b in composed.bands))


def field_stem(folder: Path | str, field: str) -> Path:
    """``folder/<field>``: the stem whose files are ``naming.field_product_path``'s ``<field>_rgb.*``."""
    return Path(folder) / safe_name(field)


def write_composed(composed: Composed, *, stem: Path) -> dict[str, ProductFile]:
    """Write the PNG, TIFF and (science bands) FITS cube under ``stem`` (``<stem>_rgb.*``), all or none;
    returns them by kind."""
    meta = composed_meta(composed)
    label = composed.label
    paths = product_paths(stem, composed_kinds(composed), operation=Operation.COMPOSE, scale=1)
    files: dict[FileKind, ProductFile] = {}
    with StagedWrites() as stage:
        files[FileKind.PNG] = write_png(paths[FileKind.PNG], composed.image, meta, label, stage=stage)
        files[FileKind.TIF] = write_tiff(paths[FileKind.TIF], composed.image, meta, label, stage=stage)
        if FileKind.FITS in paths:
            files[FileKind.FITS] = write_fits_cube(paths[FileKind.FITS], composed.image, meta, wcs=composed.wcs,
                                                   scale=1, label=label, operation=str(Operation.COMPOSE),
                                                   cards=composed_cards(composed), stage=stage)
    return {str(k): v for k, v in files.items()}


def save_composed(composed: Composed, *, stem: Path, recorded: Recorded | None = None,
                  protect: Collection[Path] = ()) -> dict[str, ProductFile]:
    """Write a composite's files under ``stem`` or, where another product or file owns one of those
    names, under ``<stem>-<hash of the bands' inputs>`` (``naming.choose_stem``); returns them by kind.

    The compose counterpart of ``products.save_products``: ``recorded`` is the catalog's side
    (``Catalog.file_owners``), ``protect`` the input bands' files, which are never written.
    """
    members = hashlib.sha256("\n".join(sorted(b.frame.source_sha256 for b in composed.bands)).encode()).hexdigest()
    inputs = {Path(str(b.frame.source_path)) for b in composed.bands if Path(str(b.frame.source_path)).is_file()}
    chosen = choose_stem(stem, kinds=composed_kinds(composed), operation=Operation.COMPOSE, scale=1,
                         content_sha256=members,
                         free=free_for(composed_owner(composed), recorded=recorded, protect={*protect, *inputs}))
    return write_composed(composed, stem=chosen)
