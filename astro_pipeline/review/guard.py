"""The review app's outer ASGI layer: Host allow-list, request body cap, security headers.

It runs before routing, so a request with a Host the page does not answer to (DNS rebinding)
gets 421 before any handler or form parser sees it. Bodies are capped at ``MAX_BODY_BYTES``:
a declared Content-Length above it is refused at once, and a body streamed without one is
counted while it is read and cut off at the cap (``BodyTooLarge``, answered 413). Every
response, errors included, leaves with the security headers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from html import escape
from typing import Any

from starlette.exceptions import HTTPException

from astro_pipeline.review.access import ReviewAccess, hostname_of

__all__ = ["MAX_BODY_BYTES", "SECURITY_HEADERS", "BodyTooLarge", "ReviewGuard"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Largest request body the page accepts (a decision or bulk request is a few kB).
MAX_BODY_BYTES = 1024 * 1024

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: Paths whose responses may set their own Cache-Control (static files, images by id).
_CACHEABLE_PREFIXES = ("/static/", "/image/", "/frame/")


class BodyTooLarge(HTTPException):
    """The request body passed ``MAX_BODY_BYTES`` (answered 413 by the app's error handler)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit // (1024 * 1024)} MB refused")


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope.get("headers", []) if k.lower() == name]


def _wants_json(scope: Scope) -> bool:
    accept = b",".join(_header(scope, b"accept")).decode("latin-1")
    return str(scope.get("path", "")).startswith("/api/") or (
        "application/json" in accept and "text/html" not in accept)


class ReviewGuard:
    """Wraps the review app: refuses unknown Hosts (421), caps bodies, adds security headers."""

    def __init__(self, app: ASGIApp, *, access: ReviewAccess, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.access = access
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(scope, send)
        hosts = _header(scope, b"host")
        if len(hosts) != 1:
            await self._refuse(scope, send, 400, "a request needs exactly one Host header")
            return
        raw_host = hosts[0].decode("latin-1")
        if not self.access.allows(hostname_of(raw_host)):
            await self._refuse(scope, send, 421, (
                f"{raw_host[:100]!r} is not a name this review server answers to; open it as "
                f"http://127.0.0.1 or http://localhost (or a name given with --allowed-host)"))
            return
        lengths = _header(scope, b"content-length")
        if lengths:
            try:
                declared = int(lengths[0])
            except ValueError:
                await self._refuse(scope, send, 400, "Content-Length is not a number")
                return
            if declared > self.max_body:
                await self._refuse(scope, send, 413, f"request body of {declared:,} bytes refused: the limit is 1 MB")
                return
        await self.app(scope, self._capped(receive), send)

    def _capped(self, receive: Receive) -> Receive:
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        return capped

    def _with_headers(self, scope: Scope, send: Send) -> Send:
        cacheable = str(scope.get("path", "")).startswith(_CACHEABLE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    key = name.lower().encode("latin-1")
                    if key in present or (cacheable and name == "Cache-Control"):
                        continue
                    headers.append((key, value.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        return send_with_headers

    async def _refuse(self, scope: Scope, send: Send, status: int, message: str) -> None:
        if _wants_json(scope):
            body = json.dumps({"error": message, "status": status}).encode()
            ctype = b"application/json"
        else:
            body = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error {status}</title>"
                    f"</head><body><h1>Error {status}</h1><p id=\"error-message\">{escape(message)}</p></body></html>"
                    ).encode()
            ctype = b"text/html; charset=utf-8"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
