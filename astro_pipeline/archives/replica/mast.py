"""MAST routes of the replica: Portal columnsconfig and invoke, file download, SANTA resolver.

Speaks what ``astroquery.mast.Observations`` 0.4.11 sends (ARCHIVES.md section 1):

* ``POST /portal/Mashup/Mashup.asmx/columnsconfig`` (``colConfigId=<any>``);
* ``POST /api/v0/invoke`` (``request=<JSON>``): ``Mast.Caom.Cone``, ``Mast.Caom.Filtered``,
  ``Mast.Caom.Filtered.Position`` (``columns`` ``*``, a list, or ``COUNT_BIG(*)``), ``Mast.Caom.Products``;
* ``HEAD``/``GET /api/v0.1/Download/file?uri=<dataURI>`` and ``POST /api/v0.1/Download/bundle.sh``;
* ``GET /Santa-war/query`` (also reached as an absolute-form proxied request for
  ``http://mastresolver.stsci.edu/Santa-war/query``).
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response

from astro_pipeline.archives.replica.content import (
    CAOM_FIELDS,
    DISTANCE_FIELD,
    OBJID1_FIELD,
    PRODUCT_FIELDS,
    InvokeError,
    MastContent,
    columns_config,
    envelope,
    filter_rows,
    mast_content,
    parse_invoke_body,
)
from astro_pipeline.sky import separation_deg

__all__ = ["build_router", "invoke"]

_CAOM_COLUMNS = {name for name, _ in CAOM_FIELDS} | {DISTANCE_FIELD[0]}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, allow_nan=False), status_code=status, media_type="application/json")


def _error(msg: str) -> dict[str, Any]:
    return {"status": "ERROR", "msg": msg, "data": [], "fields": []}


def _number(params: dict[str, Any], key: str) -> float:
    try:
        value = float(params[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvokeError(f"Parameter '{key}' is required and must be a number.") from exc
    if not math.isfinite(value):
        raise InvokeError(f"Parameter '{key}' must be finite.")
    return value


def _cone(rows: list[dict[str, Any]], ra: float, dec: float, radius: float) -> list[dict[str, Any]]:
    """Rows whose centre lies within ``radius`` deg of (ra, dec), nearest first, with ``distance`` in arcsec."""
    if not (-90.0 <= dec <= 90.0) or radius < 0:
        raise InvokeError("Invalid position: dec must be within [-90, 90] and radius >= 0.")
    out = []
    for row in rows:
        sep = separation_deg(ra, dec, row["s_ra"], row["s_dec"])
        if sep <= radius:
            out.append({**row, "objID1": row["objID"], "distance": round(sep * 3600.0, 6)})
    out.sort(key=lambda r: (r["distance"], r["obs_id"]))
    return out


def _position(text: Any) -> tuple[float, float, float]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        ra, dec, radius = (float(p) for p in parts)
    except ValueError as exc:
        raise InvokeError(f"Invalid position '{text}': expected 'ra, dec, radius' in degrees.") from exc
    return ra, dec, radius


def _select_columns(columns: Any, fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if columns in (None, "", "*"):
        return fields
    wanted = [c.strip() for c in str(columns).split(",") if c.strip()]
    known = dict(fields)
    for name in wanted:
        if name not in known:
            raise InvokeError(f"Invalid column name '{name}'.")
    return [(name, known[name]) for name in wanted]


def invoke(content: MastContent, request: dict[str, Any]) -> dict[str, Any]:
    """Answer one decoded invoke request (an envelope; errors as ``status: ERROR``)."""
    service = request["service"]
    params = request.get("params") or {}
    try:
        page = int(request.get("page", 1) or 1)
        pagesize = int(request.get("pagesize", 50000) or 50000)
    except (TypeError, ValueError):
        return _error("page and pagesize must be integers.")
    try:
        if not isinstance(params, dict):
            raise InvokeError("'params' must be an object.")
        fields = list(CAOM_FIELDS)
        if service == "Mast.Caom.Cone":
            rows = _cone(content.observations, _number(params, "ra"), _number(params, "dec"),
                         _number(params, "radius"))
            fields = [*fields[:-1], DISTANCE_FIELD, fields[-1]]
        elif service in ("Mast.Caom.Filtered", "Mast.Caom.Filtered.Position"):
            rows = content.observations
            if service == "Mast.Caom.Filtered.Position":
                if "position" not in params:
                    raise InvokeError("Parameter 'position' is required.")
                rows = _cone(rows, *_position(params["position"]))
                fields = [*fields[:-1], OBJID1_FIELD, DISTANCE_FIELD, fields[-1]]
            rows = filter_rows(rows, params.get("filters") or [], _CAOM_COLUMNS)
            columns = params.get("columns", "*")
            if str(columns).replace(" ", "").upper() == "COUNT_BIG(*)":
                return envelope([{"Column1": len(rows)}], [("Column1", "string")], page=1, pagesize=pagesize)
            fields = _select_columns(columns, fields)
        elif service == "Mast.Caom.Products":
            ids = [s.strip() for s in str(params.get("obsid", "")).split(",") if s.strip()]
            if not ids or not all(re.fullmatch(r"-?\d+", s) for s in ids):
                raise InvokeError("Error converting data type varchar to bigint.")
            rows = [p for obsid in ids for p in content.products.get(obsid, [])]
            fields = list(PRODUCT_FIELDS)
        else:
            raise InvokeError(f"Unknown service '{service}'.")
        names = [f[0] for f in fields]
        rows = [{k: r.get(k) for k in names} for r in rows]
        return envelope(rows, fields, page=page, pagesize=pagesize)
    except InvokeError as exc:
        return _error(str(exc))


def build_router(state: Any) -> APIRouter:
    """The MAST routes, bound to the replica ``state`` (sample content loads on first use)."""
    router = APIRouter()

    @router.api_route("/portal/Mashup/Mashup.asmx/columnsconfig", methods=["GET", "POST"])
    async def columnsconfig(request: Request) -> Response:
        body = (await request.body()).decode("utf-8", "replace")
        col_id = (parse_qs(body).get("colConfigId") or [request.query_params.get("colConfigId", "")])[0]
        return _json(columns_config(col_id.strip()))

    @router.post("/api/v0/invoke")
    async def invoke_route(request: Request) -> Response:
        try:
            decoded = parse_invoke_body(await request.body())
        except InvokeError as exc:
            return _json(_error(str(exc)))
        content = mast_content(state)
        return _json(invoke(content, decoded))

    @router.api_route("/api/v0.1/Download/file", methods=["GET", "HEAD"])
    def download_file(uri: str = "") -> Response:
        content = mast_content(state)
        path = content.files.get(uri)
        if path is None or not path.is_file():
            return PlainTextResponse(f"File not found: {uri}", status_code=404)
        return FileResponse(path, media_type="application/octet-stream", filename=os.path.basename(path),
                            stat_result=path.stat())

    @router.post("/api/v0.1/Download/bundle.sh")
    async def bundle_sh(request: Request) -> Response:
        uris = parse_qs((await request.body()).decode("utf-8", "replace")).get("uri", [])
        content = mast_content(state)
        base = str(request.base_url).rstrip("/")
        lines = ["#!/bin/sh", "# MAST download script (replica)", ""]
        for uri in uris:
            if uri in content.files:
                name = os.path.basename(content.files[uri])
                url = f"{base}/api/v0.1/Download/file?uri={quote(uri, safe=':/')}"
                lines.append(f"curl --globoff --location-trusted -f --progress-bar --create-dirs "
                             f"--output 'MAST/{name}' '{url}'")
            else:
                lines.append(f"# not found: {uri}")
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/x-sh",
                                 headers={"Content-Disposition": "attachment; filename=bundle.sh"})

    @router.get("/Santa-war/query")
    def santa(request: Request) -> Response:
        content = mast_content(state)
        names = request.query_params.getlist("name")
        wanted = (request.query_params.get("resolver") or "").upper()
        found = []
        for name in names:
            hit = content.resolve(name)
            if hit is None or (wanted and wanted not in ("SIMBAD", "NED")):
                continue
            found.append({"searchString": name.lower(), "resolver": wanted or "SIMBAD", "cached": True,
                          "resolverTime": 1, "searchRadius": -1.0, **hit})
        return _json({"resolvedCoordinate": found, "status": ""})

    return router
