"""Fault injection for the replica: chosen by URL pattern, deterministic for a seed.

Spec syntax (``--faults SPEC`` on ``astro-pipeline replica serve``, or ``FaultPlan.parse``)::

    SPEC  := RULE ("," RULE)*
    RULE  := MODE ":" PATTERN [":" COUNT] (":" KEY "=" VALUE)*

* ``MODE``: what to do to a matching request
    - ``503`` (or any 3-digit HTTP status, e.g. ``500``, ``504``, ``404``, ``405``): answer with
      that status and a small HTML body (``Retry-After`` is *not* sent);
    - ``slow``: wait ``delay`` seconds (default 5) before answering normally (past a client timeout);
    - ``truncate``: send the headers with the true ``Content-Length`` and only ``fraction`` (default
      0.5) of the body, then drop the connection (a short read);
    - ``badlength``: declare a wrong ``Content-Length`` (true length + ``delta``, default +4096) and
      send the whole body, then drop the connection; with a negative delta only that many bytes are
      sent, so the reply is self-consistent but shorter than the archive's declared file size;
    - ``nolength``: stream the body without any ``Content-Length`` (chunked);
    - ``malformed``: corrupt the body (cut at ``fraction``, default 0.5, then append ``}{``) and fix
      ``Content-Length`` to match, so JSON parsing fails;
    - ``corrupt``: flip the bits of one byte (at ``fraction`` of the body) and keep the length, so only a
      checksum can tell;
    - ``error``: answer HTTP 200 with a MAST envelope ``{"status": "ERROR", "msg": MSG}``
      (``msg`` default "There was an error with your request.");
    - ``executing``: answer HTTP 200 with ``{"status": "EXECUTING"}`` (MAST long-poll; client re-polls).
    - ``drip``: send the headers (true ``Content-Length``) at once, then the body ``piece`` bytes
      (default 1) every ``delay`` seconds: each read beats a read timeout, the whole never ends soon;
    - ``oversize``: send the body followed by ``extra`` zero bytes (default 40 MB), streamed; with an
      honest ``Content-Length`` of the whole, or none (close-delimited) with ``length=none``;
    - ``gzip``: answer with ``Content-Encoding: gzip``: the body followed by ``extra`` zero bytes
      (default 0), gzip-compressed (the zeros as repeated 1 MiB members, so 1 GB costs 1 MB and no
      time), ``Content-Length`` the compressed length; with
      ``cut=F`` only the first fraction F of the compressed stream is sent (and declared), so the reply
      is self-consistent but the gzip stream never ends.
* ``PATTERN``: matched against ``path?query`` of the request (query percent-decoded); a glob when it
  contains ``*`` / ``?``/``[``, else a substring. ``:`` may appear in it (the parser takes trailing
  fields as COUNT/options).
* ``COUNT``: how many matching requests *per distinct URL+body* are faulted (a burst): the first
  COUNT attempts of each distinct request fail, later ones pass. Default: every attempt.
* options: ``p=0.3`` fault each attempt with that probability, decided by a hash of
  (seed, rule, request key, attempt number) so a run is reproducible whatever the thread timing;
  ``method=GET`` only that HTTP method; ``delay=``, ``fraction=``, ``delta=``, ``msg=``, ``piece=``,
  ``extra=``, ``length=``, ``cut=`` as above.

Examples: ``503:/api/v0/invoke:3`` (first 3 tries of each query answer 503),
``truncate:/api/v0.1/Download/file:1`` (each file's first GET is cut short),
``slow:/api/v0/invoke:1:delay=3``, ``503:/Download/file:p=0.4``, ``error:/api/v0/invoke:2:msg=busy``.

Rules are tried in order; the first one that matches *and fires* (its burst not yet over, its
``p`` draw taken) applies, so rules can be layered on one pattern. ``FaultPlan.events`` records each
injected fault for reports/tests, and ``FaultPlan.peak_in_flight`` the most requests a rule held at
once (``slow:PATTERN:delay=0.3`` makes a server-side counter of concurrent requests), and
``FaultPlan.bytes_sent`` the body bytes the streaming modes (``drip``, ``oversize``, ``gzip``) sent
before the client went away.
"""

from __future__ import annotations

import asyncio
import fnmatch
import gzip
import hashlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

