"""``astro-pipeline colorize | upscale | enhance INPUT... --output DIR``: run the models on files.

Each input file (FITS/TIF/PNG/JPEG, or directories of them) gives products under DIR mirroring its
path relative to the directory named on the command line (a flat folder of ``X.ext`` gives
``DIR/X.png``). Errors are reported per file and the run carries on; the exit code is 1 when any
frame failed. Every run writes ``DIR/manifests/<run_id>.parquet`` and ``.csv``.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import typer

from astro_pipeline.cli._app import app
from astro_pipeline.cli._checks import writable_dir
from astro_pipeline.cli._common import console, progress

DEFAULT_COLORIZER = "colorizer"
DEFAULT_UPSCALER = "superres"

_INPUTS = typer.Argument(..., help="FITS/TIF/PNG/JPEG files or directories of them.", show_default=False)
_OUTPUT = typer.Option(..., "--output", "-o", help="Output directory (products and manifests).")
_DEVICE = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (default: settings, auto).")
_BATCH = typer.Option(None, "--batch-size", min=1, help="Tiles per batch (default: settings, 16).")
_TILE = typer.Option(None, "--tile-size", min=8, help="Tile side in input pixels (default: the weights' metadata).")
_PRECISION = typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16 (default: settings, auto).")
_COMPILE = typer.Option(False, "--compile", help="torch.compile the model (slow start, faster big runs).")
_RUN_ID = typer.Option(None, "--run-id", help="Name of this run's manifest (default: <operation>-<UTC time>-<random>).")


class _SetupError(Exception):
    """A problem with the command's setup (weights, device): reported without a traceback."""


def _engine(name_or_path: str, *, option: str, task: str, settings: Any, tile_size: int | None) -> Any:
    from astro_pipeline.inference import Engine
    from astro_pipeline.models.registry import WeightsError, load_weights

    try:
        model, meta = load_weights(name_or_path)
    except WeightsError as exc:
        msg = str(exc)
        if option != "--weights":
            msg = msg.replace("--weights", option)
        raise _SetupError(msg) from None
    if meta.task != task:
        raise _SetupError(f"{name_or_path}: these are {meta.task!r} weights; {option} needs {task!r} weights")
    try:
        return Engine(model, meta, device=settings.device, precision=settings.precision,
                      batch_size=settings.batch_size, compile=settings.compile, tile_size=tile_size)
    except ValueError as exc:
        raise _SetupError(str(exc)) from None


