"""Review app over real HTTP on 127.0.0.1: queue, filters, sign-in, CSRF, decisions, images, errors.

The catalog is a real SQLite catalog filled through the Catalog API (``review.demo``) with small
PNG products; the server is uvicorn in a thread (``ReviewServer``); the client is httpx.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from astro_pipeline.catalog import Catalog
from astro_pipeline.config import Settings
from astro_pipeline.review.auth import COOKIE_NAME
from astro_pipeline.review.demo import DemoCatalog, build_demo_catalog
from astro_pipeline.review.server import ReviewServer

TOKENS = {"tok-alice-0123456789": "alice", "tok-bob-0123456789": "bob"}


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    """The demo catalog, built once; tests work on copies of its database file."""
    demo = build_demo_catalog(tmp_path_factory.mktemp("review-demo"), size=64)
    demo.catalog.close()  # checkpoints the WAL so the .sqlite file is complete
    return demo


@pytest.fixture
def catalog(demo_template: DemoCatalog, tmp_path: Path) -> Iterator[Catalog]:
    shutil.copy(demo_template.root / "catalog.sqlite", tmp_path / "catalog.sqlite")
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    yield cat
    cat.close()


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(output_dir=tmp_path, review_tokens=TOKENS, **kw)


@pytest.fixture
def server(catalog: Catalog, demo_template: DemoCatalog) -> Iterator[ReviewServer]:
    # the output folder is where the demo's images are: the page serves files from there only
    with ReviewServer(catalog=catalog, settings=_settings(demo_template.root)) as srv:
        yield srv


@pytest.fixture
def anon(server: ReviewServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def _sign_in(client: httpx.Client, token: str = "tok-alice-0123456789") -> str:
    """Sign in through the form; returns the page's CSRF token."""
    resp = client.post("/login", data={"token": token, "next": "/"})
    assert resp.status_code == 303, resp.text
    page = client.get("/")
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match, "signed-in page carries no CSRF token"
    return match.group(1)


@pytest.fixture
def alice(server: ReviewServer) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client, _sign_in(client)


def _flagged(demo: DemoCatalog) -> list:
    """The demo frames that carry flags, newest first (the queue's order)."""
    return [f for f in demo.frames if f.flags]


