"""``astro-pipeline colorize | upscale | enhance INPUT... --output DIR``: run the models on files.

Each input file (FITS/TIF/PNG/JPEG, or directories of them) gives products under DIR mirroring its
path relative to the directory named on the command line, named for the operation and scale (a
flat folder of ``X.ext`` gives ``DIR/X_color.png``, ``DIR/X_x4.png`` or ``DIR/X_color_x4.png``;
``products.naming``), through the same processing path as the sweep (``astro_pipeline.processing``):
the same products, same-grid Lupton composites included, recorded in the catalog under DIR.
An input already made with the same weights is skipped unless ``--overwrite``; a product never
replaces a file another product records. Errors are reported per file and the run carries on;
the exit code is 1 when any frame failed, 2 for a usage problem (a missing INPUT: nothing is
created). Every run writes ``DIR/manifests/<run_id>.parquet`` and ``.csv``, exported from the catalog.
"""

from __future__ import annotations

import inspect
import secrets
import time
from pathlib import Path
from typing import Any

import typer

from astro_pipeline.cli._app import app
from astro_pipeline.cli._checks import fail, writable_dir
from astro_pipeline.cli._common import console, progress
from astro_pipeline.products.types import FRAME_OPERATIONS, Operation


class _SetupError(Exception):
    """A problem with the command's setup (weights, device): reported without a traceback."""


def _engines(operation: Operation, settings: Any, *, colorizer: str | None, upscaler: str | None,
             options: dict[str, str], tile_size: int | None) -> Any:
    """The operation's engines; a weights problem names the option that chose the weights."""
    from astro_pipeline.engines import DEFAULT_WEIGHTS, Engines, TaskMismatchError, load_engine
    from astro_pipeline.models.registry import WeightsError

    loaded: dict[str, Any] = {}
    for task, chosen in (("colorize", colorizer), ("superres", upscaler)):
        if task not in operation.model_tasks:
            continue
        option = options[task]
        try:
            loaded[task] = load_engine(chosen or DEFAULT_WEIGHTS[task], task=task, settings=settings,
                                       tile_size=tile_size)
        except TaskMismatchError as exc:
            raise _SetupError(f"{exc}; {option} needs {task!r} weights") from None
        except WeightsError as exc:
            raise _SetupError(str(exc).replace("--weights", option)) from None
        except ValueError as exc:  # device / precision
            raise _SetupError(str(exc)) from None
    return Engines(colorizer=loaded.get("colorize"), upscaler=loaded.get("superres"))


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


def _existing_inputs(inputs: list[Path]) -> None:
    """Every INPUT must exist: a mistyped path stops the command before it makes any folder or run."""
    missing = [p for p in inputs if not p.exists()]
    if missing:
        fail("INPUTS " + ", ".join(str(p) for p in missing) + ": no such file or folder")


def _run(operation: Operation, inputs: list[Path], output: Path, *, colorizer: str | None, upscaler: str | None,
         options: dict[str, str], device: str | None, batch_size: int | None, tile_size: int | None,
         precision: str | None, compile: bool, run_id: str | None, overwrite: bool) -> None:
    _existing_inputs(inputs)
    pairs = _expand(inputs, output)
    if not pairs:
        fail("no input files found (FITS, TIF, PNG or JPEG)")
    output = writable_dir(output)  # before any model is loaded
    import torch  # noqa: F401 - imported here so `--help` stays fast

    from astro_pipeline.catalog import export_run_manifest, refresh_superseded_manifests
    from astro_pipeline.catalog.recording import recording_run
    from astro_pipeline.config import get_settings
    from astro_pipeline.fileio import sha256_file
    from astro_pipeline.processing import compose_recorded, done_products, process_input

    settings = get_settings().with_overrides(device=device, batch_size=batch_size, precision=precision,
                                             compile=compile or None, output_dir=output)  # the catalog is under --output
    try:
        engines = _engines(operation, settings, colorizer=colorizer, upscaler=upscaler, options=options,
                           tile_size=tile_size)
    except _SetupError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    run_id = run_id or f"{operation}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(2)}"
    t0 = time.perf_counter()
    params = {"inputs": [str(p) for p in inputs], "colorizer": colorizer, "upscaler": upscaler,
              "tile_size": tile_size, "batch_size": settings.batch_size, "precision": settings.precision,
              "overwrite": overwrite}
    versions = engines.versions_for(operation)
    ok = failed = tiles = skipped = 0
    with recording_run(str(operation), params, settings=settings, run_id=run_id) as run, progress() as bar:
        task = bar.add_task(str(operation), total=len(pairs))
        shas: list[str] = []
        for path, root in pairs:
            bar.update(task, description=f"{operation} {path.name}")
            if not overwrite and path.is_file() and done_products(run.catalog, sha256_file(path), operation=operation,
                                                                  models=versions):
                skipped += 1  # made before with these weights, files in place: an explicit --overwrite redoes it
                run.counts["inputs_skipped_done"] += 1
                bar.advance(task)
                continue
            processed = process_input(path, operation=operation, engines=engines, output_dir=output,
                                      quality=settings.quality, max_image_pixels=settings.pixel_limit,
                                      memory_budget=settings.memory_budget_bytes, catalog=run.catalog,
                                      run_id=run.run_id, input_root=root)
            run.count(processed)  # recorded file by file: an interrupted run keeps what it finished
            for p in processed.failed:
                bar.console.print(f"[red]error:[/red] {p.error}")
            ok += len(processed.products) - len(processed.failed)
            failed += len(processed.failed)
            tiles += sum(p.tile_count for p in processed.products)
            shas.append(processed.sha256)
            bar.advance(task)
        try:
            composites = compose_recorded(run.catalog, shas, operation=operation, models=versions,
                                          max_image_pixels=settings.pixel_limit)
        except Exception as exc:  # noqa: BLE001 - the baseline composite is a bonus, never fatal
            console.print(f"[yellow]warning:[/yellow] Lupton composite skipped: {type(exc).__name__}: {exc}")
            composites = []
        parquet, _csv = export_run_manifest(run.catalog, run.run_id, output_dir=output)
        refreshed = refresh_superseded_manifests(run.catalog, run.run_id, output_dir=output)
    done_note = f", {skipped} skipped (done with these weights; --overwrite to redo)" if skipped else ""
    console.print(
        f"{operation}: {ok} frame(s) ok, {failed} failed{done_note}, {tiles} tiles, {len(composites)} Lupton "
        f"composite(s) in {time.perf_counter() - t0:.1f} s; manifest {parquet}; catalog run {run_id}"
    )
    if refreshed:
        console.print(f"superseded products marked in {len(refreshed)} earlier manifest(s): "
                      + ", ".join(p.name for p in refreshed))
    if failed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------- the three commands