def _expand(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """(file, root) pairs: a directory argument is the root of its files; a file's root is its folder.
    Files already under the output directory are skipped (re-runs must not eat their own products)."""
    from astro_pipeline.ingest.readers import iter_input_files

    out_resolved = output.resolve()
    pairs: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for arg in inputs:
        root = arg if arg.is_dir() else arg.parent
        for f in iter_input_files([arg]):
            r = f.resolve() if f.exists() else f.absolute()
            if arg.is_dir() and out_resolved in r.parents:
                continue
            if r in seen:
                continue
            seen.add(r)
            pairs.append((f, root))
    return pairs


def _run(operation: str, inputs: list[Path], output: Path, *, colorizer: str | None, upscaler: str | None,
         colorizer_option: str, upscaler_option: str, device: str | None, batch_size: int | None,
         tile_size: int | None, precision: str | None, compile: bool, run_id: str | None) -> None:
    output = writable_dir(output)  # before any model is loaded
    import torch  # noqa: F401 - imported here so `--help` stays fast

    from astro_pipeline.config import get_settings
    from astro_pipeline.manifest import write_run_manifest
    from astro_pipeline.products import process_file

    settings = get_settings().with_overrides(device=device, batch_size=batch_size, precision=precision,
                                             compile=compile or None)
    try:
        col = (_engine(colorizer or DEFAULT_COLORIZER, option=colorizer_option, task="colorize",
                       settings=settings, tile_size=tile_size) if operation in ("colorize", "enhance") else None)
        up = (_engine(upscaler or DEFAULT_UPSCALER, option=upscaler_option, task="superres",
                      settings=settings, tile_size=tile_size) if operation in ("upscale", "enhance") else None)
    except _SetupError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    output.mkdir(parents=True, exist_ok=True)
    run_id = run_id or f"{operation}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(2)}"
    pairs = _expand(inputs, output)
    if not pairs:
        console.print("[red]error:[/red] no input files found (FITS, TIF, PNG or JPEG)")
        raise typer.Exit(2)
    products: list[Any] = []
    roots: dict[str, Path] = {}
    t0 = time.perf_counter()
    from astro_pipeline.catalog.recording import recording_run

    params = {"inputs": [str(p) for p in inputs], "colorizer": colorizer, "upscaler": upscaler,
              "tile_size": tile_size, "batch_size": settings.batch_size, "precision": settings.precision}
    catalog_settings = settings.with_overrides(output_dir=output)  # the catalog lives under --output
    with recording_run(operation, params, settings=catalog_settings, run_id=run_id) as run, progress() as bar:
        task = bar.add_task(operation, total=len(pairs))
        for path, root in pairs:
            bar.update(task, description=f"{operation} {path.name}")
            got = process_file(path, operation=operation, output_dir=output, input_root=root,
                               colorizer=col, upscaler=up, settings=settings, run_id=run_id)
            for p in got:
                roots[p.source_path] = root
                if p.status != "ok":
                    bar.console.print(f"[red]error:[/red] {p.error}")
            run.products(got)  # recorded file by file: an interrupted run keeps what it finished
            products.extend(got)
            bar.advance(task)
        _add_composites(products, roots, output)
        run.products([p for p in products if "lupton" in p.files])  # idempotent: adds the composite files
    parquet, _csv = write_run_manifest(products, output_dir=output, run_id=run_id)
    ok = sum(p.status == "ok" for p in products)
    failed = len(products) - ok
    tiles = sum(p.tile_count for p in products)
    n_composites = len({str(p.files["lupton"].path) for p in products if "lupton" in p.files})
    console.print(
        f"{operation}: {ok} frame(s) ok, {failed} failed, {tiles} tiles, {n_composites} Lupton composite(s) "
        f"in {time.perf_counter() - t0:.1f} s; manifest {parquet}; catalog run {run_id}"
    )
    if failed:
        raise typer.Exit(1)


def _add_composites(products: list[Any], roots: dict[str, Path], output: Path) -> None:
    """Classical make_lupton_rgb composites where three filters of one field were processed."""
    from astro_pipeline.products import write_lupton_composites

    by_root: dict[Path, list[Any]] = {}
    for p in products:
        by_root.setdefault(roots.get(p.source_path, Path(p.source_path).parent), []).append(p)
    for root, group in by_root.items():
        try:
            write_lupton_composites(group, output_dir=output, input_root=root)
        except Exception as exc:  # noqa: BLE001 - the baseline composite is a bonus, never fatal
            console.print(f"[yellow]warning:[/yellow] Lupton composite skipped: {type(exc).__name__}: {exc}")


@app.command()
def colorize(
    inputs: list[Path] = _INPUTS,
    output: Path = _OUTPUT,
    weights: str | None = typer.Option(None, "--weights", help="Colorizer weights NAME (in weights/) or PATH."),
    device: str | None = _DEVICE,
    batch_size: int | None = _BATCH,
    tile_size: int | None = _TILE,
    precision: str | None = _PRECISION,
    compile: bool = _COMPILE,
    run_id: str | None = _RUN_ID,
) -> None:
    """Colorize grey images (colour inputs are reduced to their lightness first); same size out."""
    _run("colorize", inputs, output, colorizer=weights, upscaler=None, colorizer_option="--weights",
         upscaler_option="--weights", device=device, batch_size=batch_size, tile_size=tile_size,
         precision=precision, compile=compile, run_id=run_id)


@app.command()
def upscale(
    inputs: list[Path] = _INPUTS,
    output: Path = _OUTPUT,
    weights: str | None = typer.Option(None, "--weights", help="Super-resolution weights NAME (in weights/) or PATH."),
    device: str | None = _DEVICE,
    batch_size: int | None = _BATCH,
    tile_size: int | None = _TILE,
    precision: str | None = _PRECISION,
    compile: bool = _COMPILE,
    run_id: str | None = _RUN_ID,
) -> None:
    """Super-resolve 4x (FITS inputs also get a flux-conserving linear FITS)."""
    _run("upscale", inputs, output, colorizer=None, upscaler=weights, colorizer_option="--weights",
         upscaler_option="--weights", device=device, batch_size=batch_size, tile_size=tile_size,
         precision=precision, compile=compile, run_id=run_id)


@app.command()
def enhance(
    inputs: list[Path] = _INPUTS,
    output: Path = _OUTPUT,
    colorizer: str | None = typer.Option(None, "--colorizer", help="Colorizer weights NAME or PATH."),
    upscaler: str | None = typer.Option(None, "--upscaler", help="Super-resolution weights NAME or PATH."),
    device: str | None = _DEVICE,
    batch_size: int | None = _BATCH,
    tile_size: int | None = _TILE,
    precision: str | None = _PRECISION,
    compile: bool = _COMPILE,
    run_id: str | None = _RUN_ID,
) -> None:
    """Colorize, then super-resolve 4x."""
    _run("enhance", inputs, output, colorizer=colorizer, upscaler=upscaler, colorizer_option="--colorizer",
         upscaler_option="--upscaler", device=device, batch_size=batch_size, tile_size=tile_size,
         precision=precision, compile=compile, run_id=run_id)
