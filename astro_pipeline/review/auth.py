"""Reviewer sign-in, signed session cookies and CSRF tokens for the review app.

A reviewer signs in with a token from ``Settings.review_tokens`` (token -> reviewer name).
The session cookie carries the reviewer name and a per-session CSRF token, signed with
``Settings.review_secret`` (or a random per-process key, so sessions then end at restart;
decisions live in the catalog and survive). Every state change needs the session and the
CSRF token (header ``X-CSRF-Token`` or form field ``csrf_token``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "ReviewerSession",
    "SessionSigner",
    "match_token",
    "same_token",
]

COOKIE_NAME = "astro_review_session"
CSRF_HEADER = "X-CSRF-Token"
_SALT = "astro-pipeline.review.session.v1"
SESSION_MAX_AGE_S = 12 * 3600


@dataclass(frozen=True)
class ReviewerSession:
    """A signed-in reviewer: the name that goes into the review history and the CSRF token."""

    reviewer: str
    csrf: str
    issued_at: float


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time string comparison that is False when either side is missing."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def match_token(token: str, tokens: dict[str, str]) -> str | None:
    """The reviewer name for ``token`` from the configured map, compared in constant time."""
    found: str | None = None
    for known, name in tokens.items():
        if same_token(token.strip(), known) and name:
            found = name
    return found


class SessionSigner:
    """Signs and verifies the session cookie (itsdangerous when installed, else HMAC-SHA256)."""

    def __init__(self, secret: str | None, *, max_age_s: int = SESSION_MAX_AGE_S) -> None:
        self.persistent = bool(secret)
        self._key = secret.encode("utf-8") if secret else secrets.token_bytes(32)
        self.max_age_s = max_age_s
        try:
            from itsdangerous import URLSafeTimedSerializer
        except ImportError:  # pragma: no cover - itsdangerous ships with the web stack here
            self._serializer = None
        else:
            self._serializer = URLSafeTimedSerializer(self._key, salt=_SALT)

    def new_session(self, reviewer: str) -> tuple[ReviewerSession, str]:
        """A fresh session for ``reviewer`` and its cookie value."""
        session = ReviewerSession(reviewer=reviewer, csrf=secrets.token_urlsafe(32), issued_at=time.time())
        return session, self.dumps(session)

    def dumps(self, session: ReviewerSession) -> str:
        payload = {"r": session.reviewer, "c": session.csrf, "t": session.issued_at}
        if self._serializer is not None:
            return str(self._serializer.dumps(payload))
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
        return f"{body}.{self._mac(body)}"

    def loads(self, cookie: str | None) -> ReviewerSession | None:
        """The session in ``cookie``, or None when it is missing, forged, malformed or expired."""
        if not cookie:
            return None
        payload: Any
        if self._serializer is not None:
            from itsdangerous import BadSignature

            try:
                payload = self._serializer.loads(cookie, max_age=self.max_age_s)
            except (BadSignature, ValueError, TypeError):
                return None
        else:
            body, _, mac = cookie.rpartition(".")
            if not body or not same_token(mac, self._mac(body)):
                return None
            try:
                payload = json.loads(base64.urlsafe_b64decode(body.encode()))
            except ValueError:
                return None
        if not isinstance(payload, dict):
            return None
        reviewer, csrf, issued = payload.get("r"), payload.get("c"), payload.get("t")
        if not isinstance(reviewer, str) or not isinstance(csrf, str) or not isinstance(issued, int | float):
            return None
        if time.time() - float(issued) > self.max_age_s:
            return None
        return ReviewerSession(reviewer=reviewer, csrf=csrf, issued_at=float(issued))

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, f"{_SALT}:{body}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
