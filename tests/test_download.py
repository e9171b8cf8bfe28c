"""The shared Downloader against a real HTTP server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse

from astro_pipeline.archives.download import (
    DownloadError,
    Downloader,
    PermanentDownloadError,
    TransientDownloadError,
    VerificationError,
    backoff_delay,
    host_gate,
    safe_filename,
    sidecar_path,
)
from astro_pipeline.archives.records import ArchiveRecord
from astro_pipeline.archives.replica.faults import FaultPlan
from astro_pipeline.archives.replica.server import free_port
from astro_pipeline.config import DownloadSettings, Settings

FILES = {f"f{i}.fits": bytes((i * 7 + j) % 251 for j in range(50_000 + i * 1000)) for i in range(6)}


class _Stats:
    def __init__(self) -> None:
        self.gets: dict[str, int] = {}
        self.inflight = 0
        self.max_inflight = 0
        self.starts: list[float] = []


class FileServer:
    """A tiny file server (FastAPI + uvicorn in a thread) with a swappable fault plan."""

    def __init__(self) -> None:
        self.stats = _Stats()
        self.plan = FaultPlan(rules=[])
        app = FastAPI()
        self.plan.install(app)
        stats = self.stats

        @app.api_route("/files/{name}", methods=["GET", "HEAD"])
        async def files(name: str, request: Request) -> Response:
            if name not in FILES:
                return Response(status_code=404, content=b"not found")
            if request.method == "GET":
                stats.gets[name] = stats.gets.get(name, 0) + 1
            return Response(FILES[name], media_type="application/octet-stream",
                            headers={"Content-Disposition": f"attachment; filename={name}"})

        @app.get("/slow/{name}")
        async def slow(name: str) -> Response:
            stats.inflight += 1
            stats.max_inflight = max(stats.max_inflight, stats.inflight)
            stats.starts.append(time.monotonic())
            await asyncio.sleep(0.15)
            stats.inflight -= 1
            return Response(FILES[name], media_type="application/octet-stream")

        @app.get("/evil")
        async def evil() -> Response:
            return Response(FILES["f0.fits"], headers={
                "Content-Disposition": 'attachment; filename="../../..\\\\outside/.evil.fits"'})

        @app.get("/redirect")
        async def redirect() -> RedirectResponse:
            return RedirectResponse("http://archive.invalid/files/f0.fits")

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def set_faults(self, spec: str, seed: int = 0) -> FaultPlan:
        self.plan.rules[:] = FaultPlan.parse(spec, seed=seed).rules
        self.plan.seed = seed
        self.plan.reset()
        return self.plan

    def __enter__(self) -> FileServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "file server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    with FileServer() as srv:
        yield srv


@pytest.fixture()
def fresh(server: FileServer) -> FileServer:
    server.set_faults("")
    server.stats.gets.clear()
    return server


def make_settings(url: str, **download: object) -> Settings:
    cfg = dict(retries=3, backoff_base_s=0.01, backoff_max_s=0.05, connect_timeout_s=2.0,
               read_timeout_s=2.0, min_interval_s=0.0, per_host_concurrency=2)
    cfg.update(download)
    return Settings(mast_url=url, min_free_disk_bytes=0, download=DownloadSettings(**cfg))


def rec(url: str, name: str, *, size: int | None = None, sha: str | None = None, filename: str | None = None) -> ArchiveRecord:
    return ArchiveRecord(archive="mast", id=f"mast:test/{name}", url=f"{url}/files/{name}",
                         filename=filename if filename is not None else name, size=size, sha256=sha)


def no_partials(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def test_fetch_verifies_size_and_computes_sha(fresh: FileServer, tmp_path: Path) -> None:
    data = FILES["f1.fits"]
    with Downloader(make_settings(fresh.url)) as dl:
        got = dl.fetch(rec(fresh.url, "f1.fits", size=len(data)), tmp_path)
    assert got.path == tmp_path / "f1.fits" and got.path.read_bytes() == data
    assert got.size == len(data) and got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.verified_against == "size" and not got.skipped
    assert sidecar_path(got.path).is_file() and no_partials(tmp_path) == []


def test_published_sha256_checked(fresh: FileServer, tmp_path: Path) -> None:
    data = FILES["f2.fits"]
    good = hashlib.sha256(data).hexdigest()
    with Downloader(make_settings(fresh.url)) as dl:
        assert dl.fetch(rec(fresh.url, "f2.fits", sha=good), tmp_path).verified_against == "sha256"
        with pytest.raises(VerificationError, match="sha256 mismatch") as err:
            dl.fetch(rec(fresh.url, "f2.fits", sha="0" * 64, filename="other.fits"), tmp_path)
    assert err.value.attempts == 2 and fresh.stats.gets["f2.fits"] == 3  # fetched once more, not 'retries' times
    assert not (tmp_path / "other.fits").exists() and no_partials(tmp_path) == []


def test_rerun_skips_verified_file_and_refetches_corrupt_one(fresh: FileServer, tmp_path: Path) -> None:
    r = rec(fresh.url, "f3.fits", size=len(FILES["f3.fits"]))
    with Downloader(make_settings(fresh.url)) as dl:
        dl.fetch(r, tmp_path)
        again = dl.fetch(r, tmp_path)
        assert again.skipped and fresh.stats.gets["f3.fits"] == 1
        blob = bytearray((tmp_path / "f3.fits").read_bytes())
        blob[100] ^= 0xFF
        (tmp_path / "f3.fits").write_bytes(bytes(blob))
        third = dl.fetch(r, tmp_path)
    assert not third.skipped and fresh.stats.gets["f3.fits"] == 2
    assert third.path.read_bytes() == FILES["f3.fits"]


def test_503_burst_is_retried_then_gives_up(fresh: FileServer, tmp_path: Path) -> None:
    plan = fresh.set_faults("503:/files/f1.fits:2")
    with Downloader(make_settings(fresh.url)) as dl:
        assert dl.fetch(rec(fresh.url, "f1.fits"), tmp_path).size == len(FILES["f1.fits"])
        assert [e.mode for e in plan.events] == ["503", "503"]
        fresh.set_faults("503:/files/f1.fits")
        with pytest.raises(TransientDownloadError, match=r"gave up after 4 attempts: HTTP 503"):
            dl.fetch(rec(fresh.url, "f1.fits", filename="again.fits"), tmp_path)
    assert not (tmp_path / "again.fits").exists() and no_partials(tmp_path) == []


@pytest.mark.parametrize("spec", ["truncate:/files/f4.fits:1", "badlength:/files/f4.fits:1:delta=5000"])
def test_short_reads_are_retried(fresh: FileServer, tmp_path: Path, spec: str) -> None:
    plan = fresh.set_faults(spec)
    with Downloader(make_settings(fresh.url)) as dl:
        got = dl.fetch(rec(fresh.url, "f4.fits"), tmp_path)
    assert got.path.read_bytes() == FILES["f4.fits"] and len(plan.events) == 1
    assert fresh.stats.gets["f4.fits"] == 2


def test_short_content_length_caught_by_declared_size(fresh: FileServer, tmp_path: Path) -> None:
    """A self-consistent but short reply (Content-Length too small) fails the archive's declared size."""
    fresh.set_faults("badlength:/files/f5.fits:delta=-1000")
    with Downloader(make_settings(fresh.url)) as dl:
        with pytest.raises(VerificationError, match="size mismatch") as err:
            dl.fetch(rec(fresh.url, "f5.fits", size=len(FILES["f5.fits"])), tmp_path)
    assert err.value.attempts == 2
    assert not (tmp_path / "f5.fits").exists() and no_partials(tmp_path) == []


