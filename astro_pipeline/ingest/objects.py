"""Frames from what a notebook holds: a path, a numpy array, an astropy HDU or an NDData/CCDData.

The one rule for what is display and what is science data (the Python API's docstrings repeat it):

* a ``uint8`` array is a **display** image (grey, RGB or RGBA values / 255): never stretched, as
  the readers treat PNG/JPEG;
* any other integer array (16/32/64-bit) and any float array, an ``ImageHDU`` / ``PrimaryHDU`` /
  ``CompImageHDU``, and an ``NDData`` / ``CCDData`` are linear **science** data: masked (NaN/inf,
  integer ``BLANK``, a given mask) and stretched like a FITS frame;
* a file is decided by the readers (``ingest.readers.read_frames``): FITS and float TIFF are
  science, PNG/JPEG/integer TIFF display.

``display=True`` or ``False`` overrides the rule for an array. In-memory science frames get
``format="fits"`` (the products treat them as FITS frames: an RGB FITS cube, the WCS, the
flux-conserving 4x FITS); display frames get ``format="png"``. Masks given here follow the
astropy convention, True where a pixel is *bad*; a :class:`Frame`'s own mask is True where valid.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from astro_pipeline.ingest.frame import Frame, IngestError

if TYPE_CHECKING:  # pragma: no cover
    from astropy.io.fits import CompImageHDU, Header, ImageHDU, PrimaryHDU
    from astropy.nddata import NDData
    from astropy.wcs import WCS

    ImageInput: TypeAlias = str | os.PathLike[str] | np.ndarray | ImageHDU | PrimaryHDU | CompImageHDU | NDData | Frame

__all__ = ["ImageInput", "default_name", "frames_from", "select_frame"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def default_name(obj: Any) -> str:
    """The product name an in-memory input gets when none is given: ``array``, ``hdu`` or ``ccddata``."""
    from astropy.nddata import NDData

    if isinstance(obj, NDData):
        return "ccddata" if type(obj).__name__ == "CCDData" else "nddata"
    if isinstance(obj, np.ndarray):
        return "array"
    return "hdu"


def check_name(name: str) -> str:
    """A product name must be a plain file name (no folders, no leading dot)."""
    if not _NAME_RE.match(name or ""):
        raise ValueError(f"name={name!r}: use letters, digits and . _ + - only (a file name, no folders)")
    return name


def frames_from(
    obj: ImageInput,
    *,
    max_image_pixels: int,
    name: str | None = None,
    wcs: WCS | None = None,
    mask: np.ndarray | None = None,
    header: Header | dict[str, Any] | None = None,
    display: bool | None = None,
) -> list[Frame]:
    """Every frame of ``obj`` as a :class:`Frame` (see the module docstring for the display rule).

    ``wcs``, ``mask`` (True = bad), ``header`` (FILTER, BUNIT, PHOTFLAM, ... for the records) and
    ``display`` describe in-memory data; a file, an HDU or a CCDData carries its own header. Raises
    ``IngestError`` for a bad file or unusable data, ``TypeError`` for an input of another kind.
    """
    if isinstance(obj, Frame):
        return [obj]
    if isinstance(obj, str | os.PathLike):
        given = [k for k, v in (("wcs", wcs), ("mask", mask), ("header", header), ("display", display)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(g + '=' for g in given)} describe in-memory data; the file {obj} carries its own")
        from astro_pipeline.ingest.readers import read_frames

        return read_frames(Path(obj), max_image_pixels=max_image_pixels)

    from astropy.io import fits
    from astropy.nddata import NDData

    label = f"<{check_name(name) if name else default_name(obj)}>"
    if isinstance(obj, NDData):
        if display:
            raise ValueError(f"{label}: an NDData/CCDData is science data; display=True applies to uint8-like arrays")
        return _nddata_frames(obj, label=label, wcs=wcs, mask=mask, header=header, limit=max_image_pixels)
    if isinstance(obj, fits.GroupsHDU):
        raise TypeError(f"{label}: random-groups HDUs hold no image")
    if isinstance(obj, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
        if display:
            raise ValueError(f"{label}: an HDU is science data; display=True applies to uint8-like arrays")
        return _hdu_frames(obj, label=label, wcs=wcs, mask=mask, header=header, limit=max_image_pixels)
    if isinstance(obj, fits.HDUList):
        raise TypeError(f"{label}: give one HDU of the HDUList (e.g. hdul['SCI']) or the file's path")
    if isinstance(obj, np.ndarray):
        return _array_frames(obj, label=label, wcs=wcs, mask=mask, header=header, display=display,
                             limit=max_image_pixels)
    raise TypeError(f"cannot read a {type(obj).__name__}: give a path, a numpy array, an astropy "
                    "ImageHDU/PrimaryHDU, or a CCDData")


def select_frame(frames: list[Frame], index: int | None) -> Frame:
    """The one frame to process: the only one, or ``frames[index]`` when the input holds several."""
    if index is None:
        if len(frames) == 1:
            return frames[0]
        keys = ", ".join(f.key for f in frames[:8]) + (", ..." if len(frames) > 8 else "")
        raise ValueError(f"{frames[0].source_path} holds {len(frames)} frames ({keys}); "
                         f"choose one with frame=0..{len(frames) - 1}")
    if not -len(frames) <= index < len(frames):
        raise IndexError(f"frame={index}: {frames[0].source_path} holds {len(frames)} frame(s)")
    return frames[index]


# ---------------------------------------------------------------------------------------------


def _content_sha(arr: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes: the identity of in-memory data."""
    digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return digest.hexdigest()


