"""The sweep, one item at a time: list, select what the catalog lacks, download, process, record.

These are the library functions the Prefect flows in ``flows/`` (and the CLI) compose. Each one
takes typed inputs and returns typed results, so a flow is only the wiring between them and a
test can call each step directly. Nothing here imports Prefect or ``flows/``.

Order of one item: ``ArchiveRecord`` -> :func:`download_item` (verified file) ->
:func:`process_item` (ingest, quality flags, stretch, tiles, colorize + 4x, products, catalog)
-> :class:`ItemResult` -> one or more manifest rows (:func:`finalize_run`).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
from astro_pipeline.config import Region, Settings
from astro_pipeline.sky import in_cone, mean_position, separation_deg

__all__ = [
    "ARCHIVES",
    "BudgetDecision",
    "GuardedEngine",
    "Fetched",
    "ItemPlan",
    "ItemResult",
    "LoadedModels",
    "RunBudget",
    "RunReport",
    "StageTimer",
    "apply_retention",
    "download_item",
    "finalize_run",
    "list_archive",
    "matches_criteria",
    "load_models",
    "operation_for",
    "plan_items",
    "process_item",
    "sample_overrides",
    "sample_watch_list",
    "select_new",
    "write_contact_sheet",
]

ARCHIVES: tuple[str, ...] = ("mast", "hla", "esahubble")

#: Item statuses, in the order the summary reports them.
STATUSES: tuple[str, ...] = (
    "ok", "partial", "error", "download_failed", "list_failed", "already_done", "skipped_done", "over_budget",
    "low_disk", "planned",
)


# --------------------------------------------------------------------------------------------
# listing and selection
# --------------------------------------------------------------------------------------------


def list_archive(archive: str, region: Region, settings: Settings) -> list[ArchiveRecord]:
    """What one archive offers for one region (MAST cone query, HLA search, ESA/Hubble list).

    ESA/Hubble has no position query: its image list is walked and kept when the image centre
    lies within the region (images without a position are kept; the catalog dedupes them).
    """
    if archive == "mast":
        from astro_pipeline.archives.mast import MastClient

        records = list(
            MastClient(settings).query_region(
                region.ra, region.dec, region.radius_deg,
                instruments=tuple(region.instruments), filters=tuple(region.filters),
            )
        )
    elif archive == "hla":
        from astro_pipeline.archives.hla import HlaClient

        records = list(HlaClient(settings).search(region.ra, region.dec, region.radius_deg,
                                                  cutout_px=settings.hla_cutout_px))
    elif archive == "esahubble":
        from astro_pipeline.archives.esahubble import EsaHubbleClient

        records = [r for r in EsaHubbleClient(settings).list_images() if in_region(r, region)]
    else:
        raise ValueError(f"unknown archive {archive!r}; expected one of {', '.join(ARCHIVES)}")
    return [r for r in records if matches_criteria(r, region)]


def matches_criteria(record: ArchiveRecord, region: Region) -> bool:
    """The region's instrument/filter criteria, applied to science frames of any archive.

    Instruments match by prefix (``ACS`` matches ``ACS/WFC``), filters by name, both ignoring
    case. Colour release images are composites of several filters, so criteria never drop them.
    """
    if record.kind == "color":
        return True
    if region.instruments:
        inst = (record.instrument or "").upper()
        if not any(inst.startswith(i.upper()) for i in region.instruments):
            return False
    if region.filters:
        wanted = {f.upper() for f in region.filters}
        if not wanted & {f.upper() for f in record.filters}:
            return False
    return True


def in_region(record: ArchiveRecord, region: Region) -> bool:
    """True when the record's position lies inside the region's cone (or it has no position)."""
    if record.ra is None or record.dec is None:
        return True
    return in_cone(record.ra, record.dec, region.ra, region.dec, region.radius_deg)


def sample_watch_list(
    index: Any, *, archives: Iterable[str] = ARCHIVES, margin_deg: float = 0.01, match_science: bool = True
) -> list[Region]:
    """The built-in sample's watch list: one region per field, centre and radius covering its items.

    A field whose items all lie inside an earlier field's cone is merged into it (one listing of
    that sky, not two). With ``match_science`` each region asks for the instruments and filters of
    its field's science frames, as an operator's criteria would (HLA otherwise offers every band
    of every instrument on the field, which is most of the sample's work and little of its value).
    """
    regions: list[Region] = []
    covered: dict[str, list[Any]] = {}
    for name, items in sorted(index.fields().items(), key=lambda kv: (-len(kv[1]), kv[0])):
        host = next(
            (r for r in regions
             if all(in_cone(float(i.ra), float(i.dec), r.ra, r.dec, r.radius_deg) for i in items)),
            None,
        )
        if host is not None:
            covered[host.name].extend(items)
            continue
        ra, dec = mean_position((float(i.ra), float(i.dec)) for i in items)
        radius = max(separation_deg(ra, dec, float(i.ra), float(i.dec)) for i in items) + margin_deg
        regions.append(Region(name=name, ra=ra, dec=dec, radius_deg=round(max(radius, 0.02), 4),
                              archives=list(archives)))
        covered[name] = list(items)
    if match_science:
        for i, region in enumerate(regions):
            science = [it for it in covered[region.name] if it.kind == "science"]
            if science:
                regions[i] = region.model_copy(update={
                    "instruments": sorted({it.instrument for it in science if it.instrument}),
                    "filters": sorted({it.filter for it in science if it.filter}),
                })
    return sorted(regions, key=lambda r: r.name)


#: The HLA lists ~50 datasets per sample field, all views of the MAST fields: the sample sweep
#: fetches them as fitscut cutouts around the field centre (as curators browsing the HLA do), which
#: keeps it within its 10-minute budget on 2 cores.
SAMPLE_HLA_CUTOUT_PX = 128


def sample_overrides(replica_url: str, settings: Settings) -> dict[str, Any]:
    """Settings overrides for sweeping the built-in sample: every archive at the replica, and HLA
    cutouts of :data:`SAMPLE_HLA_CUTOUT_PX` unless the settings already size them."""
    overrides: dict[str, Any] = {"mast_url": replica_url, "hla_url": replica_url, "esahubble_url": replica_url}
    if settings.hla_cutout_px is None:
        overrides["hla_cutout_px"] = SAMPLE_HLA_CUTOUT_PX
    return overrides


def operation_for(record: ArchiveRecord) -> str:
    """What the sweep makes from a record: grey science frames are colorized and upscaled
    (``enhance``); colour release images are upscaled only."""
    return "upscale" if record.kind == "color" else "enhance"


@dataclass
class ItemPlan:
    """One record the run intends to fetch and process."""

    record: ArchiveRecord
    region: str
    operation: str
    reason: str = "new"  # "new" | "force" | "new-weights"

    @property
    def key(self) -> str:
        return self.record.key


def select_new(
    records: Iterable[ArchiveRecord],
    catalog: Any | None,
    *,
    models: LoadedModels | None = None,
    force: bool = False,
    region: str = "",
    done: list[ItemPlan] | None = None,
) -> list[ItemPlan]:
    """Keep the records the catalog lacks; the catalog decides what is done.

    A record is done when the catalog holds ok products of every frame of its input (by the
    published sha256, or the sha256 of the file fetched for it before) made by this operation
    with the current model versions. A record the catalog has never seen is kept, and is
    re-checked by content hash after its (skipped-if-verified) download.
    Duplicates (same archive id) keep their first occurrence. ``force`` keeps everything.
    Records found done are appended to ``done`` when given (reason ``"done"``).
    """
    seen: set[str] = set()
    plans: list[ItemPlan] = []
    for rec in records:
        if rec.key in seen:
            continue
        seen.add(rec.key)
        op = operation_for(rec)
        if force:
            plans.append(ItemPlan(record=rec, region=region, operation=op, reason="force"))
            continue
        if catalog is not None and models is not None:
            sha = rec.sha256
            if not sha and hasattr(catalog, "file_for_record"):
                known = catalog.file_for_record(rec.archive, rec.id)
                sha = known["sha256"] if known else None
            if sha and catalog.is_done(sha, models.versions_for(op), None, operation=op):
                if done is not None:
                    done.append(ItemPlan(record=rec, region=region, operation=op, reason="done"))
                continue
        plans.append(ItemPlan(record=rec, region=region, operation=op, reason="new"))
    return plans


def plan_items(
    listings: Iterable[tuple[str, list[ArchiveRecord]]],
    catalog: Any | None,
    *,
    models: LoadedModels | None,
    force: bool = False,
    done: list[ItemPlan] | None = None,
) -> list[ItemPlan]:
    """Select across regions: each (region name, records) listing in turn, deduplicated by key."""
    out: list[ItemPlan] = []
    seen: set[str] = set()
    for region_name, records in listings:
        fresh = [r for r in records if r.key not in seen]
        for plan in select_new(fresh, catalog, models=models, force=force, region=region_name, done=done):
            seen.add(plan.key)
            out.append(plan)
        seen.update(r.key for r in records)
    return out


# --------------------------------------------------------------------------------------------
# operator controls: per-run caps and the free-disk guard
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetDecision:
    admitted: bool
    status: str = "planned"  # "planned" | "over_budget" | "low_disk"
    reason: str = ""


class RunBudget:
    """Per-run caps on files and bytes, and a free-disk guard that stops a run cleanly.

    :meth:`admit` is called once per planned item, in order, before anything is fetched (declared
    sizes count against the byte cap). :meth:`disk_ok` is checked again right before each
    download and each product write, so a filling disk stops the run between items, never
    mid-file. Thread-safe.
    """

    def __init__(
        self,
        *,
        max_files: int | None = None,
        max_bytes: int | None = None,
        min_free_bytes: int = 0,
        path: Path | None = None,
        disk_usage: Callable[[Path], Any] = shutil.disk_usage,
    ) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.path = Path(path) if path is not None else Path.cwd()
        self._disk_usage = disk_usage
        self.files = 0
        self.bytes = 0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RunBudget:
        kwargs: dict[str, Any] = {
            "max_files": settings.max_files_per_run,
            "max_bytes": settings.max_bytes_per_run,
            "min_free_bytes": settings.min_free_disk_bytes,
            "path": Path(settings.output_dir),
        }
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def __getstate__(self) -> dict[str, Any]:  # picklable for Dask workers (the lock is not)
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def free_bytes(self) -> int:
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return int(self._disk_usage(probe).free)

    def disk_ok(self) -> BudgetDecision:
        free = self.free_bytes()
        if free < self.min_free_bytes:
            return BudgetDecision(
                False, "low_disk",
                f"free disk {free / 1e9:.2f} GB under {self.path} is below the "
                f"{self.min_free_bytes / 1e9:.2f} GB minimum (min_free_disk_bytes)",
            )
        return BudgetDecision(True)

    def admit(self, record: ArchiveRecord) -> BudgetDecision:
        with self._lock:
            if self.max_files is not None and self.files >= self.max_files:
                return BudgetDecision(False, "over_budget", f"max_files_per_run={self.max_files} reached")
            size = int(record.size or 0)
            if self.max_bytes is not None and self.bytes + size > self.max_bytes:
                return BudgetDecision(
                    False, "over_budget",
                    f"max_bytes_per_run={self.max_bytes} would be exceeded ({self.bytes} + {size} bytes)",
                )
            self.files += 1
            self.bytes += size
            return BudgetDecision(True)


# --------------------------------------------------------------------------------------------
# models: loaded once per process, guarded per call
# --------------------------------------------------------------------------------------------


class GuardedEngine:
    """An inference engine whose ``run`` holds a guard (e.g. a concurrency slot) and is timed.

    Reading and product writing of other items proceed in parallel; only the model calls are
    serialised by the guard. ``seconds`` accumulates time spent inside ``run`` per thread.
    """

    def __init__(self, engine: Any, guard: Callable[[], AbstractContextManager[Any]] | None = None) -> None:
        self.engine = engine
        self.guard = guard
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def run(self, image: Any, *args: Any, **kwargs: Any) -> Any:
        ctx = self.guard() if self.guard is not None else nullcontext()
        with ctx:
            t0 = time.perf_counter()
            try:
                return self.engine.run(image, *args, **kwargs)
            finally:
                loc = self._local
                loc.seconds = getattr(loc, "seconds", 0.0) + time.perf_counter() - t0
                stats = getattr(self.engine, "stats", None)
                loc.model_seconds = getattr(loc, "model_seconds", 0.0) + float(getattr(stats, "model_seconds", 0.0))
                loc.tiles = getattr(loc, "tiles", 0) + int(getattr(stats, "tiles", 0))

    def take_seconds(self) -> tuple[float, float, int]:
        """(seconds in ``run``, of which in the model's forward, tiles) for this thread since the last call."""
        loc = self._local
        out = (float(getattr(loc, "seconds", 0.0)), float(getattr(loc, "model_seconds", 0.0)), int(getattr(loc, "tiles", 0)))
        loc.seconds, loc.model_seconds, loc.tiles = 0.0, 0.0, 0
        return out


@dataclass
class LoadedModels:
    """The colorizer and upscaler engines of a run, and their identities for the catalog."""

    colorizer: Any
    upscaler: Any
    metas: dict[str, Any]

    def versions_for(self, operation: str) -> dict[str, str]:
        """``{model name: version}`` of the models ``operation`` uses: what 'done' means in the catalog."""
        tasks = {"colorize": ("colorize",), "upscale": ("superres",), "enhance": ("colorize", "superres")}[operation]
        return {str(self.metas[t].name): str(self.metas[t].version) for t in tasks}

    def with_guard(self, guard: Callable[[], AbstractContextManager[Any]] | None) -> LoadedModels:
        return LoadedModels(
            colorizer=GuardedEngine(_unwrap(self.colorizer), guard),
            upscaler=GuardedEngine(_unwrap(self.upscaler), guard),
            metas=self.metas,
        )

    def take_inference_seconds(self) -> tuple[float, float, int]:
        """(engine seconds, model-forward seconds, tiles) this thread spent since the last call."""
        parts = [e.take_seconds() for e in (self.colorizer, self.upscaler) if isinstance(e, GuardedEngine)]
        return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts))


