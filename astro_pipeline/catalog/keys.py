"""Canonical keys: what makes two products "the same work" (input, frame, models, parameters)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from astro_pipeline.catalog.tables import NO_INDEX

__all__ = ["canonical_json", "digest", "index_or_none", "model_versions", "models_hash", "params_hash",
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


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, paths and numpy scalars converted."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_default)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def model_versions(models: Mapping[str, Any] | Sequence[Any] | None) -> dict[str, str]:
    """``{name: version}`` from a mapping of that shape, or a product's models (``ModelRecord`` s or dicts)."""
    if not models:
        return {}
    if isinstance(models, Mapping):
        return {str(k): str(v) for k, v in models.items()}
    out: dict[str, str] = {}
    for m in models:
        name, version = (m["name"], m.get("version", "")) if isinstance(m, Mapping) else (m.name, m.version)
        out[str(name)] = str(version)
    return out


def models_hash(models: Mapping[str, Any] | Sequence[Any] | None) -> str:
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
