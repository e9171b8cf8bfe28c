"""Sky level of display images, and matching it to what the colour model was trained on.

The colour model learned from ESA/Hubble release JPEGs, whose skies are near black; the sweep's
ZScale + asinh stretches of raw frames put the sky near a grey of 0.3. :func:`sky_lightness`
measures the median CIE L* of the sky pixels: the valid pixels kept by iterative 3-sigma clipping
about the median with the MAD standard deviation (astropy ``sigma_clip(cenfunc="median",
stdfunc="mad_std")``, the definition of the colour-evaluation issue's sky gap; numpy only here so
the engine needs no astropy). :func:`match_sky_lightness` remaps a lightness map monotonically so
that its sky sits at a target L* while black stays black and white stays white. Only the model's
input is remapped; the product keeps its recorded stretch and its own L*.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigma_clipped_median", "sky_lightness", "sky_of_lightness", "match_sky_lightness", "lightness_of", "prepare_model_lightness"]

_MAX_SAMPLES = 1 << 20


def lightness_of(image: np.ndarray) -> np.ndarray:
    """CIE L* (0..100) of a display image: (H, W) grey or (H, W, 3) sRGB in [0, 1] (or uint8)."""
    from astro_pipeline.color import lightness, lightness_from_grey

    arr = np.asarray(image)
    x = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0)
    return lightness(x) if x.ndim == 3 else lightness_from_grey(x)


def sigma_clipped_median(values: np.ndarray, *, sigma: float = 3.0, maxiters: int = 10) -> float:
    """Median of ``values`` after iterative clipping at ``sigma`` MAD standard deviations about the
    median (as astropy ``sigma_clip(cenfunc="median", stdfunc="mad_std")``, then the median)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    for _ in range(maxiters):
        med = np.median(v)
        std = 1.482602218505602 * np.median(np.abs(v - med))
        keep = np.abs(v - med) <= sigma * std
        if keep.all() or not keep.any():
            break
        v = v[keep]
    return float(np.median(v))


def sky_lightness(image: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Median L* of the sky of a display image (grey or sRGB), over its ``valid`` pixels (all when None)."""
    return sky_of_lightness(lightness_of(image), valid)


def sky_of_lightness(lightness_star: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Median L* of the sky of an L* map over its ``valid`` pixels (all when None), evenly
    subsampled to at most ~1 M values."""
    L = np.asarray(lightness_star)
    v = L[np.asarray(valid, dtype=bool)] if valid is not None else L.ravel()
    if v.size > _MAX_SAMPLES:
        v = v[:: int(np.ceil(v.size / _MAX_SAMPLES))]
    return sigma_clipped_median(v) if v.size else float("nan")


def match_sky_lightness(lightness_star: np.ndarray, *, sky: float, target: float) -> np.ndarray:
    """Piecewise-linear monotone remap of L* sending ``sky`` to ``target``, 0 to 0 and 100 to 100."""
    L = np.clip(np.asarray(lightness_star, dtype=np.float32), 0.0, 100.0)
    s = float(np.clip(sky, 1e-3, 100.0 - 1e-3))
    t = float(np.clip(target, 0.0, 100.0))
    low = L * np.float32(t / s)
    high = np.float32(t) + (L - np.float32(s)) * np.float32((100.0 - t) / (100.0 - s))
    return np.where(L < s, low, high).astype(np.float32)


def prepare_model_lightness(lightness_star: np.ndarray, *, target: float | None) -> np.ndarray:
    """The L* map a colour model should see: the product's L* with its sky moved to ``target``
    (the training images' median sky L*); unchanged when ``target`` is None or the sky is undefined.

    The engine has no validity mask, so pixels at exactly L* 0 (zero-weight borders, masked and
    clipped pixels) are taken as no-data when the sky is estimated.
    """
    L = np.asarray(lightness_star, dtype=np.float32)
    if target is None:
        return L
    valid = L > 0
    sky = sky_of_lightness(L, valid=valid)
    if not np.isfinite(sky):
        return L
    # the remap squeezes the sky's lower tail and stretches its upper one, so the clipped set (and its
    # median) moves; a few fixed-point steps put the *measured* sky of the result on the target
    aim, out = float(target), L
    for _ in range(4):
        out = match_sky_lightness(L, sky=sky, target=float(np.clip(aim, 0.5, 99.0)))
        got = sky_of_lightness(out, valid=valid)
        if not np.isfinite(got) or abs(got - float(target)) < 0.25:
            break
        aim += float(target) - got
    return out
