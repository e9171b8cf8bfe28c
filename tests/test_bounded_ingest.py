"""Ingestion reads only what the headers declare (issue 21): bytes after the last HDU are ignored and
noted, never read into memory; a gzip stream is decompressed up to the declared data and no further;
Pillow's bomb check stays on, at the pixel limit the memory budget gives."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from hostile_inputs import fits_header_bytes, write_fits_gz, write_grey_png
from model_helpers import random_weights
from PIL import Image
from typer.testing import CliRunner

from astro_pipeline.cli import app
from astro_pipeline.ingest.frame import IngestError
from astro_pipeline.ingest.readers import read_frames
from astro_pipeline.models.registry import save_weights

MiB = 2**20
LIMIT = 1_000_000_000


def _image(shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 7.0


def _traced(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak, time.perf_counter() - t0


def test_plain_fits_bytes_after_the_last_hdu_are_ignored_and_noted(tmp_path: Path) -> None:
    """64 MiB of junk after the last HDU: the image is read as declared, the junk is named, not read."""
    data = _image()
    p = tmp_path / "junk.fits"
    fits.PrimaryHDU(data).writeto(p)
    end = p.stat().st_size
    with open(p, "ab") as fh:
        for _ in range(64):
            fh.write(b"\x00" * (MiB // 2) + b"garbage " * (MiB // 16))
    frames, peak, _ = _traced(lambda: read_frames(p, max_image_pixels=LIMIT))
    (frame,) = frames
    assert np.array_equal(frame.data, data)
    assert frame.notes == [f"{64 * MiB:,} bytes after the last HDU (from byte {end:,}) ignored"]
    assert peak < 16 * MiB  # the junk never entered memory


def test_gzip_fits_trailer_is_not_decompressed(tmp_path: Path) -> None:
    """A 64x64 image followed by 256 MiB of zeros, gzip-compressed: read as declared, the rest left compressed."""
    data = _image()
    p = write_fits_gz(tmp_path / "trailer.fits.gz", shape=data.shape, data=data, trailer_bytes=256 * MiB)
    frames, peak, seconds = _traced(lambda: read_frames(p, max_image_pixels=LIMIT))
    (frame,) = frames
    assert np.array_equal(frame.data, data)
    end = 2880 + 64 * 64 * 4 + (-(64 * 64 * 4) % 2880)
    assert frame.notes == [f"data after the last HDU (from decompressed byte {end:,}) ignored, not decompressed"]
    assert peak < 16 * MiB
    assert seconds < 20  # a hang guard: decompressing the trailer took 40 s on the parent, keeping it 4.3x


def test_gzip_fits_with_extensions_and_trailer_reads_every_hdu(tmp_path: Path) -> None:
    """The walk from header to header finds every extension before the trailer (SCI + WHT of two chips)."""
    hdus = [fits.PrimaryHDU()]
    for ver in (1, 2):
        hdus.append(fits.ImageHDU(_image((32, 40)) + ver, name="SCI", ver=ver))
        hdus.append(fits.ImageHDU(np.ones((32, 40), np.float32), name="WHT", ver=ver))
    plain = tmp_path / "chips.fits"
    fits.HDUList(hdus).writeto(plain)
    p = tmp_path / "chips.fits.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(plain.read_bytes())
        fh.write(b"\x00" * (4 * MiB))
    frames = read_frames(p, max_image_pixels=LIMIT)
    assert [(f.hdu, float(f.data[0, 0])) for f in frames] == [(1, 1.0), (3, 2.0)]
    assert all(f.notes == [f"data after the last HDU (from decompressed byte {plain.stat().st_size:,}) ignored, "
                           "not decompressed"] for f in frames)


def test_gzip_stream_read_only_up_to_the_declared_data(tmp_path: Path) -> None:
    """After the gzip member that holds the HDU come bytes that are not gzip (as tape-blocked copies
    leave): a reader that decompressed further would fail on them; this one never gets there."""
    data = _image()
    p = tmp_path / "junk_after_member.fits.gz"
    body = fits_header_bytes(data.shape, -32) + data.astype(">f4").tobytes()
    body += bytes(-len(body) % 2880)
    p.write_bytes(gzip.compress(body, mtime=0) + b"\x00\x17junk" * 3000)
    (frame,) = read_frames(p, max_image_pixels=LIMIT)
    assert np.array_equal(frame.data, data)
    assert frame.notes == [f"data after the last HDU (from decompressed byte {len(body):,}) ignored, not decompressed"]


def test_pillow_bomb_check_stays_on_at_the_pixel_limit(tmp_path: Path) -> None:
    """Pillow's own check runs at the pipeline's limit (not off, not at its default): refused before decoding."""
    p = write_grey_png(tmp_path / "wide.png", 300)  # 90,000 pixels
    default = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(IngestError, match=r"PNG of 90,000 pixels is above the pixel limit of 50,000 "
                                              r"\(Pillow's decompression-bomb check\)"):
            read_frames(p, max_image_pixels=50_000)
        (frame,) = read_frames(p, max_image_pixels=100_000)
    assert frame.data.shape == (300, 300) and Image.MAX_IMAGE_PIXELS == default
    big = write_grey_png(tmp_path / "big.png", 14_000)  # 196 M pixels: over twice Pillow's default limit
    with pytest.raises(IngestError, match=r"above the pixel limit of 150,000,000"):
        read_frames(big, max_image_pixels=150_000_000)


@pytest.fixture(scope="module")
def tiny_colorizer(tmp_path_factory) -> Path:
    model, meta = random_weights("colorize", tiny=True, seed=5)
    return save_weights(model, tmp_path_factory.mktemp("w") / "tiny-colorize.safetensors", meta)


def test_trailer_note_reaches_the_catalog_and_the_manifest(tmp_path: Path, tiny_colorizer: Path, one_torch_thread: None) -> None:
    data = _image((24, 24))
    (tmp_path / "in").mkdir()
    src = write_fits_gz(tmp_path / "in" / "tail.fits.gz", shape=data.shape, data=data, trailer_bytes=MiB)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["colorize", str(src), "--output", str(out), "--weights", str(tiny_colorizer),
                                   "--device", "cpu", "--run-id", "t1"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out / "manifests" / "t1.parquet")
    assert df["status"].tolist() == ["ok"]
    assert "data after the last HDU (from decompressed byte 5,760) ignored, not decompressed" in str(df["notes"].iloc[0])
