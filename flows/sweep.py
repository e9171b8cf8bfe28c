"""Prefect flows for the archive sweep: ``archive_sweep`` (the watch list) and ``reprocess_region``.

The flow body is a short run of task calls over library functions: list each region's archives
(``planning.listing_requests``; a stalled scraper page is retried, and an archive that still
cannot be listed becomes a ``list_failed`` item while the rest goes on), plan (``planning.plan_run``:
order, dedupe, what is done, budget), map the downloads and the processing over the admitted
items (``steps``; model calls hold the per-worker ``inference:<worker>`` concurrency slot),
compose the same-grid Lupton composites, find the fields across filters and make their colour
products (``steps.field_run``), draw the contact sheet, apply retention, export the
manifests from the catalog, and publish the run's artifacts. Each step is reported to
``astro_pipeline.progress`` subscribers as its futures finish (the CLI draws its progress bar
from these events; Prefect's own per-task lines go to its logs). Downloads are never retried here:
the downloader owns its retries. The catalog decides what is done, so a rerun after a crash
skips finished work.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.tasks import exponential_backoff

from astro_pipeline import planning, steps
from astro_pipeline.archives.listing import ARCHIVES, is_archive_failure, is_retryable, list_archive
from astro_pipeline.catalog import (
    Catalog,
    RunStatus,
    export_cumulative_manifest,
    export_run_manifest,
    refresh_superseded_manifests,
)
from astro_pipeline.config import Region, Settings, get_settings
from astro_pipeline.contact_sheet import round_robin, write_contact_sheet
from astro_pipeline.engines import load_engines, model_versions
from astro_pipeline.fields.result import FieldResult
from astro_pipeline.items import ItemPlan, ItemResult, ItemStatus
from astro_pipeline.products.types import Operation
from astro_pipeline.progress import Stage, SweepTracker
from astro_pipeline.run_report import RunReport, summarise
from flows.common import build_task_runner, ensure_inference_limit, guard_factory, inference_limit_name

__all__ = ["archive_sweep", "reprocess_region", "resolve_settings", "run_sweep"]


def _retry_listing(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a listing only for failures no one else retries (``listing.is_retryable``)."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the failure decides
        return is_retryable(exc)
    return False


_CATALOGS: dict[str, Catalog] = {}
_LIMITS_READY: set[tuple[str, str]] = set()
_LIMITS_LOCK = threading.Lock()


def _ensure_limit_once(name: str) -> None:
    """Create the worker's inference limit once per process and Prefect API."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:  # ephemeral mode: the process-local lock guards (see flows.common.server_configured)
        return
    key = (str(url), name)
    with _LIMITS_LOCK:
        if key not in _LIMITS_READY:
            ensure_inference_limit(name)
            _LIMITS_READY.add(key)


def resolve_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from env/TOML with a flow run's JSON overrides applied (e.g. ``output_dir``)."""
    base = get_settings()
    return base.with_overrides(**overrides) if overrides else base


def open_catalog(settings: Settings) -> Catalog:
    """One catalog per process and URL (SQLAlchemy engines are process-local)."""
    url = settings.catalog_database_url
    cat = _CATALOGS.get(url)
    if cat is None:
        Path(settings.output_dir).mkdir(parents=True, exist_ok=True)
        cat = _CATALOGS[url] = Catalog(url)
    return cat


# ---------------------------------------------------------------------------------- tasks


_LISTING_RETRIES = 3


@task(name="list-archive", cache_policy=NO_CACHE, retries=_LISTING_RETRIES,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
      retry_condition_fn=_retry_listing)
def list_task(request: planning.ListingRequest, settings: Settings) -> planning.Listing:
    """What one archive offers for one region (or its whole list); an archive that cannot be listed
    (after the retries that can help) gives the reason instead, so the rest of the sweep goes on."""
    from prefect.runtime import task_run

    where = f"region {request.region.name}" if request.region is not None else "its whole list"
    try:
        records = list_archive(request.archive, request.region, settings)
    except Exception as exc:
        last_try = not is_retryable(exc) or (task_run.run_count or 1) > _LISTING_RETRIES
        if not (is_archive_failure(exc) and last_try):
            raise  # Prefect retries it, or it is a bug, which must not be hidden
        reason = f"{request.archive} listing of {where} failed: {exc}"
        get_run_logger().error("%s", reason)
        return planning.Listing(request=request, error=reason)
    get_run_logger().info("%s offers %d item(s) for %s", request.archive, len(records), where)
    return planning.Listing(request=request, records=records)


