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
    assert len(science) == 3 and {i.filter for i in science} == {"F435W", "F606W", "F814W"}
    assert {i.field for i in science} == {"m101"}
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
    assert len(science) == 12
    colour = idx.by_archive("esahubble")
    assert len(colour) >= 8 and any(i.path.endswith(".tif") for i in colour)
    for item in idx.items:
        for f in read_frames(idx.path_of(item), max_image_pixels=LIMIT):
            if item.kind == "science":
                assert f.shape == (512, 512)
            assert sorted(assess(f, QualityThresholds()).flag_names) == sorted(item.expected_flags), item.path
