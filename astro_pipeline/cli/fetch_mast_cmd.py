"""``astro-pipeline fetch mast``: query a sky region on MAST and download its products, verified."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from astro_pipeline.cli._app import fetch_app
from astro_pipeline.cli._checks import check_cone, writable_dir
from astro_pipeline.cli._common import console, progress
from astro_pipeline.cli._errors import print_error


@fetch_app.command("mast")
def fetch_mast(
    ra: float | None = typer.Option(None, "--ra", help="Right ascension of the centre, degrees (ICRS)."),
    dec: float | None = typer.Option(None, "--dec", help="Declination of the centre, degrees (ICRS)."),
    target: str | None = typer.Option(None, "--target", help="A target name resolved via mast_resolver_url (e.g. M101)."),
    radius: float = typer.Option(..., "--radius", help="Search radius, degrees."),
    instrument: list[str] = typer.Option([], "--instrument", help="Instrument, e.g. ACS/WFC (repeatable)."),
    filter_: list[str] = typer.Option([], "--filter", help="Filter, e.g. F814W (repeatable)."),
    calib_level: int = typer.Option(3, "--calib-level", help="CAOM calibration level (3: science products)."),
    product_type: list[str] = typer.Option(["DRZ", "DRC"], "--product-type", help="Product subgroups to fetch."),
    output: Path = typer.Option(..., "--output", help="Folder for the downloaded files."),
    mast_url: str | None = typer.Option(None, "--mast-url", help="Override Settings.mast_url (e.g. a replica)."),
    replica: bool = typer.Option(False, "--replica", help="Start the local replica (built-in sample) and fetch from it."),
    faults: str = typer.Option("", "--faults", help="With --replica: a fault spec to inject."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Find HST images around a position (or a named target) and download their products."""
    by_position = ra is not None and dec is not None
    if (target is None and not by_position) or (target is not None and (ra is not None or dec is not None)):
        console.print("[red]give either --ra and --dec, or --target NAME[/red]")
        raise typer.Exit(2)
    check_cone(ra, dec, radius)
    output = writable_dir(output)
    from astro_pipeline.archives.download import DownloadError
    from astro_pipeline.archives.mast import MastClient, MastError
    from astro_pipeline.config import get_settings

    from astro_pipeline.catalog.recording import recording_run

    settings = get_settings().with_overrides(output_dir=output)  # the catalog lives under --output
    server = None
    if replica:
        from astro_pipeline.archives.replica.faults import FaultPlan, FaultSpecError
        from astro_pipeline.archives.replica.server import ReplicaServer

        try:
            plan = FaultPlan.parse(faults)
        except FaultSpecError as exc:
            console.print(f"[red]--faults: {exc}[/red]")
            raise typer.Exit(2) from exc
        with console.status("starting the local replica..."):
            server = ReplicaServer(None, faults=plan, cache_dir=settings.cache_dir).start()
        mast_url = server.url
        settings = settings.with_overrides(mast_resolver_url=f"{server.url}/Santa-war/query")
        console.print(f"replica on {server.url} (faults: {plan.describe()})")
    if mast_url:
        settings = settings.with_overrides(mast_url=mast_url)
    t0 = time.monotonic()
    try:
        with MastClient(settings) as client:
            try:
                if target is not None:
                    ra, dec = client.resolve(target)
                    console.print(f"{target} -> ra {ra:.5f}, dec {dec:.5f}")
                assert ra is not None and dec is not None
                with console.status("querying MAST..."):
                    records = client.query_region(ra, dec, radius, instruments=instrument, filters=filter_,
                                                  calib_level=calib_level, product_types=product_type)
            except MastError as exc:
                print_error(f"MAST query failed: {exc}")
                raise typer.Exit(1) from exc
            t_query = time.monotonic() - t0
            console.print(f"{len(records)} product(s) in {t_query:.2f} s")
            params = {"ra": ra, "dec": dec, "radius_deg": radius, "target": target, "instruments": instrument,
                      "filters": filter_, "calib_level": calib_level, "product_types": product_type}
            with recording_run("fetch-mast", params, settings=settings) as run, progress() as bar:
                run.records(records)
                task = bar.add_task("downloading", total=len(records))
                results = run.downloads(client.fetch(records, output, on_done=lambda rec, res: bar.advance(task)))
                console.print(f"catalog run {run.run_id}")
    finally:
        if server is not None:
            server.stop()
    elapsed = time.monotonic() - t0
    _summary(results, elapsed, as_json)
    if any(isinstance(r, DownloadError) for r in results):
        raise typer.Exit(1)


def _summary(results: list, elapsed: float, as_json: bool) -> None:
    from astro_pipeline.cli._downloads import download_rows, print_downloads

    rows = [{"file": r["file"], "obs_id": r["id"], "status": r["status"], "size": r["size"], "sha256": r["sha256"],
             "detail": r["detail"]} for r in download_rows(results, id_field="obs_id")]
    if as_json:
        typer.echo(json.dumps({"elapsed_s": round(elapsed, 3), "files": rows}))
    n = print_downloads(f"MAST fetch: {len(rows)} file(s) in {elapsed:.2f} s", [dict(r, id=r["obs_id"]) for r in rows],
                        id_header="obs_id")
    console.print(f"downloaded {n['ok']}, already verified {n['skipped']}, failed {n['failed']}")
