"""A new user's first hour (issue 14): ``inspect`` on the pipeline's own PNG, a mistyped input, the
colour cube's third axis."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from typer.testing import CliRunner
from model_helpers import save_tiny_weights

from astro_pipeline.cli import app


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("weights")
    return save_tiny_weights(d)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_inspect_does_not_call_the_pipelines_own_colour_png_saturated(tmp_path, weights):
    """The colour PNG of a real-looking field (the sample's M101 F606W) has its stretched star cores at
    white; that is the display's white point, not detector saturation, so no ``saturated`` flag."""
    from astro_pipeline.config import Settings
    from astro_pipeline.sample import build_sample

    index = build_sample(mini=True, cache_dir=Settings().cache_dir)
    item = next(i for i in index.items if i.id.endswith("m101_acs_wfc_f606w"))
    out = tmp_path / "out"
    assert _invoke("colorize", str(index.path_of(item)), "-o", str(out), "--weights", str(weights["colorize"]),
                   "--run-id", "c1").exit_code == 0
    (png,) = out.glob("*_color.png")
    res = _invoke("inspect", str(png), "--json")
    assert res.exit_code == 0, res.output
    (record,) = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert record["is_display"] is True
    assert record["metrics"]["clipped_fraction"] > 0.01  # plenty of pixels at the white point...
    assert record["metrics"]["saturated_fraction"] is None  # ...but saturation cannot be told from them
    assert "saturated" not in [f["name"] for f in record["flags"]]
    # the science frame it came from still gets its saturation measured (no DQ: a plateau rule)
    res = _invoke("inspect", str(index.path_of(item)), "--json")
    (science,) = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert science["metrics"]["saturated_fraction"] is not None and "clipped_fraction" not in science["metrics"]


@pytest.mark.parametrize("command", ["colorize", "upscale", "enhance"])
def test_a_missing_input_creates_no_output_folder_manifest_or_run(tmp_path, weights, command):
    good = tmp_path / "in" / "a.fits"
    good.parent.mkdir()
    fits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(good)
    out = tmp_path / "out"
    opts = (["--colorizer", str(weights["colorize"]), "--upscaler", str(weights["superres"])] if command == "enhance"
            else ["--weights", str(weights["colorize" if command == "colorize" else "superres"])])
    res = _invoke(command, str(good), str(tmp_path / "in" / "nope.fits"), "-o", str(out), *opts)
    assert res.exit_code == 2
    assert "nope.fits" in res.output and "no such file or folder" in res.output and "Traceback" not in res.output
    assert not out.exists()


@pytest.mark.parametrize("sip", [False, True])
def test_the_colour_cube_marks_its_third_axis(tmp_path, weights, sip):
    """The RGB cube's WCS: a third, linear ``CTYPE3 = 'RGB'`` axis (1 R, 2 G, 3 B); ``.celestial`` is the sky.

    The old header's ``CNAME3`` beyond ``WCSAXES = 2`` gave a blank third axis. astropy takes SIP
    only in two dimensions, so for a SIP cube ``WCS(header, naxis=2)`` is the call (it works for all).
    """
    src = tmp_path / "in" / "w_flt.fits"
    src.parent.mkdir()
    hdr = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 210.8, "CRVAL2": 54.35,
                       "CRPIX1": 10.5, "CRPIX2": 12.5, "CD1_1": -1.4e-5, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 1.4e-5})
    if sip:
        hdr.update({"CTYPE1": "RA---TAN-SIP", "CTYPE2": "DEC--TAN-SIP", "A_ORDER": 2, "B_ORDER": 2,
                    "A_2_0": 2e-6, "B_0_2": 3e-6})
    fits.PrimaryHDU(np.random.default_rng(2).normal(10, 1, (24, 20)).astype(np.float32), header=hdr).writeto(src)
    out = tmp_path / "out"
    assert _invoke("upscale", str(src), "-o", str(out), "--weights", str(weights["superres"])).exit_code == 0
    with fits.open(out / "w_flt_x4.fits") as hdul:
        header, cube = hdul[0].header, hdul[0].data
    assert cube.shape == (3, 96, 80)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FITSFixedWarning about the third axis
        sky = WCS(header, naxis=2)
        if not sip:
            wcs = WCS(header)
            assert wcs.naxis == 3 and wcs.wcs.ctype[2] == "RGB"
            assert list(wcs.pixel_to_world_values(0, 0, [0, 1, 2])[2]) == [1.0, 2.0, 3.0]  # R, G, B
            assert wcs.celestial.to_header() == sky.to_header()
    assert sky.naxis == 2 and (sky.sip is not None) == sip
    centre_in = WCS(hdr).pixel_to_world(9.5, 11.5)
    centre_out = sky.pixel_to_world(4 * 9.5 + 1.5, 4 * 11.5 + 1.5)
    assert centre_in.separation(centre_out).arcsec < 1e-3
