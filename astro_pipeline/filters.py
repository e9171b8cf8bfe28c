"""The one wavelength rule: an HST filter's pivot wavelength, and the chromatic slot it belongs to.

Every part of the project that orders filters or puts a band in a colour channel asks here
(compose, the same-grid Lupton composites, the archive replica, the colour model's slots).

* **Name rule.** ACS, WFC3/UVIS and WFPC2 names carry the wavelength in nm (F606W is about
  606 nm). WFC3/IR (and NICMOS) names are in units of 10 nm: F160W is 1600 nm, F098M 980 nm. A
  three-digit ``F0nn``/``F1nn`` name ending in W, M or N is read as infrared unless the
  instrument is an ultraviolet/optical one (ACS, WFPC2, WFC3/UVIS, STIS, FOC) or the table says
  otherwise.
* **Table** (:data:`EXCEPTIONS`): filters whose name is not their wavelength (long-pass and
  extra-wide filters are named for a cut-on edge; the far-UV F122M, F170W, F185W look infrared
  by the name rule) and the narrow bands, with the line each isolates (F656N H-alpha, F502N [O III]).
* **Slots** by absolute wavelength: B below 500 nm, G from 500 up to 650 nm, R from 650 nm
  (:func:`slot_of`). So a lone F606W is a G band, and F814W, F110W and F160W are all R.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "EXCEPTIONS",
    "SLOT_EDGES_NM",
    "FilterInfo",
    "Slot",
    "filter_info",
    "parse_filter",
    "pivot_wavelength_nm",
    "slot_of",
    "wavelength_order",
]

#: Slot boundaries in nm: B < 500 <= G < 650 <= R.
SLOT_EDGES_NM: tuple[float, float] = (500.0, 650.0)


class Slot(StrEnum):
    """A chromatic channel of a colour image; channel arrays are in R, G, B order (``Slot.ORDER``)."""

    R = "R"
    G = "G"
    B = "B"

    @property
    def index(self) -> int:
        """Position in an (H, W, 3) RGB array."""
        return "RGB".index(self.value)

    @classmethod
    def parse(cls, text: str) -> Slot:
        """``"red"``/``"r"``/``"R"`` -> ``Slot.R`` (green, blue likewise)."""
        key = text.strip().lower()
        for slot, names in ((cls.R, ("r", "red")), (cls.G, ("g", "green")), (cls.B, ("b", "blue"))):
            if key in names:
                return slot
        raise ValueError(f"unknown colour slot {text!r}; use red, green or blue")


#: Filters whose name is not their wavelength, and the narrow bands: name -> (pivot nm, what it isolates).
#: Approximate pivot wavelengths (after the ACS, WFC3 and WFPC2 handbooks, to a few nm: instruments
#: differ by that much, which moves no filter here across a slot edge); enough to order and slot
#: filters, not a photometric reference (PHOTPLAM in the header is).
EXCEPTIONS: dict[str, tuple[float, str | None]] = {
    # long-pass and extra-wide filters: the name is the cut-on edge, the pivot lies far redder
    "F200LP": (497.0, None), "F300X": (282.0, None), "F350LP": (585.0, None), "F475X": (494.0, None),
    "F600LP": (747.0, None), "F850LP": (905.0, None),
    # far-UV filters whose three-digit names would read as infrared
    "F122M": (122.0, "Lyman-alpha"), "F170W": (170.0, None), "F185W": (185.0, None),
    # narrow bands (UV / optical)
    "F343N": (343.0, "[Ne V]"), "F373N": (373.0, "[O II]"), "F375N": (373.0, "[O II]"),
    "F395N": (395.0, "Ca II"), "F437N": (437.0, "[O III] 436.3"), "F469N": (469.0, "He II"),
    "F487N": (487.0, "H-beta"), "F502N": (501.0, "[O III]"), "F588N": (589.0, "He I / Na I"),
    "F631N": (630.0, "[O I]"), "F645N": (645.0, None), "F656N": (656.0, "H-alpha"),
    "F657N": (657.0, "H-alpha + [N II]"), "F658N": (658.0, "[N II]"), "F660N": (660.0, "[N II]"),
    "F665N": (666.0, "H-alpha (redshifted)"), "F673N": (673.0, "[S II]"), "F680N": (688.0, None),
    "F892N": (892.0, "CH4"), "F953N": (953.0, "[S III]"),
    # WFC3/IR narrow bands (the name rule's 10 nm units, with the line)
    "F126N": (1258.0, "[Fe II]"), "F128N": (1283.0, "Paschen-beta"), "F130N": (1301.0, None),
    "F132N": (1319.0, None), "F164N": (1645.0, "[Fe II]"), "F167N": (1668.0, None),
    # NICMOS names at or above 200 that the name rule would read as nm
    "F187N": (1875.0, "Paschen-alpha"), "F190N": (1900.0, None), "F212N": (2121.0, "H2"),
    "F215N": (2150.0, None), "F222M": (2216.0, None), "F237M": (2369.0, None),
}

_UV_OPTICAL = ("ACS", "WFPC", "UVIS", "STIS", "FOC", "FOS")
_INFRARED = ("NICMOS", "NIC1", "NIC2", "NIC3", "/IR", "WFC3IR", "WFC3-IR")
_FILTER = re.compile(r"(?<![A-Z0-9])F[RQ]?(\d{3,4})([A-Z][A-Z0-9]*)?(?![A-Z0-9])")
_NO_FILTER = {"", "CLEAR", "CLEAR1L", "CLEAR2L", "CLEAR1S", "CLEAR2S", "N/A", "NONE", "ANY", "BLANK", "DETECTION"}


@dataclass(frozen=True)
class FilterInfo:
    """A filter as the rule sees it: canonical name, pivot wavelength, slot, and how it was decided."""

    name: str
    pivot_nm: float
    slot: Slot
    line: str | None
    rule: str  # "table" | "name (nm)" | "name (10 nm, infrared)"

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "pivot_nm": self.pivot_nm, "slot": str(self.slot), "line": self.line,
                "rule": self.rule}


def parse_filter(text: str | None) -> str | None:
    """The HST filter named in a FILTER card or a file name (``"CLEAR1L+F814W"`` -> ``"F814W"``,
    ``"hst_10452_acs_wfc_f658n_drz.fits"`` -> ``"F658N"``); None when there is none."""
    if text is None:
        return None
    up = str(text).strip().upper()
    if up in _NO_FILTER:
        return None
    m = _FILTER.search(up.replace("_", " ").replace("-", " "))
    return m.group(0) if m else None


def _is_infrared(instrument: str | None, detector: str | None) -> bool | None:
    """True/False when the instrument (and detector) say so; None when they do not."""
    text = " ".join(s.upper() for s in (instrument, detector) if s)
    if not text:
        return None
    if any(k in text for k in _INFRARED) or (("WFC3" in text) and re.search(r"\bIR\b", text)):
        return True
    if any(k in text for k in _UV_OPTICAL):
        return False
    return None


def filter_info(name: str | None, *, instrument: str | None = None, detector: str | None = None) -> FilterInfo | None:
    """The rule applied to one filter name (a FILTER card, a file name); None when no filter is named."""
    canonical = parse_filter(name)
    if canonical is None:
        return None
    m = _FILTER.fullmatch(canonical)
    assert m is not None  # parse_filter only returns names the pattern matches
    digits, suffix = m.group(1), m.group(2) or ""
    infrared = _is_infrared(instrument, detector)
    key = f"F{digits}{suffix}"
    if key in EXCEPTIONS:
        pivot, line = EXCEPTIONS[key]
        return FilterInfo(canonical, pivot, slot_of(pivot), line, "table")
    value = float(digits)
    ir_name = len(digits) == 3 and value < 200 and suffix in ("W", "M", "N")
    if infrared or (infrared is None and ir_name):
        return FilterInfo(canonical, value * 10.0, slot_of(value * 10.0), None, "name (10 nm, infrared)")
    return FilterInfo(canonical, value, slot_of(value), None, "name (nm)")


def pivot_wavelength_nm(name: str | None, *, instrument: str | None = None, detector: str | None = None) -> float | None:
    """Pivot wavelength in nm of the filter ``name`` names (see the module docstring); None if none."""
    info = filter_info(name, instrument=instrument, detector=detector)
    return None if info is None else info.pivot_nm


def slot_of(pivot_nm: float) -> Slot:
    """The chromatic slot of a wavelength: B below 500 nm, G from 500 up to 650 nm, R from 650 nm."""
    if pivot_nm < SLOT_EDGES_NM[0]:
        return Slot.B
    if pivot_nm < SLOT_EDGES_NM[1]:
        return Slot.G
    return Slot.R


def wavelength_order(name: str | None, *, instrument: str | None = None) -> float:
    """Sort key, bluest first; filters the rule cannot read sort last."""
    pivot = pivot_wavelength_nm(name, instrument=instrument)
    return float("inf") if pivot is None else pivot