def _queue(client: httpx.Client, **params: str) -> dict:
    resp = client.get("/api/queue", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


# ---- the queue --------------------------------------------------------------------------------
def test_empty_catalog_starts_and_says_nothing_to_review(tmp_path: Path) -> None:
    cat = Catalog(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        with ReviewServer(catalog=cat, settings=_settings(tmp_path)) as srv:
            resp = httpx.get(srv.url + "/", timeout=10)
            assert resp.status_code == 200
            assert "Nothing to review" in resp.text
            assert httpx.get(srv.url + "/healthz", timeout=10).json() == {"status": "ok", "flagged": 0, "left": 0}
    finally:
        cat.close()


def test_queue_lists_flagged_frames_newest_first_with_flags_images_and_metadata(
    anon: httpx.Client, demo_template: DemoCatalog
) -> None:
    data = _queue(anon)
    expected = [f.frame_id for f in demo_template.frames if f.flags]
    assert [it["frame_id"] for it in data["items"]] == expected  # newest first, the clean frame left out
    assert data["left"] == data["total"] == len(expected)

    html = anon.get("/").text
    first = _flagged(demo_template)[0]
    assert f'id="frame-{first.frame_id}"' in html
    assert "<strong>noisy</strong> 1.4 &lt; 3" in html  # measured value, comparison, threshold
    assert "<strong>cosmic_rays</strong> 0.0021 &gt; 0.001" in html
    for text in ("hst_demo_hdf_acs_f775w", "ACS/WFC", "F775W", "RA 189.20000°, Dec +62.21000°",
                 "NASA, ESA, and the Hubble Deep Field team"):
        assert text in html
    assert f'<strong id="left-count">{len(expected)}</strong> left to review' in html
    # grey input, colorized and 4x side by side, each served by catalog id
    article = html.split(f'id="frame-{first.frame_id}"')[1].split("</article>")[0]
    srcs = re.findall(r'<img src="([^"]+)"', article)
    assert srcs[0] == f"/frame/{first.frame_id}/input.png"
    assert re.fullmatch(r"/image/\d+/png", srcs[1]) and re.fullmatch(r"/image/\d+/png", srcs[2])
    assert "Input (grey, stretched)" in article and "Colorized" in article and "4× super-resolution" in article


def test_images_are_served_by_catalog_id(anon: httpx.Client, catalog: Catalog, demo_template: DemoCatalog) -> None:
    frame = catalog.frame(_flagged(demo_template)[0].frame_id)
    assert frame is not None
    color = next(p for p in frame.products if p.operation == "colorize").files["png"]
    resp = anon.get(f"/image/{color.id}/png")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert resp.content == Path(color.path).read_bytes()
    big = next(p for p in frame.products if p.operation == "enhance").files["png"]
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(anon.get(f"/image/{big.id}/png").content)) as im:
        assert im.size == (256, 256)  # the 4x product of a 64 px frame
    with Image.open(BytesIO(anon.get(f"/frame/{frame.frame_id}/input.png").content)) as im:
        assert im.size == (64, 64) and im.mode == "L"
    assert anon.get(f"/image/{color.id}/tif").status_code == 404  # kind must match the catalog row
    assert anon.get("/image/999999/png").status_code == 404


@pytest.mark.parametrize("path", [
    "/image/..%2F..%2Fetc%2Fpasswd/png",
    "/image/1/..%2F..%2Fetc%2Fpasswd",
    "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd/png",
    "/image/..%252F..%252Fetc%252Fpasswd/png",
    "/frame/..%2F..%2Fetc%2Fpasswd/input.png",
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/image/../../etc/passwd",
])
def test_path_traversal_is_refused(server: ReviewServer, path: str) -> None:
    # raw request target, exactly as written (httpx would normalise the plain ../ form)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        req = client.build_request("GET", server.url)
        req.url = req.url.copy_with(raw_path=path.encode())
        resp = client.send(req)
    assert 400 <= resp.status_code < 500
    assert "root:" not in resp.text


def test_filters_flag_archive_run_region_and_status(anon: httpx.Client, demo_template: DemoCatalog) -> None:
    flagged = [f for f in demo_template.frames if f.flags]
    noisy = [f.frame_id for f in flagged if "noisy" in f.flags]
    assert [i["frame_id"] for i in _queue(anon, flag="noisy")["items"]] == noisy
    hla = [f.frame_id for f in flagged if f.archive == "hla"]
    assert [i["frame_id"] for i in _queue(anon, archive="hla")["items"]] == hla
    assert _queue(anon, run=demo_template.run_id)["total"] == len(flagged)
    assert _queue(anon, run="no-such-run")["total"] == 0
    # M101 frames sit about 20 degrees from the HDF and M51 ones
    m101 = [f.frame_id for f in flagged if "m101" in f.obs_id]
    assert [i["frame_id"] for i in _queue(anon, ra="210.80", dec="54.35", radius="0.05")["items"]] == m101
    assert "Nothing to review here" in anon.get("/", params={"flag": "noisy", "archive": "esahubble"}).text
    # a filter form with bad values answers 400 with a message, not a traceback
    resp = anon.get("/", params={"ra": "abc", "dec": "1", "radius": "1"})
    assert resp.status_code == 400 and "must be a number of degrees" in resp.text
    resp = anon.get("/api/queue", params={"ra": "10"})
    assert resp.status_code == 400 and "needs all of ra, dec and radius" in resp.json()["error"]
    assert anon.get("/api/queue", params={"status": "maybe"}).status_code == 400


# ---- sign-in, sessions and CSRF ---------------------------------------------------------------
def test_without_session_page_is_read_only_and_changes_are_refused(
    anon: httpx.Client, catalog: Catalog, demo_template: DemoCatalog
) -> None:
    fid = _flagged(demo_template)[0].frame_id
    html = anon.get("/").text
    assert "read-only" in html and 'class="act approve"' not in html and "csrf-token" not in html
    resp = anon.post(f"/api/frames/{fid}/decision", json={"decision": "approved"})
    assert resp.status_code == 401 and "sign in" in resp.json()["error"]
    assert anon.post(f"/api/frames/{fid}/undo").status_code == 401
    assert anon.post("/api/bulk", json={"decision": "rejected", "filters": {}}).status_code == 401
    # a forged cookie is no session
    anon.cookies.set(COOKIE_NAME, '{"r": "mallory", "c": "x", "t": 9999999999}')
    assert anon.post(f"/api/frames/{fid}/decision", json={"decision": "approved"},
                     headers={"X-CSRF-Token": "x"}).status_code == 401
    assert catalog.current_decision(fid) is None and catalog.review_history(fid) == []


def test_sign_in_sets_httponly_samesite_strict_cookie(anon: httpx.Client) -> None:
    bad = anon.post("/login", data={"token": "wrong"})
    assert bad.status_code == 401 and "not a reviewer token" in bad.text
    resp = anon.post("/login", data={"token": "tok-bob-0123456789", "next": "//evil.example/"})
    assert resp.status_code == 303 and resp.headers["location"] == "/"  # no open redirect
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(COOKIE_NAME + "=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert anon.get("/api/session").json() == {"signed_in": True, "reviewer": "bob"}
    # signing out is a change too: it needs the CSRF token
    assert anon.post("/logout", data={}).status_code == 403
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', anon.get("/").text).group(1)  # type: ignore[union-attr]
    out = anon.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 303 and 'Max-Age=0' in out.headers["set-cookie"]
    assert anon.get("/api/session").json() == {"signed_in": False, "reviewer": None}


def test_changes_need_the_csrf_token(alice: tuple[httpx.Client, str], catalog: Catalog,
                                     demo_template: DemoCatalog) -> None:
    client, csrf = alice
    fid = _flagged(demo_template)[0].frame_id
    url = f"/api/frames/{fid}/decision"
    assert client.post(url, json={"decision": "approved"}).status_code == 403
    assert client.post(url, json={"decision": "approved"}, headers={"X-CSRF-Token": "nope"}).status_code == 403
    cross = client.post(url, json={"decision": "approved"},
                        headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert cross.status_code == 403 and "cross-site" in cross.json()["error"]
    assert catalog.current_decision(fid) is None
    ok = client.post(url, json={"decision": "approved"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200


def test_decide_undo_and_history_with_reviewer_and_time(alice: tuple[httpx.Client, str], catalog: Catalog,
                                                        demo_template: DemoCatalog) -> None:
    client, csrf = alice
    h = {"X-CSRF-Token": csrf}
    fid = _flagged(demo_template)[1].frame_id
    total = _queue(client)["left"]
    resp = client.post(f"/api/frames/{fid}/decision", json={"decision": "rejected", "note": "<b>blank</b>"}, headers=h)
    body = resp.json()
    assert resp.status_code == 200 and body["decision"]["decision"] == "rejected" and body["left"] == total - 1
    current = catalog.current_decision(fid)
    assert current is not None and (current.decision, current.reviewer, current.note) == ("rejected", "alice",
                                                                                          "<b>blank</b>")
    assert current.at is not None
    # the note is archive-independent but still escaped on the page
    html = client.get("/", params={"status": "all"}).text
    assert "&lt;b&gt;blank&lt;/b&gt;" in html and "<b>blank</b>" not in html
    client.post(f"/api/frames/{fid}/decision", json={"decision": "needs_look"}, headers=h)
    assert _queue(client)["left"] == total  # "needs another look" stays open
    undo = client.post(f"/api/frames/{fid}/undo", headers=h).json()
    assert undo["decision"]["decision"] == "rejected"  # undo steps back through history
    undo = client.post(f"/api/frames/{fid}/undo", headers=h).json()
    assert undo["decision"] is None and undo["left"] == total
    actions = [(e.action, e.decision, e.reviewer) for e in catalog.review_history(fid)]
    assert actions == [("decision", "rejected", "alice"), ("decision", "needs_look", "alice"),
                       ("undo", None, "alice"), ("undo", None, "alice")]
    # bad requests: clear 4xx
    assert client.post(f"/api/frames/{fid}/decision", json={"decision": "maybe"}, headers=h).status_code == 400
    assert client.post(f"/api/frames/{fid}/decision", json={"decision": "approved", "note": "x" * 3000},
                       headers=h).status_code == 400
    assert client.post(f"/api/frames/{fid}/decision", content=b"decision=approved", headers={
        **h, "Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
    missing = client.post("/api/frames/999999/decision", json={"decision": "approved"}, headers=h)
    assert missing.status_code == 404 and "no frame with id 999999" in missing.json()["error"]


def test_bulk_actions_on_a_filtered_selection_feed_training(alice: tuple[httpx.Client, str], catalog: Catalog,
                                                            demo_template: DemoCatalog) -> None:
    client, csrf = alice
    h = {"X-CSRF-Token": csrf}
    noisy = {f.frame_id for f in demo_template.frames if "noisy" in f.flags}
    resp = client.post("/api/bulk", json={"decision": "approved", "note": "ok for SR",
                                          "filters": {"flag": "noisy"}}, headers=h)
    assert resp.status_code == 200 and resp.json()["count"] == len(noisy)
    assert {v.frame_id for v in catalog.approved_items("grey")} == noisy
    # "left" counts the open frames in the view the change came from (its filters ride in the query string)
    target = next(f.frame_id for f in demo_template.frames if "cosmic_rays" in f.flags and f.frame_id not in noisy)
    open_cr = _queue(client, flag="cosmic_rays")["left"]
    resp = client.post(f"/api/frames/{target}/decision", params={"flag": "cosmic_rays", "offset": "0"},
                       json={"decision": "approved"}, headers=h)
    assert resp.json()["left"] == open_cr - 1 == _queue(client, flag="cosmic_rays")["left"]
    client.post(f"/api/frames/{target}/undo", headers=h)
    others = [f.frame_id for f in demo_template.frames if f.flags and f.frame_id not in noisy][:2]
    resp = client.post("/api/bulk", json={"decision": "rejected", "frame_ids": others}, headers=h)
    assert resp.status_code == 200 and resp.json()["count"] == 2
    assert all(catalog.current_decision(i).decision == "rejected" for i in others)  # type: ignore[union-attr]
    assert _queue(client, status="rejected")["total"] == 2
    assert client.post("/api/bulk", json={"decision": "rejected", "frame_ids": [999999]},
                       headers=h).status_code == 404
    assert client.post("/api/bulk", json={"decision": "rejected"}, headers=h).status_code == 400


def test_decisions_survive_a_restart_sessions_only_with_a_secret(catalog: Catalog, tmp_path: Path,
                                                                 demo_template: DemoCatalog) -> None:
    fid = _flagged(demo_template)[2].frame_id
    for secret, session_survives in ((None, False), ("s3cret-for-tests", True)):
        settings = _settings(demo_template.root, review_secret=secret)
        with ReviewServer(catalog=catalog, settings=settings) as srv, httpx.Client(base_url=srv.url) as client:
            csrf = _sign_in(client)
            port = srv.port
            assert client.post(f"/api/frames/{fid}/decision", json={"decision": "approved"},
                               headers={"X-CSRF-Token": csrf}).status_code == 200
            cookies = dict(client.cookies)
        fresh = Catalog(catalog.url)  # a new process would open the catalog again
        try:
            with ReviewServer(catalog=fresh, settings=settings, port=port) as srv2, \
                    httpx.Client(base_url=srv2.url, cookies=cookies) as client2:
                assert client2.get("/api/session").json()["signed_in"] is session_survives
                items = {i["frame_id"]: i for i in _queue(client2, status="all")["items"]}
                assert items[fid]["decision"]["decision"] == "approved"
                assert items[fid]["decision"]["reviewer"] == "alice"
        finally:
            fresh.close()


def test_errors_are_clear_4xx(anon: httpx.Client) -> None:
    resp = anon.get("/no/such/page")
    assert resp.status_code == 404 and "not a page of the review app" in resp.text
    resp = anon.get("/api/nothing")
    assert resp.status_code == 404 and resp.json()["status"] == 404
    assert anon.get("/api/frames/1/decision").status_code == 405
    assert anon.get("/", params={"limit": "0"}).status_code == 400
    resp = anon.get("/")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_login_page_without_tokens_explains(catalog: Catalog, tmp_path: Path) -> None:
    with ReviewServer(catalog=catalog, settings=Settings(output_dir=tmp_path)) as srv:
        page = httpx.get(srv.url + "/login", timeout=10).text
        assert "No reviewer tokens are configured" in page
        resp = httpx.post(srv.url + "/login", data={"token": "anything"}, timeout=10)
        assert resp.status_code == 401 and "no reviewer tokens are configured" in resp.text


def test_cli_review_serve_help() -> None:
    from typer.testing import CliRunner

    from astro_pipeline.cli import app

    result = CliRunner().invoke(app, ["review", "serve", "--help"])
    assert result.exit_code == 0
    for opt in ("--host", "--port", "--output", "--catalog"):
        assert opt in result.output
    assert "127.0.0.1" in result.output


def test_input_preview_of_a_fits_frame_is_rendered_by_catalog_id(tmp_path: Path) -> None:
    """A grey FITS input goes through ingestion's display stretch; big frames are shrunk to 1024 px."""
    import hashlib
    from io import BytesIO

    import numpy as np
    from astropy.io import fits
    from PIL import Image

    from astro_pipeline.ingest.frame import Flag, QualityReport
    from astro_pipeline.products import Operation, ProcessedInput, Product, ProductStatus

    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 5.0, (1200, 600)).astype(np.float32)
    data[300:320, 200:220] += 400.0
    src = tmp_path / "frame_drz.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI")]).writeto(src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    cat = Catalog(f"sqlite:///{tmp_path / 'fits.sqlite'}")
    try:
        failed = Product(run_id=None, source_path=str(src), source_sha256=sha, hdu=1, plane=None, frame_key=f"{src}[1]",
                         operation=Operation.COLORIZE, status=ProductStatus.ERROR, error="no weights",
                         quality=QualityReport(metrics={}, flags=[Flag("noisy", 2.0, 3.0, "<")]))
        cat.record_input(ProcessedInput(path=src, sha256=sha, size=src.stat().st_size, n_frames=1, products=[failed]))
        [view] = cat.flagged_frames()
        with ReviewServer(catalog=cat, settings=_settings(tmp_path)) as srv, \
                httpx.Client(base_url=srv.url, timeout=30) as client:
            resp = client.get(f"/frame/{view.frame_id}/input.png")
            assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
            with Image.open(BytesIO(resp.content)) as im:
                assert im.size == (512, 1024) and im.mode == "L"  # (width, height), aspect kept
                arr = np.asarray(im)
            assert arr[int(310 * 1024 / 1200), int(210 * 1024 / 1200)] > arr.mean() + 50  # the bright patch
            html = client.get("/").text
            assert "no colorized product yet" in html and "no 4× product yet" in html  # failed product: no image
        src.unlink()  # retention removed the raw file: a fresh app answers a clear 404, not a traceback
        with ReviewServer(catalog=cat, settings=_settings(tmp_path)) as srv2:
            gone = httpx.get(f"{srv2.url}/frame/{view.frame_id}/input.png", timeout=10)
            assert gone.status_code == 404 and "no longer on disk" in gone.text
            assert "input file no longer on disk (retention)" in httpx.get(srv2.url + "/", timeout=10).text
    finally:
        cat.close()


def test_cli_review_demo_writes_a_catalog_the_page_can_serve(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from astro_pipeline.cli import app

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["review", "demo", "--output", str(out)])
    assert result.exit_code == 0, result.output
    cat = Catalog(f"sqlite:///{out / 'catalog.sqlite'}")
    try:
        assert cat.count_frames(flagged_only=True) == 6
    finally:
        cat.close()
    again = CliRunner().invoke(app, ["review", "demo", "--output", str(out)])
    assert again.exit_code == 2 and "exists" in again.output
