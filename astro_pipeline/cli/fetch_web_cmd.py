"""``astro-pipeline fetch hla`` and ``fetch esahubble``: scrape with headless Chromium, download verified.

Both print a table of files (stderr) and, with ``--json``, one JSON object on stdout holding the
files and the measured time per page and per item. Exit status 1 when a page could not be
read (the message names the selector and URL) or any download failed.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from astro_pipeline.cli._app import fetch_app
from astro_pipeline.cli._checks import check_cone, writable_dir
from astro_pipeline.cli._common import console
from astro_pipeline.cli._errors import print_error


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
    from rich.table import Table

    from astro_pipeline.archives.download import DownloadError

    rows = []
    for res in results:
        if isinstance(res, DownloadError):
            rec = res.record
            rows.append({"file": (rec.filename if rec else None) or res.url, "id": rec.id if rec else None,
                         "status": "failed", "size": None, "sha256": None, "detail": res.reason,
                         "credit": rec.credit if rec else None, "license": rec.license if rec else None})
        else:
            rows.append({"file": str(res.path), "id": res.record.id, "status": "skipped" if res.skipped else "ok",
                         "size": res.size, "sha256": res.sha256, "detail": f"verified: {res.verified_against}",
                         "credit": res.record.credit, "license": res.record.license})
    timing = stats.summary()
    if as_json:
        typer.echo(json.dumps({"archive": archive, "records": len(records), "timing": timing, "files": rows}))
    table = Table(title=f"{archive}: {len(rows)} file(s)")
    for col in ("file", "id", "status", "size", "detail"):
        table.add_column(col)
    for row in rows:
        style = {"failed": "red", "skipped": "dim"}.get(row["status"], "")
        table.add_row(Path(row["file"]).name, row["id"] or "", row["status"],
                      "" if row["size"] is None else f"{row['size']:,}", row["detail"], style=style)
    console.print(table)
    failed = sum(r["status"] == "failed" for r in rows)
    console.print(f"{len(records)} record(s) from {timing['pages']} page(s): {timing['per_page_s']:.2f} s/page, "
                  f"{timing['per_item_s']:.2f} s/detail page, {timing['per_download_s']:.2f} s/download, "
                  f"browser start {timing['launch_s']:.2f} s; failed downloads: {failed}")
    return failed


def _recording(flow: str, params: dict, settings, output: Path):
    """A catalog run under ``--output`` (the catalog lives with the downloads)."""
    from astro_pipeline.catalog.recording import recording_run

    return recording_run(flow, params, settings=settings.with_overrides(output_dir=output))


def _scrape_failed(exc: Exception) -> typer.Exit:
    print_error(f"scrape failed: {exc}")
    return typer.Exit(1)


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
    replica: bool = typer.Option(False, "--replica", help="Start the local replica (built-in sample) and use it."),
    faults: str = typer.Option("", "--faults", help="With --replica: HTTP fault spec (replica.faults)."),
    web_faults: str = typer.Option("", "--web-faults", help="With --replica: page fault spec (replica.web_common)."),
    timeout: float | None = typer.Option(None, "--timeout", help="Browser wait limit, seconds (Settings.browser_timeout_s)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Search the Hubble Legacy Archive around a position, walk every results page, download."""
    check_cone(ra, dec, radius)
    output = writable_dir(output)
    from astro_pipeline.archives.browser import BrowserNotFoundError, ScrapeError
    from astro_pipeline.archives.hla import HlaClient

    with _settings_for("hla_url", hla_url, replica, faults, web_faults, timeout) as settings:
        client = HlaClient(settings)
        try:
            with console.status("searching the HLA in headless Chromium..."):
                records = client.search(ra, dec, radius, cutout_px=cutout_px, max_pages=max_pages)
        except (ScrapeError, BrowserNotFoundError) as exc:
            raise _scrape_failed(exc) from exc
        console.print(f"{len(records)} dataset(s) on {len(client.stats.page_s)} results page(s)")
        params = {"ra": ra, "dec": dec, "radius_deg": radius, "cutout_px": cutout_px, "max_pages": max_pages}
        with _recording("fetch-hla", params, settings, output) as run:
            run.records(records)
            results = run.downloads(client.fetch(records, output, previews=previews))
    if _report("hla", records, results, client.stats, as_json):
        raise typer.Exit(1)


@fetch_app.command("esahubble")
def fetch_esahubble(
    output: Path = typer.Option(..., "--output", help="Folder for the downloaded images."),
    max_items: int | None = typer.Option(None, "--max", help="At most this many images (one per release)."),
    search: str | None = typer.Option(None, "--search", help="Only images whose list search matches this text."),
    esahubble_url: str | None = typer.Option(None, "--esahubble-url", help="Override Settings.esahubble_url."),
    replica: bool = typer.Option(False, "--replica", help="Start the local replica (built-in sample) and use it."),
    faults: str = typer.Option("", "--faults", help="With --replica: HTTP fault spec (replica.faults)."),
    web_faults: str = typer.Option("", "--web-faults", help="With --replica: page fault spec (replica.web_common)."),
    timeout: float | None = typer.Option(None, "--timeout", help="Browser wait limit, seconds (Settings.browser_timeout_s)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Walk ESA/Hubble's image list, read each image's metadata, download the largest file (sha256-verified)."""
    if max_items is not None and max_items < 1:
        console.print("[red]--max must be >= 1[/red]")
        raise typer.Exit(2)
    output = writable_dir(output)
    from astro_pipeline.archives.browser import BrowserNotFoundError, ScrapeError
    from astro_pipeline.archives.esahubble import EsaHubbleClient

    with _settings_for("esahubble_url", esahubble_url, replica, faults, web_faults, timeout) as settings:
        client = EsaHubbleClient(settings)
        try:
            with console.status("reading ESA/Hubble pages in headless Chromium..."):
                records = client.list_images(max_items, search=search)
        except (ScrapeError, BrowserNotFoundError) as exc:
            raise _scrape_failed(exc) from exc
        console.print(f"{len(records)} image(s) (one per release) from {len(client.stats.page_s)} list page(s)")
        with _recording("fetch-esahubble", {"max": max_items, "search": search}, settings, output) as run:
            run.records(records)
            results = run.downloads(client.fetch(records, output))
    if _report("esahubble", records, results, client.stats, as_json):
        raise typer.Exit(1)
