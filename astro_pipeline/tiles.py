"""Lazy tile grid with reflection padding, and a feathered, band-flushing stitch accumulator.

Why: models see fixed-size tiles; big images must stream through them with bounded memory
and without seams. The grid cuts an image (any size, even smaller than a tile) into
overlapping ``tile x tile`` windows over a virtually padded extent; the accumulator blends
model outputs (at 1x or any integer scale) with separable raised-cosine weights, accepts
tiles in any order, and writes each horizontal band to the output (an ndarray or a
``np.memmap``) as soon as every tile touching it has arrived, then frees it.

numpy only: no torch, no astropy.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "PAD_MODES",
    "StitchAccumulator",
    "Tile",
    "TileGrid",
    "feather_ramp",
    "open_output_memmap",
    "pad_indices",
    "release_rows",
]

PAD_MODES = ("reflect", "symmetric", "edge")
#: Integer outputs are quantised this many elements at a time (bounds temporaries for wide bands).
QUANTISE_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Tile:
    """One tile window in image pixel coordinates (may extend past the image: padding)."""

    index: int  # position in raster order
    row: int  # tile row in the grid
    col: int  # tile column in the grid
    y0: int  # top edge (may be negative)
    x0: int  # left edge (may be negative)
    size: int

    @property
    def y1(self) -> int:
        return self.y0 + self.size

    @property
    def x1(self) -> int:
        return self.x0 + self.size


def pad_indices(coords: np.ndarray, n: int, mode: str = "reflect") -> np.ndarray:
    """Map any integer coordinates onto ``[0, n)`` by padding rule, for any pad width.

    ``reflect`` mirrors without repeating the edge (numpy's ``reflect``), applied repeatedly
    so pads wider than the image work; a 1-pixel axis falls back to ``edge``.
    ``symmetric`` mirrors with the edge repeated; ``edge`` clamps.
    """
    if n <= 0:
        raise ValueError("cannot pad an empty axis")
    c = np.asarray(coords, dtype=np.int64)
    if mode == "edge" or (mode == "reflect" and n == 1):
        return np.clip(c, 0, n - 1)
    if mode == "reflect":
        period = 2 * (n - 1)
        m = np.mod(c, period)
        return np.where(m < n, m, period - m)
    if mode == "symmetric":
        period = 2 * n
        m = np.mod(c, period)
        return np.where(m < n, m, period - 1 - m)
    raise ValueError(f"unknown pad mode {mode!r}; expected one of {PAD_MODES}")


def feather_ramp(size: int, feather: int) -> np.ndarray:
    """1-D weights of a tile edge: raised-cosine (sin^2) ramps ``feather`` wide at both ends.

    Always strictly positive, so stitching untouched tiles gives the image back exactly
    after normalisation; opposite ramps of two tiles overlapping by ``feather`` sum to 1.
    """
    w = np.ones(size, dtype=np.float64)
    if feather <= 0:
        return w
    i = np.arange(size)
    d = np.minimum(i, size - 1 - i).astype(np.float64)
    ramp = np.sin(0.5 * np.pi * (d + 0.5) / feather) ** 2
    return np.where(d < feather, ramp, 1.0)


class TileGrid:
    """A lazy grid of ``tile x tile`` windows with ``overlap`` covering an image.

    The image is virtually padded by ``pad`` pixels on every side (default ``overlap // 2``)
    so border pixels get context; an image smaller than a tile is centred in one padded
    tile. Tiles are never materialised until :meth:`extract` reads one.
    """

    def __init__(
        self,
        height: int,
        width: int,
        *,
        tile: int,
        overlap: int,
        pad: int | None = None,
        pad_mode: str = "reflect",
    ) -> None:
        if height <= 0 or width <= 0:
            raise ValueError(f"image must be non-empty, got {height}x{width}")
        if tile <= 0:
            raise ValueError(f"tile must be positive, got {tile}")
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"unknown pad mode {pad_mode!r}; expected one of {PAD_MODES}")
        self.height = int(height)
        self.width = int(width)
        self.tile = int(tile)
        self.overlap = int(overlap)
        self.pad = int(overlap // 2 if pad is None else pad)
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.pad_mode = pad_mode
        self.ys = self._starts(self.height)
        self.xs = self._starts(self.width)

    def _starts(self, n: int) -> list[int]:
        lo, hi = -self.pad, n + self.pad
        extent = hi - lo
        if extent <= self.tile:
            return [lo - (self.tile - extent) // 2]
        stride = self.tile - self.overlap
        starts = list(range(lo, hi - self.tile, stride))
        starts.append(hi - self.tile)
        return sorted(set(starts))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of tiles."""
        return len(self.ys), len(self.xs)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def tiles(self) -> Iterator[Tile]:
        """All tiles in raster order (lazy)."""
        ncols = len(self.xs)
        for r, y0 in enumerate(self.ys):
            for c, x0 in enumerate(self.xs):
                yield Tile(r * ncols + c, r, c, y0, x0, self.tile)

    def tile_at(self, index: int) -> Tile:
        """The tile with this raster index."""
        ncols = len(self.xs)
        r, c = divmod(int(index), ncols)
        return Tile(int(index), r, c, self.ys[r], self.xs[c], self.tile)

    def extract(self, image: np.ndarray, tile: Tile) -> np.ndarray:
        """The tile's pixels (float32 copy, ``(tile, tile[, C])``), padded by ``pad_mode``.

        Reads only the window's bounding box, so ``image`` may be a memory map.
        """
        if image.shape[0] != self.height or image.shape[1] != self.width:
            raise ValueError(f"image shape {image.shape[:2]} does not match grid {self.height}x{self.width}")
        rows = pad_indices(np.arange(tile.y0, tile.y1), self.height, self.pad_mode)
        cols = pad_indices(np.arange(tile.x0, tile.x1), self.width, self.pad_mode)
        r0, r1 = int(rows.min()), int(rows.max()) + 1
        c0, c1 = int(cols.min()), int(cols.max()) + 1
        window = np.asarray(image[r0:r1, c0:c1], dtype=np.float32)
        return np.ascontiguousarray(window[rows - r0][:, cols - c0])


def open_output_memmap(path: str | Path, shape: tuple[int, ...], dtype: np.dtype | str = np.float32) -> np.memmap:
    """Create a ``.npy`` file memory map to stitch a large output into."""
    return np.lib.format.open_memmap(str(path), mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))


def release_rows(out: np.ndarray, y0: int, y1: int) -> None:
    """Write rows [y0, y1) of a memmap back and drop their pages from this process's memory.

    No-op for plain arrays and views; for read-only maps the pages are simply re-read if needed.
    """
    if not isinstance(out, np.memmap) or not isinstance(out.base, mmap.mmap):
        return
    mm = out.base
    if not out.flags.c_contiguous or not hasattr(mm, "madvise"):
        return
    row_bytes = out.strides[0]
    start_in_map = (out.offset or 0) % mmap.ALLOCATIONGRANULARITY
    b0 = start_in_map + y0 * row_bytes
    b1 = start_in_map + y1 * row_bytes
    page = mmap.PAGESIZE
    a0 = -(-b0 // page) * page  # first whole page inside the band
    a1 = (b1 // page) * page
    if a1 <= a0 or a1 > len(mm):
        return
    mm.flush(a0, a1 - a0)
    mm.madvise(mmap.MADV_DONTNEED, a0, a1 - a0)


class StitchAccumulator:
    """Blends tile outputs into the full output, band by band, in any tile order.

    ``scale`` is the output/input size ratio (1 or 4); ``channels`` None gives a 2-D output,
    an int gives ``(H*s, W*s, channels)``. ``feather`` False uses flat weights (plain
    averaging). ``out`` may be a preallocated array or ``np.memmap``; an integer dtype
    receives values clipped to [0, 1] and scaled to its range. Weights are separable, so
    the normaliser is an outer product of two 1-D sums and no per-pixel weight map exists.
    Only bands with pending tiles are held in memory (about one tile row for raster order).
    """

    def __init__(
        self,
        grid: TileGrid,
        *,
        scale: int = 1,
        channels: int | None = None,
        feather: bool = True,
        out: np.ndarray | None = None,
        out_dtype: np.dtype | str = np.float32,
    ) -> None:
        if scale < 1 or int(scale) != scale:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.grid = grid
        self.scale = s = int(scale)
        self.channels = channels
        self.out_h, self.out_w = grid.height * s, grid.width * s
        self.out_shape: tuple[int, ...] = (self.out_h, self.out_w) + ((channels,) if channels else ())
        if out is None:
            out = np.zeros(self.out_shape, dtype=np.dtype(out_dtype))
        elif tuple(out.shape) != self.out_shape:
            raise ValueError(f"out has shape {out.shape}, expected {self.out_shape}")
        self.out = out
        ts = grid.tile * s
        fw = grid.overlap * s if feather else 0
        self._w = feather_ramp(ts, fw).astype(np.float32)
        # 1-D normalisers over output rows/cols (sum of the ramps of every tile row/col).
        self._wy = self._axis_sum([y * s for y in grid.ys], self.out_h, ts)
        self._wx = self._axis_sum([x * s for x in grid.xs], self.out_w, ts)
        # Vertical segments between tile-row edges; each knows the tile rows covering it.
        bounds = {0, self.out_h}
        for y in grid.ys:
            for b in (y * s, (y + grid.tile) * s):
                if 0 < b < self.out_h:
                    bounds.add(b)
        edges = sorted(bounds)
        self._segments: list[tuple[int, int, tuple[int, ...]]] = []
        for a, b in zip(edges[:-1], edges[1:]):
            rows = tuple(r for r, y in enumerate(grid.ys) if y * s <= a and (y + grid.tile) * s >= b)
            self._segments.append((a, b, rows))
        self._buffers: dict[int, np.ndarray] = {}
        self._done_tiles: set[int] = set()
        self._row_counts = [0] * len(grid.ys)
        self._flushed: set[int] = set()
        self.peak_buffer_bytes = 0

    def _axis_sum(self, starts: list[int], n: int, ts: int) -> np.ndarray:
        acc = np.zeros(n, dtype=np.float64)
        for st in starts:
            a, b = max(st, 0), min(st + ts, n)
            if a < b:
                acc[a:b] += self._w[a - st : b - st]
        return acc.astype(np.float32)

    @property
    def complete(self) -> bool:
        return len(self._done_tiles) == len(self.grid)

    def add(self, tile: Tile, values: np.ndarray) -> None:
        """Blend one tile's output ``(tile*s, tile*s[, C])`` into the pending bands."""
        s, ts = self.scale, self.grid.tile * self.scale
        expect = (ts, ts) + ((self.channels,) if self.channels else ())
        if tuple(values.shape) != expect:
            raise ValueError(f"tile output has shape {values.shape}, expected {expect}")
        if tile.index in self._done_tiles:
            raise ValueError(f"tile {tile.index} was already added")
        oy0, ox0 = tile.y0 * s, tile.x0 * s
        xa, xb = max(ox0, 0), min(ox0 + ts, self.out_w)
        wx = self._w[xa - ox0 : xb - ox0]
        for k, (a, b, rows) in enumerate(self._segments):
            if tile.row not in rows:
                continue
            ya, yb = max(a, oy0), min(b, oy0 + ts)
            if ya >= yb:
                continue
            buf = self._buffers.get(k)
            if buf is None:
                shape = (b - a, self.out_w) + ((self.channels,) if self.channels else ())
                buf = self._buffers[k] = np.zeros(shape, dtype=np.float32)
                self._note_memory()
            part = np.asarray(values[ya - oy0 : yb - oy0, xa - ox0 : xb - ox0], dtype=np.float32)
            wy = self._w[ya - oy0 : yb - oy0]
            weight = wy[:, None] * wx[None, :]
            if self.channels:
                weight = weight[:, :, None]
            buf[ya - a : yb - a, xa:xb] += part * weight
        self._done_tiles.add(tile.index)
        self._row_counts[tile.row] += 1
        if self._row_counts[tile.row] == len(self.grid.xs):
            self._flush_ready()

    def _note_memory(self) -> None:
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, sum(b.nbytes for b in self._buffers.values()))

    def _flush_ready(self) -> None:
        ncols = len(self.grid.xs)
        for k, (a, b, rows) in enumerate(self._segments):
            if k in self._flushed or any(self._row_counts[r] < ncols for r in rows):
                continue
            buf = self._buffers.pop(k, None)
            if buf is None:  # pragma: no cover - every segment is covered by some tile row
                buf = np.zeros((b - a, self.out_w) + ((self.channels,) if self.channels else ()), np.float32)
            norm = self._wy[a:b, None] * self._wx[None, :]
            if self.channels:
                norm = norm[:, :, None]
            buf /= norm
            self._write(a, b, buf)
            self._flushed.add(k)

    def _write(self, a: int, b: int, band: np.ndarray) -> None:
        dt = self.out.dtype
        if np.issubdtype(dt, np.integer):  # quantise a few rows at a time: no band-sized temporaries
            top = np.float32(np.iinfo(dt).max)
            step = max(1, QUANTISE_CHUNK_ELEMENTS // max(1, band[0].size))
            for r in range(0, b - a, step):
                chunk = np.clip(band[r : r + step], 0.0, 1.0)
                chunk *= top
                self.out[a + r : a + r + len(chunk)] = np.rint(chunk, out=chunk)
        else:
            self.out[a:b] = band
        release_rows(self.out, a, b)

    def finish(self) -> np.ndarray:
        """The stitched output; raises if tiles are missing."""
        if not self.complete:
            missing = len(self.grid) - len(self._done_tiles)
            raise RuntimeError(f"{missing} of {len(self.grid)} tiles were never added")
        if isinstance(self.out, np.memmap):
            self.out.flush()
        return self.out


def tiles_needed(height: int, width: int, *, tile: int, overlap: int) -> int:
    """How many tiles a grid of these parameters has (cheap)."""
    return len(TileGrid(height, width, tile=tile, overlap=overlap))

