"""Display stretch: limits from valid pixels only, asinh, exact reproduction from the recorded params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astro_pipeline.ingest.frame import Frame, StretchParams
from astro_pipeline.ingest.stretch import apply_stretch, compute_stretch, display_image


def _frame(data: np.ndarray, mask: np.ndarray | None = None, display: bool = False) -> Frame:
    if mask is None:
        mask = np.isfinite(data) if data.ndim == 2 else np.ones(data.shape[:2], bool)
    return Frame(data=data.astype(np.float32), mask=mask, source_path=Path("x.fits"),
                 source_sha256="0" * 64, format="fits", is_display=display)


def _sky(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(100.0, 5.0, (128, 128))
    yy, xx = np.mgrid[:128, :128]
    img += 5000.0 * np.exp(-((yy - 64) ** 2 + (xx - 40) ** 2) / 8.0)
    return img.astype(np.float32)


@pytest.mark.parametrize("method", ["zscale+asinh", "percentile+asinh"])
def test_limits_ignore_invalid_border(method: str) -> None:
    img = _sky()
    clean = compute_stretch(_frame(img), method)
    bordered = img.copy()
    bordered[:, :30] = np.nan
    bordered[:20, :] = 0.0  # zero-weight border: masked by the reader
    mask = np.isfinite(bordered)
    mask[:20, :] = False
    p = compute_stretch(_frame(bordered, mask), method)
    assert p.method == method
    assert 70 < p.vmin < 100 < p.vmax
    # the zero border would drag vmin to 0 if it were used
    assert p.vmin == pytest.approx(clean.vmin, rel=0.1)
    out, params = display_image(_frame(bordered, mask), method)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.all(out[~mask] == 0.0)
    assert params == p


def test_apply_reproduces_exactly_from_recorded_dict() -> None:
    frame = _frame(_sky(1))
    out, params = display_image(frame)
    d = params.as_dict()
    again = apply_stretch(frame.data, StretchParams(method=d["method"], vmin=d["vmin"], vmax=d["vmax"],
                                                    asinh_a=d["asinh_a"]))
    assert np.array_equal(out, again)
    # asinh of the normalised value, by hand
    x = np.clip((frame.data.astype(np.float64) - params.vmin) / (params.vmax - params.vmin), 0, 1)
    ref = np.arcsinh(x / params.asinh_a) / np.arcsinh(1 / params.asinh_a)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    # the star saturates at 1, the sky sits low
    assert out[64, 40] == pytest.approx(1.0)
    assert 0.05 < float(np.median(out)) < 0.9


def test_display_images_are_untouched() -> None:
    rng = np.random.default_rng(4)
    rgb = rng.random((16, 16, 3)).astype(np.float32)
    out, params = display_image(_frame(rgb, display=True))
    assert params.method == "none"
    assert np.array_equal(out, rgb)


def test_flat_and_empty_frames_do_not_fail() -> None:
    flat = _frame(np.full((8, 8), 3.0))
    p = compute_stretch(flat)
    assert p.vmax > p.vmin
    empty = _frame(np.full((8, 8), np.nan))
    out, p2 = display_image(empty)
    assert (p2.vmin, p2.vmax) == (0.0, 1.0)
    assert np.all(out == 0.0)


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown stretch method"):
        compute_stretch(_frame(_sky()), "log")