def _check_size(label: str, arr: np.ndarray, limit: int) -> None:
    if arr.ndim < 2 or 0 in arr.shape:
        raise IngestError(label, f"an image needs two non-empty axes, got shape {arr.shape}")
    if arr.size > limit:
        raise IngestError(label, f"{arr.size:,} values, above the limit of {limit:,} (max_image_pixels)")


def _bad_from(mask: Any, shape: tuple[int, ...], label: str) -> np.ndarray | None:
    """A given mask (True = bad) as a bool array of ``shape``, or None."""
    if mask is None or mask is False:
        return None
    bad = np.asarray(mask)
    if bad.dtype != bool:
        bad = bad != 0
    if bad.shape != shape:
        try:
            bad = np.broadcast_to(bad, shape)
        except ValueError:
            raise ValueError(f"{label}: mask of shape {bad.shape} does not fit data of shape {shape}") from None
    return bad


def _celestial(wcs: Any, label: str, notes: list[str]) -> Any | None:
    from astropy.wcs import WCS

    if wcs is None:
        return None
    if not isinstance(wcs, WCS):
        raise TypeError(f"{label}: wcs= takes an astropy.wcs.WCS, not a {type(wcs).__name__}")
    if not wcs.has_celestial:
        notes.append("WCS has no celestial axes; ignored")
        return None
    return wcs.celestial


def _header_of(header: Any) -> Any | None:
    """A ``fits.Header`` from a Header, a dict of cards, or None."""
    from astropy.io import fits

    if header is None or isinstance(header, fits.Header):
        return header
    out = fits.Header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # long keywords become HIERARCH cards
        for k, v in dict(header).items():
            if isinstance(v, str | int | float | bool) or v is None:
                out[str(k)] = v
    return out


def _provenance(header: Any | None, wcs: Any | None, shape: tuple[int, int]) -> dict[str, Any]:
    from astro_pipeline.ingest.readers import _centre, _empty_provenance, _fits_provenance

    prov = _fits_provenance(header, header) if header is not None else _empty_provenance()
    ra, dec = _centre(wcs, shape)
    prov.update(ra=ra, dec=dec)
    return prov


def _science_frames(data: np.ndarray, *, label: str, bad: np.ndarray | None, wcs: Any | None, header: Any | None,
                    notes: list[str], hdu: int | None, limit: int) -> list[Frame]:
    """Linear frames from an (H, W) or (..., H, W) array: float32, masked where non-finite or bad."""
    _check_size(label, data, limit)
    if data.dtype.kind not in "uif":
        raise IngestError(label, f"pixels of type {data.dtype} are not image data")
    sha = _content_sha(data)
    with np.errstate(over="ignore", invalid="ignore"):
        planes = np.array(data, dtype=np.float32).reshape((-1,) + data.shape[-2:])  # a copy: never a view of
        # the caller's array, nor of a memory map that closes with its HDUList
    bads = bad.reshape(planes.shape) if bad is not None else None
    prov = _provenance(header, wcs, planes.shape[-2:])
    frames = []
    for p in range(planes.shape[0]):
        plane = np.ascontiguousarray(planes[p])
        valid = np.isfinite(plane)
        if bads is not None:
            valid &= ~bads[p]
        frames.append(Frame(data=plane, mask=valid, source_path=Path(label), source_sha256=sha, format="fits",
                            hdu=hdu, plane=p if planes.shape[0] > 1 else None, wcs=wcs,
                            header=header.copy() if header is not None else None, provenance=dict(prov),
                            is_display=False, notes=list(notes)))
    for f in frames:
        f.n_frames_in_file = len(frames)
    return frames


