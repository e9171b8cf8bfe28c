"""Shared headless-Chromium start-up and per-host politeness for the web-scraping clients.

One place decides which browser runs (``Settings.chromium_path``, then Playwright's own
build), with which flags (ENVIRONMENT.md: no sandbox, no GPU, no background traffic, and a
host-resolver rule that lets only the configured archive hosts resolve), and how long anything
may wait. Every wait ends in :class:`ScrapeError` naming the selector and the URL, so a scraper
never hangs and never silently returns nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from astro_pipeline.config import Settings

if TYPE_CHECKING:  # pragma: no cover - typing only
    from playwright.sync_api import Browser, BrowserContext, ElementHandle, Frame, Page, Playwright, Response

__all__ = [
    "LAUNCH_FLAGS",
    "BrowserNotFoundError",
    "BrowserSession",
    "HostPoliteness",
    "ScrapeError",
    "ScrapeStats",
    "fetch_records",
    "find_chromium",
    "host_resolver_rules",
    "run_outside_event_loop",
]

#: Flags measured to work with Debian's Chromium 156 under Playwright 1.65 (ENVIRONMENT.md).
LAUNCH_FLAGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

INSTALL_HINT = (
    "install one with `apt-get install chromium` (Debian/Ubuntu; gives /usr/bin/chromium), "
    "or point ASTRO_PIPELINE_CHROMIUM_PATH at a Chromium/Chrome executable"
)

T = TypeVar("T")


class BrowserNotFoundError(RuntimeError):
    """No usable Chromium: the message says what was tried and how to install one."""


class ScrapeError(RuntimeError):
    """A page did not look or behave as expected: names the URL and, when relevant, the selector."""

    def __init__(self, url: str, problem: str, *, selector: str | None = None) -> None:
        self.url = url
        self.selector = selector
        self.problem = problem
        where = f"selector {selector!r} on {url}" if selector else url
        super().__init__(f"{where}: {problem}")


@dataclass
class ScrapeStats:
    """Where the time went: browser start, each results/list page, each detail page."""

    launch_s: float = 0.0
    page_s: list[float] = field(default_factory=list)
    item_s: list[float] = field(default_factory=list)
    download_s: list[float] = field(default_factory=list)
    total_s: float = 0.0

    def summary(self) -> dict[str, float]:
        def mean(xs: list[float]) -> float:
            return sum(xs) / len(xs) if xs else 0.0

        return {"launch_s": round(self.launch_s, 3), "pages": len(self.page_s), "per_page_s": round(mean(self.page_s), 3),
                "items": len(self.item_s), "per_item_s": round(mean(self.item_s), 3),
                "downloads": len(self.download_s), "per_download_s": round(mean(self.download_s), 3),
                "total_s": round(self.total_s, 3)}


def fetch_records(downloader: Any, records: list[Any], dest_dir: Path, stats: ScrapeStats | None = None) -> list[Any]:
    """Download ``records`` one at a time through the shared ``Downloader``.

    Returns a ``DownloadedFile`` or the ``DownloadError`` per record (never raises for one bad
    file) and records each download's seconds in ``stats.download_s``.
    """
    from astro_pipeline.archives.download import DownloadError

    dest_dir.mkdir(parents=True, exist_ok=True)
    out: list[Any] = []
    for record in records:
        t0 = time.perf_counter()
        try:
            out.append(downloader.fetch(record, dest_dir))
        except DownloadError as exc:
            out.append(exc)
        if stats is not None:
            stats.download_s.append(time.perf_counter() - t0)
    return out


def _is_executable(path: Path | None) -> bool:
    return path is not None and path.is_file() and os.access(path, os.X_OK)


def find_chromium(settings: Settings, *, playwright_executable: str | None = None) -> Path | None:
    """The browser executable to launch.

    Returns ``Settings.chromium_path`` when it is an executable file; else ``None`` when
    Playwright's own Chromium (``playwright_executable``) is installed (Playwright then
    launches it by default). Raises :class:`BrowserNotFoundError` with install advice otherwise.
    """
    configured = Path(settings.chromium_path).expanduser() if settings.chromium_path else None
    if _is_executable(configured):
        return configured
    if playwright_executable and _is_executable(Path(playwright_executable)):
        return None
    tried = [f"Settings.chromium_path={configured}" if configured else "Settings.chromium_path unset"]
    if playwright_executable:
        tried.append(f"Playwright's browser {playwright_executable}")
    raise BrowserNotFoundError(f"no Chromium found ({'; '.join(tried)} missing): {INSTALL_HINT}")


def host_resolver_rules(hosts: Iterable[str]) -> str:
    """``--host-resolver-rules`` value: every name fails to resolve except loopback and ``hosts``."""
    allowed = ["127.0.0.1", "localhost", *sorted({h for h in hosts if h})]
    seen: list[str] = []
    for h in allowed:
        if h not in seen:
            seen.append(h)
    return "MAP * ~NOTFOUND , " + " , ".join(f"EXCLUDE {h}" for h in seen)


class HostPoliteness:
    """At most one request start per ``min_interval_s`` to each host (process-wide, thread-safe).

    The scrapers call :meth:`wait` before each navigation and each download batch, so the HLA
    and ESA/Hubble clients share one schedule per host even when they run side by side.
    """

    _lock = threading.Lock()
    _next_slot: dict[str, float] = {}

    def __init__(self, min_interval_s: float) -> None:
        self.min_interval_s = max(0.0, float(min_interval_s))

    def wait(self, url: str) -> float:
        """Sleep until ``url``'s host may be contacted again; returns the seconds slept."""
        host = urlsplit(url).netloc.lower()
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot.get(host, 0.0))
            self._next_slot[host] = slot + self.min_interval_s
        delay = slot - now
        if delay > 0:
            time.sleep(delay)
        return max(delay, 0.0)


