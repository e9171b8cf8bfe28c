"""The Python API (``astro_pipeline.colorize / upscale / enhance / inspect``), as a notebook uses it.

Real shipped weights on small inputs; real FITS files, HDUs and CCDData; the CLI run beside the
API to show both make the same products under the same names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.wcs import WCS
from PIL import Image
from typer.testing import CliRunner

import astro_pipeline as ap
from astro_pipeline.fileio import sha256_file


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _wcs(h: int, w: int) -> WCS:
    """A TAN WCS with a rotated CD matrix and an off-centre reference pixel."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [210.80, 54.35]
    wcs.wcs.crpix = [w / 3.0 + 0.7, h / 2.5 - 1.2]
    a, s = np.radians(35.0), 0.05 / 3600
    wcs.wcs.cd = [[-s * np.cos(a), s * np.sin(a)], [s * np.sin(a), s * np.cos(a)]]
    return wcs


def _sky(h: int = 48, w: int = 56, seed: int = 0) -> np.ndarray:
    """Linear data: sky + noise + a few Gaussian sources (float32, electrons/s-like)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = 0.1 + rng.normal(0, 0.01, (h, w))
    for y, x, f in ((12, 15, 3.0), (30, 40, 1.5), (20, 28, 6.0)):
        img += f * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.6**2))
    return img.astype(np.float32)


def _check_flux(res, data: np.ndarray, mask: np.ndarray | None = None) -> None:
    h, w = data.shape
    assert res.data is not None and res.data.shape == (4 * h, 4 * w) and res.data.dtype == np.float32
    blocks = res.data.reshape(h, 4, w, 4).mean(axis=(1, 3))
    valid = np.isfinite(data) if mask is None else (np.isfinite(data) & ~mask)
    np.testing.assert_allclose(blocks[valid], data[valid], rtol=1e-4, atol=1e-5)
    if mask is not None and mask.any():
        assert np.isnan(blocks[mask]).all()


def _check_saved(files) -> None:
    assert files, "save wrote nothing"
    for kind, pf in files.items():
        assert Path(pf.path).is_file(), kind
        assert sha256_file(pf.path) == pf.sha256, kind


def test_notebook_session_array_hdu_ccddata(tmp_path):
    """The issue's done-when: array, HDU and CCDData each through colorize and upscale."""
    data = _sky()
    h, w = data.shape
    wcs = _wcs(h, w)
    hdr = wcs.to_header()
    hdr["FILTER"] = "F606W"
    hdr["BUNIT"] = "ELECTRONS/S"
    hdu = fits.ImageHDU(data, header=hdr, name="SCI")
    mask = np.zeros((h, w), bool)
    mask[:3, :5] = True
    ccd = CCDData(data, unit="electron/s", wcs=wcs, mask=mask, meta={"FILTER": "F814W"})

    for label, image in (("array", data), ("hdu", hdu), ("ccddata", ccd)):
        col = ap.colorize(image, device="cpu")
        assert col.image.shape == (h, w, 3) and col.image.dtype == np.float32
        assert 0.0 <= col.image.min() and col.image.max() <= 1.0
        assert col.data is None
        assert col.stretch.method == "zscale+asinh"  # science data: stretched
        assert [m.name for m in col.models] == ["colorizer"] and all(m.version and m.sha256 for m in col.models)
        assert "snr" in col.quality.metrics
        assert col.metrics["lightness_max_abs_error"] < 0.5

        up = ap.upscale(image, device="cpu", tile_size=32)
        assert up.image.shape == (4 * h, 4 * w, 3)
        assert [m.name for m in up.models] == ["superres"]
        _check_flux(up, data, mask if label == "ccddata" else None)

        files = up.save(tmp_path / label)
        _check_saved(files)
        assert {Path(pf.path).name for pf in files.values()} == {
            f"{label}_x4.png", f"{label}_x4.tif", f"{label}_x4.fits", f"{label}_flux_x4.fits"}

        if label == "array":
            assert col.wcs is None and up.wcs is None
            continue
        # The 4x WCS maps the output centre to the input centre (within 0.25 output px).
        assert up.wcs is not None and col.wcs is not None
        centre_in = wcs.pixel_to_world((w - 1) / 2, (h - 1) / 2)
        ox, oy = up.wcs.world_to_pixel(centre_in)
        assert abs(ox - (4 * w - 1) / 2) < 0.25 and abs(oy - (4 * h - 1) / 2) < 0.25
        cx, cy = col.wcs.world_to_pixel(centre_in)
        assert abs(cx - (w - 1) / 2) < 1e-6 and abs(cy - (h - 1) / 2) < 1e-6
        # The written FITS cube carries the same 4x WCS.
        with fits.open(files["fits"].path) as hdul:
            on_disk = WCS(hdul[0].header).celestial
        ox2, oy2 = on_disk.world_to_pixel(centre_in)
        assert abs(ox2 - ox) < 1e-6 and abs(oy2 - oy) < 1e-6
    assert col.frame.provenance["filter"] == "F814W"  # the CCDData's meta reached the records
    assert col.frame.provenance["bunit"] == "electron / s"


def test_display_rule_uint8_is_not_stretched_other_ints_are(tmp_path):
    rng = np.random.default_rng(1)
    grey8 = (rng.random((32, 40)) * 255).astype(np.uint8)
    res = ap.colorize(grey8)
    assert res.stretch.method == "none" and res.frame.is_display
    from astro_pipeline.color import lightness, lightness_from_grey

    # display data keeps its own lightness: the product's L* is the grey's L*
    assert np.abs(lightness(res.image.astype(np.float64)) - lightness_from_grey(grey8 / 255.0)).max() < 0.5

    rgb8 = (rng.random((32, 40, 3)) * 255).astype(np.uint8)
    up = ap.upscale(rgb8, tile_size=32)
    assert up.stretch.method == "none" and up.data is None and up.image.shape == (128, 160, 3)
    assert set(Path(p.path).name for p in up.save(tmp_path).values()) == {"array_x4.png", "array_x4.tif"}

    for dtype in (np.uint16, np.int16, np.int32, np.float64):
        sci = (rng.random((32, 40)) * 1000).astype(dtype)
        r = ap.colorize(sci)
        assert r.stretch.method == "zscale+asinh" and not r.frame.is_display, dtype
    # the override: a float RGB display image in [0, 1]
    r = ap.colorize(rng.random((32, 40, 3)), display=True)
    assert r.stretch.method == "none"
    with pytest.raises(ValueError, match=r"looks like \(H, W, channels\)"):
        ap.colorize(rng.random((32, 40, 3)))


def test_masked_array_and_mask_keyword_are_bad_pixels():
    data = _sky(32, 36)
    bad = np.zeros(data.shape, bool)
    bad[5:9, 5:9] = True
    for image, kw in ((np.ma.MaskedArray(data, mask=bad), {}), (data, {"mask": bad})):
        up = ap.upscale(image, tile_size=32, **kw)
        _check_flux(up, data, bad)
        assert not up.frame.mask[bad].any() and up.frame.mask[~bad].all()


def test_api_and_cli_write_the_same_products_under_the_same_names(tmp_path):
    """A FITS file through ``ap.upscale(...).save(dir)`` and ``astro-pipeline upscale FILE --output dir``."""
    from astro_pipeline.cli import app

    src = tmp_path / "in" / "j8xi01_f606w_drz.fits"
    src.parent.mkdir()
    data = _sky(40, 44, seed=3)
    sci_hdr = _wcs(40, 44).to_header()
    sci_hdr["BUNIT"] = "ELECTRONS/S"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header([("FILTER", "F606W"), ("TARGNAME", "M101")])),
                  fits.ImageHDU(data, header=sci_hdr, name="SCI")]).writeto(src)
    res = ap.upscale(src, tile_size=32)
    assert res.data is not None and res.wcs is not None and res.frame.provenance["target"] == "M101"
    api_files = res.save(tmp_path / "api")
    _check_saved(api_files)
    cli = CliRunner().invoke(app, ["upscale", str(src), "--output", str(tmp_path / "cli"), "--tile-size", "32",
                                   "--device", "cpu", "--run-id", "r1"], catch_exceptions=False)
    assert cli.exit_code == 0, cli.output
    names = {k: Path(pf.path).relative_to(tmp_path / "api") for k, pf in api_files.items()}
    assert names == {"png": Path("j8xi01_f606w_drz_x4.png"), "tif": Path("j8xi01_f606w_drz_x4.tif"),
                     "fits": Path("j8xi01_f606w_drz_x4.fits"), "fits_flux": Path("j8xi01_f606w_drz_flux_x4.fits")}
    for kind, rel in names.items():
        assert (tmp_path / "cli" / rel).is_file(), kind
    # same pixels, same flux product: one processing path
    assert np.array_equal(np.asarray(Image.open(api_files["png"].path)), np.asarray(Image.open(tmp_path / "cli" / names["png"])))
    np.testing.assert_array_equal(fits.getdata(api_files["fits_flux"].path), fits.getdata(tmp_path / "cli" / names["fits_flux"]))
    # a file name as the destination: every product on that stem
    named = res.save(tmp_path / "named" / "m101.png")
    assert {Path(pf.path).name for pf in named.values()} == {"m101_x4.png", "m101_x4.tif", "m101_x4.fits",
                                                             "m101_flux_x4.fits"}
    # saving again replaces only this result's own files, under the same names
    assert {k: Path(pf.path) for k, pf in res.save(tmp_path / "api").items()} == {
        k: Path(pf.path) for k, pf in api_files.items()}
    # never over the input: an input whose name is a product name of the destination stem
    twin = tmp_path / "in" / "m101_x4.fits"
    twin.write_bytes(src.read_bytes())
    before = sha256_file(twin)
    again = ap.upscale(twin, tile_size=32).save(tmp_path / "in" / "m101.fits")
    assert sha256_file(twin) == before
    assert Path(again["fits"].path).name == f"m101-{before[:8]}_x4.fits"


def test_enhance_keeps_the_colour_step_and_the_product_record(tmp_path):
    res = ap.enhance(_sky(32, 32), tile_size=32, name="knots")
    assert res.image.shape == (128, 128, 3) and res.colorized.shape == (32, 32, 3)
    assert [m.name for m in res.models] == ["colorizer", "superres"]
    files = res.save(tmp_path)
    assert {Path(p.path).name for p in files.values()} == {"knots_color_x4.png", "knots_color_x4.tif",
                                                      "knots_color_x4_colorstep.png", "knots_color_x4.fits"}
    product = res.product(files)
    assert product.ok and product.files == files and product.models == res.models
    assert product.stretch == res.stretch and product.operation == "enhance"


def test_models_load_once_per_process_and_device_is_an_option():
    from astro_pipeline import engines

    first = ap.api.engines_for("enhance", device="cpu")
    n = len(engines._CACHE)
    again = ap.api.engines_for("enhance", device="auto" if not torch.cuda.is_available() else "cpu")
    assert again.colorizer is first.colorizer and again.upscaler is first.upscaler
    ap.colorize(np.ones((16, 16), np.float32), device="cpu")
    ap.upscale(np.ones((16, 16), np.float32), device="cpu")
    assert len(engines._CACHE) == n  # nothing loaded again
    res = ap.colorize(np.ones((16, 16), np.float32), device="cpu")
    assert res.params["colorizer"]["device"] == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            ap.colorize(np.ones((16, 16), np.float32), device="cuda")


def test_inspect_reports_metrics_flags_values_and_thresholds(tmp_path):
    from astro_pipeline.config import QualityThresholds, Settings

    rng = np.random.default_rng(2)
    noisy = rng.normal(0.0, 1.0, (64, 64)).astype(np.float32)  # noise only: low signal
    reports = ap.inspect(noisy)
    assert len(reports) == 1
    rep = reports[0]
    assert rep.shape == (64, 64) and not rep.is_display
    assert {"background", "noise", "snr", "dynamic_range", "blank_fraction"} <= set(rep.metrics)
    assert rep.flags, "pure noise must raise a flag"
    for f in rep.flags:
        assert f.value is not None and f.threshold is not None and f.comparison in ("<", ">")
    d = rep.as_dict()
    assert d["flags"][0]["threshold"] == rep.flags[0].threshold

    # the thresholds are the settings': a looser one lifts the flag
    names = rep.flag_names
    loose = Settings(quality=QualityThresholds(noisy_snr_min=0.0, low_signal_dynamic_range_min=0.0))
    assert not set(names) & set(ap.inspect(noisy, settings=loose)[0].flag_names)

    # a file with two frames: one report each; colorize asks which
    cube = tmp_path / "two.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_sky(24, 24), name="SCI", ver=1),
                  fits.ImageHDU(_sky(24, 24, seed=9), name="SCI", ver=2)]).writeto(cube)
    reps = ap.inspect(cube)
    assert [r.hdu for r in reps] == [1, 2]
    with pytest.raises(ValueError, match=r"holds 2 frames .*frame=0\.\.1"):
        ap.colorize(cube)
    second = ap.colorize(cube, frame=1)
    assert second.frame.hdu == 2
    assert {Path(p.path).name for p in second.save(tmp_path / "o").values()} == {"two_2_color.png", "two_2_color.tif",
                                                                               "two_2_color.fits"}


def test_bad_inputs_give_clear_errors(tmp_path):
    from astro_pipeline.ingest.frame import IngestError

    with pytest.raises(TypeError, match="give a path, a numpy array"):
        ap.colorize([[1, 2], [3, 4]])
    with pytest.raises(TypeError, match="not images"):
        ap.colorize(np.ones((8, 8), bool))
    with pytest.raises(IngestError, match="no such file"):
        ap.colorize(tmp_path / "missing.fits")
    with pytest.raises(ValueError, match="describe in-memory data"):
        ap.colorize(tmp_path / "missing.fits", wcs=_wcs(8, 8))
    with pytest.raises(IngestError, match="holds no data"):
        ap.colorize(fits.ImageHDU())
    with pytest.raises(IngestError, match="display values must lie in"):
        ap.colorize(np.full((8, 8), 3.0), display=True)
    with pytest.raises(ValueError, match="mask of shape"):
        ap.colorize(np.ones((8, 8), np.float32), mask=np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="name="):
        ap.colorize(np.ones((8, 8), np.float32), name="../escape")
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  = T" + b" " * 100)
    with pytest.raises(IngestError, match="bad.fits"):
        ap.inspect(bad)
