"""Who may reach the review page by which name, and whether it accepts changes.

The page answers only to the names in ``allowed_hosts`` (the Host header, and the Origin of a
change, must name one of them): loopback names by default, plus the address given with
``--host`` and any names configured for a reverse proxy. This is what stops DNS rebinding: a
page at ``evil.example`` that the attacker re-points at 127.0.0.1 still sends
``Host: evil.example``. Served on a non-loopback address the page is read-only unless remote
writes are asked for explicitly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["LOOPBACK_NAMES", "ReviewAccess", "hostname_of", "is_loopback", "review_access"]

#: Names a browser on this machine uses for a server bound to loopback.
LOOPBACK_NAMES: frozenset[str] = frozenset({"127.0.0.1", "localhost", "::1"})
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def hostname_of(value: str) -> str | None:
    """The host name in a Host header (``name[:port]``, ``[v6]:port``) or an Origin URL, lower-case."""
    value = value.strip()
    if not value:
        return None
    netloc = urlsplit(value).netloc if "://" in value else value
    if not netloc or any(c in netloc for c in "@/\\?# "):  # never in what a browser sends
        return None
    try:
        name = urlsplit("//" + netloc).hostname
    except ValueError:
        return None
    return name.rstrip(".") if name else None


@dataclass(frozen=True)
class ReviewAccess:
    """The names the page answers to, and whether sign-in and decisions are refused."""

    allowed_hosts: frozenset[str] = LOOPBACK_NAMES
    read_only: bool = False
    bind_host: str = "127.0.0.1"

    def allows(self, name: str | None) -> bool:
        return name is not None and name in self.allowed_hosts


def review_access(host: str, *, allow_remote_writes: bool = False, extra_hosts: Iterable[str] = ()) -> ReviewAccess:
    """The access policy for a server bound to ``host``.

    Non-loopback binds (a LAN address, ``0.0.0.0``) are read-only unless ``allow_remote_writes``;
    a wildcard bind adds no name of its own (list the names clients use in ``extra_hosts``).
    """
    names = set(LOOPBACK_NAMES)
    bind = host.strip().strip("[]").lower()
    if bind not in _WILDCARDS:
        names.add(bind.rstrip("."))
    for extra in extra_hosts:
        name = hostname_of(str(extra))
        if name:
            names.add(name)
    read_only = not is_loopback(bind) and not allow_remote_writes
    return ReviewAccess(allowed_hosts=frozenset(names), read_only=read_only, bind_host=host)
