"""Display stretch of linear science frames: ZScale or percentile limits, then asinh.

Limits are computed on valid pixels only (NaN/zero-weight borders would wreck them) and
recorded in :class:`StretchParams`, from which :func:`apply_stretch` reproduces the display
values exactly. Display images (8-bit PNG/JPEG/TIF) are never stretched.
"""

from __future__ import annotations

import numpy as np

from astro_pipeline.ingest.frame import Frame, StretchParams

__all__ = ["METHODS", "apply_stretch", "compute_stretch", "display_image"]

METHODS = ("zscale+asinh", "percentile+asinh", "none")
DEFAULT_ASINH_A = 0.1
DEFAULT_PERCENTILES = (0.5, 99.8)


def compute_stretch(
    frame: Frame,
    method: str = "zscale+asinh",
    *,
    asinh_a: float = DEFAULT_ASINH_A,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> StretchParams:
    """Limits (vmin, vmax) from the frame's valid pixels plus the asinh softening ``a``."""
    if method not in METHODS:
        raise ValueError(f"unknown stretch method {method!r}; choose one of {', '.join(METHODS)}")
    if frame.is_display or method == "none":
        return StretchParams(method="none", vmin=0.0, vmax=1.0, asinh_a=asinh_a)
    data = frame.data if frame.data.ndim == 2 else frame.data.mean(axis=-1)
    valid = data[frame.mask & np.isfinite(data)]
    if valid.size == 0:
        return StretchParams(method=method, vmin=0.0, vmax=1.0, asinh_a=asinh_a,
                             percentiles=percentiles if method.startswith("percentile") else None)
    if method == "zscale+asinh":
        from astropy.visualization import ZScaleInterval

        vmin, vmax = ZScaleInterval().get_limits(valid)  # samples 1000 values: no full float64 copy
        pct = None
    else:
        vmin, vmax = np.percentile(valid, percentiles)
        pct = (float(percentiles[0]), float(percentiles[1]))
    vmin, vmax = float(vmin), float(vmax)
    if not vmax > vmin:  # flat image: fall back to the full range, then to a unit span
        lo, hi = float(valid.min()), float(valid.max())
        vmin, vmax = (lo, hi) if hi > lo else (lo, lo + 1.0)
    return StretchParams(method=method, vmin=vmin, vmax=vmax, asinh_a=float(asinh_a), percentiles=pct)


def apply_stretch(data: np.ndarray, params: StretchParams) -> np.ndarray:
    """Apply recorded limits then asinh; float32 in [0, 1]; NaN/inf become 0."""
    arr = np.asarray(data, dtype=np.float32)
    if params.method == "none":
        out = np.clip(arr, 0.0, 1.0)
    else:
        from astropy.visualization import AsinhStretch, ManualInterval

        transform = AsinhStretch(a=params.asinh_a) + ManualInterval(params.vmin, params.vmax)
        with np.errstate(invalid="ignore", over="ignore"):
            out = transform(arr, clip=True)
    out = np.asarray(out, dtype=np.float32)
    bad = ~np.isfinite(out)  # NaN input; clipping leaves no infinities
    if bad.any():
        out = np.where(bad, np.float32(0.0), out)
    return out


def display_image(frame: Frame, method: str = "zscale+asinh") -> tuple[np.ndarray, StretchParams]:
    """Display values of a frame and the stretch used.

    Grey science frame: (H, W) float32 in [0, 1], stretched, invalid pixels 0.
    Display image (colour or grey): its sRGB values unchanged, ``params.method == "none"``.
    """
    params = compute_stretch(frame, "none" if frame.is_display else method)
    out = apply_stretch(frame.data, params)
    if not frame.is_display:
        out = np.where(frame.mask if out.ndim == 2 else frame.mask[..., None], out, np.float32(0.0))
    return out.astype(np.float32, copy=False), params
