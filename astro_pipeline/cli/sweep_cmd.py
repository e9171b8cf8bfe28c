"""``astro-pipeline sweep`` and ``astro-pipeline reprocess``: run the Prefect flows from the shell.

``sweep --sample`` is the quick start's main job: it serves the built-in sample from the local
replica on a free 127.0.0.1 port, points every archive at it, and runs ``archive_sweep`` in
Prefect's ephemeral mode (no server needed), offline, from any directory. Both commands show a
progress bar (items done of total, stage, elapsed, time left: ``cli._progress``); Prefect's
per-task lines go to ``<output>/logs/`` and its API, and to the terminal with ``--verbose``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

from astro_pipeline.archives.listing import ARCHIVES as ARCHIVE_NAMES
from astro_pipeline.cli._app import app
from astro_pipeline.cli._checks import check_cone, writable_dir
from astro_pipeline.cli._common import console
from astro_pipeline.cli._errors import print_error


def _prefect_offline_defaults() -> None:
    """Quiet, offline Prefect: no telemetry; ephemeral API unless the user configured a server."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "true")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _parse_archives(value: str | None) -> list[str]:
    if not value:
        return list(ARCHIVE_NAMES)
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in ARCHIVE_NAMES]
    if bad:
        raise typer.BadParameter(f"unknown archive(s) {', '.join(bad)}; choose from {', '.join(ARCHIVE_NAMES)}")
    return names


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _print_report(report: Any) -> None:
    """Where the outputs are, then a short summary table (stdout)."""
    from rich.console import Console
    from rich.table import Table

    out = Console() if sys.stdout.isatty() else Console(width=150)
    table = Table(title=f"sweep {report.run_id}" + (" (dry run)" if report.dry_run else ""), show_lines=False)
    for col in ("item", "operation", "status", "flags", "products", "seconds"):
        table.add_column(col, overflow="fold")
    rows = report.summary_rows()
    for row in rows[:40]:
        table.add_row(row["item"], row["operation"], row["status"], row["flags"], str(row["products"]),
                      f"{row['seconds']:.1f}")
    if len(rows) > 40:
        table.add_row(f"... {len(rows) - 40} more", "", "", "", "", "")
    out.print(table)
    for it in report.items:  # an archive that could not be listed: say which, and why, on one line
        if it.status == "list_failed":
            print_error(it.error or f"{it.archive} listing failed")
    counts = ", ".join(f"{k}: {v}" for k, v in report.counts.items()) or "nothing to do"
    flags = ", ".join(f"{k}: {v}" for k, v in sorted(report.flag_counts.items())) or "none"
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(report.stage_seconds.items()))
    out.print(f"items: {counts}")
    out.print(f"flags: {flags}")
    if stages:
        out.print(f"time per stage (summed over items): {stages}")
    out.print(f"wall time: {report.wall_seconds:.1f} s")
    if not report.dry_run:
        out.print(f"products:  {report.products_dir}  ({report.n_products} product(s), "
                  f"{report.n_composites} Lupton composite(s))")
        for f in report.fields:
            png = f.files.get("png")
            what = (f"{f.channels or ''} -> {Path(png.path).name} ({len(f.files)} files)" if png is not None
                    else (f.note or ""))
            out.print(f"field {f.name} ({', '.join(f.filters)}): {f.status}" + (f": {what}" if what else ""),
                      markup=False)
        out.print(f"manifest:  {report.manifest_parquet}")
        out.print(f"           {report.manifest_csv}")
        if report.all_manifest:
            out.print(f"all runs:  {report.all_manifest}")
        if report.contact_sheet:
            out.print(f"contact sheet (before | after): {report.contact_sheet}")
        out.print(f"catalog:   {Path(report.output_dir) / 'catalog.sqlite'}")


