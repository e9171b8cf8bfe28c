"""Sky cones as the pipeline accepts them: RA in [0, 360), Dec in [-90, 90], a finite radius in (0, 180].

One rule for every way a region comes in (``sweep``'s watch list, ``reprocess``, ``fetch``, the
MAST client), so ``r=nan deg`` never reaches an archive.
"""

from __future__ import annotations

import math

__all__ = ["MAX_RADIUS_DEG", "ConeError", "check_cone"]

#: A cone of 180 degrees is the whole sky; anything wider is a mistake.
MAX_RADIUS_DEG = 180.0


class ConeError(ValueError):
    """A cone value out of range; ``field`` is ``ra``, ``dec`` or ``radius``."""

    def __init__(self, field: str, value: float, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


def check_cone(ra: float | None, dec: float | None, radius_deg: float | None) -> None:
    """Raise ``ConeError`` unless the cone is valid (``ra``/``dec`` may be None: resolved later)."""
    if ra is not None and not (math.isfinite(ra) and 0.0 <= ra < 360.0):
        raise ConeError("ra", ra, f"ra must be finite and in 0 <= ra < 360 degrees, got {ra:g}")
    if dec is not None and not (math.isfinite(dec) and -90.0 <= dec <= 90.0):
        raise ConeError("dec", dec, f"dec must be finite and in -90 <= dec <= 90 degrees, got {dec:g}")
    if radius_deg is None or not (math.isfinite(radius_deg) and 0.0 < radius_deg <= MAX_RADIUS_DEG):
        value = float("nan") if radius_deg is None else radius_deg
        raise ConeError("radius", value,
                        f"radius must be finite and in (0, {MAX_RADIUS_DEG:g}] degrees, got {value:g}")