def _display_frame(arr: np.ndarray, *, label: str, bad: np.ndarray | None, wcs: Any | None, header: Any | None,
                   notes: list[str], limit: int) -> Frame:
    """A display frame from (H, W), (H, W, 1|2|3|4) integer (/ type max) or float ([0, 1]) values."""
    _check_size(label, arr, limit)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    alpha = None
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        alpha, arr = arr[..., -1], arr[..., :-1]
        notes.append("alpha channel dropped (pixels with alpha 0 masked)")
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise IngestError(label, f"a display image is (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    sha = _content_sha(arr)
    if arr.dtype.kind in "ui":
        top = float(np.iinfo(arr.dtype).max)
        data = (np.clip(arr.astype(np.float64), 0.0, None) / top).astype(np.float32)
    elif arr.dtype.kind == "f":
        data = np.asarray(arr, dtype=np.float32)
        finite = data[np.isfinite(data)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            raise IngestError(label, f"display values must lie in [0, 1], got [{finite.min():.4g}, {finite.max():.4g}]; "
                              "linear data: leave display unset")
    else:
        raise IngestError(label, f"pixels of type {arr.dtype} are not image data")
    valid = np.isfinite(data) if data.ndim == 2 else np.isfinite(data).all(axis=-1)
    data = np.ascontiguousarray(np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=0.0))
    if alpha is not None:
        valid &= np.asarray(alpha) != 0
    if bad is not None:
        valid &= ~bad
    return Frame(data=data, mask=valid, source_path=Path(label), source_sha256=sha, format="png", wcs=wcs,
                 header=header, provenance=_provenance(header, wcs, data.shape[:2]), is_display=True,
                 notes=notes)


def _array_frames(arr: np.ndarray, *, label: str, wcs: Any, mask: Any, header: Any, display: bool | None,
                  limit: int) -> list[Frame]:
    notes: list[str] = []
    if isinstance(arr, np.ma.MaskedArray):  # its mask joins the given one (both True = bad)
        given = np.ma.getmaskarray(arr)
        arr = np.ma.getdata(arr)
        mask = given if mask is None else (given | _bad_from(mask, arr.shape, label))
    if arr.dtype.kind not in "uif":
        raise TypeError(f"{label}: arrays of {arr.dtype} are not images (use uint8 for display, float or int for science)")
    hdr = _header_of(header)
    wcs_c = _celestial(wcs, label, notes)
    if wcs_c is None and wcs is None and hdr is not None:
        from astro_pipeline.ingest.readers import _celestial_wcs

        wcs_c = _celestial_wcs(hdr, None, notes)
    is_display = (arr.dtype == np.uint8) if display is None else bool(display)
    if is_display:
        bad = None if mask is None else np.asarray(mask)
        if bad is not None and bad.ndim == 3 and arr.ndim == 3:  # a per-sample mask: a pixel is bad if any sample is
            bad = bad.any(axis=-1)
        bad = _bad_from(bad, arr.shape[:2], label)
        return [_display_frame(arr, label=label, bad=bad, wcs=wcs_c, header=hdr, notes=notes, limit=limit)]
    if arr.ndim == 3 and arr.shape[-1] <= 4 < arr.shape[0]:
        raise ValueError(f"{label}: a float/int array of shape {arr.shape} looks like (H, W, channels); science "
                         "data is (H, W) or (planes, H, W). An RGB display image in [0, 1]: pass display=True; "
                         "bands of one field: use astro_pipeline.compose")
    bad = _bad_from(mask, arr.shape, label)
    return _science_frames(arr, label=label, bad=bad, wcs=wcs_c, header=hdr, notes=notes, hdu=None, limit=limit)


def _hdu_frames(hdu: Any, *, label: str, wcs: Any, mask: Any, header: Any, limit: int) -> list[Frame]:
    from astro_pipeline.ingest.readers import _celestial_wcs

    if header is not None:
        raise ValueError(f"{label}: an HDU carries its own header; header= applies to arrays")
    data = hdu.data
    if data is None:
        raise IngestError(label, "the HDU holds no data")
    data = np.asarray(data)
    hdr = hdu.header
    notes: list[str] = []
    bad = _bad_from(mask, data.shape, label)
    if data.dtype.kind in "ui" and "BLANK" in hdr:
        blank = data == int(hdr["BLANK"])
        bad = blank if bad is None else (bad | blank)
    wcs_c = _celestial(wcs, label, notes) if wcs is not None else _celestial_wcs(hdr, None, notes)
    return _science_frames(data, label=label, bad=bad, wcs=wcs_c, header=hdr, notes=notes, hdu=None, limit=limit)


def _nddata_frames(nd: Any, *, label: str, wcs: Any, mask: Any, header: Any, limit: int) -> list[Frame]:
    from astropy.wcs import WCS

    if header is not None:
        raise ValueError(f"{label}: an NDData/CCDData carries its own meta; header= applies to arrays")
    data = np.asarray(nd.data)
    notes: list[str] = []
    bad = _bad_from(nd.mask, data.shape, label)
    extra = _bad_from(mask, data.shape, label)
    if extra is not None:
        bad = extra if bad is None else (bad | extra)
    hdr = _header_of(nd.meta) if nd.meta else None
    unit = getattr(nd, "unit", None)
    if unit is not None:
        from astropy.io import fits

        hdr = hdr if hdr is not None else fits.Header()
        hdr["BUNIT"] = unit.to_string()
    own = nd.wcs if isinstance(nd.wcs, WCS) else None
    wcs_c = _celestial(wcs if wcs is not None else own, label, notes)
    return _science_frames(data, label=label, bad=bad, wcs=wcs_c, header=hdr, notes=notes, hdu=None, limit=limit)
