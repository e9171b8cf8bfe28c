"""The sample seen as MAST content: CAOM observation rows, product rows, files, resolver names.

Also the protocol pieces a MAST-speaking router needs and other routers may reuse: the invoke
envelope with paging (``envelope``), the ``request=`` body parser (``parse_invoke_body``), Portal
filter semantics (``row_matches``), and the packaged columns config (``columns_config``). Angular
distances come from ``astro_pipeline.sky`` (astropy).
"""

from __future__ import annotations

import json
import math
import re
import threading
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from astro_pipeline.filters import filter_info
from astro_pipeline.sky import mean_position, separation_deg

__all__ = [
    "CAOM_FIELDS",
    "PRODUCT_FIELDS",
    "InvokeError",
    "MastContent",
    "build_mast_content",
    "columns_config",
    "envelope",
    "filter_rows",
    "load_sample_index",
    "mast_content",
    "parse_invoke_body",
    "row_matches",
]

#: CAOM observation fields in reply order, with the types MAST declares (obsid/objID: string).
CAOM_FIELDS: tuple[tuple[str, str], ...] = (
    ("intentType", "string"), ("obs_collection", "string"), ("provenance_name", "string"),
    ("instrument_name", "string"), ("project", "string"), ("filters", "string"),
    ("wavelength_region", "string"), ("target_name", "string"), ("target_classification", "string"),
    ("obs_id", "string"), ("s_ra", "float"), ("s_dec", "float"), ("dataproduct_type", "string"),
    ("proposal_pi", "string"), ("calib_level", "int"), ("t_min", "float"), ("t_max", "float"),
    ("t_exptime", "float"), ("em_min", "float"), ("em_max", "float"), ("obs_title", "string"),
    ("t_obs_release", "float"), ("proposal_id", "string"), ("proposal_type", "string"),
    ("sequence_number", "int"), ("s_region", "string"), ("jpegURL", "string"), ("dataURL", "string"),
    ("dataRights", "string"), ("mtFlag", "boolean"), ("srcDen", "float"), ("obsid", "string"),
    ("objID", "string"), ("_selected_", "boolean"),
)
#: Extra fields of positional replies.
DISTANCE_FIELD = ("distance", "float")
OBJID1_FIELD = ("objID1", "string")

#: Mast.Caom.Products fields in reply order (current MAST adds proposal_id..filters to the recorded set).
PRODUCT_FIELDS: tuple[tuple[str, str], ...] = (
    ("obsID", "string"), ("obs_collection", "string"), ("dataproduct_type", "string"),
    ("obs_id", "string"), ("description", "string"), ("type", "string"), ("dataURI", "string"),
    ("productType", "string"), ("productGroupDescription", "string"),
    ("productSubGroupDescription", "string"), ("productDocumentationURL", "string"),
    ("project", "string"), ("prvversion", "string"), ("proposal_id", "string"),
    ("productFilename", "string"), ("size", "int"), ("parent_obsid", "string"),
    ("dataRights", "string"), ("calib_level", "int"), ("filters", "string"), ("_selected_", "boolean"),
)

_SUFFIX_TEXT = {
    "DRZ": ("Calibrated combined image", 3), "DRC": ("Calibrated, CTE-corrected combined image", 3),
    "FLT": ("Calibrated exposure", 2), "FLC": ("Calibrated, CTE-corrected exposure", 2),
    "RAW": ("Raw exposure", 1), "C0M": ("Calibrated exposure", 2), "C1M": ("Data quality", 2),
}
_PIPELINES = {"ACS": "CALACS", "WFC3": "CALWF3", "WFPC2": "CALWP2", "NICMOS": "CALNICA", "STIS": "CALSTIS"}


class InvokeError(ValueError):
    """A request the service answers with ``status: ERROR`` and this message."""


# ------------------------------------------------------------------------------- protocol
@cache
def _columns_configs() -> dict[str, Any]:
    text = resources.files("astro_pipeline.archives.replica").joinpath("data/columnsconfig.json").read_text("utf-8")
    return json.loads(text)


