"""Bad input: every broken file gives a one-line IngestError naming the file and the problem,
or is processed correctly (all-NaN / all-zero frames are read and flagged)."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from astro_pipeline.config import QualityThresholds
from astro_pipeline.ingest.frame import IngestError
from astro_pipeline.ingest.quality import assess
from astro_pipeline.ingest.readers import read_frames


def _fits_bytes(data: np.ndarray | None = None) -> bytes:
    buf = io.BytesIO()
    fits.PrimaryHDU(np.zeros((10, 10), np.float32) if data is None else data).writeto(buf)
    return buf.getvalue()


#: An explicit pixel limit (what the default memory budget gives on a machine of about 25 GB).
LIMIT = 1_000_000_000


def _expect(path: Path, pattern: str, *, limit: int = LIMIT) -> IngestError:
    with pytest.raises(IngestError, match=pattern) as info:
        read_frames(path, max_image_pixels=limit)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg and "Traceback" not in msg
    return info.value


def _huge_header(nx: int, ny: int) -> bytes:
    hdr = fits.Header()
    hdr["SIMPLE"] = True
    hdr["BITPIX"] = -32
    hdr["NAXIS"] = 2
    hdr["NAXIS1"] = nx
    hdr["NAXIS2"] = ny
    return hdr.tostring().encode("ascii") + b"\0" * 2880  # one data block only


def test_zero_byte_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.fits"
    p.write_bytes(b"")
    _expect(p, r"empty file \(0 bytes\)")


def test_truncated_fits_data(tmp_path: Path) -> None:
    p = tmp_path / "trunc.fits"
    raw = _fits_bytes(np.ones((100, 100), np.float32))
    p.write_bytes(raw[: 2880 + 5000])
    _expect(p, r"truncated FITS: HDU 0 data needs bytes up to 42,880 but the file has 7,880 bytes")


def test_truncated_fits_header(tmp_path: Path) -> None:
    p = tmp_path / "cut_header.fits"
    p.write_bytes(_fits_bytes()[:400])
    _expect(p, r"unreadable FITS header|no image data")


def test_png_renamed_fits(tmp_path: Path) -> None:
    p = tmp_path / "image.fits"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(p, format="PNG")
    _expect(p, r"content is a PNG file but the name says FITS")


def test_text_named_fits(tmp_path: Path) -> None:
    p = tmp_path / "readme.fits"
    p.write_text("hello, not an image\n")
    _expect(p, r"not a FITS file: it does not start with a 'SIMPLE  =' card")


def test_unknown_type(tmp_path: Path) -> None:
    p = tmp_path / "data.bin"
    p.write_bytes(b"\x00\x01\x02garbage")
    _expect(p, r"unsupported file type")


@pytest.mark.parametrize("fill", [np.nan, 0.0])
def test_all_nan_and_all_zero_are_read_and_flagged(tmp_path: Path, fill: float) -> None:
    p = tmp_path / "flat.fits"
    p.write_bytes(_fits_bytes(np.full((64, 64), fill, np.float32)))
    (frame,) = read_frames(p, max_image_pixels=LIMIT)
    report = assess(frame, QualityThresholds())
    assert "mostly_blank" in report.flag_names
    blank = next(f for f in report.flags if f.name == "mostly_blank")
    assert blank.value == 1.0 and blank.threshold == 0.5
    if np.isnan(fill):
        assert not frame.mask.any()


def test_header_claiming_100000_squared_is_refused_without_allocating(tmp_path: Path) -> None:
    p = tmp_path / "huge.fits"
    p.write_bytes(_huge_header(100_000, 100_000))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        _expect(p, r"HDU 0 header claims 100000x100000 = 10,000,000,000 pixels, above the pixel limit of "
                   r"1,000,000,000 \(it follows from the setting memory_budget, or max_image_pixels when lower\); "
                   r"refusing to allocate it")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20 and time.perf_counter() - t0 < 5


@pytest.mark.parametrize("comp", ["plain", "gzip", "bzip2"])
def test_header_claiming_more_data_than_the_file_has(tmp_path: Path, comp: str) -> None:
    raw = _huge_header(20_000, 20_000)  # 1.6 GB claimed, under the pixel limit
    tracemalloc.start()
    try:
        if comp == "plain":
            p = tmp_path / "big.fits"
            p.write_bytes(raw)
            _expect(p, r"truncated FITS: HDU 0 data needs bytes up to 1,600,002,880 but the file has 5,760 bytes")
        else:
            p = tmp_path / ("big.fits.gz" if comp == "gzip" else "big.fits.bz2")
            p.write_bytes(gzip.compress(raw) if comp == "gzip" else bz2.compress(raw))
            _expect(p, rf"truncated FITS \({comp}\): data needs 1,600,002,880 decompressed bytes, stream has 5,760")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_lower_pixel_limit_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from astro_pipeline.config import get_settings

    p = tmp_path / "ok.fits"
    p.write_bytes(_fits_bytes(np.ones((100, 100), np.float32)))
    monkeypatch.setenv("ASTRO_PIPELINE_MAX_IMAGE_PIXELS", "5000")
    get_settings.cache_clear()
    _expect(p, r"claims 100x100 = 10,000 pixels, above the pixel limit of 5,000", limit=get_settings().pixel_limit)


def test_gzip_that_is_not_gzip(tmp_path: Path) -> None:
    p = tmp_path / "x.fits.gz"
    p.write_bytes(_fits_bytes())
    _expect(p, r"named \.gz but not gzip-compressed \(content is FITS\)")


def test_corrupt_gzip_stream(tmp_path: Path) -> None:
    p = tmp_path / "x.fits.gz"
    good = gzip.compress(_fits_bytes(np.random.default_rng(0).random((50, 50)).astype(np.float32)))
    p.write_bytes(good[:10] + bytes(b ^ 0x5A for b in good[10:60]) + good[60:])
    _expect(p, r"corrupt gzip stream|cannot read FITS")


def test_gzip_holding_a_png(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, format="PNG")
    p = tmp_path / "x.fits.gz"
    p.write_bytes(gzip.compress(buf.getvalue()))
    _expect(p, r"gzip-compressed content is PNG, not FITS")


def test_header_only_fits(tmp_path: Path) -> None:
    p = tmp_path / "hdr_flt.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(name="SCI")]).writeto(p)
    _expect(p, r"no image data \(header-only FITS: 2 HDU\(s\)")


def test_only_auxiliary_extensions(tmp_path: Path) -> None:
    p = tmp_path / "aux.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4), np.int16), name="DQ")]).writeto(p)
    _expect(p, r"no science image \(only auxiliary extensions: DQ\)")


def test_truncated_jpeg_and_tiff(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(1)
    j = tmp_path / "cut.jpg"
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    j.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _expect(j, r"cannot read JPEG: OSError: image file is truncated")
    t = tmp_path / "cut.tif"
    tifffile.imwrite(t, rng.integers(0, 255, (64, 64), dtype=np.uint8))
    t.write_bytes(t.read_bytes()[:200])
    _expect(t, r"cannot read TIFF")


def test_png_over_pillow_limit_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's bomb check runs at the reader's pixel limit, its warning an error: whatever the process-wide
    ``Image.MAX_IMAGE_PIXELS`` says, an image over the limit is refused before decoding (issue 21: the
    check was at Pillow's default with its warning switched off)."""
    p = tmp_path / "wide.png"
    Image.fromarray(np.zeros((40, 100), np.uint8)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**9)
    _expect(p, r"PNG of 4,000 pixels is above the pixel limit of 1,000 \(Pillow's decompression-bomb check\)",
            limit=1000)  # over 2x: Pillow's error
    _expect(p, r"PNG of 4,000 pixels is above the pixel limit of 3,000 \(Pillow's decompression-bomb check\)",
            limit=3000)  # between 1x and 2x: Pillow's warning, refused all the same
    (f,) = read_frames(p, max_image_pixels=4000)
    assert f.shape == (40, 100) and Image.MAX_IMAGE_PIXELS == 10**9


