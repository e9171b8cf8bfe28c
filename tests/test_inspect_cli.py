"""``astro-pipeline inspect``: JSON records, error records, directory walking, exit codes, --sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from astro_pipeline.cli import app

runner = CliRunner()


def _good_fits(path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(10, 1, (64, 64)).astype(np.float32)
    img[30:34, 30:34] += 200
    prim = fits.PrimaryHDU()
    prim.header.update(TELESCOP="HST", INSTRUME="WFC3", FILTER="F606W")
    fits.HDUList([prim, fits.ImageHDU(img, name="SCI"), fits.ImageHDU(img, name="SCI", ver=2)]).writeto(path)


def _records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    _good_fits(d / "a_flt.fits")
    (d / "sub" / "empty.fits").write_bytes(b"")
    (d / "sub" / "renamed.fits").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (d / ".hidden.fits").write_bytes(b"")  # skipped
    (d / "notes.txt").write_text("not an image")  # not an image name: skipped
    os.symlink(d / "sub" / "empty.fits", d / "link.fits")  # not followed
    return d


def test_json_records_and_exit_1_with_errors(tree: Path) -> None:
    res = runner.invoke(app, ["inspect", str(tree), "--json"])
    assert res.exit_code == 1, res.output
    recs = _records(res.stdout)
    assert [Path(r["path"]).name for r in recs] == ["a_flt.fits", "a_flt.fits", "empty.fits", "renamed.fits"]
    ok = [r for r in recs if r["status"] == "ok"]
    assert [r["hdu"] for r in ok] == [1, 2]
    for r in ok:
        assert r["error"] is None and r["format"] == "fits" and r["shape"] == [64, 64]
        assert r["provenance"]["instrument"] == "WFC3" and r["provenance"]["filter"] == "F606W"
        assert r["metrics"]["noise"] == pytest.approx(1.0, rel=0.15) and isinstance(r["flags"], list)
    errs = {Path(r["path"]).name: r for r in recs if r["status"] == "error"}
    assert errs["empty.fits"]["error"].endswith("empty file (0 bytes)")
    assert "content is a PNG file but the name says FITS" in errs["renamed.fits"]["error"]
    assert all(r["metrics"] is None and r["shape"] is None and r["format"] == "fits" for r in errs.values())
    assert "Traceback" not in res.output


def test_exit_0_when_all_ok_and_table_output(tmp_path: Path) -> None:
    p = tmp_path / "good.fits"
    _good_fits(p)
    res = runner.invoke(app, ["inspect", str(p)])
    assert res.exit_code == 0, res.output
    assert "good.fits" in res.stdout and "1 file(s), 2 frame(s) ok" in res.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert runner.invoke(app, ["inspect"]).exit_code == 2
    assert runner.invoke(app, ["inspect", "--no-such-option", str(tmp_path)]).exit_code == 2
    (tmp_path / "empty_dir").mkdir()
    res = runner.invoke(app, ["inspect", str(tmp_path / "empty_dir")])
    assert res.exit_code == 2 and "no image files found" in res.stderr
    assert runner.invoke(app, ["inspect", "--mini", str(tmp_path)]).exit_code == 2


def test_missing_path_is_an_error_record(tmp_path: Path) -> None:
    res = runner.invoke(app, ["inspect", str(tmp_path / "gone.fits"), "--json"])
    assert res.exit_code == 1
    (rec,) = _records(res.stdout)
    assert rec["status"] == "error" and rec["error"].endswith("gone.fits: no such file")


def test_sample_mini(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from astro_pipeline.config import get_settings

    monkeypatch.setenv("ASTRO_PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    res = runner.invoke(app, ["inspect", "--sample", "--mini", "--json"])
    assert res.exit_code == 0, res.output
    recs = _records(res.stdout)
    assert len(recs) == 16 and all(r["status"] == "ok" for r in recs)  # 8 science + 5 QA + 3 colour images
    for r in recs:
        assert sorted(f["name"] for f in r["flags"]) == sorted(r["expected_flags"]), r["path"]
    assert "16/16 frames raised exactly their expected flags" in res.stderr


def test_console_script_never_prints_a_traceback(tree: Path) -> None:
    exe = Path(sys.executable).with_name("astro-pipeline")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from astro_pipeline.cli import main; main()"]
    proc = subprocess.run(cmd + ["inspect", str(tree), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    recs = _records(proc.stdout)
    assert sum(r["status"] == "error" for r in recs) == 2 and sum(r["status"] == "ok" for r in recs) == 2


def test_shared_hst_files(shared_data: Path) -> None:
    res = runner.invoke(app, ["inspect", str(shared_data / "fits"), "--json"])
    recs = _records(res.stdout)
    assert res.exit_code == 1  # the two header-only HST test files are clean errors
    names = {Path(r["path"]).name for r in recs}
    assert len(names) == 23
    errors = [r for r in recs if r["status"] == "error"]
    assert {Path(r["path"]).name for r in errors} == {"astropywhl__j94f05bgq_flt.fits",
                                                     "drizzle__j8bt06nyq_sip_flt.fits"}
    assert all("no image data" in r["error"] for r in errors)
    trilogy = [r for r in recs if "trilogy__hst_mos" in r["path"]]
    assert len(trilogy) == 3 and all(r["flags"] == [] for r in trilogy)
