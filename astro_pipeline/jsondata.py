"""Plain JSON data from the values a frame or product carries (paths, numpy scalars, records).

Headers give numpy scalars, engines give tuples, readers give paths: what the catalog stores,
files embed and keys hash must be plain JSON, with NaN and infinities as ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["jsonable"]


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
