"""``astro-pipeline review serve``: the curator review page for flagged frames."""

from __future__ import annotations

from pathlib import Path

import typer

from astro_pipeline.cli._app import review_app
from astro_pipeline.cli._common import console


@review_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="TCP port (0 picks a free one)."),
    output: Path | None = typer.Option(None, "--output", help="Output folder holding catalog.sqlite."),
    catalog_url: str | None = typer.Option(None, "--catalog", help="Catalog database URL (overrides --output)."),
) -> None:
    """Serve the review queue; reviewers sign in with a token from ASTRO_PIPELINE_REVIEW_TOKENS."""
    from astro_pipeline.catalog import Catalog
    from astro_pipeline.config import get_settings
    from astro_pipeline.review.server import ReviewServer, is_loopback

    settings = get_settings().with_overrides(output_dir=output, catalog_url=catalog_url)
    catalog = Catalog(settings.catalog_database_url, settings=settings)
    if not is_loopback(host):
        console.print(f"[yellow]warning:[/] binding {host}: the review page is reachable from other machines; "
                      "use it only behind TLS on a trusted network")
    server = ReviewServer(catalog=catalog, settings=settings, host=host, port=port)
    if not settings.review_tokens:
        console.print("[yellow]no reviewer tokens configured[/]: the page is read-only. Set "
                      "ASTRO_PIPELINE_REVIEW_TOKENS='{\"<token>\": \"<name>\"}' to allow sign-in.")
    if not settings.review_secret:
        console.print("sessions are signed with a per-process key (set ASTRO_PIPELINE_REVIEW_SECRET to keep "
                      "reviewers signed in across restarts; decisions are kept either way)")
    from astro_pipeline.catalog.db import redact

    console.print(f"review page: {server.url}/  (catalog {redact(settings.catalog_database_url)})")
    flagged = catalog.count_frames(flagged_only=True)
    undecided = catalog.count_frames(flagged_only=True, decision="undecided")
    console.print(f"{flagged} flagged frame(s), {undecided} without a decision"
                  + ("" if flagged else ": nothing to review yet (run a sweep, or `review demo`)"))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        catalog.close()


@review_app.command("demo")
def demo(
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the demo catalog.sqlite and images."),
) -> None:
    """Write a small demo catalog of flagged frames (Hubble Deep Field crops) to try the review page."""
    from astro_pipeline.review.demo import build_demo_catalog

    if (output / "catalog.sqlite").exists():
        console.print(f"[red]error:[/] {output / 'catalog.sqlite'} exists; choose an empty --output folder")
        raise typer.Exit(2)
    built = build_demo_catalog(output)
    built.catalog.close()
    flagged = sum(1 for f in built.frames if f.flags)
    tokens = "ASTRO_PIPELINE_REVIEW_TOKENS='{\"demo\": \"curator\"}'"
    console.print(f"demo catalog with {flagged} flagged frames in {output}; next: "
                  f"{tokens} astro-pipeline review serve --output {output}")