def _unwrap(engine: Any) -> Any:
    return engine.engine if isinstance(engine, GuardedEngine) else engine


_MODELS_LOCK = threading.Lock()
_MODELS_CACHE: dict[tuple[Any, ...], LoadedModels] = {}


def load_models(settings: Settings, *, colorizer: str = "colorizer", upscaler: str = "superres") -> LoadedModels:
    """Load the default weights once per thread (engines are not thread-safe; cached by weights
    dir, names, device and thread)."""
    key = (str(settings.weights_dir), colorizer, upscaler, settings.device, settings.precision, settings.batch_size,
           threading.get_ident())
    with _MODELS_LOCK:
        cached = _MODELS_CACHE.get(key)
        if cached is not None:
            return cached
        from astro_pipeline.inference import Engine
        from astro_pipeline.models.registry import load_weights

        engines: dict[str, Any] = {}
        metas: dict[str, Any] = {}
        for task, name in (("colorize", colorizer), ("superres", upscaler)):
            path = Path(name) if name.endswith(".safetensors") else Path(settings.weights_dir) / f"{name}.safetensors"
            model, meta = load_weights(path if path.is_file() else name)
            engines[task] = Engine(
                model, meta, device=settings.device, precision=settings.precision,
                batch_size=settings.batch_size, compile=settings.compile,
            )
            metas[task] = meta
        loaded = LoadedModels(colorizer=engines["colorize"], upscaler=engines["superres"], metas=metas)
        _MODELS_CACHE[key] = loaded
        return loaded


