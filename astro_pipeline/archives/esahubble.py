"""ESA/Hubble (esahubble.org) image-archive client: walk the list pages in headless Chromium.

Reads the JS-rendered thumbnails of each ``/images/`` list page, follows ``ul.pagination``,
then reads each ``/images/<id>/`` detail page: the ``div.object-info`` tables, the credit,
the licence, and the downloads block. Each image becomes one ``esahubble`` record for the
largest format offered, carrying the published sha256 (verified by the shared ``Downloader``).
Images of a release already taken are skipped (dedupe by release).
"""

from __future__ import annotations

import html
import re
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

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

__all__ = ["EsaHubbleClient", "FORMAT_PREFERENCE", "parse_ra", "parse_dec", "parse_release_date"]

STATUS_SELECTOR = "div.statusbar div.col-md-3"
THUMB_SELECTOR = "div.image-list a.item"
NEXT_SELECTOR = "ul.pagination li.active + li a"
INFO_SELECTOR = "div.object-info"
DOWNLOAD_SELECTOR = "div.archive_download"

#: Download titles from largest to smallest (djangoplicity resource names, ARCHIVES.md 3.1).
FORMAT_PREFERENCE: tuple[str, ...] = (
    "Fullsize Original", "Publication TIFF 40K", "Publication TIFF 25K", "Publication TIFF 10K",
    "Publication TIFF 4K", "Large JPEG", "Publication JPEG", "Screensize JPEG",
)

_EMPTY_TEXT = "No images were found."
_SHOWING = re.compile(r"Showing\s+(\d+)\s+to\s+(\d+)\s+of\s+(\d+)")
_FILTER = re.compile(r"\b(F\d{3,4}[A-Z]{0,2})\b")
_SHA = re.compile(r"^[0-9a-f]{64}$")

# Everything a detail page offers, read in one round trip.
_DETAIL_JS = """() => {
  const text = (e) => e ? (e.innerText || e.textContent || "").trim() : "";
  const info = {};
  const bands = [];
  document.querySelectorAll("div.object-info").forEach((box) => {
    const h = text(box.querySelector("h3"));
    box.querySelectorAll("tr").forEach((tr) => {
      const th = tr.querySelector("th.title");
      const td = tr.querySelector("td");
      if (th && td) { info[text(th).replace(/:\\s*$/, "")] = text(td); }
      else if (/colou?rs/i.test(h)) {
        const tds = Array.from(tr.querySelectorAll("td")).map(text);
        if (tds.length) { bands.push(tds); }
      }
    });
  });
  const downloads = Array.from(document.querySelectorAll("div.archive_download")).map((d) => {
    const a = d.querySelector(".archive_dl_text a");
    const chk = d.querySelector('[data-title="sha256 checksum"]');
    return {title: text(a), href: a ? a.href : "", size: text(d.querySelector(".archive_dl_size")),
            checksum: chk ? chk.getAttribute("data-content") : null};
  });
  return {title: text(document.querySelector("h1")), credit: text(document.querySelector("div.credit")),
          info: info, bands: bands, downloads: downloads};
}"""


def parse_ra(text: str) -> float | None:
    """``"5 35 17.30"`` (hours minutes seconds, as ESA/Hubble prints it) -> degrees; None if unparsable."""
    return _angle_deg(text, "hourangle")


def parse_dec(text: str) -> float | None:
    """``-5° 23' 28.00"`` -> degrees; None if unparsable."""
    return _angle_deg(text, "deg")


def _angle_deg(text: str, unit: str) -> float | None:
    from astropy import units as u
    from astropy.coordinates import Angle

    try:
        return float(Angle((text or "").strip(), unit=getattr(u, unit)).degree)
    except (ValueError, TypeError):
        return None


