"""Every example on ``docs/python_api.md`` runs, in order, in one session (as a notebook would)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

PAGE = Path(__file__).resolve().parent.parent / "docs" / "python_api.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _examples() -> list[str]:
    return _BLOCK.findall(PAGE.read_text())


def test_the_page_has_examples_on_the_sample_and_a_fits_file():
    code = "\n".join(_examples())
    assert len(_examples()) >= 8
    for needle in ("build_sample", "fits.open", "ap.colorize", "ap.upscale", "ap.enhance", "ap.inspect", ".save(",
                   "CCDData", "ap.compose"):
        assert needle in code, needle


def test_every_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    try:
        for i, block in enumerate(_examples()):
            try:
                exec(compile(block, f"{PAGE.name}[example {i + 1}]", "exec"), namespace)  # noqa: S102
            except Exception as exc:  # noqa: BLE001 - name the failing example
                pytest.fail(f"example {i + 1} of {PAGE.name} failed: {type(exc).__name__}: {exc}\n{block}")
    finally:
        torch.set_num_threads(old)
    out = capsys.readouterr().out
    # what the examples print is what the page promises
    assert "hst_sample_m101_acs_wfc_f606w_drz.fits" in out
    assert "noisy:" in out and "mostly_blank:" in out
    assert "no-such-file.fits: no such file" in out
    m = re.search(r"output centre: ([\d.]+), ([\d.]+) \(expected ([\d.]+), ([\d.]+)\)", out)
    assert m and abs(float(m[1]) - float(m[3])) < 0.25 and abs(float(m[2]) - float(m[4])) < 0.25
    err = float(re.search(r"largest block error: ([\d.e+-]+)", out)[1])
    assert err < 1e-3
    saved = sorted(p.name for p in (tmp_path / "products").iterdir())
    assert "hst_sample_m101_acs_wfc_f606w_drz_color.png" in saved and "m101_f606w_flux_x4.fits" in saved
    assert "stars_flux_x4.fits" in saved
    assert "R:F814W, G:F606W, B:F435W | visualisation: False" in out
    assert "R:F814W, G:inferred(mean), B:F435W | visualisation:" in out
    assert "NGC5457_rgb.fits" in saved  # naming.field_product_path: <field>_rgb.*