def _listing_outcome(listing: planning.Listing) -> tuple[str, str]:
    """The archive a listing asked, and what it gave, as a progress line says it."""
    request = listing.request
    where = f"region {request.region.name}" if request.region is not None else "its whole list"
    if listing.error is not None:
        return request.archive, f"could not be listed for {where} (the reason is reported at the end)"
    return request.archive, f"offers {len(listing.records)} item(s) for {where}"


@task(name="download", cache_policy=NO_CACHE)
def download_task(plan: ItemPlan, settings: Settings, budget: planning.RunBudget) -> steps.Fetched | ItemResult:
    """Fetch one record, verified; a failure is the item's result (never retried here)."""
    return steps.fetch_item(plan, settings, budget=budget)


@task(name="process", cache_policy=NO_CACHE)
def process_task(plan: ItemPlan, fetched: steps.Fetched | ItemResult, settings: Settings, run_id: str, force: bool,
                 budget: planning.RunBudget) -> ItemResult:
    """Ingest, flag, enhance, write and record one file; model calls hold the worker's inference slot."""
    if isinstance(fetched, ItemResult):  # the download ended the item
        return fetched
    limit_name = inference_limit_name()  # of the machine this task runs on (a Dask worker's own)
    _ensure_limit_once(limit_name)
    engines = load_engines(plan.operation, settings).with_guard(guard_factory(limit_name))
    return steps.process_item(plan, fetched, settings, engines=engines, catalog=open_catalog(settings),
                              run_id=run_id, force=force, budget=budget)


@task(name="compose", cache_policy=NO_CACHE)
def compose_task(items: list[ItemResult], settings: Settings, versions: dict[Operation, dict[str, str]]) -> int:
    """Same-grid Lupton composites of the run's fields (before retention: they read the inputs)."""
    return len(steps.compose_run(open_catalog(settings), items, versions=versions, settings=settings))


@task(name="fields", cache_policy=NO_CACHE)
def field_task(items: list[ItemResult], settings: Settings, versions: dict[Operation, dict[str, str]],
               run_id: str) -> list[FieldResult]:
    """Fields across filters from the run's linear frames: grouped, recorded, aligned, composed
    (before retention: alignment reads the inputs). A field that fails never stops the sweep."""
    limit_name = inference_limit_name()
    _ensure_limit_once(limit_name)
    return steps.field_run(open_catalog(settings), items, versions=versions, settings=settings, run_id=run_id,
                           engines_for=lambda op: load_engines(op, settings).with_guard(guard_factory(limit_name)))


@task(name="contact-sheet", cache_policy=NO_CACHE)
def contact_sheet_task(items: list[ItemResult], settings: Settings, run_id: str) -> str | None:
    """The before/after contact sheet (before retention: it shows each raw input)."""
    path = Path(settings.output_dir) / "manifests" / f"{run_id}_contact.png"
    drawn = write_contact_sheet(round_robin(items), path, max_image_pixels=settings.pixel_limit)
    return str(path) if drawn else None


@task(name="retention", cache_policy=NO_CACHE)
def retention_task(item: ItemResult, settings: Settings) -> ItemResult:
    """Delete a verified item's raw download unless ``keep_raw``; the catalog records it."""
    return steps.apply_retention(item, keep_raw=settings.keep_raw, catalog=open_catalog(settings))


@task(name="manifests", cache_policy=NO_CACHE)
def manifest_task(run_id: str, settings: Settings) -> tuple[str, str, str]:
    """The run's manifest and the cumulative one, exported from the catalog (after retention); the
    manifests of earlier runs whose products this run superseded (``--force``) are re-exported."""
    catalog, out = open_catalog(settings), Path(settings.output_dir)
    parquet, csv = export_run_manifest(catalog, run_id, output_dir=out)
    refresh_superseded_manifests(catalog, run_id, output_dir=out)
    return str(parquet), str(csv), str(export_cumulative_manifest(catalog, output_dir=out))


# ---------------------------------------------------------------------------------- the sweep


