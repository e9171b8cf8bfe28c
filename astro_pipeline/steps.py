"""The sweep's item steps: fetch one planned item, process and record it, compose, apply retention.

Each step takes typed inputs and returns typed results, so a flow is only the wiring between them
(``flows/sweep.py``) and a test can call each step directly. Processing and recording go through
the same library functions as the ``colorize``/``upscale``/``enhance`` commands
(``astro_pipeline.processing``). Nothing here imports Prefect.

Order of one item: ``ItemPlan`` -> :func:`fetch_item` (verified file) -> :func:`process_item`
(products, catalog rows) -> ``ItemResult``; then for the run :func:`compose_run`, :func:`field_run`
(fields across filters), the contact sheet, :func:`apply_retention`, and the manifest export
from the catalog (``run_report``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from astro_pipeline.archives.download import DownloadError, Downloader
from astro_pipeline.archives.records import DownloadedFile
from astro_pipeline.catalog import Catalog
from astro_pipeline.composition import BandCompletion, find_band_completion
from astro_pipeline.config import Settings
from astro_pipeline.engines import Engines
from astro_pipeline.fields.align import FieldRefused, align_field, check_field_memory
from astro_pipeline.fields.compose import compose_field
from astro_pipeline.fields.grouping import FieldPlan, MemberRole
from astro_pipeline.fields.products import field_product_key, write_field_product
from astro_pipeline.fields.result import FieldProduct, FieldResult, FieldStatus
from astro_pipeline.fileio import sha256_file
from astro_pipeline.items import ItemPlan, ItemResult, ItemStatus
from astro_pipeline.memory import reserve
from astro_pipeline.planning import RunBudget
from astro_pipeline.processing import compose_recorded, group_recorded, process_input
from astro_pipeline.products.composites import Composite
from astro_pipeline.products.types import Operation, ProductFile, ProductStatus

__all__ = ["LINEAR_ARCHIVES", "Fetched", "StageTimer", "apply_retention", "compose_run", "fetch_item", "field_run",
           "process_item", "products_dir_for", "raw_dir_for"]

#: Archives whose FITS frames are linear science data, the members of fields (ESA/Hubble's are display images).
LINEAR_ARCHIVES: frozenset[str] = frozenset({"mast", "hla"})


def raw_dir_for(settings: Settings) -> Path:
    """Where raw downloads live: ``<output>/raw``."""
    return Path(settings.output_dir) / "raw"


def products_dir_for(settings: Settings) -> Path:
    """Where products are written: ``<output>/products``."""
    return Path(settings.output_dir) / "products"


class StageTimer:
    """Accumulates wall time per named stage: ``with timer("download"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + float(seconds)


@dataclass(frozen=True)
class Fetched:
    """A verified download and the seconds it took (about 0 when an existing file was reused)."""

    file: DownloadedFile
    seconds: float


def fetch_item(plan: ItemPlan, settings: Settings, *, budget: RunBudget) -> Fetched | ItemResult:
    """Fetch one record into ``<output>/raw/<archive>/`` (verified; reused when already complete).

    Returns the download, or the item's result when it ends here: ``low_disk`` when the free-disk
    guard stops the run, ``download_failed`` naming the error when the downloader (which alone
    retries) gave up. The downloader's HTTP sessions are closed before returning; the per-host
    gate is the process's (``archives.download.host_gate``).
    """
    decision = budget.disk_ok()
    if not decision.admitted:
        return ItemResult.of(plan, decision.status, error=decision.reason)
    t0 = time.perf_counter()
    try:
        with Downloader(settings) as downloader:
            got = downloader.fetch(plan.record, raw_dir_for(settings) / plan.record.archive)
    except DownloadError as exc:
        return ItemResult.of(plan, ItemStatus.DOWNLOAD_FAILED, error=f"{type(exc).__name__}: {exc}",
                             timings={"download": time.perf_counter() - t0})
    return Fetched(file=got, seconds=time.perf_counter() - t0)


def process_item(plan: ItemPlan, fetched: Fetched, settings: Settings, *, engines: Engines, catalog: Catalog,
                 run_id: str, force: bool, budget: RunBudget) -> ItemResult:
    """Ingest, flag, stretch, tile, enhance and write products for one file; record it all.

    Content the planner could not know (no published checksum, never fetched before) is checked
    against the catalog now: ``skipped_done`` when its products exist for the current model
    versions (unless ``force``). Never raises for a bad file: its products carry
    ``status="error"`` naming the file and the problem, and the item is ``error`` (or
    ``partial`` when only some frames failed).
    """
    timer = StageTimer()
    timer.add("download", fetched.seconds)
    got = fetched.file
    result = ItemResult.of(plan, ItemStatus.OK, raw_path=str(got.path), sha256=got.sha256, size=got.size,
                           timings=timer.seconds)
    if not force and got.sha256 != plan.known_sha256:
        with timer("catalog"):
            if catalog.is_done(got.sha256, engines.versions_for(plan.operation), None, operation=plan.operation):
                catalog.upsert_file(got, run_id=run_id)  # the same bytes, from this record, back at this path
                result.status = ItemStatus.SKIPPED_DONE
                return result
    decision = budget.disk_ok()
    if not decision.admitted:
        result.status, result.error = decision.status, decision.reason
        return result
    engines.take_inference_seconds()
    t0 = time.perf_counter()
    processed = process_input(got.path, operation=plan.operation, engines=engines, output_dir=products_dir_for(settings),
                              quality=settings.quality, max_image_pixels=settings.pixel_limit,
                              memory_budget=settings.memory_budget_bytes, catalog=catalog,
                              run_id=run_id, input_root=raw_dir_for(settings), downloaded=got)
    total = time.perf_counter() - t0
    engine_s, model_s, tiles = engines.take_inference_seconds()
    timer.add("model", model_s)
    timer.add("tiling", max(0.0, engine_s - model_s))
    timer.add("ingest+write", max(0.0, total - engine_s))  # recording the products included
    result.tiles = tiles
    result.products = list(processed.products)
    failed = processed.failed
    if failed:
        result.status = ItemStatus.ERROR if len(failed) == len(processed.products) else ItemStatus.PARTIAL
        result.error = "; ".join(str(p.error) for p in failed)
    return result


def compose_run(catalog: Catalog, items: Sequence[ItemResult], *, versions: dict[Operation, dict[str, str]],
                settings: Settings) -> list[Composite]:
    """Same-grid Lupton composites for the fields of this run's inputs (``processing.compose_recorded``)."""
    out: list[Composite] = []
    for op in sorted({it.operation for it in items if it.operation is not None}):
        shas = [it.sha256 for it in items if it.operation == op and it.sha256]
        out += compose_recorded(catalog, shas, operation=op, models=versions[op],
                                max_image_pixels=settings.pixel_limit)
    return out


def field_run(catalog: Catalog, items: Sequence[ItemResult], *, versions: dict[Operation, dict[str, str]],
              settings: Settings, run_id: str,
              engines_for: Callable[[Operation], Engines] | None = None) -> list[FieldResult]:
    """Group the run's linear science frames (MAST, HLA) into fields and record them; refuse the
    fields over the memory budget (``memory_budget``) or ``fields.max_grid_pixels``, with their
    estimate; align the rest
    with ``reproject``, compose each into one colour product (4x too where the operation upscales)
    and record it. A field whose product is done (same key, files there) is not made again. The
    rest of the run goes on whatever a field does."""
    out: list[FieldResult] = []
    band_model = None  # the installed band-completion model, looked up once, where a field has two slots
    looked_up = False
    for op in sorted({it.operation for it in items if it.operation is not None}):
        shas = [it.sha256 for it in items if it.operation == op and it.sha256 and it.archive in LINEAR_ARCHIVES]
        grouping, ids = group_recorded(catalog, shas, operation=op, models=versions[op],
                                       min_overlap=settings.fields.min_overlap, run_id=run_id)
        for plan in grouping.fields:
            result = FieldResult(key=plan.key, name=plan.name, filters=plan.filters, status=FieldStatus.GROUPED,
                                 field_id=ids.get(plan.key),
                                 left_out=[m.note for m in plan.members if m.note is not None])
            try:
                estimate = check_field_memory(plan, max_grid_pixels=settings.fields.max_grid_pixels,
                                              upscale=4 if op.upscales else 1,
                                              budget_bytes=settings.memory_budget_bytes)
            except FieldRefused as exc:
                result.status, result.note = FieldStatus.REFUSED, str(exc)
                if result.field_id is not None:
                    catalog.record_field_status(result.field_id, FieldStatus.REFUSED, str(exc), run_id=run_id)
                out.append(result)
                continue
            if result.field_id is not None:
                if not looked_up:
                    band_model, looked_up = find_band_completion(settings), True
                with reserve(estimate.total, what=f"field {plan.name}", budget=settings.memory_budget_bytes):
                    _make_field_product(catalog, plan, result, operation=op, settings=settings, run_id=run_id,
                                        engines_for=engines_for, band_model=band_model)
            out.append(result)
    return out


def _make_field_product(catalog: Catalog, plan: FieldPlan, result: FieldResult, *, operation: Operation,
                        settings: Settings, run_id: str, engines_for: Callable[[Operation], Engines] | None,
                        band_model: BandCompletion | None) -> None:
    """Align, compose (``compose_bands``, through ``fields.compose``), write and record one field's
    product; a failure is the field's, with why."""
    from astro_pipeline.engines import load_engines

    t0 = time.perf_counter()
    field_id = result.field_id
    assert field_id is not None
    engines = (engines_for or (lambda op: load_engines(op, settings)))(operation) if operation.upscales else Engines()
    upscaler = engines.upscaler
    models = engines.models(operation) if operation.upscales else ()
    models = tuple(m for m in models if upscaler is not None and m.name == upscaler.meta.name)
    key = field_product_key(plan, operation=operation,
                            models=models + ((band_model.model,) if band_model is not None else ()))
    if catalog.field_product_done(key):
        done = [v for v in catalog.field_products(field_ids=[field_id]) if v.key == key]
        if done and done[-1].files and all(Path(f.path).is_file() for f in done[-1].files.values()):
            result.status = FieldStatus.COMPOSED
            result.files = {k: ProductFile(path=Path(f.path), sha256=f.sha256) for k, f in done[-1].files.items()}
            result.seconds = time.perf_counter() - t0
            return
    try:
        aligned = align_field(plan, max_image_pixels=settings.pixel_limit, order=settings.fields.reproject_order)
        for member, why in aligned.failed:
            catalog.set_field_member_role(field_id, member.product, MemberRole.FAILED, why)
            result.left_out.append(why)
        composed = compose_field(aligned, quality=settings.quality, band_model=band_model)
        product = write_field_product(aligned, composed, operation=operation, products_dir=products_dir_for(settings),
                                      run_id=run_id, upscaler=upscaler, models=models, key=key)
    except Exception as exc:  # noqa: BLE001 - one field that fails never stops the sweep
        msg = f"field {plan.name}: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
        catalog.record_field_product(field_id, FieldProduct(
            key=key, field_key=plan.key, field_name=plan.name, run_id=run_id, operation=operation,
            status=ProductStatus.ERROR, error=msg, models=models))
        catalog.record_field_status(field_id, FieldStatus.FAILED, msg, run_id=run_id)
        result.status, result.note = FieldStatus.FAILED, msg
        result.seconds = time.perf_counter() - t0
        return
    catalog.record_field_product(field_id, product)
    result.status, result.files = FieldStatus.COMPOSED, dict(product.files)
    result.channels = composed.channels_text
    result.seconds = time.perf_counter() - t0


def _products_verified(result: ItemResult) -> bool:
    """True when every product file of the item exists with its recorded sha256."""
    return bool(result.products) and all(
        Path(pf.path).is_file() and sha256_file(pf.path) == pf.sha256
        for product in result.products for pf in product.files.values())


def apply_retention(result: ItemResult, *, keep_raw: bool, catalog: Catalog) -> ItemResult:
    """Delete the raw download once its products are verified, unless ``keep_raw``; record it.

    The catalog records the deletion (the manifest's ``raw_deleted``); the manifest keeps
    ``raw_path``, which then names a deleted file, so provenance survives.
    """
    if keep_raw or result.raw_path is None or result.status not in (ItemStatus.OK, ItemStatus.SKIPPED_DONE):
        return result
    if result.status is ItemStatus.OK and not _products_verified(result):
        return result
    raw = Path(result.raw_path)
    raw.unlink(missing_ok=True)
    if result.sha256:
        catalog.record_raw_deleted(result.sha256)
    result.raw_deleted = True
    return result
