"""Replica of the Hubble Legacy Archive's web interface (ARCHIVES.md section 2).

Serves what the 2020 puppeteer scraper relied on: ``/hlaview.html`` with the search state in
the URL fragment (``#Images|filterText%3D%24filterTypes%3D|RA=..&Dec=..&Radius=..|<inventory>``),
three helper frames, then results built by JavaScript 20 per page, each in an
``<iframe name="image<N>">`` whose document has a ``.color`` cell (second line: the dataset
name) and an ``<img>`` preview (a fitscut JPEG URL); ``#pageendresultscount``, ``div#output``
(``Results<TAB><count>``) and the ``.fwd`` button (``.fwd.inactive`` on the last page).
``/cgi-bin/fitscut.cgi`` renders cutouts by position (1-3 datasets, JPEG/PNG/FITS) and
``/cgi-bin/preview.cgi`` previews, from the sample's science FITS.

HLA datasets are derived from the sample fields: per field, visits x filters x detectors
(ACS/WFC, WFC3/UVIS, WFPC2 WF/PC chips), 48 datasets, each backed by the field's FITS of the
nearest filter. ``/cgi-bin/hlaviewresults.cgi`` (the JSON the page's script reads) and
``/cgi-bin/hlaviewcell.cgi`` (a result frame's document) are replica-internal names.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
import zlib
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import numpy as np
from astropy.nddata import Cutout2D, NoOverlapError
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from astro_pipeline.archives.replica.web_common import (
    display_stretch,
    encode_jpeg,
    load_fits_field,
    sample_items,
    sample_root,
    stall,
    web_faults,
)
from astro_pipeline.filters import pivot_wavelength_nm
from astro_pipeline.sky import in_cone

__all__ = ["HlaDataset", "build_router", "derive_datasets", "PAGE_SIZE"]

PAGE_SIZE = 20

# (instrument label, name token, filters, visits, chips) -- "total" is the detection image.
_PLAN: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    ("ACS/WFC", "acs_wfc", ("f435w", "f606w", "f814w", "total"), ("01", "02", "03", "04"), ("",)),
    ("WFC3/UVIS", "wfc3_uvis", ("f438w", "f555w", "f814w", "total"), ("11", "12", "13", "14"), ("",)),
    ("WFPC2", "wfpc2", ("f450w", "f606w", "f814w", "total"), ("cs", "ct"), ("wf", "pc")),
)


@dataclass(frozen=True)
class HlaDataset:
    """One HLA level-2 product (combined image of one visit, filter and detector)."""

    name: str
    field: str
    target: str
    instrument: str  # "ACS/WFC", "WFC3/UVIS", "WFPC2/WF", "WFPC2/PC"
    filter: str  # "F814W" ... or "DETECTION"
    visit: str
    proposal_id: str
    ra: float
    dec: float
    exptime: float
    date_obs: str
    level: int
    fits_path: str  # relative to the sample root

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("fits_path")
        return d


def _wavelength(filter_name: str) -> float:
    """Pivot wavelength in nm by the project's one rule (``filters``); 600 nm when no filter is named."""
    pivot = pivot_wavelength_nm(filter_name)
    return 600.0 if pivot is None else pivot


