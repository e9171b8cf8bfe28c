"""Sign-in rate limiting per client: a lockout after 10 failures a minute that doubles, up to 15 min.

A client (its address) may fail ``max_failures`` sign-ins within ``window_s``. The next attempt
is refused without looking at the token (HTTP 429) with ``Retry-After: 60``; every further
attempt while locked out, and every failure after a lockout, doubles it (60, 120, 240, 480,
900 s, then 900 s). A client quiet for ``forget_after_s`` starts afresh, as does a successful
sign-in. State is per process and bounded (``max_clients``, oldest forgotten first).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["SignInLimiter"]


@dataclass
class _Client:
    failures: deque[float] = field(default_factory=deque)  # times of recent failures
    level: int = 0  # lockouts so far (0: never locked out)
    until: float = 0.0  # locked out until this time
    last: float = 0.0  # last failure or refused attempt


class SignInLimiter:
    """Counts failed sign-ins per client: ``attempt()`` before a token is checked, then
    ``failure()`` or ``success()``."""

    def __init__(self, *, max_failures: int = 10, window_s: float = 60.0, base_lockout_s: float = 60.0,
                 max_lockout_s: float = 900.0, forget_after_s: float = 900.0, max_clients: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.base_lockout_s = base_lockout_s
        self.max_lockout_s = max_lockout_s
        self.forget_after_s = forget_after_s
        self.max_clients = max_clients
        self._clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._lock = threading.Lock()

    def _lockout(self, level: int) -> float:
        return min(self.max_lockout_s, self.base_lockout_s * 2 ** (level - 1))

    def _get(self, client: str, now: float) -> _Client | None:
        state = self._clients.get(client)
        if state is None:
            return None
        if now >= state.until and now - state.last > self.forget_after_s:
            del self._clients[client]
            return None
        while state.failures and now - state.failures[0] > self.window_s:
            state.failures.popleft()
        return state

    def _lock_out(self, state: _Client, now: float) -> int:
        state.level += 1
        seconds = self._lockout(state.level)
        state.until = now + seconds
        state.last = now
        return math.ceil(seconds)

    def attempt(self, client: str) -> int | None:
        """A sign-in attempt: seconds to tell the client to wait (refused, and counted as a further
        failure), or None to go on. The attempt counts as a failure until ``success`` says otherwise,
        so parallel guesses cannot slip past the limit while their tokens are being checked."""
        with self._lock:
            now = self._clock()
            state = self._get(client, now)
            if state is None:
                state = self._clients[client] = _Client()
                while len(self._clients) > self.max_clients:
                    self._clients.popitem(last=False)
            self._clients.move_to_end(client)
            if now < state.until or len(state.failures) >= self.max_failures:
                return self._lock_out(state, now)
            state.failures.append(now)
            state.last = now
            return None

    def failure(self, client: str) -> int | None:
        """The attempt's token was wrong; after an earlier lockout this locks out again (the seconds)."""
        with self._lock:
            now = self._clock()
            state = self._get(client, now)
            if state is not None and state.level:
                return self._lock_out(state, now)
            return None

    def success(self, client: str) -> None:
        """A correct token: forget the client's failures."""
        with self._lock:
            self._clients.pop(client, None)
