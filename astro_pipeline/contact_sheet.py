"""A before/after contact sheet of a run: each row an input's display stretch beside its product."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from astro_pipeline.items import ItemResult
from astro_pipeline.products.types import FileKind, Product

__all__ = ["round_robin", "write_contact_sheet"]


def round_robin(items: Sequence[ItemResult]) -> list[Product]:
    """Products interleaved across archives and regions, so the contact sheet shows a bit of each."""
    groups: dict[tuple[str, str], list[Product]] = {}
    for it in items:
        groups.setdefault((it.archive, it.region), []).extend(it.products)
    queues = list(groups.values())
    out: list[Product] = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def write_contact_sheet(products: Sequence[Product], path: Path, *, max_image_pixels: int, max_items: int = 12,
                        thumb: int = 192) -> bool:
    """A before/after PNG: each row the input's display stretch next to the product preview.

    Reads the inputs, so it runs before retention. Returns False (and writes nothing) when no
    product has a PNG preview and a readable input.
    """
    from PIL import Image

    from astro_pipeline.fileio import atomic_write

    rows: list[tuple[Image.Image, Image.Image]] = []
    for product in products:
        if len(rows) >= max_items:
            break
        if not product.ok or FileKind.PNG not in product.files:
            continue
        before = _before_image(product, thumb, max_image_pixels)
        if before is None:
            continue
        after = Image.open(product.files[FileKind.PNG].path).convert("RGB")
        after.thumbnail((thumb, thumb))
        rows.append((before, after))
    if not rows:
        return False
    pad = 4
    sheet = Image.new("RGB", (2 * thumb + 3 * pad, len(rows) * (thumb + pad) + pad), (24, 24, 24))
    for i, (b, a) in enumerate(rows):
        y = pad + i * (thumb + pad)
        sheet.paste(b, (pad, y))
        sheet.paste(a, (2 * pad + thumb, y))
    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))
    return True


def _before_image(product: Product, thumb: int, max_image_pixels: int) -> object | None:
    """The input frame's display stretch (as the product recorded it), as a thumbnail."""
    import numpy as np
    from PIL import Image

    from astro_pipeline.ingest.frame import IngestError
    from astro_pipeline.ingest.readers import read_frames
    from astro_pipeline.ingest.stretch import display_image

    try:
        frames = read_frames(Path(product.source_path), max_image_pixels=max_image_pixels)
    except (IngestError, OSError):
        return None
    frame = next((f for f in frames if f.hdu == product.hdu and f.plane == product.plane), frames[0] if frames else None)
    if frame is None:
        return None
    img, _ = display_image(frame)
    arr = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(arr).convert("RGB")
    im.thumbnail((thumb, thumb))
    return im
