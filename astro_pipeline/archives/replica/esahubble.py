"""Replica of ESA/Hubble's image archive pages (djangoplicity; ARCHIVES.md section 3.1).

- ``/images/`` and ``/images/page/<n>/``: ``Showing A to B of N`` in ``div.statusbar >
  div.col-md-3``, ``ul.pagination`` (``li.active`` = current), ``div.prev-next``, and thumbnails
  rendered by JavaScript from an inline ``var images = [...]`` into ``div.image-list.image-list-300``.
  The page size is small (``state.extra["esahubble_page_size"]``, default ``ceil(n/3)``, at most
  50) so the sample's colour items span at least two pages.
- ``/images/<id>/``: ``<h1>`` title, ``div.credit``, ``div.object-info`` tables
  (``<th class="title" scope="row">Label:</th><td>value</td>``) for About the Image / the
  Object / Coordinates / Colours & filters, and the downloads block (``div.archive_download``
  items, each with a sha256 popover ``data-title="sha256 checksum"``).
- ``/media/archives/images/<format>/<id>.<ext>``: ``original`` (the sample file itself, TIF or
  JPEG), ``large`` (full-size JPEG), ``screen`` (1280 px wide), ``thumb300y``, ``thumb700x``.

Serves the sample's ``archive == "esahubble"`` colour items. Web faults: see ``web_common``.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from astro_pipeline.archives.replica.web_common import (
    WebFaults,
    sample_items,
    sample_root,
    stall,
    web_faults,
)

__all__ = ["build_router", "format_ra", "format_dec", "DOWNLOAD_FORMATS"]

#: (resource name, title in the downloads block, extension or None = the original's)
DOWNLOAD_FORMATS: tuple[tuple[str, str, str | None], ...] = (
    ("original", "Fullsize Original", None),
    ("large", "Large JPEG", "jpg"),
    ("screen", "Screensize JPEG", "jpg"),
)
_DERIVED = {"large": None, "screen": ("w", 1280), "thumb300y": ("h", 300), "thumb700x": ("w", 700)}
_LICENSE = "Creative Commons Attribution 4.0 International (CC BY 4.0)"


def format_ra(ra_deg: float) -> str:
    """ESA's RA style: ``h m s.ss`` space separated, no units (e.g. ``5 35 17.30``)."""
    total = (ra_deg % 360.0) / 15.0 * 3600.0
    h, rem = divmod(round(total, 2), 3600.0)
    m, s = divmod(rem, 60.0)
    return f"{int(h)} {int(m)} {s:05.2f}"


def format_dec(dec_deg: float) -> str:
    """ESA's Dec style: ``-5° 23' 28.00"``."""
    sign = "-" if dec_deg < 0 else ""
    total = round(abs(dec_deg) * 3600.0, 2)
    d, rem = divmod(total, 3600.0)
    m, s = divmod(rem, 60.0)
    return f"{sign}{int(d)}° {int(m)}' {s:05.2f}\""


def _human_size(n: int) -> str:
    for unit, div in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _release_date(iso: str) -> str:
    """``j F Y, H:i`` (or ``j F Y`` when no time is known)."""
    try:
        dt = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return iso or ""
    day = f"{dt.day} {dt.strftime('%B %Y')}"
    return f"{day}, {dt.strftime('%H:%M')}" if ("T" in iso or " " in iso.strip()) else day


def _constellation(ra: float, dec: float) -> str:
    from astropy.coordinates import SkyCoord, get_constellation

    return str(get_constellation(SkyCoord(ra=ra, dec=dec, unit="deg")))