def test_truncation_always_fails_cleanly(fresh: FileServer, tmp_path: Path) -> None:
    fresh.set_faults("truncate:/files/f0.fits")
    with Downloader(make_settings(fresh.url, retries=1)) as dl:
        with pytest.raises(DownloadError, match="short read") as err:
            dl.fetch(rec(fresh.url, "f0.fits"), tmp_path)
    assert err.value.attempts == 2
    assert list(tmp_path.iterdir()) == []


def test_slow_reply_past_timeout_is_retried(fresh: FileServer, tmp_path: Path) -> None:
    plan = fresh.set_faults("slow:/files/f2.fits:1:delay=1.0")
    t0 = time.monotonic()
    with Downloader(make_settings(fresh.url, read_timeout_s=0.3)) as dl:
        got = dl.fetch(rec(fresh.url, "f2.fits"), tmp_path)
    assert got.size == len(FILES["f2.fits"]) and [e.mode for e in plan.events] == ["slow"]
    assert time.monotonic() - t0 < 1.0  # did not wait for the slow reply


def test_missing_content_length_still_verified_by_declared_size(fresh: FileServer, tmp_path: Path) -> None:
    fresh.set_faults("nolength:/files/f1.fits")
    with Downloader(make_settings(fresh.url)) as dl:
        a = dl.fetch(rec(fresh.url, "f1.fits", size=len(FILES["f1.fits"])), tmp_path / "a")
        b = dl.fetch(rec(fresh.url, "f1.fits"), tmp_path / "b")
    assert a.verified_against == "size" and b.verified_against == "none"
    assert a.sha256 == b.sha256 == hashlib.sha256(FILES["f1.fits"]).hexdigest()


def test_404_is_not_retried(fresh: FileServer, tmp_path: Path) -> None:
    with Downloader(make_settings(fresh.url)) as dl:
        with pytest.raises(PermanentDownloadError, match="HTTP 404") as err:
            dl.fetch(rec(fresh.url, "nope.fits"), tmp_path)
    assert err.value.attempts == 1