def test_tif_over_pillow_limit_reads_with_tifffile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tifffile

    p = tmp_path / "big.tif"
    arr = (np.arange(200 * 300) % 251).astype(np.uint8).reshape(200, 300)
    tifffile.imwrite(p, arr)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    (f,) = read_frames(p, max_image_pixels=LIMIT)
    assert f.shape == (200, 300) and f.data[0, 250] == pytest.approx(250 / 255)


@pytest.mark.slow
def test_real_tif_above_pillows_default_limit(tmp_path: Path) -> None:
    import tifffile

    n = Image.MAX_IMAGE_PIXELS or 89_478_485
    h, w = 9_500, 9_500  # 90.25 M pixels > 89,478,485
    assert h * w > n
    p = tmp_path / "huge.tif"
    with tifffile.TiffWriter(p) as tw:
        tw.write(np.zeros((h, w), np.uint8), compression="zlib", tile=(512, 512))
    (f,) = read_frames(p, max_image_pixels=LIMIT)
    assert f.shape == (h, w) and f.is_display


def test_directory_named_like_a_file(tmp_path: Path) -> None:
    d = tmp_path / "x.fits"
    d.mkdir()
    _expect(d, r"is a directory, not an image file")


def test_missing_file(tmp_path: Path) -> None:
    _expect(tmp_path / "nope.fits", r"no such file")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: chmod 000 does not stop root from reading (covered by the directory case)")
