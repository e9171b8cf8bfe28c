"""What the HLA and ESA/Hubble replica pages share: the sample, web fault switches, stalls, imaging.

Web faults change what a *browser* sees, so they live beside the pages rather than in the
HTTP-level ``FaultPlan``. They are a spec string (``WebFaults.parse``) or set on a running
server: ``server.state.extra["web_faults"] = WebFaults.parse("hla-layout:fwd")``.

| fault | argument | effect |
|---|---|---|
| ``hla-layout`` | ``fwd`` (default), ``color``, ``count``, ``img`` | that element is missing from the HLA page / result frames |
| ``hla-stall`` | results page number (default 1), or ``frame`` | the results JSON (or every result frame) never answers |
| ``esa-layout`` | ``pagination`` (default), ``images``, ``statusbar``, ``downloads``, ``object-info`` | that part of the ESA page is missing |
| ``esa-stall`` | ``list:<n>`` (default ``list:2``) or an image id | that page never answers |
| ``esa-bad-sha256`` | image id or ``*`` | the published sha256 is wrong |

Truncated or slow *downloads* are HTTP-level faults: use ``FaultPlan`` (``truncate:/media/archives/``,
``slow:/cgi-bin/fitscut.cgi:delay=30``). A stalled response here waits until the client disconnects (or ``stall_s``, default 120 s), so a
stopping server is never held hostage.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.requests import Request

__all__ = ["WebFaults", "web_faults", "sample_items", "stall", "FitsField", "load_fits_field", "encode_jpeg",
           "display_stretch", "sample_root"]

_LOCK = threading.Lock()


@dataclass
class WebFaults:
    """Active web fault switches: name -> argument (``""`` for the default)."""

    active: dict[str, str] = field(default_factory=dict)
    stall_s: float = 120.0

    KNOWN = ("hla-layout", "hla-stall", "esa-layout", "esa-stall", "esa-bad-sha256")

    @classmethod
    def parse(cls, spec: str | None, *, stall_s: float = 120.0) -> WebFaults:
        """``"hla-layout:fwd,esa-stall:list:2"`` -> WebFaults; unknown names are a ValueError."""
        active: dict[str, str] = {}
        for part in (spec or "").split(","):
            part = part.strip()
            if not part:
                continue
            name, _, arg = part.partition(":")
            if name not in cls.KNOWN:
                raise ValueError(f"unknown web fault {name!r} in {spec!r}; known: {', '.join(cls.KNOWN)}")
            active[name] = arg
        return cls(active=active, stall_s=stall_s)

    def arg(self, name: str, default: str = "") -> str | None:
        """The fault's argument (``default`` when given without one); None when it is off."""
        if name not in self.active:
            return None
        return self.active[name] or default

    def matches(self, name: str, value: str, default: str = "") -> bool:
        """True when ``name`` is on and its argument is ``value`` or ``*``."""
        arg = self.arg(name, default)
        return arg is not None and (arg == "*" or arg == value)


def web_faults(state: Any) -> WebFaults:
    """The server's web faults (from ``state.extra["web_faults"]``, a WebFaults or a spec string)."""
    value = state.extra.get("web_faults")
    if isinstance(value, WebFaults):
        return value
    parsed = WebFaults.parse(value if isinstance(value, str) else None)
    state.extra["web_faults"] = parsed
    return parsed


def sample_items(state: Any) -> list[Any]:
    """All items of the sample the replica serves (shared with the MAST router's cache)."""
    from astro_pipeline.archives.replica.content import load_sample_index

    return list(load_sample_index(state).items)


def sample_root(state: Any) -> Path:
    index = state.extra.get("sample_index")
    return Path(getattr(index, "root", None) or state.sample_root)


async def stall(request: Request, seconds: float) -> None:
    """Hold the response until the client gives up (or ``seconds`` pass)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.1)


# --- imaging ------------------------------------------------------------------------------------

@dataclass
class FitsField:
    """A science image (2-D float32) with its celestial WCS, loaded once per file."""

    path: Path
    data: np.ndarray
    wcs: Any  # astropy.wcs.WCS
    pixel_scale_arcsec: float


def load_fits_field(state: Any, path: Path) -> FitsField:
    """The first 2-D image HDU of ``path`` (cached in ``state.extra``)."""
    cache: dict[Path, FitsField] = state.extra.setdefault("fits_cache", {})
    hit = cache.get(path)
    if hit is not None:
        return hit
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning
    from astropy.wcs.utils import proj_plane_pixel_scales

    with fits.open(path, memmap=False) as hdul:
        hdu = next((h for h in hdul if getattr(h, "data", None) is not None and np.ndim(h.data) == 2), None)
        if hdu is None:
            raise ValueError(f"{path}: no 2-D image HDU")
        data = np.asarray(hdu.data, dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(hdu.header).celestial
    try:
        scale = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0) if wcs.has_celestial else 0.05
    except Exception:  # noqa: BLE001 - a degenerate WCS: fall back to ACS/WFC's scale
        scale = 0.05
    field_ = FitsField(path=path, data=data, wcs=wcs, pixel_scale_arcsec=scale if scale > 0 else 0.05)
    with _LOCK:
        cache[path] = field_
    return field_


def display_stretch(data: np.ndarray, *, autoscale: float = 99.5, asinh: bool = True) -> np.ndarray:
    """fitscut-style contrast: clip to the ``autoscale`` percentile range, optional asinh; -> [0,1]."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(data.shape, np.float32)
    autoscale = min(max(autoscale, 50.0), 100.0)
    lo, hi = np.percentile(finite, [100.0 - autoscale, autoscale])
    if not math.isfinite(hi - lo) or hi <= lo:
        hi = lo + 1.0
    x = np.clip((np.nan_to_num(data, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    if asinh:
        x = np.arcsinh(10.0 * x) / np.arcsinh(10.0)
    return x.astype(np.float32)


def encode_jpeg(img01: np.ndarray, *, quality: int = 90) -> bytes:
    """(H,W) or (H,W,3) floats in [0,1] -> JPEG bytes."""
    from PIL import Image

    arr = np.clip(np.round(img01 * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
