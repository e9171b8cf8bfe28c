"""Canonical keys: what makes two products "the same work" (input, frame, models, parameters)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from astro_pipeline.catalog.tables import NO_INDEX

__all__ = ["canonical_json", "digest", "jsonable", "index_or_none", "model_versions", "models_hash", "params_hash",
           "product_key", "to_index"]


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: paths to strings, numpy scalars to numbers, NaN/inf to None."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [jsonable(v) for v in items]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    if hasattr(value, "as_dict"):
        return jsonable(value.as_dict())
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"))
    return str(value)


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, paths and numpy scalars converted."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_default)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def model_versions(models: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    """``{name: version}`` from a mapping of that shape or a Product's ``models`` list."""
    if not models:
        return {}
    if isinstance(models, Mapping):
        return {str(k): str(v) for k, v in models.items()}
    return {str(m["name"]): str(m.get("version", "")) for m in models}


def models_hash(models: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> str:
    return digest(model_versions(models))


def params_hash(params: Mapping[str, Any] | None) -> str:
    return digest(dict(params or {}))


def to_index(value: int | None) -> int:
    return NO_INDEX if value is None else int(value)


def index_or_none(value: int) -> int | None:
    return None if value == NO_INDEX else int(value)


def product_key(*, source_sha256: str | None, source_path: str, hdu: int | None, plane: int | None,
                operation: str, models_h: str, params_h: str) -> str:
    """One product per (input content, frame, operation, model versions, parameters)."""
    source = source_sha256 or f"path:{source_path}"
    return digest([source, to_index(hdu), to_index(plane), operation, models_h, params_h])
