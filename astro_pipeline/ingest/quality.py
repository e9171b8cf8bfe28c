"""Quality metrics of a Frame and the named flags they raise (each with value and threshold).

Metrics (all on valid pixels unless said otherwise):
    ``background``/``sky_rms`` sigma-clipped median and MAD standard deviation of pixel values,
    ``noise``                 pixel-to-pixel noise: MAD std of neighbour differences / sqrt(2)
                              (blind to smooth structure such as nebulae),
    ``snr``                   brightest structure (99.5th percentile of the 4x4-binned image,
                              less background) over the per-pixel noise: low when sources are
                              buried in pixel noise,
    ``dynamic_range``         the same structure over the noise of the binned image: low when
                              nothing rises above the noise even after binning,
    ``invalid_fraction``      pixels masked (NaN/inf, zero weight, saturated),
    ``blank_fraction``        pixels with no data (NaN/inf/zero weight, or exactly 0.0 in science frames),
    ``saturated_fraction``    DQ saturation (256/2048), or a flat plateau at the maximum value of a
                              science frame; None for display images without DQ (8-bit PNG/JPEG:
                              their white is the stretch's white point, not a full well),
    ``clipped_fraction``      display images only: pixels at the white point in every channel,
    ``cosmic_ray_fraction``   sharp outliers: pixel minus its 3x3 median above ``cosmic_ray_sigma``
                              noise *and* most of the pixel's own signal (a PSF-sampled star keeps
                              about half its peak in that median), peaking locally (plus the
                              neighbours of such a peak that pass the same test: short tracks).
Flags: ``low_signal`` (dynamic range below threshold), ``noisy`` (structure is detected, but the
snr is below threshold; a frame with no signal is ``low_signal``, not also ``noisy``),
``mostly_blank``, ``saturated`` (where saturation is known) and ``cosmic_rays`` (science frames only).
"""

from __future__ import annotations

import math

import numpy as np

from astro_pipeline.config import QualityThresholds
from astro_pipeline.ingest.frame import Flag, Frame, QualityReport

__all__ = ["assess", "compute_metrics", "flags_for"]

_MAX_STATS_SAMPLES = 250_000  # subsample (deterministic stride) above this for the clipped stats
_SNR_CAP = 1e6
_SHARPNESS = 0.75  # a cosmic ray keeps >= this fraction of its signal above its 3x3 median


def _grey(frame: Frame) -> np.ndarray:
    if frame.data.ndim == 3:
        return frame.data.mean(axis=-1, dtype=np.float32)
    return frame.data


def _clipped_stats(values: np.ndarray) -> tuple[float, float]:
    """Sigma-clipped (3 sigma, 5 iterations) median and MAD standard deviation."""
    from astropy.stats import sigma_clipped_stats

    if values.size > _MAX_STATS_SAMPLES:
        values = values[:: int(math.ceil(values.size / _MAX_STATS_SAMPLES))]
    _, median, std = sigma_clipped_stats(values.astype(np.float64), sigma=3.0, maxiters=5, stdfunc="mad_std")
    return float(median), float(std)


