"""A field's colour product: its aligned bands composed, written as PNG, 16-bit TIFF and an RGB FITS
cube with the field's reference WCS, and (operations that upscale) a 4x version through the SR model.

Files are named by ``products.naming.field_product_path`` under ``<products>/fields``:
``<field>_rgb.png`` / ``.tif`` / ``.fits`` and ``<field>_rgb_x4.*``. Every file says which filter
made which channel (FITS: ``CHANNELS``, ``CHAN_R``/``_G``/``_B``, ``INFERRED``, ``VISUAL``).

The 4x version runs the SR model on the RGB image at once (``SR_MODE``): on held-out validation
crops it keeps colour better than one channel at a time (``benchmarks/field_sr_colour.py``,
``docs/evaluation/field_sr_colour.md``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from astro_pipeline.fields.align import AlignedField
from astro_pipeline.fields.compose import COMPOSE_VERSION, band_slots, channels_of
from astro_pipeline.fields.grouping import FieldPlan
from astro_pipeline.fields.result import FieldFileKind, FieldProduct
from astro_pipeline.fileio import StagedWrites
from astro_pipeline.products.composed import composed_cards, composed_meta
from astro_pipeline.products.naming import field_product_path
from astro_pipeline.products.types import FileKind, ModelRecord, Operation, ProductFile, ProductStatus
from astro_pipeline.products.writers import write_fits_cube, write_png, write_tiff

if TYPE_CHECKING:  # pragma: no cover
    from astro_pipeline.composition import Composed

__all__ = ["SR_LABEL", "SR_MODE", "field_product_key", "fields_dir", "upscale_composite", "write_field_product"]

#: How the 4x version goes through the SR model: "rgb" (the colour image at once) or "per_channel".
SR_MODE = "rgb"


def fields_dir(products_dir: Path) -> Path:
    """Where field products go: ``<products>/fields``."""
    return Path(products_dir) / "fields"


def field_product_key(plan: FieldPlan, *, operation: Operation, models: tuple[ModelRecord, ...]) -> str:
    """The product's identity: its field, the frames of its bands, the operation, the models, the rules
    (compose, SR mode). Known before anything is read, so a rerun skips a finished field."""
    payload = {"field": plan.key, "frames": sorted(m.frame_id for m in plan.bands.values()),
               "operation": str(operation), "models": [m.as_dict() for m in models],
               "compose": COMPOSE_VERSION, "sr_mode": SR_MODE if operation.upscales else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def upscale_composite(image: np.ndarray, upscaler: Any, *, mode: str = SR_MODE) -> np.ndarray:
    """The composite 4x through the SR model: the RGB at once, or each channel as a grey image."""
    from astro_pipeline.inference import upscale_display

    if mode == "rgb":
        return upscale_display(upscaler, image)
    if mode == "per_channel":
        return np.stack([upscale_display(upscaler, image[..., c]).mean(axis=-1) for c in range(3)], axis=-1)
    raise ValueError(f"unknown SR mode {mode!r}; use rgb or per_channel")


SR_LABEL = "; 4x through the SR model: AI-generated detail, a visualisation"


def _cards(composed: Composed, aligned: AlignedField) -> dict[str, tuple[Any, str]]:
    cards = dict(composed_cards(composed))
    cards["FIELD"] = (aligned.plan.name[:68], "astro-pipeline field")
    cards["NBANDS"] = (len(aligned.bands), "bands composed")
    return cards


def write_field_product(aligned: AlignedField, composed: Composed, *, operation: Operation,
                        products_dir: Path, run_id: str | None, upscaler: Any | None = None,
                        models: tuple[ModelRecord, ...] = (), key: str | None = None) -> FieldProduct:
    """Write the field's files (4x too where ``operation`` upscales) and return the product to record.

    ``composed`` is ``fields.compose.compose_field``'s; ``models`` are the SR model's record (the
    band-completion model, where one inferred a channel, is in ``composed.models``).
    """
    plan = aligned.plan
    folder = fields_dir(products_dir)
    slots = band_slots(composed)
    channels = channels_of(composed)
    bands = [{"filter": b.member.filter, "channel": slots.get(b.member.filter),
              "frame_key": b.member.product.frame_key, "sha256": b.member.product.source_sha256,
              "file": b.member.name, "instrument": (b.member.product.provenance or {}).get("instrument"),
              "target": (b.member.product.provenance or {}).get("target"), "exptime": b.member.exptime,
              "coverage": round(b.coverage, 4)} for b in aligned.bands.values()]
    all_models = tuple(composed.models) + tuple(models)
    meta = dict(composed_meta(composed), operation="field", field=plan.name, field_key=plan.key, bands=bands,
                models=[m.as_dict() for m in all_models])
    cards = _cards(composed, aligned)
    files: dict[str, ProductFile] = {}

    def write(stage: StagedWrites, image: np.ndarray, scale: int, kinds: tuple[str, str, str], label: str) -> None:
        png, tif, fit = kinds
        files[png] = write_png(field_product_path(folder, plan.name, FileKind.PNG, scale=scale), image, meta,
                               label, stage=stage)
        files[tif] = write_tiff(field_product_path(folder, plan.name, FileKind.TIF, scale=scale), image, meta,
                                label, stage=stage)
        files[fit] = write_fits_cube(field_product_path(folder, plan.name, FileKind.FITS, scale=scale), image, meta,
                                     wcs=aligned.wcs, scale=scale, label=label, operation="field",
                                     cards=cards, stage=stage)

    metrics = {"height": float(aligned.shape[0]), "width": float(aligned.shape[1]),
               "valid_fraction": float(composed.metrics.get("valid_fraction", float(composed.valid.mean())))}
    params = {"compose": dict(composed.params, version=COMPOSE_VERSION), "grid": plan.grid.as_dict(),
              "sr_mode": None, "label": composed.label, "visualisation": composed.visualisation,
              "channels_detail": [c.as_dict() for c in composed.channels]}
    if operation.upscales and upscaler is None:
        raise ValueError(f"field {plan.name}: {operation} needs the SR model for the 4x version")
    with StagedWrites() as stage:  # every file of the product lands, or none does
        write(stage, composed.image, 1, (FieldFileKind.PNG, FieldFileKind.TIF, FieldFileKind.FITS), composed.label)
        if operation.upscales:
            up = upscale_composite(composed.image, upscaler)
            up[np.repeat(np.repeat(~composed.valid, 4, axis=0), 4, axis=1)] = 0.0  # invalid stays black
            write(stage, up, 4, (FieldFileKind.PNG_4X, FieldFileKind.TIF_4X, FieldFileKind.FITS_4X),
                  composed.label + SR_LABEL)
            params["sr_mode"] = SR_MODE
            params["visualisation"] = True  # the 4x files hold the SR model's detail
    notes = tuple(why for _m, why in aligned.failed) + tuple(
        m.note for m in plan.members if m.note is not None)
    return FieldProduct(key=key or field_product_key(plan, operation=operation, models=all_models),
                        field_key=plan.key, field_name=plan.name, run_id=run_id, operation=operation,
                        status=ProductStatus.OK, channels=channels, bands=bands, models=all_models,
                        params=params, metrics=metrics, notes=notes, files=files)