def _visit_code(seed: int, index: int) -> str:
    """A two-character HLA visit id (base 36), distinct per field seed and index."""
    n = (seed // 36 + index * 37) % 1296
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return alphabet[n // 36] + alphabet[n % 36]


def _shift_date(iso: str, days: int) -> str:
    try:
        base = datetime.fromisoformat(iso).date() if iso else date(2005, 1, 1)
    except ValueError:
        base = date(2005, 1, 1)
    return (base + timedelta(days=days)).isoformat()


def derive_datasets(items: list[Any]) -> list[HlaDataset]:
    """HLA datasets for every sample field that has science FITS (deterministic, sorted by name).

    QA frames (items with ``expected_flags``) are MAST test cases, not survey fields: skipped.
    """
    by_field: dict[str, list[Any]] = {}
    for it in items:
        if getattr(it, "kind", "") == "science" and str(it.path).lower().endswith((".fits", ".fits.gz", ".fit")):
            if getattr(it, "archive", "") in ("mast", "hla") and not getattr(it, "expected_flags", None):
                by_field.setdefault(it.field, []).append(it)
    out: list[HlaDataset] = []
    for field_name in sorted(by_field):
        group = sorted(by_field[field_name], key=lambda i: ("_drz" not in str(i.path), str(i.path)))
        filtered = [i for i in group if i.filter and i.filter.upper() != "DETECTION"] or group
        ref = group[0]
        ra0 = float(np.mean([float(i.ra) for i in group]))
        dec0 = float(np.mean([float(i.dec) for i in group]))
        seed = zlib.crc32(field_name.encode())
        for k, (inst, token, filters, visits, chips) in enumerate(_PLAN):
            prop = f"{(seed // (k + 1)) % 90000 + 10000:05d}"
            if k == 0 and str(getattr(ref, "proposal_id", "")).isdigit():
                prop = f"{int(ref.proposal_id) % 100000:05d}"
            # visit codes are per field, so one proposal's visits to different targets never collide
            visits = tuple(visit if k != 0 else _visit_code(seed, vi) for vi, visit in enumerate(visits))
            for vi, visit in enumerate(visits):
                for fil in filters:
                    for chip in chips:
                        want = 606.0 if fil == "total" else _wavelength(fil)
                        backing = min(filtered, key=lambda i: (abs(_wavelength(i.filter) - want), str(i.path)))
                        name = f"hst_{prop}_{visit}_{token}_{fil}" + (f"_{chip}" if chip else "")
                        cosd = max(math.cos(math.radians(dec0)), 1e-3)
                        off = (vi - (len(visits) - 1) / 2.0) * 0.002
                        exp = float(getattr(backing, "exptime", 0.0) or 500.0) * (0.5 + 0.25 * vi)
                        if fil == "total":
                            exp *= 3
                        out.append(HlaDataset(
                            name=name, field=field_name, target=str(getattr(ref, "target", field_name)),
                            instrument=f"{inst}/{chip.upper()}" if chip else inst,
                            filter="DETECTION" if fil == "total" else fil.upper(), visit=visit,
                            proposal_id=prop, ra=round(ra0 + off / cosd, 7), dec=round(dec0 + 0.75 * off, 7),
                            exptime=round(exp, 1), date_obs=_shift_date(str(getattr(backing, "date_obs", "")), 37 * vi + 400 * k),
                            level=2, fits_path=str(backing.path),
                        ))
    out.sort(key=lambda d: d.name)
    return out


def _datasets(state: Any) -> dict[str, HlaDataset]:
    cached = state.extra.get("hla_datasets")
    if cached is None:
        cached = {d.name: d for d in derive_datasets(sample_items(state))}
        state.extra["hla_datasets"] = cached
    return cached


def _params(request: Request) -> dict[str, str]:
    """Query parameters with case-insensitive names (fitscut and the search form allow any case)."""
    return {k.lower(): v for k, v in request.query_params.multi_items()}


def _float(value: str | None, default: float | None = None) -> float | None:
    if value is None or value.strip() == "":
        return default
    try:
        return float(value)
    except ValueError:
        return default


def _error(status: int, message: str, text: bool) -> Response:
    if text:
        return PlainTextResponse(f"ERROR: {message}\n", status_code=status)
    body = f"<html><head><title>HLA error</title></head><body><h1>Error</h1><p>{html.escape(message)}</p></body></html>"
    return HTMLResponse(body, status_code=status)


# --- page templates -----------------------------------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>HLA - Hubble Legacy Archive</title>
<style>body{font-family:sans-serif} .imagecell{display:inline-block;margin:4px;vertical-align:top}
.imagecell iframe{width:270px;height:360px;border:1px solid #ccc} .fwd,.back{cursor:pointer;color:#06c}
.inactive{color:#aaa;cursor:default} .helper{width:10px;height:10px;border:0}</style></head>
<body>
<div id="header"><a href="/">Hubble Legacy Archive</a> &middot; <a href="/hla_help.html">Help</a></div>
<iframe name="hlaheader" class="helper" src="/hla_frames/header.html"></iframe>
<iframe name="footprint" class="helper" src="/hla_frames/footprint.html"></iframe>
<iframe name="inventoryframe" class="helper" src="/hla_frames/inventory.html"></iframe>
<form id="searchform" onsubmit="return false"><input id="query_string" name="query_string" size="40">
 <button id="searchbutton">Search</button></form>
<div id="tabs"><span id="tab-images" class="tab">Images</span> <span id="tab-inventory" class="tab">Inventory</span></div>
<div id="output"></div>
<div id="pagecontrols"><span class="back inactive">&lt;&lt; prev</span>
 results <span id="pagestartresultscount"></span>-<span id="__COUNTID__"></span> of <span id="totalresultscount"></span>
 <span class="__FWDCLASS__ inactive">next &gt;&gt;</span></div>
<div id="images"></div>
<script>
var PAGE_SIZE = __PAGE_SIZE__;
var hlaState = {page: 1, count: 0, pages: 0, form: ""};
function parseHash() {
  var h = location.hash.replace(/^#/, "");
  var parts = h.split("|");
  return {tab: parts[0] || "Images", filter: decodeURIComponent(parts[1] || ""), form: parts[2] || "", inventory: parts[3] || ""};
}
function setText(id, t) { var e = document.getElementById(id); if (e) { e.textContent = t; } }
function render(data) {
  var box = document.getElementById("images");
  while (box.firstChild) { box.removeChild(box.firstChild); }
  hlaState.count = data.count; hlaState.pages = data.pages;
  document.getElementById("output").textContent = "Results\\t" + data.count;
  data.results.forEach(function (r) {
    var cell = document.createElement("div"); cell.className = "imagecell";
    var f = document.createElement("iframe"); f.name = "image" + r.n; f.src = r.cell;
    cell.appendChild(f); box.appendChild(cell);
  });
  var start = data.results.length ? data.results[0].n : 0;
  var end = data.results.length ? data.results[data.results.length - 1].n : 0;
  setText("pagestartresultscount", String(start));
  setText("totalresultscount", String(data.count));
  setText("__COUNTID__", String(end));
  var fwd = document.querySelector(".__FWDCLASS__");
  if (fwd) { fwd.classList.toggle("inactive", data.page >= data.pages); }
  var back = document.querySelector(".back");
  if (back) { back.classList.toggle("inactive", data.page <= 1); }
}
function load(page) {
  hlaState.page = page;
  setText("__COUNTID__", "");
  var url = "/cgi-bin/hlaviewresults.cgi?" + hlaState.form + "&page=" + page + "&pagesize=" + PAGE_SIZE;
  fetch(url).then(function (r) {
    if (!r.ok) { throw new Error("HTTP " + r.status); }
    return r.json();
  }).then(render).catch(function (e) {
    document.getElementById("output").textContent = "Error: " + e.message;
  });
}
function start() {
  var st = parseHash();
  hlaState.form = st.form;
  var q = new URLSearchParams(st.form);
  document.getElementById("query_string").value = q.get("query_string") || ((q.get("RA") || "") + " " + (q.get("Dec") || ""));
  load(1);
}
document.querySelector(".__FWDCLASS__").addEventListener("click", function (ev) {
  if (ev.currentTarget.classList.contains("inactive")) { return; }
  load(hlaState.page + 1);
});
document.querySelector(".back").addEventListener("click", function (ev) {
  if (ev.currentTarget.classList.contains("inactive")) { return; }
  load(hlaState.page - 1);
});
window.addEventListener("hashchange", start);
start();
</script>
</body></html>
"""

_HELPER = """<!DOCTYPE html><html><head><title>HLA {name}</title></head><body><div id="{name}"></div></body></html>"""

_CELL = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{name}</title>
<style>body{{margin:0;font:11px sans-serif}} .color{{white-space:nowrap}}</style></head>
<body><table class="imagetable"><tr><td class="{color_class}">Level {level} {kind}<br>{name}<br>{instrument} {filter}<br>{ra:.6f} {dec:.6f}<br>Exp {exptime:g} s &middot; {date_obs}</td></tr>
<tr><td>{img}</td></tr>
<tr><td><a href="/cgi-bin/display?image={name}&amp;izoom=1.000000&amp;detector={det}&amp;aperture=%20&amp;title={name}" target="_blank">Display</a>
 &middot; <a href="{fits}">FITS cutout</a></td></tr></table></body></html>
"""


def build_router(state: Any) -> APIRouter:
    """The HLA routes, bound to ``state`` (sample, faults)."""
    router = APIRouter()

    @router.get("/hlaview.html", response_class=HTMLResponse)
    def hlaview() -> HTMLResponse:
        faults = web_faults(state)
        missing = faults.arg("hla-layout", "fwd")
        page = (_PAGE.replace("__PAGE_SIZE__", str(PAGE_SIZE))
                .replace("__COUNTID__", "pageendresultcount" if missing == "count" else "pageendresultscount")
                .replace("__FWDCLASS__", "next-page" if missing == "fwd" else "fwd"))
        return HTMLResponse(page)

    @router.get("/hla_frames/{name}.html", response_class=HTMLResponse)
    def helper_frame(name: str) -> HTMLResponse:
        if name not in ("header", "footprint", "inventory"):
            return HTMLResponse("not found", status_code=404)
        return HTMLResponse(_HELPER.format(name=name))

    @router.get("/cgi-bin/hlaviewresults.cgi")
    async def results(request: Request) -> Response:
        p = _params(request)
        page = max(1, int(_float(p.get("page"), 1) or 1))
        faults = web_faults(state)
        stall_arg = faults.arg("hla-stall", "1")
        if stall_arg is not None and stall_arg == str(page):
            await stall(request, faults.stall_s)
            return PlainTextResponse("stalled", status_code=504)
        insts = [v.upper() for k, v in request.query_params.multi_items() if k.lower() == "inst"]
        found = _search(p, insts)
        size = max(1, min(200, int(_float(p.get("pagesize"), PAGE_SIZE) or PAGE_SIZE)))
        pages = math.ceil(len(found) / size)
        chunk = found[(page - 1) * size: page * size]
        ra, dec = _float(p.get("ra")), _float(p.get("dec"))
        out_size = int(_float(p.get("output_size"), 256) or 256)
        cutout_arcsec = _float(p.get("cutout_size"), 12.8) or 12.8
        rows = []
        for i, d in enumerate(chunk):
            n = (page - 1) * size + i + 1
            q = {"dataset": d.name, "n": n, "output_size": out_size, "cutout_size": cutout_arcsec}
            if ra is not None and dec is not None:
                q.update(RA=ra, Dec=dec)
            rows.append({"n": n, "dataset": d.name, "cell": "/cgi-bin/hlaviewcell.cgi?" + urlencode(q)})
        return JSONResponse({"count": len(found), "page": page, "pages": pages, "pagesize": size, "results": rows})

    def _search(p: dict[str, str], insts: list[str]) -> list[HlaDataset]:
        datasets = list(_datasets(state).values())
        ra, dec = _float(p.get("ra")), _float(p.get("dec"))
        radius = _float(p.get("radius"), 0.2) or 0.2
        qs = (p.get("query_string") or "").strip()
        if (ra is None or dec is None) and qs:
            m = re.match(r"^\s*([-+]?\d+(?:\.\d*)?)[\s,]+([-+]?\d+(?:\.\d*)?)", qs)
            if m:
                ra, dec = float(m.group(1)), float(m.group(2))
            else:  # a name: resolved against the sample's targets (the real site asks NED/SIMBAD)
                hits = [d for d in datasets if d.target.replace(" ", "").lower() == qs.replace(" ", "").lower()]
                if not hits:
                    return []
                ra, dec = hits[0].ra, hits[0].dec
        if ra is None or dec is None:
            return []
        found = [d for d in datasets if in_cone(d.ra, d.dec, ra, dec, radius)]
        if (p.get("inst-control") or "all").lower() != "all" and insts:
            found = [d for d in found if d.instrument.split("/")[0].upper() in insts]
        return found

    @router.get("/cgi-bin/hlaviewcell.cgi", response_class=HTMLResponse)
    async def cell(request: Request) -> Response:
        p = _params(request)
        faults = web_faults(state)
        if faults.arg("hla-stall", "1") == "frame":
            await stall(request, faults.stall_s)
            return PlainTextResponse("stalled", status_code=504)
        d = _datasets(state).get(p.get("dataset", ""))
        if d is None:
            return _error(404, f"unknown dataset {p.get('dataset')!r}", False)
        layout = faults.arg("hla-layout", "fwd")
        ra = _float(p.get("ra"), d.ra)
        dec = _float(p.get("dec"), d.dec)
        out_size = int(_float(p.get("output_size"), 256) or 256)
        fld = load_fits_field(state, sample_root(state) / d.fits_path)
        px = max(16, int(round((_float(p.get("cutout_size"), 12.8) or 12.8) / fld.pixel_scale_arcsec)))
        px = min(px, max(fld.data.shape))  # never larger than the image itself
        jpeg = "/cgi-bin/fitscut.cgi?" + urlencode({
            "red": d.name, "RA": f"{ra:.7f}", "Dec": f"{dec:.7f}", "size": px, "output_size": out_size,
            "format": "jpeg", "asinh": 1, "autoscale": "99.5"})
        fits_url = "/cgi-bin/fitscut.cgi?" + urlencode({"red": d.name, "size": "ALL", "format": "fits"})
        img = "" if layout == "img" else (
            f'<img src="{html.escape(jpeg)}" width="{out_size}" height="{out_size}" alt="{d.name}">')
        body = _CELL.format(
            color_class="colour-name" if layout == "color" else "color", level=d.level,
            kind="detection image" if d.filter == "DETECTION" else "combined image", name=d.name,
            instrument=d.instrument, filter=d.filter, ra=d.ra, dec=d.dec, exptime=d.exptime,
            date_obs=d.date_obs, img=img, det=d.instrument.split("/")[0], fits=html.escape(fits_url))
        return HTMLResponse(body)

    @router.api_route("/cgi-bin/fitscut.cgi", methods=["GET", "HEAD"])
    def fitscut(request: Request) -> Response:
        p = _params(request)
        text = p.get("texterrors", "0") not in ("0", "", "false")
        names = [p[b] for b in ("red", "green", "blue") if p.get(b)]
        if not names:
            return _error(400, "fitscut: at least one of red, green, blue is required", text)
        known = _datasets(state)
        chosen: list[HlaDataset] = []
        for raw in names:
            name = re.sub(r"\[[^\]]*\]$", "", raw.strip())
            if p.get("caseless", "0") not in ("0", ""):
                name = name.lower()
            d = known.get(name)
            if d is None:
                return _error(404, f"fitscut: image {raw!r} does not exist", text)
            chosen.append(d)
        fmt = (p.get("format") or "jpg").lower()
        if fmt not in ("jpg", "jpeg", "png", "fits"):
            return _error(400, f"fitscut: unsupported format {fmt!r}", text)
        try:
            planes, header = _cutouts(chosen, p)
        except ValueError as exc:
            return _error(400, f"fitscut: {exc}", text)
        if fmt == "fits":
            return Response(_fits_bytes(planes, header, chosen), media_type="application/fits", headers={
                "Content-Disposition": f'attachment; filename="{chosen[0].name}_cutout.fits"'})
        autoscale = _float(p.get("autoscale"), 99.5) or 99.5
        asinh = p.get("asinh", "1") not in ("0", "false")
        shown = [display_stretch(pl, autoscale=autoscale, asinh=asinh) for pl in planes]
        img = shown[0] if len(shown) == 1 else np.stack(
            [shown[0], shown[1], shown[2] if len(shown) > 2 else (shown[0] + shown[1]) / 2.0], axis=-1)
        img = _resize(img, p)
        if fmt == "png":
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(np.clip(np.round(img * 255), 0, 255).astype(np.uint8)).save(buf, format="PNG")
            return Response(buf.getvalue(), media_type="image/png")
        return Response(encode_jpeg(img), media_type="image/jpeg")

    def _cutouts(chosen: list[HlaDataset], p: dict[str, str]) -> tuple[list[np.ndarray], dict[str, Any]]:
        ref = load_fits_field(state, sample_root(state) / chosen[0].fits_path)
        size_txt = (p.get("size") or "512").strip().upper()
        ra, dec = _float(p.get("ra")), _float(p.get("dec"))
        planes: list[np.ndarray] = []
        header: dict[str, Any] = {}
        for d in chosen:
            fld = load_fits_field(state, sample_root(state) / d.fits_path)
            if size_txt == "ALL":
                plane, wcs = fld.data, fld.wcs
            else:
                try:
                    parts = [int(float(s)) for s in size_txt.split(",")]
                except ValueError as exc:
                    raise ValueError(f"bad size {size_txt!r}") from exc
                w, h = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
                if not (1 <= w <= 8192 and 1 <= h <= 8192):
                    raise ValueError(f"size {size_txt!r} out of range")
                if ra is not None and dec is not None and ref.wcs.has_celestial:
                    xc, yc = (float(v) for v in ref.wcs.world_to_pixel_values(ra, dec))
                else:
                    xc = _float(p.get("x"), fld.data.shape[1] / 2.0) or 0.0
                    yc = _float(p.get("y"), fld.data.shape[0] / 2.0) or 0.0
                try:  # fitscut pads a cutout that runs off the image; so does mode="partial"
                    cut = Cutout2D(fld.data, (xc, yc), (h, w), wcs=fld.wcs if fld.wcs.has_celestial else None,
                                   mode="partial", fill_value=np.nan)
                except NoOverlapError:
                    plane, wcs = np.full((h, w), np.nan, np.float32), None
                else:
                    plane, wcs = cut.data.astype(np.float32, copy=False), cut.wcs
            planes.append(plane)
            if not header:
                header = {"wcs": wcs}
        shape = (min(pl.shape[0] for pl in planes), min(pl.shape[1] for pl in planes))
        return [pl[: shape[0], : shape[1]] for pl in planes], header

    def _resize(img: np.ndarray, p: dict[str, str]) -> np.ndarray:
        from PIL import Image

        h, w = img.shape[:2]
        out = _float(p.get("output_size"))
        zoom = _float(p.get("zoom"), 1.0) or 1.0
        scale = (out / max(h, w)) if out else (zoom if zoom >= 1 else 1.0 / max(1, round(1.0 / zoom)))
        if abs(scale - 1.0) < 1e-6:
            return img
        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        chans = [img] if img.ndim == 2 else [img[..., c] for c in range(img.shape[2])]
        res = [np.asarray(Image.fromarray(c.astype(np.float32)).resize((nw, nh), Image.Resampling.BILINEAR)) for c in chans]
        return res[0] if img.ndim == 2 else np.stack(res, axis=-1)

    def _fits_bytes(planes: list[np.ndarray], header: dict[str, Any], chosen: list[HlaDataset]) -> bytes:
        from astropy.io import fits

        data = planes[0] if len(planes) == 1 else np.stack(planes)
        hdr = fits.Header()
        wcs = header.get("wcs")
        if wcs is not None and wcs.has_celestial:
            hdr.update(wcs.to_header())
        d = chosen[0]
        hdr["ORIGIN"] = ("HLA replica fitscut", "astro-pipeline local replica")
        hdr["DATASET"] = d.name
        hdr["TELESCOP"] = "HST"
        hdr["INSTRUME"] = d.instrument.split("/")[0]
        hdr["DETECTOR"] = d.instrument.split("/")[-1]
        hdr["FILTER"] = d.filter
        hdr["EXPTIME"] = d.exptime
        hdr["DATE-OBS"] = d.date_obs
        hdr["TARGNAME"] = d.target
        hdr["PROPOSID"] = d.proposal_id
        buf = io.BytesIO()
        fits.PrimaryHDU(data=data.astype(np.float32), header=hdr).writeto(buf)
        return buf.getvalue()

    @router.api_route("/cgi-bin/preview.cgi", methods=["GET", "HEAD"])
    def preview(request: Request) -> Response:
        p = _params(request)
        d = _datasets(state).get(p.get("dataset", ""))
        if d is None:
            return _error(404, f"preview: unknown dataset {p.get('dataset')!r}", False)
        fld = load_fits_field(state, sample_root(state) / d.fits_path)
        img = _resize(display_stretch(fld.data), {"output_size": str(int(_float(p.get("size"), 512) or 512))})
        return Response(encode_jpeg(img), media_type="image/jpeg")

    @router.get("/cgi-bin/hladatasets.json")
    def dataset_list() -> Response:
        """Replica-internal: every derived dataset (for tests and for `replica` tooling)."""
        return Response(json.dumps([d.public() for d in _datasets(state).values()]), media_type="application/json")

    return router