# --------------------------------------------------------------------------------------------
# one item: download, process, record
# --------------------------------------------------------------------------------------------


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


@dataclass
class ItemResult:
    """What happened to one planned item, with its products and time per stage."""

    key: str
    archive: str
    record_id: str
    region: str
    operation: str
    status: str  # see STATUSES
    error: str | None = None
    record: ArchiveRecord | None = None
    raw_path: str | None = None
    sha256: str | None = None
    size: int | None = None
    raw_deleted: bool = False
    products: list[Any] = field(default_factory=list)  # astro_pipeline.products.Product
    flags: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    tiles: int = 0

    @classmethod
    def from_plan(cls, plan: ItemPlan, status: str, error: str | None = None) -> ItemResult:
        return cls(
            key=plan.key, archive=plan.record.archive, record_id=plan.record.id, region=plan.region,
            operation=plan.operation, status=status, error=error, record=plan.record,
        )


def raw_dir_for(settings: Settings) -> Path:
    """Where raw downloads live: ``<output>/raw``."""
    return Path(settings.output_dir) / "raw"


def products_dir_for(settings: Settings) -> Path:
    """Where products are written: ``<output>/products``."""
    return Path(settings.output_dir) / "products"


@dataclass
class Fetched:
    """A verified download and the seconds it took (0 when an existing file was reused)."""

    file: DownloadedFile
    seconds: float


