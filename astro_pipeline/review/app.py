"""The curator review web app: queue of flagged frames, decisions, sign-in, images by catalog id.

``create_review_app(catalog=..., settings=..., access=...)`` builds one FastAPI app. Pages are
rendered on the server with Jinja2 (autoescaped: archive titles can carry HTML); a small static
script adds keyboard shortcuts and sends decisions as JSON with the session's CSRF token. Without
a signed-in session the page is read-only and every change is refused with 401.

Defences (the threat model is in the README): ``guard.ReviewGuard`` refuses Hosts outside the
access policy's allow-list (421, DNS rebinding), caps bodies at 1 MB (413) and adds the security
headers to every response; changes need an Origin on the allow-list, a live session kept in the
catalog and its CSRF token; sign-in is rate limited per client (429); ids are ASCII digits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from astro_pipeline.catalog import NotFoundError
from astro_pipeline.review.access import ReviewAccess, hostname_of
from astro_pipeline.review.auth import (
    COOKIE_NAME,
    CSRF_HEADER,
    ReviewerSession,
    SessionSigner,
    SessionStore,
    TokenError,
    check_tokens,
    match_token,
    same_token,
)
from astro_pipeline.review.files import ServedImage
from astro_pipeline.review.guard import MAX_BODY_BYTES, SECURITY_HEADERS, ReviewGuard
from astro_pipeline.review.queries import ImageNotFound, ReviewQueries
from astro_pipeline.review.ratelimit import SignInLimiter
from astro_pipeline.review.views import DECISION_LABELS, DECISIONS, STATUSES, QueueFilters

__all__ = ["ReviewConfigError", "ReviewError", "create_review_app"]

_HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = _HERE / "templates"
STATIC_DIR = _HERE / "static"
MAX_NOTE_CHARS = 2000
MAX_PAGE = 200
MAX_BULK = 5000

_DIGITS = re.compile(r"[0-9]{1,18}")


class ReviewConfigError(ValueError):
    """Settings the review app refuses to start with (e.g. a reviewer token under 16 characters)."""


class ReviewError(Exception):
    """A request the app refuses, with the HTTP status and a message for the reviewer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _template_env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["DECISION_LABELS"] = DECISION_LABELS
    return env


def _wants_json(request: Request) -> bool:
    path = request.url.path
    accept = request.headers.get("accept", "")
    return path.startswith("/api/") or ("application/json" in accept and "text/html" not in accept)


def ascii_id(raw: str) -> int | None:
    """``raw`` as a catalog id when it is 1-18 ASCII digits (``int()`` would also take "١" or "²")."""
    return int(raw) if _DIGITS.fullmatch(raw) else None


def _parse_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return default
    value = ascii_id(raw)
    if value is None:
        raise ReviewError(400, f"{name!r} must be a whole number (ASCII digits), got {raw[:40]!r}")
    if not lo <= value <= hi:
        raise ReviewError(400, f"{name!r} must be between {lo} and {hi}, got {value}")
    return value


def filters_from_mapping(get: Any, *, where: str) -> QueueFilters:
    """Queue filters from query arguments or a JSON object (``get(name) -> str | None``)."""

    def text(name: str) -> str:
        value = get(name)
        if value is None:
            return ""
        if not isinstance(value, str | int | float):
            raise ReviewError(400, f"{where}: {name!r} must be text")
        return str(value).strip()[:200]

    def number(name: str, lo: float, hi: float) -> float | None:
        raw = text(name)
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise ReviewError(400, f"{where}: {name!r} must be a number of degrees, got {raw!r}") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ReviewError(400, f"{where}: {name!r} must be between {lo:g} and {hi:g} degrees, got {raw!r}")
        return value

    ra, dec, radius = number("ra", 0.0, 360.0), number("dec", -90.0, 90.0), number("radius", 0.0, 180.0)
    given = [v is not None for v in (ra, dec, radius)]
    if any(given) and not all(given):
        raise ReviewError(400, f"{where}: a sky region needs all of ra, dec and radius (degrees)")
    status = text("status") or "open"
    if status not in STATUSES:
        raise ReviewError(400, f"{where}: status must be one of {', '.join(STATUSES)}, got {status!r}")
    return QueueFilters(flag=text("flag"), archive=text("archive"), run=text("run"),
                        ra=ra, dec=dec, radius=radius, status=status)


