"""What ``sweep`` and ``reprocess`` show while they run: a progress bar from the flow's events, and
Prefect's own lines kept in its logs.

:class:`SweepDisplay` turns ``astro_pipeline.progress`` events into a rich progress bar (items
done out of total, the current stage, elapsed time, time left) on a terminal, or into a plain
line per stage and per tenth of the items elsewhere (logs, CI, pipes). :func:`prefect_lines`
keeps Prefect's per-task INFO lines (``Task run 'process-9d9' - Finished ...``) off the terminal
unless ``--verbose``, and writes all of them to a log file; they still reach Prefect's API and UI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from astro_pipeline.progress import Stage, SweepEvent

__all__ = ["SweepDisplay", "prefect_lines"]

_PLAIN_EVERY_S = 30.0  # a plain progress line at least this often while items finish


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(max(0.0, seconds))))


class SweepDisplay:
    """A progress display fed with ``SweepEvent`` s (use as a ``with`` block and a progress hook).

    ``live``: a rich bar when the console is a terminal; otherwise (or with ``live=False``, as
    ``--verbose`` asks, since Prefect's own lines would tear a live bar) plain lines.
    """

    def __init__(self, console: Console, *, live: bool = True) -> None:
        self.console = console
        self.live = live and console.is_terminal
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._started = time.monotonic()
        self._work_started: float | None = None
        self._stage: Stage | None = None
        self._last_line = 0.0
        self._last_done = -1

    def __enter__(self) -> SweepDisplay:
        self._started = time.monotonic()
        if self.live:
            self._bar = Progress(
                SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("items"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                console=self.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task("starting Prefect", total=None)
        else:
            self._say("starting Prefect (its temporary API server: up to a minute on a busy machine)")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def refresh(self) -> None:
        if self._bar is not None:
            self._bar.refresh()

    def __call__(self, event: SweepEvent) -> None:
        if event.stage is Stage.PROCESSING and self._work_started is None:
            self._work_started = time.monotonic()
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=self._describe(event), **self._counts(event))
        else:
            self._plain(event)
        self._stage = event.stage

    # ----------------------------------------------------------------------------- the bar

    def _counts(self, event: SweepEvent) -> dict[str, float | None]:
        if event.stage in (Stage.LISTING, Stage.PLANNING):  # items are not known yet
            return {"total": None, "completed": 0}
        return {"total": event.total, "completed": event.done}

    @staticmethod
    def _describe(event: SweepEvent) -> str:
        if event.stage is Stage.LISTING:
            return f"listing archives {event.done}/{event.total or 0}"
        if event.stage is Stage.PROCESSING:
            last = f" · last {event.item}: {event.status}" if event.item and event.status else ""
            return f"processing · downloaded {event.downloaded}/{event.total or 0}{last}"
        return str(event.stage)

    # ----------------------------------------------------------------------------- plain lines

    def _say(self, text: str) -> None:
        self.console.print(f"sweep: {text}", highlight=False, soft_wrap=True)
        self._last_line = time.monotonic()

    def _plain(self, event: SweepEvent) -> None:
        now = time.monotonic()
        if event.stage is not self._stage:
            if event.stage is Stage.PROCESSING:
                self._say(f"{event.total} item(s) to fetch and process, {event.not_run} not run "
                          "(already done or over budget)")
            elif event.stage is Stage.FINISHED:
                self._say(f"{event.done}/{event.total or 0} items, finished, {_clock(now - self._started)} elapsed")
                return
            elif event.stage is Stage.LISTING:
                self._say(f"listing archives ({event.total} listing(s): one per region and archive)")
            elif event.stage is not Stage.PLANNING:
                self._say(str(event.stage))
        if event.stage is Stage.LISTING and event.item and event.status:  # what each archive gave
            self._say(f"{event.item} {event.status}")
            return
        if event.stage is not Stage.PROCESSING or event.status is None or event.done == self._last_done:
            return
        total = event.total or 0
        step = max(1, total // 10)
        if event.done == total or event.done % step == 0 or now - self._last_line >= _PLAIN_EVERY_S:
            self._last_done = event.done
            work = now - (self._work_started or now)
            left = work / event.done * (total - event.done) if event.done else 0.0
            self._say(f"{event.done}/{total} items (downloaded {event.downloaded}), {_clock(now - self._started)} "
                      f"elapsed, about {_clock(left)} left")


@contextmanager
def prefect_lines(*, verbose: bool, log_file: Path | None) -> Iterator[Path | None]:
    """Prefect's terminal lines only with ``verbose`` (warnings and errors always); all of them in ``log_file``.

    Prefect logs through handlers on the root logger (its console handler) and its API handler;
    only the console handler's level changes here, and for the rest of the command: Prefect
    still logs as the process exits (stopping its temporary server), and without ``verbose`` those
    server lines go to ``log_file`` too. The log file gets the lines of the block.
    """
    from prefect import flow  # noqa: F401 - importing Prefect sets up its logging handlers
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    root = logging.getLogger()
    consoles = [h for h in root.handlers if isinstance(h, PrefectConsoleHandler)]
    file_handler: logging.Handler | None = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(PrefectFormatter(
            format="%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s",
            flow_run_fmt="%(asctime)s.%(msecs)03d | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s",
            task_run_fmt="%(asctime)s.%(msecs)03d | %(levelname)-7s | Task run %(task_run_name)r - %(message)s",
            datefmt="%Y-%m-%d %H:%M:%S"))
        root.addHandler(file_handler)
    if not verbose:
        for handler in consoles:
            handler.setLevel(max(handler.level, logging.WARNING))
    try:
        yield log_file
    finally:
        if file_handler is not None:
            root.removeHandler(file_handler)
            file_handler.close()
        if not verbose:
            _server_shutdown_to(log_file)


def _server_shutdown_to(log_file: Path | None) -> None:
    """Send what Prefect's temporary API server logs as it stops (at process exit, after the run is
    recorded: events it can no longer flush, as ERROR tracebacks) to ``log_file``, not the terminal."""
    server = logging.getLogger("prefect.server")
    if log_file is not None:
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8", delay=True)
        handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s",
                                               datefmt="%Y-%m-%d %H:%M:%S"))
    else:
        handler = logging.NullHandler()
    for earlier in [h for h in server.handlers if getattr(h, "_astro_shutdown", False)]:  # a command run before
        server.removeHandler(earlier)
        earlier.close()
    handler._astro_shutdown = True  # type: ignore[attr-defined]
    server.addHandler(handler)
    server.propagate = False
