"""Per-run manifest built from :class:`~astro_pipeline.products.Product` records, no database needed.

Why: every run leaves ``<output dir>/manifests/<run_id>.parquet`` and ``.csv``, one row per input
frame (failed ones included) saying what was made from what, with which models and parameters.
Column names match the catalog's export (``astro_pipeline.catalog.export``), which extends them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from astro_pipeline.fileio import atomic_write

__all__ = ["BASE_COLUMNS", "PRODUCT_KINDS", "manifest_columns", "manifest_frame", "write_run_manifest"]

#: Product kinds that always get ``<kind>_path`` / ``<kind>_sha256`` columns (others are added when present).
PRODUCT_KINDS: tuple[str, ...] = ("png", "tif", "fits", "fits_flux", "lupton")

#: Leading columns, in order.
BASE_COLUMNS: tuple[str, ...] = (
    "run_id", "status", "error", "operation", "source_path", "input_sha256", "hdu", "plane", "frame_key",
    "target", "ra", "dec", "date_obs", "instrument", "filter", "exptime", "bunit", "credit", "license",
)

_PROV_COLUMNS = ("target", "ra", "dec", "date_obs", "instrument", "filter", "exptime", "bunit", "credit", "license")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _relative(path: Path, output_dir: Path | None) -> str:
    p = Path(path)
    if output_dir is not None:
        try:
            return p.resolve().relative_to(Path(output_dir).resolve()).as_posix()
        except ValueError:
            pass
    return str(p)


def manifest_columns(product: Any, *, output_dir: Path | str | None = None) -> dict[str, Any]:
    """One flat manifest row for a product (file paths relative to ``output_dir`` when given)."""
    prov = dict(product.provenance or {})
    stretch = product.stretch or {}
    metrics = product.metrics or {}
    models = product.models or []
    row: dict[str, Any] = {
        "run_id": product.run_id,
        "status": product.status,
        "error": product.error,
        "operation": product.operation,
        "source_path": product.source_path,
        "input_sha256": product.source_sha256 or None,
        "hdu": product.hdu,
        "plane": product.plane,
        "frame_key": product.frame_key,
    }
    for key in _PROV_COLUMNS:
        row[key] = prov.get(key)
    row.update({
        "provenance": _dumps(prov),
        "stretch_method": stretch.get("method"),
        "stretch_vmin": stretch.get("vmin"),
        "stretch_vmax": stretch.get("vmax"),
        "stretch_asinh_a": stretch.get("asinh_a"),
        "stretch": _dumps(product.stretch),
        "metrics": _dumps(metrics),
        "flags": ",".join(str(f.get("name")) for f in (product.flags or []) if isinstance(f, dict)),
        "flags_detail": _dumps(product.flags or []),
        "tile_count": int(product.tile_count or 0),
        "model_names": ";".join(str(m.get("name", "")) for m in models),
        "model_versions": ";".join(str(m.get("version", "")) for m in models),
        "model_sha256": ";".join(str(m.get("sha256", "")) for m in models),
        "models": _dumps(models),
        "params": _dumps(product.params or {}),
    })
    for name, value in sorted(metrics.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[f"metric_{name}"] = float(value)
    files = dict(product.files or {})
    for kind in sorted(set(PRODUCT_KINDS) | set(files)):
        pf = files.get(kind)
        exists = pf is not None and Path(pf.path).is_file()
        row[f"{kind}_path"] = _relative(pf.path, Path(output_dir) if output_dir else None) if exists else None
        row[f"{kind}_sha256"] = pf.sha256 if exists else None
    return row


def manifest_frame(products: Iterable[Any], *, output_dir: Path | str | None = None,
                   extra: dict[str, dict[str, Any]] | None = None) -> Any:
    """A pandas DataFrame of manifest rows; ``extra`` adds/overrides columns per source path."""
    import pandas as pd

    rows = []
    for p in products:
        row = manifest_columns(p, output_dir=output_dir)
        more = (extra or {}).get(str(Path(p.source_path))) or (extra or {}).get(p.source_path)
        if more:
            row.update(more)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=list(BASE_COLUMNS))
    ordered = [c for c in BASE_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in BASE_COLUMNS]
    frame = frame[ordered]
    for col in ("hdu", "plane", "tile_count"):
        if col in frame.columns:
            frame[col] = frame[col].astype("Int64")
    for col in frame.columns:  # keep object columns homogeneous for parquet (str or null)
        if frame[col].dtype == object:
            frame[col] = frame[col].map(lambda v: v if v is None or isinstance(v, str) else _scalar_text(v))
    return frame


def _scalar_text(v: Any) -> Any:
    if isinstance(v, float) and v != v:  # NaN stays null
        return None
    if isinstance(v, (dict, list, tuple)):
        return _dumps(v)
    return str(v)


def write_run_manifest(products: Iterable[Any], *, output_dir: Path | str, run_id: str,
                       extra: dict[str, dict[str, Any]] | None = None) -> tuple[Path, Path]:
    """Write ``<output_dir>/manifests/<run_id>.parquet`` and ``.csv`` atomically; return both paths."""
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise ValueError(f"bad run id {run_id!r}")
    output_dir = Path(output_dir)
    folder = output_dir / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    frame = manifest_frame(products, output_dir=output_dir, extra=extra)
    parquet, csv = folder / f"{run_id}.parquet", folder / f"{run_id}.csv"
    atomic_write(parquet, lambda tmp: frame.to_parquet(tmp, index=False))
    atomic_write(csv, lambda tmp: frame.to_csv(tmp, index=False))
    return parquet, csv
