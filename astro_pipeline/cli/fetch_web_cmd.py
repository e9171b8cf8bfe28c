"""``astro-pipeline fetch hla`` and ``fetch esahubble``: scrape with headless Chromium, download verified.

Both print a table of files (stderr) and, with ``--json``, one JSON object on stdout holding the
files and the measured time per page and per item. Exit status 1 when a page could not be
read (the message names the selector and URL) or any download failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from astro_pipeline.archives.records import ArchiveRecord
from astro_pipeline.cli._app import fetch_app
from astro_pipeline.cli._checks import check_cone, writable_dir
from astro_pipeline.cli._common import console
from astro_pipeline.cli._errors import print_error


# Options both scraper commands take.
_REPLICA = typer.Option(False, "--replica", help="Start the local replica (built-in sample) and use it.")
_FAULTS = typer.Option("", "--faults", help="With --replica: HTTP fault spec (replica.faults).")
_WEB_FAULTS = typer.Option("", "--web-faults", help="With --replica: page fault spec (replica.web_common).")
_TIMEOUT = typer.Option(None, "--timeout", help="Browser wait limit, seconds (Settings.browser_timeout_s).")
_JSON = typer.Option(False, "--json", help="Print the result as JSON on stdout.")


@contextmanager
def _settings_for(url_field: str, url: str | None, replica: bool, faults: str, web_faults: str,
                  timeout: float | None):
    """Settings pointing ``url_field`` at ``url`` or at a freshly started local replica."""
    from astro_pipeline.config import get_settings

    settings = get_settings()
    server = None
    if replica:
        from astro_pipeline.archives.replica.faults import FaultPlan, FaultSpecError
        from astro_pipeline.archives.replica.server import ReplicaServer
        from astro_pipeline.archives.replica.web_common import WebFaults

        try:
            plan = FaultPlan.parse(faults)
            wf = WebFaults.parse(web_faults)
        except (FaultSpecError, ValueError) as exc:
            console.print(f"[red]fault spec: {exc}[/red]")
            raise typer.Exit(2) from exc
        with console.status("starting the local replica..."):
            server = ReplicaServer(None, faults=plan, cache_dir=settings.cache_dir)
            server.state.extra["web_faults"] = wf
            server.start()
        url = server.url
        console.print(f"replica on {server.url} (faults: {plan.describe()}; web faults: {web_faults or 'none'})")
    elif faults or web_faults:
        console.print("[red]--faults/--web-faults need --replica[/red]")
        raise typer.Exit(2)
    overrides: dict[str, Any] = {}
    if url:
        overrides[url_field] = url
    if timeout is not None:
        overrides["browser_timeout_s"] = timeout
    try:
        yield settings.with_overrides(**overrides) if overrides else settings
    finally:
        if server is not None:
            server.stop()


def _report(archive: str, records: list, results: list, stats: Any, as_json: bool) -> int:
    """Print the outcome; returns the number of failed downloads."""
    from astro_pipeline.cli._downloads import download_rows, print_downloads

    rows = download_rows(results, id_field="id")
    timing = stats.summary()
    if as_json:
        typer.echo(json.dumps({"archive": archive, "records": len(records), "timing": timing, "files": rows}))
    n = print_downloads(f"{archive}: {len(rows)} file(s)", rows, id_header="id")
    console.print(f"{len(records)} record(s) from {timing['pages']} page(s): {timing['per_page_s']:.2f} s/page, "
                  f"{timing['per_item_s']:.2f} s/detail page, {timing['per_download_s']:.2f} s/download, "
                  f"browser start {timing['launch_s']:.2f} s; failed downloads: {n['failed']}")
    return n["failed"]


def _recording(flow: str, params: dict, settings, output: Path):
    """A catalog run under ``--output`` (the catalog lives with the downloads)."""
    from astro_pipeline.catalog.recording import recording_run

    return recording_run(flow, params, settings=settings.with_overrides(output_dir=output))


def _scrape(status: str, listing: Callable[[], list[ArchiveRecord]]) -> list[ArchiveRecord]:
    """Run a scraper's listing under a status line; a page that fails is a clean exit 1."""
    from astro_pipeline.archives.browser import BrowserNotFoundError, ScrapeError

    try:
        with console.status(status):
            return listing()
    except (ScrapeError, BrowserNotFoundError) as exc:
        print_error(f"scrape failed: {exc}")
        raise typer.Exit(1) from exc


