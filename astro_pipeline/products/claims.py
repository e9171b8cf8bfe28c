"""Who owns a product file, so that no product replaces a file that another product records.

A file's owner (:class:`FileOwner`) is the operation that made it and the input frames it came
from. Two things say who owns a path: the catalog's records (the products whose files include it,
passed in as ``recorded``, e.g. ``Catalog.file_owners``) and, for a file no record names, the
provenance every writer embeds in its files (PNG text, TIFF description, FITS keywords), read
back by :func:`embedded_owner`. :func:`free_for` allows a set of paths when each is missing or
already the owner's own: a rerun of the same operation on the same input finds its files its
own, anything else (another operation, another input, a file of the user's) is left alone and
``naming.choose_stem`` picks another name. A folder at a path claims nothing: writing there fails,
naming the path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FileOwner", "Recorded", "Source", "embedded_owner", "free_for"]

#: One input frame: (input sha256, HDU, plane).
Source = tuple[str, int | None, int | None]

#: The catalog's side: the owners its records give each path (paths it does not record are absent).
Recorded = Callable[[Sequence[Path]], Mapping[Path, Sequence["FileOwner"]]]


@dataclass(frozen=True)
class FileOwner:
    """What made a file: an operation (``colorize``, ``upscale``, ``enhance``, ``lupton``...) and its input frames."""

    operation: str
    sources: frozenset[Source]

    @classmethod
    def of_frame(cls, operation: str, sha256: str, hdu: int | None, plane: int | None) -> FileOwner:
        return cls(str(operation), frozenset({(sha256, hdu, plane)}))

    def covers(self, other: FileOwner) -> bool:
        """True when ``other`` is this owner's own (same operation, its inputs among this owner's)."""
        return other.operation == self.operation and other.sources <= self.sources


def _index(value: Any) -> int | None:
    return None if value is None or int(value) < 0 else int(value)


def _from_meta(meta: Mapping[str, Any]) -> FileOwner | None:
    """The owner a writer's description names (``products.process._file_meta``, composites' ``sources``)."""
    op = meta.get("operation")
    if not op:
        return None
    if isinstance(meta.get("sources"), list):
        return FileOwner(str(op), frozenset((str(s.get("sha256") or ""), _index(s.get("hdu")), _index(s.get("plane")))
                                            for s in meta["sources"]))
    if not meta.get("source_sha256"):
        return None
    return FileOwner.of_frame(str(op), str(meta["source_sha256"]), _index(meta.get("hdu")), _index(meta.get("plane")))


def embedded_owner(path: Path) -> FileOwner | None:
    """The owner a product file names in its own metadata; None for files this project did not write."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:  # text chunks come before the image data: no pixels are read
                return _from_meta(json.loads(str(im.info.get("Comment") or "{}")))
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return _from_meta(dict(json.loads(tif.pages[0].description or "{}")).get("provenance") or {})
        if suffix == ".fits":
            from astropy.io import fits

            hdr = fits.getheader(path)
            op = str(hdr.get("PRODUCT", "")).removesuffix("-flux")
            if not op or "SRCSHA" not in hdr:
                return None
            return FileOwner.of_frame(op, str(hdr["SRCSHA"]), _index(hdr.get("SRCHDU")), _index(hdr.get("SRCPLANE")))
    except Exception:  # noqa: BLE001 - unreadable or foreign: not a product of ours
        return None
    return None


def free_for(owner: FileOwner, *, recorded: Recorded | None = None,
             protect: Collection[Path] = ()) -> Callable[[Iterable[Path]], bool]:
    """A check for ``naming.choose_stem``: may ``owner`` write all of these paths?

    A path is free when no record and no existing file says it is someone else's: the records
    (``recorded``) decide for the paths they name; a file they do not name is ``owner``'s only if
    its embedded provenance says so. ``protect`` (the input itself) is never free.
    """
    protected = {Path(p).resolve() for p in protect}

    def check(paths: Iterable[Path]) -> bool:
        wanted = [Path(p).resolve() for p in paths]
        if any(p in protected for p in wanted):
            return False
        records = recorded(wanted) if recorded is not None else {}
        for path in wanted:
            owners = records.get(path)
            if owners:
                if not all(owner.covers(o) for o in owners):
                    return False
            elif (path.is_file() or path.is_symlink()) and not path.is_dir():
                found = embedded_owner(path)
                if found is None or not owner.covers(found):
                    return False
        return True

    return check
