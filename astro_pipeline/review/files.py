"""Files the review page reads for the browser: resolved inside the output folder, typed by their bytes.

The catalog records where products and inputs are, but whoever can write the output folder can
swap a file for a symlink to ``/etc/passwd`` or for something that is not an image. So a path is
resolved (symlinks followed) and must land inside the output folder; the file is opened without
following a final symlink, must be a regular file, and its media type comes from its magic bytes,
never from its name. The open handle is what gets streamed, so the checked file is the one sent.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["FileRefused", "ServedImage", "image_media_type", "open_image", "resolve_inside"]

_CHUNK = 256 * 1024
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class FileRefused(LookupError):
    """A file the page will not read for a browser; the message says why (without its real path)."""


def image_media_type(head: bytes) -> str | None:
    """The browser image type of a file from its first bytes (PNG, JPEG, GIF, WebP), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def resolve_inside(path: str | Path, root: str | Path, *, what: str) -> Path:
    """``path`` with every symlink resolved, if it exists and lies inside ``root``; else FileRefused."""
    try:
        real = Path(path).resolve(strict=True)
    except FileNotFoundError:
        raise FileRefused(f"{what} is no longer on disk") from None
    except (OSError, RuntimeError) as exc:  # a symlink loop, a component that is not a folder
        raise FileRefused(f"{what} cannot be resolved ({type(exc).__name__})") from None
    if not real.is_relative_to(Path(root).resolve()):
        raise FileRefused(f"{what} lies outside the output folder: not served")
    return real


@dataclass
class ServedImage:
    """An open, checked image file: its type from its bytes, its size, and a chunk iterator."""

    handle: BinaryIO
    media_type: str
    size: int

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes in chunks; closes the handle when done or abandoned."""
        try:
            while block := self.handle.read(_CHUNK):
                yield block
        finally:
            self.handle.close()


def open_image(path: str | Path, root: str | Path, *, what: str) -> ServedImage:
    """Open ``path`` for serving: inside ``root``, a regular file, and an image by its magic bytes."""
    real = resolve_inside(path, root, what=what)
    try:
        fd = os.open(real, os.O_RDONLY | _O_NOFOLLOW)
    except OSError as exc:
        raise FileRefused(f"{what} cannot be opened ({exc.strerror or type(exc).__name__})") from None
    handle = os.fdopen(fd, "rb")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{what} is not a regular file")
        media_type = image_media_type(handle.read(16))
        if media_type is None:
            raise FileRefused(f"{what} is not an image (no PNG, JPEG, GIF or WebP signature)")
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return ServedImage(handle=handle, media_type=media_type, size=st.st_size)
