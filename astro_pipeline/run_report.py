"""What a sweep did: counts per status and flag, time per stage, where its outputs are; as Markdown too."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astro_pipeline.fields.result import FieldResult, FieldStatus
from astro_pipeline.items import ItemResult, ItemStatus

__all__ = ["RunReport", "short_id", "summarise"]


@dataclass(kw_only=True)
class RunReport:
    """What a sweep did: counts, time per stage, and where its outputs are."""

    run_id: str
    output_dir: str
    dry_run: bool
    items: list[ItemResult]
    counts: dict[str, int]
    flag_counts: dict[str, int]
    stage_seconds: dict[str, float]
    wall_seconds: float = 0.0
    work_seconds: float = 0.0  # wall time of the fetch+process phase only (steady state, no start-up)
    manifest_parquet: str | None = None
    manifest_csv: str | None = None
    all_manifest: str | None = None
    contact_sheet: str | None = None
    products_dir: str | None = None
    n_products: int = 0
    n_composites: int = 0
    fields: list[FieldResult] = field(default_factory=list)  # fields across filters and their products

    @property
    def n_field_products(self) -> int:
        return sum(1 for f in self.fields if f.status is FieldStatus.COMPOSED)

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per item: the short table the CLI prints and the flow publishes."""
        return [{
            "item": f"{it.archive}:{short_id(it.record_id)}",
            "region": it.region,
            "operation": str(it.operation) if it.operation is not None else "list",
            "status": str(it.status),
            "flags": ",".join(it.flags),
            "products": len(it.products),
            "seconds": round(sum(it.timings.values()), 2),
            "error": (it.error or "")[:200],
        } for it in self.items]

    def markdown(self) -> str:
        """Markdown summary: counts per status and flag, time per stage, and the contact sheet."""
        lines = [f"# Sweep {self.run_id}{' (dry run)' if self.dry_run else ''}", ""]
        lines += ["| status | items |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.counts.items()]
        lines += ["", "| flag | items |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(self.flag_counts.items())] or ["| (none) | 0 |"]
        lines += ["", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in sorted(self.stage_seconds.items())]
        lines += ["", f"Wall time: {self.wall_seconds:.1f} s; products: {self.n_products}; "
                      f"Lupton composites: {self.n_composites}"]
        if self.fields:
            lines += ["", "| field | filters | status | channels | colour image | note |", "|---|---|---|---|---|---|"]
            lines += [f"| {f.name} | {', '.join(f.filters)} | {f.status} | {f.channels or ''} | "
                      f"{Path(f.files['png'].path).name if 'png' in f.files else ''} | "
                      f"{(f.note or '').replace('|', '/')} |" for f in self.fields]
        if self.manifest_parquet:
            lines += [f"Manifest: `{self.manifest_parquet}` (CSV: `{self.manifest_csv}`)"]
        if self.all_manifest:
            lines += [f"Cumulative manifest: `{self.all_manifest}`"]
        if self.contact_sheet:
            uri = Path(self.contact_sheet).resolve().as_uri()
            lines += [f"Before/after contact sheet: [{Path(self.contact_sheet).name}]({uri})"]
        return "\n".join(lines) + "\n"


def short_id(record_id: str) -> str:
    """A readable item id: the last path part of a URI-like archive id."""
    tail = record_id.rsplit("/", 1)[-1]
    return tail or record_id


def summarise(run_id: str, items: Sequence[ItemResult], *, output_dir: Path, products_dir: Path | None,
              dry_run: bool, wall: float) -> RunReport:
    """Counts per status (in :class:`ItemStatus` order) and flag, and seconds per stage summed over items."""
    counts = Counter(it.status for it in items)
    flag_counts: Counter[str] = Counter()
    stages: dict[str, float] = {}
    for it in items:
        flag_counts.update(it.flags)
        for k, v in it.timings.items():
            stages[k] = stages.get(k, 0.0) + v
    return RunReport(
        run_id=run_id, output_dir=str(output_dir), dry_run=dry_run, items=list(items),
        counts={str(s): counts[s] for s in ItemStatus if counts.get(s)}, flag_counts=dict(flag_counts),
        stage_seconds=stages, wall_seconds=wall, products_dir=str(products_dir) if products_dir else None,
        n_products=sum(len(it.products) for it in items),
    )