def download_item(
    plan: ItemPlan,
    settings: Settings,
    *,
    downloader: Any | None = None,
    budget: RunBudget | None = None,
) -> DownloadedFile | ItemResult:
    """Fetch one record into ``<output>/raw/<archive>/`` (verified; reused when already complete).

    Returns the downloaded file, or an :class:`ItemResult` with status ``low_disk`` when the
    free-disk guard stops the run. Raises ``DownloadError`` (callers retry).
    """
    if budget is not None:
        decision = budget.disk_ok()
        if not decision.admitted:
            return ItemResult.from_plan(plan, decision.status, decision.reason)
    if downloader is None:
        from astro_pipeline.archives.download import Downloader

        downloader = Downloader(settings)
    dest = raw_dir_for(settings) / plan.record.archive
    dest.mkdir(parents=True, exist_ok=True)
    return downloader.fetch(plan.record, dest)


def process_item(
    plan: ItemPlan,
    downloaded: DownloadedFile,
    settings: Settings,
    *,
    models: LoadedModels,
    catalog: Any | None,
    run_id: str | None,
    force: bool = False,
    budget: RunBudget | None = None,
) -> ItemResult:
    """Ingest, flag, stretch, tile, enhance and write products for one file; record it all.

    Skips (status ``skipped_done``) when the catalog already holds this input's products for the
    current model versions, unless ``force``. Never raises for a bad file: the products carry
    ``status="error"`` with the file and the problem, and the item is ``error``.
    """
    from astro_pipeline.products import process_file

    timer = StageTimer()
    result = ItemResult.from_plan(plan, "ok")
    result.raw_path = str(downloaded.path)
    result.sha256 = downloaded.sha256
    result.size = downloaded.size
    if catalog is not None:
        with timer("catalog"):
            catalog.upsert_file(downloaded, run_id=run_id)
            done = (not force) and catalog.is_done(
                downloaded.sha256, models.versions_for(plan.operation), None, operation=plan.operation
            )
        if done:
            result.status = "skipped_done"
            result.timings = timer.seconds
            return result
    if budget is not None:
        decision = budget.disk_ok()
        if not decision.admitted:
            result.status, result.error = decision.status, decision.reason
            return result

    models.take_inference_seconds()
    t0 = time.perf_counter()
    colorizer = models.colorizer if plan.operation in ("colorize", "enhance") else None
    upscaler = models.upscaler if plan.operation in ("upscale", "enhance") else None
    products = process_file(
        Path(downloaded.path),
        operation=plan.operation,
        output_dir=products_dir_for(settings),
        input_root=raw_dir_for(settings),
        colorizer=colorizer,
        upscaler=upscaler,
        settings=settings,
        run_id=run_id,
    )
    total = time.perf_counter() - t0
    engine_s, model_s, tiles = models.take_inference_seconds()
    timer.add("model", model_s)
    timer.add("tiling", max(0.0, engine_s - model_s))
    timer.add("ingest+write", max(0.0, total - engine_s))
    result.tiles = tiles
    for product in products:
        if getattr(product, "run_id", None) is None:
            product.run_id = run_id
    result.products = list(products)
    result.flags = sorted({f["name"] for p in products for f in (p.flags or []) if "name" in f})
    n_err = sum(1 for p in products if p.status != "ok")
    if not products or n_err == len(products):
        result.status = "error"
        result.error = "; ".join(str(p.error) for p in products if p.error) or f"{downloaded.path}: no frames"
    elif n_err:
        result.status = "partial"
        result.error = "; ".join(str(p.error) for p in products if p.error)
    if catalog is not None:
        with timer("catalog"):
            # frames, quality flags, products and files, idempotently (keyed by content and models)
            catalog.record_products(products, run_id=run_id)
    result.timings = timer.seconds
    return result