class _Images:
    """The colour items, their pixels and their derived files (lazily, cached)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        items = [i for i in sample_items(state) if i.archive == "esahubble" and i.kind == "color"]
        items.sort(key=lambda i: i.id)  # newest release first, then by id (a, b, ... within a release)
        items.sort(key=lambda i: str(i.date_obs or ""), reverse=True)
        self.items = items
        self.by_id = {i.id: i for i in items}
        self._rgb: dict[str, np.ndarray] = {}
        self._files: dict[tuple[str, str], bytes] = {}

    def path(self, item: Any) -> Path:
        return sample_root(self.state) / item.path

    def original_ext(self, item: Any) -> str:
        ext = Path(item.path).suffix.lower().lstrip(".")
        return {"jpeg": "jpg", "tiff": "tif"}.get(ext, ext)

    def rgb(self, item: Any) -> np.ndarray:
        hit = self._rgb.get(item.id)
        if hit is None:
            hit = _read_rgb(self.path(item))
            self._rgb[item.id] = hit
        return hit

    def file_bytes(self, item: Any, fmt: str) -> bytes:
        key = (item.id, fmt)
        hit = self._files.get(key)
        if hit is not None:
            return hit
        if fmt == "original":
            data = self.path(item).read_bytes()
        else:
            from PIL import Image

            img = Image.fromarray(self.rgb(item))
            rule = _DERIVED[fmt]
            if rule is not None:
                axis, target = rule
                w, h = img.size
                scale = target / (w if axis == "w" else h)
                if scale < 1.0:
                    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=92 if fmt == "large" else 85)
            data = buf.getvalue()
        self._files[key] = data
        return data

    def sha256(self, item: Any, fmt: str) -> str:
        if fmt == "original" and getattr(item, "sha256", ""):
            return str(item.sha256)
        return hashlib.sha256(self.file_bytes(item, fmt)).hexdigest()


def _read_rgb(path: Path) -> np.ndarray:
    """A colour release image as (H,W,3) uint8 (TIF via tifffile; 16-bit scaled down)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = np.asarray(tifffile.imread(path))
    else:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    arr = arr[..., :3]
    if arr.dtype == np.uint16:
        arr = (arr // 257).astype(np.uint8)
    elif arr.dtype != np.uint8:
        f = arr.astype(np.float32)
        f = f / max(float(np.nanmax(f)), 1e-12) if float(np.nanmax(f)) > 1.0 else f
        arr = np.clip(np.round(f * 255), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _images(state: Any) -> _Images:
    cached = state.extra.get("esahubble_images")
    if cached is None:
        cached = _Images(state)
        state.extra["esahubble_images"] = cached
    return cached


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)} | ESA/Hubble</title>"
            "</head><body><div id=\"header\"><a href=\"/\">ESA/Hubble</a> &middot; <a href=\"/images/\">Images</a></div>"
            f"<div class=\"container\">{body}</div></body></html>")


def _list_html(imgs: _Images, page: int, page_size: int, search: str, faults: WebFaults) -> tuple[int, str]:
    items = imgs.items
    if search:
        s = search.lower()
        items = [i for i in items if s in i.id.lower() or s in str(i.title).lower()]
    total = len(items)
    if total == 0:
        return 200, _page("Images", "<h1>Images</h1><p>No images were found.</p>")
    pages = math.ceil(total / page_size)
    if page < 1 or page > pages:
        return 404, _page("Page not found", "<h1>Page not found</h1>")
    chunk = items[(page - 1) * page_size: page * page_size]
    a, b = (page - 1) * page_size + 1, (page - 1) * page_size + len(chunk)
    qs = ("?" + urlencode({"search": search})) if search else ""

    def link(n: int) -> str:
        return ("/images/" if n == 1 else f"/images/page/{n}/") + qs

    layout = faults.arg("esa-layout", "pagination")
    lis = "".join(f'<li class="active"><a href="{link(n)}">{n}</a></li>' if n == page else f'<li><a href="{link(n)}">{n}</a></li>'
                  for n in range(1, pages + 1))
    pagination = "" if layout == "pagination" else f'<ul class="pagination">{lis}</ul>'
    status = "" if layout == "statusbar" else f'<div class="col-md-3">Showing {a} to {b} of {total}</div>'
    prev_next = '<div class="prev-next">' + (f'<a href="{link(page - 1)}">Previous</a>' if page > 1 else "") + (
        f' <a href="{link(page + 1)}">Next</a>' if page < pages else "") + "</div>"
    data = []
    for it in chunk:
        h, w = imgs.rgb(it).shape[:2]
        data.append({"id": it.id, "title": str(it.title), "width": int(w), "height": int(h),
                     "src": f"/media/archives/images/thumb300y/{it.id}.jpg", "url": f"/images/{it.id}/", "potw": ""})
    js_data = json.dumps(data).replace("</", "<\\/")
    list_class = "image-grid" if layout == "images" else "image-list image-list-300"
    body = f"""<h1>Images</h1>
<div class="statusbar"><div class="row">{status}<div class="col-md-9">{pagination}</div></div></div>
<div class="{list_class}"></div>
{prev_next}
<script>var images = {js_data};
(function () {{
  var list = document.querySelector("div.{list_class.split()[0]}");
  images.forEach(function (im) {{
    var a = document.createElement("a"); a.href = im.url; a.className = "item";
    var img = document.createElement("img"); img.className = "image-thumb"; img.src = im.src; img.alt = im.title;
    var t = document.createElement("div"); t.className = "title"; t.textContent = im.title;
    a.appendChild(img); a.appendChild(t); list.appendChild(a);
  }});
}})();
</script>"""
    return 200, _page("Images", body)


