"""Hubble Legacy Archive client: drive ``hlaview.html`` in headless Chromium, like the 2020 scraper.

Search a position, walk every results page (20 per page, each result in an
``<iframe name="image<N>">``), read each dataset name (second line of ``.color``) and its
preview (the frame's ``<img>``, a fitscut JPEG), and turn each into an :class:`ArchiveRecord`
whose ``url`` is a fitscut FITS cutout. Downloads go through the shared ``Downloader``.
A missing element or a stalled page raises :class:`ScrapeError` naming the selector and URL.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from astro_pipeline.archives.browser import (
    BrowserSession,
    ScrapeError,
    ScrapeStats,
    fetch_records,
    run_outside_event_loop,
)
from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
from astro_pipeline.config import Settings

if TYPE_CHECKING:  # pragma: no cover
    from playwright.sync_api import Page

    from astro_pipeline.archives.download import DownloadError, Downloader

__all__ = ["HlaClient", "parse_dataset_name", "search_url", "COUNT_SELECTOR", "NEXT_SELECTOR"]

COUNT_SELECTOR = "#pageendresultscount"
NEXT_SELECTOR = ".fwd"
OUTPUT_SELECTOR = "div#output"
NAME_SELECTOR = ".color"
PREVIEW_SELECTOR = "img"
INSTRUMENTS = ("ACS", "ACSGrism", "WFC3", "WFPC2", "NICMOS", "NICGRISM", "COS", "WFPC2-PC", "STIS", "FOS", "GHRS")


def search_url(base_url: str, ra: float, dec: float, radius_deg: float, *, output_size: int = 256,
               cutout_size_arcsec: float = 12.8) -> str:
    """The ``hlaview.html`` URL whose fragment holds the search state (ARCHIVES.md 2.2)."""
    form = [("query_string", ""), ("posfilename", ""), ("poslocalname", ""), ("posfilecount", ""),
            ("listdelimiter", "whitespace"), ("listformat", "degrees"), ("RA", f"{ra:.6f}"), ("Dec", f"{dec:.6f}"),
            ("Radius", f"{radius_deg:.6f}"), ("inst-control", "all"), *[("inst", i) for i in INSTRUMENTS],
            ("imagetype", "best"), ("prop_id", ""), ("spectral_elt", ""), ("proprietary", "both"), ("preview", "1"),
            ("output_size", str(output_size)), ("cutout_size", f"{cutout_size_arcsec:g}")]
    inventory = "ra=&dec=&sr=&level=&image=&" + urlencode({"inst": ",".join(INSTRUMENTS)}) + "&ds="
    return f"{base_url.rstrip('/')}/hlaview.html#Images|filterText%3D%24filterTypes%3D|{urlencode(form)}|{inventory}"


def parse_dataset_name(name: str) -> dict[str, Any]:
    """Proposal, visit, instrument/detector and filter from an HLA level-2 name (ARCHIVES.md 2.1).

    ``hst_10188_10_acs_wfc_f814w`` -> ACS/WFC F814W; ``hst_05371_cs_wfpc2_f814w_wf`` -> WFPC2/WF;
    ``..._total`` -> filter DETECTION. Unknown shapes give only ``{}``.
    """
    parts = name.lower().split("_")
    if len(parts) < 5 or parts[0] != "hst" or not parts[1].isdigit():
        return {}
    inst, rest = parts[3].upper(), parts[4:]
    if inst == "WFPC2":
        fil, det = rest[0], (rest[1].upper() if len(rest) > 1 else "")
    else:
        det, fil = rest[0].upper(), (rest[1] if len(rest) > 1 else "")
    return {"proposal_id": parts[1], "visit": parts[2], "instrument": f"{inst}/{det}" if det else inst,
            "filter": "DETECTION" if fil in ("total", "detection") else fil.upper()}


_COORDS = re.compile(r"^\s*([-+]?\d+\.\d+)\s+([-+]?\d+\.\d+)\s*$")
_EXPTIME = re.compile(r"\bExp\s+([\d.]+)\s*s\b")
_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")

# Reads the counter once it holds a number above the previous page's end (or 0 = no results).
_COUNT_JS = """([sel, prev]) => {
  const e = document.querySelector(sel);
  if (!e) return null;
  const t = (e.textContent || "").trim();
  if (!/^\\d+$/.test(t)) return null;
  const n = parseInt(t, 10);
  return (n > prev || (n === 0 && prev === 0)) ? {n: n} : null;
}"""


class HlaClient:
    """Search and fetch from the HLA web interface (``Settings.hla_url``)."""

    archive = "hla"

    def __init__(self, settings: Settings, *, downloader: Downloader | None = None) -> None:
        self.settings = settings
        self._downloader = downloader
        self.stats = ScrapeStats()

    @property
    def base_url(self) -> str:
        return self.settings.hla_url.rstrip("/")

    # --- search ---------------------------------------------------------------------------------
    def search(self, ra: float, dec: float, radius_deg: float = 0.2, *, cutout_px: int | None = None,
               max_pages: int | None = None) -> list[ArchiveRecord]:
        """Every dataset the Images tab lists for a cone; one FITS-cutout record each.

        ``cutout_px=None`` asks fitscut for the whole dataset (``size=ALL``); a number asks for
        a square cutout of that many pixels centred on the search position.
        """
        return run_outside_event_loop(lambda: self._search(ra, dec, radius_deg, cutout_px, max_pages))

    def _search(self, ra: float, dec: float, radius_deg: float, cutout_px: int | None,
                max_pages: int | None) -> list[ArchiveRecord]:
        t_start = time.perf_counter()
        self.stats = ScrapeStats()
        url = search_url(self.base_url, ra, dec, radius_deg)
        records: list[ArchiveRecord] = []
        with BrowserSession(self.settings) as session:
            self.stats.launch_s = session.launch_s
            page = session.new_page()
            session.goto(page, url, wait_until="domcontentloaded")
            session.wait_for(page, COUNT_SELECTOR)
            prev_end, page_no, total = 0, 1, None
            while True:
                t0 = time.perf_counter()
                end = int(session.wait_until(
                    page, _COUNT_JS, [COUNT_SELECTOR, prev_end], selector=COUNT_SELECTOR,
                    problem=f"results page {page_no} never showed its last result index (stalled?)")["n"])
                total = self._total(page, total)
                if end == 0:
                    if total not in (None, 0):
                        raise ScrapeError(page.url, f"counter shows 0 results but the page reports {total}",
                                          selector=COUNT_SELECTOR)
                    break
                for n in range(prev_end + 1, end + 1):
                    t_item = time.perf_counter()
                    records.append(self._read_result(session, page, n, page_no, ra, dec, cutout_px))
                    self.stats.item_s.append(time.perf_counter() - t_item)
                fwd = session.wait_for(page, NEXT_SELECTOR)
                self.stats.page_s.append(time.perf_counter() - t0)
                if "inactive" in (fwd.get_attribute("class") or "").split():
                    break
                if max_pages is not None and page_no >= max_pages:
                    break
                if total is not None and end >= total:
                    raise ScrapeError(page.url, f"next button is active after the last result ({end} of {total})",
                                      selector=NEXT_SELECTOR)
                session.politeness.wait(self.base_url)
                fwd.click()
                prev_end, page_no = end, page_no + 1
            if max_pages is None and total is not None and len(records) != total:
                raise ScrapeError(page.url, f"collected {len(records)} results but the page reports {total}",
                                  selector=OUTPUT_SELECTOR)
        self.stats.total_s = time.perf_counter() - t_start
        return records

    @staticmethod
    def _total(page: Page, known: int | None) -> int | None:
        """The result count from ``div#output`` (``Results<TAB><count>``), when the page shows it."""
        text = page.evaluate("(s) => { const e = document.querySelector(s); return e ? e.textContent : ''; }",
                             OUTPUT_SELECTOR) or ""
        m = re.search(r"Results\s+(\d+)", text)
        return int(m.group(1)) if m else known

    def _read_result(self, session: BrowserSession, page: Page, n: int, page_no: int, ra: float, dec: float,
                     cutout_px: int | None) -> ArchiveRecord:
        frame = page.frame(name=f"image{n}")  # local lookup; wait through the DOM only when absent
        if frame is None:
            frame = session.wait_for(page, f'iframe[name="image{n}"]').content_frame()
        if frame is None:
            raise ScrapeError(page.url, "result frame has no document", selector=f'iframe[name="image{n}"]')
        try:
            got = session.read(frame, [("text", NAME_SELECTOR, "innerText"), ("src", PREVIEW_SELECTOR, "src")])
        except ScrapeError as exc:
            if exc.url in ("", "about:blank"):  # the frame never navigated: name the URL it was loading
                src = page.evaluate("(s) => { const e = document.querySelector(s); return e ? e.src : ''; }",
                                    f'iframe[name="image{n}"]')
                raise ScrapeError(str(src or page.url), exc.problem, selector=exc.selector) from None
            raise
        text, preview = str(got.get("text") or ""), str(got.get("src") or "")
        lines = [ln.strip() for ln in text.splitlines()]
        name = lines[1] if len(lines) > 1 else ""
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name or ""):
            raise ScrapeError(frame.url, f"second line is not a dataset name: {name!r}", selector=NAME_SELECTOR)
        if not preview:
            raise ScrapeError(frame.url, "preview image has no src", selector=PREVIEW_SELECTOR)
        meta = parse_dataset_name(name)
        ds_ra = ds_dec = None
        for ln in lines[2:]:
            m = _COORDS.match(ln)
            if m:
                ds_ra, ds_dec = float(m.group(1)), float(m.group(2))
        exp = _EXPTIME.search(text)
        date = _DATE.search(text)
        cutout = self.cutout_url(name, ra=ra, dec=dec, size_px=cutout_px, fmt="fits")
        return ArchiveRecord(
            archive=self.archive, id=f"{name}:fits", obs_id=name, title=name,
            ra=ds_ra if ds_ra is not None else ra, dec=ds_dec if ds_dec is not None else dec,
            instrument=meta.get("instrument"), filters=[meta["filter"]] if meta.get("filter") else [],
            exposure_s=float(exp.group(1)) if exp else None, date_obs=date.group(1) if date else None,
            url=cutout, preview_url=preview,
            filename=f"{name}.fits" if cutout_px is None else f"{name}_cutout{cutout_px}.fits",
            kind="science",
            extra={"proposal_id": meta.get("proposal_id"), "visit": meta.get("visit"), "result_index": n,
                   "results_page": page_no, "label": lines[0] if lines else "", "search": {"ra": ra, "dec": dec},
                   "preview_query": {k: v[0] for k, v in parse_qs(urlsplit(preview).query).items()}},
        )

    def cutout_url(self, dataset: str, *, ra: float | None = None, dec: float | None = None,
                   size_px: int | None = None, fmt: str = "fits", output_size: int | None = None) -> str:
        """A fitscut URL for one dataset: whole image (``size_px=None``) or a cutout at (ra, dec)."""
        q: list[tuple[str, Any]] = [("red", dataset)]
        if size_px is None:
            q.append(("size", "ALL"))
        else:
            q += [("RA", f"{ra:.7f}"), ("Dec", f"{dec:.7f}"), ("size", int(size_px))]
        if output_size:
            q.append(("output_size", int(output_size)))
        q.append(("format", fmt))
        if fmt in ("jpg", "jpeg", "png"):
            q += [("asinh", 1), ("autoscale", "99.5")]
        return f"{self.base_url}/cgi-bin/fitscut.cgi?{urlencode(q)}"

    # --- fetch ----------------------------------------------------------------------------------
    @property
    def downloader(self) -> Downloader:
        if self._downloader is None:
            from astro_pipeline.archives.download import Downloader

            self._downloader = Downloader(self.settings)
        return self._downloader

    def preview_records(self, records: list[ArchiveRecord]) -> list[ArchiveRecord]:
        """One JPEG-preview record per dataset record (the colour/grey fitscut JPEG the page showed)."""
        out = []
        for r in records:
            if r.preview_url:
                out.append(r.model_copy(update={
                    "id": f"{r.obs_id}:jpeg", "url": r.preview_url, "kind": "preview",
                    "filename": f"{r.obs_id}.jpeg", "preview_url": None}))
        return out

    def fetch(self, records: list[ArchiveRecord], dest_dir: Path, *, previews: bool = False,
              ) -> list[DownloadedFile | DownloadError]:
        """Download each record's file (and, with ``previews``, its JPEG preview) into ``dest_dir``."""
        todo = list(records) + (self.preview_records(records) if previews else [])
        return fetch_records(self.downloader, todo, Path(dest_dir), self.stats)
