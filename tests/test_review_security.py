"""The review page from an attacker's side, over real HTTP on 127.0.0.1 (issue 18).

DNS rebinding (forged Host and Origin), token guessing (rate limit, minimum token length, the demo's
random token), revocable sessions stored in the catalog (surviving a restart, on SQLite and
PostgreSQL), ids as ASCII digits only, served files resolved and checked by magic bytes, a 1 MB
body cap, security headers on every response (errors included) and read-only serving on
non-loopback addresses. Real catalog (``review.demo``), real uvicorn (``ReviewServer``), httpx.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from astro_pipeline.catalog import Catalog
from astro_pipeline.config import Settings
from astro_pipeline.review.auth import COOKIE_NAME
from astro_pipeline.review.demo import DemoCatalog, build_demo_catalog
from astro_pipeline.review.server import ReviewServer

TOKEN = "tok-alice-0123456789"
TOKENS = {TOKEN: "alice"}
CLI = [sys.executable, "-c", "from astro_pipeline.cli import main; main()"]
HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy")


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    demo = build_demo_catalog(tmp_path_factory.mktemp("review-sec-demo"), size=48)
    demo.catalog.close()
    return demo


@pytest.fixture
def out(demo_template: DemoCatalog, tmp_path: Path) -> Path:
    """A private copy of the demo output folder (catalog, raw inputs, products)."""
    folder = tmp_path / "out"
    shutil.copytree(demo_template.root, folder)
    return folder


def _retarget(folder: Path, old_root: Path) -> None:
    """Point the copied catalog's file paths at the copy (they were recorded under the template)."""
    import sqlite3

    con = sqlite3.connect(folder / "catalog.sqlite")
    with con:
        for table in ("files", "product_files"):
            con.execute(f"UPDATE {table} SET path = replace(path, ?, ?)", (str(old_root), str(folder)))
    con.close()


@pytest.fixture
def catalog(out: Path, demo_template: DemoCatalog) -> Iterator[Catalog]:
    _retarget(out, demo_template.root)
    cat = Catalog(f"sqlite:///{out / 'catalog.sqlite'}")
    yield cat
    cat.close()


def _settings(out: Path, **kw: object) -> Settings:
    return Settings(output_dir=out, review_tokens=TOKENS, **kw)


@pytest.fixture
def server(catalog: Catalog, out: Path) -> Iterator[ReviewServer]:
    with ReviewServer(catalog=catalog, settings=_settings(out)) as srv:
        yield srv


def _csrf(client: httpx.Client) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get("/").text)
    assert match, "signed-in page carries no CSRF token"
    return match.group(1)


def _sign_in(client: httpx.Client, token: str = TOKEN) -> str:
    resp = client.post("/login", data={"token": token, "next": "/"})
    assert resp.status_code == 303, resp.text
    return _csrf(client)


def _flagged_ids(demo: DemoCatalog) -> list[int]:
    return [f.frame_id for f in demo.frames if f.flags]


def _has_security_headers(resp: httpx.Response) -> bool:
    return all(h in resp.headers for h in HEADERS) and resp.headers["x-content-type-options"] == "nosniff"


# ---- 1. DNS rebinding: Host allow-list, Origin against the allow-list ----------------------------
def test_forged_host_and_origin_are_refused_before_any_handler(server: ReviewServer, catalog: Catalog,
                                                               demo_template: DemoCatalog) -> None:
    evil = f"evil.example:{server.port}"
    fid = _flagged_ids(demo_template)[0]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        # a rebound page: the browser sends the attacker's name as Host and as Origin
        forged = {"Host": evil, "Origin": f"http://{evil}"}
        login = client.post("/login", data={"token": TOKEN}, headers=forged)
        assert login.status_code == 421, login.text
        assert "set-cookie" not in login.headers and _has_security_headers(login)
        assert "evil.example" in login.text and "not a name this review server answers to" in login.text
        assert client.get("/", headers={"Host": evil}).status_code == 421
        assert client.get("/api/queue", headers={"Host": evil}).status_code == 421
        assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 421
        assert client.get("/", headers={"Host": f"evil.example@127.0.0.1:{server.port}"}).status_code == 421
        # signed in legitimately, a rebound request still cannot decide
        csrf = _sign_in(client)
        resp = client.post(f"/api/frames/{fid}/decision", json={"decision": "approved"},
                           headers={**forged, "X-CSRF-Token": csrf})
        assert resp.status_code == 421
        # Host is fine, Origin is another site (or opaque): refused, even with the right CSRF token
        for origin in ("http://evil.example", f"http://evil.example:{server.port}", "null"):
            resp = client.post(f"/api/frames/{fid}/decision", json={"decision": "approved"},
                               headers={"Origin": origin, "X-CSRF-Token": csrf})
            assert resp.status_code == 403, (origin, resp.text)
        assert catalog.review_history(fid) == []
        # the loopback names are the allow-list: localhost and 127.0.0.1 both work
        ok = client.post(f"/api/frames/{fid}/decision", json={"decision": "approved"},
                         headers={"Host": f"localhost:{server.port}", "Origin": f"http://localhost:{server.port}",
                                  "X-CSRF-Token": csrf})
        assert ok.status_code == 200, ok.text
    with httpx.Client(base_url=server.url, timeout=10) as fresh:
        assert fresh.post("/login", data={"token": TOKEN},
                          headers={"Origin": "http://evil.example"}).status_code == 403