_DOCS = {
    Operation.COLORIZE: "Colorize grey images (colour inputs are reduced to their lightness first); same size out.",
    Operation.UPSCALE: "Super-resolve 4x (FITS inputs also get a flux-conserving linear FITS).",
    Operation.ENHANCE: "Colorize, then super-resolve 4x.",
}
#: Per operation: (parameter, option, help) of each weights choice, and the task it chooses for.
_WEIGHTS = {
    Operation.COLORIZE: [("weights", "--weights", "Colorizer weights NAME (in weights/) or PATH.", "colorize")],
    Operation.UPSCALE: [("weights", "--weights", "Super-resolution weights NAME (in weights/) or PATH.", "superres")],
    Operation.ENHANCE: [("colorizer", "--colorizer", "Colorizer weights NAME or PATH.", "colorize"),
                        ("upscaler", "--upscaler", "Super-resolution weights NAME or PATH.", "superres")],
}
_COMMON: list[tuple[str, Any, Any]] = [  # (parameter, annotation, typer default)
    ("inputs", list[Path], typer.Argument(..., help="FITS/TIF/PNG/JPEG files or directories of them.",
                                          show_default=False)),
    ("output", Path, typer.Option(..., "--output", "-o", help="Output directory (products and manifests).")),
    ("device", str | None, typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (default: settings, auto).")),
    ("batch_size", int | None, typer.Option(None, "--batch-size", min=1, help="Tiles per batch (default: settings, 'auto' = calibrated once per machine).")),
    ("tile_size", int | None, typer.Option(None, "--tile-size", min=8,
                                           help="Tile side in input pixels (default: the weights' metadata).")),
    ("precision", str | None, typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16 (default: settings, auto).")),
    ("compile", bool, typer.Option(False, "--compile", help="torch.compile the model (slow start, faster big runs).")),
    ("run_id", str | None, typer.Option(None, "--run-id",
                                        help="Name of this run's manifest (default: <operation>-<UTC time>-<random>).")),
    ("overwrite", bool, typer.Option(False, "--overwrite",
                                     help="Redo inputs already made with these weights (skipped otherwise); "
                                          "their old catalog rows are marked superseded.")),
]


def _register(operation: Operation) -> None:
    """One typer command per operation: the common options plus that operation's weights options."""
    weights = _WEIGHTS[operation]

    def command(**kw: Any) -> None:
        chosen = {task: kw.pop(param) for param, _, _, task in weights}
        _run(operation, kw.pop("inputs"), kw.pop("output"), colorizer=chosen.get("colorize"),
             upscaler=chosen.get("superres"), options={task: opt for _, opt, _, task in weights}, **kw)

    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
              for name, ann, default in _COMMON[:2]]
    params += [inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                                 default=typer.Option(None, opt, help=help_))
               for param, opt, help_, _ in weights]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
               for name, ann, default in _COMMON[2:]]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__doc__ = _DOCS[operation]
    command.__name__ = str(operation)
    app.command(str(operation))(command)


for _operation in FRAME_OPERATIONS:
    _register(_operation)
