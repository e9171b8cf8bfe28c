"""The one wavelength rule (``astro_pipeline.filters``): pivots, slots, and the code that orders filters by it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from astro_pipeline.memory import default_pixel_limit
from astro_pipeline.filters import Slot, filter_info, parse_filter, pivot_wavelength_nm, slot_of, wavelength_order

# (filter, instrument, pivot nm, slot): ACS/WFC, WFC3/UVIS, WFC3/IR, WFPC2, narrow bands, exceptions
CASES = [
    # ACS/WFC
    ("F435W", "ACS", 435.0, "B"), ("F475W", "ACS", 475.0, "B"), ("F555W", "ACS", 555.0, "G"),
    ("F606W", "ACS", 606.0, "G"), ("F625W", "ACS", 625.0, "G"), ("F775W", "ACS", 775.0, "R"),
    ("F814W", "ACS", 814.0, "R"), ("F850LP", "ACS", 905.0, "R"), ("F550M", "ACS", 550.0, "G"),
    # WFC3/UVIS
    ("F225W", "WFC3", 225.0, "B"), ("F275W", "WFC3", 275.0, "B"), ("F336W", "WFC3", 336.0, "B"),
    ("F438W", "WFC3", 438.0, "B"), ("F547M", "WFC3", 547.0, "G"), ("F600LP", "WFC3", 747.0, "R"),
    ("F350LP", "WFC3", 585.0, "G"), ("F200LP", "WFC3", 497.0, "B"), ("F475X", "WFC3", 494.0, "B"),
    # WFC3/IR: names in units of 10 nm
    ("F098M", "WFC3", 980.0, "R"), ("F105W", "WFC3", 1050.0, "R"), ("F110W", "WFC3", 1100.0, "R"),
    ("F125W", "WFC3", 1250.0, "R"), ("F140W", "WFC3", 1400.0, "R"), ("F160W", "WFC3", 1600.0, "R"),
    ("F153M", "WFC3", 1530.0, "R"), ("F160W", None, 1600.0, "R"), ("F110W", "NICMOS", 1100.0, "R"),
    ("F205W", "NICMOS", 2050.0, "R"),
    # WFPC2
    ("F300W", "WFPC2", 300.0, "B"), ("F439W", "WFPC2", 439.0, "B"), ("F450W", "WFPC2", 450.0, "B"),
    ("F555W", "WFPC2", 555.0, "G"), ("F675W", "WFPC2", 675.0, "R"), ("F702W", "WFPC2", 702.0, "R"),
    ("F1042M", "WFPC2", 1042.0, "R"), ("F160BW", "WFPC2", 160.0, "B"), ("F170W", "WFPC2", 170.0, "B"),
    ("F122M", "WFPC2", 122.0, "B"),
    # narrow bands
    ("F656N", "WFC3", 656.0, "R"), ("F656N", "WFPC2", 656.0, "R"), ("F502N", "WFC3", 501.0, "G"),
    ("F502N", None, 501.0, "G"), ("F487N", "WFC3", 487.0, "B"), ("F658N", "ACS", 658.0, "R"),
    ("F673N", "WFC3", 673.0, "R"), ("F469N", "WFC3", 469.0, "B"), ("F631N", "WFPC2", 630.0, "G"),
    ("F645N", "WFC3", 645.0, "G"), ("F953N", "WFC3", 953.0, "R"), ("F128N", "WFC3", 1283.0, "R"),
    ("F164N", None, 1645.0, "R"), ("F187N", "NICMOS", 1875.0, "R"), ("FR656N", "ACS", 656.0, "R"),
]


@pytest.mark.parametrize(("name", "instrument", "pivot", "slot"), CASES)
def test_pivot_and_slot(name, instrument, pivot, slot):
    info = filter_info(name, instrument=instrument)
    assert info is not None
    assert info.pivot_nm == pivot and pivot_wavelength_nm(name, instrument=instrument) == pivot
    assert info.slot == Slot(slot) == slot_of(pivot)


def test_lines_are_named_and_the_rule_says_how_it_decided():
    assert filter_info("F656N").line == "H-alpha" and filter_info("F502N").line == "[O III]"
    assert filter_info("F656N").rule == "table"
    assert filter_info("F160W").rule == "name (10 nm, infrared)"
    assert filter_info("F606W").rule == "name (nm)"


def test_slot_edges():
    assert slot_of(499.9) == "B" and slot_of(500.0) == "G" and slot_of(649.9) == "G" and slot_of(650.0) == "R"


def test_parse_filter_from_cards_and_file_names():
    assert parse_filter("F814W") == "F814W"
    assert parse_filter("clear1l+f814w") == "F814W"
    assert parse_filter("F606W+POL0V") == "F606W"
    assert parse_filter("hst_10452_01_acs_wfc_f658n_drz.fits") == "F658N"
    assert parse_filter("ib1f23-f160w_drz.fits") == "F160W"
    for nothing in (None, "", "CLEAR", "CLEAR2L", "N/A", "hst_10452_01_acs_wfc_drz.fits", "G141"):
        assert parse_filter(nothing) is None and filter_info(nothing) is None
    assert wavelength_order("G141") == float("inf")


def test_chromatic_order_puts_f160w_reddest():
    names = ["F160W", "F814W", "F435W", "F606W", "F110W", "F656N", "F502N"]
    assert sorted(names, key=wavelength_order) == ["F435W", "F502N", "F606W", "F656N", "F814W", "F110W", "F160W"]


def _frame_file(path: Path, filt: str, img: np.ndarray, instrument: str) -> Path:
    hdr = fits.Header()
    hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
    hdr["CRVAL1"], hdr["CRVAL2"] = 189.2, 62.2
    hdr["CRPIX1"], hdr["CRPIX2"] = 16.5, 16.5
    hdr["CD1_1"], hdr["CD2_2"] = -1e-5, 1e-5
    prim = fits.PrimaryHDU()
    prim.header.update(TARGNAME="GOODS-N", INSTRUME=instrument, FILTER=filt)
    fits.HDUList([prim, fits.ImageHDU(img.astype(np.float32), header=hdr, name="SCI")]).writeto(path)
    return path


def test_lupton_composites_order_infrared_by_the_rule(tmp_path):
    """F606W + F814W + F160W on one grid: F160W is the reddest (the old rule read 160 and made it blue)."""
    from astro_pipeline.ingest.readers import read_frames
    from astro_pipeline.products import Operation, Product, ProductFile, ProductStatus, write_lupton_composites

    yy, xx = np.mgrid[:32, :32]
    prods = []
    for i, (filt, inst) in enumerate((("F160W", "WFC3"), ("F606W", "ACS"), ("F814W", "ACS"))):
        img = 1.0 + 300.0 * np.exp(-((xx - (8 + 8 * i)) ** 2 + (yy - 16) ** 2) / 4.0)  # one source per filter
        f = _frame_file(tmp_path / f"goods_{filt.lower()}_drz.fits", filt, img, inst)
        fr = read_frames(f, max_image_pixels=default_pixel_limit())[0]
        prods.append(Product(run_id=None, source_path=str(f), source_sha256=fr.source_sha256, hdu=fr.hdu, plane=None,
                             frame_key=fr.key, operation=Operation.COLORIZE, status=ProductStatus.OK,
                             provenance=dict(fr.provenance), files={"fits": ProductFile(path=f, sha256=fr.source_sha256)}))
    (written,) = write_lupton_composites(prods, output_dir=tmp_path / "out", input_root=tmp_path,
                                         max_image_pixels=default_pixel_limit())
    assert written.filters == {"R": "F160W", "G": "F814W", "B": "F606W"}
    assert written.file.path.name == "GOODS-N_f606w_f814w_f160w_lupton.png"
    im = Image.open(written.file.path)
    assert json.loads(im.text["Comment"])["filters"]["R"] == "F160W"
    arr = np.asarray(im).astype(int)
    assert arr[16, 8, 0] > arr[16, 8, 2]  # the F160W source (x=8) is red
    assert arr[16, 16, 2] > arr[16, 16, 0]  # the F606W source (x=16) is blue
