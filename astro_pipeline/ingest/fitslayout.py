"""Where a FITS file's HDUs are, from their headers alone, and a decompressed stream that stops where
they end.

Why: a reader that asks astropy for "every HDU" lets astropy read on past the last one, looking
for a header in whatever follows: 2 GiB of zeros after a 64x64 image were read into memory, block
after block. :func:`walk_hdus` goes from header to header by the sizes the headers declare
(skipping each data unit, decompressing through it when the file is compressed, nothing kept), and
stops at the first block after an HDU that does not open an extension: those bytes are named in a
note and never read further. :class:`DecompressedStream` is the decompressed view of a gzip or
bzip2 file that ends at a given offset, so astropy reading through it cannot decompress past the
last HDU either.
"""

from __future__ import annotations

import bz2
import io
import math
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BLOCK",
    "DecompressedStream",
    "FitsLayout",
    "HduSpan",
    "negative_axis",
    "raw_data_bytes",
    "walk_hdus",
]

BLOCK = 2880
#: Header blocks (36 cards each) one HDU may have: HST headers take tens. A run of blocks without an
#: END card past this is not a header.
MAX_HEADER_BLOCKS = 1000
#: HDUs one file may have before the walk stops (HST files have a few to a few hundred).
MAX_HDUS = 5000
_INPUT_CHUNK = 1 << 16  # compressed bytes fed to the decompressor at a time
_SKIP_CHUNK = 1 << 20  # decompressed bytes produced (and dropped) at a time when skipping a data unit


def raw_data_bytes(header: Any) -> int:
    """Bytes of the data unit as the header declares it (FITS standard formula, unpadded)."""
    naxis = int(header.get("NAXIS", 0) or 0)
    if naxis == 0:
        return 0
    dims = [int(header.get(f"NAXIS{i}", 0) or 0) for i in range(1, naxis + 1)]
    bitpix = abs(int(header.get("BITPIX", 8)))
    gcount = int(header.get("GCOUNT", 1) or 1)
    pcount = int(header.get("PCOUNT", 0) or 0)
    if header.get("GROUPS", False) and dims and dims[0] == 0:
        dims = dims[1:]
    return bitpix // 8 * gcount * (pcount + math.prod(dims))


def negative_axis(header: Any) -> str | None:
    """``NAXISn = -5 is negative ...`` when the header declares a negative axis, else None."""
    try:
        naxis = int(header.get("NAXIS", 0) or 0)
    except (TypeError, ValueError):
        return None
    if naxis < 0:
        return f"NAXIS = {naxis} is negative (the number of axes must be >= 0)"
    for i in range(1, min(naxis, 999) + 1):
        value = header.get(f"NAXIS{i}")
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            return f"NAXIS{i} = {value} is negative (axis lengths must be >= 0)"
    return None


class DecompressedStream(io.RawIOBase):
    """The decompressed bytes of a gzip (concatenated members included) or bzip2 file, read-only.

    Never produces bytes past ``limit`` (it reads as the end of the stream there) and decompresses
    no more than asked for: seeks are lazy, a forward seek is decompressed through only when the
    next read needs it, a backward one starts again from the beginning. Wrap it in
    ``io.BufferedReader`` for astropy.
    """

    def __init__(self, path: Path | str, compression: str, *, limit: int | None = None) -> None:
        super().__init__()
        if compression not in ("gzip", "bzip2"):
            raise ValueError(f"unsupported compression {compression!r}")
        self.compression = compression
        self.limit = limit
        self._fh = open(path, "rb")  # noqa: SIM115 - closed with the stream
        self._target = 0
        self._restart()

    # -- decompression ------------------------------------------------------------------------
    def _decoder(self) -> Any:
        return zlib.decompressobj(31) if self.compression == "gzip" else bz2.BZ2Decompressor()

    def _restart(self) -> None:
        self._fh.seek(0)
        self._dec = self._decoder()
        self._feed = b""
        self._pos = 0  # decompressed bytes produced so far
        self._ended = False

    def _more(self, n: int) -> bytes:
        """At most ``n`` further decompressed bytes; ``b""`` at the end of the last member.

        Raises ``EOFError`` when the file ends inside a member, ``zlib.error``/``OSError`` on corrupt data.
        """
        while not self._ended:
            if self._dec.eof:  # a member ended: another may follow
                rest = self._dec.unused_data or self._feed or self._fh.read(_INPUT_CHUNK)
                if not rest:
                    self._ended = True
                    break
                self._dec, self._feed = self._decoder(), rest
            if self.compression == "gzip":
                chunk = self._feed or self._fh.read(_INPUT_CHUNK)
                if not chunk:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
                data = self._dec.decompress(chunk, n)
                self._feed = self._dec.unconsumed_tail
            else:
                if self._dec.needs_input:
                    chunk = self._feed or self._fh.read(_INPUT_CHUNK)
                    self._feed = b""
                    if not chunk:
                        raise EOFError("compressed file ended before the end-of-stream marker was reached")
                    data = self._dec.decompress(chunk, n)
                else:
                    data = self._dec.decompress(b"", n)
            if data:
                return data
        return b""

    def _goto(self, offset: int) -> None:
        if offset < self._pos:
            self._restart()
        while self._pos < offset:
            data = self._more(min(_SKIP_CHUNK, offset - self._pos))
            if not data:
                break
            self._pos += len(data)

    @property
    def position(self) -> int:
        """Decompressed bytes produced so far (how far the stream was really read)."""
        return self._pos

    # -- io.RawIOBase ---------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._target

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self._target + offset
        elif whence == os.SEEK_END:
            if self.limit is None:
                raise io.UnsupportedOperation("the end of a compressed stream is not known without decompressing it")
            target = self.limit + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        self._target = max(0, int(target))
        return self._target

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = len(view)
        if self.limit is not None:
            want = max(0, min(want, self.limit - self._target))
        if want == 0:
            return 0
        self._goto(self._target)
        got = 0
        while got < want and self._pos == self._target + got:
            data = self._more(want - got)
            if not data:
                break
            view[got : got + len(data)] = data
            got += len(data)
            self._pos += len(data)
        self._target += got
        return got

    def advance(self, n: int) -> int:
        """Skip ``n`` bytes now (decompressing through them); how many there were."""
        start = self._target
        self._goto(start + n)
        self._target = self._pos
        return self._pos - start

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


