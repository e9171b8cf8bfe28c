"""The manifest: one row per product, a pure function of catalog rows, written as Parquet and CSV.

Frame products (``product_type`` "frame") come first, then field products ("field": a field's
colour image from its real bands on the field's grid, with ``channels``, its ``members`` and the
``reference_wcs``); a frame's row names the field it belongs to, or why it is in none.

``OUTPUT/manifests/<run_id>.parquet`` (and ``.csv``) after every run, sweep or CLI alike, and
``OUTPUT/manifests/all.parquet`` for the whole catalog. :func:`manifest_frame` builds the table
from :class:`~astro_pipeline.catalog.views.ManifestRow` s alone (it never looks at the file
system), so what the manifest says is what the catalog recorded: ``raw_deleted`` is the
retention the catalog recorded, file paths are the files the products recorded, and a row whose
files a later product replaced says so (``superseded_by``, ``superseded_at``; its sha256 values
are what it wrote, not what is there now). A run that supersedes rows re-exports those runs'
manifests (:func:`refresh_superseded_manifests`). pandas and
DuckDB read both files directly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astro_pipeline.catalog.fields import field_product_views
from astro_pipeline.catalog.queries import manifest_rows
from astro_pipeline.catalog.views import FieldProductView, ManifestRow
from astro_pipeline.fileio import atomic_write
from astro_pipeline.products.types import FileKind, channels_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from astro_pipeline.catalog.store import Catalog

__all__ = ["BASE_COLUMNS", "CATALOG_COLUMNS", "FIELD_COLUMNS", "PRODUCT_KINDS", "catalog_manifest",
           "export_cumulative_manifest", "export_run_manifest", "manifest_frame", "refresh_superseded_manifests"]

#: Product kinds that always get ``<kind>_path`` / ``<kind>_sha256`` columns (others are added when present).
PRODUCT_KINDS: tuple[str, ...] = (FileKind.PNG, FileKind.TIF, FileKind.FITS, FileKind.FITS_FLUX, FileKind.LUPTON)

#: Leading columns, in order.
BASE_COLUMNS: tuple[str, ...] = (
    "run_id", "status", "error", "operation", "source_path", "input_sha256", "hdu", "plane", "frame_key",
    "target", "ra", "dec", "date_obs", "instrument", "filter", "exptime", "bunit", "credit", "license",
)

#: Where the input came from and what curators decided, right after the leading columns.
CATALOG_COLUMNS: tuple[str, ...] = (
    "archive", "archive_id", "obs_id", "source_url", "title", "filters", "raw_path", "raw_deleted", "notes",
    "review_decision", "review_note", "reviewer", "reviewed_at", "product_id", "frame_id", "created_at",
    "updated_at", "superseded_by", "superseded_at",
)

#: What ties a row to a field: the product's kind, its field, and for field products their channels,
#: member frames and reference grid.
FIELD_COLUMNS: tuple[str, ...] = (
    "product_type", "field_id", "field_name", "field_note", "channels", "members", "reference_wcs",
)

_PROV_COLUMNS = ("target", "ra", "dec", "date_obs", "instrument", "filter", "exptime", "bunit", "credit", "license")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _relative(path: Path, output_dir: Path | None) -> str:
    if output_dir is not None:
        try:
            return Path(path).resolve().relative_to(output_dir.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def _row(m: ManifestRow, output_dir: Path | None) -> dict[str, Any]:
    p = m.product
    prov = dict(p.provenance or {})
    quality = p.quality.metrics if p.quality is not None else {}
    flags = [f.as_dict() for f in p.quality.flags] if p.quality is not None else []
    stretch = p.stretch.as_dict() if p.stretch is not None else None
    models = [x.as_dict() for x in p.models]
    row: dict[str, Any] = {
        "run_id": p.run_id, "status": str(p.status), "error": p.error, "operation": str(p.operation),
        "source_path": p.source_path, "input_sha256": p.source_sha256 or None, "hdu": p.hdu, "plane": p.plane,
        "frame_key": p.frame_key,
    }
    known = {"target": m.target, "ra": m.ra, "dec": m.dec, "date_obs": m.date_obs, "instrument": m.instrument,
             "credit": m.credit, "license": m.license}  # the archive record's, where the catalog has one
    for key in _PROV_COLUMNS:
        row[key] = known[key] if known.get(key) is not None else prov.get(key)
    review = m.review
    row.update({
        "archive": m.archive, "archive_id": m.archive_id, "obs_id": m.obs_id, "source_url": m.source_url,
        "title": m.title, "filters": ",".join(m.filters) if m.filters else None, "raw_path": m.raw_path,
        "raw_deleted": m.raw_deleted, "notes": "; ".join(p.notes) if p.notes else None,
        "review_decision": review.decision if review else None, "review_note": review.note if review else None,
        "reviewer": review.reviewer if review else None, "reviewed_at": review.at if review else None,
        "product_id": m.product_id, "frame_id": m.frame_id, "created_at": m.created_at, "updated_at": m.updated_at,
        "superseded_by": m.superseded_by, "superseded_at": m.superseded_at,
        "product_type": "frame", "field_id": m.field_id, "field_name": m.field_name, "field_note": m.field_note,
        "channels": None, "members": None, "reference_wcs": None,
    })
    row.update({
        "provenance": _dumps(prov),
        "stretch_method": stretch["method"] if stretch else None,
        "stretch_vmin": stretch["vmin"] if stretch else None,
        "stretch_vmax": stretch["vmax"] if stretch else None,
        "stretch_asinh_a": stretch["asinh_a"] if stretch else None,
        "stretch": _dumps(stretch),
        "metrics": _dumps(p.metrics or {}),
        "quality_metrics": _dumps(quality) if p.quality is not None else None,
        "flags": ",".join(f["name"] for f in flags),
        "flags_detail": _dumps(flags),
        "tile_count": int(p.tile_count or 0),
        "channels": channels_text(p.channels) if p.channels else None,
        "channels_detail": _dumps([c.as_dict() for c in p.channels]) if p.channels else None,
        "visualisation": p.visualisation,
        "model_names": ";".join(x["name"] for x in models),
        "model_versions": ";".join(x["version"] for x in models),
        "model_sha256": ";".join(x["sha256"] for x in models),
        "models": _dumps(models),
        "params": _dumps(p.params or {}),
    })
    numeric = {f"quality_{k}": v for k, v in quality.items()} | dict(p.metrics or {})
    for name, value in sorted(numeric.items()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            row[f"metric_{name}"] = float(value)
    for kind in sorted(set(PRODUCT_KINDS) | set(p.files)):
        pf = p.files.get(kind)
        row[f"{kind}_path"] = _relative(pf.path, output_dir) if pf is not None else None
        row[f"{kind}_sha256"] = pf.sha256 if pf is not None else None
    return row


def _field_row(v: FieldProductView, output_dir: Path | None) -> dict[str, Any]:
    """A field product's row: its channels, member frames (band frames first) and reference grid."""
    f = v.field
    bands = {b.get("frame_key"): b for b in v.bands}
    members = [{"frame_key": m.frame_key, "file": Path(m.raw_path).name, "input_sha256": m.sha256,
                "archive": m.archive, "instrument": m.instrument, "filter": m.filter, "role": m.role,
                "channel": (bands.get(m.frame_key) or {}).get("channel"), "reference": m.reference, "note": m.note}
               for m in f.members]
    row: dict[str, Any] = {
        "run_id": v.run_id, "status": v.status, "error": v.error, "operation": v.operation,
        "source_path": None, "input_sha256": None, "hdu": None, "plane": None, "frame_key": None,
        "target": (v.bands[0].get("target") if v.bands else None), "ra": f.ra, "dec": f.dec,
        "instrument": ",".join(sorted({str(b.get("instrument")) for b in v.bands if b.get("instrument")})) or None,
        "filter": ",".join(f.filters), "filters": ",".join(f.filters), "notes": "; ".join(v.notes) or None,
        "product_id": v.id, "created_at": v.created_at, "updated_at": v.updated_at,
        "superseded_by": v.superseded_by, "superseded_at": v.superseded_at,
        "product_type": "field", "field_id": f.id, "field_name": f.name, "field_note": f.note,
        "channels": v.channels_text, "members": _dumps(members), "reference_wcs": _dumps(f.grid),
        "channels_detail": _dumps(v.params.get("channels_detail")) if v.params.get("channels_detail") else None,
        "visualisation": bool(v.params.get("visualisation", True)),
        "models": _dumps(v.models), "model_names": ";".join(str(m.get("name")) for m in v.models),
        "model_versions": ";".join(str(m.get("version")) for m in v.models), "params": _dumps(v.params),
        "metrics": _dumps(v.metrics),
    }
    for name, value in sorted(v.metrics.items()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            row[f"metric_{name}"] = float(value)
    for kind, pf in sorted(v.files.items()):
        row[f"{kind}_path"] = _relative(Path(pf.path), output_dir)
        row[f"{kind}_sha256"] = pf.sha256
    return row


def manifest_frame(rows: Sequence[ManifestRow], *, output_dir: str | Path | None = None,
                   field_products: Sequence[FieldProductView] = ()) -> pd.DataFrame:
    """The manifest of these catalog rows (frame products, then field products): a DataFrame,
    product file paths relative to ``output_dir``."""
    import pandas as pd

    out = Path(output_dir) if output_dir is not None else None
    records = [_row(m, out) for m in rows] + [_field_row(v, out) for v in field_products]
    lead = (*BASE_COLUMNS, *CATALOG_COLUMNS, *FIELD_COLUMNS)
    if not records:
        return pd.DataFrame({c: pd.Series(dtype="string") for c in lead})
    frame = pd.DataFrame(records)
    frame = frame[[*lead, *(c for c in frame.columns if c not in lead)]]
    for col in ("product_id", "frame_id", "hdu", "plane", "tile_count", "superseded_by", "field_id"):
        frame[col] = frame[col].astype("Int64")
    for col in ("reviewed_at", "created_at", "updated_at", "superseded_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    frame["raw_deleted"] = frame["raw_deleted"].astype("boolean")
    frame["visualisation"] = frame["visualisation"].astype("boolean")
    for col in frame.columns:  # all-None object columns would become Parquet's null type
        if frame[col].dtype == object:
            frame[col] = frame[col].map(lambda v: v if v is None or isinstance(v, str) else str(v)).astype("string")
    return frame


def catalog_manifest(catalog: Catalog, run_id: str | None = None, *,
                     output_dir: str | Path | None = None) -> pd.DataFrame:
    """The manifest of one run (or of the whole catalog) as a DataFrame."""
    rows, fields = catalog.read(lambda c: (manifest_rows(c, run_id), field_product_views(c, run_id=run_id)))
    return manifest_frame(rows, output_dir=output_dir, field_products=fields)


def _write(frame: pd.DataFrame, path: Path, *, csv: bool) -> Path:
    if csv:
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def export_cumulative_manifest(catalog: Catalog, *, output_dir: str | Path, csv: bool = False) -> Path:
    """Rebuild ``<output_dir>/manifests/all.parquet`` (and ``all.csv`` if asked) from the whole catalog."""
    frame = catalog_manifest(catalog, output_dir=output_dir)
    out = Path(output_dir) / "manifests" / "all.parquet"
    _write(frame, out, csv=False)
    if csv:
        _write(frame, out.with_suffix(".csv"), csv=True)
    return out


def refresh_superseded_manifests(catalog: Catalog, run_id: str, *, output_dir: str | Path) -> list[Path]:
    """Re-export the manifests in ``output_dir`` of the runs whose rows ``run_id`` superseded.

    Their rows now say ``superseded_by``, so no manifest on disk calls a replaced file current.
    Manifests of runs kept elsewhere (another output folder) are not this folder's to rewrite.
    """
    out: list[Path] = []
    for other in catalog.superseded_runs(run_id):
        if (Path(output_dir) / "manifests" / f"{other}.parquet").is_file():
            out.append(export_run_manifest(catalog, other, output_dir=output_dir)[0])
    return out


def export_run_manifest(catalog: Catalog, run_id: str, *, output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<output_dir>/manifests/<run_id>.parquet`` and ``.csv`` from the catalog's rows of one run."""
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise ValueError(f"bad run id {run_id!r}")
    frame = catalog_manifest(catalog, run_id, output_dir=output_dir)
    folder = Path(output_dir) / "manifests"
    return _write(frame, folder / f"{run_id}.parquet", csv=False), _write(frame, folder / f"{run_id}.csv", csv=True)
