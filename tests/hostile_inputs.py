"""Hostile inputs built at run time by streaming compression (nothing large is kept in the repo
or in memory), and a child-process runner that reports the child's own peak memory.

* :func:`write_fits_gz` - a gzip FITS: a header, its data unit (zeros) and optional trailing zeros,
  written block by block, so a 2 GiB trailer or a 2 GiB data unit costs a few MB of disk;
* :func:`write_grey_png` - an 8-bit grey PNG of any size, rows deflated one at a time;
* :func:`run_measured` - run a command, return its exit status, output and its own ``ru_maxrss``
  (bytes), measured by a small wrapper process (not inherited from the test process's peak).
"""

from __future__ import annotations

import gzip
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Measured", "fits_header_bytes", "run_measured", "write_fits_gz", "write_grey_png"]

_BLOCK = 2880
_ZEROS = bytes(8 << 20)


def fits_header_bytes(shape: tuple[int, ...], bitpix: int, extra: dict[str, object] | None = None) -> bytes:
    """A primary FITS header for an image of numpy ``shape`` (padded to whole 2880-byte blocks)."""
    cards = [("SIMPLE", True), ("BITPIX", bitpix), ("NAXIS", len(shape))]
    cards += [(f"NAXIS{i + 1}", n) for i, n in enumerate(reversed(shape))]
    cards += list((extra or {}).items())

    def card(key: str, value: object) -> str:
        text = "T" if value is True else "F" if value is False else (f"'{value}'" if isinstance(value, str) else str(value))
        return f"{key:<8}= {text:>20}".ljust(80)

    out = "".join(card(k, v) for k, v in cards) + "END".ljust(80)
    out += " " * (-len(out) % _BLOCK)
    return out.encode("ascii")


_ZERO_MEMBER: bytes | None = None


def _zero_members(n: int) -> Iterator[bytes]:
    """gzip members that decompress to ``n`` zero bytes: 8 MiB members compressed once, then reused
    (RFC 1952 allows concatenated members; gzip readers decode them as one stream)."""
    global _ZERO_MEMBER
    if _ZERO_MEMBER is None:
        _ZERO_MEMBER = gzip.compress(_ZEROS, compresslevel=9, mtime=0)
    while n >= len(_ZEROS):
        yield _ZERO_MEMBER
        n -= len(_ZEROS)
    if n:
        yield gzip.compress(bytes(n), compresslevel=9, mtime=0)


def write_fits_gz(path: Path, *, shape: tuple[int, ...], bitpix: int = -32, data: np.ndarray | None = None,
                  trailer_bytes: int = 0) -> Path:
    """A ``.fits.gz`` whose data unit is ``data`` (or zeros of ``shape``), followed by ``trailer_bytes``
    zero bytes after the last HDU. The zeros are concatenated gzip members, so a 2 GiB data unit or
    trailer costs 2 MB of disk and no time to make."""
    itemsize = abs(bitpix) // 8
    nbytes = int(np.prod(shape)) * itemsize
    head = fits_header_bytes(shape, bitpix)
    with open(path, "wb") as fh:
        if data is not None:
            dtype = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}[bitpix]
            raw = np.ascontiguousarray(data, dtype=dtype).tobytes()
            assert len(raw) == nbytes, "data does not match shape/bitpix"
            fh.write(gzip.compress(head + raw + bytes(-nbytes % _BLOCK), mtime=0))
            zeros = trailer_bytes
        else:
            fh.write(gzip.compress(head, mtime=0))
            zeros = nbytes + (-nbytes % _BLOCK) + trailer_bytes
        for member in _zero_members(zeros):
            fh.write(member)
    return path


def write_grey_png(path: Path, side: int, *, level: int = 1) -> Path:
    """An 8-bit grey ``side x side`` PNG of zeros, deflated row by row (12000^2: 630 KB at level 1,
    140 KB at level 9, which takes three times longer)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    comp = zlib.compressobj(level)
    row = bytes(side + 1)  # filter type 0, then the row's samples
    parts = []
    for _ in range(side):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)))
        fh.write(chunk(b"IDAT", b"".join(parts)))
        fh.write(chunk(b"IEND", b""))
    return path


@dataclass(frozen=True)
class Measured:
    """One child's exit status, output and its own peak resident memory."""

    returncode: int
    stdout: str
    stderr: str
    maxrss_bytes: int
    seconds: float

    @property
    def maxrss_mib(self) -> float:
        return self.maxrss_bytes / 2**20


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children (the wrapper and the command it runs)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = [int(k) for k in fh.read().split()]
    except (OSError, ValueError):
        kids = []
    return _rss_bytes(pid) + sum(_rss_bytes(k) for k in kids)


# Why a wrapper: Python starts children with vfork, and Linux gives a vforked child that execs the
# peak resident size of the parent's address space as its starting ru_maxrss. A child of a test
# process that once grew to 2 GiB would "peak" at 2 GiB whatever it does. The wrapper is a fresh,
# small process; the command is its child, and the wrapper's RUSAGE_CHILDREN is that command alone.
_WRAPPER = """
import os, resource, signal, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def run_measured(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout: float = 300.0, workdir: Path, kill_above_bytes: int = 3 * 2**30) -> Measured:
    """Run ``args`` as a child and report its own peak memory (``ru_maxrss``, Linux: KiB), measured
    by a small wrapper process whose only child it is (see ``_WRAPPER``).

    A watchdog kills the child when its resident memory passes ``kill_above_bytes`` (or it runs past
    ``timeout``) and fails the test, so that a regression cannot take a shared machine's memory."""
    workdir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = workdir / "child.stdout", workdir / "child.stderr"
    peak_path = workdir / "child.maxrss"
    peak_path.unlink(missing_ok=True)
    t0 = time.monotonic()
    killed = ""
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-S", "-c", _WRAPPER, str(peak_path), *args], stdout=out,
                                stderr=err, env=env, cwd=cwd, start_new_session=True)
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            rss = _tree_rss_bytes(proc.pid)
            if not killed and rss > kill_above_bytes:
                killed = f"resident memory {rss / 2**20:.0f} MiB passed {kill_above_bytes / 2**20:.0f} MiB"
            elif not killed and time.monotonic() - t0 > timeout:
                killed = f"ran past {timeout:.0f} s"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)  # the wrapper and the command
                _, status, _ = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    peak_kib = int(peak_path.read_text()) if peak_path.is_file() else 0
    measured = Measured(returncode=proc.returncode, stdout=out_path.read_text(errors="replace"),
                        stderr=err_path.read_text(errors="replace"), maxrss_bytes=peak_kib * 1024,
                        seconds=time.monotonic() - t0)
    if killed:
        raise AssertionError(f"child {args[:4]} killed: {killed} (peak {measured.maxrss_mib:.0f} MiB); "
                             f"stderr: {measured.stderr[-1500:]}")
    if not peak_path.is_file():
        raise AssertionError(f"child {args[:4]} left no peak memory record; stderr: {measured.stderr[-1500:]}")
    return measured


def python_child(code: str) -> list[str]:
    """The argv that runs ``code`` in a fresh interpreter of this test run."""
    return [sys.executable, "-c", code]