def test_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "secret.fits"
    p.write_bytes(_fits_bytes())
    p.chmod(0)
    try:
        _expect(p, r"permission denied")
    finally:
        p.chmod(0o644)


def test_tile_compressed_truncated_and_huge(tmp_path: Path) -> None:
    data = np.random.default_rng(2).random((256, 256)).astype(np.float32)
    good = tmp_path / "c.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, name="SCI")]).writeto(good)
    raw = good.read_bytes()
    cut = tmp_path / "cut.fits.fz"
    cut.write_bytes(raw[: len(raw) // 2])
    _expect(cut, r"truncated FITS: HDU 1 data needs bytes up to [\d,]+ but the file has [\d,]+ bytes")
    huge = tmp_path / "huge.fits.fz"
    huge.write_bytes(raw.replace(b"ZNAXIS1 =                  256", b"ZNAXIS1 =               100000")
                     .replace(b"ZNAXIS2 =                  256", b"ZNAXIS2 =               100000"))
    _expect(huge, r"HDU 1 header claims 100000x100000 = 10,000,000,000 pixels")


def _with_card(raw: bytes, key: str, value: int) -> bytes:
    """``raw`` with the integer card ``key`` (the first one) set to ``value``, header layout kept."""
    at = raw.index(key.ljust(8).encode() + b"=")
    card = (key.ljust(8) + "= " + f"{value:>20d}").encode().ljust(80)
    return raw[:at] + card + raw[at + 80:]


@pytest.mark.parametrize("value", [-1, -10, -100000])
@pytest.mark.parametrize("key", ["NAXIS1", "NAXIS2"])
def test_negative_naxis_in_the_primary_header_is_named(tmp_path: Path, key: str, value: int) -> None:
    p = tmp_path / "neg.fits"
    p.write_bytes(_with_card(_fits_bytes(), key, value))
    err = _expect(p, rf"HDU 0: {key} = {value} is negative \(axis lengths must be >= 0\)")
    assert "Errno" not in str(err)


@pytest.mark.parametrize("value", [-10, -100000])
def test_negative_naxis_in_an_extension_is_named(tmp_path: Path, value: int) -> None:
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((10, 10), np.float32), name="SCI"),
                  fits.ImageHDU(np.zeros((10, 10), np.float32), name="ERR")]).writeto(buf)
    raw = buf.getvalue()
    sci = raw.index(b"XTENSION")  # the first extension header: its NAXIS1 card comes after
    p = tmp_path / "neg_ext.fits"
    p.write_bytes(raw[:sci] + _with_card(raw[sci:], "NAXIS1", value))
    err = _expect(p, rf"HDU 1: NAXIS1 = {value} is negative")
    assert "Errno" not in str(err)