def _run_flow(flow_obj: Any, settings: Any, *, verbose: bool, **params: Any) -> Any:
    """Run the flow here with a progress display; Prefect's lines go to ``<output>/logs/`` (and the
    terminal only with ``verbose``), as well as to its API and UI."""
    from astro_pipeline import progress
    from astro_pipeline.cli._progress import SweepDisplay, prefect_lines
    from flows.common import build_task_runner

    log = None
    if not params.get("dry_run"):  # a dry run changes nothing, not even a log folder
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        log = Path(settings.output_dir) / "logs" / f"{stamp}-{flow_obj.name}.log"
    with prefect_lines(verbose=verbose, log_file=log), SweepDisplay(console, live=not verbose) as display, \
            progress.subscribe(display):
        report = flow_obj.with_options(task_runner=build_task_runner(settings))(**params)
    if log is not None:
        console.print(f"Prefect log: {log}", soft_wrap=True, highlight=False)
    return report


def _exit_code(report: Any) -> int:
    return 1 if any(report.counts.get(s) for s in ("error", "download_failed", "list_failed")) else 0


@app.command("sweep")
def sweep(
    sample: bool = typer.Option(False, "--sample", help="Sweep the built-in sample, served by the local replica."),
    mini: bool = typer.Option(False, "--mini", help="With --sample: the small sample (tests, quick looks)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output folder (default: settings output_dir)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be fetched and made; change nothing."),
    force: bool = typer.Option(False, "--force", help="Redo finished items with the current weights."),
    archives: str | None = typer.Option(None, "--archives", help="Comma-separated subset: mast,hla,esahubble."),
    weights_dir: Path | None = typer.Option(None, "--weights-dir", help="Folder with colorizer/superres weights."),
    max_files: int | None = typer.Option(None, "--max-files", help="Per-run cap on files fetched."),
    max_bytes: int | None = typer.Option(None, "--max-bytes", help="Per-run cap on bytes fetched."),
    delete_raw: bool = typer.Option(False, "--delete-raw", help="Delete raw downloads once products are verified."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show Prefect's per-task log lines here."),
) -> None:
    """Sweep the watch list (settings) or, with --sample, the built-in sample; print a summary."""
    _prefect_offline_defaults()
    from astro_pipeline.config import get_settings

    base = get_settings()
    output = writable_dir(output) if output else None
    if output is None:
        writable_dir(Path(base.output_dir), option="output_dir (settings)")
    overrides: dict[str, Any] = {
        "output_dir": str(output.resolve()) if output else None,
        "weights_dir": str(weights_dir.resolve()) if weights_dir else None,
        "max_files_per_run": max_files,
        "max_bytes_per_run": max_bytes,
        "keep_raw": False if delete_raw else None,
    }
    chosen = _parse_archives(archives)
    if not sample:
        settings = base.with_overrides(**overrides)
        regions = [r.model_copy(update={"archives": [a for a in r.archives if a in chosen]})
                   for r in settings.watch_list]
        if not regions:
            console.print("[red]the watch list is empty[/]: add [[watch_list]] regions (name, ra, dec, radius_deg, "
                          "archives) to astro-pipeline.toml, or run `astro-pipeline sweep --sample`")
            raise typer.Exit(2)
        _check_weights(settings, dry_run)
        from flows.sweep import archive_sweep

        report = _run_flow(archive_sweep, settings, verbose=verbose, regions=regions, dry_run=dry_run, force=force,
                           overrides={k: v for k, v in overrides.items() if v is not None})
        _print_report(report)
        raise typer.Exit(_exit_code(report))

    from astro_pipeline.archives.replica.server import ReplicaServer
    from astro_pipeline.sample import build_sample
    from astro_pipeline.sample_watch_list import sample_overrides, sample_watch_list

    index = build_sample(mini=mini, cache_dir=base.cache_dir)
    with ReplicaServer(index.root) as replica:
        console.print(f"replica of MAST, HLA and ESA/Hubble serving the {'mini ' if mini else ''}sample at "
                      f"{replica.url}", soft_wrap=True)
        overrides.update(sample_overrides(replica.url, base))
        settings = base.with_overrides(**overrides)
        _check_weights(settings, dry_run)
        regions = sample_watch_list(index, archives=chosen)
        from flows.sweep import archive_sweep

        report = _run_flow(archive_sweep, settings, verbose=verbose, regions=regions, dry_run=dry_run, force=force,
                           overrides={k: v for k, v in overrides.items() if v is not None})
    _print_report(report)
    raise typer.Exit(_exit_code(report))


def _check_weights(settings: Any, dry_run: bool) -> None:
    missing = [n for n in ("colorizer", "superres") if not (Path(settings.weights_dir) / f"{n}.safetensors").is_file()]
    if missing and not dry_run:
        console.print(f"[red]no {' and '.join(missing)} weights in {settings.weights_dir}[/]: pass --weights-dir, "
                      "set ASTRO_PIPELINE_WEIGHTS_DIR, or train them with `astro-pipeline train`")
        raise typer.Exit(2)


@app.command("reprocess")
def reprocess(
    ra: float = typer.Option(..., "--ra", help="Right ascension of the centre, degrees (ICRS)."),
    dec: float = typer.Option(..., "--dec", help="Declination of the centre, degrees (ICRS)."),
    radius: float = typer.Option(..., "--radius", help="Cone radius, degrees."),
    archives: str | None = typer.Option(None, "--archives", help="Comma-separated subset: mast,hla,esahubble."),
    instrument: str | None = typer.Option(None, "--instrument", help="Comma-separated instruments, e.g. ACS,WFC3."),
    filter_: str | None = typer.Option(None, "--filter", help="Comma-separated filters, e.g. F606W,F814W."),
    force: bool = typer.Option(False, "--force", help="Redo existing products with the current weights."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be fetched and made; change nothing."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output folder (default: settings output_dir)."),
    deployment: bool = typer.Option(
        False, "--deployment",
        help="Trigger the 'reprocess-region/reprocess-region' deployment on the Prefect server instead of running here.",
    ),
    deployment_name: str = typer.Option("reprocess-region/reprocess-region", "--deployment-name"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show Prefect's per-task log lines here."),
) -> None:
    """Fetch and process one sky region now (the reprocess-region flow), or trigger its deployment."""
    check_cone(ra, dec, radius)
    chosen = _parse_archives(archives)
    if output and not deployment:  # a deployment's output folder is on the worker, not here
        output = writable_dir(output)
    params: dict[str, Any] = {"ra": ra, "dec": dec, "radius_deg": radius, "archives": chosen, "force": force,
                              "dry_run": dry_run, "instruments": _split(instrument), "filters": _split(filter_)}
    if output:
        params["overrides"] = {"output_dir": str(output.resolve())}
    if deployment:
        if not os.environ.get("PREFECT_API_URL"):
            from prefect.settings import PREFECT_API_URL

            if not PREFECT_API_URL.value():
                console.print("[red]--deployment needs a Prefect server[/]: set PREFECT_API_URL "
                              "(e.g. http://127.0.0.1:4200/api after `prefect server start`)")
                raise typer.Exit(2)
        from prefect.deployments import run_deployment

        run = run_deployment(deployment_name, parameters=params, timeout=0)
        typer.echo(json.dumps({"flow_run_id": str(run.id), "name": run.name, "deployment": deployment_name}))
        console.print(f"triggered {deployment_name}: flow run {run.name} ({run.id}); a worker on the pool runs it")
        return
    _prefect_offline_defaults()
    from astro_pipeline.config import get_settings

    settings = get_settings().with_overrides(**params.get("overrides", {}))
    if not output:
        writable_dir(Path(settings.output_dir), option="output_dir (settings)")
    _check_weights(settings, dry_run)
    from flows.sweep import reprocess_region

    report = _run_flow(reprocess_region, settings, verbose=verbose, **params)
    _print_report(report)
    raise typer.Exit(_exit_code(report))