@dataclass(frozen=True)
class HduSpan:
    """One HDU as its header places it: header and data offsets, declared data size (unpadded)."""

    index: int
    header_offset: int
    data_offset: int
    data_bytes: int

    @property
    def data_end(self) -> int:
        return self.data_offset + self.data_bytes

    @property
    def end(self) -> int:
        """Where the next HDU would start (the data unit padded to whole blocks)."""
        return self.data_offset + -(-self.data_bytes // BLOCK) * BLOCK


@dataclass(frozen=True)
class FitsLayout:
    """The HDUs of a file, and what follows the last of them.

    ``available`` is the stream's length when it ended inside an HDU (a truncated file), else None;
    ``stream_error`` why a compressed stream could not be decompressed that far (else it just ended);
    ``trailer`` the reader note for bytes after the last HDU (ignored), else None.
    """

    spans: tuple[HduSpan, ...]
    available: int | None
    trailer: str | None
    stream_error: str | None = None

    @property
    def end(self) -> int:
        return self.spans[-1].end if self.spans else 0


def _has_end_card(block: bytes) -> bool:
    return any(block[i : i + 8] == b"END     " for i in range(0, len(block), 80))


def _read_block(fh: Any) -> bytes:
    out = bytearray()
    while len(out) < BLOCK:
        part = fh.read(BLOCK - len(out))
        if not part:
            break
        out += part
    return bytes(out)


def walk_hdus(path: Path, *, compression: str | None, file_size: int) -> FitsLayout:
    """Find every HDU of ``path`` from its headers; stop at what follows the last one.

    Reads header blocks and skips data units by their declared size; after the last HDU reads one
    block (to see it opens no extension) and nothing more. A header that cannot be parsed ends the
    walk: for HDU 0 the layout is empty (the caller's reader names the problem), after it the rest
    of the file is the trailer. Raises ``ValueError`` with ``HDU n: NAXISm = -5 is negative ...``
    for a negative axis (astropy itself fails on one with an unhelpful message).
    """
    from astropy.io import fits

    spans: list[HduSpan] = []
    available: int | None = None
    trailer: str | None = None
    stream_error: str | None = None
    stream: Any = DecompressedStream(path, compression) if compression else open(path, "rb")  # noqa: SIM115
    pos = 0
    with stream, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while len(spans) < MAX_HDUS:
            try:
                block = _read_block(stream)
            except (OSError, EOFError, zlib.error, ValueError):
                block = b"\xff"  # undecodable bytes after the last HDU: a trailer
            if not block:
                break  # the file ends with its last HDU
            if len(block) < BLOCK or (spans and not block.startswith(b"XTENSION")):
                if spans:
                    trailer = _trailer_note(pos, file_size, compression)
                break
            blocks = [block]
            while not _has_end_card(blocks[-1]) and len(blocks) < MAX_HEADER_BLOCKS:
                try:
                    more = _read_block(stream)
                except (OSError, EOFError, zlib.error, ValueError):
                    more = b""
                if len(more) < BLOCK:
                    break
                blocks.append(more)
            try:
                if not _has_end_card(blocks[-1]):
                    raise ValueError("no END card")
                header = fits.Header.fromstring(b"".join(blocks).decode("ascii"))
                nbytes = raw_data_bytes(header)
            except Exception:  # noqa: BLE001 - not a header: for HDU 0 the reader says why, later a trailer
                if spans:
                    trailer = _trailer_note(pos, file_size, compression)
                break
            bad = negative_axis(header)
            if bad:
                raise ValueError(f"HDU {len(spans)}: {bad}")
            span = HduSpan(len(spans), pos, pos + BLOCK * len(blocks), nbytes)
            spans.append(span)
            padded = span.end - span.data_offset
            if compression is None:
                if span.data_end > file_size:
                    available = file_size
                    break
                stream.seek(span.end)
            else:
                try:
                    got = stream.advance(padded)
                except (OSError, EOFError, zlib.error, ValueError) as exc:
                    available = stream.position
                    stream_error = " ".join(str(exc).split()) or type(exc).__name__
                    break
                if got < padded:
                    if span.data_offset + got < span.data_end:
                        available = span.data_offset + got
                    break
            pos = span.end
    return FitsLayout(spans=tuple(spans), available=available, trailer=trailer, stream_error=stream_error)


def _trailer_note(offset: int, file_size: int, compression: str | None) -> str:
    if compression is None:
        return f"{file_size - offset:,} bytes after the last HDU (from byte {offset:,}) ignored"
    return f"data after the last HDU (from decompressed byte {offset:,}) ignored, not decompressed"
