"""Readers: FITS (plain, gzip, bzip2, tile-compressed), TIF, PNG, JPEG into masked float32 Frames."""

from __future__ import annotations

import bz2
import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from astro_pipeline.color import lightness
from astro_pipeline.ingest.frame import IngestError
from astro_pipeline.fileio import sha256_file as file_sha256
from astro_pipeline.ingest.readers import iter_input_files, read_frames

M101 = (210.802429, 54.34875)

LIMIT = 1_000_000_000  # an explicit pixel limit for the readers


def _wcs_header(shape: tuple[int, int], ra: float, dec: float, scale_deg: float = 0.05 / 3600) -> fits.Header:
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    h["CRPIX1"], h["CRPIX2"] = (shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -scale_deg, 0.0, 0.0, scale_deg
    return h


def _drz(path: Path, shape=(64, 80)) -> np.ndarray:
    rng = np.random.default_rng(0)
    sci = rng.normal(0.1, 0.01, shape).astype(">f4")
    sci[:, :5] = np.nan
    wht = np.ones(shape, np.float32)
    wht[:4, :] = 0
    prim = fits.PrimaryHDU()
    prim.header.update(TELESCOP="HST", INSTRUME="ACS", DETECTOR="WFC", FILTER1="F814W", FILTER2="CLEAR2L",
                       ROOTNAME="j8xx01010", TARGNAME="NGC5457", EXPTIME=1200.0, DATE_OBS="2002-11-13")
    prim.header["DATE-OBS"] = "2002-11-13"
    del prim.header["DATE_OBS"]
    h = _wcs_header(shape, *M101)
    h["BUNIT"] = "ELECTRONS/S"
    fits.HDUList([prim, fits.ImageHDU(sci, h, name="SCI"), fits.ImageHDU(wht, name="WHT")]).writeto(path)
    return sci


def test_drizzled_fits_mask_wcs_provenance(tmp_path: Path) -> None:
    p = tmp_path / "j8xx01010_drz.fits"
    sci = _drz(p)
    frames = read_frames(p, max_image_pixels=LIMIT)
    assert len(frames) == 1
    f = frames[0]
    assert f.hdu == 1 and f.plane is None and f.format == "fits"
    assert f.data.dtype == np.float32 and f.data.dtype.isnative
    np.testing.assert_array_equal(f.data[10:, 10:], sci[10:, 10:].astype(np.float32))
    assert not f.mask[:, :5].any() and not f.mask[:4, :].any() and f.mask[4:, 5:].all()
    assert f.source_sha256 == file_sha256(p)
    pv = f.provenance
    assert pv["telescope"] == "HST" and pv["instrument"] == "ACS" and pv["detector"] == "WFC"
    assert pv["filter"] == "F814W" and pv["target"] == "NGC5457" and pv["exptime"] == 1200.0
    assert pv["date_obs"] == "2002-11-13" and pv["bunit"] == "ELECTRONS/S" and pv["rootname"] == "j8xx01010"
    assert pv["ra"] == pytest.approx(M101[0], abs=1e-5) and pv["dec"] == pytest.approx(M101[1], abs=1e-5)
    assert f.wcs is not None and f.wcs.naxis == 2


def test_flt_dq_saturation_and_bscale(tmp_path: Path) -> None:
    shape = (32, 32)
    raw = np.full(shape, 1000, dtype=np.int16)
    dq = np.zeros(shape, np.int16)
    dq[0, :8] = 256
    dq[1, :4] = 2048
    dq[2, :4] = 16  # hot pixel: not saturation, stays valid
    sci = fits.ImageHDU(raw, name="SCI", ver=1)
    sci.header["BSCALE"], sci.header["BZERO"] = 0.5, 10.0
    p = tmp_path / "x_flt.fits"
    fits.HDUList([fits.PrimaryHDU(), sci, fits.ImageHDU(np.ones(shape, np.float32), name="ERR", ver=1),
                  fits.ImageHDU(dq, name="DQ", ver=1)]).writeto(p)
    (f,) = read_frames(p, max_image_pixels=LIMIT)
    assert np.all(f.data == 510.0)  # BSCALE/BZERO applied
    assert f.saturated is not None and int(f.saturated.sum()) == 12
    assert not f.mask[0, :8].any() and not f.mask[1, :4].any() and f.mask[2, :4].all()


def test_multi_sci_matches_extver(tmp_path: Path) -> None:
    shape = (16, 16)
    w2 = np.ones(shape, np.float32)
    w2[:, :3] = 0
    p = tmp_path / "two_drz.fits"
    fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(np.ones(shape, np.float32), name="SCI", ver=1),
        fits.ImageHDU(np.ones(shape, np.float32), name="WHT", ver=1),
        fits.ImageHDU(np.full(shape, 2, np.float32), name="SCI", ver=2),
        fits.ImageHDU(w2, name="WHT", ver=2),
    ]).writeto(p)
    a, b = read_frames(p, max_image_pixels=LIMIT)
    assert (a.hdu, b.hdu) == (1, 3) and a.mask.all() and int((~b.mask).sum()) == 48
    assert a.n_frames_in_file == 2 and a.suffix == "_1" and b.key.endswith("[3]")


