"""Screenshot of the review queue in real Chromium, with demo data (the README picture).

``python -m astro_pipeline.review.screenshot docs/review_queue.png`` builds the demo catalog in a
temporary folder, serves the review page on 127.0.0.1, signs in, and saves a PNG (atomically).
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from astro_pipeline.archives.browser import LAUNCH_FLAGS, host_resolver_rules
from astro_pipeline.fileio import atomic_write

__all__ = ["CHROMIUM_FLAGS", "chromium_path", "take_screenshot", "wait_for_images"]

#: The scrapers' launch flags, with every name but loopback unresolvable (no outside DNS).
CHROMIUM_FLAGS: tuple[str, ...] = (*LAUNCH_FLAGS, f"--host-resolver-rules={host_resolver_rules(())}")


def chromium_path(settings: object | None = None) -> Path | None:
    """The Chromium executable from settings (default /usr/bin/chromium), if it exists."""
    configured = getattr(settings, "chromium_path", None) or Path("/usr/bin/chromium")
    path = Path(configured)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def wait_for_images(page: Any, n: int, timeout_s: float = 60.0) -> None:
    """Wait until the first ``n`` images have loaded (polled from Python: the page's CSP forbids eval)."""
    deadline = time.monotonic() + timeout_s
    check = f"() => Array.from(document.images).slice(0, {int(n)}).every(i => i.complete && i.naturalWidth > 0)"
    while not page.evaluate(check):
        if time.monotonic() > deadline:
            raise TimeoutError(f"images did not load within {timeout_s:g} s")
        page.wait_for_timeout(100)


def take_screenshot(out: Path, *, width: int = 1440, height: int = 1100) -> Path:
    """Write a PNG of the signed-in queue page with demo data to ``out``; returns ``out``."""
    from playwright.sync_api import sync_playwright

    from astro_pipeline.config import Settings
    from astro_pipeline.review.demo import build_demo_catalog
    from astro_pipeline.review.server import ReviewServer

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("Chromium not found at /usr/bin/chromium (apt-get install chromium)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="review-shot-") as tmp:
        demo = build_demo_catalog(Path(tmp))
        token = secrets.token_urlsafe(24)
        settings = Settings(output_dir=Path(tmp), review_tokens={token: "curator"})
        with ReviewServer(catalog=demo.catalog, settings=settings) as srv, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(exe), args=list(CHROMIUM_FLAGS))
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(f"{srv.url}/login")
                page.fill("#token", token)
                page.click("#sign-in")
                page.wait_for_selector("article.item")
                wait_for_images(page, 6)
                atomic_write(out, lambda part: page.screenshot(path=str(part)), suffix=".tmp.png")
            finally:
                browser.close()
        demo.catalog.close()
    return out


if __name__ == "__main__":  # pragma: no cover - a developer command
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/review_queue.png")
    print(take_screenshot(target))
