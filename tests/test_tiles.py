"""Tile grid and stitch accumulator: exact round trip, no seams, tiny and odd images, memmap bands."""

from __future__ import annotations

import numpy as np
import pytest

from astro_pipeline.tiles import StitchAccumulator, TileGrid, feather_ramp, open_output_memmap, pad_indices


def _stitch(image, grid, *, scale=1, op=None, order=None, feather=True, out=None):
    channels = image.shape[2] if image.ndim == 3 else None
    acc = StitchAccumulator(grid, scale=scale, channels=channels, feather=feather, out=out)
    tiles = list(grid.tiles())
    if order is not None:
        tiles = [tiles[i] for i in order]
    for t in tiles:
        v = grid.extract(image, t)
        if op is not None:
            v = op(v)
        if scale > 1:
            v = np.repeat(np.repeat(v, scale, axis=0), scale, axis=1)
        acc.add(t, v)
    return acc, acc.finish()


def _smooth_field(h, w, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.random((h + 8, w + 8))
    k = np.ones(9) / 9
    sm = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, noise)
    sm = np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, sm)
    return sm.astype(np.float32)


@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (100, 71, 3), (5, 3), (1, 1), (1, 40), (130, 2)])
def test_untouched_tiles_round_trip(shape):
    img = np.random.default_rng(1).random(shape).astype(np.float32)
    grid = TileGrid(shape[0], shape[1], tile=16, overlap=6)
    _, out = _stitch(img, grid)
    assert out.shape == img.shape
    assert np.max(np.abs(out - img)) <= 1e-6


def test_round_trip_any_order_and_4x():
    img = np.random.default_rng(2).random((45, 61, 3)).astype(np.float32)
    grid = TileGrid(45, 61, tile=16, overlap=4)
    order = np.random.default_rng(3).permutation(len(grid))
    _, out = _stitch(img, grid, scale=4, order=order)
    expect = np.repeat(np.repeat(img, 4, axis=0), 4, axis=1)
    assert out.shape == (180, 244, 3)
    assert np.max(np.abs(out - expect)) <= 1e-6


def test_tiny_image_padding_never_fails():
    # a 3x2 image in a 32-px tile with 8 px of pad: reflection has to repeat many times
    img = np.arange(6, dtype=np.float32).reshape(3, 2)
    for mode in ("reflect", "symmetric", "edge"):
        grid = TileGrid(3, 2, tile=32, overlap=8, pad_mode=mode)
        assert len(grid) == 1
        t = next(grid.tiles())
        tile = grid.extract(img, t)
        assert tile.shape == (32, 32)
        assert set(np.unique(tile)) <= set(img.ravel())
        _, out = _stitch(img, grid)
        np.testing.assert_allclose(out, img, atol=1e-6)


def test_pad_indices_rules():
    assert pad_indices(np.array([-2, -1, 0, 2, 3, 4]), 3, "reflect").tolist() == [2, 1, 0, 2, 1, 0]
    assert pad_indices(np.array([-2, -1, 3, 4]), 3, "symmetric").tolist() == [1, 0, 2, 1]
    assert pad_indices(np.array([-5, 7]), 3, "edge").tolist() == [0, 2]
    assert pad_indices(np.array([-9, 9]), 1, "reflect").tolist() == [0, 0]
    with pytest.raises(ValueError, match="unknown pad mode"):
        pad_indices(np.array([0]), 3, "wrap")


def test_grid_rejects_bad_parameters():
    with pytest.raises(ValueError, match="overlap"):
        TileGrid(10, 10, tile=8, overlap=8)
    with pytest.raises(ValueError, match="non-empty"):
        TileGrid(0, 10, tile=8, overlap=2)


def test_feather_ramp_partition_of_unity():
    w = feather_ramp(32, 8)
    assert w.min() > 0 and w.max() == 1.0
    # two tiles overlapping by exactly the feather width sum to one across the overlap
    np.testing.assert_allclose(w[-8:] + w[:8], 1.0, atol=1e-12)


