"""Prefect flows for the archive sweep: ``archive_sweep`` (the watch list) and ``reprocess_region``.

Thin wiring of :mod:`astro_pipeline.pipeline`: list each region's archives (network tasks retry
with backoff), keep what the catalog lacks, download, process (model calls guarded by the
per-worker ``inference:<worker>`` concurrency limit), record into the catalog, then write the
manifests, the contact sheet and the run's artifacts. The catalog decides what is done, so a
rerun after a crash skips finished work.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.tasks import exponential_backoff

from astro_pipeline import pipeline
from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
from astro_pipeline.config import Region, Settings, get_settings
from flows.common import build_task_runner, ensure_inference_limit, guard_factory, inference_limit_name

__all__ = ["archive_sweep", "reprocess_region", "resolve_settings", "run_sweep"]



def _is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry network trouble, not programming errors (a missing module or a bad argument)."""
    try:
        state.result()
    except (ImportError, TypeError, AttributeError, NameError, NotImplementedError):
        return False
    except Exception:  # noqa: BLE001 - anything else (HTTP, timeouts, DownloadError) is retried
        return True
    return True


_RETRY: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _is_transient,
}
_CATALOGS: dict[str, Any] = {}
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


def open_catalog(settings: Settings) -> Any:
    """One catalog per process and URL (SQLAlchemy engines are process-local)."""
    from astro_pipeline.catalog import Catalog

    url = settings.catalog_database_url
    cat = _CATALOGS.get(url)
    if cat is None:
        Path(settings.output_dir).mkdir(parents=True, exist_ok=True)
        cat = _CATALOGS[url] = Catalog(url, settings=settings)
    return cat


# ---------------------------------------------------------------------------------- tasks


#: Archive failures a listing reports (after its retries) instead of failing the sweep.
_LISTING_ERRORS = ("MastError", "ScrapeError", "BrowserNotFoundError", "DownloadError")


@task(name="list-archive", cache_policy=NO_CACHE, **_RETRY)
def list_task(archive: str, region: Region, settings: Settings) -> list[ArchiveRecord] | str:
    """What one archive offers for one region (retried with exponential backoff).

    An archive that still fails on the last try returns the reason (a str) instead of raising,
    so the rest of the sweep goes on and the report names the archive, the region and why.
    """
    from prefect.runtime import task_run

    try:
        records = pipeline.list_archive(archive, region, settings)
    except Exception as exc:
        if type(exc).__name__ not in _LISTING_ERRORS or (task_run.run_count or 1) <= _RETRY["retries"]:
            raise  # Prefect retries it (or it is a bug, which must not be hidden)
        reason = f"{archive} listing of region {region.name} failed: {exc}"
        get_run_logger().error("%s", reason)
        return reason
    get_run_logger().info("%s offers %d item(s) for region %s", archive, len(records), region.name)
    return records


@task(name="download", cache_policy=NO_CACHE, **_RETRY)
def download_task(
    plan: pipeline.ItemPlan, settings: Settings, budget: pipeline.RunBudget
) -> pipeline.Fetched | pipeline.ItemResult:
    """Fetch one record, verified (retried with exponential backoff on ``DownloadError``)."""
    t0 = time.perf_counter()
    out = pipeline.download_item(plan, settings, budget=budget)
    if isinstance(out, DownloadedFile):
        return pipeline.Fetched(file=out, seconds=time.perf_counter() - t0)
    return out


@task(name="process", cache_policy=NO_CACHE)
def process_task(
    plan: pipeline.ItemPlan,
    fetched: pipeline.Fetched,
    settings: Settings,
    run_id: str,
    force: bool,
    budget: pipeline.RunBudget,
) -> pipeline.ItemResult:
    """Ingest, flag, enhance and write products for one file; model calls hold the worker's slot.

    Raw-file retention runs at the end of the sweep, after the contact sheet is drawn.
    """
    limit_name = inference_limit_name()  # of the machine this task runs on (a Dask worker's own)
    _ensure_limit_once(limit_name)
    models = pipeline.load_models(settings).with_guard(guard_factory(limit_name))
    result = pipeline.process_item(
        plan, fetched.file, settings, models=models, catalog=open_catalog(settings), run_id=run_id,
        force=force, budget=budget,
    )
    result.timings["download"] = fetched.seconds
    return result


# ---------------------------------------------------------------------------------- the sweep


