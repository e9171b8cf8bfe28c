"""``astro-pipeline inspect PATH... [--json] [--sample]``: read files, report frames, metrics and flags.

One JSON object per frame on stdout (``--json``), or a table; one ``error`` object per file that
cannot be read. Directories are walked (hidden entries skipped, symlinks not followed). Exit code
0 when every input was read, 1 when some were errors, 2 for usage errors. Never a traceback for
a bad file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from astro_pipeline.cli._app import app
from astro_pipeline.cli._common import console, progress
from astro_pipeline.config import Settings


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def inspect_file(path: Path, extra: dict[str, Any] | None = None, *, settings: Settings) -> list[dict[str, Any]]:
    """Records for every frame of one file (or one error record). Never raises for a bad file."""
    from astro_pipeline.ingest.frame import IngestError
    from astro_pipeline.ingest.quality import assess
    from astro_pipeline.ingest.readers import format_from_name, read_frames

    base = {"path": str(path), "hdu": None, "plane": None, "frame": str(path), "status": "error", "error": None,
            "format": format_from_name(path), "shape": None, "is_display": None, "provenance": None, "metrics": None, "flags": [],
            "notes": []}
    if extra:
        base.update(extra)
    try:
        frames = read_frames(path, max_image_pixels=settings.pixel_limit)
    except IngestError as exc:
        return [dict(base, error=str(exc))]
    except Exception as exc:  # noqa: BLE001 - last line of defence: report, never a traceback
        return [dict(base, error=f"{path}: unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")]
    out = []
    for f in frames:
        rec = dict(base, hdu=f.hdu, plane=f.plane, frame=f.key, format=f.format, shape=list(f.data.shape),
                   is_display=f.is_display, provenance=f.provenance, notes=f.notes, sha256=f.source_sha256)
        try:
            report = assess(f, settings.quality)
        except Exception as exc:  # noqa: BLE001
            rec.update(status="error", error=f"{f.key}: quality assessment failed: {type(exc).__name__}: {exc}")
        else:
            rec.update(status="ok", metrics=report.metrics, flags=[fl.as_dict() for fl in report.flags])
        out.append(_clean(rec))
    return out


def _fmt(v: Any, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def _table(records: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(show_lines=False)
    for col in ("file", "frame", "format", "shape", "bkg", "noise", "snr", "dyn.range", "blank", "sat", "CR",
                "flags / error"):
        t.add_column(col, overflow="fold")
    for r in records:
        loc = ",".join(s for s in (str(r["hdu"]) if r["hdu"] is not None else "",
                                   f"p{r['plane']}" if r["plane"] is not None else "") if s)
        if r["status"] != "ok":
            t.add_row(Path(r["path"]).name, loc, r["format"] or "-", "-", "", "", "", "", "", "", "",
                      f"[red]{r['error']}[/red]")
            continue
        m = r["metrics"]
        t.add_row(Path(r["path"]).name, loc, r["format"], "x".join(map(str, r["shape"])), _fmt(m["background"]),
                  _fmt(m["noise"]), _fmt(m["snr"]), _fmt(m["dynamic_range"]), _fmt(m["blank_fraction"], ".2f"),
                  _fmt(m["saturated_fraction"], ".3f"), _fmt(m["cosmic_ray_fraction"], ".4f"),
                  ", ".join(f["name"] for f in r["flags"]) or "[green]ok[/green]")
    Console(width=200).print(t)


@app.command()
def inspect(
    paths: list[Path] = typer.Argument(None, help="Files or directories (walked; hidden entries skipped)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per frame on stdout."),
    sample: bool = typer.Option(False, "--sample", help="Build (or reuse) the built-in sample and inspect it."),
    mini: bool = typer.Option(False, "--mini", help="With --sample: the small sample."),
) -> None:
    """Read images (FITS, TIF, PNG, JPEG) and report frames, quality metrics and flags."""
    from astro_pipeline.config import get_settings
    from astro_pipeline.ingest.readers import iter_input_files

    settings = get_settings()
    paths = list(paths or [])
    extras: dict[str, dict[str, Any]] = {}
    if mini and not sample:
        console.print("[red]error:[/red] --mini only goes with --sample")
        raise typer.Exit(2)
    if sample:
        from astro_pipeline.sample import build_sample

        with console.status("building the built-in sample" + (" (mini)" if mini else "")):
            index = build_sample(mini=mini, cache_dir=settings.cache_dir)
        console.print(f"sample: {len(index.items)} items under {index.root}")
        for item in index.items:
            p = index.path_of(item)
            paths.append(p)
            extras[str(p)] = {"sample_id": item.id, "expected_flags": item.expected_flags}
    if not paths:
        console.print("[red]error:[/red] give at least one PATH, or --sample (see --help)")
        raise typer.Exit(2)
    files = iter_input_files(paths)
    if not files:
        console.print("[red]error:[/red] no image files found under " + ", ".join(map(str, paths)))
        raise typer.Exit(2)

    records: list[dict[str, Any]] = []
    with progress() as bar:
        task = bar.add_task("inspecting", total=len(files))
        for p in files:
            recs = inspect_file(p, extras.get(str(p)), settings=settings)
            if as_json:
                for r in recs:
                    typer.echo(json.dumps(r, allow_nan=False))
            records.extend(recs)
            bar.advance(task)
    if not as_json:
        _table(records)

    n_err_files = len({r["path"] for r in records if r["status"] != "ok"})
    n_frames = sum(1 for r in records if r["status"] == "ok")
    n_flagged = sum(1 for r in records if r["status"] == "ok" and r["flags"])
    console.print(f"{len(files)} file(s), {n_frames} frame(s) ok, {n_flagged} flagged, {n_err_files} file(s) with errors")
    if extras:
        checked = [r for r in records if "expected_flags" in r and r["status"] == "ok"]
        match = sum(1 for r in checked if sorted(f["name"] for f in r["flags"]) == sorted(r["expected_flags"]))
        console.print(f"sample: {match}/{len(checked)} frames raised exactly their expected flags")
    raise typer.Exit(1 if n_err_files else 0)