def test_extra_allowed_host_for_a_reverse_proxy(catalog: Catalog, out: Path) -> None:
    settings = _settings(out, review_allowed_hosts=["review.example.org"])
    with ReviewServer(catalog=catalog, settings=settings) as srv, \
            httpx.Client(base_url=srv.url, timeout=10) as client:
        proxied = {"Host": "review.example.org", "Origin": "https://review.example.org"}
        assert client.get("/", headers=proxied).status_code == 200
        assert client.post("/login", data={"token": TOKEN}, headers=proxied).status_code == 303
        assert client.get("/", headers={"Host": "other.example.org"}).status_code == 421


# ---- 1. token guessing: rate limit, minimum length, the demo's token -----------------------------
def test_forty_wrong_tokens_get_429_with_a_doubling_retry_after(server: ReviewServer) -> None:
    codes: list[int] = []
    retry: list[int] = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i in range(40):
            resp = client.post("/login", data={"token": f"wrong-token-guess-{i:04d}"})
            codes.append(resp.status_code)
            if resp.status_code == 429:
                assert _has_security_headers(resp)
                retry.append(int(resp.headers["retry-after"]))
        assert codes[:10] == [401] * 10
        assert codes[10:] == [429] * 30
        assert retry[:5] == [60, 120, 240, 480, 900] and set(retry[5:]) == {900}  # doubles, capped at 15 min
        # while blocked even the right token is not looked at
        blocked = client.post("/login", data={"token": TOKEN})
        assert blocked.status_code == 429 and "set-cookie" not in blocked.headers
        assert "too many failed sign-ins" in blocked.text
    # another client (another loopback address) is not blocked
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=server.url, timeout=10, transport=transport) as other:
        assert other.post("/login", data={"token": "wrong-token-guess-x"}).status_code == 401
        assert other.post("/login", data={"token": TOKEN}).status_code == 303


def test_rate_limit_window_doubling_and_reset_with_a_clock() -> None:
    from astro_pipeline.review.ratelimit import SignInLimiter

    now = [1000.0]
    lim = SignInLimiter(clock=lambda: now[0])

    def wrong() -> int | None:
        """One sign-in with a wrong token: the wait the client is told, or None."""
        return lim.attempt("c") or lim.failure("c")

    assert [wrong() for _ in range(10)] == [None] * 10
    assert wrong() == 60
    now[0] += 61  # the lockout is over: one more guess is looked at ...
    assert lim.attempt("c") is None
    assert lim.failure("c") == 120  # ... and failing it doubles the lockout
    now[0] += 10
    assert lim.attempt("c") == 240  # so does every attempt while locked out
    now[0] += 16 * 60  # 15 quiet minutes forget the client
    assert [wrong() for _ in range(10)] == [None] * 10
    now[0] += 61
    assert [wrong() for _ in range(10)] == [None] * 10  # the window slides: old failures drop out
    assert wrong() == 60
    # attempts count before their tokens are checked: parallel guesses cannot overrun the limit
    other = [lim.attempt("d") for _ in range(12)]
    assert other[:10] == [None] * 10 and other[10:] == [60, 120]
    lim.success("c")  # a right token forgets the client
    assert lim.attempt("c") is None