def run_outside_event_loop(fn: Callable[[], T]) -> T:
    """Run ``fn`` here, or in a worker thread when this thread already runs an asyncio loop.

    Playwright's sync API refuses to run inside a running event loop (e.g. an async Prefect
    flow); a worker thread has none.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="browser") as pool:
        return pool.submit(fn).result()


class BrowserSession:
    """``with BrowserSession(settings) as b:`` one headless Chromium, one context, bounded waits.

    ``timeout_s`` (default ``Settings.browser_timeout_s``) bounds every navigation and every
    selector wait; timeouts and HTTP errors become :class:`ScrapeError`.
    """

    def __init__(self, settings: Settings, *, timeout_s: float | None = None) -> None:
        self.settings = settings
        self.timeout_s = float(timeout_s if timeout_s is not None else self.settings.browser_timeout_s)
        self.politeness = HostPoliteness(self.settings.download.min_interval_s)
        self._pw_cm: Any = None
        self._pw: Playwright | None = None
        self.browser: Browser | None = None
        self.context: BrowserContext | None = None
        self.executable: Path | None = None
        self.launch_s: float = 0.0

    # --- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> BrowserSession:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright

        t0 = time.perf_counter()
        self._pw_cm = sync_playwright()
        self._pw = self._pw_cm.__enter__()
        try:
            try:
                own = self._pw.chromium.executable_path
            except PlaywrightError:  # pragma: no cover - depends on the installed driver
                own = None
            self.executable = find_chromium(self.settings, playwright_executable=own)
            args = [*LAUNCH_FLAGS, f"--host-resolver-rules={host_resolver_rules(self.settings.allowed_hosts)}"]
            try:
                self.browser = self._pw.chromium.launch(
                    executable_path=str(self.executable) if self.executable else None,
                    headless=True,
                    args=args,
                    timeout=max(self.timeout_s, 30.0) * 1000,
                )
            except PlaywrightError as exc:
                raise BrowserNotFoundError(
                    f"Chromium at {self.executable or own} failed to start ({_first_line(exc)}): {INSTALL_HINT}"
                ) from exc
            self.context = self.browser.new_context(
                user_agent=self.settings.download.user_agent, accept_downloads=False,
            )
            self.context.set_default_timeout(self.timeout_s * 1000)
            self.context.set_default_navigation_timeout(self.timeout_s * 1000)
        except BaseException:
            self.close()
            raise
        self.launch_s = time.perf_counter() - t0
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the browser and stop Playwright (idempotent)."""
        try:
            if self.browser is not None:
                self.browser.close()
        except Exception:  # noqa: BLE001 - best effort: the process may already be gone
            pass
        finally:
            self.browser = None
            self.context = None
            if self._pw_cm is not None:
                cm, self._pw_cm = self._pw_cm, None
                cm.__exit__(None, None, None)

    # --- pages ----------------------------------------------------------------------------------
    def new_page(self) -> Page:
        if self.context is None:
            raise RuntimeError("BrowserSession is not started (use it as a context manager)")
        return self.context.new_page()

    def goto(self, page: Page, url: str, *, wait_until: str = "load") -> None:
        """Navigate politely; a timeout, a network error or an HTTP error status is a ScrapeError."""
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        self.politeness.wait(url)
        try:
            response = page.goto(url, wait_until=wait_until, timeout=self.timeout_s * 1000)  # type: ignore[arg-type]
        except PlaywrightTimeout as exc:
            raise ScrapeError(url, f"page did not finish loading within {self.timeout_s:g} s (stalled)") from exc
        except PlaywrightError as exc:
            raise ScrapeError(url, f"navigation failed: {_first_line(exc)}") from exc
        if response is not None and response.status >= 400:
            raise ScrapeError(url, f"HTTP {response.status} {response.status_text}".rstrip())
        if response is not None:
            self._check_size(url, response)

    def _check_size(self, url: str, response: Response) -> None:
        """A page over ``download.max_reply_bytes`` (its Content-Length, else the body Chromium
        received) is a ScrapeError before anything is read from it."""
        from playwright.sync_api import Error as PlaywrightError

        cap = self.settings.download.max_reply_bytes
        declared = response.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else None
        if size is None:  # no length declared: ask Chromium what it received (one more copy, only then)
            try:
                size = len(response.body())
            except PlaywrightError:  # a body Chromium did not keep (a redirect, a download)
                return
        if size > cap:
            raise ScrapeError(url, f"a page of {size:,} bytes is over the reply cap of {cap:,} bytes "
                                   "(download.max_reply_bytes)")

    def wait_for(
        self, where: Page | Frame, selector: str, *, state: str = "attached", timeout_s: float | None = None,
    ) -> ElementHandle:
        """The first element matching ``selector``; ScrapeError naming it and the URL if none appears."""
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        t = self.timeout_s if timeout_s is None else timeout_s
        try:
            handle = where.wait_for_selector(selector, state=state, timeout=t * 1000)  # type: ignore[arg-type]
        except PlaywrightTimeout as exc:
            raise ScrapeError(_url_of(where), f"not found within {t:g} s (page layout changed or stalled)",
                              selector=selector) from exc
        except PlaywrightError as exc:
            raise ScrapeError(_url_of(where), f"wait failed: {_first_line(exc)}", selector=selector) from exc
        if handle is None:  # only for state="detached"/"hidden"
            raise ScrapeError(_url_of(where), "element vanished", selector=selector)
        return handle

    def wait_until(
        self, where: Page | Frame, script: str, arg: Any = None, *, selector: str, problem: str,
        timeout_s: float | None = None,
    ) -> Any:
        """Poll a JS predicate until truthy; on timeout a ScrapeError naming ``selector`` and the URL."""
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        t = self.timeout_s if timeout_s is None else timeout_s
        try:
            handle = where.wait_for_function(script, arg=arg, timeout=t * 1000, polling=100)
        except PlaywrightTimeout as exc:
            raise ScrapeError(_url_of(where), f"{problem} within {t:g} s", selector=selector) from exc
        except PlaywrightError as exc:
            raise ScrapeError(_url_of(where), f"{problem}: {_first_line(exc)}", selector=selector) from exc
        return handle.json_value()


    def read(
        self, where: Page | Frame, fields: list[tuple[str, str, str]], *, timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Wait until every ``(key, selector, js_property)`` exists, then read all in one round trip.

        One browser round trip instead of two per element (20 result frames a page make this
        count). On timeout, names the first selector still missing and the document's URL.
        """
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        t = self.timeout_s if timeout_s is None else timeout_s
        try:
            handle = where.wait_for_function(_READ_JS, arg=fields, timeout=t * 1000, polling=100)
            return dict(handle.json_value())
        except PlaywrightTimeout:
            missing = self._missing(where, fields)
            loaded = missing is not None
            sel = (missing or [fields[0][1]])[0]
            problem = (f"not found within {t:g} s (page layout changed)" if loaded
                       else f"document did not load within {t:g} s (stalled)")
            raise ScrapeError(_url_of(where), problem, selector=sel) from None
        except PlaywrightError as exc:
            raise ScrapeError(_url_of(where), f"read failed: {_first_line(exc)}", selector=fields[0][1]) from exc

    @staticmethod
    def _missing(where: Page | Frame, fields: list[tuple[str, str, str]]) -> list[str] | None:
        """Selectors absent from the loaded document; None when the document is not ready."""
        try:
            handle = where.wait_for_function(
                "(spec) => document.readyState !== 'loading' && document.body ? "
                "{m: spec.filter(([k, s]) => !document.querySelector(s)).map(([k, s]) => s)} : null",
                arg=fields, timeout=1500)
            return list(handle.json_value()["m"])
        except Exception:  # noqa: BLE001 - a stalled document: report it as not loaded
            return None


_READ_JS = """(spec) => {
  const out = {};
  for (const [key, sel, prop] of spec) {
    const e = document.querySelector(sel);
    if (!e) return null;
    out[key] = e[prop];
  }
  return out;
}"""


def _url_of(where: Any) -> str:
    try:
        return str(where.url)
    except Exception:  # noqa: BLE001 - a closed page has no URL
        return "<closed page>"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
