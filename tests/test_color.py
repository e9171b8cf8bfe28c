"""sRGB <-> CIE Lab (D65): known values, round trips, agreement with scikit-image."""

from __future__ import annotations

import numpy as np
import pytest

from astro_pipeline import color


def test_known_values() -> None:
    lab = color.srgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-9)
    # CIE Lab of sRGB pure red (D65): L 53.24, a 80.09, b 67.20
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.02)
    # mid grey 0.5 -> L* 53.39
    assert color.lightness_from_grey(np.array(0.5)) == pytest.approx(53.389, abs=0.01)


def test_round_trip_and_dtype() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.random((64, 64, 3)).astype(np.float32)
    lab = color.srgb_to_lab(rgb)
    assert lab.dtype == np.float32 and lab.shape == rgb.shape
    back = color.lab_to_srgb(lab)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, rgb, atol=2e-5)
    rgb64 = rng.random((100, 3))
    np.testing.assert_allclose(color.lab_to_srgb(color.srgb_to_lab(rgb64)), rgb64, atol=1e-12)


def test_matches_skimage() -> None:
    from skimage.color import lab2rgb, rgb2lab

    rng = np.random.default_rng(2)
    rgb = rng.random((500, 3))
    np.testing.assert_allclose(color.srgb_to_lab(rgb), rgb2lab(rgb), atol=0.01)
    lab = rgb2lab(rgb)
    np.testing.assert_allclose(color.lab_to_srgb(lab), lab2rgb(lab), atol=1e-4)


def test_lightness_is_l_of_lab_and_of_grey() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.random((200, 3))
    np.testing.assert_allclose(color.lightness(rgb), color.srgb_to_lab(rgb)[..., 0], atol=1e-10)
    g = rng.random(50)
    np.testing.assert_allclose(color.lightness_from_grey(g), color.lightness(np.stack([g, g, g], -1)), atol=1e-6)
    # out-of-gamut Lab is clipped into [0, 1]
    out = color.lab_to_srgb(np.array([[50.0, 120.0, -120.0]]))
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        color.srgb_to_lab(np.zeros((4, 4)))