def _row(label: str, value_html: str) -> str:
    return f'<tr><th class="title" scope="row">{html.escape(label)}:</th><td>{value_html}</td></tr>'


def _detail_html(imgs: _Images, it: Any, faults: WebFaults) -> str:
    e = html.escape
    h, w = imgs.rgb(it).shape[:2]
    ra, dec = float(it.ra), float(it.dec)
    release = str(getattr(it, "release", "") or "")
    layout = faults.arg("esa-layout", "pagination")
    info_class = "object-meta" if layout == "object-info" else "object-info"
    downloads = []
    if layout != "downloads":
        for fmt, title, ext in DOWNLOAD_FORMATS:
            ext = ext or imgs.original_ext(it)
            fname = f"{it.id}.{ext}"
            url = f"/media/archives/images/{fmt}/{fname}"
            data = imgs.file_bytes(it, fmt)
            sha = imgs.sha256(it, fmt)
            if faults.matches("esa-bad-sha256", it.id, "*"):
                sha = hashlib.sha256(sha.encode()).hexdigest()  # a well-formed but wrong checksum
            downloads.append(
                '<div class="archive_download"><span class="archive_dl_icon"><span class="fa fa-download"></span></span>'
                f'<span class="archive_dl_text"><a href="{url}">{e(title)}</a></span>'
                f'<span class="archive_dl_size"><div>{_human_size(len(data))} '
                f'<a class="checksum" tabindex="0" role="button" data-toggle="popover" data-trigger="focus" '
                f'data-title="sha256 checksum" data-content="{sha}&nbsp;&nbsp;{fname}">checksum</a></div></span></div>')
    filt = str(getattr(it, "filter", "") or "")
    inst = str(getattr(it, "instrument", "") or "")
    band_rows = "".join(
        f"<tr><td>{e(band)}<br>{e(inst.split('/')[0] + ' ' + f if f else inst)}</td><td>{e(wl)}</td>"
        f"<td>Hubble Space Telescope<br>{e(inst)}</td></tr>"
        for band, f, wl in ([("Optical", filt, (filt[1:4].lstrip('0') + ' nm') if filt[1:4].isdigit() else "")] if filt
                            else [("Optical", "", "")]))
    body = f"""<div class="row"><div class="col-md-9 left-column">
<h1>{e(str(it.title))}</h1>
<div class="archive-image"><a class="popup" href="/media/archives/images/screen/{it.id}.jpg" title="{e(str(it.title))}">
<img class="img-responsive" src="/media/archives/images/thumb700x/{it.id}.jpg" alt="{e(str(it.title))}"></a></div>
<p>{e(str(it.title))}: a Hubble image of {e(str(it.target))}.</p>
<strong>Credit:</strong><div class="credit"><p>{e(str(it.credit))}</p></div>
</div><div class="col-md-3 right-column">
<div class="archive-download-list"><h3 class="archivegrouptitle">Image Formats</h3>{''.join(downloads)}</div>
<div class="{info_class}"><h3>About the Image</h3><table class="table">
{_row("Id", e(it.id))}{_row("Language", "en")}{_row("Type", "Observation")}
{_row("Release date", e(_release_date(str(it.date_obs or ""))))}
{_row("Related releases", f'<a href="/news/{e(release)}/">{e(release)}</a>' if release else "")}
{_row("Size", f"{w} x {h} px")}
{_row("License", f'<a href="/copyright/">{e(str(it.license or _LICENSE))}</a>')}
</table></div>
<div class="{info_class}"><h3>About the Object</h3><table class="table">
{_row("Name", e(str(it.target)))}{_row("Type", "Local Universe : Galaxy")}
{_row("Constellation", e(_constellation(ra, dec)))}
{_row("Category", '<a href="/images/archive/category/galaxies/">Galaxies</a>')}
</table></div>
<div class="{info_class}"><h3>Coordinates</h3><table class="table">
{_row("Position (RA)", e(format_ra(ra)))}{_row("Position (Dec)", e(format_dec(dec)))}
{_row("Orientation", "North is 0.0° right of vertical")}
</table></div>
<div class="{info_class}"><h3>Colours &amp; filters</h3><table class="table">
<thead><tr><th>Band</th><th>Wavelength</th><th>Telescope</th></tr></thead><tbody>{band_rows}</tbody></table></div>
</div></div>"""
    return _page(str(it.title), body)


