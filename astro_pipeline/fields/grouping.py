"""Which frames make one field: footprint overlap graph, connected components, one frame per filter.

Candidates are the linear science frames of a run (MAST and HLA FITS) with a usable footprint
(``geometry``). Two frames are linked when the intersection of their sky footprints is at least
``min_overlap`` of the smaller one; a field is a connected component of those links with two
filters or more. In each field:

* the **reference frame** is the frame with the finest pixel scale (within 1%), the largest
  covered area among those, then unflagged, then the deepest; the field's grid is its grid, over its footprint
  (``geometry.reference_grid``): bounded by one archive frame's size, and the colour product
  shows one sky area where the reference band is complete. The union was the other choice; it
  grows without bound along chains of overlapping frames, and most of it would hold one band;
* members that overlap the reference frame by less than ``min_overlap`` stay out of the product
  (``OFF_REFERENCE``), with a note;
* of several frames in one filter, the **deepest** is kept (``BAND``), depth being EXPTIME
  times the fraction of the field it covers, unflagged frames first; the others are
  ``SHALLOWER``, with a note naming the frame used. Frames are not combined: combining
  needs a common photometric scale across visits and instruments, which the headers of the HLA
  products do not give (no PHOTFLAM), and the deepest frame keeps one PSF per channel.

The plan is a pure function of the products it is given, so a rerun over the same catalog rows
finds the same fields with the same keys.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from astro_pipeline.fields.geometry import FrameGeometry, NoFootprint, covered_fraction, overlap_fraction, reference_grid
from astro_pipeline.products.composites import filter_of
from astro_pipeline.products.types import Product

__all__ = ["FieldGrouping", "FieldMember", "FieldPlan", "LeftOut", "MemberRole", "frame_id_of", "group_fields"]

_BAND = re.compile(r"F\d{3,4}[A-Z]{0,2}\d?")  # HST filter names: F606W, F160W, F656N, F850LP, F200LP ...
_SCALE_TOLERANCE = 1.01


class MemberRole(StrEnum):
    """What a field's frame does in its product."""

    BAND = "band"  # the frame used for its filter
    SHALLOWER = "shallower"  # same filter as a deeper (or unflagged) frame that is used
    OFF_REFERENCE = "off_reference"  # overlaps the reference frame too little
    FAILED = "failed"  # alignment failed (set by ``fields.align``)


def frame_id_of(product: Product) -> str:
    """A frame's identity across runs: input content and position in the file."""
    loc = ",".join(s for s in (str(product.hdu) if product.hdu is not None else "",
                              f"p{product.plane}" if product.plane is not None else "") if s)
    return f"{product.source_sha256}[{loc}]"


@dataclass(frozen=True, kw_only=True)
class FieldMember:
    """One frame of a field: its product (the catalog's record of the frame), footprint and role."""

    product: Product
    geometry: FrameGeometry
    filter: str
    exptime: float
    role: MemberRole
    overlap: float  # with the reference frame, over the smaller footprint
    coverage: float  # fraction of the field's grid it covers
    note: str | None = None

    @property
    def frame_id(self) -> str:
        return frame_id_of(self.product)

    @property
    def name(self) -> str:
        """The frame as people know it: its file name, with the HDU for multi-frame files."""
        from pathlib import Path

        base = Path(self.product.source_path).name
        return base if self.product.hdu is None else f"{base}[{self.product.hdu}]"


@dataclass(frozen=True, kw_only=True)
class FieldPlan:
    """A field: its key (a hash of its frames), name, grid and members, reference first."""

    key: str
    name: str
    grid: FrameGeometry
    reference: FieldMember
    members: tuple[FieldMember, ...]

    @property
    def bands(self) -> dict[str, FieldMember]:
        """The frame used per filter, bluest name first (F435W before F606W; the colour rule is compose's)."""
        chosen = {m.filter: m for m in self.members if m.role is MemberRole.BAND}
        return dict(sorted(chosen.items()))

    @property
    def filters(self) -> list[str]:
        return list(self.bands)


@dataclass(frozen=True)
class LeftOut:
    """A candidate frame in no field, and why."""

    product: Product
    reason: str


@dataclass
class FieldGrouping:
    """What grouping found: the fields, and the frames in none (with the reason)."""

    fields: list[FieldPlan] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    product: Product
    geometry: FrameGeometry
    filter: str
    exptime: float
    flagged: bool

    @property
    def frame_id(self) -> str:
        return frame_id_of(self.product)


def _band(product: Product) -> str | None:
    f = filter_of(product)
    return f if f is not None and _BAND.fullmatch(f) else None