def test_cube_gives_one_frame_per_plane(tmp_path: Path) -> None:
    cube = np.stack([np.full((8, 9), i, np.float32) for i in range(3)])
    p = tmp_path / "cube.fits"
    fits.PrimaryHDU(cube).writeto(p)
    frames = read_frames(p, max_image_pixels=LIMIT)
    assert [f.plane for f in frames] == [0, 1, 2]
    assert all(f.shape == (8, 9) and f.hdu == 0 for f in frames)
    assert [float(f.data[0, 0]) for f in frames] == [0.0, 1.0, 2.0]
    assert frames[2].key.endswith("[0,p2]")


@pytest.mark.parametrize("kind", ["gz", "bz2", "fz"])
def test_compressed_fits(tmp_path: Path, kind: str) -> None:
    data = np.random.default_rng(5).normal(size=(40, 50)).astype(np.float32)
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(data).writeto(plain)
    if kind == "gz":
        p = tmp_path / "x.fits.gz"
        p.write_bytes(gzip.compress(plain.read_bytes()))
    elif kind == "bz2":
        p = tmp_path / "x.fits.bz2"
        p.write_bytes(bz2.compress(plain.read_bytes()))
    else:
        p = tmp_path / "x.fits.fz"
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, name="SCI", compression_type="GZIP_2")]).writeto(p)
    (f,) = read_frames(p, max_image_pixels=LIMIT)
    # tile compression quantises floats (lossy, a fraction of the noise); gzip/bzip2 are exact
    np.testing.assert_allclose(f.data, data, atol=0.1 if kind == "fz" else 0.0)
    assert f.data.dtype.isnative and f.hdu == (1 if kind == "fz" else 0)


