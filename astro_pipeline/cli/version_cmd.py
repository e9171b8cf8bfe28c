"""``astro-pipeline version``: print the package version and where paths resolve."""

from __future__ import annotations

import json

import typer

from astro_pipeline.cli._app import app


@app.command()
def version(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show the version and the resolved project paths."""
    from astro_pipeline import __version__
    from astro_pipeline.config import PROJECT_ROOT, get_settings

    s = get_settings()
    info = {
        "version": __version__,
        "project_root": str(PROJECT_ROOT),
        "weights_dir": str(s.weights_dir),
        "output_dir": str(s.output_dir),
        "catalog": s.catalog_database_url,
    }
    if as_json:
        typer.echo(json.dumps(info))
    else:
        for k, v in info.items():
            typer.echo(f"{k}: {v}")
