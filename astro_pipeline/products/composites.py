"""Classical colour baseline: ``make_lupton_rgb`` composites of three filters of one field on one grid.

Where the products of three or more filters of one field (same target, or same position) share
a pixel grid, the bluest, middle and reddest filters become B, G and R of a Lupton et al. (2004)
composite, written beside the first member's products and shared by all three. Filters are
ordered by the project's one wavelength rule (``astro_pipeline.filters``: F160W is 1600 nm, the
reddest), relative to each other: a classical false-colour baseline, unlike ``compose``, which
slots bands by absolute wavelength. Frames on different grids are left alone (aligning them is
the field-colour work's job).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astro_pipeline.composition.bands import grid_mismatch
from astro_pipeline.ingest.frame import Frame
from astro_pipeline.products.claims import FileOwner, Recorded, free_for
from astro_pipeline.products.naming import choose_composite_path, output_stem
from astro_pipeline.products.types import FileKind, Product, ProductFile
from astro_pipeline.products.writers import write_png

__all__ = ["Composite", "filter_of", "write_lupton_composites"]

LABEL = "classical make_lupton_rgb composite (Lupton et al. 2004), not AI-generated"


@dataclass(frozen=True, kw_only=True)
class Composite:
    """One written composite: its file, which filter went to which channel, and its member products."""

    file: ProductFile
    filters: dict[str, str]  # {"R": ..., "G": ..., "B": ...}
    members: tuple[Product, ...]  # blue, green, red


def filter_of(product: Product) -> str | None:
    """The filter of a product: from the header provenance, else from the file name (``filters.parse_filter``)."""
    from astro_pipeline.filters import parse_filter

    return parse_filter((product.provenance or {}).get("filter")) or parse_filter(Path(product.source_path).name)


def _wavelength(product: Product, filt: str) -> float:
    from astro_pipeline.filters import wavelength_order

    return wavelength_order(filt, instrument=(product.provenance or {}).get("instrument"))


def _field_key(product: Product) -> str | None:
    prov = product.provenance or {}
    target = prov.get("target")
    if target and str(target).strip().upper() not in ("ANY", "NONE", ""):
        return f"target:{str(target).strip().upper()}"
    ra, dec = prov.get("ra"), prov.get("dec")
    if ra is None or dec is None:
        return None
    return f"pos:{round(float(ra), 3)}:{round(float(dec), 3)}"


def _normalised_plane(member: Product, max_image_pixels: int) -> tuple[np.ndarray, Frame] | None:
    """The member's frame, sky-subtracted and scaled to its 99.5th percentile; None if unreadable."""
    from astro_pipeline.ingest.frame import IngestError
    from astro_pipeline.ingest.readers import read_frames

    try:
        frames = [f for f in read_frames(member.source_path, max_image_pixels=max_image_pixels)
                  if f.hdu == member.hdu and f.plane == member.plane]
    except (IngestError, OSError):  # the raw input is gone (retention) or changed
        return None
    if not frames:
        return None
    fr = frames[0]
    data = np.where(fr.mask & np.isfinite(fr.data), fr.data, np.nan).astype(np.float64)
    if not np.isfinite(data).any():
        return None
    med = float(np.nanmedian(data))
    top = float(np.nanpercentile(data, 99.5))
    span = top - med if top > med else 1.0
    return np.nan_to_num((data - med) / span, nan=0.0), fr


def write_lupton_composites(products: Iterable[Product], *, max_image_pixels: int,
                            output_dir: Path | str | None = None, input_root: Path | str | None = None,
                            Q: float = 8.0, stretch: float = 0.5,
                            recorded: Recorded | None = None) -> list[Composite]:
    """For each field with three or more filters among the ok FITS products, write a composite.

    The composite goes beside the first member's PNG (or, with ``output_dir``, where that member's
    products would go under it, relative to ``input_root``), named by ``naming.composite_path``;
    a name another composite owns (``recorded``: the catalog's owners of paths) gets a hash of the
    members' inputs. Members are read from their inputs, so inputs that are gone are skipped.
    """
    from astropy.visualization import make_lupton_rgb

    groups: dict[str, dict[str, Product]] = {}
    for p in products:
        if not p.ok or FileKind.FITS not in p.files:
            continue
        key, filt = _field_key(p), filter_of(p)
        if key is None or filt is None:
            continue
        groups.setdefault(key, {}).setdefault(filt, p)
    written: list[Composite] = []
    for key, by_filter in sorted(groups.items()):
        if len(by_filter) < 3:
            continue
        filters = sorted(by_filter, key=lambda f: (_wavelength(by_filter[f], f), f))
        chosen = [filters[0], filters[len(filters) // 2], filters[-1]]
        members = tuple(by_filter[f] for f in chosen)
        read = [_normalised_plane(m, max_image_pixels) for m in members]
        if any(r is None for r in read):
            continue
        planes = [r[0] for r in read if r is not None]
        if grid_mismatch([r[1] for r in read if r is not None]) is not None:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 where all three planes are 0
            rgb = make_lupton_rgb(planes[2], planes[1], planes[0], minimum=0.0, stretch=stretch, Q=Q)
        first = members[0]
        if output_dir is not None:
            folder = output_stem(Path(first.source_path), input_root=Path(input_root) if input_root else None,
                                 output_dir=Path(output_dir)).parent
        else:
            folder = Path((first.files.get(FileKind.PNG) or first.files[FileKind.FITS]).path).parent
        meta = {
            "label": LABEL,
            "operation": str(FileKind.LUPTON),
            "filters": {"R": chosen[2], "G": chosen[1], "B": chosen[0]},
            "Q": Q,
            "stretch": stretch,
            "sources": [{"path": m.source_path, "sha256": m.source_sha256, "hdu": m.hdu, "plane": m.plane}
                        for m in members],
        }
        owner = FileOwner(str(FileKind.LUPTON), frozenset((m.source_sha256, m.hdu, m.plane) for m in members))
        path = choose_composite_path(folder, key.split(":", 1)[1], chosen,
                                     members_sha256=[m.source_sha256 for m in members],
                                     free=free_for(owner, recorded=recorded))
        pf = write_png(path, rgb.astype(np.float32) / 255.0, meta, LABEL)
        written.append(Composite(file=pf, filters=meta["filters"], members=members))
    return written
