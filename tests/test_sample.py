"""The built-in sample: contents, metadata, determinism, caching, and the flags its QA frames raise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from astro_pipeline.config import QualityThresholds, Settings
from astro_pipeline.ingest.quality import assess
from astro_pipeline.fileio import sha256_file as file_sha256
from astro_pipeline.ingest.readers import read_frames
from astro_pipeline.sample import SAMPLE_VERSION, SampleIndex, build_sample, load_sample

FLAGS = {"noisy", "mostly_blank", "saturated", "cosmic_rays", "low_signal"}

LIMIT = 1_000_000_000  # an explicit pixel limit for the readers


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> SampleIndex:
    return build_sample(tmp_path_factory.mktemp("sample") / "mini", mini=True)


def test_mini_contents(mini: SampleIndex) -> None:
    science = [i for i in mini.items if i.kind == "science" and i.field != "qa"]
    by_field = {f: sorted(i.filter for i in science if i.field == f) for f in {i.field for i in science}}
    assert by_field == {"m101": ["F435W", "F606W", "F814W"], "m83": ["F160W", "F435W", "F606W"],
                        "ngc4414": ["F606W", "F814W"]}
    qa = mini.fields()["qa"]
    assert sorted(f for i in qa for f in i.expected_flags) == sorted(FLAGS)
    colour = mini.by_archive("esahubble")
    assert len(colour) == 3 and all(i.kind == "color" for i in colour)
    assert any(i.path.endswith(".tif") for i in colour) and any(i.path.endswith(".jpg") for i in colour)
    for i in colour:
        assert i.id.startswith("heic") and i.release and i.id.startswith(i.release)
        assert i.license == "CC BY 4.0" and i.title and i.credit and i.filter == ""
    assert len({i.obsid for i in mini.items}) == len(mini.items)
    assert len({i.id for i in mini.items}) == len(mini.items)
    for i in mini.items:
        p = mini.path_of(i)
        assert p.stat().st_size == i.size and file_sha256(p) == i.sha256


def test_science_frames_have_hst_headers_and_wcs(mini: SampleIndex) -> None:
    from astropy.io import fits

    item = next(i for i in mini.items if i.field == "m101" and i.filter == "F814W")
    assert item.archive == "mast" and item.path.endswith("_drz.fits") and item.instrument == "ACS/WFC"
    with fits.open(mini.path_of(item)) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT"]
        ph = hdul[0].header
        for key in ("TELESCOP", "INSTRUME", "DETECTOR", "FILTER", "ROOTNAME", "TARGNAME", "EXPTIME", "DATE-OBS",
                    "PROPOSID"):
            assert key in ph, key
        assert hdul[1].header["BUNIT"] == "ELECTRONS/S" and "CD1_1" in hdul[1].header
        assert (hdul[2].data == 0).any() and np.isnan(hdul[1].data).any()
    (f,) = read_frames(mini.path_of(item), max_image_pixels=LIMIT)
    assert f.provenance["filter"] == "F814W" and f.provenance["target"] == "NGC5457"
    assert f.provenance["ra"] == pytest.approx(item.ra, abs=1e-4)
    assert f.provenance["dec"] == pytest.approx(item.dec, abs=1e-4)
    assert f.shape == (128, 128) and 0.8 < f.mask.mean() < 0.99


def test_flt_has_sci_err_dq(mini: SampleIndex) -> None:
    item = next(i for i in mini.items if "saturated" in i.expected_flags)
    assert item.path.endswith("_flt.fits")
    (f,) = read_frames(mini.path_of(item), max_image_pixels=LIMIT)
    assert f.saturated is not None and f.saturated.any()
    assert not f.mask[f.saturated].any()


def test_qa_frames_trip_exactly_their_flag_and_clean_frames_none(mini: SampleIndex) -> None:
    for item in mini.items:
        frames = read_frames(mini.path_of(item), max_image_pixels=LIMIT)
        for f in frames:
            got = assess(f, QualityThresholds()).flag_names
            assert sorted(got) == sorted(item.expected_flags), (item.path, got)


def test_deterministic_and_cached(mini: SampleIndex, tmp_path: Path) -> None:
    again = build_sample(tmp_path / "again", mini=True)
    assert [(i.path, i.sha256) for i in again.items] == [(i.path, i.sha256) for i in mini.items]
    # reuse: a complete sample is not rewritten
    p = again.path_of(again.items[0])
    mtime = p.stat().st_mtime_ns
    reused = build_sample(tmp_path / "again", mini=True)
    assert p.stat().st_mtime_ns == mtime and len(reused.items) == len(again.items)
    loaded = load_sample(tmp_path / "again")
    assert loaded.items == again.items
    idx = json.loads((tmp_path / "again" / "index.json").read_text())
    assert idx["version"] == SAMPLE_VERSION and idx["mini"] is True
    # an incomplete sample (a missing file) is rebuilt
    p.unlink()
    rebuilt = build_sample(tmp_path / "again", mini=True)
    assert p.is_file() and file_sha256(p) == rebuilt.items[0].sha256


def test_default_root_is_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from astro_pipeline.config import get_settings

    monkeypatch.setenv("ASTRO_PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    idx = build_sample(mini=True, cache_dir=Settings().cache_dir)
    assert idx.root == tmp_path / "cache" / f"sample-{SAMPLE_VERSION}-mini"
    assert (idx.root / "index.json").is_file()


@pytest.mark.slow
def test_full_sample(tmp_path: Path) -> None:
    idx = build_sample(tmp_path / "full")
    fields = idx.fields()
    assert {"m101", "m51", "ngc1300", "hdf", "qa"} <= set(fields)
    science = [i for i in idx.by_archive("mast") if i.field != "qa"]
    assert len(science) == 17
    colour = idx.by_archive("esahubble")
    assert len(colour) >= 8 and any(i.path.endswith(".tif") for i in colour)
    for item in idx.items:
        for f in read_frames(idx.path_of(item), max_image_pixels=LIMIT):
            if item.kind == "science" and item.field not in ("m83", "ngc4414"):
                assert f.shape == (512, 512)
            assert sorted(assess(f, QualityThresholds()).flag_names) == sorted(item.expected_flags), item.path


def test_multi_grid_fields_observe_one_sky_on_grids_of_their_own(mini: SampleIndex) -> None:
    """m83: two instruments (ACS/WFC 0.05"/px, WFC3/IR 0.13"/px rotated 73 degrees); ngc4414: exactly
    two filters, two visits 46 degrees apart. Both are one field each when grouped, and the same
    galaxy lands on the same sky in every frame."""
    from astro_pipeline.fields.geometry import FrameGeometry, footprint_of, overlap_fraction

    frames = {}
    for item in mini.items:
        if item.field in ("m83", "ngc4414"):
            (frames[item.id],) = read_frames(mini.path_of(item), max_image_pixels=LIMIT)
    assert len(frames) == 5
    geo = {k: footprint_of(f) for k, f in frames.items()}
    assert all(isinstance(g, FrameGeometry) for g in geo.values())
    ir = next(k for k in geo if "wfc3_ir" in k)
    acs = [k for k in geo if k.startswith("hst_sample_m83_") and k != ir]
    assert frames[ir].provenance["instrument"] == "WFC3" and frames[ir].provenance["filter"] == "F160W"
    assert geo[ir].pixel_scale_arcsec == pytest.approx(0.13, rel=1e-6)
    assert all(geo[k].pixel_scale_arcsec == pytest.approx(0.05, rel=1e-6) for k in acs)
    orient = {k: float(np.degrees(np.arctan2(f.wcs.wcs.cd[0, 1], f.wcs.wcs.cd[1, 1]))) for k, f in frames.items()}
    assert orient[ir] - orient[acs[0]] == pytest.approx(73.0, abs=0.01)
    n1, n2 = sorted(k for k in geo if "ngc4414" in k)
    assert abs(orient[n2] - orient[n1]) == pytest.approx(46.0, abs=0.01)
    for a, b in ((acs[0], ir), (acs[1], ir), (n1, n2)):
        assert overlap_fraction(geo[a], geo[b]) > 0.8
    # the galaxy's bulge peaks at the same sky position in every frame of a field (within 0.1")
    from scipy.ndimage import gaussian_filter

    for name in ("m83", "ngc4414"):
        peaks = []
        for k, f in frames.items():
            if f"_{name}_" in k:
                smooth = gaussian_filter(np.nan_to_num(f.data), 0.3 / geo[k].pixel_scale_arcsec)  # 0.3" blur
                y, x = np.unravel_index(np.argmax(smooth), smooth.shape)
                peaks.append(f.wcs.pixel_to_world(x, y))
        assert max(peaks[0].separation(p).arcsec for p in peaks[1:]) < 0.1, name
