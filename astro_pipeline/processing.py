"""The one processing path: process an input and record it; compose what was recorded; find fields.

The sweep's process step (``steps.process_item``) and the ``colorize``/``upscale``/``enhance``
commands both call these functions, so both make the same products (same-grid Lupton
composites included) and write the same catalog rows; their manifests are then exported from
those rows (``catalog.export``). Fields (frames of one sky field across filters) are grouped
from the recorded rows too (:func:`group_recorded`), so a run that resumes finds them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from astro_pipeline.archives.records import DownloadedFile
from astro_pipeline.catalog import Catalog
from astro_pipeline.config import QualityThresholds
from astro_pipeline.engines import Engines
from astro_pipeline.fields.grouping import FieldGrouping, group_fields
from astro_pipeline.products.composites import Composite, write_lupton_composites
from astro_pipeline.products.process import ProcessedInput, process_file
from astro_pipeline.products.types import Operation, Product

__all__ = ["compose_recorded", "done_products", "group_recorded", "process_input"]


def process_input(
    path: Path | str,
    *,
    operation: Operation,
    engines: Engines,
    output_dir: Path,
    quality: QualityThresholds,
    max_image_pixels: int,
    memory_budget: int,
    catalog: Catalog,
    run_id: str,
    input_root: Path | None = None,
    downloaded: DownloadedFile | None = None,
) -> ProcessedInput:
    """Process every frame of one input into products under ``output_dir``, and record them.

    One catalog transaction records the input file (with its archive record when ``downloaded``),
    its frame count, and each product with its frame, quality flags, reader notes and files. The
    catalog says who owns each path, so no product replaces a file another product records; the
    rows whose files this input's products replaced (its own earlier products) become superseded.
    An input whose estimated peak memory is over ``memory_budget`` bytes is recorded as an error.
    """
    processed = process_file(path, operation=operation, engines=engines, output_dir=output_dir, quality=quality,
                             max_image_pixels=max_image_pixels, memory_budget=memory_budget, input_root=input_root,
                             run_id=run_id, recorded=catalog.file_owners)
    catalog.record_input(processed, run_id=run_id, downloaded=downloaded)
    return processed


def compose_recorded(catalog: Catalog, sha256s: Iterable[str], *, operation: Operation,
                     models: Mapping[str, str], max_image_pixels: int) -> list[Composite]:
    """Same-grid Lupton composites of the recorded products of these inputs, attached in the catalog.

    Works from the catalog, not from memory, so a run that resumes after a crash composes fields
    whose members an earlier run made. Fields whose members all carry a composite already are left
    alone; members whose raw input is gone cannot be read and leave their field uncomposed.
    """
    products = catalog.current_products(sha256s, operation=operation, models=models)
    composites = write_lupton_composites([p for p in products if "lupton" not in p.files],
                                         max_image_pixels=max_image_pixels, recorded=catalog.file_owners)
    catalog.attach_composites(composites)
    return composites


def done_products(catalog: Catalog, sha256: str, *, operation: Operation, models: Mapping[str, str]) -> list[Product]:
    """The current products of this input by ``operation`` with these models, when they are complete
    (every frame ok, as ``Catalog.is_done`` says) and their files are all still there; else ``[]``.

    What a command-line rerun skips (unless ``--overwrite``): the catalog's "done", and the files
    a user may have deleted since.
    """
    if not sha256 or not catalog.is_done(sha256, dict(models), None, operation=str(operation)):
        return []
    products = catalog.current_products([sha256], operation=operation, models=models)
    if not products or not all(Path(f.path).is_file() for p in products for f in p.files.values()):
        return []
    return products


def group_recorded(catalog: Catalog, sha256s: Iterable[str], *, operation: Operation, models: Mapping[str, str],
                   min_overlap: float, run_id: str | None) -> tuple[FieldGrouping, dict[str, int]]:
    """The fields among the recorded frames of these inputs, recorded in the catalog.

    Works from the catalog's rows (each frame's product with its footprint), like
    :func:`compose_recorded`. Returns the grouping and ``{field_key: field id}``; frames in no
    field get the reason in the catalog (``frames.field_note``).
    """
    products = catalog.current_products(sha256s, operation=operation, models=models)
    grouping = group_fields(products, min_overlap=min_overlap)
    return grouping, catalog.record_fields(grouping, run_id=run_id)