def test_png_rgba_alpha_dropped_and_lightness(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    p = tmp_path / "img.png"
    Image.fromarray(rgba, "RGBA").save(p)
    (f,) = read_frames(p, max_image_pixels=LIMIT)
    assert f.is_display and f.is_color and f.format == "png"
    assert f.data.shape == (20, 30, 3) and f.data.dtype == np.float32
    np.testing.assert_allclose(f.data, rgba[..., :3] / 255.0, atol=1e-7)
    assert any("alpha" in n for n in f.notes)
    assert not f.mask[0, 0] and f.mask.sum() == 599
    # lightness of a display image is CIE L* of its sRGB value
    assert lightness(f.data)[1, 1] == pytest.approx(lightness(rgba[1, 1, :3] / 255.0), abs=1e-4)


def test_jpeg_grey_and_colour(tmp_path: Path) -> None:
    grey = (np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)
    pg = tmp_path / "g.jpg"
    Image.fromarray(grey, "L").save(pg, quality=95)
    (f,) = read_frames(pg, max_image_pixels=LIMIT)
    assert f.is_display and not f.is_color and f.format == "jpeg" and f.data.max() <= 1.0
    pc = tmp_path / "c.jpeg"
    Image.fromarray(np.zeros((10, 12, 3), np.uint8), "RGB").save(pc)
    (c,) = read_frames(pc, max_image_pixels=LIMIT)
    assert c.data.shape == (10, 12, 3) and c.mask.all()


@pytest.mark.parametrize(
    ("dtype", "rgb", "display"),
    [(np.uint8, False, True), (np.uint8, True, True), (np.uint16, False, True), (np.uint16, True, True),
     (np.float32, False, False)],
)
def test_tiff_depths(tmp_path: Path, dtype, rgb: bool, display: bool) -> None:
    import tifffile

    shape = (24, 20, 3) if rgb else (24, 20)
    if np.issubdtype(dtype, np.integer):
        arr = np.random.default_rng(7).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    else:
        arr = np.random.default_rng(7).normal(50, 3, shape).astype(dtype)
    p = tmp_path / "x.tif"
    tifffile.imwrite(p, arr, photometric="rgb" if rgb else "minisblack")
    (f,) = read_frames(p, max_image_pixels=LIMIT)
    assert f.format == "tiff" and f.is_display is display and f.data.dtype == np.float32
    assert f.data.shape == shape
    if display:
        np.testing.assert_allclose(f.data, arr / np.iinfo(dtype).max, atol=1e-6)
    else:
        np.testing.assert_array_equal(f.data, arr)


def test_large_tiff_memory_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tifffile

    from astro_pipeline.ingest import readers

    arr = np.zeros((600, 500, 3), np.uint8)
    arr[::7] = 200
    p = tmp_path / "big.tif"
    tifffile.imwrite(p, arr, photometric="rgb")
    monkeypatch.setattr(readers, "_MEMMAP_MIN_BYTES", 1024)  # treat it as big
    (f,) = read_frames(p, max_image_pixels=LIMIT)
    assert "read via memory map" in f.notes
    assert f.data.shape == (600, 500, 3) and f.data[7, 0, 0] == pytest.approx(200 / 255)
    assert f.data.flags.writeable and f.data.flags.c_contiguous  # a float copy, not the read-only map


def test_multipage_tiff_planes(tmp_path: Path) -> None:
    import tifffile

    stack = np.stack([np.full((6, 7), i * 10, np.uint8) for i in range(4)])
    p = tmp_path / "stack.tiff"
    tifffile.imwrite(p, stack, photometric="minisblack")
    frames = read_frames(p, max_image_pixels=LIMIT)
    assert len(frames) == 4 and [f.plane for f in frames] == [0, 1, 2, 3]
    assert frames[3].data[0, 0] == pytest.approx(30 / 255)


def test_iter_input_files_walks_skips_hidden_and_symlinks(tmp_path: Path) -> None:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / ".hidden").mkdir()
    for rel in ("a.fits", "sub/b.png", ".c.fits", ".hidden/d.fits", "notes.txt"):
        (d / rel).write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "e.fits").write_bytes(b"x")
    os.symlink(outside, d / "linkdir")
    os.symlink(outside / "e.fits", d / "link.fits")
    got = iter_input_files([d, tmp_path / "in" / "a.fits", tmp_path / "missing.fits"])
    names = [p.relative_to(tmp_path).as_posix() for p in got]
    assert names == ["in/a.fits", "in/sub/b.png", "missing.fits"]


def test_every_shared_file_reads_or_fails_cleanly(shared_data: Path) -> None:
    files = iter_input_files([shared_data / "fits"])
    assert len(files) >= 20
    ok = errors = 0
    for p in files:
        try:
            frames = read_frames(p, max_image_pixels=LIMIT)
        except IngestError as exc:
            errors += 1
            assert str(p) in str(exc) and "\n" not in str(exc)
            continue
        ok += 1
        for f in frames:
            assert f.data.dtype == np.float32 and f.data.dtype.isnative
            assert f.mask.shape == f.data.shape[:2]
            assert f.mask.any()
    assert ok >= 18
    # the two header-only HST files are the expected clean errors
    assert errors == 2


def test_integer_blank_and_degenerate_axes(tmp_path: Path) -> None:
    raw = np.arange(12 * 10, dtype=np.int16).reshape(1, 12, 10)  # NAXIS3 = 1: a 2-D image
    raw[0, 0, :3] = -32768
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BLANK"] = -32768
    p = tmp_path / "blank.fits"
    hdu.writeto(p)
    (f,) = read_frames(p, max_image_pixels=LIMIT)
    assert f.shape == (12, 10) and f.plane is None
    assert not f.mask[0, :3].any() and f.mask[0, 3:].all() and f.mask[1:].all()
    assert f.data[5, 5] == 55.0