def _exptime(product: Product) -> float:
    try:
        value = float((product.provenance or {}).get("exptime") or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return value if np.isfinite(value) and value > 0 else 0.0


def _candidates(products: Sequence[Product], grouping: FieldGrouping) -> list[_Candidate]:
    out: list[_Candidate] = []
    seen: set[str] = set()
    for p in products:
        if not p.ok or p.footprint is None or frame_id_of(p) in seen:
            continue  # a failed frame, a display image, or the same frame twice
        seen.add(frame_id_of(p))
        if isinstance(p.footprint, NoFootprint):
            grouping.left_out.append(LeftOut(p, f"kept out of field grouping: {p.footprint.reason}"))
            continue
        band = _band(p)
        if band is None:
            grouping.left_out.append(LeftOut(p, f"kept out of field grouping: no filter name in its header "
                                                f"({filter_of(p) or 'none'})"))
            continue
        out.append(_Candidate(p, p.footprint, band, _exptime(p), bool(p.flag_names)))
    return sorted(out, key=lambda c: c.frame_id)


def _components(cands: list[_Candidate], min_overlap: float) -> list[list[_Candidate]]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(cands)
    rows, cols = [], []
    for i in range(n):
        for j in range(i + 1, n):
            if overlap_fraction(cands[i].geometry, cands[j].geometry) >= min_overlap:
                rows.append(i)
                cols.append(j)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[_Candidate]] = {}
    for c, label in zip(cands, labels, strict=True):
        groups.setdefault(int(label), []).append(c)
    return [groups[k] for k in sorted(groups, key=lambda k: groups[k][0].frame_id)]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "field"


def _plan(component: list[_Candidate], min_overlap: float) -> FieldPlan | str:
    finest = min(c.geometry.pixel_scale_arcsec for c in component)
    fine = [c for c in component if c.geometry.pixel_scale_arcsec <= finest * _SCALE_TOLERANCE]
    ref = min(fine, key=lambda c: (-round(c.geometry.area_arcsec2, 3), c.flagged, -c.exptime, c.frame_id))
    grid = reference_grid(ref.geometry)
    scored: list[tuple[_Candidate, float, float]] = []
    for c in component:
        overlap = 1.0 if c is ref else overlap_fraction(c.geometry, ref.geometry)
        coverage = 1.0 if c is ref else covered_fraction(grid, by=c.geometry)
        scored.append((c, overlap, coverage))
    on_ref = [s for s in scored if s[1] >= min_overlap]
    best: dict[str, tuple[_Candidate, float, float]] = {}
    for s in sorted(on_ref, key=lambda s: (s[0].flagged, -s[0].exptime * s[2], -s[0].exptime, s[0].frame_id)):
        best.setdefault(s[0].filter, s)
    if len(best) < 2:
        only = ", ".join(sorted(best)) or "none"
        return f"in no field: one filter ({only}) among the frames overlapping it by at least {min_overlap:g}"
    members: list[FieldMember] = []
    for c, overlap, coverage in scored:
        if overlap < min_overlap:
            role, note = MemberRole.OFF_REFERENCE, (f"left out: overlaps the reference frame by {overlap:.2f}, "
                                                    f"less than {min_overlap:g}")
        elif best[c.filter][0] is c:
            role, note = MemberRole.BAND, None
        else:
            used = best[c.filter][0]
            role = MemberRole.SHALLOWER
            why = "unflagged" if used.flagged < c.flagged else "deeper"
            note = (f"left out: a {why} {c.filter} frame is used ({_label(used.product)}, "
                    f"{used.exptime:g} s over {100 * best[c.filter][2]:.0f}% of the field)")
        members.append(FieldMember(product=c.product, geometry=c.geometry, filter=c.filter, exptime=c.exptime,
                                   role=role, overlap=round(overlap, 4), coverage=round(coverage, 4), note=note))
    members.sort(key=lambda m: (m.product is not ref.product, m.role is not MemberRole.BAND, m.filter, m.frame_id))
    key = hashlib.sha256("\n".join(sorted(c.frame_id for c in component)).encode()).hexdigest()[:16]
    target = str((ref.product.provenance or {}).get("target") or "field")
    return FieldPlan(key=key, name=f"{_slug(target)}-{key[:8]}", grid=grid, reference=members[0],
                     members=tuple(members))


def _label(product: Product) -> str:
    from pathlib import Path

    return Path(product.source_path).name


def group_fields(products: Sequence[Product], *, min_overlap: float) -> FieldGrouping:
    """The fields among these frame products (``Product.footprint`` recorded), and the frames left out.

    A frame whose footprint is unusable, or that has no filter, is left out with the reason; so
    is every frame of a component with fewer than two filters (one frame, or one filter, is not
    a field). Only ``ok`` products count: a frame that failed has nothing to show.
    """
    grouping = FieldGrouping()
    for component in _components(_candidates(products, grouping), min_overlap):
        plan = _plan(component, min_overlap) if len(component) > 1 else (
            "in no field: no frame of another filter overlaps it by at least " f"{min_overlap:g}")
        if isinstance(plan, str):
            grouping.left_out.extend(LeftOut(c.product, plan) for c in component)
        else:
            grouping.fields.append(plan)
    return grouping
