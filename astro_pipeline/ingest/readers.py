"""Read FITS, TIF, PNG and JPEG files into masked float32 :class:`Frame` objects.

Every failure becomes an :class:`IngestError` naming the file and the problem; sizes claimed by
headers are checked against the file and the pixel limit (``Settings.pixel_limit``, which follows
from the memory budget) before any pixels are read, so a corrupt header can never make us allocate
gigabytes. Only what the headers declare is read: bytes after a FITS file's last HDU are noted on
its frames and never read into memory, and a compressed FITS stream is decompressed up to the end
of its last HDU and no further (``ingest.fitslayout``). Pillow's decompression-bomb check runs at
the same pixel limit. A caller's ``admit`` sees every image's geometry before any pixel is read,
so a job can be refused on its estimated memory (``astro_pipeline.job_estimate``).
"""

from __future__ import annotations

import bz2
import gzip
import io
import math
import os
import re
import stat
import threading
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from astro_pipeline.fileio import sha256_file
from astro_pipeline.ingest.fitslayout import DecompressedStream, FitsLayout, raw_data_bytes, walk_hdus
from astro_pipeline.ingest.frame import Frame, ImageGeometry, IngestError

__all__ = [
    "IMAGE_SUFFIXES",
    "Admit",
    "detect_content",
    "format_from_name",
    "is_image_name",
    "iter_input_files",
    "read_frames",
]

#: File names the directory walk picks up (compound suffixes first).
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".fits.gz", ".fit.gz", ".fts.gz", ".fits.bz2", ".fit.bz2", ".fits.fz", ".fit.fz",
    ".fits", ".fit", ".fts", ".fz", ".tif", ".tiff", ".png", ".jpg", ".jpeg",
)