def run_sweep(
    regions: list[Region],
    settings: Settings,
    *,
    flow_name: str,
    params: dict[str, Any],
    dry_run: bool = False,
    force: bool = False,
) -> pipeline.RunReport:
    """The body both flows share (must run inside a flow): list, select, fetch, process, report."""
    logger = get_run_logger()
    started = time.perf_counter()
    catalog = open_catalog(settings)
    run_id = (
        f"dry-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}" if dry_run
        else catalog.start_run(flow_name, _jsonable(params))
    )
    models = _models_for_planning(settings, dry_run=dry_run)

    # 1. list: one task per (region, archive); ESA/Hubble has no position query, so list it once.
    list_futures: dict[tuple[str, str], Any] = {}
    esa_region = Region(name="esahubble-all", ra=0.0, dec=0.0, radius_deg=180.0)
    for region in regions:
        for archive in region.archives:
            key = ("*", archive) if archive == "esahubble" else (region.name, archive)
            if key not in list_futures:
                list_futures[key] = list_task.submit(archive, esa_region if archive == "esahubble" else region, settings)
    listings: list[tuple[str, list[ArchiveRecord]]] = []
    items: list[pipeline.ItemResult] = []
    for region in regions:
        records: list[ArchiveRecord] = []
        for archive in region.archives:
            key = ("*", archive) if archive == "esahubble" else (region.name, archive)
            got = list_futures[key].result()
            if isinstance(got, str):  # the archive could not be listed: report it, sweep the rest
                items.append(pipeline.ItemResult(key=f"list:{region.name}:{archive}", archive=archive,
                                                 record_id="(listing)", region=region.name, operation="list",
                                                 status="list_failed", error=got))
                continue
            records.extend(r for r in got if archive != "esahubble" or pipeline.in_region(r, region))
        listings.append((region.name, records))
    done: list[pipeline.ItemPlan] = []
    plans = pipeline.plan_items(listings, catalog, models=models, force=force, done=done)
    items.extend(pipeline.ItemResult.from_plan(p, "already_done") for p in done)
    logger.info("%d item(s) to fetch and process across %d region(s); %d already done",
                len(plans), len(regions), len(done))

    # 2. operator caps: files and bytes per run (declared sizes), then the free-disk guard per item.
    budget = pipeline.RunBudget.from_settings(settings)
    admitted: list[pipeline.ItemPlan] = []
    for plan in plans:
        decision = budget.admit(plan.record)
        if decision.admitted:
            admitted.append(plan)
        else:
            items.append(pipeline.ItemResult.from_plan(plan, decision.status, decision.reason))

    if dry_run:
        items = [pipeline.ItemResult.from_plan(p, "planned") for p in admitted] + items
        report = pipeline.finalize_run(items, settings, run_id=run_id, catalog=None, dry_run=True, started=started)
        _publish(report, settings)
        return report

    # 3. fetch and process: downloads run ahead, each file is processed as soon as it lands.
    work_started = time.perf_counter()
    by_future = {download_task.submit(p, settings, budget): p for p in admitted}
    process_futures = []
    for fut in as_completed(list(by_future)):
        plan = by_future[fut]
        try:
            got = fut.result()
        except Exception as exc:  # noqa: BLE001 - retries exhausted: record the failure, go on
            items.append(pipeline.ItemResult.from_plan(plan, "download_failed", _describe(exc)))
            continue
        if isinstance(got, pipeline.ItemResult):
            items.append(got)
            continue
        process_futures.append(
            (plan, process_task.submit(plan, got, settings, run_id, force, budget))
        )
    for plan, fut in process_futures:
        try:
            items.append(fut.result())
        except Exception as exc:  # noqa: BLE001 - one bad item never stops the sweep
            items.append(pipeline.ItemResult.from_plan(plan, "error", f"{plan.record.url}: {_describe(exc)}"))
    work_seconds = time.perf_counter() - work_started

    # 4. manifests, contact sheet, catalog run record, artifacts.
    order = {p.key: i for i, p in enumerate(plans)}
    items.sort(key=lambda it: order.get(it.key, len(order)))
    report = pipeline.finalize_run(items, settings, run_id=run_id, catalog=catalog, started=started)
    report.work_seconds = work_seconds
    # retention last, so the contact sheet could still show each raw input
    for it in report.items:
        pipeline.apply_retention(it, keep_raw=settings.keep_raw)
    failed = sum(report.counts.get(s, 0) for s in ("error", "download_failed", "list_failed"))
    catalog.finish_run(run_id, "completed" if not failed else "completed_with_errors", dict(report.counts))
    _publish(report, settings)
    return report


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _models_for_planning(settings: Settings, *, dry_run: bool) -> pipeline.LoadedModels | None:
    """The run's models (needed to ask the catalog what is done); a dry run tolerates none."""
    try:
        return pipeline.load_models(settings)
    except Exception as exc:  # noqa: BLE001 - a dry run only lists; a real run must have weights
        if not dry_run:
            raise
        get_run_logger().warning("dry run without models (%s): every listed item counts as new", exc)
        return None


def _publish(report: pipeline.RunReport, settings: Settings) -> None:
    """Table artifact of the run manifest and a markdown summary (with the contact-sheet link)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = _manifest_rows(report) or report.summary_rows()
    if rows:
        create_table_artifact(
            table=rows[:1000], key="sweep-manifest",
            description=f"Run manifest of {report.run_id} ({len(rows)} row(s))",
        )
    create_markdown_artifact(markdown=report.markdown(), key="sweep-summary",
                             description=f"Summary of {report.run_id}")
    get_run_logger().info("sweep %s: %s", report.run_id, report.counts)


def _manifest_rows(report: pipeline.RunReport) -> list[dict[str, Any]]:
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    return value


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
) -> pipeline.RunReport:
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
) -> pipeline.RunReport:
    """The sweep for one region on demand; ``force`` redoes existing products with current weights.

    ``instruments`` / ``filters``: optional criteria (e.g. ``["ACS"]``, ``["F606W"]``).
    """
    settings = resolve_settings(overrides)
    chosen = list(archives or pipeline.ARCHIVES)
    unknown = sorted(set(chosen) - set(pipeline.ARCHIVES))
    if unknown:
        raise ValueError(f"unknown archive(s) {unknown}; expected some of {list(pipeline.ARCHIVES)}")
    region = Region(name=f"ra{ra:.4f}_dec{dec:+.4f}_r{radius_deg:g}", ra=ra, dec=dec, radius_deg=radius_deg,
                    archives=chosen, instruments=list(instruments or []), filters=list(filters or []))
    params = {"ra": ra, "dec": dec, "radius_deg": radius_deg, "archives": chosen, "force": force, "dry_run": dry_run,
              "instruments": region.instruments, "filters": region.filters}
    return run_sweep([region], settings, flow_name="reprocess_region", params=params, dry_run=dry_run, force=force)