def parse_release_date(text: str) -> str | None:
    """``25 October 2006, 14:30`` or ``25 October 2006`` -> ISO."""
    text = (text or "").strip()
    for fmt, iso in (("%d %B %Y, %H:%M", "%Y-%m-%dT%H:%M"), ("%d %B %Y", "%Y-%m-%d")):
        try:
            return datetime.strptime(text, fmt).strftime(iso)
        except ValueError:
            continue
    return None


def _size_bytes(text: str) -> int | None:
    m = re.search(r"([\d.]+)\s*(GB|MB|KB|B)\b", text or "")
    if not m:
        return None
    mult = {"GB": 1024**3, "MB": 1024**2, "KB": 1024, "B": 1}[m.group(2)]
    return int(float(m.group(1)) * mult)


def _rank(title: str) -> int:
    try:
        return FORMAT_PREFERENCE.index(title)
    except ValueError:
        return len(FORMAT_PREFERENCE)


class EsaHubbleClient:
    """List and fetch ESA/Hubble release images (``Settings.esahubble_url``)."""

    archive = "esahubble"

    def __init__(self, settings: Settings, *, downloader: Downloader | None = None) -> None:
        self.settings = settings
        self._downloader = downloader
        self.stats = ScrapeStats()

    @property
    def base_url(self) -> str:
        return self.settings.esahubble_url.rstrip("/")

    # --- listing --------------------------------------------------------------------------------
    def list_images(self, max_items: int | None = None, *, search: str | None = None) -> list[ArchiveRecord]:
        """One record per release (its first listed image), at most ``max_items``."""
        return run_outside_event_loop(lambda: self._list(max_items, search))

    def _list(self, max_items: int | None, search: str | None) -> list[ArchiveRecord]:
        t_start = time.perf_counter()
        self.stats = ScrapeStats()
        url = f"{self.base_url}/images/" + (f"?{urlencode({'search': search})}" if search else "")
        records: list[ArchiveRecord] = []
        by_release: dict[str, ArchiveRecord] = {}
        with BrowserSession(self.settings) as session:
            self.stats.launch_s = session.launch_s
            page = session.new_page()
            detail_urls = self._walk_list(session, page, url)
            for detail in detail_urls:
                if max_items is not None and len(records) >= max_items:
                    break
                t0 = time.perf_counter()
                rec = self._read_detail(session, page, detail)
                self.stats.item_s.append(time.perf_counter() - t0)
                key = rec.release or rec.id
                if key in by_release:  # same release seen already: keep the first image only
                    by_release[key].extra.setdefault("duplicates", []).append(rec.id)
                    continue
                by_release[key] = rec
                records.append(rec)
        self.stats.total_s = time.perf_counter() - t_start
        return records

    def _walk_list(self, session: BrowserSession, page: Page, url: str) -> list[str]:
        """Detail-page URLs from every list page, in listing order (duplicates dropped)."""
        urls: list[str] = []
        seen_pages: set[str] = set()
        while True:
            if url in seen_pages:
                raise ScrapeError(url, "pagination loops back to a page already read", selector=NEXT_SELECTOR)
            seen_pages.add(url)
            t0 = time.perf_counter()
            session.goto(page, url, wait_until="domcontentloaded")  # the inline script has run by then
            body_text = page.evaluate("() => document.body ? document.body.innerText : ''") or ""
            if _EMPTY_TEXT in body_text:
                break
            status = session.read(page, [("text", STATUS_SELECTOR, "innerText")])["text"]
            m = _SHOWING.search(status or "")
            if not m:
                raise ScrapeError(page.url, f"status text {status!r} is not 'Showing A to B of N'",
                                  selector=STATUS_SELECTOR)
            first, last, total = (int(g) for g in m.groups())
            want = last - first + 1
            hrefs = session.wait_until(
                page, "([sel, n]) => { const a = Array.from(document.querySelectorAll(sel)).map(e => e.href);"
                      " return a.length >= n ? a : null; }",
                [THUMB_SELECTOR, want], selector=THUMB_SELECTOR,
                problem=f"expected {want} thumbnails (items {first} to {last} of {total}) to be rendered")
            if len(hrefs) != want:
                raise ScrapeError(page.url, f"{len(hrefs)} thumbnails for items {first} to {last}",
                                  selector=THUMB_SELECTOR)
            for h in hrefs:
                if h not in urls:
                    urls.append(h)
            self.stats.page_s.append(time.perf_counter() - t0)
            if last >= total:
                break
            url = str(session.read(page, [("href", NEXT_SELECTOR, "href")])["href"])
        return urls

    def _read_detail(self, session: BrowserSession, page: Page, url: str) -> ArchiveRecord:
        session.goto(page, url, wait_until="domcontentloaded")
        session.wait_for(page, INFO_SELECTOR)
        session.wait_for(page, DOWNLOAD_SELECTOR)
        d: dict[str, Any] = page.evaluate(_DETAIL_JS)
        info: dict[str, str] = d.get("info") or {}
        image_id = info.get("Id") or urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
        offered = [x for x in d.get("downloads") or [] if x.get("href")]
        if not offered:
            raise ScrapeError(url, "no download links", selector=f"{DOWNLOAD_SELECTOR} .archive_dl_text a")
        best = min(offered, key=lambda x: (_rank(x["title"]), -(_size_bytes(x["size"]) or 0)))
        sha, fname = None, None
        if best.get("checksum"):
            parts = html.unescape(best["checksum"]).replace("\u00a0", " ").split()
            if parts and _SHA.match(parts[0].lower()):
                sha = parts[0].lower()
                fname = parts[1] if len(parts) > 1 else None
            else:
                raise ScrapeError(url, f"sha256 popover is malformed: {best['checksum']!r}",
                                  selector='[data-title="sha256 checksum"]')
        filename = fname or Path(urlsplit(best["href"]).path).name
        release_txt = info.get("Related releases", "")
        release = release_txt.split()[0].strip(",") if release_txt.strip() else re.sub(r"[a-z]$", "", image_id)
        filters: list[str] = []
        instrument = None
        for row in d.get("bands") or []:
            for f in _FILTER.findall(" ".join(row)):
                if f not in filters:
                    filters.append(f)
            if len(row) >= 3 and "\n" in row[2]:
                instrument = row[2].split("\n", 1)[1].strip() or instrument
        credit = (d.get("credit") or "").strip()
        license_ = (info.get("License") or info.get("Licence") or "").strip()
        if not credit:
            raise ScrapeError(url, "no credit line (ESA/Hubble images must keep their credit)", selector="div.credit")
        return ArchiveRecord(
            archive=self.archive, id=image_id, title=d.get("title") or info.get("Name"), target=info.get("Name"),
            ra=parse_ra(info.get("Position (RA)", "")), dec=parse_dec(info.get("Position (Dec)", "")),
            instrument=instrument, filters=filters, url=best["href"], filename=filename, sha256=sha,
            credit=credit, license=license_ or None, release=release, kind="color",
            preview_url=f"{self.base_url}/media/archives/images/thumb300y/{image_id}.jpg",
            extra={"page_url": url, "format": best["title"], "declared_size": best["size"],
                   "release_date": parse_release_date(info.get("Release date", "")),
                   "constellation": info.get("Constellation"), "pixel_size": info.get("Size"),
                   "type": info.get("Type"), "formats": [x["title"] for x in offered]},
        )

    # --- fetch ----------------------------------------------------------------------------------
    @property
    def downloader(self) -> Downloader:
        if self._downloader is None:
            from astro_pipeline.archives.download import Downloader

            self._downloader = Downloader(self.settings)
        return self._downloader

    def fetch(self, records: list[ArchiveRecord], dest_dir: Path) -> list[DownloadedFile | DownloadError]:
        """Download each record's image into ``dest_dir``, verified by its published sha256."""
        return fetch_records(self.downloader, list(records), Path(dest_dir), self.stats)
