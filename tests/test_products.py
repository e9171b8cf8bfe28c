"""Products: mirrored paths, suffixes, PNG/TIFF/FITS contents, WCS round trip, flux product, Lupton."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image
from model_helpers import random_weights

from astro_pipeline.color import lightness
from astro_pipeline.inference import Engine
from astro_pipeline.config import QualityThresholds
from astro_pipeline.engines import Engines
from astro_pipeline.products import (
    AI_LABEL,
    FLUX_LABEL,
    Operation,
    Product,
    ProductFile,
    ProductStatus,
    process_file,
    scale_wcs,
    write_lupton_composites,
)
from astro_pipeline.products.writers import preview as _preview

LIMIT = 1_000_000_000  # an explicit pixel limit for the readers
BUDGET = 8 * 2**30  # an explicit memory budget (bytes)


def _process(path, *, operation, output_dir, colorizer=None, upscaler=None, input_root=None, run_id=None):
    """``process_file`` with default thresholds and pixel limit; the products of the file."""
    return process_file(path, operation=operation, engines=Engines(colorizer=colorizer, upscaler=upscaler),
                        output_dir=output_dir, quality=QualityThresholds(), max_image_pixels=LIMIT,
                        memory_budget=BUDGET, input_root=input_root, run_id=run_id).products


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engines():
    torch.set_num_threads(1)
    col = Engine(*random_weights("colorize", seed=2), device="cpu", precision="fp32", batch_size=8)
    with torch.no_grad():
        col.model.head.weight.mul_(2000.0)  # vivid random chroma, so lightness keeping is really tested
    up = Engine(*random_weights("superres", seed=3), device="cpu", precision="fp32", batch_size=8)
    return col, up


def _wcs_header(h, w, *, crpix=(20.5, 18.0), scale_deg=1.1e-5, rot=0.3):
    c, s = np.cos(rot), np.sin(rot)
    hdr = fits.Header()
    hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
    hdr["CRVAL1"], hdr["CRVAL2"] = 210.80227, 54.34895
    hdr["CRPIX1"], hdr["CRPIX2"] = crpix
    hdr["CD1_1"], hdr["CD1_2"] = -scale_deg * c, scale_deg * s
    hdr["CD2_1"], hdr["CD2_2"] = scale_deg * s, scale_deg * c
    return hdr


def _source_image(h, w, x, y, *, sigma=1.5, seed=0):
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    img = 5.0 + rng.normal(0, 0.3, (h, w)) + 400.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return img.astype(np.float32)


def _write_fits(path: Path, images, *, target="M101", filt="F814W", bunit="ELECTRONS/S"):
    prim = fits.PrimaryHDU()
    prim.header["TELESCOP"], prim.header["INSTRUME"] = "HST", "ACS"
    prim.header["TARGNAME"], prim.header["FILTER"] = target, filt
    prim.header["DATE-OBS"], prim.header["EXPTIME"] = "2006-02-10", 720.0
    hdus = [prim]
    for img in images:
        h = _wcs_header(*img.shape)
        h["EXTNAME"], h["BUNIT"] = "SCI", bunit
        hdus.append(fits.ImageHDU(img, header=h))
    fits.HDUList(hdus).writeto(path)
    return path


def _centroid(img, x0, y0, r):
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    m = (xx - x0) ** 2 + (yy - y0) ** 2 <= r * r
    wgt = np.where(m, np.clip(img - np.median(img), 0, None), 0)
    return float((wgt * xx).sum() / wgt.sum()), float((wgt * yy).sum() / wgt.sum())


def test_scale_wcs_formula_and_sip():
    hdr = _wcs_header(40, 48)
    w = WCS(hdr)
    w4 = scale_wcs(w, 4)
    assert np.allclose(w4.wcs.crpix, 4 * np.asarray(w.wcs.crpix) - 1.5)
    assert np.allclose(w4.wcs.cd, w.wcs.cd / 4)
    xs, ys = np.array([0.0, 13.2, 47.0]), np.array([0.0, 21.7, 39.0])
    a, b = w.pixel_to_world(xs, ys), w4.pixel_to_world(4 * xs + 1.5, 4 * ys + 1.5)
    assert a.separation(b).max().arcsec < 1e-6
    # SIP distortion: coefficients rescaled so the distorted mapping still lines up
    sip = _wcs_header(400, 400, crpix=(200.0, 200.0))
    sip["CTYPE1"], sip["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    sip["A_ORDER"], sip["B_ORDER"] = 2, 2
    sip["A_2_0"], sip["A_1_1"], sip["B_0_2"], sip["B_1_1"] = 3e-6, -2e-6, 4e-6, 1e-6
    ws = WCS(sip)
    ws4 = scale_wcs(ws, 4)
    xs, ys = np.array([0.0, 120.0, 399.0]), np.array([399.0, 50.0, 0.0])
    sep = ws.pixel_to_world(xs, ys).separation(ws4.pixel_to_world(4 * xs + 1.5, 4 * ys + 1.5))
    assert sep.max().arcsec < 1e-5
    # cdelt-style WCS
    cd = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": 20.0,
                      "CRPIX1": 5.0, "CRPIX2": 6.0, "CDELT1": -1e-4, "CDELT2": 1e-4})
    wc4 = scale_wcs(WCS(cd), 4)
    assert np.allclose(wc4.wcs.cdelt, [-2.5e-5, 2.5e-5]) and np.allclose(wc4.wcs.crpix, [18.5, 22.5])


def test_upscale_fits_wcs_round_trip_and_flux_product(tmp_path, engines):
    _, up = engines
    x0, y0 = 17.3, 22.6
    (tmp_path / "in").mkdir()
    src = _write_fits(tmp_path / "in" / "field_drz.fits", [_source_image(40, 48, x0, y0)])
    prods = _process(src, operation="upscale", output_dir=tmp_path / "out", input_root=tmp_path / "in",
                         upscaler=up, run_id="r1")
    assert len(prods) == 1
    p = prods[0]
    assert p.status == "ok", p.error
    assert set(p.files) == {"png", "tif", "fits", "fits_flux"}
    assert p.files["fits"].path == (tmp_path / "out" / "field_drz_x4.fits").resolve()
    assert p.tile_count == up.stats.tiles > 1
    with fits.open(p.files["fits"].path) as hdul:
        hdr, cube = hdul[0].header, hdul[0].data
    assert cube.shape == (3, 160, 192)
    assert AI_LABEL in str(hdr["COMMENT"]) and hdr["LABEL"] == AI_LABEL
    assert hdr["SRCSHA"] == p.source_sha256 and hdr["MODEL1"] == up.meta.name and hdr["TARGNAME"] == "M101"
    w_in = WCS(fits.getheader(src, 1))
    w_out = WCS(hdr).celestial
    # the same feature sits at the same sky position in input and output
    cx_in, cy_in = _centroid(fits.getdata(src, 1), x0, y0, 5)
    cx_out, cy_out = _centroid(cube.mean(axis=0), 4 * x0 + 1.5, 4 * y0 + 1.5, 20)
    sep = w_in.pixel_to_world(cx_in, cy_in).separation(w_out.pixel_to_world(cx_out, cy_out)).arcsec
    pix_arcsec = 1.1e-5 * 3600
    assert sep < 0.25 * pix_arcsec, sep
    # linear flux product: block means give back the input, original BUNIT, no "not for photometry" label
    with fits.open(p.files["fits_flux"].path) as hdul:
        fh, flux = hdul[0].header, hdul[0].data
    assert fh["BUNIT"] == "ELECTRONS/S" and fh["FLUXCONS"] is True
    assert "not for photometry" not in repr(fh) and fh["LABEL"] == FLUX_LABEL[:68]
    blocks = flux.reshape(40, 4, 48, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(blocks, fits.getdata(src, 1), rtol=1e-5, atol=1e-4)
    assert WCS(fh).pixel_to_world(4 * x0 + 1.5, 4 * y0 + 1.5).separation(w_in.pixel_to_world(x0, y0)).arcsec < 1e-6
    # previews: 4x, labelled, provenance inside
    png = Image.open(p.files["png"].path)
    assert png.size == (192, 160) and png.mode == "RGB"
    assert png.text["Description"] == AI_LABEL
    assert json.loads(png.text["Comment"])["source_sha256"] == p.source_sha256
    import tifffile

    with tifffile.TiffFile(p.files["tif"].path) as tf:
        assert tf.pages[0].dtype == np.uint16 and tf.pages[0].shape == (160, 192, 3)
        assert AI_LABEL in tf.pages[0].description
    assert not list((tmp_path / "out").rglob("*.tmp")), "temporary files left behind"


def test_multi_frame_suffixes_colorize_keeps_lightness(tmp_path, engines):
    col, _ = engines
    src = _write_fits(tmp_path / "two.fits", [_source_image(30, 34, 10, 12), _source_image(30, 34, 20, 8, seed=1)])
    out = tmp_path / "o"
    prods = _process(src, operation="colorize", output_dir=out, input_root=tmp_path, colorizer=col)
    assert [p.status for p in prods] == ["ok", "ok"], [p.error for p in prods]
    assert sorted(f.name for f in out.iterdir()) == sorted(
        f"two_{h}_color.{e}" for h in (1, 2) for e in ("png", "tif", "fits"))
    for p in prods:
        assert p.metrics["lightness_max_abs_error"] < 0.5
        assert p.models[0].name == col.meta.name and p.stretch.method == "zscale+asinh"
        cube = fits.getdata(p.files["fits"].path)
        assert cube.shape == (3, 30, 34)
        assert np.std(cube[0] - cube[2]) > 1e-3  # really coloured


def test_colour_input_reduced_to_lightness(tmp_path, engines):
    col, _ = engines
    rng = np.random.default_rng(0)
    rgb = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(rgb).save(tmp_path / "in" / "X.png")
    prods = _process(tmp_path / "in" / "X.png", operation="colorize", output_dir=tmp_path / "out",
                         input_root=tmp_path / "in", colorizer=col)
    p = prods[0]
    assert p.status == "ok" and set(p.files) == {"png", "tif"}
    assert p.metrics["lightness_max_abs_error"] < 0.5
    out = np.asarray(Image.open(tmp_path / "out" / "X_color.png")).astype(np.float64) / 255
    assert out.shape == (24, 40, 3)
    # after 8-bit quantisation the lightness still follows the input's own L*
    assert np.abs(lightness(out) - lightness(rgb / 255.0)).max() < 1.0


def test_bad_file_gives_error_product_and_never_overwrites_the_input(tmp_path, engines):
    col, up = engines
    bad = tmp_path / "broken.fits"
    bad.write_bytes(b"SIMPLE  = T" + b"x" * 50)
    prods = _process(bad, operation="upscale", output_dir=tmp_path / "o", upscaler=up)
    assert len(prods) == 1 and prods[0].status == "error"
    assert str(bad) in prods[0].error and prods[0].files == {}
    img = tmp_path / "same.png"
    Image.fromarray(np.full((10, 10), 128, np.uint8)).save(img)
    before = img.read_bytes()
    prods = _process(img, operation="colorize", output_dir=tmp_path, colorizer=col)  # products beside the input
    assert prods[0].status == "ok" and prods[0].files["png"].path == (tmp_path / "same_color.png").resolve()
    assert img.read_bytes() == before


def test_png_preview_is_capped():
    big = np.zeros((8200, 12, 3), np.float32)
    big[:, :, 1] = 1.0
    prev = _preview(big)
    assert prev.shape == (4100, 6, 3) and prev.dtype == np.uint8
    assert prev[..., 1].min() == 255 and prev[..., 0].max() == 0
    assert _preview(np.zeros((100, 8192), np.float32)).shape == (100, 8192)


def _three_filter_products(tmp_path, col):
    prods = []
    for i, filt in enumerate(["F814W", "F435W", "F606W"]):
        img = _source_image(32, 32, 10 + 4 * i, 16, seed=i)
        src = _write_fits(tmp_path / f"m101_{filt.lower()}.fits", [img], filt=filt)
        prods += _process(src, operation="colorize", output_dir=tmp_path / "out", input_root=tmp_path,
                              colorizer=col)
    return prods


def test_lupton_composite_for_three_filters(tmp_path, engines):
    col, _ = engines
    prods = _three_filter_products(tmp_path, col)
    assert all(p.status == "ok" for p in prods), [p.error for p in prods]
    written = write_lupton_composites(prods, output_dir=tmp_path / "out", input_root=tmp_path,
                                      max_image_pixels=LIMIT)
    assert len(written) == 1 and written[0].file.path.name == "M101_f435w_f606w_f814w_lupton.png"
    im = Image.open(written[0].file.path)
    assert im.size == (32, 32)
    meta = json.loads(im.text["Comment"])
    assert meta["filters"] == {"R": "F814W", "G": "F606W", "B": "F435W"}
    arr = np.asarray(im).astype(int)
    # the F814W source (x=10) is red, the F435W source (x=14) blue
    assert arr[16, 10, 0] > arr[16, 10, 2] and arr[16, 14, 2] > arr[16, 14, 0]
    assert written[0].filters == {"R": "F814W", "G": "F606W", "B": "F435W"}
    assert [m.provenance["filter"] for m in written[0].members] == ["F435W", "F606W", "F814W"]  # the member products
    # written beside the members' products when no folder is given
    (beside,) = write_lupton_composites(prods, max_image_pixels=LIMIT)
    assert beside.file.path.parent == prods[0].files["png"].path.parent
    # only two filters: no composite
    assert write_lupton_composites(prods[:2], output_dir=tmp_path / "out2", max_image_pixels=LIMIT) == []


def test_lupton_on_shared_trilogy_cutouts(shared_data, tmp_path):
    hst = shared_data / "fits" / "hst"
    files = sorted(hst.glob("trilogy__*_drz_cutout_20asec.fits"))
    if len(files) != 3:
        pytest.skip("the three trilogy cut-outs are not in the shared data")
    from astro_pipeline.ingest.readers import read_frames

    prods = []
    for f in files:
        fr = read_frames(f, max_image_pixels=LIMIT)[0]
        prods.append(Product(run_id=None, source_path=str(f), source_sha256=fr.source_sha256, hdu=fr.hdu,
                             plane=None, frame_key=fr.key, operation=Operation.COLORIZE, status=ProductStatus.OK,
                             provenance=dict(fr.provenance),
                             files={"fits": ProductFile(path=f, sha256=fr.source_sha256)}))
    written = write_lupton_composites(prods, output_dir=tmp_path, input_root=hst, max_image_pixels=LIMIT)
    assert len(written) == 1 and written[0].file.path.name.endswith("_f475w_f606w_f814w_lupton.png")
    arr = np.asarray(Image.open(written[0].file.path))
    assert arr.shape == (500, 500, 3) and arr.std() > 5


def test_products_get_the_umask_permissions_not_a_temp_files_0600(tmp_path, engines):
    import os
    import stat

    _, up = engines
    src = _write_fits(tmp_path / "in.fits", [_source_image(16, 16, 8, 8)])
    old = os.umask(0o022)
    try:
        (p,) = _process(src, operation="upscale", output_dir=tmp_path / "out", upscaler=up)
    finally:
        os.umask(old)
    assert p.status == "ok", p.error
    modes = {kind: stat.S_IMODE(Path(f.path).stat().st_mode) for kind, f in p.files.items()}
    assert set(modes.values()) == {0o644}, modes