def build_router(state: Any) -> APIRouter:
    """The ESA/Hubble routes, bound to ``state`` (sample, faults)."""
    router = APIRouter()

    def page_size(n: int) -> int:
        configured = state.extra.get("esahubble_page_size")
        return int(configured) if configured else max(1, min(50, math.ceil(n / 3)))

    async def list_page(request: Request, page: int) -> Response:
        faults = web_faults(state)
        if faults.arg("esa-stall", "list:2") == f"list:{page}":
            await stall(request, faults.stall_s)
            return HTMLResponse("stalled", status_code=504)
        imgs = _images(state)
        status, body = _list_html(imgs, page, page_size(len(imgs.items)), request.query_params.get("search", ""), faults)
        return HTMLResponse(body, status_code=status)

    @router.get("/images/", response_class=HTMLResponse)
    async def images_index(request: Request) -> Response:
        return await list_page(request, 1)

    @router.get("/images/page/{page}/", response_class=HTMLResponse)
    async def images_page(request: Request, page: int) -> Response:
        return await list_page(request, page)

    @router.get("/images/{image_id}/", response_class=HTMLResponse)
    async def image_detail(request: Request, image_id: str) -> Response:
        faults = web_faults(state)
        if faults.arg("esa-stall", "list:2") == image_id:
            await stall(request, faults.stall_s)
            return HTMLResponse("stalled", status_code=504)
        imgs = _images(state)
        it = imgs.by_id.get(image_id)
        if it is None:
            return HTMLResponse(_page("Page not found", "<h1>Page not found</h1>"), status_code=404)
        return HTMLResponse(_detail_html(imgs, it, faults))

    @router.api_route("/media/archives/images/{fmt}/{filename}", methods=["GET", "HEAD"])
    def media(request: Request, fmt: str, filename: str) -> Response:
        imgs = _images(state)
        stem, _, ext = filename.rpartition(".")
        it = imgs.by_id.get(stem)
        valid = fmt == "original" or fmt in _DERIVED
        if it is None or not valid or ext.lower() != (imgs.original_ext(it) if fmt == "original" else "jpg"):
            return HTMLResponse(_page("Not found", "<h1>404 Not found</h1>"), status_code=404)
        data = imgs.file_bytes(it, fmt)
        media_type = "image/tiff" if ext.lower() == "tif" else "image/jpeg"
        headers = {"Content-Length": str(len(data)), "Accept-Ranges": "none"}
        if request.method == "HEAD":
            return Response(b"", media_type=media_type, headers=headers)
        return Response(data, media_type=media_type, headers={"Accept-Ranges": "none"})

    return router
