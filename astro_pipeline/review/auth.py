"""Reviewer sign-in, revocable sessions kept in the catalog, and CSRF tokens for the review app.

A reviewer signs in with a token from ``Settings.review_tokens`` (token -> reviewer name; at
least ``MIN_TOKEN_CHARS`` characters). The session lives in the catalog (``review_sessions``):
the cookie carries a random key, signed with ``Settings.review_secret`` (or a random
per-process key, so cookies then end at restart); the catalog keeps only the key's sha256 with
the reviewer, the CSRF token, an expiry, and ``revoked_at`` once the reviewer signs out. A
cookie counts only while its session is in the catalog, unrevoked, unexpired, and its token is
still configured, so sign-out and token removal end it everywhere, across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from astro_pipeline.catalog import Catalog

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "MIN_TOKEN_CHARS",
    "ReviewerSession",
    "SessionSigner",
    "SessionStore",
    "TokenError",
    "check_tokens",
    "match_token",
    "same_token",
    "token_sha256",
]

COOKIE_NAME = "astro_review_session"
CSRF_HEADER = "X-CSRF-Token"
_SALT = "astro-pipeline.review.session.v2"
SESSION_MAX_AGE_S = 12 * 3600
#: Shortest reviewer token accepted (a random 16-character token is far beyond guessing at 10 a minute).
MIN_TOKEN_CHARS = 16


class TokenError(ValueError):
    """A configured reviewer token is unusable (too short, or without a reviewer name)."""


@dataclass(frozen=True)
class ReviewerSession:
    """A signed-in reviewer: the name that goes into the review history, and the CSRF token."""

    reviewer: str
    csrf: str
    key_sha256: str


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time string comparison that is False when either side is missing."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_tokens(tokens: Mapping[str, str]) -> None:
    """Refuse tokens shorter than ``MIN_TOKEN_CHARS`` or without a reviewer (the token is never echoed)."""
    for token, name in tokens.items():
        who = repr(name) if name else "(no name)"
        if not name or not str(name).strip():
            raise TokenError("a reviewer token has no reviewer name; set ASTRO_PIPELINE_REVIEW_TOKENS="
                             "'{\"<token>\": \"<name>\"}'")
        if len(token.strip()) < MIN_TOKEN_CHARS:
            raise TokenError(
                f"the reviewer token for {who} is {len(token.strip())} characters; tokens must be at least "
                f"{MIN_TOKEN_CHARS} characters (make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')")


def match_token(token: str, tokens: Mapping[str, str]) -> str | None:
    """The configured token equal to ``token``, compared in constant time against each one."""
    found: str | None = None
    for known in tokens:
        if same_token(token.strip(), known.strip()):
            found = known
    return found


class SessionSigner:
    """Signs and verifies the session cookie, which carries only the session's random key.

    The cookie is ``<key>.<HMAC-SHA256 of the key>``; expiry and revocation live in the catalog.
    """

    def __init__(self, secret: str | None, *, max_age_s: int = SESSION_MAX_AGE_S) -> None:
        self.persistent = bool(secret)
        self.max_age_s = max_age_s
        self._key = secret.encode("utf-8") if secret else secrets.token_bytes(32)

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, f"{_SALT}:{body}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def dumps(self, session_key: str) -> str:
        return f"{session_key}.{self._mac(session_key)}"

    def loads(self, cookie: str | None) -> str | None:
        """The session key in ``cookie``, or None when it is missing, malformed or not signed by us."""
        if not cookie or len(cookie) > 512:
            return None
        key, _, mac = cookie.rpartition(".")
        if not 16 <= len(key) <= 128 or not same_token(mac, self._mac(key)):
            return None
        return key


class SessionStore:
    """Sessions in the catalog: ``start`` at sign-in, ``find`` per request, ``end`` at sign-out."""

    def __init__(self, catalog: Catalog, signer: SessionSigner, tokens: Mapping[str, str]) -> None:
        self.catalog = catalog
        self.signer = signer
        self._names = {token_sha256(tok): name for tok, name in tokens.items()}

    def start(self, token: str, client: str | None) -> tuple[ReviewerSession, str]:
        """A new session for the reviewer of ``token`` (a configured one); returns it and the cookie."""
        key = secrets.token_urlsafe(32)
        key_hash = token_sha256(key)
        reviewer = self._names[token_sha256(token)]
        csrf = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + timedelta(seconds=self.signer.max_age_s)
        self.catalog.create_review_session(key_hash, reviewer=reviewer, csrf=csrf, expires_at=expires,
                                           token_sha256=token_sha256(token), client=client)
        return ReviewerSession(reviewer=reviewer, csrf=csrf, key_sha256=key_hash), self.signer.dumps(key)

    def find(self, cookie: str | None) -> ReviewerSession | None:
        """The live session behind ``cookie``: signed, in the catalog, not revoked, not expired,
        and signed in with a token that is still configured."""
        key = self.signer.loads(cookie)
        if key is None:
            return None
        key_hash = token_sha256(key)
        row = self.catalog.review_session(key_hash)
        if row is None or row.revoked_at is not None or row.expires_at <= datetime.now(UTC):
            return None
        if self._names.get(row.token_sha256) != row.reviewer:
            return None
        return ReviewerSession(reviewer=row.reviewer, csrf=row.csrf, key_sha256=key_hash)

    def end(self, session: ReviewerSession) -> None:
        self.catalog.revoke_review_session(session.key_sha256)
