"""The shared I/O helpers: streamed sha256, atomic writes with the process umask's permissions."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from astro_pipeline.fileio import atomic_write, atomic_write_bytes, atomic_write_text, sha256_file


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_sha256_is_streamed_and_exact(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # more than one chunk, not a multiple of it
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_atomic_write_uses_the_umask_not_mkstemps_0600(tmp_path: Path, umask_022: None) -> None:
    written = atomic_write_bytes(tmp_path / "sub" / "a.png", b"png")
    assert written.read_bytes() == b"png"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    text = atomic_write_text(tmp_path / "b.json", "{}")
    assert stat.S_IMODE(text.stat().st_mode) == 0o644
    os.umask(0o077)
    private = atomic_write_bytes(tmp_path / "c.bin", b"x")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_atomic_write_keeps_the_old_file_on_failure_and_the_extension_for_writers(tmp_path: Path) -> None:
    target = atomic_write_bytes(tmp_path / "cube.fits", b"old")
    seen: list[str] = []

    def failing(tmp: Path) -> None:
        seen.append(tmp.name)
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["cube.fits"]
    assert seen[0].startswith(".cube.fits.") and seen[0].endswith(".tmp.fits")