def _fetch_recorded(flow: str, params: dict, settings: Any, output: Path, records: list[ArchiveRecord],
                    fetch: Callable[[], list]) -> list:
    """Record the listing and the downloads as one catalog run under ``output``."""
    with _recording(flow, params, settings, output) as run:
        run.records(records)
        return run.downloads(fetch())


@fetch_app.command("hla")
def fetch_hla(
    ra: float = typer.Option(..., "--ra", help="Right ascension of the centre, degrees (ICRS)."),
    dec: float = typer.Option(..., "--dec", help="Declination of the centre, degrees (ICRS)."),
    radius: float = typer.Option(0.2, "--radius", help="Search radius, degrees (HLA default 0.2)."),
    output: Path = typer.Option(..., "--output", help="Folder for the downloaded files."),
    cutout_px: int | None = typer.Option(None, "--cutout-px", help="Square FITS cutout of this many pixels at the "
                                         "position (default: each whole dataset, size=ALL)."),
    previews: bool = typer.Option(False, "--previews", help="Also download each result's JPEG preview."),
    max_pages: int | None = typer.Option(None, "--max-pages", help="Stop after this many results pages."),
    hla_url: str | None = typer.Option(None, "--hla-url", help="Override Settings.hla_url (e.g. a replica)."),
    replica: bool = _REPLICA,
    faults: str = _FAULTS,
    web_faults: str = _WEB_FAULTS,
    timeout: float | None = _TIMEOUT,
    as_json: bool = _JSON,
) -> None:
    """Search the Hubble Legacy Archive around a position, walk every results page, download."""
    check_cone(ra, dec, radius)
    output = writable_dir(output)
    from astro_pipeline.archives.hla import HlaClient

    with _settings_for("hla_url", hla_url, replica, faults, web_faults, timeout) as settings:
        client = HlaClient(settings)
        records = _scrape("searching the HLA in headless Chromium...",
                          lambda: client.search(ra, dec, radius, cutout_px=cutout_px, max_pages=max_pages))
        console.print(f"{len(records)} dataset(s) on {len(client.stats.page_s)} results page(s)")
        params = {"ra": ra, "dec": dec, "radius_deg": radius, "cutout_px": cutout_px, "max_pages": max_pages}
        results = _fetch_recorded("fetch-hla", params, settings, output, records,
                                  lambda: client.fetch(records, output, previews=previews))
    if _report("hla", records, results, client.stats, as_json):
        raise typer.Exit(1)


@fetch_app.command("esahubble")
def fetch_esahubble(
    output: Path = typer.Option(..., "--output", help="Folder for the downloaded images."),
    max_items: int | None = typer.Option(None, "--max", help="At most this many images (one per release)."),
    search: str | None = typer.Option(None, "--search", help="Only images whose list search matches this text."),
    esahubble_url: str | None = typer.Option(None, "--esahubble-url", help="Override Settings.esahubble_url."),
    replica: bool = _REPLICA,
    faults: str = _FAULTS,
    web_faults: str = _WEB_FAULTS,
    timeout: float | None = _TIMEOUT,
    as_json: bool = _JSON,
) -> None:
    """Walk ESA/Hubble's image list, read each image's metadata, download the largest file (sha256-verified)."""
    if max_items is not None and max_items < 1:
        console.print("[red]--max must be >= 1[/red]")
        raise typer.Exit(2)
    output = writable_dir(output)
    from astro_pipeline.archives.esahubble import EsaHubbleClient

    with _settings_for("esahubble_url", esahubble_url, replica, faults, web_faults, timeout) as settings:
        client = EsaHubbleClient(settings)
        records = _scrape("reading ESA/Hubble pages in headless Chromium...",
                          lambda: client.list_images(max_items, search=search))
        console.print(f"{len(records)} image(s) (one per release) from {len(client.stats.page_s)} list page(s)")
        results = _fetch_recorded("fetch-esahubble", {"max": max_items, "search": search}, settings, output, records,
                                  lambda: client.fetch(records, output))
    if _report("esahubble", records, results, client.stats, as_json):
        raise typer.Exit(1)
