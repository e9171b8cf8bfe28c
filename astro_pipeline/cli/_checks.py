"""Checks the commands run on their arguments before any work: output folders and sky cones.

Each failure prints one ``error:`` line naming the option, the value and the problem, and exits 2.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import NoReturn

import typer

from astro_pipeline.cli._errors import print_error

__all__ = ["check_cone", "existing_dir", "fail", "writable_dir"]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` and exit (2: a usage problem)."""
    print_error(message)
    raise typer.Exit(code)


def _not_under_a_file(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        fail(f"{option} {path}: is a file, not a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                fail(f"{option} {path}: {parent} is a file, not a folder")
            return


def existing_dir(path: Path, *, option: str = "--output", missing_ok: bool = False) -> Path:
    """``path`` if it is an existing folder (commands that only read a run's output).

    ``missing_ok`` only refuses a file (or a path under one), leaving a missing folder to the
    caller's own message (the catalog commands say "no catalog at ...").
    """
    path = path.expanduser()
    _not_under_a_file(path, option)
    if not path.is_dir() and not missing_ok:
        fail(f"{option} {path}: no such folder")
    return path


def writable_dir(path: Path, *, option: str = "--output", create: bool = True) -> Path:
    """``path`` as a folder this process can write in, created if missing (``create``)."""
    path = path.expanduser()
    _not_under_a_file(path, option)
    if not path.is_dir():
        if not create:
            fail(f"{option} {path}: no such folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"{option} {path}: cannot create the folder ({exc.strerror or exc})")
    try:  # a real write: permission bits say nothing for root, read-only mounts or immutable folders
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        fail(f"{option} {path}: the folder is not writable ({exc.strerror or exc})")
    return path


def check_cone(ra: float | None, dec: float | None, radius: float | None) -> None:
    """The shared sky-cone rule (``astro_pipeline.sky``), reported against the command's options."""
    from astro_pipeline.sky import ConeError
    from astro_pipeline.sky import check_cone as check

    try:
        check(ra, dec, radius)
    except ConeError as exc:
        fail(f"--{exc.field} {exc.value:g}: {exc}")