def columns_config(col_config_id: str) -> dict[str, Any]:
    """The columns config for any ``colConfigId`` (unknown ids get the CAOM observation config)."""
    configs = _columns_configs()
    return configs.get(col_config_id) or configs["Mast.Caom.Cone"]


def parse_invoke_body(body: bytes | str) -> dict[str, Any]:
    """Decode an ``/api/v0/invoke`` body (``request=<url-quoted JSON>``); ``InvokeError`` if unusable."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    values = parse_qs(text, keep_blank_values=True).get("request")
    if not values:
        raise InvokeError("Request body has no 'request' parameter.")
    try:
        obj = json.loads(values[0])
    except ValueError as exc:
        raise InvokeError(f"Could not parse request JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("service"), str):
        raise InvokeError("Request JSON needs a 'service' name.")
    return obj


def envelope(rows: list[dict[str, Any]], fields: list[tuple[str, str]] | list[dict[str, str]],
             *, page: int = 1, pagesize: int = 50000, status: str = "COMPLETE", msg: str = "") -> dict[str, Any]:
    """The invoke reply for one page of ``rows``.

    ``page`` is echoed exactly; ``pagesFiltered = ceil(rowsFiltered / pagesize)`` (0 rows -> 0),
    which is what ends astroquery's paging loop.
    """
    if pagesize < 1 or page < 1:
        raise InvokeError("page and pagesize must be positive integers.")
    total = len(rows)
    start = (page - 1) * pagesize
    chunk = rows[start:start + pagesize]
    field_list = [f if isinstance(f, dict) else {"name": f[0], "type": f[1]} for f in fields]
    return {
        "status": status, "msg": msg, "data": chunk, "fields": field_list,
        "paging": {"page": page, "pageSize": pagesize, "pagesFiltered": math.ceil(total / pagesize),
                   "rows": len(chunk), "rowsFiltered": total, "rowsTotal": total},
    }


def _like(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        out.append(".*" if ch in "%*" else "." if ch == "_" else re.escape(ch))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _tokens(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, float) and value.is_integer():
        return [str(int(value)), str(value)]
    return [t.strip() for t in str(value).split(";")] if isinstance(value, str) else [str(value)]


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def row_matches(row: dict[str, Any], flt: dict[str, Any]) -> bool:
    """One Portal filter: OR within ``values`` (``;`` multi-valued cells match on any token),
    ``freeText`` as case-insensitive SQL LIKE, ``{"min","max"}`` values as an inclusive range."""
    name = flt.get("paramName")
    cell = row.get(name)
    values = flt.get("values") or []
    free = flt.get("freeText")
    if not values and not free:
        return True
    for value in values:
        if isinstance(value, dict):
            num = _number(cell)
            lo, hi = _number(value.get("min")), _number(value.get("max"))
            if num is not None and (lo is None or num >= lo) and (hi is None or num <= hi):
                return True
            continue
        want = str(value).strip().lower()
        tokens = [t.lower() for t in _tokens(cell)]
        if want in tokens:
            return True
        a, b = _number(cell), _number(value)
        if a is not None and b is not None and a == b:
            return True
    if free:
        text = "" if cell is None else str(cell)
        rx = _like(str(free))
        if rx.fullmatch(text) or any(rx.fullmatch(t) for t in _tokens(cell)):
            return True
    return False


def filter_rows(rows: list[dict[str, Any]], filters: list[dict[str, Any]], columns: set[str]) -> list[dict[str, Any]]:
    """Rows passing every filter (AND); an unknown column is an ``InvokeError`` like MAST's SQL error."""
    if not isinstance(filters, list):
        raise InvokeError("'filters' must be a list.")
    for flt in filters:
        if not isinstance(flt, dict) or flt.get("paramName") not in columns:
            name = flt.get("paramName") if isinstance(flt, dict) else flt
            raise InvokeError(f"Invalid column name '{name}'.")
    return [row for row in rows if all(row_matches(row, f) for f in filters)]


