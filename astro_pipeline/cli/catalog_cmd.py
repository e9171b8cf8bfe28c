"""``astro-pipeline runs``, ``catalog stats`` and ``catalog export``: read the catalog of an output folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from astro_pipeline.cli._app import app, catalog_app
from astro_pipeline.cli._checks import existing_dir, writable_dir
from astro_pipeline.cli._common import console

_OUTPUT_HELP = "Output folder whose catalog to use (default: settings' output_dir)."
_CATALOG_HELP = "Catalog database URL (sqlite:///... or postgresql+psycopg://...); overrides --output."


def _open(output: Path | None, catalog_url: str | None) -> Any:
    """Open an existing catalog, or exit with a clear message."""
    from astro_pipeline.catalog import Catalog, CatalogError
    from astro_pipeline.config import get_settings

    settings = get_settings()
    if output is not None and catalog_url is None:
        settings = settings.with_overrides(output_dir=existing_dir(output, missing_ok=True))
    try:
        return Catalog(catalog_url or settings.catalog_database_url, create=False)
    except CatalogError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    except Exception as exc:  # unreachable server, bad URL: one line, no traceback
        console.print(f"[red]error:[/] cannot open catalog: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        raise typer.Exit(1) from None


def _fmt_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _fmt_counts(counts: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items() if not isinstance(v, dict | list))


@app.command("runs")
def runs_cmd(
    output: Path | None = typer.Option(None, "--output", "-o", help=_OUTPUT_HELP),
    catalog_url: str | None = typer.Option(None, "--catalog", help=_CATALOG_HELP),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many recent runs to show."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Recent runs with their status, products per status, flags and counts."""
    from rich.console import Console
    from rich.table import Table

    with _open(output, catalog_url) as cat:
        runs = cat.recent_runs(limit)
        summaries = {r.id: cat.run_summary(r.id) for r in runs}
    if as_json:
        typer.echo(json.dumps([{
            "id": r.id, "flow": r.flow, "status": r.display_status, "started_at": r.started_at.isoformat(),
            "finished_at": r.finished_at.isoformat() if r.finished_at else None, "duration_s": r.duration_s,
            "counts": r.counts, "products": summaries[r.id].products_by_status, "flags": summaries[r.id].flags,
        } for r in runs], indent=2))
        return
    if not runs:
        console.print("No runs in this catalog yet.")
        return
    table = Table(title=f"Recent runs ({len(runs)})")
    for col in ("run", "flow", "status", "started (UTC)", "took", "ok", "error"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("took", "ok", "error") else "left")
    table.add_column("flags", overflow="fold")
    table.add_column("counts", overflow="fold")
    for r in runs:
        s = summaries[r.id]
        status = r.display_status
        style = {"ok": "green", "completed": "green", "running": "yellow", "died": "red", "failed": "red"}.get(
            status, "yellow" if "error" in status or status == "partial" else "")
        table.add_row(r.id, r.flow, f"[{style}]{status}[/]" if style else status, _fmt_time(r.started_at),
                      _fmt_duration(r.duration_s), str(s.products_by_status.get("ok", 0)),
                      str(sum(v for k, v in s.products_by_status.items() if k != "ok")),
                      " ".join(f"{k}={v}" for k, v in sorted(s.flags.items())), _fmt_counts(r.counts))
    Console(width=max(160, console.width)).print(table)


@catalog_app.command("stats")
def stats_cmd(
    output: Path | None = typer.Option(None, "--output", "-o", help=_OUTPUT_HELP),
    catalog_url: str | None = typer.Option(None, "--catalog", help=_CATALOG_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Counts: records, files, frames, flags, products, reviews and runs."""
    from rich.console import Console
    from rich.table import Table

    with _open(output, catalog_url) as cat:
        stats = cat.stats()
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
        return
    table = Table(title=f"Catalog {stats['url']} (schema v{stats['schema_version']})")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("breakdown", overflow="fold")

    def breakdown(key: str) -> str:
        return " ".join(f"{k}={v}" for k, v in stats[key].items())

    table.add_row("archive records", str(stats["records"]), breakdown("records_by_archive"))
    table.add_row("downloaded files", str(stats["files"]), f"{stats['bytes'] / 1e6:.1f} MB")
    table.add_row("frames", str(stats["frames"]), f"flagged={stats['frames_flagged']}")
    table.add_row("flags", str(sum(stats["flags"].values())), breakdown("flags"))
    table.add_row("products", str(stats["products"]),
                  f"{breakdown('products_by_status')} | {breakdown('products_by_operation')} | "
                  f"superseded={stats['products_superseded']}")
    table.add_row("product files", str(stats["product_files"]), "")
    table.add_row("reviews", str(stats["reviews"]), "current: " + breakdown("decisions"))
    table.add_row("runs", str(stats["runs"]), breakdown("runs_by_status"))
    Console(width=max(120, console.width)).print(table)


@catalog_app.command("export")
def export_cmd(
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: its catalog is read and "
                                "manifests are written to <output>/manifests/."),
    catalog_url: str | None = typer.Option(None, "--catalog", help=_CATALOG_HELP),
    per_run: bool = typer.Option(False, "--per-run", help="Also rewrite <run_id>.parquet/.csv for every run."),
    csv: bool = typer.Option(True, "--csv/--no-csv", help="Also write all.csv next to all.parquet."),
) -> None:
    """Rebuild manifests/all.parquet (the cumulative manifest) from the catalog."""
    from astro_pipeline.catalog import export_cumulative_manifest, export_run_manifest

    output = writable_dir(output, create=False)  # the manifests are written there
    with _open(output, catalog_url) as cat:
        path = export_cumulative_manifest(cat, output_dir=output, csv=csv)
        written = [path, *([path.with_suffix(".csv")] if csv else [])]
        if per_run:
            for run in cat.recent_runs(limit=1_000_000):
                written.extend(export_run_manifest(cat, run.id, output_dir=output))
    for p in written:
        typer.echo(str(p))