def run_sweep(regions: list[Region], settings: Settings, *, flow_name: str, params: dict[str, Any],
              dry_run: bool = False, force: bool = False) -> RunReport:
    """The body both flows share (must run inside a flow): list, plan, fetch, process, compose, report.

    Progress goes to ``astro_pipeline.progress`` subscribers (the CLI's bar) as the futures finish.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    track = SweepTracker()
    catalog = open_catalog(settings)
    versions = _versions_for_planning(settings, dry_run=dry_run)
    requests = planning.listing_requests(regions)
    track.stage(Stage.LISTING, total=len(requests))
    listing_futures = list_task.map(requests, unmapped(settings))
    for future in as_completed(list(listing_futures)):
        track.listed(*_listing_outcome(future.result()))
    listings = [f.result() for f in listing_futures]
    track.stage(Stage.PLANNING)
    budget = planning.RunBudget.from_settings(settings)  # per-run caps here, the free-disk guard per item
    plan = planning.plan_run(regions, listings, catalog=catalog, versions=versions, budget=budget, force=force)
    logger.info("%d item(s) to fetch and process across %d region(s); %d not run (done or over budget)",
                len(plan.admitted), len(regions), len(plan.not_run))
    track.planned(items=len(plan.admitted), not_run=len(plan.not_run))
    if dry_run:
        report = summarise(f"dry-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}", plan.dry_run_items(),
                           output_dir=Path(settings.output_dir), products_dir=None, dry_run=True,
                           wall=time.perf_counter() - started)
        _publish(report)
        track.stage(Stage.FINISHED)
        return report

    run_id = catalog.start_run(flow_name, _jsonable(params))
    work_started = time.perf_counter()
    fetched = download_task.map(plan.admitted, unmapped(settings), unmapped(budget))
    processed = process_task.map(plan.admitted, fetched, unmapped(settings), unmapped(run_id), unmapped(force),
                                 unmapped(budget))
    _follow(track, plan.admitted, list(fetched), list(processed))
    items = plan.sort([*plan.not_run, *(_outcome(p, f) for p, f in zip(plan.admitted, processed, strict=True))])
    work_seconds = time.perf_counter() - work_started
    track.stage(Stage.COMPOSING)
    n_composites = compose_task(items, settings, versions) if versions is not None else 0
    fields = field_task(items, settings, versions, run_id) if versions is not None else []
    track.stage(Stage.CONTACT_SHEET)
    sheet = contact_sheet_task(items, settings, run_id)
    track.stage(Stage.RETENTION)
    items = [f.result() for f in retention_task.map(items, unmapped(settings))]  # after the sheet: it reads inputs
    track.stage(Stage.MANIFESTS)
    parquet, csv, cumulative = manifest_task(run_id, settings)  # after retention: raw_deleted is recorded
    report = summarise(run_id, items, output_dir=Path(settings.output_dir),
                       products_dir=steps.products_dir_for(settings), dry_run=False,
                       wall=time.perf_counter() - started)
    report.work_seconds, report.n_composites, report.contact_sheet = work_seconds, n_composites, sheet
    report.fields = fields
    report.manifest_parquet, report.manifest_csv, report.all_manifest = parquet, csv, cumulative
    failed = sum(report.counts.get(s, 0) for s in (ItemStatus.ERROR, ItemStatus.DOWNLOAD_FAILED, ItemStatus.LIST_FAILED))
    catalog.finish_run(run_id, RunStatus.COMPLETED_WITH_ERRORS if failed else RunStatus.COMPLETED, dict(report.counts))
    _publish(report)
    track.stage(Stage.FINISHED)
    return report


def _follow(track: SweepTracker, plans: list[ItemPlan], fetched: list[PrefectFuture[Any]],
            processed: list[PrefectFuture[ItemResult]]) -> None:
    """Report each download and each processed item as its future finishes (in any order)."""
    label = {id(f): p.label for futures in (fetched, processed) for p, f in zip(plans, futures, strict=True)}
    is_download = {id(f) for f in fetched}
    for future in as_completed([*fetched, *processed]):
        if id(future) in is_download:
            track.downloaded(label[id(future)])
            continue
        try:
            status = str(future.result().status)
        except Exception:  # noqa: BLE001 - a crashed task: ``_outcome`` makes it an error item
            status = str(ItemStatus.ERROR)
        track.processed(label[id(future)], status)


def _outcome(plan: ItemPlan, future: PrefectFuture[ItemResult]) -> ItemResult:
    """A processed item's result; a task that crashed becomes an ``error`` item (the sweep goes on)."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - one bad item never stops the sweep
        return ItemResult.of(plan, ItemStatus.ERROR, error=f"{plan.record.url}: {type(exc).__name__}: {exc}")


