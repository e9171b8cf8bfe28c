"""File helpers every writer shares: streamed sha256, and atomic writes with ordinary permissions.

Why: a reader (a rerun, the review page, a user) must never see half a file, so every file is
written under a hidden temporary name in its own folder and renamed into place with ``os.replace``.
The temporary file is created with mode ``0o666`` filtered by the process umask (``0644`` under
umask 022), as ``open()`` would, not the ``0600`` of :func:`tempfile.mkstemp`: the rename keeps the
mode, and products are meant to be read by others.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["CHUNK", "StagedWrites", "atomic_write", "atomic_write_bytes", "atomic_write_text", "create_temp",
           "sha256_file"]

#: Bytes read (or written) at a time when streaming a file.
CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, streamed (constant memory whatever the size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def create_temp(folder: Path, name: str, suffix: str = ".tmp") -> Path:
    """Create an empty hidden file ``folder/.<name>.<random><suffix>`` with the umask's permissions."""
    for _ in range(100):
        tmp = Path(folder) / f".{name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name for {name} in {folder}")  # pragma: no cover


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], None], *, suffix: str | None = None,
                 durable: bool = False) -> Path:
    """Call ``writer(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The temporary name ends in ``.tmp`` plus ``path``'s own extension (``suffix`` overrides it), so
    writers that look at the extension behave. ``durable`` flushes the bytes to disk before the
    rename (state a resume depends on after a power loss, not only after a kill). On any failure the
    temporary file is removed and the old ``path``, if any, is left as it was. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp(path.parent, path.name, suffix if suffix is not None else ".tmp" + path.suffix)
    try:
        writer(tmp)
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class StagedWrites:
    """Several files that land together or not at all: each is written under a temporary name
    beside its destination, and all are renamed into place on :meth:`commit` (or when the
    ``with`` block ends without an error); on an error every temporary file is removed and the
    destinations are left as they were.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def write(self, path: str | os.PathLike[str], writer: Callable[[Path], None], *, suffix: str | None = None) -> Path:
        """Call ``writer(tmp)`` on a temporary file for ``path``; returns the temporary file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = create_temp(path.parent, path.name, suffix if suffix is not None else ".tmp" + path.suffix)
        self._pending.append((tmp, path))
        writer(tmp)
        return tmp

    def commit(self) -> list[Path]:
        """Rename every staged file onto its destination; returns the destinations.

        A destination that is a folder is refused before anything is renamed.
        """
        done = [final for _, final in self._pending]
        for final in done:
            if final.is_dir():
                raise IsADirectoryError(f"{final} is a folder, not a file this product may replace")
        for tmp, final in self._pending:
            os.replace(tmp, final)
        self._pending = []
        return done

    def discard(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending = []

    def __enter__(self) -> StagedWrites:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8",
                      durable: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding), durable=durable)
