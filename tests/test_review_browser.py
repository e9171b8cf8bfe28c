"""The review page in real Chromium (Debian's /usr/bin/chromium through Playwright).

Click and keyboard decisions with undo, persistence across a server restart, refusal without a
session, an archive title carrying ``<script>`` shown as text, and path traversal refused.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from astro_pipeline.catalog import Catalog
from astro_pipeline.config import Settings
from astro_pipeline.review.demo import DemoCatalog, DemoFrame, build_demo_catalog
from astro_pipeline.review.screenshot import CHROMIUM_FLAGS, chromium_path
from astro_pipeline.review.server import ReviewServer

pytestmark = pytest.mark.browser

CHROMIUM = chromium_path()
TOKEN = "tok-alice-browser-0123456789"
SELECTED = re.compile(r"\bselected\b")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS))
        yield b
        b.close()


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    demo = build_demo_catalog(tmp_path_factory.mktemp("review-browser-demo"), size=64)
    demo.catalog.close()
    return demo


@pytest.fixture
def catalog(demo_template: DemoCatalog, tmp_path: Path) -> Iterator[Catalog]:
    shutil.copy(demo_template.root / "catalog.sqlite", tmp_path / "catalog.sqlite")
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    yield cat
    cat.close()


@pytest.fixture
def settings(demo_template: DemoCatalog) -> Settings:
    # the output folder is where the demo's images are: the page serves files from there only
    return Settings(output_dir=demo_template.root, review_tokens={TOKEN: "alice"})


@pytest.fixture
def server(catalog: Catalog, settings: Settings) -> Iterator[ReviewServer]:
    with ReviewServer(catalog=catalog, settings=settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def ro_catalog(demo_template: DemoCatalog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    """One catalog copy for the tests that change nothing (they check that nothing changed)."""
    folder = tmp_path_factory.mktemp("review-browser-ro")
    shutil.copy(demo_template.root / "catalog.sqlite", folder / "catalog.sqlite")
    cat = Catalog(f"sqlite:///{folder / 'catalog.sqlite'}")
    yield cat
    cat.close()


@pytest.fixture(scope="module")
def ro_server(ro_catalog: Catalog, demo_template: DemoCatalog) -> Iterator[ReviewServer]:
    settings = Settings(output_dir=demo_template.root, review_tokens={TOKEN: "alice"})
    with ReviewServer(catalog=ro_catalog, settings=settings) as srv:
        yield srv


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    yield pg
    context.close()


def _flagged(demo: DemoCatalog) -> list[DemoFrame]:
    return [f for f in demo.frames if f.flags]


def _sign_in(page: Any, url: str) -> None:
    page.goto(f"{url}/login")
    page.fill("#token", TOKEN)
    page.click("#sign-in")
    page.wait_for_selector("#reviewer-name")
    page.wait_for_selector("body[data-ready='1']")


def _status(page: Any, frame_id: int) -> Any:
    return page.locator(f"#frame-{frame_id} [data-role='status']")


def _wait_status(page: Any, frame_id: int, text: str) -> None:
    from playwright.sync_api import expect

    expect(_status(page, frame_id)).to_have_text(text)


def test_approve_and_reject_by_click_and_keyboard_then_undo(page: Any, server: ReviewServer, catalog: Catalog,
                                                            demo_template: DemoCatalog) -> None:
    from playwright.sync_api import expect

    f1, f2, f3, f4, f5 = (f.frame_id for f in _flagged(demo_template)[:5])
    _sign_in(page, server.url)
    expect(page.locator("#left-count")).to_have_text("6")
    expect(page.locator(f"#frame-{f1}")).to_have_class(SELECTED)

    page.click(f"#frame-{f1} button.approve")  # click: approve, selection moves on
    _wait_status(page, f1, "approved by alice")
    expect(page.locator(f"#frame-{f2}")).to_have_class(SELECTED)
    page.keyboard.press("r")  # keyboard: reject the selected frame
    _wait_status(page, f2, "rejected by alice")
    page.fill(f"#frame-{f3} input.note", "satellite trail")
    page.click(f"#frame-{f3} button.reject")  # click: reject with a note
    _wait_status(page, f3, "rejected by alice: \u201csatellite trail\u201d")
    page.keyboard.press("a")  # keyboard: approve (frame 4 is now selected)
    _wait_status(page, f4, "approved by alice")
    expect(page.locator("#left-count")).to_have_text("2")

    page.keyboard.press("u")  # keyboard undo: the latest decision (frame 4)
    _wait_status(page, f4, "undecided")
    page.click(f"#frame-{f1} button.undo")  # click undo on frame 1
    _wait_status(page, f1, "undecided")
    expect(page.locator("#left-count")).to_have_text("4")

    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    expect(page.locator(f"#frame-{f2}")).to_have_class(SELECTED)
    page.locator(f"#frame-{f5}").click(position={"x": 5, "y": 5})  # select by clicking into the item
    page.keyboard.press("s")
    _wait_status(page, f5, "needs another look by alice")

    decisions = {fid: catalog.current_decision(fid) for fid in (f1, f2, f3, f4, f5)}
    assert decisions[f1] is None and decisions[f4] is None
    assert (decisions[f2].decision, decisions[f2].reviewer) == ("rejected", "alice")  # type: ignore[union-attr]
    assert (decisions[f3].decision, decisions[f3].note) == ("rejected", "satellite trail")  # type: ignore[union-attr]
    assert decisions[f5].decision == "needs_look"  # type: ignore[union-attr]
    assert [e.action for e in catalog.review_history(f1)] == ["decision", "undo"]

    # bulk: tick two frames, reject them together
    page.check(f"#frame-{f1} input.pick")
    page.check(f"#frame-{f4} input.pick")
    page.select_option("#bulk-decision", "rejected")
    page.click("#bulk-checked")
    _wait_status(page, f1, "rejected by alice")
    _wait_status(page, f4, "rejected by alice")
    assert catalog.current_decision(f4).decision == "rejected"  # type: ignore[union-attr]

    # bulk over the whole filter asks first; dismissing the question changes nothing
    page.once("dialog", lambda d: d.dismiss())
    page.click("#bulk-filter")
    page.wait_for_timeout(300)
    assert catalog.current_decision(f2).decision == "rejected"  # type: ignore[union-attr]
    page.select_option("#bulk-decision", "needs_look")
    page.once("dialog", lambda d: d.accept())
    page.click("#bulk-filter")  # the page shows open frames: f5 (needs another look) and f6 (undecided)
    expect(page.locator("#bulk-result")).to_have_text("2 frames: needs another look.")
    assert catalog.count_frames(flagged_only=True, decision="needs_look") == 2
    assert catalog.count_frames(flagged_only=True, decision="rejected") == 4

    # zoom on click, Escape closes
    page.click(f"#frame-{f1} figure.preview-sr img")
    expect(page.locator("#zoom")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#zoom")).to_be_hidden()


def test_decisions_persist_across_a_server_restart(page: Any, catalog: Catalog, settings: Settings,
                                                   demo_template: DemoCatalog) -> None:
    from playwright.sync_api import expect

    f1, f2 = (f.frame_id for f in _flagged(demo_template)[:2])
    srv = ReviewServer(catalog=catalog, settings=settings).start()
    port = srv.port
    try:
        _sign_in(page, srv.url)
        page.keyboard.press("a")
        _wait_status(page, f1, "approved by alice")
        page.keyboard.press("r")
        _wait_status(page, f2, "rejected by alice")
    finally:
        srv.stop()
    reopened = Catalog(catalog.url)
    try:
        with ReviewServer(catalog=reopened, settings=settings, port=port) as srv2:
            page.goto(f"{srv2.url}/?status=all")
            _wait_status(page, f1, "approved by alice")
            _wait_status(page, f2, "rejected by alice")
            expect(page.locator("#left-count")).to_have_text("4")
            # the per-process signing key changed, so the old session no longer counts
            expect(page.locator("#readonly-badge")).to_be_visible()
    finally:
        reopened.close()


def test_a_change_without_a_session_is_refused(page: Any, ro_server: ReviewServer, ro_catalog: Catalog,
                                               demo_template: DemoCatalog) -> None:
    server, catalog = ro_server, ro_catalog
    from playwright.sync_api import expect

    fid = _flagged(demo_template)[0].frame_id
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator("#readonly-badge")).to_be_visible()
    assert page.locator("button.act").count() == 0
    page.keyboard.press("a")
    expect(page.locator("#toast")).to_contain_text("Read-only")
    status = page.evaluate(
        """async (id) => (await fetch(`/api/frames/${id}/decision`, {method: "POST",
            headers: {"Content-Type": "application/json"}, body: JSON.stringify({decision: "approved"})})).status""",
        fid)
    assert status == 401
    resp = page.request.post(f"{server.url}/api/frames/{fid}/decision", data={"decision": "rejected"})
    assert resp.status == 401 and "sign in" in resp.json()["error"]
    _wait_status(page, fid, "undecided")
    assert catalog.current_decision(fid) is None and catalog.review_history(fid) == []


def test_a_title_with_script_shows_as_text(page: Any, ro_server: ReviewServer, demo_template: DemoCatalog) -> None:
    server = ro_server
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    item = next(f for f in demo_template.frames if "<script>" in f.title)
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    title = page.locator(f"#frame-{item.frame_id} h2.title")
    assert title.inner_text() == "Deep field <script>alert('x')</script> & friends"
    assert page.locator("main script").count() == 0
    page.wait_for_timeout(200)
    assert dialogs == []


def test_path_traversal_requests_fail(page: Any, ro_server: ReviewServer) -> None:
    paths = ("/image/..%2F..%2Fetc%2Fpasswd/png", "/image/1/..%2F..%2Fetc%2Fpasswd",
             "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/frame/..%252F..%252Fetc%252Fpasswd/input.png",
             "/image/../../etc/passwd")
    for path in paths[:2]:  # as a page the browser navigates to: an HTML error with a message
        resp = page.goto(ro_server.url + path)
        assert resp is not None and resp.status == 404, path
        assert "root:" not in page.content()
        assert page.locator("#error-message").count() == 1
    for path in paths:  # as requests from the browser context
        api = page.request.get(ro_server.url + path)
        assert 400 <= api.status < 500, path
        assert "root:" not in api.text()


def test_dns_rebinding_is_refused_in_chromium(browser: Any, server: ReviewServer, catalog: Catalog,
                                              demo_template: DemoCatalog) -> None:
    """A page at evil.example that the resolver points at 127.0.0.1 (DNS rebinding) gets 421s."""
    from astro_pipeline.review.auth import COOKIE_NAME

    rules = "--host-resolver-rules=MAP evil.example 127.0.0.1 , MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost"
    flags = [f for f in CHROMIUM_FLAGS if not f.startswith("--host-resolver-rules")] + [rules]
    fid = _flagged(demo_template)[0].frame_id
    # a second Chromium from the same Playwright, with evil.example resolving to 127.0.0.1
    b = browser.browser_type.launch(executable_path=str(CHROMIUM), args=flags)
    try:
        context = b.new_context()
        page = context.new_page()
        page.set_default_timeout(10_000)
        resp = page.goto(f"http://evil.example:{server.port}/login")
        assert resp is not None and resp.status == 421
        assert "not a name this review server answers to" in page.content()
        status = page.evaluate(
            """async (tok) => (await fetch('/login', {method: 'POST', body: new URLSearchParams({token: tok}),
                redirect: 'manual'})).status""", TOKEN)
        assert status == 421
        status = page.evaluate(
            """async (id) => (await fetch(`/api/frames/${id}/decision`, {method: 'POST',
                headers: {'Content-Type': 'application/json'}, body: JSON.stringify({decision: 'approved'})})).status""",
            fid)
        assert status == 421
        assert not [c for c in context.cookies() if c["name"] == COOKIE_NAME]
        # the same browser reaches the page under its own name
        assert page.goto(f"{server.url}/login").status == 200  # type: ignore[union-attr]
    finally:
        b.close()
    assert catalog.review_history(fid) == []


def test_sign_out_in_the_browser_revokes_the_session(page: Any, server: ReviewServer, catalog: Catalog,
                                                     demo_template: DemoCatalog) -> None:
    import httpx

    from astro_pipeline.review.auth import COOKIE_NAME

    fid = _flagged(demo_template)[0].frame_id
    _sign_in(page, server.url)
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == COOKIE_NAME)
    csrf = page.locator("meta[name='csrf-token']").get_attribute("content")
    page.click("header form.inline button")  # sign out
    page.wait_for_selector("#readonly-badge")
    with httpx.Client(base_url=server.url, cookies={COOKIE_NAME: cookie}, timeout=10) as replay:
        resp = replay.post(f"/api/frames/{fid}/decision", json={"decision": "rejected"},
                           headers={"X-CSRF-Token": csrf or ""})
        assert resp.status_code == 401, resp.text
    assert catalog.review_history(fid) == []