def test_only_configured_hosts(fresh: FileServer, tmp_path: Path) -> None:
    settings = make_settings("https://archive.example.org")  # the replica's host is not configured
    with Downloader(settings) as dl:
        with pytest.raises(PermanentDownloadError, match="not a configured archive host"):
            dl.fetch(rec(fresh.url, "f0.fits"), tmp_path)
        with pytest.raises(PermanentDownloadError, match="http/https only"):
            dl.fetch(ArchiveRecord(archive="mast", id="x", url="file:///etc/passwd"), tmp_path)
    assert fresh.stats.gets.get("f0.fits") is None
    with Downloader(make_settings(fresh.url)) as dl:  # a redirect off the allow-list is refused too
        with pytest.raises(DownloadError, match="archive.invalid"):
            dl.fetch(ArchiveRecord(archive="mast", id="r", url=f"{fresh.url}/redirect", filename="r.fits"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_server_names_are_sanitised(fresh: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with Downloader(make_settings(fresh.url)) as dl:
        got = dl.fetch(ArchiveRecord(archive="mast", id="e", url=f"{fresh.url}/evil"), dest)
        named = dl.fetch(rec(fresh.url, "f0.fits", filename="../../../etc/x.fits"), dest)
    assert got.path == dest / "evil.fits" and named.path == dest / "x.fits"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")) == [
        "evil.fits", "x.fits"]
    for bad in ["", "..", "/", "../.."]:
        with pytest.raises(ValueError):
            safe_filename(bad)
    assert safe_filename("C:\\data\\..\\img one.fits") == "img_one.fits"


def test_per_host_concurrency_and_interval(fresh: FileServer, tmp_path: Path) -> None:
    fresh.stats.max_inflight = 0
    fresh.stats.starts.clear()
    records = [ArchiveRecord(archive="mast", id=n, url=f"{fresh.url}/slow/{n}", filename=n) for n in FILES]
    seen: list[str] = []
    with Downloader(make_settings(fresh.url, per_host_concurrency=2, min_interval_s=0.05)) as dl:
        results = dl.fetch_many(records, tmp_path, on_done=lambda r, res: seen.append(r.id), max_workers=6)
    assert all(not isinstance(r, DownloadError) for r in results)
    assert [r.record.id for r in results] == list(FILES)  # input order kept
    assert sorted(seen) == sorted(FILES)
    assert 1 <= fresh.stats.max_inflight <= 2  # 6 parallel workers would otherwise overlap
    starts = sorted(fresh.stats.starts)
    assert starts[-1] - starts[0] >= 5 * 0.05 * 0.8  # request starts spaced by the polite interval


def test_downloaders_of_one_process_share_one_host_gate(fresh: FileServer, tmp_path: Path) -> None:
    """Two downloaders (two sweep tasks) together stay within the per-host limit."""
    from concurrent.futures import ThreadPoolExecutor

    fresh.stats.max_inflight = 0
    settings = make_settings(fresh.url, per_host_concurrency=1)
    assert Downloader(settings).gate is Downloader(settings).gate is host_gate(settings.download)
    assert host_gate(make_settings(fresh.url, per_host_concurrency=2).download) is not host_gate(settings.download)

    def one(name: str) -> int:
        with Downloader(settings) as dl:  # a new downloader per call, as each task makes its own
            return dl.fetch(ArchiveRecord(archive="mast", id=name, url=f"{fresh.url}/slow/{name}", filename=name),
                            tmp_path / name).size

    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(one, list(FILES)[:4]))
    assert sizes == [len(FILES[n]) for n in list(FILES)[:4]] and fresh.stats.max_inflight == 1


def test_fetch_many_reports_failures_without_raising(fresh: FileServer, tmp_path: Path) -> None:
    fresh.set_faults("503:/files/f2.fits")
    records = [rec(fresh.url, n) for n in ("f1.fits", "f2.fits", "missing.fits")]
    with Downloader(make_settings(fresh.url, retries=1)) as dl:
        results = dl.fetch_many(records, tmp_path)
    ok, bad503, bad404 = results
    assert not isinstance(ok, DownloadError) and ok.path.is_file()
    assert isinstance(bad503, DownloadError) and "HTTP 503" in bad503.reason and bad503.record is records[1]
    assert isinstance(bad404, DownloadError) and "HTTP 404" in bad404.reason
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["f1.fits"]


def test_backoff_grows_with_jitter_and_cap() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(a, 0.5, 4.0, rng) for a in range(6)]
    assert 0.25 <= delays[0] <= 0.5 and 1.0 <= delays[2] <= 2.0
    assert all(2.0 <= d <= 4.0 for d in delays[3:])
    assert len({round(d, 6) for d in delays[3:]}) == 3  # jittered, not constant