# ------------------------------------------------------------------------------- sample -> MAST
@dataclass
class MastContent:
    """What the MAST replica serves, derived once from the sample."""

    root: Path
    observations: list[dict[str, Any]] = field(default_factory=list)
    products: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # obsid -> product rows
    files: dict[str, Path] = field(default_factory=dict)  # dataURI -> file
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # normalised name -> resolver entry

    def resolve(self, name: str) -> dict[str, Any] | None:
        return self.targets.get(_norm_name(name))


def _norm_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def _mjd(iso: str) -> float | None:
    if not iso:
        return None
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = datetime.combine(date.fromisoformat(iso[:10]), datetime.min.time())
        except ValueError:
            return None
    epoch = datetime(1858, 11, 17, tzinfo=when.tzinfo)
    return (when - epoch).total_seconds() / 86400.0


def _wavelength(filter_name: str, instrument: str) -> tuple[float | None, float | None, str]:
    """Approximate (em_min, em_max) in nm and waveband from an HST filter name like F814W."""
    info = filter_info(filter_name, instrument=instrument)
    if info is None:
        return None, None, "OPTICAL"
    centre = info.pivot_nm  # the project's one wavelength rule (``astro_pipeline.filters``)
    suffix = info.name.lstrip("FRQ0123456789")[:1]
    width = {"W": 0.12, "M": 0.05, "N": 0.01}.get(suffix, 0.1) * centre
    band = "UV" if centre < 380 else "INFRARED" if centre > 1000 else "OPTICAL"
    return round(centre - width, 2), round(centre + width, 2), band


def _footprint(path: Path, ra: float, dec: float) -> str:
    """``s_region`` from the file's WCS footprint, or a small circle when it has none."""
    try:
        from astropy.io import fits
        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
                for hdu in hdul:
                    if hdu.header.get("NAXIS", 0) >= 2 and "CTYPE1" in hdu.header:
                        corners = WCS(hdu.header).celestial.calc_footprint()
                        coords = " ".join(f"{a:.8f} {b:.8f}" for a, b in [*corners, corners[0]])
                        return f"POLYGON ICRS {coords}"
    except Exception:  # noqa: BLE001 - a footprint is descriptive only
        pass
    return f"CIRCLE ICRS {ra:.8f} {dec:.8f} 0.02"


def _suffix(filename: str) -> str:
    stem = filename.rsplit(".", 1)[0]
    return stem.rsplit("_", 1)[-1].upper() if "_" in stem else "RAW"


