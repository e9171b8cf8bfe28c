"""The ESA/Hubble scraper in real Chromium against the replica on 127.0.0.1.

List pagination and detail pages end to end (records, dedupe by release, sha256-verified
downloads, and through the CLI), a layout change, a stalled list page, a wrong published sha256
and a truncated download.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from astro_pipeline.archives.browser import ScrapeError
from astro_pipeline.archives.download import DownloadError
from astro_pipeline.archives.esahubble import EsaHubbleClient, parse_release_date
from astro_pipeline.archives.replica.faults import FaultPlan
from astro_pipeline.archives.replica.server import ReplicaServer
from astro_pipeline.archives.replica.web_common import WebFaults
from astro_pipeline.config import DownloadSettings, Settings

FAULT_TIMEOUT_S = 8.0  # generous: the box is shared; a stall still ends in seconds
CLI = [sys.executable, "-c", "from astro_pipeline.cli import main; main()"]


@pytest.fixture(scope="module")
def server() -> Iterator[ReplicaServer]:
    with ReplicaServer(mini=True, cache_dir=Settings().cache_dir, faults=FaultPlan.parse("")) as srv:
        yield srv


@pytest.fixture()
def replica(server: ReplicaServer) -> Iterator[ReplicaServer]:
    server.state.extra["web_faults"] = WebFaults()
    server.state.faults.load("")
    yield server
    server.state.extra["web_faults"] = WebFaults()
    server.state.faults.load("")


def _settings(url: str, *, timeout_s: float = 30.0) -> Settings:
    return Settings(esahubble_url=url, browser_timeout_s=timeout_s, download=DownloadSettings(
        retries=1, backoff_base_s=0.01, backoff_max_s=0.05, min_interval_s=0.0))


def _colour_items(server: ReplicaServer) -> list:
    from astro_pipeline.sample import load_sample

    return [i for i in load_sample(server.state.sample_root).items if i.archive == "esahubble" and i.kind == "color"]


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and not p.name.startswith("catalog.sqlite")) if folder.exists() else []


def test_release_date_parsing() -> None:
    assert parse_release_date("25 October 2006, 14:30") == "2006-10-25T14:30"
    assert parse_release_date("13 November 2002") == "2002-11-13"
    assert parse_release_date("soon") is None


@pytest.mark.browser
def test_walks_list_pages_reads_details_dedupes_releases_and_downloads(replica: ReplicaServer, tmp_path: Path) -> None:
    items = _colour_items(replica)
    releases = {i.release for i in items}
    assert len(releases) < len(items)  # the sample has a release with two images
    client = EsaHubbleClient(_settings(replica.url))
    records = client.list_images()
    assert len(client.stats.page_s) >= 2  # the list spans several pages
    assert sorted(r.release for r in records) == sorted(releases)  # one image per release
    dup = next(r for r in records if r.extra.get("duplicates"))
    assert {dup.id, *dup.extra["duplicates"]} == {i.id for i in items if i.release == dup.release}
    by_id = {i.id: i for i in items}
    for rec in records:
        item = by_id[rec.id]
        assert rec.archive == "esahubble" and rec.kind == "color"
        assert rec.credit == item.credit and rec.license == item.license and rec.title == item.title
        assert rec.ra == pytest.approx(item.ra, abs=1e-4) and rec.dec == pytest.approx(item.dec, abs=1e-4)
        assert rec.extra["format"] == "Fullsize Original"  # the largest offered
        assert rec.url.endswith(f"/media/archives/images/original/{Path(item.path).name}")
        assert rec.sha256 == item.sha256 and rec.instrument == item.instrument
        assert rec.extra["release_date"] == item.date_obs and rec.extra["constellation"]

    results = client.fetch(records, tmp_path)
    assert not [r for r in results if isinstance(r, DownloadError)], results
    for rec, res in zip(records, results, strict=True):
        assert res.verified_against == "sha256" and res.sha256 == rec.sha256
        assert res.path.read_bytes() == (replica.state.sample_root / by_id[rec.id].path).read_bytes()
    assert len(_visible(tmp_path)) == len(records)
    again = client.fetch(records, tmp_path)  # verified files are reused, not fetched again
    assert all(r.skipped for r in again)


@pytest.mark.browser
def test_missing_pagination_fails_naming_selector_and_url(replica: ReplicaServer) -> None:
    replica.state.extra["web_faults"] = WebFaults.parse("esa-layout:pagination")
    t0 = time.monotonic()
    with pytest.raises(ScrapeError) as err:
        EsaHubbleClient(_settings(replica.url, timeout_s=FAULT_TIMEOUT_S)).list_images()
    assert err.value.selector == "ul.pagination li.active + li a"
    assert err.value.url == f"{replica.url}/images/"
    assert time.monotonic() - t0 < 60


@pytest.mark.browser
def test_stalled_list_page_fails_within_the_timeout(replica: ReplicaServer) -> None:
    replica.state.extra["web_faults"] = WebFaults.parse("esa-stall:list:2")
    t0 = time.monotonic()
    with pytest.raises(ScrapeError) as err:
        EsaHubbleClient(_settings(replica.url, timeout_s=FAULT_TIMEOUT_S)).list_images()
    assert err.value.url == f"{replica.url}/images/page/2/" and "stalled" in err.value.problem
    assert time.monotonic() - t0 < 60  # one timeout, not the 120 s stall


@pytest.mark.browser
@pytest.mark.parametrize("length", ["", ":length=none"])
def test_a_list_page_over_the_reply_cap_fails_naming_it(replica: ReplicaServer, length: str) -> None:
    replica.state.faults.load(f"oversize:/images/:extra=5000000{length}")
    settings = _settings(replica.url, timeout_s=FAULT_TIMEOUT_S)
    settings.download.max_reply_bytes = 1_000_000
    with pytest.raises(ScrapeError) as err:
        EsaHubbleClient(settings).list_images()
    assert err.value.url == f"{replica.url}/images/"
    assert "over the reply cap of 1,000,000 bytes (download.max_reply_bytes)" in err.value.problem


@pytest.mark.browser
def test_wrong_sha256_and_truncated_downloads_fail(replica: ReplicaServer, tmp_path: Path) -> None:
    replica.state.extra["web_faults"] = WebFaults.parse("esa-bad-sha256:*")
    client = EsaHubbleClient(_settings(replica.url))
    records = client.list_images(max_items=1)
    published = records[0].sha256
    results = client.fetch(records, tmp_path / "bad-sha")
    assert isinstance(results[0], DownloadError) and "sha256 mismatch" in results[0].reason
    assert published in results[0].reason and _visible(tmp_path / "bad-sha") == []

    replica.state.extra["web_faults"] = WebFaults()
    records = client.list_images(max_items=1)
    assert records[0].sha256 == hashlib.sha256(
        (replica.state.sample_root / next(i.path for i in _colour_items(replica) if i.id == records[0].id))
        .read_bytes()).hexdigest()
    replica.state.faults.load("truncate:/media/archives/images/")
    results = client.fetch(records, tmp_path / "short")
    assert isinstance(results[0], DownloadError) and "short read" in results[0].reason
    assert _visible(tmp_path / "short") == []


@pytest.mark.browser
def test_cli_fetch_esahubble_end_to_end(replica: ReplicaServer, tmp_path: Path) -> None:
    out = tmp_path / "esa"
    env = {**os.environ, "ASTRO_PIPELINE_DOWNLOAD__MIN_INTERVAL_S": "0", "NO_PROXY": "127.0.0.1,localhost"}
    cmd = [*CLI, "fetch", "esahubble", "--output", str(out), "--esahubble-url", replica.url, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    items = _colour_items(replica)
    assert report["records"] == len({i.release for i in items})
    assert all(f["status"] == "ok" and f["detail"] == "verified: sha256" and f["credit"] for f in report["files"])
    assert len(_visible(out)) == report["records"]
    _assert_recorded(out, "fetch-esahubble", report["records"])
    print("ESA CLI timing:", report["timing"])  # noqa: T201 - the measured figures, shown with -s
    limited = subprocess.run([*CLI, "fetch", "esahubble", "--output", str(tmp_path / "one"), "--max", "1",
                              "--esahubble-url", replica.url], capture_output=True, text=True, env=env, timeout=300)
    assert limited.returncode == 0, limited.stderr[-2000:]
    assert len(_visible(tmp_path / "one")) == 1


def _assert_recorded(out: Path, flow: str, n_files: int) -> None:
    """The fetch is a catalog run under --output, with each verified download recorded."""
    from astro_pipeline.catalog import Catalog

    cat = Catalog.for_output(out)
    try:
        runs = cat.recent_runs(5)
        assert [r.flow for r in runs] == [flow] and runs[0].status == "completed"
        assert runs[0].counts.get("downloaded") == n_files
    finally:
        cat.close()
