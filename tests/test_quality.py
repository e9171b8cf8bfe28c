"""Quality metrics and flags on frames with known properties."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from astro_pipeline.config import QualityThresholds, get_settings
from astro_pipeline.ingest.frame import Frame
from astro_pipeline.ingest.quality import assess

N = 256


def _frame(data: np.ndarray, mask: np.ndarray | None = None, saturated: np.ndarray | None = None,
           display: bool = False) -> Frame:
    data = data.astype(np.float32)
    if mask is None:
        mask = np.isfinite(data) if data.ndim == 2 else np.ones(data.shape[:2], bool)
    return Frame(data=data, mask=mask, source_path=Path("t.fits"), source_sha256="0" * 64, format="fits",
                 saturated=saturated, is_display=display)


def _stars(rng: np.random.Generator, n: int = 40, fwhm: float = 2.1) -> np.ndarray:
    img = np.zeros((N, N))
    yy, xx = np.mgrid[:N, :N]
    s = fwhm / 2.3548
    for _ in range(n):
        y, x = rng.uniform(5, N - 5, 2)
        img += rng.uniform(20, 500) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
    return img


def _galaxy(amplitude: float) -> np.ndarray:
    yy, xx = np.mgrid[:N, :N]
    r = np.hypot(yy - N / 2, xx - N / 2)
    return amplitude * np.exp(-r / 40.0)


def test_clean_star_field_has_no_flags_and_right_noise() -> None:
    rng = np.random.default_rng(0)
    img = 100.0 + _stars(rng) + rng.normal(0, 2.0, (N, N))
    rep = assess(_frame(img), QualityThresholds())
    m = rep.metrics
    assert rep.flags == []
    assert m["background"] == pytest.approx(100.0, abs=0.2)
    assert m["noise"] == pytest.approx(2.0, rel=0.1) and m["sky_rms"] == pytest.approx(2.0, rel=0.1)
    assert m["snr"] > 10 and m["dynamic_range"] > 20
    assert m["cosmic_ray_fraction"] == 0.0 and m["saturated_fraction"] == 0.0
    assert m["blank_fraction"] == 0.0 and m["invalid_fraction"] == 0.0


def test_pure_noise_is_low_signal_only() -> None:
    rng = np.random.default_rng(1)
    rep = assess(_frame(rng.normal(5.0, 1.0, (N, N))), QualityThresholds())
    assert rep.flag_names == ["low_signal"]
    flag = rep.flags[0]
    assert flag.comparison == "<" and flag.threshold == 5.0 and flag.value == pytest.approx(2.6, abs=0.6)


def test_buried_galaxy_is_noisy_not_low_signal() -> None:
    rng = np.random.default_rng(2)
    img = _galaxy(2.0) + rng.normal(0, 1.0, (N, N))
    rep = assess(_frame(img), QualityThresholds())
    assert rep.flag_names == ["noisy"]
    assert rep.flags[0].value < 3.0 and rep.metrics["dynamic_range"] > 5.0
    # the same galaxy with 10x less noise is fine
    assert assess(_frame(_galaxy(2.0) + rng.normal(0, 0.1, (N, N))), QualityThresholds()).flags == []


def test_mostly_blank_from_nan_border_and_zero_fill() -> None:
    rng = np.random.default_rng(3)
    img = 10 + _stars(rng) + rng.normal(0, 1, (N, N))
    img[:, : int(0.6 * N)] = np.nan
    rep = assess(_frame(img), QualityThresholds())
    assert rep.flag_names == ["mostly_blank"]
    assert rep.flags[0].value == pytest.approx(0.6, abs=0.01) and rep.flags[0].threshold == 0.5
    zero = 10 + _stars(rng) + rng.normal(0, 1, (N, N))
    zero[: int(0.7 * N)] = 0.0  # zero fill without a weight map
    assert "mostly_blank" in assess(_frame(zero), QualityThresholds()).flag_names


def test_saturated_from_dq_and_from_plateau() -> None:
    rng = np.random.default_rng(4)
    img = 10 + _stars(rng) + rng.normal(0, 1, (N, N))
    sat = np.zeros((N, N), bool)
    sat[100:130, 50:80] = True  # 900 px = 1.4 %
    rep = assess(_frame(img, mask=~sat, saturated=sat), QualityThresholds())
    assert rep.flag_names == ["saturated"]
    assert rep.flags[0].value == pytest.approx(900 / N**2)
    plateau = img.copy()
    plateau[20:50, 20:50] = 65535.0  # clipped at the A/D maximum, no DQ array
    rep2 = assess(_frame(plateau), QualityThresholds())
    assert "saturated" in rep2.flag_names and rep2.metrics["saturated_fraction"] == pytest.approx(900 / N**2)


def test_cosmic_rays_found_but_stars_are_not() -> None:
    rng = np.random.default_rng(5)
    base = 50 + _stars(rng, n=80) + rng.normal(0, 3, (N, N))
    assert assess(_frame(base), QualityThresholds()).metrics["cosmic_ray_fraction"] < 1e-4
    hit = base.copy()
    ys, xs = rng.integers(2, N - 2, (2, 200))
    hit[ys, xs] += rng.uniform(100, 2000, 200)
    rep = assess(_frame(hit), QualityThresholds())
    assert rep.flag_names == ["cosmic_rays"]
    assert rep.metrics["cosmic_ray_fraction"] == pytest.approx(200 / N**2, rel=0.1)


def test_thresholds_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    img = 10 + _stars(rng) + rng.normal(0, 1, (N, N))
    img[:, : int(0.3 * N)] = np.nan
    assert assess(_frame(img), QualityThresholds()).flags == []
    monkeypatch.setenv("ASTRO_PIPELINE_QUALITY__MOSTLY_BLANK_MAX", "0.2")
    get_settings.cache_clear()
    rep = assess(_frame(img), get_settings().quality)  # what the CLI and flows pass
    assert rep.flag_names == ["mostly_blank"] and rep.flags[0].threshold == 0.2
    # explicit thresholds win
    assert assess(_frame(img), QualityThresholds(mostly_blank_max=0.9)).flags == []


@pytest.mark.parametrize("fill", [np.nan, 0.0])
def test_empty_frames_are_flagged_not_crashing(fill: float) -> None:
    rep = assess(_frame(np.full((32, 32), fill)), QualityThresholds())
    assert "mostly_blank" in rep.flag_names
    text = json.dumps(rep.as_dict(), allow_nan=False)  # JSON-safe: no NaN/inf
    assert "mostly_blank" in text


def test_display_images_skip_cosmic_rays_and_handle_quantised_noise() -> None:
    rng = np.random.default_rng(7)
    rgb = np.zeros((N, N, 3), np.float32)
    rgb += (_stars(rng)[..., None] / 500.0).clip(0, 1).astype(np.float32)
    rep = assess(_frame(rgb, display=True), QualityThresholds())
    assert rep.metrics["cosmic_ray_fraction"] is None
    assert all(v is None or math.isfinite(v) for v in rep.metrics.values())
    assert "cosmic_rays" not in rep.flag_names and "noisy" not in rep.flag_names