def build_mast_content(index: Any) -> MastContent:
    """CAOM rows, product rows and files for the sample's MAST science items.

    Items sharing an ``id`` (obs_id) form one observation whose ``obsid`` is the first item's.
    """
    root = Path(index.root)
    content = MastContent(root=root)
    groups: dict[str, list[Any]] = {}
    for item in index.items:
        if getattr(item, "archive", "") == "mast" and getattr(item, "kind", "science") == "science":
            groups.setdefault(item.id, []).append(item)
    by_target: dict[str, list[dict[str, Any]]] = {}
    by_field: dict[str, list[dict[str, Any]]] = {}
    for obs_id in sorted(groups):
        items = sorted(groups[obs_id], key=lambda it: it.path)
        first = items[0]
        obsid = str(first.obsid)
        instrument = first.instrument or ""
        pipeline = _PIPELINES.get(instrument.split("/")[0].upper(), "CALHST")
        em_min, em_max, band = _wavelength(first.filter or "", instrument)
        t_min = _mjd(first.date_obs)
        t_max = t_min + float(first.exptime or 0) / 86400.0 if t_min is not None else None
        levels = []
        products: list[dict[str, Any]] = []
        for item in items:
            path = root / item.path
            filename = Path(item.path).name
            suffix = _suffix(filename)
            text, level = _SUFFIX_TEXT.get(suffix, ("Science file", 2))
            levels.append(level)
            uri = f"mast:HST/product/{filename}"
            if uri in content.files and content.files[uri] != path:
                raise ValueError(f"sample has two MAST files named {filename} ({content.files[uri]} and {path})")
            content.files[uri] = path
            size = path.stat().st_size if path.is_file() else int(item.size)
            products.append({
                "obsID": obsid, "obs_collection": "HST", "dataproduct_type": "image",
                "obs_id": item.id, "description": f"DADS {suffix} file - {text} {instrument}",
                "type": "S", "dataURI": uri, "productType": "SCIENCE",
                "productGroupDescription": "Minimum Recommended Products",
                "productSubGroupDescription": suffix, "productDocumentationURL": "",
                "project": pipeline, "prvversion": "sample", "proposal_id": str(item.proposal_id),
                "productFilename": filename, "size": size, "parent_obsid": obsid,
                "dataRights": "PUBLIC", "calib_level": level, "filters": item.filter or "",
                "_selected_": None,
            })
        content.products[obsid] = products
        best = max(products, key=lambda p: p["calib_level"])
        row = {
            "intentType": "science", "obs_collection": "HST", "provenance_name": pipeline,
            "instrument_name": instrument, "project": "HST", "filters": first.filter or "",
            "wavelength_region": band, "target_name": first.target or "",
            "target_classification": "", "obs_id": obs_id, "s_ra": float(first.ra),
            "s_dec": float(first.dec), "dataproduct_type": "image", "proposal_pi": "",
            "calib_level": max(levels), "t_min": t_min, "t_max": t_max,
            "t_exptime": float(first.exptime or 0), "em_min": em_min, "em_max": em_max,
            "obs_title": first.title or "", "t_obs_release": t_max,
            "proposal_id": str(first.proposal_id), "proposal_type": "GO", "sequence_number": None,
            "s_region": _footprint(root / best_path(items, best), float(first.ra), float(first.dec)),
            "jpegURL": None, "dataURL": best["dataURI"], "dataRights": "PUBLIC", "mtFlag": False,
            "srcDen": None, "obsid": obsid, "objID": str(int(obsid) + 1_000_000_000) if obsid.isdigit() else obsid,
            "_selected_": None,
        }
        content.observations.append(row)
        if first.target:
            by_target.setdefault(first.target, []).append(row)
        for fld in sorted({getattr(it, "field", "") for it in items} - {""}):
            by_field.setdefault(fld, []).append(row)
    names = {_norm_name(t): (t, rows) for t, rows in sorted(by_target.items())}
    for fld, rows in sorted(by_field.items()):  # field names resolve too, unless a target has that name
        names.setdefault(_norm_name(fld), (fld, rows))
    for key, (name, rows) in names.items():
        ra, dec = mean_position((r["s_ra"], r["s_dec"]) for r in rows)
        ra, dec = round(ra, 6), round(dec, 6)
        radius = max(separation_deg(ra, dec, r["s_ra"], r["s_dec"]) for r in rows) + 0.01
        content.targets[key] = {
            "canonicalName": name, "ra": ra, "decl": dec,
            "radius": round(radius, 4), "objectType": "G",
        }
    return content


def best_path(items: list[Any], product: dict[str, Any]) -> str:
    return next(it.path for it in items if Path(it.path).name == product["productFilename"])


_LOCK = threading.Lock()


def load_sample_index(state: Any) -> Any:
    """The sample the replica serves: ``state.extra["sample_index"]`` if set, else ``load_sample``."""
    index = state.extra.get("sample_index")
    if index is None:
        with _LOCK:
            index = state.extra.get("sample_index")
            if index is None:
                from astro_pipeline.sample import load_sample

                index = load_sample(Path(state.sample_root))
                state.extra["sample_index"] = index
    return index


def mast_content(state: Any) -> MastContent:
    """The (cached) MAST view of the replica's sample."""
    content = state.extra.get("mast_content")
    if content is None:
        index = load_sample_index(state)
        with _LOCK:
            content = state.extra.get("mast_content")
            if content is None:
                content = build_mast_content(index)
                state.extra["mast_content"] = content
    return content
