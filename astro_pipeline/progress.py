"""Sweep progress as typed events: what the run is doing, how many items are done out of how many.

The flow body reports through a :class:`SweepTracker` (one call per step it takes); every hook
registered with :func:`subscribe` gets each :class:`SweepEvent`. Nothing here imports Prefect:
the CLI draws a progress bar from the events (``cli._progress``), a notebook or a test can
collect them. Events are emitted in the process that runs the flow body, whatever the task
runner, because the flow reports the futures it waits for. A hook that raises is dropped with a
warning: a broken display never stops a sweep.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ProgressHook", "Stage", "SweepEvent", "SweepTracker", "emit", "subscribe"]

_log = logging.getLogger(__name__)


class Stage(StrEnum):
    """The stages of a sweep, in order. Fetching and processing overlap, so they are one stage."""

    LISTING = "listing archives"
    PLANNING = "planning"
    PROCESSING = "processing"  # downloads and processing of the admitted items
    COMPOSING = "composing fields"
    CONTACT_SHEET = "contact sheet"
    RETENTION = "retention"
    MANIFESTS = "manifests"
    FINISHED = "finished"


@dataclass(frozen=True, kw_only=True)
class SweepEvent:
    """Where a sweep stands.

    ``done``/``total`` count the stage's units: archive listings while listing, items from
    planning on (``total`` is None while unknown). ``downloaded`` counts items fetched so far,
    ``not_run`` the items the planner left out (already done, over budget). ``item`` and
    ``status`` name the item (or, while listing, the listing) that just finished, on the event
    that counts it.
    """

    stage: Stage
    done: int = 0
    total: int | None = None
    downloaded: int = 0
    not_run: int = 0
    item: str | None = None
    status: str | None = None


#: A receiver of events (called in the thread that runs the flow body; it must be quick).
ProgressHook = Callable[[SweepEvent], None]

_hooks: list[ProgressHook] = []
_lock = threading.Lock()


@contextmanager
def subscribe(hook: ProgressHook) -> Iterator[ProgressHook]:
    """Send every event emitted inside the block to ``hook``."""
    with _lock:
        _hooks.append(hook)
    try:
        yield hook
    finally:
        with _lock:
            if hook in _hooks:
                _hooks.remove(hook)


def emit(event: SweepEvent) -> None:
    """Give ``event`` to every subscribed hook; a hook that raises is unsubscribed."""
    with _lock:
        hooks = list(_hooks)
    for hook in hooks:
        try:
            hook(event)
        except Exception as exc:  # noqa: BLE001 - the display's problem, never the sweep's
            _log.warning("progress display dropped after an error: %s: %s", type(exc).__name__, exc)
            with _lock:
                if hook in _hooks:
                    _hooks.remove(hook)


class SweepTracker:
    """Counts one sweep's progress and emits an event for each step (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stage = Stage.LISTING
        self._done = 0
        self._total: int | None = None
        self._downloaded = 0
        self._not_run = 0
        self._items = False  # counting items (from planning on), not listings

    def _emit(self, item: str | None = None, status: str | None = None) -> None:
        emit(SweepEvent(stage=self._stage, done=self._done, total=self._total, downloaded=self._downloaded,
                        not_run=self._not_run, item=item, status=status))

    def stage(self, stage: Stage, *, total: int | None = None) -> None:
        """The run moved on to ``stage``; before planning, ``total`` is its number of units (listings)."""
        with self._lock:
            self._stage = stage
            if not self._items:
                self._done, self._total = 0, total
            self._emit()

    def listed(self, listing: str | None = None, outcome: str | None = None) -> None:
        """One archive listing finished: ``listing`` names it, ``outcome`` says what it gave."""
        with self._lock:
            self._done += 1
            self._emit(listing, outcome)

    def planned(self, *, items: int, not_run: int) -> None:
        """The plan: ``items`` to fetch and process, ``not_run`` left out (done, over budget)."""
        with self._lock:
            self._stage, self._items = Stage.PROCESSING, True
            self._done, self._total, self._not_run = 0, items, not_run
            self._emit()

    def downloaded(self, item: str) -> None:
        with self._lock:
            self._downloaded += 1
            self._emit(item)

    def processed(self, item: str, status: str) -> None:
        """One item finished (its products recorded, or its error)."""
        with self._lock:
            self._done += 1
            self._emit(item, status)