def test_tokens_shorter_than_16_characters_are_refused_at_start_up(catalog: Catalog, out: Path) -> None:
    from astro_pipeline.review.app import ReviewConfigError

    with pytest.raises(ReviewConfigError, match=r"curator.*4 characters.*at least 16"):
        ReviewServer(catalog=catalog, settings=Settings(output_dir=out, review_tokens={"demo": "curator"}))
    with pytest.raises(ReviewConfigError, match="at least 16"):
        ReviewServer(catalog=catalog, settings=Settings(output_dir=out, review_tokens={"a" * 15: "x"}))
    # the command says so in one line and exits 2, without serving
    env = {**os.environ, "ASTRO_PIPELINE_REVIEW_TOKENS": json.dumps({"demo": "curator"})}
    proc = subprocess.run([*CLI, "review", "serve", "--output", str(out), "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "at least 16 characters" in proc.stderr
    assert "demo" not in proc.stderr.replace("review demo", "")  # the token itself is never printed


def test_review_demo_draws_a_random_token_and_prints_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from astro_pipeline.cli import app

    tokens = []
    for name in ("a", "b"):
        result = CliRunner().invoke(app, ["review", "demo", "--output", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        match = re.search(r"ASTRO_PIPELINE_REVIEW_TOKENS='(\{.*?\})'", result.output.replace("\n", ""))
        assert match, result.output
        [(token, reviewer)] = json.loads(match.group(1)).items()
        assert len(token) >= 16 and token != "demo" and reviewer == "curator"
        tokens.append(token)
    assert tokens[0] != tokens[1]
    cat = Catalog(f"sqlite:///{tmp_path / 'a' / 'catalog.sqlite'}")
    try:
        settings = Settings(output_dir=tmp_path / "a", review_tokens={tokens[0]: "curator"})
        with ReviewServer(catalog=cat, settings=settings) as srv, httpx.Client(base_url=srv.url) as client:
            assert client.post("/login", data={"token": tokens[0]}).status_code == 303
    finally:
        cat.close()


# ---- 2. logout revokes, and the revocation survives a restart -----------------------------------
def test_logout_revokes_the_session_and_the_revocation_survives_a_restart(
    catalog: Catalog, out: Path, demo_template: DemoCatalog
) -> None:
    settings = _settings(out, review_secret="a-persistent-secret-for-tests")
    fid = _flagged_ids(demo_template)[0]
    with ReviewServer(catalog=catalog, settings=settings) as srv:
        with httpx.Client(base_url=srv.url, timeout=10) as client:
            csrf = _sign_in(client)
            cookie = client.cookies[COOKIE_NAME]
            assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
        with httpx.Client(base_url=srv.url, timeout=10, cookies={COOKIE_NAME: cookie}) as replay:
            assert replay.get("/api/session").json()["signed_in"] is False
            resp = replay.post(f"/api/frames/{fid}/decision", json={"decision": "rejected"},
                               headers={"X-CSRF-Token": csrf})
            assert resp.status_code == 401, resp.text
        with httpx.Client(base_url=srv.url, timeout=10) as second:  # a session kept open over the restart
            csrf2 = _sign_in(second)
            kept = second.cookies[COOKIE_NAME]
        port = srv.port
    assert catalog.review_history(fid) == []
    fresh = Catalog(catalog.url)  # a new process opens the catalog again
    try:
        with ReviewServer(catalog=fresh, settings=settings, port=port) as srv2:
            with httpx.Client(base_url=srv2.url, timeout=10, cookies={COOKIE_NAME: cookie}) as replay:
                assert replay.get("/api/session").json()["signed_in"] is False
                assert replay.post(f"/api/frames/{fid}/decision", json={"decision": "rejected"},
                                   headers={"X-CSRF-Token": csrf}).status_code == 401
            with httpx.Client(base_url=srv2.url, timeout=10, cookies={COOKIE_NAME: kept}) as client2:
                assert client2.get("/api/session").json() == {"signed_in": True, "reviewer": "alice"}
                assert client2.post(f"/api/frames/{fid}/decision", json={"decision": "approved"},
                                    headers={"X-CSRF-Token": csrf2}).status_code == 200
    finally:
        fresh.close()
    assert [e.decision for e in catalog.review_history(fid)] == ["approved"]


def test_a_session_ends_when_its_token_is_no_longer_configured(catalog: Catalog, out: Path) -> None:
    settings = _settings(out, review_secret="a-persistent-secret-for-tests")
    with ReviewServer(catalog=catalog, settings=settings) as srv, httpx.Client(base_url=srv.url) as client:
        _sign_in(client)
        cookie = client.cookies[COOKIE_NAME]
        port = srv.port
    rotated = Settings(output_dir=out, review_secret="a-persistent-secret-for-tests",
                       review_tokens={"tok-alice-rotated-0123456789": "alice"})
    with ReviewServer(catalog=catalog, settings=rotated, port=port) as srv2, \
            httpx.Client(base_url=srv2.url, cookies={COOKIE_NAME: cookie}) as client2:
        assert client2.get("/api/session").json()["signed_in"] is False


def _downgrade_to_schema_1(cat: Catalog) -> None:
    """Make a fresh catalog look like one written before review sessions existed (schema 1)."""
    from sqlalchemy import text

    def step(conn: object) -> None:
        conn.execute(text("DROP TABLE review_sessions"))  # type: ignore[attr-defined]
        conn.execute(text("DELETE FROM schema_version"))  # type: ignore[attr-defined]
        conn.execute(text("INSERT INTO schema_version (version, description, applied_at) "  # type: ignore[attr-defined]
                          "VALUES (1, 'initial catalog tables', CURRENT_TIMESTAMP)"))

    cat.write(step)


def _check_session_upgrade(url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import inspect

    from astro_pipeline.catalog import schema as catalog_schema

    with Catalog(url) as cat:
        _downgrade_to_schema_1(cat)
    with Catalog(url) as cat:  # reopening runs the upgrade step
        assert cat.schema_version == catalog_schema.LATEST >= 2
        assert cat.read(lambda c: inspect(c).has_table("review_sessions"))
        versions = cat.read(lambda c: [r[0] for r in c.exec_driver_sql(
            "SELECT version FROM schema_version ORDER BY version")])
        assert versions[:2] == [1, 2]
        expires = datetime.now(UTC) + timedelta(hours=1)
        cat.create_review_session("k" * 64, reviewer="alice", csrf="c" * 43, expires_at=expires,
                                  token_sha256="t" * 64, client="127.0.0.1")
        found = cat.review_session("k" * 64)
        assert found is not None and found.reviewer == "alice" and found.revoked_at is None
        assert cat.revoke_review_session("k" * 64) is True
    with Catalog(url) as cat:
        again = cat.review_session("k" * 64)
        assert again is not None and again.revoked_at is not None


def test_sessions_table_upgrade_from_schema_1_sqlite(tmp_path: Path) -> None:
    _check_session_upgrade(f"sqlite:///{tmp_path / 'catalog.sqlite'}")


@pytest.mark.postgres
def test_sessions_table_upgrade_from_schema_1_postgres(postgres_url: str) -> None:
    _check_session_upgrade(postgres_url)


# ---- 3. ids are ASCII digits; errors keep their headers ------------------------------------------
def test_ids_are_ascii_digits_only(server: ReviewServer, catalog: Catalog, demo_template: DemoCatalog) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for path in ("/frame/\u00b2/input.png", "/frame/\u0661/input.png", "/image/\u00b2/png",
                     "/image/\u0661/png", "/frame/\uff11/input.png"):
            resp = client.get(path)
            assert resp.status_code == 404, (path, resp.status_code)
            assert _has_security_headers(resp)
        assert client.get("/api/queue", params={"limit": "\u0661\u0660"}).status_code == 400
        assert client.get("/api/queue", params={"offset": "\u00b2"}).status_code == 400
        csrf = _sign_in(client)
        h = {"X-CSRF-Token": csrf}
        first = min(f.frame_id for f in demo_template.frames)
        resp = client.post(f"/api/frames/{chr(0x0660 + first)}/decision", json={"decision": "rejected"}, headers=h)
        assert resp.status_code == 404 and _has_security_headers(resp)
        resp = client.post("/api/frames/\u00b2/undo", headers=h)
        assert resp.status_code == 404
        resp = client.post("/api/bulk", json={"decision": "rejected", "frame_ids": [chr(0x0660 + first)]}, headers=h)
        assert resp.status_code == 404
        assert catalog.review_history(first) == []


# ---- 4. served files: resolved, inside the output folder, images by their bytes -----------------
def _product_file(catalog: Catalog, frame_id: int, operation: str = "colorize") -> tuple[int, Path]:
    frame = catalog.frame(frame_id)
    assert frame is not None
    f = next(p for p in frame.products if p.operation == operation).files["png"]
    return f.id, Path(f.path)


def test_product_symlinked_outside_the_output_folder_is_refused(server: ReviewServer, catalog: Catalog,
                                                                demo_template: DemoCatalog, tmp_path: Path) -> None:
    ids = _flagged_ids(demo_template)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        fid0, path0 = _product_file(catalog, ids[0])
        assert client.get(f"/image/{fid0}/png").status_code == 200
        outside = tmp_path / "elsewhere" / "secret.png"
        outside.parent.mkdir()
        shutil.copy(path0, outside)  # a real PNG, but outside the output folder
        path0.unlink()
        path0.symlink_to(outside)
        resp = client.get(f"/image/{fid0}/png")
        assert resp.status_code == 404 and "outside the output folder" in resp.text
        fid1, path1 = _product_file(catalog, ids[1])
        path1.unlink()
        path1.symlink_to("/etc/passwd")
        resp = client.get(f"/image/{fid1}/png")
        assert resp.status_code == 404 and "root:" not in resp.text
        # inside the folder but not an image: refused by its bytes, whatever its name says
        fid2, path2 = _product_file(catalog, ids[2])
        path2.write_text("root:x:0:0:root:/root:/bin/bash\n")
        resp = client.get(f"/image/{fid2}/png")
        assert resp.status_code == 404 and "not an image" in resp.text and "root:" not in resp.text
        # a JPEG stored under a .png name is served as what it is
        fid3, path3 = _product_file(catalog, ids[3])
        from PIL import Image

        with Image.open(path3) as im:
            im.convert("RGB").save(path3, format="JPEG")
        resp = client.get(f"/image/{fid3}/png")
        assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
        assert resp.content == path3.read_bytes()


def test_raw_input_swapped_for_a_non_image_or_a_link_outside_is_a_404(server: ReviewServer, catalog: Catalog,
                                                                      demo_template: DemoCatalog,
                                                                      tmp_path: Path) -> None:
    ids = _flagged_ids(demo_template)
    raw0 = Path(catalog.frame(ids[0]).raw_path)  # type: ignore[union-attr]
    raw0.write_bytes(b"this is not an image at all\n" * 10)
    raw1 = Path(catalog.frame(ids[1]).raw_path)  # type: ignore[union-attr]
    outside = tmp_path / "elsewhere.png"
    shutil.copy(raw1, outside)
    raw1.unlink()
    raw1.symlink_to(outside)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        resp = client.get(f"/frame/{ids[0]}/input.png")
        assert resp.status_code == 404 and _has_security_headers(resp), resp.text
        assert "is not an image" in resp.text
        resp = client.get(f"/frame/{ids[1]}/input.png")
        assert resp.status_code == 404 and "outside the output folder" in resp.text
        assert client.get(f"/frame/{ids[2]}/input.png").status_code == 200  # the others still show


# ---- 5. request bodies capped at 1 MB, while reading ---------------------------------------------
def test_request_bodies_over_1_mb_are_refused(server: ReviewServer, catalog: Catalog,
                                              demo_template: DemoCatalog) -> None:
    fid = _flagged_ids(demo_template)[0]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        csrf = _sign_in(client)
        h = {"X-CSRF-Token": csrf}
        big = json.dumps({"decision": "approved", "note": "x" * (2 * 1024 * 1024)}).encode()
        resp = client.post(f"/api/frames/{fid}/decision", content=big,
                           headers={**h, "Content-Type": "application/json"})
        assert resp.status_code == 413 and _has_security_headers(resp), resp.text
        assert "1 MB" in resp.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while reading
            yield b'{"decision": "approved", "note": "'
            for _ in range(40):
                yield b"y" * 65536
            yield b'"}'

        resp = client.post(f"/api/frames/{fid}/decision", content=chunks(),
                           headers={**h, "Content-Type": "application/json"})
        assert resp.status_code == 413, resp.text
        resp = client.post("/login", content=b"token=" + b"z" * (1024 * 1024 + 10),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status_code == 413
        assert catalog.review_history(fid) == []
        small = client.post(f"/api/frames/{fid}/decision", json={"decision": "approved", "note": "fine"}, headers=h)
        assert small.status_code == 200


# ---- security headers on every response, errors included -----------------------------------------
def test_security_headers_on_every_response_errors_included(server: ReviewServer, catalog: Catalog,
                                                            demo_template: DemoCatalog) -> None:
    fid = _flagged_ids(demo_template)[0]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        image_id, _ = _product_file(catalog, fid)
        seen = [
            (200, client.get("/")),
            (404, client.get("/no/such/page")),
            (405, client.get(f"/api/frames/{fid}/decision")),
            (413, client.post("/login", content=b"t" * (2 * 1024 * 1024),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})),
            (421, client.get("/", headers={"Host": "evil.example"})),
        ]
        for resp in (client.get("/static/review.css"), client.get(f"/image/{image_id}/png"),
                     client.get(f"/frame/{fid}/input.png"), client.get("/api/queue")):
            assert resp.status_code == 200 and _has_security_headers(resp), resp.url
        for i in range(11):
            last = client.post("/login", data={"token": f"wrong-token-guess-{i:04d}"})
        seen.append((429, last))
        # a broken catalog under a running server: a 500, still with the headers and no traceback
        catalog.write(lambda c: c.exec_driver_sql("DROP TABLE frame_flags"))
        api_500 = client.get("/api/queue")
        seen += [(500, api_500), (500, client.get("/", headers={"Accept": "text/html"}))]
    for status, resp in seen:
        assert resp.status_code == status, (status, resp.status_code, resp.text[:200])
        assert _has_security_headers(resp), (status, dict(resp.headers))
        assert "default-src 'none'" in resp.headers["content-security-policy"]
        assert "Traceback" not in resp.text
    assert api_500.json()["status"] == 500 and "internal error" in api_500.json()["error"]


# ---- non-loopback --host: read-only unless --allow-remote-writes --------------------------------
def test_non_loopback_host_serves_read_only_unless_remote_writes_are_allowed() -> None:
    from astro_pipeline.review.access import review_access

    local = review_access("127.0.0.1")
    assert not local.read_only and {"127.0.0.1", "localhost", "::1"} <= local.allowed_hosts
    assert "evil.example" not in local.allowed_hosts
    lan = review_access("192.0.2.10")
    assert lan.read_only and "192.0.2.10" in lan.allowed_hosts
    assert not review_access("192.0.2.10", allow_remote_writes=True).read_only
    anywhere = review_access("0.0.0.0", extra_hosts=["review.example.org"])
    assert anywhere.read_only and "0.0.0.0" not in anywhere.allowed_hosts
    assert "review.example.org" in anywhere.allowed_hosts
    assert not review_access("localhost").read_only and not review_access("::1").read_only


def test_a_read_only_server_refuses_sign_in_and_changes(catalog: Catalog, out: Path,
                                                        demo_template: DemoCatalog) -> None:
    fid = _flagged_ids(demo_template)[0]
    with ReviewServer(catalog=catalog, settings=_settings(out), read_only=True) as srv, \
            httpx.Client(base_url=srv.url, timeout=10) as client:
        assert "read-only" in client.get("/login").text
        resp = client.post("/login", data={"token": TOKEN})
        assert resp.status_code == 403 and "set-cookie" not in resp.headers
        assert "--allow-remote-writes" in resp.text
        assert client.post(f"/api/frames/{fid}/decision", json={"decision": "approved"}).status_code == 403
        assert client.get("/api/queue").status_code == 200  # reading still works
    assert catalog.review_history(fid) == []


def test_cli_serve_on_a_non_loopback_address_says_read_only(out: Path) -> None:
    """192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails, so nothing is exposed."""
    env = {**os.environ, "ASTRO_PIPELINE_REVIEW_TOKENS": json.dumps(TOKENS)}
    proc = subprocess.run([*CLI, "review", "serve", "--output", str(out), "--host", "192.0.2.1", "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert "read-only" in proc.stderr and "--allow-remote-writes" in proc.stderr, proc.stderr
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr
    proc = subprocess.run([*CLI, "review", "serve", "--output", str(out), "--host", "192.0.2.1", "--port", "0",
                           "--allow-remote-writes"], env=env, capture_output=True, text=True, timeout=60)
    assert "sign-in and decisions are allowed from other machines" in proc.stderr, proc.stderr
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr
