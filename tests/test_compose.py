"""``astro_pipeline.compose`` and ``astro-pipeline compose``: colour from real bands, and the records of it.

Synthetic bands with known headers (PHOTFLAM, BUNIT, WCS), real FITS files, the sample's M101
frames, the real catalog and manifest; the shipped colorizer for the one-band case.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image
from typer.testing import CliRunner

import astro_pipeline as ap
from astro_pipeline.composition.stretch import apply_colour_stretch
from astro_pipeline.fileio import sha256_file
from astro_pipeline.ingest.stretch import apply_stretch
from astro_pipeline.products.process import invert_stretch

H, W = 40, 48
PHOTFLAM = {"F435W": 3.1e-19, "F606W": 7.9e-20, "F814W": 7.0e-20}
SKY = {"F435W": 0.03, "F606W": 0.11, "F814W": 0.09}  # e-/s, different per band


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _wcs_header(shift_px: float = 0.0) -> fits.Header:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [210.8, 54.35]
    w.wcs.crpix = [W / 2 + 0.5 + shift_px, H / 2 + 0.5]
    w.wcs.cd = [[-0.05 / 3600, 0], [0, 0.05 / 3600]]
    return w.to_header()


def _band(filt: str, seed: int, *, photflam: float | None = None, bunit: str = "ELECTRONS/S",
          shift_px: float = 0.0, data: np.ndarray | None = None) -> fits.ImageHDU:
    """A band with its own pattern (one source per filter at a different place), sky and noise."""
    rng = np.random.default_rng(seed)
    if data is None:
        yy, xx = np.mgrid[:H, :W]
        x0 = {"F435W": 10, "F606W": 24, "F814W": 38}.get(filt, 24)
        data = SKY.get(filt, 0.05) + rng.normal(0, 0.01, (H, W)) + 2.0 * np.exp(-((yy - 20) ** 2 + (xx - x0) ** 2) / 8.0)
    hdr = _wcs_header(shift_px)
    hdr["FILTER"], hdr["BUNIT"], hdr["INSTRUME"], hdr["TARGNAME"] = filt, bunit, "ACS", "SYNTH"
    pf = PHOTFLAM.get(filt, 1e-19) if photflam is None else photflam
    if pf:
        hdr["PHOTFLAM"] = pf
    return fits.ImageHDU(np.asarray(data, dtype=np.float32), header=hdr, name="SCI")


def _x_of(res, slot: str) -> np.ndarray:
    """A given slot's linear data rebuilt from the records alone: (data - sky) * factor, averaged."""
    (channel,) = [c for c in res.channels if c.slot == slot]
    frames = {(b.frame.source_sha256): b.frame for b in res.composed.bands}
    total = None
    for src in channel.sources:
        fr = frames[src.source_sha256]
        x = (fr.data.astype(np.float64) - src.sky) * src.factor * src.weight
        total = x if total is None else total + x
    return total.astype(np.float32)


def test_three_bands_each_channel_is_its_own_band_exactly():
    hdus = {"F814W": _band("F814W", 1), "F435W": _band("F435W", 2), "F606W": _band("F606W", 3)}
    res = ap.compose(hdus)
    assert isinstance(res, ap.Result) and res.operation == "compose"
    assert res.image.shape == (H, W, 3) and res.image.dtype == np.float32
    assert res.channels_text == "R:F814W, G:F606W, B:F435W" and not res.visualisation
    assert all(c.inferred is None for c in res.channels)
    st = res.composed.colour_stretch
    assert st.unit == "erg/s/cm2/Angstrom" and st.method == "asinh"
    assert res.stretch.method == "shared-asinh" and res.stretch.vmax == st.maximum
    for i, slot in enumerate("RGB"):
        (ch,) = [c for c in res.channels if c.slot == slot]
        (src,) = ch.sources
        assert src.flux == "PHOTFLAM" and src.factor == PHOTFLAM[src.filter]
        assert abs(src.sky - SKY[src.filter]) < 0.005  # per-band sky found
        x = _x_of(res, slot)
        np.testing.assert_array_equal(res.image[..., i], apply_colour_stretch(x, st))  # exactly its own band
        np.testing.assert_allclose(res.data[..., i], x, rtol=1e-6, atol=1e-30)
        # and the recorded stretch inverts back to the linear data where it is not clipped
        inside = (res.image[..., i] > 0.01) & (res.image[..., i] < 0.99)
        back = invert_stretch(res.image[..., i], res.stretch)
        np.testing.assert_allclose(back[inside], x[inside], rtol=2e-3, atol=st.maximum * 1e-3)
    # each source lands in its own channel: F435W (x=10) blue, F606W (x=24) green, F814W (x=38) red
    assert res.image[20, 10].argmax() == 2 and res.image[20, 24].argmax() == 1 and res.image[20, 38].argmax() == 0
    # the same bands given by slot name make the same image
    again = ap.compose({"red": hdus["F814W"], "green": hdus["F606W"], "blue": hdus["F435W"]})
    np.testing.assert_array_equal(again.image, res.image)


def test_sky_is_neutral_and_near_black():
    res = ap.compose([_band("F435W", 4), _band("F606W", 5), _band("F814W", 6)])
    yy, xx = np.mgrid[:H, :W]
    sky = (np.abs(yy - 20) > 8)  # far from the sources
    medians = [float(np.median(res.image[..., c][sky])) for c in range(3)]
    assert max(medians) < 0.05, medians  # near black, although the raw skies differ 4x
    assert max(medians) - min(medians) < 0.02, medians  # neutral


def test_flat_f_lambda_source_is_grey():
    """Equal F_lambda in every band (counts = F / PHOTFLAM) comes out neutral: the common unit is F_lambda."""
    yy, xx = np.mgrid[:H, :W]
    flux = 1e-19 * (0.05 + 3.0 * np.exp(-((yy - 20) ** 2 + (xx - 24) ** 2) / 30.0))
    bands = [_band(f, 0, data=flux / PHOTFLAM[f]) for f in PHOTFLAM]
    res = ap.compose(bands)
    np.testing.assert_allclose(res.image[..., 0], res.image[..., 1], atol=2e-6)
    np.testing.assert_allclose(res.image[..., 1], res.image[..., 2], atol=2e-6)
    assert res.image.max() > 0.5


@pytest.mark.parametrize(("given", "missing", "text", "rule"), [
    (("F814W", "F435W"), 1, "R:F814W, G:inferred(mean), B:F435W", "mean"),
    (("F814W", "F606W"), 2, "R:F814W, G:F606W, B:inferred(nearer G)", "nearer"),
    (("F606W", "F435W"), 0, "R:inferred(nearer G), G:F606W, B:F435W", "nearer"),
])
def test_two_bands_stay_unchanged_and_the_third_follows_the_rule(given, missing, text, rule, tmp_path):
    res = ap.compose({f: _band(f, 10 + i) for i, f in enumerate(given)})
    assert res.channels_text == text and res.visualisation
    st = res.composed.colour_stretch
    for i, slot in enumerate("RGB"):
        if i == missing:
            continue
        np.testing.assert_array_equal(res.image[..., i], apply_colour_stretch(_x_of(res, slot), st))
    if rule == "mean":
        np.testing.assert_array_equal(res.image[..., 1], (res.image[..., 0] + res.image[..., 2]) * np.float32(0.5))
    else:
        np.testing.assert_array_equal(res.image[..., missing], res.image[..., 1])
    (inferred,) = [c for c in res.channels if c.inferred]
    assert inferred.inferred == rule and not inferred.sources and res.models == ()
    assert np.isnan(res.data[..., missing]).all()
    # the files say it is a visualisation
    files = res.save(tmp_path)
    hdr = fits.getheader(files["fits"].path)
    assert hdr["INFERRED"] is True and hdr["VISUAL"] is True and "visualisation" in hdr["LABEL"]
    assert hdr["CHANNELS"] == text and hdr[f"CHAN_{'RGB'[missing]}"].startswith("inferred(")
    meta = json.loads(Image.open(files["png"].path).text["Comment"])
    assert meta["channels"] == text and meta["visualisation"] is True
    for pf in files.values():
        assert sha256_file(pf.path) == pf.sha256


def test_uint8_display_bands_come_back_within_one_level(tmp_path):
    rng = np.random.default_rng(7)
    planes = [(rng.random((H, W)) * 255).astype(np.uint8) for _ in range(3)]
    res = ap.compose({"red": planes[0], "green": planes[1], "blue": planes[2]})
    for i in range(3):
        assert np.abs(np.rint(res.image[..., i] * 255).astype(int) - planes[i].astype(int)).max() <= 1
    # a grey PNG file in one slot, science bands in the others: the PNG's channel is its own values
    png = tmp_path / "halpha.png"
    Image.fromarray(planes[0]).save(png)
    mixed = ap.compose({"red": png, "F606W": _band("F606W", 1), "F435W": _band("F435W", 2)})
    assert mixed.channels_text == "R:halpha.png, G:F606W, B:F435W"
    (red,) = [c for c in mixed.channels if c.slot == "R"]
    assert red.sources[0].flux == "display"
    np.testing.assert_array_equal(np.rint(mixed.image[..., 0] * 255).astype(np.uint8), planes[0])
    saved = np.asarray(Image.open(mixed.save(tmp_path / "out")["png"].path))
    np.testing.assert_array_equal(saved[..., 0], planes[0])  # and in the written PNG


def test_unknown_flux_scale_normalises_each_band_and_says_so():
    bands = {"F814W": _band("F814W", 1), "F606W": _band("F606W", 2, photflam=0.0), "F435W": _band("F435W", 3)}
    res = ap.compose(bands)
    assert res.composed.colour_stretch.unit == "per-band"
    fluxes = {c.slot: c.sources[0].flux for c in res.channels}
    assert all(f.startswith("per-band (99.5th percentile)") for f in fluxes.values())
    assert "F606W" in fluxes["G"] and "PHOTFLAM/PHOTFNU zero or missing" in fluxes["G"]
    for i, slot in enumerate("RGB"):  # still each channel its own band
        np.testing.assert_array_equal(res.image[..., i], apply_colour_stretch(_x_of(res, slot), res.composed.colour_stretch))


def test_photfnu_and_calibrated_bunit_reach_the_same_scale():
    from astro_pipeline.composition.flux import C_JY_ANGSTROM, flux_scale
    from astro_pipeline.ingest.objects import frames_from

    hdu = _band("F606W", 1, photflam=0.0)
    hdu.header["PHOTFNU"] = 1.2e-7
    hdu.header["PHOTPLAM"] = 5887.0
    (fr,) = frames_from(hdu, max_image_pixels=10**9)
    s = flux_scale(fr, pivot_nm=606.0)
    assert s.how == "PHOTFNU" and s.factor == pytest.approx(1.2e-7 / (C_JY_ANGSTROM * 5887.0**2))
    (fr,) = frames_from(_band("F606W", 1, photflam=0.0, bunit="Jy"), max_image_pixels=10**9)
    s = flux_scale(fr, pivot_nm=606.0)
    assert s.how == "BUNIT Jy" and s.factor == pytest.approx(1e-23 * 2.998e18 / 6060.0**2, rel=1e-3)
    (fr,) = frames_from(_band("F606W", 1, bunit="ELECTRONS"), max_image_pixels=10**9)
    assert not flux_scale(fr, pivot_nm=606.0).known  # counts without EXPTIME: unknown, not guessed


def test_two_bands_in_one_slot_are_averaged_with_equal_weights():
    res = ap.compose({"F775W": _band("F775W", 1), "F814W": _band("F814W", 2), "F606W": _band("F606W", 3),
                      "F435W": _band("F435W", 4)})
    assert res.channels_text == "R:F775W+F814W, G:F606W, B:F435W"
    (red,) = [c for c in res.channels if c.slot == "R"]
    assert [s.weight for s in red.sources] == [0.5, 0.5]
    np.testing.assert_allclose(res.image[..., 0], apply_colour_stretch(_x_of(res, "R"), res.composed.colour_stretch),
                               atol=1e-6)


def test_band_completion_model_plugs_in_and_is_recorded():
    from astro_pipeline.composition.fill import BandCompletion, find_band_completion, is_band_completion
    from astro_pipeline.config import Settings
    from astro_pipeline.products.types import ModelRecord

    class HalfOfRed:
        """A deterministic stand-in with the interface: G = 0.5 R, and it scribbles on the given slots."""

        calls: list[tuple[bool, bool, bool]] = []

        @property
        def model(self) -> ModelRecord:
            return ModelRecord(name="halfred", version="1.0", sha256="ab" * 32, arch="Test")

        def complete(self, channels, present):
            self.calls.append(present)
            out = np.full_like(channels, 0.9)
            out[..., 1] = channels[..., 0] * 0.5
            return out

    model = HalfOfRed()
    assert isinstance(model, BandCompletion)
    bands = {"F814W": _band("F814W", 1), "F435W": _band("F435W", 2)}
    rule = ap.compose(bands)
    res = ap.compose(bands, band_model=model)
    assert model.calls == [(True, False, True)]
    assert res.channels_text == "R:F814W, G:inferred(halfred 1.0), B:F435W"
    assert [m.name for m in res.models] == ["halfred"]
    np.testing.assert_array_equal(res.image[..., 0], rule.image[..., 0])  # given channels untouched
    np.testing.assert_array_equal(res.image[..., 2], rule.image[..., 2])
    np.testing.assert_allclose(res.image[..., 1], res.image[..., 0] * 0.5, atol=1e-7)
    assert ap.compose(bands, band_model=model, fill="rule").channels_text == rule.channels_text
    # the registry: the shipped colorizer is not a band model, so the rule applies by default
    assert find_band_completion(Settings()) is None
    with pytest.raises(ValueError, match="no band-completion model"):
        ap.compose(bands, fill="model")
    assert is_band_completion(type("M", (), {"task": "colorize", "color_space": "bands+lab"})())
    assert is_band_completion(type("M", (), {"task": "band_completion", "color_space": "srgb"})())
    assert not is_band_completion(type("M", (), {"task": "colorize", "color_space": "lab"})())


def test_one_band_uses_the_colorizer():
    res = ap.compose({"F606W": _band("F606W", 1)})
    assert res.channels_text.startswith("L:F606W, R:inferred(colorizer ")
    assert [m.name for m in res.models] == ["colorizer"] and res.visualisation
    assert res.image.shape == (H, W, 3)


def test_lupton_option_mixes_channels():
    bands = [_band("F435W", 1), _band("F606W", 2), _band("F814W", 3)]
    asinh, lupton = ap.compose(bands), ap.compose(bands, stretch="lupton")
    assert lupton.composed.colour_stretch.method == "lupton" and lupton.stretch.method == "lupton"
    assert 0 <= lupton.image.min() and lupton.image.max() <= 1
    assert not np.allclose(asinh.image, lupton.image, atol=0.02)


def test_bands_must_share_a_grid_and_other_errors():
    from astro_pipeline.composition import GridError

    with pytest.raises(GridError, match="one pixel grid"):
        ap.compose([_band("F435W", 1), _band("F814W", 2, shift_px=2.0)])
    small = fits.ImageHDU(np.ones((10, 10), np.float32), header=fits.Header([("FILTER", "F606W")]))
    with pytest.raises(GridError, match="10x10"):
        ap.compose([_band("F435W", 1), small])
    with pytest.raises(ValueError, match="no filter"):
        ap.compose([np.ones((H, W), np.float32), _band("F435W", 1)])
    with pytest.raises(ValueError, match="neither a colour slot"):
        ap.compose({"purple": _band("F435W", 1)})
    with pytest.raises(ValueError, match="colour image"):
        ap.compose({"red": np.zeros((H, W, 3), np.uint8) + np.arange(3, dtype=np.uint8), "F435W": _band("F435W", 1)})


# --- the CLI on the sample's three M101 filters ------------------------------------------------------


@pytest.fixture(scope="module")
def m101(tmp_path_factory) -> list[Path]:
    from astro_pipeline.config import Settings
    from astro_pipeline.sample import build_sample

    index = build_sample(mini=True, cache_dir=Settings().cache_dir)
    return sorted(index.path_of(i) for i in index.items if i.field == "m101" and i.archive == "mast")


def _cli(args: list[str]):
    from astro_pipeline.cli import app

    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_cli_compose_sample_m101_manifest_lists_channels(m101, tmp_path):
    out = tmp_path / "out"
    res = _cli(["compose", *map(str, m101), "--output", str(out), "--run-id", "m101"])
    assert res.exit_code == 0, res.output
    assert "R:F814W, G:F606W, B:F435W" in res.output
    df = pd.read_parquet(out / "manifests" / "m101.parquet")
    assert len(df) == 1
    row = df.iloc[0]
    assert row["operation"] == "compose" and row["status"] == "ok"
    assert row["channels"] == "R:F814W, G:F606W, B:F435W" and not row["visualisation"]
    assert row["filter"] == "F435W/F606W/F814W"
    detail = json.loads(row["channels_detail"])
    assert [c["sources"][0]["filter"] for c in detail] == ["F814W", "F606W", "F435W"]
    assert {Path(c["sources"][0]["source_path"]).name for c in detail} == {p.name for p in m101}
    png = out / row["png_path"]
    assert png.name == "NGC5457_rgb.png" and sha256_file(png) == row["png_sha256"]  # naming.field_product_path
    assert Path(row["fits_path"]).name == "NGC5457_rgb.fits" and Path(row["tif_path"]).name == "NGC5457_rgb.tif"
    hdr = fits.getheader(out / row["fits_path"])
    assert hdr["CHANNELS"] == "R:F814W, G:F606W, B:F435W" and hdr["INFERRED"] is False
    assert WCS(hdr).celestial.has_celestial  # the reference band's WCS
    # the catalog holds the same record
    from astro_pipeline.catalog import Catalog

    with Catalog.for_output(out) as cat:
        stats = cat.stats()
    assert stats["products_by_operation"] == {"compose": 1}
    # two of the bands into the same folder: another composite of the field, under its own name
    first_sha = sha256_file(png)
    res = _cli(["compose", str(m101[0]), str(m101[2]), "--output", str(out), "--run-id", "m101-two"])
    assert res.exit_code == 0, res.output
    two = pd.read_parquet(out / "manifests" / "m101-two.parquet").iloc[0]
    assert two["channels"] == "R:F814W, G:inferred(mean), B:F435W"
    assert re.fullmatch(r"NGC5457-[0-9a-f]{8}_rgb\.png", Path(two["png_path"]).name), two["png_path"]
    assert sha256_file(png) == first_sha  # the three-band composite is untouched
    # the same three bands again: the same names (its own files), nothing new beside them
    res = _cli(["compose", *map(str, m101), "--output", str(out), "--run-id", "m101-again"])
    assert res.exit_code == 0, res.output
    again = pd.read_parquet(out / "manifests" / "m101-again.parquet").iloc[0]
    assert again["png_path"] == row["png_path"] and again["fits_path"] == row["fits_path"]
    assert sorted(p.name for p in png.parent.glob("NGC5457*_rgb.png")) == sorted(
        {png.name, Path(two["png_path"]).name})


def test_cli_compose_two_bands_options_and_errors(m101, tmp_path):
    f435, f606, f814 = m101
    out = tmp_path / "out"
    res = _cli(["compose", "--red", str(f814), "--blue", str(f435), "-o", str(out), "--run-id", "rb"])
    assert res.exit_code == 0, res.output
    row = pd.read_parquet(out / "manifests" / "rb.parquet").iloc[0]
    assert row["channels"] == "R:F814W, G:inferred(mean), B:F435W" and row["visualisation"]
    assert "visualisation" in fits.getheader(out / row["fits_path"])["LABEL"]
    # a PNG assigned to a slot
    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(grey)
    res = _cli(["compose", str(f814), "--green", str(grey), "-o", str(out), "--run-id", "png"])
    assert res.exit_code == 0, res.output
    assert pd.read_parquet(out / "manifests" / "png.parquet").iloc[0]["channels"] == \
        "R:F814W, G:grey.png, B:inferred(nearer G)"
    # an unusable band: an error row naming it, exit 1, no traceback
    res = _cli(["compose", str(f814), str(grey), "-o", str(out), "--run-id", "bad"])
    assert res.exit_code == 1 and "grey.png" in res.output and "Traceback" not in res.output
    bad = pd.read_parquet(out / "manifests" / "bad.parquet").iloc[0]
    assert bad["status"] == "error" and "no filter" in bad["error"]


def test_ccddata_and_frames_with_masks_and_wcs_compose(tmp_path):
    """What the fields work hands over after reprojection: data, a footprint mask and the reference WCS."""
    from astropy.nddata import CCDData

    from astro_pipeline.ingest.objects import frames_from

    wcs = WCS(_wcs_header())
    bands = {}
    for i, f in enumerate(("F435W", "F606W", "F814W")):
        hdu = _band(f, 20 + i)
        mask = np.zeros((H, W), bool)
        mask[:, : 4 + 2 * i] = True  # off this band's footprint
        bands[f] = CCDData(hdu.data, unit="electron/s", wcs=wcs, mask=mask,
                           meta={"FILTER": f, "PHOTFLAM": PHOTFLAM[f], "TARGNAME": "SYNTH"})
    res = ap.compose(bands)
    assert res.channels_text == "R:F814W, G:F606W, B:F435W"
    assert all(c.sources[0].flux == "PHOTFLAM" for c in res.channels)
    assert (res.image[:, :8] == 0).all() and res.image[:, 8:].max() > 0.5  # the union of the masks is black
    assert res.wcs is not None and res.wcs.world_to_pixel(wcs.pixel_to_world(5.0, 7.0)) == pytest.approx((5.0, 7.0))
    # Frames pass through as they are (their mask, WCS and provenance)
    frames = {f: frames_from(v, max_image_pixels=10**9)[0] for f, v in bands.items()}
    again = ap.compose(frames)
    np.testing.assert_array_equal(again.image, res.image)
    files = again.save(tmp_path)
    assert {k: Path(pf.path).name for k, pf in files.items()} == {
        "png": "SYNTH_rgb.png", "tif": "SYNTH_rgb.tif", "fits": "SYNTH_rgb.fits"}
    for pf in files.values():
        assert sha256_file(pf.path) == pf.sha256


def test_compose_names_are_the_field_product_names_and_never_replace_another(tmp_path):
    """``<field>_rgb.*`` (products.naming); the same composite again keeps its names, another
    composite of the field takes ``<field>-<hash>_rgb.*``, and an input band is never written."""
    from astro_pipeline.products.naming import field_product_path

    three = {f: _band(f, 20 + i) for i, f in enumerate(("F435W", "F606W", "F814W"))}
    first = ap.compose(three, name="NGC5457").save(tmp_path)
    assert Path(first["png"].path) == field_product_path(tmp_path, "NGC5457", "png") == tmp_path / "NGC5457_rgb.png"
    again = ap.compose(three, name="NGC5457").save(tmp_path)
    assert {k: pf.path for k, pf in again.items()} == {k: pf.path for k, pf in first.items()}
    before = {k: sha256_file(pf.path) for k, pf in again.items()}  # (the FITS cube's DATE may differ from first's)
    two = ap.compose({f: three[f] for f in ("F435W", "F814W")}, name="NGC5457", fill="rule").save(tmp_path)
    assert Path(two["png"].path).parent == tmp_path
    assert re.fullmatch(r"NGC5457-[0-9a-f]{8}_rgb\.png", Path(two["png"].path).name), two["png"].path
    assert {k: sha256_file(pf.path) for k, pf in first.items()} == before  # the first composite is untouched
    # a band on disk whose name is the product's own is protected: the composite takes another name
    band = tmp_path / "in" / "M_rgb.fits"
    band.parent.mkdir()
    fits.HDUList([fits.PrimaryHDU(), three["F814W"].copy()]).writeto(band)
    kept = sha256_file(band)
    files = ap.compose({"F435W": three["F435W"], "F606W": three["F606W"], "F814W": band}, name="M").save(
        tmp_path / "in")
    assert sha256_file(band) == kept
    assert re.fullmatch(r"M-[0-9a-f]{8}_rgb\.fits", Path(files["fits"].path).name), files["fits"].path
