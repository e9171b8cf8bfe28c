"""The fetch commands' report: one row per downloaded (or failed) file, as a table and as JSON rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from astro_pipeline.archives.download import DownloadError
from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
from astro_pipeline.cli._common import console

__all__ = ["download_rows", "print_downloads"]


def download_rows(results: Sequence[DownloadedFile | DownloadError], *, id_field: str) -> list[dict[str, Any]]:
    """One dict per result: file, the record's ``id_field`` (``id`` or ``obs_id``), status, size, sha256,
    detail, credit and licence (failures: the reason)."""
    rows = []
    for res in results:
        rec: ArchiveRecord | None = res.record
        row: dict[str, Any] = {"id": getattr(rec, id_field) if rec else None, "credit": rec.credit if rec else None,
                               "license": rec.license if rec else None}
        if isinstance(res, DownloadError):
            row.update(file=(rec.filename if rec else None) or res.url, status="failed", size=None, sha256=None,
                       detail=res.reason)
        else:
            row.update(file=str(res.path), status="skipped" if res.skipped else "ok", size=res.size, sha256=res.sha256,
                       detail=f"verified: {res.verified_against}")
        rows.append(row)
    return rows


def print_downloads(title: str, rows: list[dict[str, Any]], *, id_header: str) -> dict[str, int]:
    """Print the rows as a table (stderr); returns how many were ok, skipped (already verified) and failed."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("file", id_header, "status", "size", "detail"):
        table.add_column(col)
    for row in rows:
        style = {"failed": "red", "skipped": "dim"}.get(row["status"], "")
        table.add_row(Path(row["file"]).name, row["id"] or "", row["status"],
                      "" if row["size"] is None else f"{row['size']:,}", row["detail"], style=style)
    console.print(table)
    return {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "failed")}