def _diff_noise(data: np.ndarray, mask: np.ndarray) -> float | None:
    """Pixel-to-pixel noise: MAD std of horizontal neighbour differences / sqrt(2).

    Unlike the spread of pixel values it ignores smooth structure (nebulae, galaxy discs).
    """
    from astropy.stats import mad_std

    if data.shape[1] < 2:
        return None
    step = max(1, int(data.size // _MAX_STATS_SAMPLES))  # a subset of rows is plenty on big frames
    rows, rmask = data[::step], mask[::step]
    pair = rmask[:, 1:] & rmask[:, :-1]
    d = (rows[:, 1:].astype(np.float64) - rows[:, :-1])[pair]
    if d.size < 4:
        return None
    return float(mad_std(d)) / math.sqrt(2.0)


def _bin(data: np.ndarray, mask: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Block-mean image and the mask of fully valid factor x factor blocks."""
    if factor == 1:
        return data, mask
    h = data.shape[0] // factor * factor
    w = data.shape[1] // factor * factor
    d = np.where(mask[:h, :w], data[:h, :w], np.float32(0.0)).reshape(h // factor, factor, w // factor, factor)
    count = mask[:h, :w].view(np.uint8).reshape(h // factor, factor, w // factor, factor)
    full = count.sum(axis=3, dtype=np.uint16).sum(axis=1) == factor * factor
    return d.sum(axis=3).sum(axis=1) / np.float32(factor * factor), full


_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _neighbourhood(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(9, n) values of the 3x3 neighbourhoods of pixels (ys, xs); edges repeat the border pixel."""
    h, w = img.shape
    return np.stack([img[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] for dy, dx in _OFFSETS])


def _cosmic_ray_count(data: np.ndarray, mask: np.ndarray, background: float, noise: float,
                      k_sigma: float) -> int:
    """Count sharp hits. Only pixels above background + k/2 noise are examined (fast on big frames)."""
    valid = data[mask]
    fill = float(valid.max()) if valid.size else 0.0
    filled = np.where(mask, data, np.float32(fill))  # masked neighbours never make a pixel look sharp
    ys, xs = np.nonzero(mask & (filled > background + 0.5 * k_sigma * noise))
    if ys.size == 0:
        return 0
    hood = _neighbourhood(filled, ys, xs)
    centre = hood[4]
    med = np.partition(hood, 4, axis=0)[4]
    resid = centre - med
    sharp = (resid > k_sigma * noise) & (resid > _SHARPNESS * (centre - np.float32(background)))
    if not sharp.any():
        return 0
    # A hit peaks locally (a star's wing pixel beside its core does not); short tracks grow from the peak.
    seed = sharp & (centre >= hood.max(axis=0))
    seed_map = np.zeros(data.shape, bool)
    seed_map[ys[seed], xs[seed]] = True
    near_seed = _neighbourhood(seed_map, ys[sharp], xs[sharp]).any(axis=0)
    return int(near_seed.sum())


def compute_metrics(frame: Frame, thresholds: QualityThresholds) -> dict[str, float | None]:
    """All quality metrics of a frame (values that cannot be measured are None)."""
    th = thresholds
    data = _grey(frame)
    total = data.shape[0] * data.shape[1]
    mask = frame.mask & np.isfinite(data)
    n_valid = int(mask.sum())
    saturated = frame.saturated if frame.saturated is not None else np.zeros(mask.shape, bool)
    sat_dq = int(saturated.sum())
    invalid = ~mask
    no_data = invalid & ~saturated
    if not frame.is_display:
        no_data = no_data | (mask & (data == 0.0))
    metrics: dict[str, float | None] = {
        "n_pixels": float(total),
        "valid_fraction": n_valid / total,
        "invalid_fraction": 1.0 - n_valid / total,
        "blank_fraction": float(no_data.sum()) / total,
        "background": None,
        "noise": None,
        "sky_rms": None,
        "snr": None,
        "dynamic_range": None,
        "saturated_fraction": 0.0,
        "cosmic_ray_fraction": None,
        "min": None,
        "max": None,
    }
    if n_valid == 0:
        metrics["saturated_fraction"] = sat_dq / total
        return metrics

    valid = data[mask]
    vmin, vmax = float(valid.min()), float(valid.max())
    background, sky_rms = _clipped_stats(valid)
    noise = _diff_noise(data, mask)
    if noise is None:
        noise = sky_rms
    quantum = 1.0 / 255.0 / math.sqrt(12.0) if frame.is_display else 0.0
    noise_eff = max(noise, quantum)
    factor = 4 if min(data.shape) >= 32 else (2 if min(data.shape) >= 8 else 1)
    bimg, bmask = _bin(data, mask, factor)
    if bmask.sum() < 4:
        bimg, bmask, factor = data, mask, 1
    binned = bimg[bmask].astype(np.float64)
    bin_bkg, bin_rms = _clipped_stats(binned)
    bin_noise = _diff_noise(bimg, bmask)
    bin_noise = max(bin_noise if bin_noise is not None else bin_rms, quantum / factor)
    structure = float(np.percentile(binned, 99.5)) - bin_bkg

    def ratio(num: float, den: float) -> float:
        if den > 0:
            return float(min(max(num / den, -_SNR_CAP), _SNR_CAP))
        return 0.0 if num <= 0 else _SNR_CAP

    # saturation: DQ where known; otherwise a plateau of >= 4 pixels at a maximum far above the noise.
    # A display image without DQ cannot say: its white is the display's white point, set by whoever
    # stretched it (star cores of any stretched image sit there), not the detector's full well. It
    # reports the fraction at that white point instead (``clipped_fraction``), and no flag.
    saturated_fraction: float | None
    if frame.saturated is not None:
        saturated_fraction = sat_dq / total
    elif frame.is_display:
        saturated_fraction = None
        white = (frame.data >= 1.0).all(axis=-1) if frame.data.ndim == 3 else frame.data >= 1.0
        metrics["clipped_fraction"] = int(white[mask].sum()) / total
    else:
        at_max = int((valid == vmax).sum())
        saturated_fraction = (at_max if at_max >= 4 and vmax > background + 10 * noise_eff else 0) / total
    metrics.update(
        background=background,
        noise=noise,
        sky_rms=sky_rms,
        snr=ratio(structure, noise_eff),
        dynamic_range=ratio(structure, bin_noise),
        saturated_fraction=saturated_fraction,
        min=vmin,
        max=vmax,
    )
    if not frame.is_display and noise_eff > 0:
        metrics["cosmic_ray_fraction"] = _cosmic_ray_count(
            data, mask, background, noise_eff, th.cosmic_ray_sigma) / n_valid
    elif not frame.is_display:
        metrics["cosmic_ray_fraction"] = 0.0
    return metrics


def flags_for(metrics: dict[str, float | None], th: QualityThresholds) -> list[Flag]:
    """Turn metrics into named flags, each recording the value and the threshold it crossed."""
    flags: list[Flag] = []

    def check(name: str, key: str, threshold: float, comparison: str, message: str) -> bool:
        value = metrics.get(key)
        if value is None:
            return False
        hit = value < threshold if comparison == "<" else value > threshold
        if hit:
            flags.append(Flag(name=name, value=float(value), threshold=float(threshold),
                              comparison=comparison, message=message))
        return hit

    blank = check("mostly_blank", "blank_fraction", th.mostly_blank_max, ">",
                  "most pixels hold no data (NaN, zero weight or zero)")
    if metrics.get("valid_fraction") == 0.0:
        return flags if blank else flags + [Flag(name="mostly_blank", value=1.0, threshold=th.mostly_blank_max,
                                                 comparison=">", message="no valid pixels")]
    low = check("low_signal", "dynamic_range", th.low_signal_dynamic_range_min, "<",
                "nothing rises above the noise, even binned 4x4")
    if not low:
        check("noisy", "snr", th.noisy_snr_min, "<", "sources are buried in pixel noise")
    check("saturated", "saturated_fraction", th.saturated_max, ">", "saturated pixels (DQ 256/2048 or plateau)")
    check("cosmic_rays", "cosmic_ray_fraction", th.cosmic_rays_max, ">", "many sharp single-pixel hits")
    return flags


def assess(frame: Frame, thresholds: QualityThresholds) -> QualityReport:
    """Metrics and flags of one frame under ``thresholds`` (callers pass ``Settings.quality``)."""
    metrics = compute_metrics(frame, thresholds)
    return QualityReport(metrics=metrics, flags=flags_for(metrics, thresholds))