def verify_products(result: ItemResult) -> bool:
    """True when every product file of an ok item exists with its recorded sha256."""
    from astro_pipeline.fileio import sha256_file

    if result.status != "ok" or not result.products:
        return False
    return all(Path(pf.path).is_file() and sha256_file(pf.path) == pf.sha256
               for product in result.products for pf in product.files.values())


def apply_retention(result: ItemResult, *, keep_raw: bool) -> ItemResult:
    """Delete the raw download once its products are verified, unless ``keep_raw``.

    The manifest keeps ``raw_path`` (which then names a deleted file) so provenance survives.
    """
    if keep_raw or result.raw_path is None or result.status not in ("ok", "skipped_done"):
        return result
    if result.status == "ok" and not verify_products(result):
        return result
    raw = Path(result.raw_path)
    if raw.is_file():
        raw.unlink()
    result.raw_deleted = True
    return result


# --------------------------------------------------------------------------------------------
# end of run: manifests, contact sheet, summary
# --------------------------------------------------------------------------------------------


@dataclass
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

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per item: the short table the CLI prints and the flow publishes."""
        rows = []
        for it in self.items:
            rows.append({
                "item": f"{it.archive}:{short_id(it.record_id)}",
                "region": it.region,
                "operation": it.operation,
                "status": it.status,
                "flags": ",".join(it.flags),
                "products": len(it.products),
                "seconds": round(sum(it.timings.values()), 2),
                "error": (it.error or "")[:200],
            })
        return rows

    def markdown(self) -> str:
        """Markdown summary: counts per status and flag, time per stage, and the contact sheet."""
        lines = [f"# Sweep {self.run_id}{' (dry run)' if self.dry_run else ''}", ""]
        lines += ["| status | items |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.counts.items()]
        lines += ["", "| flag | items |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(self.flag_counts.items())] or ["| (none) | 0 |"]
        lines += ["", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in sorted(self.stage_seconds.items())]
        lines += ["", f"Wall time: {self.wall_seconds:.1f} s; products: {self.n_products}"]
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


def summarise(run_id: str, items: list[ItemResult], settings: Settings, *, dry_run: bool, wall: float) -> RunReport:
    counts = Counter(it.status for it in items)
    flag_counts: Counter[str] = Counter()
    for it in items:
        flag_counts.update(it.flags)
    stages: dict[str, float] = {}
    for it in items:
        for k, v in it.timings.items():
            stages[k] = stages.get(k, 0.0) + v
    return RunReport(
        run_id=run_id,
        output_dir=str(settings.output_dir),
        dry_run=dry_run,
        items=items,
        counts={s: counts[s] for s in STATUSES if counts.get(s)},
        flag_counts=dict(flag_counts),
        stage_seconds=stages,
        wall_seconds=wall,
        products_dir=str(products_dir_for(settings)),
        n_products=sum(len(it.products) for it in items),
    )


def manifest_extra(items: Iterable[ItemResult]) -> dict[str, dict[str, Any]]:
    """Per-source extra manifest columns (archive, ids, URL, raw path, region), keyed by source path."""
    extra: dict[str, dict[str, Any]] = {}
    for it in items:
        rec = it.record
        if rec is None or it.raw_path is None:
            continue
        extra[str(Path(it.raw_path))] = {
            "archive": rec.archive,
            "archive_id": rec.id,
            "obs_id": rec.obs_id,
            "source_url": rec.url,
            "target": rec.target,
            "ra": rec.ra,
            "dec": rec.dec,
            "date_obs": rec.date_obs,
            "instrument": rec.instrument,
            "filters": ",".join(rec.filters),
            "credit": rec.credit,
            "license": rec.license,
            "raw_path": it.raw_path,
            "raw_deleted": it.raw_deleted,
            "region": it.region,
        }
    return extra


def finalize_run(
    items: list[ItemResult],
    settings: Settings,
    *,
    run_id: str,
    catalog: Any | None,
    dry_run: bool = False,
    started: float | None = None,
    contact_sheet_max: int = 12,
) -> RunReport:
    """Write the run manifest (+ cumulative ``all.parquet``) and the contact sheet; summarise."""
    wall = time.perf_counter() - started if started is not None else 0.0
    report = summarise(run_id, items, settings, dry_run=dry_run, wall=wall)
    if dry_run:
        return report
    products = [p for it in items for p in it.products]
    out = Path(settings.output_dir)
    t0 = time.perf_counter()
    if catalog is not None:
        # the catalog's export extends the per-run manifest with archive, record and review columns
        from astro_pipeline.catalog import export_cumulative_manifest, export_run_manifest

        parquet, csv = export_run_manifest(catalog, run_id, output_dir=out)
        report.all_manifest = str(export_cumulative_manifest(catalog, output_dir=out))
    else:
        from astro_pipeline.manifest import write_run_manifest

        parquet, csv = write_run_manifest(products, output_dir=out, run_id=run_id, extra=manifest_extra(items))
    report.manifest_parquet, report.manifest_csv = str(parquet), str(csv)
    sheet = Path(parquet).with_name(f"{run_id}_contact.png")
    if write_contact_sheet(_round_robin(items), sheet, max_items=contact_sheet_max):
        report.contact_sheet = str(sheet)
    report.stage_seconds["manifests"] = time.perf_counter() - t0
    return report


def _round_robin(items: list[ItemResult]) -> list[Any]:
    """Products interleaved across archives and regions, so the contact sheet shows a bit of each."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for it in items:
        groups.setdefault((it.archive, it.region), []).extend(it.products)
    queues = list(groups.values())
    out: list[Any] = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def write_contact_sheet(products: list[Any], path: Path, *, max_items: int = 12, thumb: int = 192) -> bool:
    """A before/after PNG: each row the input's display stretch next to the product preview.

    Returns False (and writes nothing) when no product has a PNG preview.
    """
    from PIL import Image

    rows: list[tuple[Image.Image, Image.Image]] = []
    for product in products:
        if len(rows) >= max_items:
            break
        if product.status != "ok" or "png" not in product.files:
            continue
        after = Image.open(product.files["png"].path).convert("RGB")
        after.thumbnail((thumb, thumb))
        before = _before_image(product, thumb)
        if before is None:
            continue
        rows.append((before, after))
    if not rows:
        return False
    pad = 4
    sheet = Image.new("RGB", (2 * thumb + 3 * pad, len(rows) * (thumb + pad) + pad), (24, 24, 24))
    for i, (b, a) in enumerate(rows):
        y = pad + i * (thumb + pad)
        sheet.paste(b, (pad, y))
        sheet.paste(a, (2 * pad + thumb, y))
    from astro_pipeline.fileio import atomic_write

    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))
    return True


def _before_image(product: Any, thumb: int) -> Any:
    """The input frame's display stretch (as the product recorded it), as a thumbnail."""
    import numpy as np
    from PIL import Image

    from astro_pipeline.ingest.frame import IngestError
    from astro_pipeline.ingest.readers import read_frames
    from astro_pipeline.ingest.stretch import display_image

    try:
        frames = read_frames(Path(product.source_path))
    except (IngestError, OSError):
        return None
    frame = next((f for f in frames if f.hdu == product.hdu and f.plane == product.plane), frames[0] if frames else None)
    if frame is None:
        return None
    img, _ = display_image(frame)
    arr = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(arr).convert("RGB")
    im.thumbnail((thumb, thumb))
    return im
