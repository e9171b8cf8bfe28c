"""Sky geometry in degrees: valid cones, separations, cone membership and mean positions.

One place for what the CLI, the watch list, the planner, the catalog's region queries, the review
page and the archive replica each ask: whether a cone is one the pipeline accepts (RA in
[0, 360), Dec in [-90, 90], a finite radius in (0, 180]: ``r=nan deg`` never reaches an archive),
how far apart two ICRS positions are (``astropy.coordinates.angular_separation``, the Vincenty
formula, exact at any separation), whether a position lies in a cone, and the centre of a group of
positions (the mean unit vector, correct across RA 0/360 and the poles).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["MAX_RADIUS_DEG", "ConeError", "check_cone", "in_cone", "mean_position", "separation_deg"]

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


def separation_deg(ra1: float | np.ndarray, dec1: float | np.ndarray, ra2: float | np.ndarray,
                   dec2: float | np.ndarray) -> float | np.ndarray:
    """Great-circle separation in degrees between (ra1, dec1) and (ra2, dec2), all in degrees.

    Arrays broadcast (one centre against many positions); scalars give a float.
    """
    from astropy.coordinates import angular_separation

    sep = angular_separation(np.radians(ra1), np.radians(dec1), np.radians(ra2), np.radians(dec2))
    out = np.degrees(sep)
    return float(out) if np.ndim(out) == 0 else out


def in_cone(ra: float, dec: float, centre_ra: float, centre_dec: float, radius_deg: float) -> bool:
    """True when (ra, dec) lies within ``radius_deg`` of the centre (the boundary counts as inside)."""
    return bool(separation_deg(centre_ra, centre_dec, ra, dec) <= radius_deg)


def mean_position(positions: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """(ra, dec) in degrees of the mean unit vector of ``positions`` (RA in [0, 360))."""
    from astropy import units as u
    from astropy.coordinates import UnitSphericalRepresentation

    points = np.asarray(list(positions), dtype=np.float64)
    if points.size == 0:
        raise ValueError("mean_position of no positions")
    rep = UnitSphericalRepresentation(points[:, 0] * u.deg, points[:, 1] * u.deg).to_cartesian()
    mean = rep.mean().represent_as(UnitSphericalRepresentation)
    return float(mean.lon.wrap_at(360 * u.deg).deg % 360.0), float(mean.lat.deg)