def create_review_app(*, catalog: Any, settings: Any, access: ReviewAccess | None = None,
                      limiter: SignInLimiter | None = None) -> FastAPI:
    """The review app over ``catalog`` (an ``astro_pipeline.catalog.Catalog``) and ``settings``.

    ``access``: the names the page answers to and whether it is read-only (default: loopback
    names, writes allowed; ``review.access.review_access`` builds it for a bind address).
    Raises ``ReviewConfigError`` for a reviewer token shorter than 16 characters.
    """
    tokens: dict[str, str] = dict(getattr(settings, "review_tokens", {}) or {})
    try:
        check_tokens(tokens)
    except TokenError as exc:
        raise ReviewConfigError(str(exc)) from None
    access = access or ReviewAccess()
    limiter = limiter or SignInLimiter()
    app = FastAPI(title="astro-pipeline review", docs_url=None, redoc_url=None, openapi_url=None)
    queries = ReviewQueries(catalog, settings=settings)
    signer = SessionSigner(getattr(settings, "review_secret", None))
    sessions = SessionStore(catalog, signer, tokens)
    env = _template_env()
    app.state.review_queries = queries
    app.state.session_signer = signer
    app.state.access = access
    app.add_middleware(ReviewGuard, access=access, max_body=MAX_BODY_BYTES)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    read_only_why = (f"this review page is served read-only (on {access.bind_host}, without "
                     "--allow-remote-writes), so sign-in and decisions are off")

    # ---- helpers -----------------------------------------------------------------------------
    def session_of(request: Request) -> ReviewerSession | None:
        """The live session of this request (looked up in the catalog once per request)."""
        if not hasattr(request.state, "review_session"):
            cookie = request.cookies.get(COOKIE_NAME)
            request.state.review_session = sessions.find(cookie) if cookie else None
        return request.state.review_session  # type: ignore[no-any-return]

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        try:
            session = session_of(request)
        except Exception:  # noqa: BLE001 - an error page must render even when the catalog fails
            session = None
        html = env.get_template(name).render(
            session=session, tokens_configured=bool(tokens), read_only=access.read_only,
            read_only_why=read_only_why, request_path=request.url.path, **ctx
        )
        return HTMLResponse(html, status_code=status)

    def check_origin(request: Request) -> None:
        """Refuse cross-site requests: the Origin must name a host on the allow-list (not just echo Host)."""
        origin = request.headers.get("origin")
        if origin is not None and not access.allows(hostname_of(origin)):
            raise ReviewError(403, f"cross-site request refused (Origin {origin[:100]} is not this server)")
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise ReviewError(403, "cross-site request refused")

    def check_writable() -> None:
        if access.read_only:
            raise ReviewError(403, read_only_why)

    def require_change_rights(request: Request, form_token: str | None = None) -> ReviewerSession:
        """The signed-in reviewer, after checking the CSRF token; else a 401/403 ReviewError."""
        check_writable()
        check_origin(request)
        session = session_of(request)
        if session is None:
            raise ReviewError(401, "sign in with your reviewer token first: changes need a session")
        token = request.headers.get(CSRF_HEADER) or form_token
        if not same_token(token, session.csrf):
            raise ReviewError(403, "missing or wrong CSRF token: reload the page and try again")
        return session

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    async def json_body(request: Request) -> dict[str, Any]:
        if "application/json" not in request.headers.get("content-type", ""):
            raise ReviewError(415, "send the change as JSON (Content-Type: application/json)")
        try:
            body = await request.json()
        except ValueError:
            raise ReviewError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ReviewError(400, "the request body must be a JSON object")
        return body

    def decision_and_note(body: dict[str, Any]) -> tuple[str, str]:
        decision = body.get("decision")
        if decision not in DECISIONS:
            raise ReviewError(400, f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        note = body.get("note") or ""
        if not isinstance(note, str):
            raise ReviewError(400, "note must be text")
        if len(note) > MAX_NOTE_CHARS:
            raise ReviewError(400, f"note is {len(note)} characters; the limit is {MAX_NOTE_CHARS}")
        return str(decision), note.strip()

    def frame_id_of(raw: str) -> int:
        frame_id = ascii_id(raw)
        if frame_id is None:
            raise ReviewError(404, f"no frame with id {raw[:40]!r} in the catalog (ids are whole numbers)")
        if not queries.has_frame(frame_id):
            raise ReviewError(404, f"no frame with id {frame_id} in the catalog")
        return frame_id

    def remaining(request: Request) -> int:
        """Open frames in the scope of the page's filters (sent as the query string of a change)."""
        try:
            filters = filters_from_mapping(request.query_params.get, where="queue filter")
        except ReviewError:
            filters = QueueFilters()
        return queries.count_open(filters)

    # ---- errors ------------------------------------------------------------------------------
    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> Response:
        return error_response(request, 404, str(exc))

    @app.exception_handler(ReviewError)
    async def _review_error(request: Request, exc: ReviewError) -> Response:
        return error_response(request, exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = f"nothing here: {request.url.path} is not a page of the review app"
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(request, exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
        return error_response(request, 400, "bad request: " + "; ".join(parts))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> Response:
        """Any unexpected failure: a 500 with the headers and a short message (details go to the log)."""
        return error_response(request, 500, f"internal error ({type(exc).__name__}); the server log has the details")

    def error_response(request: Request, status: int, message: str) -> Response:
        if _wants_json(request):
            resp: Response = JSONResponse({"error": message, "status": status}, status_code=status)
        else:
            resp = render(request, "error.html", status=status, status_code=status, message=message)
        for k, v in SECURITY_HEADERS.items():  # a 500 leaves outside the guard: set them here too
            resp.headers.setdefault(k, v)
        if status >= 500:  # the server drops the connection after an unhandled error: say so
            resp.headers["Connection"] = "close"
        return resp

    # ---- pages -------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def queue_page(request: Request) -> HTMLResponse:
        filters = filters_from_mapping(request.query_params.get, where="queue filter")
        offset = _parse_int(request, "offset", 0, 0, 10**9)
        limit = _parse_int(request, "limit", 50, 1, MAX_PAGE)
        page = queries.page(filters, offset=offset, limit=limit)
        args = filters.query_args()
        prev_url = next_url = None
        if offset > 0:
            prev_url = "/?" + urlencode({**args, "offset": max(0, offset - limit), "limit": limit})
        if offset + limit < page.total:
            next_url = "/?" + urlencode({**args, "offset": offset + limit, "limit": limit})
        return render(
            request, "queue.html", page=page, filters=filters, statuses=STATUSES, prev_url=prev_url,
            next_url=next_url, catalog_empty=queries.count_flagged() == 0,
            self_url="/?" + urlencode(args) if args else "/",
        )

    @app.get("/fields", response_class=HTMLResponse)
    def fields_page(request: Request) -> HTMLResponse:
        """Field products (colour from real bands on one grid), each beside its member frames."""
        return render(request, "fields.html", cards=queries.field_cards())

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 - query name
        return render(request, "login.html", next=_safe_next(next), error=None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        check_writable()
        check_origin(request)
        client = client_of(request)
        wait = limiter.attempt(client)  # before the token is even read: a locked-out client learns nothing
        if wait is not None:
            resp = render(request, "login.html", status=429, next="/", error=(
                f"too many failed sign-ins from {client}: try again in {wait} s"))
            resp.headers["Retry-After"] = str(wait)
            return resp
        form = await request.form()
        token = str(form.get("token") or "")
        nxt = _safe_next(str(form.get("next") or "/"))
        known = match_token(token, tokens) if token and tokens else None
        if known is None:
            wait = limiter.failure(client)
            why = ("no reviewer tokens are configured (set ASTRO_PIPELINE_REVIEW_TOKENS)" if not tokens
                   else "that token is not a reviewer token")
            resp = render(request, "login.html", status=401, next=nxt, error=why)
            if wait is not None:
                resp.headers["Retry-After"] = str(wait)
            return resp
        limiter.success(client)
        _, cookie = sessions.start(known, client)
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(COOKIE_NAME, cookie, max_age=signer.max_age_s, httponly=True,
                        samesite="strict", path="/", secure=request.url.scheme == "https")
        return resp

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = await request.form()
        session = require_change_rights(request, str(form.get("csrf_token") or ""))
        sessions.end(session)  # revoked in the catalog: a copy of the cookie is worthless from now on
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
        return resp

    # ---- JSON API ----------------------------------------------------------------------------
    @app.get("/api/queue")
    def api_queue(request: Request) -> dict[str, Any]:
        filters = filters_from_mapping(request.query_params.get, where="queue filter")
        offset = _parse_int(request, "offset", 0, 0, 10**9)
        limit = _parse_int(request, "limit", 50, 1, MAX_PAGE)
        page = queries.page(filters, offset=offset, limit=limit)
        return {
            "total": page.total, "left": page.left, "offset": page.offset, "limit": page.limit,
            "items": [
                {"frame_id": it.frame_id, "archive": it.archive, "obs_id": it.obs_id, "title": it.title,
                 "flags": [f.name for f in it.flags],
                 "decision": it.decision.as_dict() if it.decision else None}
                for it in page.items
            ],
        }

    @app.get("/api/session")
    def api_session(request: Request) -> dict[str, Any]:
        session = session_of(request)
        return {"signed_in": session is not None, "reviewer": session.reviewer if session else None}

    @app.post("/api/frames/{frame_id}/decision")
    async def api_decide(frame_id: str, request: Request) -> dict[str, Any]:
        session = require_change_rights(request)
        body = await json_body(request)
        fid = frame_id_of(frame_id)
        decision, note = decision_and_note(body)
        current = queries.decide(fid, decision, note, session.reviewer)
        return {"frame_id": fid, "decision": current.as_dict() if current else None, "left": remaining(request)}

    @app.post("/api/frames/{frame_id}/undo")
    async def api_undo(frame_id: str, request: Request) -> dict[str, Any]:
        session = require_change_rights(request)
        fid = frame_id_of(frame_id)
        current = queries.undo(fid, session.reviewer)
        return {"frame_id": fid, "decision": current.as_dict() if current else None, "left": remaining(request)}

    @app.post("/api/bulk")
    async def api_bulk(request: Request) -> dict[str, Any]:
        session = require_change_rights(request)
        body = await json_body(request)
        decision, note = decision_and_note(body)
        if "frame_ids" in body:
            raw_ids = body["frame_ids"]
            if not isinstance(raw_ids, list) or not raw_ids:
                raise ReviewError(400, "frame_ids must be a non-empty list of frame ids")
            if len(raw_ids) > MAX_BULK:
                raise ReviewError(400, f"at most {MAX_BULK} frames per bulk action, got {len(raw_ids)}")
            ids = [frame_id_of(str(x)) for x in raw_ids]
        elif isinstance(body.get("filters"), dict):
            filters = filters_from_mapping(body["filters"].get, where="bulk filter")
            ids = queries.matching_ids(filters)
            if len(ids) > MAX_BULK:
                raise ReviewError(400, f"the filter selects {len(ids)} frames; narrow it to {MAX_BULK} or fewer")
        else:
            raise ReviewError(400, "send either frame_ids (a list) or filters (an object) to select frames")
        if not ids:
            return {"count": 0, "decisions": {}, "left": remaining(request)}
        done = queries.decide_many(list(dict.fromkeys(ids)), decision, note, session.reviewer)
        results = {str(fid): (d.as_dict() if d else None) for fid, d in done.items()}
        return {"count": len(results), "decisions": results, "left": remaining(request)}

    # ---- images by catalog id ----------------------------------------------------------------
    def _serve_by_id(raw_id: str, kind: str, opener: Callable[[int, str], ServedImage], what: str) -> Response:
        """Stream one catalog-listed image file: ids only (never paths), 404 naming what is missing."""
        file_id = ascii_id(raw_id)
        if file_id is None:
            raise ReviewError(404, f"no {what} with id {raw_id[:40]!r} (images are served by catalog id only)")
        try:
            image = opener(file_id, kind)
        except ImageNotFound as exc:
            raise ReviewError(404, str(exc)) from None
        return StreamingResponse(image.chunks(), media_type=image.media_type, headers={
            "Cache-Control": "private, max-age=300", "Content-Length": str(image.size)})

    @app.get("/image/{file_id}/{kind}")
    def product_image(file_id: str, kind: str) -> Response:
        return _serve_by_id(file_id, kind, queries.open_product_image, "product file")

    @app.get("/field-image/{file_id}/{kind}")
    def field_image(file_id: str, kind: str) -> Response:
        return _serve_by_id(file_id, kind, queries.open_field_image, "field product file")

    @app.get("/frame/{frame_id}/input.png")
    def input_preview(frame_id: str) -> Response:
        fid = frame_id_of(frame_id)
        try:
            png = queries.input_preview_png(fid)
        except ImageNotFound as exc:
            raise ReviewError(404, str(exc)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "flagged": queries.count_flagged(), "left": queries.count_open(QueueFilters())}

    return app


def _safe_next(nxt: str) -> str:
    """Only same-site relative redirects after sign-in (no ``//host`` or scheme)."""
    if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt or "\n" in nxt or "\r" in nxt:
        return "/"
    return nxt
