"""``astro-pipeline review serve`` and ``review demo``: the curator review page for flagged frames."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import typer

from astro_pipeline.cli._app import review_app
from astro_pipeline.cli._checks import existing_dir, fail, writable_dir
from astro_pipeline.cli._common import console


@review_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="TCP port (0 picks a free one)."),
    output: Path | None = typer.Option(
        None, "--output", help="Output folder holding catalog.sqlite; the page shows files from it only."),
    catalog_url: str | None = typer.Option(None, "--catalog", help="Catalog database URL (overrides --output)."),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host", help="Another name the page answers to, e.g. a TLS reverse proxy's (repeatable)."),
    allow_remote_writes: bool = typer.Option(
        False, "--allow-remote-writes",
        help="On a non-loopback --host, allow sign-in and decisions (default: read-only there)."),
) -> None:
    """Serve the review queue; reviewers sign in with a token from ASTRO_PIPELINE_REVIEW_TOKENS."""
    from astro_pipeline.catalog import Catalog
    from astro_pipeline.catalog.db import redact
    from astro_pipeline.config import get_settings
    from astro_pipeline.review.access import review_access
    from astro_pipeline.review.server import ReviewServer

    settings = get_settings()
    if output is not None or catalog_url is None:  # the page shows files from this folder only
        folder = existing_dir(output if output is not None else Path(settings.output_dir),
                              option="--output" if output is not None else "output_dir (settings)")
        settings = settings.with_overrides(output_dir=folder)
    settings = settings.with_overrides(catalog_url=catalog_url,
                                       review_allowed_hosts=[*settings.review_allowed_hosts, *allowed_host] or None)
    access = review_access(host, allow_remote_writes=allow_remote_writes, extra_hosts=settings.review_allowed_hosts)
    if access.read_only:
        console.print(f"[yellow]read-only:[/] {host} is not a loopback address, so sign-in and decisions are off; "
                      "add --allow-remote-writes (behind a TLS reverse proxy) to allow them", soft_wrap=True)
    elif not host.startswith("127.") and host not in ("localhost", "::1"):
        console.print(f"[yellow]warning:[/] binding {host} with --allow-remote-writes: sign-in and decisions are "
                      "allowed from other machines; serve it only behind TLS (see the README)", soft_wrap=True)
    names = ", ".join(sorted(access.allowed_hosts))
    console.print(f"answering to: {names} (other Host names get 421)", soft_wrap=True)
    catalog = Catalog(settings.catalog_database_url, settings=settings, create=False)
    try:
        server = ReviewServer(catalog=catalog, settings=settings, host=host, port=port,
                              allow_remote_writes=allow_remote_writes)
        if not settings.review_tokens:
            console.print("[yellow]no reviewer tokens configured[/]: the page is read-only. Set "
                          "ASTRO_PIPELINE_REVIEW_TOKENS='{\"<token>\": \"<name>\"}' (tokens of 16+ characters) "
                          "to allow sign-in.", soft_wrap=True)
        if not settings.review_secret:
            console.print("sessions are signed with a per-process key (set ASTRO_PIPELINE_REVIEW_SECRET to keep "
                          "reviewers signed in across restarts; decisions are kept either way)", soft_wrap=True)
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

    output = writable_dir(output)
    if (output / "catalog.sqlite").exists():
        fail(f"--output {output}: {output / 'catalog.sqlite'} exists; choose an empty folder")
    built = build_demo_catalog(output)
    built.catalog.close()
    flagged = sum(1 for f in built.frames if f.flags)
    token = secrets.token_urlsafe(24)  # drawn fresh each time: a demo page is still a real server
    tokens = json.dumps({token: "curator"})
    console.print(f"demo catalog with {flagged} flagged frames in {output}; sign in with the reviewer token "
                  f"{token} (drawn just now). Next:", soft_wrap=True)
    console.print(f"ASTRO_PIPELINE_REVIEW_TOKENS='{tokens}' astro-pipeline review serve --output {output}",
                  soft_wrap=True, highlight=False, markup=False)
