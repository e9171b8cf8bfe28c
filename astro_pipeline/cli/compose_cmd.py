"""``astro-pipeline compose FILE... [--red F] [--green F] [--blue F] --output DIR``: colour from real bands.

FITS frames go to the slot their filter's wavelength names (B below 500 nm, G to 650 nm, R
beyond); ``--red``/``--green``/``--blue`` assign any input, a PNG included. The bands must share
one pixel grid. Writes ``DIR/<field>_rgb.png``, ``.tif`` and ``.fits`` (``<field>-<hash>_rgb.*``
where another product owns those names) through
``astro_pipeline.compose``, records the product (with its channels: which filter made which
channel, which was inferred) in the catalog under DIR, and exports the run's manifest. A band
that cannot be used is an error product naming it; the exit code is then 1.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import typer

from astro_pipeline.cli._app import app
from astro_pipeline.cli._checks import writable_dir
from astro_pipeline.cli._common import console


def _pairs(files: list[Path], red: Path | None, green: Path | None, blue: Path | None) -> list[tuple[str | None, Path]]:
    """``(slot or None, file)``: the options' files in their slots, the other files by their filter."""
    chosen = {k: v for k, v in (("red", red), ("green", green), ("blue", blue)) if v is not None}
    taken = {p.resolve() for p in chosen.values() if p.exists()}
    pairs: list[tuple[str | None, Path]] = [(k, v) for k, v in chosen.items()]
    seen: set[Path] = set()
    for f in files:
        r = f.resolve() if f.exists() else f.absolute()
        if r in taken or r in seen:
            continue
        seen.add(r)
        pairs.append((None, f))
    return pairs


@app.command()
def compose(
    files: list[Path] = typer.Argument(None, help="FITS files of one field (ordered by filter), or any images.",
                                       show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (products, catalog and manifests)."),
    red: Path | None = typer.Option(None, "--red", help="FILE for the red channel (any input, PNG included)."),
    green: Path | None = typer.Option(None, "--green", help="FILE for the green channel."),
    blue: Path | None = typer.Option(None, "--blue", help="FILE for the blue channel."),
    name: str | None = typer.Option(None, "--name", help="Product name (default: the target's)."),
    fill: str = typer.Option("auto", "--fill", help="Missing channel: auto (model if installed, else rule) | rule | model."),
    stretch: str = typer.Option("asinh", "--stretch", help="asinh (each channel its own band) | lupton (make_lupton_rgb)."),
    weights: str | None = typer.Option(None, "--weights", help="Colorizer / band-completion weights NAME or PATH."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (one band: the colorizer)."),
    run_id: str | None = typer.Option(None, "--run-id", help="Name of this run's manifest (default: compose-<UTC time>-<random>)."),
) -> None:
    """Compose a colour image from real bands on one pixel grid (two bands: the third is inferred and labelled)."""
    output = writable_dir(output)
    pairs = _pairs(list(files or []), red, green, blue)
    if not pairs:
        console.print("[red]error:[/red] give the bands: FILE... and/or --red/--green/--blue FILE")
        raise typer.Exit(2)
    if fill not in ("auto", "rule", "model") or stretch not in ("asinh", "lupton"):
        console.print("[red]error:[/red] --fill is auto, rule or model; --stretch is asinh or lupton")
        raise typer.Exit(2)

    from astro_pipeline.api.colour import compose as compose_bands_api
    from astro_pipeline.api.colour import product_of
    from astro_pipeline.catalog import export_run_manifest
    from astro_pipeline.catalog.recording import recording_run
    from astro_pipeline.config import get_settings
    from astro_pipeline.ingest.frame import IngestError
    from astro_pipeline.models.registry import WeightsError
    from astro_pipeline.products.types import Operation, Product, ProductStatus

    settings = get_settings().with_overrides(device=device, output_dir=output)
    output.mkdir(parents=True, exist_ok=True)
    run_id = run_id or f"compose-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(2)}"
    params = {"inputs": [[k, str(v)] for k, v in pairs], "fill": fill, "stretch": stretch, "weights": weights}
    failed = False
    with recording_run("compose", params, settings=settings, run_id=run_id) as run:
        try:
            res = compose_bands_api(pairs, stretch=stretch, fill=fill, weights=weights, name=name, settings=settings)
            files_written = res.save(output, recorded=run.catalog.file_owners)
        except (IngestError, WeightsError, ValueError, TypeError) as exc:
            failed = True
            first = pairs[0][1]
            product = Product(run_id=run.run_id, source_path=str(first), source_sha256="", hdu=None, plane=None,
                              frame_key=None, operation=Operation.COMPOSE, status=ProductStatus.ERROR,
                              error=" ".join(str(exc).split())[:500],
                              params={"inputs": params["inputs"], "fill": fill, "stretch": stretch})
            console.print(f"[red]error:[/red] {product.error}")
        else:
            product = product_of(res.composed, files=files_written, run_id=run.run_id)
        run.catalog.record_product(product, run_id=run.run_id)
        run.counts[f"products_{product.status}"] += 1
        parquet, _csv = export_run_manifest(run.catalog, run.run_id, output_dir=output)
    if failed:
        console.print(f"compose: failed; manifest {parquet}; catalog run {run_id}")
        raise typer.Exit(1)
    label = "a visualisation: a channel was inferred" if res.visualisation else "real bands only"
    console.print(f"compose: channels {res.channels_text} ({label})", markup=False)
    for kind, pf in files_written.items():
        console.print(f"  {kind}: {pf.path}")
    console.print(f"manifest {parquet}; catalog run {run_id}")