def _versions_for_planning(settings: Settings, *, dry_run: bool) -> dict[Operation, dict[str, str]] | None:
    """The run's model versions (what "done" means); a dry run tolerates missing weights."""
    try:
        return model_versions(settings)
    except Exception as exc:  # noqa: BLE001 - a dry run only lists; a real run must have weights
        if not dry_run:
            raise
        get_run_logger().warning("dry run without models (%s): every listed item counts as new", exc)
        return None


def _publish(report: RunReport) -> None:
    """Table artifact of the run manifest and a markdown summary (with the contact-sheet link)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = _manifest_rows(report) or report.summary_rows()
    if rows:
        create_table_artifact(table=rows[:1000], key="sweep-manifest",
                              description=f"Run manifest of {report.run_id} ({len(rows)} row(s))")
    create_markdown_artifact(markdown=report.markdown(), key="sweep-summary", description=f"Summary of {report.run_id}")
    get_run_logger().info("sweep %s: %s", report.run_id, report.counts)


def _manifest_rows(report: RunReport) -> list[dict[str, Any]]:
    if not report.manifest_parquet:
        return []
    import pandas as pd

    df = pd.read_parquet(report.manifest_parquet)
    return [{k: _cell(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if value != value else value
    return str(value)


def _jsonable(params: dict[str, Any]) -> Any:
    from astro_pipeline.jsondata import jsonable

    return jsonable(params)


# ---------------------------------------------------------------------------------- flows

# Deployments pick the runner from the worker's settings at import (env/TOML); the CLI and tests
# choose per call with ``flow.with_options(task_runner=...)``. Settings() here keeps the cache clean.
_RUNNER = build_task_runner(Settings())


@flow(name="archive-sweep", task_runner=_RUNNER, log_prints=True)
def archive_sweep(
    regions: list[Region] | None = None,
    dry_run: bool = False,
    force: bool = False,
    overrides: dict[str, Any] | None = None,
) -> RunReport:
    """Sweep every region on the watch list (``Settings.watch_list``, or ``regions``)."""
    settings = resolve_settings(overrides)
    todo = list(regions or settings.watch_list)
    if not todo:
        raise ValueError(
            "the watch list is empty: add [[watch_list]] regions to astro-pipeline.toml "
            "(name, ra, dec, radius_deg, archives) or pass regions"
        )
    params = {"regions": todo, "dry_run": dry_run, "force": force}
    return run_sweep(todo, settings, flow_name="archive_sweep", params=params, dry_run=dry_run, force=force)


@flow(name="reprocess-region", task_runner=_RUNNER, log_prints=True)
def reprocess_region(
    ra: float,
    dec: float,
    radius_deg: float,
    archives: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    instruments: list[str] | None = None,
    filters: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunReport:
    """The sweep for one region on demand; ``force`` redoes existing products with current weights.

    ``instruments`` / ``filters``: optional criteria (e.g. ``["ACS"]``, ``["F606W"]``).
    """
    settings = resolve_settings(overrides)
    chosen = list(archives or ARCHIVES)
    unknown = sorted(set(chosen) - set(ARCHIVES))
    if unknown:
        raise ValueError(f"unknown archive(s) {unknown}; expected some of {list(ARCHIVES)}")
    region = Region(name=f"ra{ra:.4f}_dec{dec:+.4f}_r{radius_deg:g}", ra=ra, dec=dec, radius_deg=radius_deg,
                    archives=chosen, instruments=list(instruments or []), filters=list(filters or []))
    params = {"ra": ra, "dec": dec, "radius_deg": radius_deg, "archives": chosen, "force": force, "dry_run": dry_run,
              "instruments": region.instruments, "filters": region.filters}
    return run_sweep([region], settings, flow_name="reprocess_region", params=params, dry_run=dry_run, force=force)
