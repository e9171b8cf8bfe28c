"""The shared typer application and its sub-command groups."""

from __future__ import annotations

import typer

from astro_pipeline.cli._errors import CleanErrorsGroup

app = typer.Typer(
    cls=CleanErrorsGroup,  # known failures of any command: one "error:" line, exit 1 or 2
    name="astro-pipeline",
    help="Hubble archive colorization and 4x super-resolution pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fetch_app = typer.Typer(help="Fetch from an archive (MAST, HLA, ESA/Hubble).", no_args_is_help=True)
replica_app = typer.Typer(help="The local archive replica (MAST, HLA, ESA/Hubble on 127.0.0.1).", no_args_is_help=True)
catalog_app = typer.Typer(help="The catalog: what came from where and what was made.", no_args_is_help=True)
review_app = typer.Typer(help="The curator review web page.", no_args_is_help=True)

app.add_typer(fetch_app, name="fetch")
app.add_typer(replica_app, name="replica")
app.add_typer(catalog_app, name="catalog")
app.add_typer(review_app, name="review")