# Extensions that are never the science image (aux arrays of HST products and friends).
_AUX_EXTNAMES = {
    "ERR", "DQ", "WHT", "CTX", "CON", "SAMP", "TIME", "VAR", "WGT", "RMS", "EXP", "HDRTAB",
    "D2IMARR", "WCSDVARR", "SIPARR", "MASK", "BPM",
}
_MEMMAP_MIN_BYTES = 64 << 20  # TIFFs larger than this are read through a memory map when uncompressed
_SATURATION_BITS = 256 | 2048  # DQ full-well and A-to-D saturation (ACS/WFC3)
_NICE_KIND = {"fits": "FITS", "gzip": "gzip", "bzip2": "bzip2", "png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}
#: Where the pixel limit comes from, for refusal messages.
_LIMIT_SOURCE = "it follows from the setting memory_budget, or max_image_pixels when lower"
_PILLOW_LOCK = threading.Lock()

#: Called with the geometry of every image a file's frames will come from, before any pixel is
#: read; may raise to refuse the file (the exception propagates from ``read_frames`` unchanged).
Admit = Callable[[Sequence[ImageGeometry]], None]


class _Refused(Exception):
    """Internal: carries the exception ``admit`` raised out through the reader's error handling."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _admit(admit: Admit | None, images: Sequence[ImageGeometry]) -> None:
    if admit is None:
        return
    try:
        admit(list(images))
    except Exception as exc:  # noqa: BLE001 - handed back to the caller as it was raised
        raise _Refused(exc) from exc


# --------------------------------------------------------------------------------------------
# File discovery and identification
# --------------------------------------------------------------------------------------------
def is_image_name(path: Path) -> bool:
    """True when the file name has an image suffix this module reads."""
    name = path.name.lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def iter_input_files(paths: Iterable[Path | str]) -> list[Path]:
    """Expand inputs: files are kept as given; directories are walked for image files.

    Hidden files and folders (leading ``.``) are skipped, symbolic links inside a walked
    directory are not followed (neither files nor folders), and the result is sorted per
    argument with duplicates removed. Paths that do not exist are kept, so the reader reports them.
    """
    out: list[Path] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = str(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found: list[Path] = []
            for dirpath, dirnames, filenames in os.walk(p, followlinks=False):
                dirnames[:] = sorted(
                    d for d in dirnames
                    if not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d))
                )
                for f in filenames:
                    fp = Path(dirpath) / f
                    if f.startswith(".") or fp.is_symlink():
                        continue
                    if is_image_name(fp):
                        found.append(fp)
            for fp in sorted(found):
                add(fp)
        else:
            add(p)
    return out


def detect_content(head: bytes) -> str | None:
    """Identify a file by its first bytes: fits, gzip, bzip2, png, jpeg, tiff or None."""
    if head.startswith(b"SIMPLE  =") or head.startswith(b"SIMPLE ="):
        return "fits"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def _kind_from_name(path: Path) -> tuple[str | None, str | None]:
    """(image kind, compression) implied by the file name, e.g. ('fits', 'gzip') for x.fits.gz."""
    name = path.name.lower()
    comp = None
    if name.endswith(".gz"):
        comp, name = "gzip", name[:-3]
    elif name.endswith(".bz2"):
        comp, name = "bzip2", name[:-4]
    suffix = Path(name).suffix
    kind = {
        ".fits": "fits", ".fit": "fits", ".fts": "fits", ".fz": "fits",
        ".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg",
    }.get(suffix)
    return kind, comp


def format_from_name(path: Path | str) -> str | None:
    """The image format a file name promises ("fits", "tiff", "png", "jpeg"), or None."""
    return _kind_from_name(Path(path))[0]


def _describe(kind: str | None) -> str:
    return _NICE_KIND.get(kind or "", "unrecognised data")


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------
def read_frames(path: Path | str, *, max_image_pixels: int, admit: Admit | None = None) -> list[Frame]:
    """Read every science image in ``path`` as a Frame; raise IngestError for a bad file.

    ``max_image_pixels`` (``Settings.pixel_limit``): headers claiming more are refused unread.
    ``admit``, when given, is called once with the geometry of the images to be read, after the
    headers and before any pixel; whatever it raises propagates unchanged.
    """
    path = Path(path)
    limit = int(max_image_pixels)
    try:
        st = os.stat(path)  # follows a symlink the caller named explicitly
    except FileNotFoundError:
        raise IngestError(path, "no such file") from None
    except OSError as exc:
        raise IngestError(path, f"cannot stat file: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise IngestError(path, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise IngestError(path, "not a regular file")
    if st.st_size == 0:
        raise IngestError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(2880)
    except PermissionError:
        raise IngestError(path, "permission denied (file is not readable)") from None
    except OSError as exc:
        raise IngestError(path, f"cannot read file: {exc.strerror or exc}") from None

    content = detect_content(head)
    named_kind, named_comp = _kind_from_name(path)

    if named_comp and content != named_comp:
        raise IngestError(
            path, f"named {'.gz' if named_comp == 'gzip' else '.bz2'} but not {named_comp}-compressed "
            f"(content is {_describe(content)})"
        )
    if content in ("gzip", "bzip2"):
        inner = _peek_decompressed(path, content)
        if inner != "fits":
            raise IngestError(path, f"{content}-compressed content is {_describe(inner)}, not FITS")
        kind = "fits"
    elif content is None:
        if named_kind is None:
            raise IngestError(path, "unsupported file type (not FITS, TIFF, PNG or JPEG)")
        msg = {
            "fits": "not a FITS file: it does not start with a 'SIMPLE  =' card",
            "tiff": "not a TIFF file: bad magic bytes",
            "png": "not a PNG file: bad signature",
            "jpeg": "not a JPEG file: bad SOI marker",
        }[named_kind]
        raise IngestError(path, msg)
    else:
        kind = content
        if named_kind is not None and named_kind != kind:
            raise IngestError(
                path, f"content is a {_describe(kind)} file but the name says {_describe(named_kind)}"
            )

    try:
        sha = sha256_file(path)
        if kind == "fits":
            frames = _read_fits(path, sha, st.st_size, content, limit, admit)
        elif kind == "tiff":
            frames = _read_tiff(path, sha, limit, admit)
        else:
            frames = _read_pillow(path, sha, kind, limit, admit)
    except _Refused as refused:
        raise refused.original from None
    except IngestError:
        raise
    except MemoryError:
        raise IngestError(path, "not enough memory to read the image") from None
    except PermissionError:
        raise IngestError(path, "permission denied (file is not readable)") from None
    except Exception as exc:  # noqa: BLE001 - any library failure becomes a clean, named error
        raise IngestError(path, f"cannot read {_describe(kind)}: {type(exc).__name__}: {_one_line(exc)}") from None
    if not frames:
        raise IngestError(path, "no image data")
    for f in frames:
        f.n_frames_in_file = len(frames)
    return frames


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Compression helpers
# --------------------------------------------------------------------------------------------
def _open_compressed(path: Path, comp: str):
    return gzip.open(path, "rb") if comp == "gzip" else bz2.open(path, "rb")


def _peek_decompressed(path: Path, comp: str) -> str | None:
    try:
        with _open_compressed(path, comp) as fh:
            head = fh.read(2880)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise IngestError(path, f"corrupt {comp} stream: {_one_line(exc)}") from None
    if not head:
        raise IngestError(path, f"{comp} stream decompresses to nothing")
    return detect_content(head)


# --------------------------------------------------------------------------------------------
# FITS
# --------------------------------------------------------------------------------------------
def _hdu_shape(hdu: Any) -> tuple[int, ...]:
    """Image shape (numpy order) from the header alone, without touching data."""
    hdr = hdu.header
    n = int(hdr.get("NAXIS", 0) or 0)
    return tuple(int(hdr.get(f"NAXIS{i}", 0) or 0) for i in range(n, 0, -1))


def _hdu_name(hdu: Any) -> str:
    return str(hdu.name or "").upper()


def _hdu_label(idx: int, hdu: Any) -> str:
    """``HDU 1 [SCI,1]``, or ``HDU 0`` for an HDU without a name."""
    name = _hdu_name(hdu)
    return f"HDU {idx} [{name},{int(hdu.ver or 1)}]" if name and name != "PRIMARY" else f"HDU {idx}"


def _read_fits(path: Path, sha: str, file_size: int, content: str | None, limit: int,
               admit: Admit | None) -> list[Frame]:
    compression = content if content in ("gzip", "bzip2") else None
    try:
        layout = walk_hdus(path, compression=compression, file_size=file_size)
    except ValueError as exc:  # a negative axis, named by HDU
        raise IngestError(path, str(exc)) from None
    try:
        return _read_fits_once(path, sha, file_size, compression, limit, layout, admit, memmap=compression is None)
    except ValueError as exc:
        if "memory-mapped" not in str(exc):
            raise
    # Scaled integer data (BZERO/BSCALE/BLANK) cannot be memory-mapped by astropy: read it plainly
    # (already admitted: the geometry is the same).
    return _read_fits_once(path, sha, file_size, compression, limit, layout, None, memmap=False)


def _open_fits(path: Path, compression: str | None, layout: FitsLayout, *, memmap: bool) -> Any:
    """astropy's HDU list of the file; a compressed one through a stream that ends with its last HDU."""
    from astropy.io import fits

    if compression is None:
        return fits.open(path, memmap=memmap, lazy_load_hdus=True)
    stream = DecompressedStream(path, compression, limit=layout.end if layout.spans else None)
    return fits.open(io.BufferedReader(stream, buffer_size=1 << 20), memmap=False, lazy_load_hdus=True)


def _read_fits_once(path: Path, sha: str, file_size: int, compression: str | None, limit: int, layout: FitsLayout,
                    admit: Admit | None, *, memmap: bool) -> list[Frame]:
    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns (truncation, non-standard cards); we check ourselves
        try:
            hdul = _open_fits(path, compression, layout, memmap=memmap)
        except Exception as exc:  # noqa: BLE001
            raise IngestError(path, f"unreadable FITS header: {_one_line(exc)}") from None
        try:
            hdus: list[Any] = []
            if layout.spans:  # only the HDUs the headers place: astropy never looks past the last one
                for i in range(len(layout.spans)):
                    try:
                        hdus.append(hdul[i])
                    except IndexError:
                        break
                    except Exception as exc:  # noqa: BLE001
                        if not hdus:
                            raise IngestError(path, f"unreadable FITS header: {_one_line(exc)}") from None
                        break
            else:  # the walk could not read HDU 0: astropy says why
                try:
                    hdul.readall()
                except Exception as exc:  # noqa: BLE001
                    if len(hdul) == 0:
                        raise IngestError(path, f"unreadable FITS header: {_one_line(exc)}") from None
                hdus = list(hdul)
            if not hdus:
                raise IngestError(path, "unreadable FITS header: no HDU found")
            known = fits.HDUList(hdus)  # a closed list: iterating it reads nothing more from the file
            return _fits_frames(path, sha, known, hdul, layout, file_size, compression, limit, admit)
        finally:
            hdul.close()


def _fits_frames(path: Path, sha: str, hdul: Any, opened: Any, layout: FitsLayout, file_size: int,
                 compression: str | None, limit: int, admit: Admit | None) -> list[Frame]:
    from astropy.io import fits

    image_types = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
    images: list[tuple[int, Any, tuple[int, ...]]] = []
    for i, hdu in enumerate(hdul):
        if not isinstance(hdu, image_types) or isinstance(hdu, fits.GroupsHDU):
            continue
        shape = _hdu_shape(hdu)
        if len(shape) >= 2 and all(s > 0 for s in shape) and math.prod(shape) > 1:
            images.append((i, hdu, shape))
    if not images:
        raise IngestError(path, f"no image data (header-only FITS: {len(hdul)} HDU(s), none holds an image larger than 1x1)")
    science = [x for x in images if _hdu_name(x[1]) == "SCI"]
    if not science:
        science = [x for x in images if _hdu_name(x[1]) not in _AUX_EXTNAMES]
    if not science:
        names = ", ".join(sorted({_hdu_name(h) for _, h, _ in images}))
        raise IngestError(path, f"no science image (only auxiliary extensions: {names})")

    def by_name(name: str, ver: int) -> tuple[int, Any, tuple[int, ...]] | None:
        for x in images:
            if _hdu_name(x[1]) == name and int(x[1].ver or 1) == ver:
                return x
        return None

    # Plan every HDU we will read, then check sizes before touching any pixels.
    plan = []
    for idx, hdu, shape in science:
        ver = int(hdu.ver or 1)
        wht = by_name("WHT", ver)
        dq = by_name("DQ", ver)
        plan.append((idx, hdu, shape, wht, dq))
    to_check = {}
    for idx, hdu, shape, wht, dq in plan:
        for item in (x for x in ((idx, hdu, shape), wht, dq) if x is not None):
            to_check[item[0]] = item
    need_end = 0
    for idx, hdu, shape in to_check.values():
        npix = math.prod(shape)
        if npix > limit:
            dims = "x".join(str(s) for s in reversed(shape))
            raise IngestError(
                path, f"HDU {idx} header claims {dims} = {npix:,} pixels, above the pixel limit of {limit:,} "
                f"({_LIMIT_SOURCE}); refusing to allocate it"
            )
        end = _data_end(opened, layout, idx, hdu)
        need_end = max(need_end, end)
        if compression is None and end > file_size:
            raise IngestError(
                path, f"truncated FITS: HDU {idx} data needs bytes up to {end:,} but the file has "
                f"{file_size:,} bytes"
            )
    if compression is not None and layout.available is not None and need_end > layout.available:
        if layout.stream_error:
            raise IngestError(path, f"corrupt {compression} stream: {layout.stream_error} (data needs {need_end:,} "
                                    f"decompressed bytes, {layout.available:,} could be read)")
        raise IngestError(
            path, f"truncated FITS ({compression}): data needs {need_end:,} decompressed bytes, "
            f"stream has {layout.available:,}"
        )
    _admit(admit, [_geometry(idx, hdu, shape, aux=sum(x is not None for x in (wht, dq)))
                   for idx, hdu, shape, wht, dq in plan])

    primary_header = hdul[0].header
    frames: list[Frame] = []
    for idx, hdu, shape, wht, dq in plan:
        frames.extend(_frames_from_hdu(path, sha, hdul, idx, hdu, shape, wht, dq, primary_header))
    if layout.trailer:
        for frame in frames:
            frame.notes.append(layout.trailer)
    return frames


def _data_end(opened: Any, layout: FitsLayout, idx: int, hdu: Any) -> int:
    """Where HDU ``idx``'s data unit ends, as its header declares it."""
    if idx < len(layout.spans):
        return layout.spans[idx].data_end
    raw_header = getattr(hdu, "_bintable", None)
    raw_header = raw_header.header if raw_header is not None else hdu.header
    return int(opened.fileinfo(idx)["datLoc"]) + raw_data_bytes(raw_header)


def _geometry(idx: int, hdu: Any, shape: tuple[int, ...], *, aux: int) -> ImageGeometry:
    try:  # a tile-compressed HDU's header is its image's: BITPIX of the decompressed pixels
        itemsize = max(1, abs(int(hdu.header.get("BITPIX", -32))) // 8)
    except (TypeError, ValueError):
        itemsize = 8
    return ImageGeometry(label=_hdu_label(idx, hdu), height=int(shape[-2]), width=int(shape[-1]),
                         planes=max(1, math.prod(shape[:-2])), channels=1, source_bytes_per_sample=itemsize,
                         aux_images=aux)


def _load_float(hdu: Any) -> np.ndarray:
    data = hdu.data
    if data is None:
        raise ValueError("HDU has no data")
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(data, dtype=np.float32)


def _frames_from_hdu(path: Path, sha: str, hdul: Any, idx: int, hdu: Any, shape: tuple[int, ...],
                     wht: Any, dq: Any, primary_header: Any) -> list[Frame]:
    header = hdu.header
    notes: list[str] = []
    raw = hdu.data
    if raw is None:
        raise IngestError(path, f"HDU {idx} declares {shape} but holds no data")
    blank_mask = None
    if np.issubdtype(raw.dtype, np.integer) and "BLANK" in header:
        blank_mask = np.asarray(raw == int(header["BLANK"]))
    data = _load_float(hdu)

    aux_valid = np.ones(shape[-2:], dtype=bool)
    saturated = None
    if wht is not None:
        if wht[2][-2:] == shape[-2:]:
            w = _load_float(wht[1])
            w = w.reshape((-1,) + w.shape[-2:])[0]
            aux_valid &= np.isfinite(w) & (w != 0)
        else:
            notes.append(f"WHT extension shape {wht[2]} does not match SCI {shape}; ignored")
    if dq is not None:
        if dq[2][-2:] == shape[-2:]:
            q = np.asarray(dq[1].data)
            q = q.reshape((-1,) + q.shape[-2:])[0].astype(np.int64, copy=False)
            saturated = (q & _SATURATION_BITS) != 0
            aux_valid &= ~saturated
        else:
            notes.append(f"DQ extension shape {dq[2]} does not match SCI {shape}; ignored")

    planes = data.reshape((-1,) + shape[-2:]) if data.ndim != 2 else data[None]
    if blank_mask is not None:
        blank_mask = blank_mask.reshape(planes.shape)
    is_cube = planes.shape[0] > 1
    wcs = _celestial_wcs(hdu.header, hdul, notes)
    prov_base = _fits_provenance(primary_header, header)
    prov_base.update(extname=_hdu_name(hdu) or None, extver=int(hdu.ver or 1))
    ra, dec = _centre(wcs, shape[-2:])
    prov_base.update(ra=ra, dec=dec)

    frames = []
    for p in range(planes.shape[0]):
        plane = np.ascontiguousarray(planes[p])
        mask = np.isfinite(plane) & aux_valid
        if blank_mask is not None:
            mask &= ~blank_mask[p]
        frames.append(
            Frame(
                data=plane,
                mask=mask,
                source_path=path,
                source_sha256=sha,
                format="fits",
                hdu=idx,
                plane=p if is_cube else None,
                wcs=wcs,
                header=header.copy(),
                provenance=dict(prov_base),
                is_display=False,
                saturated=saturated,
                notes=list(notes),
            )
        )
    return frames


def _celestial_wcs(header: Any, hdul: Any, notes: list[str]) -> Any | None:
    from astropy.wcs import WCS

    wcs = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kwargs in ({"fobj": hdul}, {}):
            try:
                wcs = WCS(header, **kwargs)
                break
            except Exception as exc:  # noqa: BLE001
                err = _one_line(exc)
        if wcs is None:
            notes.append(f"WCS unreadable: {err}")
            return None
        try:
            if not wcs.has_celestial:
                return None
            return wcs.celestial
        except Exception as exc:  # noqa: BLE001
            notes.append(f"WCS unusable: {_one_line(exc)}")
            return None


def _centre(wcs: Any | None, shape: tuple[int, int]) -> tuple[float | None, float | None]:
    if wcs is None:
        return None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ra, dec = wcs.all_pix2world([[(shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0]], 0)[0]
        if np.isfinite(ra) and np.isfinite(dec):
            return float(ra), float(dec)
    except Exception:  # noqa: BLE001
        pass
    return None, None


def _card(headers: tuple[Any, ...], *keys: str) -> Any:
    """First non-empty value of any key, extension header before primary."""
    for key in keys:
        for h in headers:
            if key in h:
                v = h[key]
                if isinstance(v, str):
                    v = v.strip()
                if v not in (None, ""):
                    return v
    return None


def _filter_name(headers: tuple[Any, ...]) -> str | None:
    f = _card(headers, "FILTER")
    if f is not None:
        return str(f)
    parts = []
    for key in ("FILTER1", "FILTER2", "FILTNAM1", "FILTNAM2"):
        v = _card(headers, key)
        if isinstance(v, str) and v and not v.upper().startswith("CLEAR") and v not in parts:
            parts.append(v)
    return "+".join(parts) if parts else None


def _float_or_none(v: Any) -> float | None:
    try:
        return float(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None


def _fits_provenance(primary: Any, ext: Any) -> dict[str, Any]:
    headers = (ext, primary)
    exptime = _float_or_none(_card(headers, "EXPTIME", "EXPOSURE"))
    return {
        "telescope": _str_or_none(_card(headers, "TELESCOP")),
        "instrument": _str_or_none(_card(headers, "INSTRUME")),
        "detector": _str_or_none(_card(headers, "DETECTOR")),
        "filter": _filter_name(headers),
        "rootname": _str_or_none(_card(headers, "ROOTNAME")),
        "target": _str_or_none(_card(headers, "TARGNAME", "OBJECT")),
        "exptime": exptime,
        "date_obs": _str_or_none(_card(headers, "DATE-OBS")),
        "bunit": _str_or_none(_card(headers, "BUNIT")),
        # photometric keywords (zero or missing: unknown), for putting bands on one flux scale
        "photflam": _float_or_none(_card(headers, "PHOTFLAM")),
        "photfnu": _float_or_none(_card(headers, "PHOTFNU")),
        "photplam": _float_or_none(_card(headers, "PHOTPLAM")),
    }


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def _empty_provenance() -> dict[str, Any]:
    keys = ("telescope", "instrument", "detector", "filter", "rootname", "target", "exptime",
            "date_obs", "bunit", "photflam", "photfnu", "photplam", "ra", "dec")
    return {k: None for k in keys}


# --------------------------------------------------------------------------------------------
# Display images and TIFF
# --------------------------------------------------------------------------------------------
def _to_unit(arr: np.ndarray) -> np.ndarray:
    """Integer pixels to float32 in [0, 1] by the type's full scale."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535.0)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    info = np.iinfo(arr.dtype)
    return (np.clip(arr.astype(np.float64), 0, None) / float(info.max)).astype(np.float32)


def _display_frames(path: Path, sha: str, fmt: str, arr: np.ndarray, channels_last: bool,
                    notes: list[str]) -> list[Frame]:
    """Frames from an array (..., H, W[, C]); integer data become display images in [0, 1]."""
    if not channels_last:
        arr = arr[..., None]
    nch = arr.shape[-1]
    lead = arr.shape[:-3]
    stack = arr.reshape((-1,) + arr.shape[-3:])
    integer = np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool
    frames: list[Frame] = []
    n_planes = stack.shape[0]
    for p in range(n_planes):
        px = np.asarray(stack[p])
        plane_notes = list(notes)
        alpha = None
        if nch in (2, 4):
            alpha = px[..., -1]
            px = px[..., :-1]
            plane_notes.append("alpha channel dropped (pixels with alpha 0 masked)")
        elif nch > 4:
            plane_notes.append(f"{nch} samples per pixel: only the first 3 kept")
            px = px[..., :3]
        if integer:
            data = _to_unit(px)
            display = True
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                data = np.asarray(px, dtype=np.float32)
            finite = data[np.isfinite(data)]
            display = data.shape[-1] == 3 and finite.size > 0 and finite.min() >= 0 and finite.max() <= 1
        if data.shape[-1] == 1:
            data = data[..., 0]
        elif not display:
            # Linear multi-channel float data: one science frame per channel.
            for c in range(data.shape[-1]):
                ch = np.ascontiguousarray(data[..., c])
                frames.append(_plain_frame(path, sha, fmt, ch, np.isfinite(ch), False,
                                           p * data.shape[-1] + c, plane_notes))
            continue
        data = np.ascontiguousarray(data)
        mask = np.isfinite(data) if data.ndim == 2 else np.isfinite(data).all(axis=-1)
        if alpha is not None:
            mask &= np.asarray(alpha) != 0
        if display:
            data = np.nan_to_num(np.clip(data, 0.0, 1.0), nan=0.0)
        frames.append(_plain_frame(path, sha, fmt, data, mask, display,
                                   p if (n_planes > 1 or lead) else None, plane_notes))
    return frames


def _plain_frame(path: Path, sha: str, fmt: str, data: np.ndarray, mask: np.ndarray, display: bool,
                 plane: int | None, notes: list[str]) -> Frame:
    return Frame(
        data=data, mask=mask, source_path=path, source_sha256=sha, format=fmt, hdu=None,
        plane=plane, provenance=_empty_provenance(), is_display=display, notes=list(notes),
    )


def _tiff_geometry(shape: tuple[int, ...], axes: str, itemsize: int) -> ImageGeometry:
    dims = dict(zip(axes, shape, strict=False))
    height, width = int(dims.get("Y", shape[-2] if len(shape) >= 2 else 1)), int(dims.get("X", shape[-1]))
    channels = int(dims.get("S", 1))
    planes = max(1, math.prod(shape) // max(1, height * width * channels))
    return ImageGeometry(label="TIFF", height=height, width=width, planes=planes, channels=min(channels, 3) or 1,
                         source_bytes_per_sample=itemsize)


def _read_tiff(path: Path, sha: str, limit: int, admit: Admit | None) -> list[Frame]:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        if not tf.series:
            raise IngestError(path, "TIFF holds no image series")
        series = tf.series[0]
        shape, axes = tuple(series.shape), series.axes
        npix = math.prod(shape)
        if npix > limit:
            raise IngestError(
                path, f"TIFF of shape {shape} has {npix:,} samples, above the pixel limit of {limit:,} "
                f"({_LIMIT_SOURCE})"
            )
        _admit(admit, [_tiff_geometry(shape, axes, int(series.dtype.itemsize))])
        notes: list[str] = []
        arr = None
        if series.dataoffset is not None and npix * series.dtype.itemsize > _MEMMAP_MIN_BYTES:
            try:
                arr = tifffile.memmap(path, series=0, mode="r")
                notes.append("read via memory map")
            except Exception:  # noqa: BLE001 - fall back to a normal read
                arr = None
        if arr is None:
            arr = series.asarray()
    if "S" in axes:
        s_axis = axes.index("S")
        arr = np.moveaxis(arr, s_axis, -1)
        axes = axes.replace("S", "") + "S"
    channels_last = axes.endswith("S")
    spatial = arr.ndim - (1 if channels_last else 0)
    if spatial < 2:
        raise IngestError(path, f"TIFF series has shape {shape}: not an image")
    return _display_frames(path, sha, "tiff", arr, channels_last, notes)


@contextmanager
def _pillow_bomb_check(limit: int) -> Iterator[None]:
    """Pillow's decompression-bomb check at ``limit`` pixels, its warning an error (never off).

    ``Image.MAX_IMAGE_PIXELS`` is Pillow's process-wide limit: set for the block under a lock, then
    put back, so that readers with different limits do not see each other's.
    """
    from PIL import Image

    with _PILLOW_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max(1, int(limit))
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


_PILLOW_CHANNELS = {"L": 1, "LA": 1, "La": 1, "1": 1, "I": 1, "F": 1, "P": 3, "PA": 3, "RGB": 3, "RGBA": 3, "RGBa": 3,
                    "RGBX": 3, "CMYK": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}


def _read_pillow(path: Path, sha: str, fmt: str, limit: int, admit: Admit | None) -> list[Frame]:
    from PIL import Image

    with _pillow_bomb_check(limit):
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            claimed = re.search(r"\((\d+) pixels\)", str(exc))
            size = f" of {int(claimed.group(1)):,} pixels" if claimed else ""
            raise IngestError(
                path, f"{fmt.upper()}{size} is above the pixel limit of {limit:,} (Pillow's decompression-bomb "
                f"check); {_LIMIT_SOURCE}"
            ) from None
        with im:
            w, h = im.size
            if w * h > limit:
                raise IngestError(path, f"{fmt.upper()} of {w}x{h} = {w * h:,} pixels is above the pixel limit of "
                                        f"{limit:,} ({_LIMIT_SOURCE})")
            mode0 = im.mode
            _admit(admit, [ImageGeometry(label=fmt.upper(), height=h, width=w, channels=_PILLOW_CHANNELS.get(mode0, 3),
                                         source_bytes_per_sample=2 if mode0.startswith("I;16") else
                                         4 if mode0 in ("I", "F") else 1)])
            im.load()
            mode = im.mode
            notes: list[str] = []
            if mode == "P" or mode == "PA":
                im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
            elif mode == "1":
                im = im.convert("L")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                notes.append(f"converted from {mode} to RGB")
                im = im.convert("RGB")
            elif mode in ("RGBa", "La"):
                im = im.convert("RGBA" if mode == "RGBa" else "LA")
            arr = np.asarray(im)
    if mode.startswith("I;16"):
        arr = arr.astype(np.uint16, copy=False)
    elif mode == "I":
        arr = arr.astype(np.int64)
        arr = (arr.astype(np.uint16) if arr.max(initial=0) <= 65535 and arr.min(initial=0) >= 0
               else arr.astype(np.int32))
    channels_last = arr.ndim == 3
    return _display_frames(path, sha, fmt, arr, channels_last, notes)