__all__ = ["FaultEvent", "FaultPlan", "FaultRule", "FaultSpecError", "MODES"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MODES = ("status", "slow", "truncate", "badlength", "nolength", "malformed", "corrupt", "error", "executing",
         "drip", "oversize", "gzip")
_OPTION_KEYS = {"p", "method", "delay", "fraction", "delta", "msg", "piece", "extra", "length", "cut"}
_STREAM_PIECE = 1 << 20  # oversize/gzip modes make and send their extra bytes this many at a time


class FaultSpecError(ValueError):
    """A fault spec string that cannot be parsed (the message names the bad rule)."""


@dataclass(frozen=True)
class FaultRule:
    """One parsed rule (see the module docstring)."""

    mode: str  # one of MODES
    pattern: str
    count: int | None = None  # None: every attempt
    status: int = 503  # for mode "status"
    p: float = 1.0
    method: str | None = None
    delay: float = 5.0
    fraction: float = 0.5
    delta: int = 4096
    msg: str = "There was an error with your request."
    piece: int = 1  # drip: bytes per piece
    extra: int | None = None  # oversize (default 40 MB) / gzip (default 0): zero bytes after the body
    length: bool = True  # oversize: send an honest Content-Length (False: close-delimited)
    cut: float | None = None  # gzip: send only this fraction of the compressed stream

    def matches(self, method: str, target: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if any(c in self.pattern for c in "*?["):
            return fnmatch.fnmatchcase(target, self.pattern) or fnmatch.fnmatchcase(
                target.split("?", 1)[0], self.pattern)
        return self.pattern in target

    @property
    def label(self) -> str:
        return str(self.status) if self.mode == "status" else self.mode


@dataclass
class FaultEvent:
    """One injected fault: which rule, which request, which attempt of it."""

    mode: str
    method: str
    target: str
    attempt: int
    rule: int


@dataclass
class FaultPlan:
    """Rules plus per-request attempt counters; deterministic for ``seed``."""

    rules: list[FaultRule]
    seed: int = 0
    events: list[FaultEvent] = field(default_factory=list)
    _attempts: dict[tuple[int, str], int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _in_flight: dict[FaultRule, int] = field(default_factory=dict, repr=False)
    _peak: dict[FaultRule, int] = field(default_factory=dict, repr=False)
    _sent: dict[FaultRule, int] = field(default_factory=dict, repr=False)

    # -------------------------------------------------------------------------------- parsing
    @classmethod
    def parse(cls, spec: str | None, seed: int = 0) -> FaultPlan:
        """Parse a spec string (module docstring); an empty spec gives an empty plan."""
        rules = [parse_rule(part) for part in _split_rules(spec or "")]
        return cls(rules=rules, seed=seed)

    def describe(self) -> str:
        return ", ".join(
            f"{r.label} on {r.pattern!r}" + (f" x{r.count}" if r.count is not None else "")
            + (f" p={r.p}" if r.p < 1 else "") for r in self.rules
        ) or "no faults"

    # -------------------------------------------------------------------------------- decision
    def decide(self, method: str, target: str, body: bytes = b"") -> tuple[FaultRule, int] | None:
        """The rule to apply to this request (and its attempt number), or None to pass it through."""
        for index, rule in enumerate(self.rules):
            if not rule.matches(method, target):
                continue
            key = f"{method.upper()} {target} " + hashlib.sha256(_stable_body(body)).hexdigest()[:16]
            with self._lock:
                attempt = self._attempts.get((index, key), 0) + 1
                self._attempts[(index, key)] = attempt
            if rule.count is not None and attempt > rule.count:
                continue
            if rule.p < 1.0 and _unit_hash(self.seed, index, key, attempt) >= rule.p:
                continue
            with self._lock:
                self.events.append(FaultEvent(rule.label, method.upper(), target, attempt, index))
            return rule, attempt
        return None

    def load(self, spec: str | None, seed: int | None = None) -> FaultPlan:
        """Replace the rules of this (possibly running) plan from a spec; counters and events reset."""
        rules = FaultPlan.parse(spec).rules
        with self._lock:
            self.rules[:] = rules
            if seed is not None:
                self.seed = seed
            self._attempts.clear()
            self.events.clear()
            self._peak.clear()
            self._sent.clear()
        return self

    def reset(self) -> None:
        with self._lock:
            self._attempts.clear()
            self.events.clear()
            self._peak.clear()
            self._sent.clear()

    def bytes_sent(self, pattern: str | None = None) -> int:
        """Body bytes the streaming modes sent for rules on ``pattern`` (or any), all requests together."""
        with self._lock:
            return sum(n for r, n in self._sent.items() if pattern is None or r.pattern == pattern)

    def _count_sent(self, rule: FaultRule, n: int) -> None:
        with self._lock:
            self._sent[rule] = self._sent.get(rule, 0) + n

    def peak_in_flight(self, pattern: str | None = None) -> int:
        """The most requests that rules (on ``pattern``, or any) were serving at one time."""
        with self._lock:
            return max((n for r, n in self._peak.items() if pattern is None or r.pattern == pattern), default=0)

    @contextmanager
    def serving(self, rule: FaultRule) -> Iterator[None]:
        """Count one request as in flight under ``rule`` while the block runs."""
        with self._lock:
            self._in_flight[rule] = self._in_flight.get(rule, 0) + 1
            self._peak[rule] = max(self._peak.get(rule, 0), self._in_flight[rule])
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[rule] -= 1

    # -------------------------------------------------------------------------------- ASGI
    def install(self, app: Any, state: Any = None) -> None:
        """Hook used by ``replica.app.create_app``: wrap the app in the fault middleware."""
        app.add_middleware(FaultMiddleware, plan=self)
        logging.getLogger("uvicorn.error").addFilter(_QuietDroppedResponses())


class FaultMiddleware:
    """Pure ASGI middleware applying a ``FaultPlan`` (buffers replies only when it must alter them)."""

    def __init__(self, app: ASGIApp, plan: FaultPlan) -> None:
        self.app = app
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.plan.rules:
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope.get("path", "") + (("?" + unquote(query)) if query else "")
        raw_receive = receive
        body, receive = await _buffer_body(receive)
        decision = self.plan.decide(method, target, body)
        if decision is None:
            await self.app(scope, receive, send)
            return
        rule, _attempt = decision
        with self.plan.serving(rule):
            await self._apply(rule, scope, receive, raw_receive, send, method)

    async def _apply(self, rule: FaultRule, scope: Scope, receive: Receive, raw_receive: Receive, send: Send,
                     method: str) -> None:
        if rule.mode == "status":
            await _send_simple(send, rule.status, b"<html><body><h1>%d</h1><p>Injected fault.</p></body></html>"
                               % rule.status, "text/html; charset=utf-8", method)
            return
        if rule.mode == "error":
            payload = json.dumps({"status": "ERROR", "msg": rule.msg, "data": [], "fields": []}).encode()
            await _send_simple(send, 200, payload, "application/json", method)
            return
        if rule.mode == "executing":
            payload = json.dumps({"status": "EXECUTING", "msg": "", "data": [], "fields": []}).encode()
            await _send_simple(send, 200, payload, "application/json", method)
            return
        if rule.mode == "slow":
            try:  # wait out the delay, unless the client gives up first (then answer nothing)
                message = await asyncio.wait_for(raw_receive(), timeout=rule.delay)
                if message.get("type") == "http.disconnect":
                    return
            except TimeoutError:
                pass
            await self.app(scope, receive, send)
            return
        # the remaining modes alter the app's reply: capture it, then send the altered form
        status, headers, content = await _capture(self.app, scope, receive)
        true_len = _declared_length(headers, content)
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        if rule.mode in ("drip", "oversize", "gzip"):
            await self._stream(rule, status, headers, content, send, raw_receive, method)
            return
        if rule.mode == "nolength":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if method != "HEAD":
                await send({"type": "http.response.body", "body": content, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if rule.mode == "corrupt":
            body = bytearray(content)
            if body and method != "HEAD":
                body[min(len(body) - 1, int(len(body) * rule.fraction))] ^= 0xFF
            headers.append((b"content-length", str(true_len).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else bytes(body)})
            return
        if rule.mode == "malformed":
            cut = content[: int(len(content) * rule.fraction)] + b"}{"
            headers.append((b"content-length", str(len(cut)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else cut})
            return
        if rule.mode == "truncate":
            headers.append((b"content-length", str(true_len).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if method == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            part = content[: int(len(content) * rule.fraction)]
            await send({"type": "http.response.body", "body": part, "more_body": True})
            return  # never complete the body: the server drops the connection (a short read)
        if rule.mode == "badlength":
            wrong = max(0, true_len + rule.delta)
            headers.append((b"content-length", str(wrong).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if method == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            if wrong <= len(content):
                await send({"type": "http.response.body", "body": content[:wrong]})
                return
            await send({"type": "http.response.body", "body": content, "more_body": True})
            return  # fewer bytes than declared: drop the connection
        raise AssertionError(f"unhandled fault mode {rule.mode}")  # pragma: no cover

    async def _stream(self, rule: FaultRule, status: int, headers: list[tuple[bytes, bytes]], content: bytes,
                      send: Send, raw_receive: Receive, method: str) -> None:
        """The streaming modes: the body goes out piece by piece until done or the client leaves."""
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await raw_receive()
                if message.get("type") == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())
        try:
            if rule.mode == "drip":
                pieces = _pieces(content, max(1, rule.piece))
                length: int | None = len(content)
            elif rule.mode == "oversize":
                extra = 40_000_000 if rule.extra is None else rule.extra
                pieces = _with_zeros(content, extra)
                length = len(content) + extra if rule.length else None
            else:  # gzip: compress once to learn the length (the compressed stream is small)
                compressed = b"".join(_gzip_pieces(content, rule.extra or 0))
                if rule.cut is not None:
                    compressed = compressed[: int(len(compressed) * rule.cut)]
                headers = [(k, v) for k, v in headers if k.lower() != b"content-encoding"]
                headers.append((b"content-encoding", b"gzip"))
                pieces = _pieces(compressed, _STREAM_PIECE)
                length = len(compressed)
            if length is not None:
                headers.append((b"content-length", str(length).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if method == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            for i, piece in enumerate(pieces):
                if gone.is_set():
                    return
                if rule.mode == "drip" and i:
                    try:
                        await asyncio.wait_for(gone.wait(), timeout=rule.delay)
                        return
                    except TimeoutError:
                        pass
                # counted before it goes out: a client that has every byte never sees a count short of them
                self.plan._count_sent(rule, len(piece))
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                await asyncio.sleep(0)  # let a disconnect be noticed between pieces
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()


# ------------------------------------------------------------------------------------ helpers
def _split_rules(spec: str) -> list[str]:
    return [p.strip() for p in spec.split(",") if p.strip()]


def parse_rule(text: str) -> FaultRule:
    """One ``MODE:PATTERN[:COUNT][:key=value...]`` rule."""
    head, sep, rest = text.partition(":")
    mode_text = head.strip().lower()
    if not sep or not rest:
        raise FaultSpecError(f"fault rule {text!r}: expected MODE:PATTERN[:COUNT][:key=value...]")
    parts = rest.split(":")
    count: int | None = None
    opts: dict[str, str] = {}
    while len(parts) > 1:
        last = parts[-1].strip()
        key, eq, value = last.partition("=")
        if eq and key in _OPTION_KEYS:
            opts[key] = value
        elif last.isdigit() and count is None:
            count = int(last)
        else:
            break
        parts.pop()
    pattern = ":".join(parts).strip()
    if not pattern:
        raise FaultSpecError(f"fault rule {text!r}: empty URL pattern")
    kwargs: dict[str, Any] = {"pattern": pattern, "count": count}
    if mode_text.isdigit() and len(mode_text) == 3:
        kwargs["mode"] = "status"
        kwargs["status"] = int(mode_text)
        if not 400 <= kwargs["status"] <= 599:
            raise FaultSpecError(f"fault rule {text!r}: status {mode_text} is not an HTTP error (400-599)")
    elif mode_text in MODES and mode_text != "status":
        kwargs["mode"] = mode_text
    else:
        raise FaultSpecError(
            f"fault rule {text!r}: unknown mode {head!r} (use a 3-digit status or one of "
            f"{', '.join(m for m in MODES if m != 'status')})"
        )
    try:
        if "p" in opts:
            kwargs["p"] = float(opts["p"])
            if not 0.0 <= kwargs["p"] <= 1.0:
                raise ValueError("p must be within [0, 1]")
        if "delay" in opts:
            kwargs["delay"] = float(opts["delay"])
        if "fraction" in opts:
            kwargs["fraction"] = float(opts["fraction"])
            if not 0.0 <= kwargs["fraction"] < 1.0:
                raise ValueError("fraction must be within [0, 1)")
        if "delta" in opts:
            kwargs["delta"] = int(opts["delta"])
            if kwargs["delta"] == 0:
                raise ValueError("delta 0 would not be a fault")
    except ValueError as exc:
        raise FaultSpecError(f"fault rule {text!r}: {exc}") from exc
    if "method" in opts:
        kwargs["method"] = opts["method"].upper()
    if "msg" in opts:
        kwargs["msg"] = opts["msg"]
    try:
        if "piece" in opts:
            kwargs["piece"] = int(opts["piece"])
            if kwargs["piece"] < 1:
                raise ValueError("piece must be >= 1 byte")
        if "extra" in opts:
            kwargs["extra"] = int(opts["extra"])
            if kwargs["extra"] < 0:
                raise ValueError("extra must be >= 0 bytes")
        if "length" in opts:
            if opts["length"] not in ("none", "true"):
                raise ValueError("length must be 'true' or 'none'")
            kwargs["length"] = opts["length"] == "true"
        if "cut" in opts:
            kwargs["cut"] = float(opts["cut"])
            if not 0.0 < kwargs["cut"] < 1.0:
                raise ValueError("cut must be within (0, 1)")
    except ValueError as exc:
        raise FaultSpecError(f"fault rule {text!r}: {exc}") from exc
    return FaultRule(**kwargs)


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _with_zeros(content: bytes, extra: int) -> Iterator[bytes]:
    """The body, then ``extra`` zero bytes, a piece at a time (never all of it in memory)."""
    yield from _pieces(content, _STREAM_PIECE)
    zeros = bytes(_STREAM_PIECE)
    while extra > 0:
        n = min(extra, _STREAM_PIECE)
        yield zeros[:n]
        extra -= n


def _gzip_pieces(content: bytes, extra: int) -> Iterator[bytes]:
    """gzip of the body followed by ``extra`` zero bytes: the body as one member, the zeros as one
    1 MiB member compressed once and repeated (RFC 1952 members concatenate into one stream)."""
    yield gzip.compress(content, compresslevel=6, mtime=0)
    if extra >= _STREAM_PIECE:
        member = gzip.compress(bytes(_STREAM_PIECE), compresslevel=9, mtime=0)
        for _ in range(extra // _STREAM_PIECE):
            yield member
    if extra % _STREAM_PIECE:
        yield gzip.compress(bytes(extra % _STREAM_PIECE), compresslevel=9, mtime=0)


def _unit_hash(seed: int, rule: int, key: str, attempt: int) -> float:
    digest = hashlib.sha256(f"{seed}|{rule}|{key}|{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _stable_body(body: bytes) -> bytes:
    """The request body with MAST's random ``cacheBreaker`` removed, so retries count as one request."""
    if b"cacheBreaker" not in body:
        return body
    text = unquote(body.decode("latin-1"))
    start = text.find('"cacheBreaker"')
    end = text.find('"', text.find('"', text.find(":", start) + 1) + 1)
    return (text[:start] + text[end + 1:]).encode("latin-1") if start >= 0 and end > start else body


async def _buffer_body(receive: Receive) -> tuple[bytes, Receive]:
    chunks: list[bytes] = []
    more = True
    first: list[Message] = []
    while more:
        message = await receive()
        first.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replay = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay_receive() -> Message:
        if replay:
            return replay.pop()
        return await receive()

    return body, replay_receive


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    body: list[bytes] = []

    async def capture_send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, capture_send)
    return status, headers, b"".join(body)


def _declared_length(headers: list[tuple[bytes, bytes]], content: bytes) -> int:
    """The app's own Content-Length (a HEAD reply has no body to measure), else the body length."""
    for key, value in headers:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                break
    return len(content)


async def _send_simple(send: Send, status: int, body: bytes, content_type: str, method: str) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
    ]})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


class _QuietDroppedResponses(logging.Filter):
    """Hide uvicorn's log line for the responses the fault plan drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()