def _border_vs_interior_energy(out, grid):
    """Mean squared horizontal+vertical gradient on tile-edge lines vs everywhere else."""
    gx = np.diff(out, axis=1) ** 2  # gx[:, j] is the step between columns j and j+1
    gy = np.diff(out, axis=0) ** 2
    xb = {x + d for t in grid.tiles() for x in (t.x0, t.x1) for d in (-1, 0) if 0 <= x + d < out.shape[1] - 1}
    yb = {y + d for t in grid.tiles() for y in (t.y0, t.y1) for d in (-1, 0) if 0 <= y + d < out.shape[0] - 1}
    xm = np.zeros(gx.shape[1], bool)
    xm[sorted(xb)] = True
    ym = np.zeros(gy.shape[0], bool)
    ym[sorted(yb)] = True
    border = np.concatenate([gx[:, xm].ravel(), gy[ym, :].ravel()]).mean()
    interior = np.concatenate([gx[:, ~xm].ravel(), gy[~ym, :].ravel()]).mean()
    return border / interior


def _tile_local_blur(v):
    """A tile-local operation with edge effects: 5x5 box blur with zero padding inside the tile."""
    p = np.pad(v, 2)
    out = np.zeros_like(v)
    for dy in range(5):
        for dx in range(5):
            out += p[dy : dy + v.shape[0], dx : dx + v.shape[1]]
    return out / 25


def test_tile_local_operation_leaves_no_seam():
    img = _smooth_field(150, 170)
    grid = TileGrid(150, 170, tile=48, overlap=16)
    assert len(grid) > 9
    _, out = _stitch(img, grid, op=_tile_local_blur)
    ratio = _border_vs_interior_energy(out, grid)
    assert abs(ratio - 1.0) < 0.10, ratio
    # control: without feathering the same operation leaves visible seams
    _, hard = _stitch(img, grid, op=_tile_local_blur, feather=False)
    assert _border_vs_interior_energy(hard, grid) > 1.5


def test_memmap_output_band_flush_and_memory(tmp_path):
    h, w = 200, 90
    img = np.random.default_rng(4).random((h, w)).astype(np.float32)
    grid = TileGrid(h, w, tile=32, overlap=8)
    out = open_output_memmap(tmp_path / "out.npy", (h * 4, w * 4), np.float32)
    acc, res = _stitch(img, grid, scale=4, out=out)
    assert res is out
    # in raster order only about one tile row of output rows is ever pending
    one_tile_row = 32 * 4 * w * 4 * 4
    assert acc.peak_buffer_bytes <= 1.3 * one_tile_row
    back = np.load(tmp_path / "out.npy", mmap_mode="r")
    np.testing.assert_allclose(back[::4, ::4], img, atol=1e-6)


def test_integer_output_in_small_chunks(monkeypatch):
    import astro_pipeline.tiles as tiles_mod

    monkeypatch.setattr(tiles_mod, "QUANTISE_CHUNK_ELEMENTS", 50)  # a few rows per chunk
    img = np.random.default_rng(6).random((37, 23)).astype(np.float32)
    grid = TileGrid(37, 23, tile=16, overlap=4)
    _, res = _stitch(img, grid, out=np.zeros((37, 23), np.uint16))
    assert np.max(np.abs(res.astype(int) - np.rint(img * 65535).astype(int))) <= 1


def test_integer_output_and_errors():
    img = np.random.default_rng(5).random((20, 20, 3)).astype(np.float32)
    grid = TileGrid(20, 20, tile=16, overlap=4)
    out8 = np.zeros((20, 20, 3), np.uint8)
    acc, res = _stitch(img, grid, out=out8)
    assert np.max(np.abs(res.astype(int) - np.rint(img * 255).astype(int))) <= 1
    t = next(grid.tiles())
    with pytest.raises(ValueError, match="already added"):
        acc.add(t, grid.extract(img, t))
    fresh = StitchAccumulator(grid, channels=3)
    with pytest.raises(ValueError, match="expected"):
        fresh.add(t, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(RuntimeError, match="never added"):
        fresh.finish()
