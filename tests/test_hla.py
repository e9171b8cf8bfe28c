"""The HLA scraper in real Chromium against the replica on 127.0.0.1.

Pagination end to end (search + downloads, and through the CLI), a layout change, a stalled
results page, a truncated download; plus browser start-up choices (no browser needed there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from astro_pipeline.archives.browser import (
    BrowserNotFoundError,
    ScrapeError,
    find_chromium,
    host_resolver_rules,
)
from astro_pipeline.archives.download import DownloadError
from astro_pipeline.archives.hla import HlaClient, parse_dataset_name, search_url
from astro_pipeline.archives.replica.faults import FaultPlan
from astro_pipeline.archives.replica.hla import PAGE_SIZE, derive_datasets
from astro_pipeline.archives.replica.server import ReplicaServer
from astro_pipeline.archives.replica.web_common import WebFaults
from astro_pipeline.config import DownloadSettings, Settings

M101 = (210.802429, 54.34875)
FAULT_TIMEOUT_S = 8.0  # generous: the box is shared; a stall still ends in seconds
CLI = [sys.executable, "-c", "from astro_pipeline.cli import main; main()"]


@pytest.fixture(scope="module")
def server() -> Iterator[ReplicaServer]:
    with ReplicaServer(mini=True, cache_dir=Settings().cache_dir, faults=FaultPlan.parse("")) as srv:
        yield srv


@pytest.fixture()
def replica(server: ReplicaServer) -> Iterator[ReplicaServer]:
    """The server with no faults before and after each test."""
    server.state.extra["web_faults"] = WebFaults()
    server.state.faults.load("")
    yield server
    server.state.extra["web_faults"] = WebFaults()
    server.state.faults.load("")


def _settings(url: str, *, timeout_s: float = 30.0) -> Settings:
    return Settings(hla_url=url, browser_timeout_s=timeout_s, download=DownloadSettings(
        retries=1, backoff_base_s=0.01, backoff_max_s=0.05, min_interval_s=0.0))


def _expected_names(server: ReplicaServer, radius: float) -> list[str]:
    from astro_pipeline.sky import in_cone
    from astro_pipeline.sample import load_sample

    ds = derive_datasets(load_sample(server.state.sample_root).items)
    return sorted(d.name for d in ds if in_cone(d.ra, d.dec, M101[0], M101[1], radius))


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and not p.name.startswith("catalog.sqlite"))


# ------------------------------------------------------------------------------ no browser


def test_chromium_choice_and_install_hint(tmp_path: Path) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_chromium(Settings(chromium_path=fake)) == fake
    own = tmp_path / "pw-chrome"
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    assert find_chromium(Settings(chromium_path=tmp_path / "missing"), playwright_executable=str(own)) is None
    with pytest.raises(BrowserNotFoundError, match=r"apt-get install chromium") as err:
        find_chromium(Settings(chromium_path=tmp_path / "missing"), playwright_executable=str(tmp_path / "none"))
    assert str(tmp_path / "missing") in str(err.value)
    rules = host_resolver_rules({"hla.example.org", "127.0.0.1"})
    assert rules.startswith("MAP * ~NOTFOUND") and "EXCLUDE hla.example.org" in rules
    assert rules.count("EXCLUDE 127.0.0.1") == 1 and "EXCLUDE localhost" in rules


def test_search_url_and_dataset_names() -> None:
    url = search_url("https://hla.example.org/", 210.802429, 54.34875, 0.2)
    assert url.startswith("https://hla.example.org/hlaview.html#Images|filterText%3D%24filterTypes%3D|")
    form = url.split("|")[2]
    assert "RA=210.802429" in form and "Dec=54.348750" in form and "Radius=0.200000" in form
    assert parse_dataset_name("hst_10188_10_acs_wfc_f814w") == {
        "proposal_id": "10188", "visit": "10", "instrument": "ACS/WFC", "filter": "F814W"}
    assert parse_dataset_name("hst_05371_cs_wfpc2_total_wf")["instrument"] == "WFPC2/WF"
    assert parse_dataset_name("hst_05371_cs_wfpc2_total_wf")["filter"] == "DETECTION"
    assert parse_dataset_name("not_an_hla_name") == {}


# ------------------------------------------------------------------------------ browser


@pytest.mark.browser
def test_search_walks_every_results_page_and_downloads(replica: ReplicaServer, tmp_path: Path) -> None:
    expected = _expected_names(replica, 0.05)
    assert len(expected) > 2 * PAGE_SIZE  # the region needs at least three results pages
    client = HlaClient(_settings(replica.url))
    records = client.search(*M101, 0.05)
    assert [r.obs_id for r in records] == expected  # every page, in order, nothing twice
    assert len(client.stats.page_s) == -(-len(expected) // PAGE_SIZE)
    assert [r.extra["result_index"] for r in records] == list(range(1, len(expected) + 1))
    first = records[0]
    assert first.archive == "hla" and first.kind == "science" and first.instrument and first.filters
    assert first.preview_url and "/cgi-bin/fitscut.cgi?" in first.preview_url and "format=jpeg" in first.preview_url
    assert first.url.endswith("size=ALL&format=fits") and first.filename == f"{first.obs_id}.fits"
    wfpc2 = next(r for r in records if "_wfpc2_" in r.obs_id)
    assert wfpc2.instrument in ("WFPC2/WF", "WFPC2/PC")

    results = client.fetch(records[:3], tmp_path, previews=True)
    assert not [r for r in results if isinstance(r, DownloadError)], results
    from astropy.io import fits
    from PIL import Image

    files = _visible(tmp_path)
    assert len(files) == 6
    for rec, res in zip(records[:3], results[:3], strict=True):
        with fits.open(res.path) as hdul:
            assert hdul[0].header["DATASET"] == rec.obs_id and hdul[0].data.ndim == 2
        assert res.verified_against == "size"
    for res in results[3:]:
        with Image.open(res.path) as im:
            assert im.format == "JPEG"


@pytest.mark.browser
def test_missing_next_button_fails_naming_selector_and_url(replica: ReplicaServer) -> None:
    replica.state.extra["web_faults"] = WebFaults.parse("hla-layout:fwd")
    client = HlaClient(_settings(replica.url, timeout_s=FAULT_TIMEOUT_S))
    t0 = time.monotonic()
    with pytest.raises(ScrapeError) as err:
        client.search(*M101, 0.05)
    assert err.value.selector == ".fwd"
    assert err.value.url.startswith(f"{replica.url}/hlaview.html#Images|")
    assert "'.fwd'" in str(err.value) and "/hlaview.html" in str(err.value)
    assert time.monotonic() - t0 < 60


@pytest.mark.browser
def test_stalled_results_page_fails_within_the_timeout(replica: ReplicaServer) -> None:
    replica.state.extra["web_faults"] = WebFaults.parse("hla-stall:2")
    client = HlaClient(_settings(replica.url, timeout_s=FAULT_TIMEOUT_S))
    t0 = time.monotonic()
    with pytest.raises(ScrapeError) as err:
        client.search(*M101, 0.05)
    elapsed = time.monotonic() - t0
    assert err.value.selector == "#pageendresultscount" and "stalled" in err.value.problem
    assert "results page 2" in str(err.value) and "/hlaview.html" in err.value.url
    assert elapsed < 60  # page 1 plus one timeout, not the 120 s stall


@pytest.mark.browser
def test_truncated_download_is_an_error_and_leaves_no_file(replica: ReplicaServer, tmp_path: Path) -> None:
    client = HlaClient(_settings(replica.url))
    records = client.search(*M101, 0.05, max_pages=1)
    assert len(records) == PAGE_SIZE
    replica.state.faults.load("truncate:/cgi-bin/fitscut.cgi*format=fits")
    results = client.fetch(records[:2], tmp_path)
    assert all(isinstance(r, DownloadError) for r in results), results
    assert "short read" in results[0].reason and results[0].attempts == 2
    assert _visible(tmp_path) == []  # nothing partial under a final name
    assert replica.state.faults.events and all(e.mode == "truncate" for e in replica.state.faults.events)


@pytest.mark.browser
@pytest.mark.slow
def test_cli_fetch_hla_collects_the_region_end_to_end(replica: ReplicaServer, tmp_path: Path) -> None:
    out = tmp_path / "hla"
    env = {**os.environ, "ASTRO_PIPELINE_DOWNLOAD__MIN_INTERVAL_S": "0", "NO_PROXY": "127.0.0.1,localhost"}
    cmd = [*CLI, "fetch", "hla", "--ra", str(M101[0]), "--dec", str(M101[1]),
           "--radius", "0.05", "--output", str(out), "--hla-url", replica.url, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    expected = _expected_names(replica, 0.05)
    assert report["records"] == len(expected) and report["timing"]["pages"] == 3
    assert sorted(Path(f["file"]).stem for f in report["files"]) == expected
    assert all(f["status"] == "ok" for f in report["files"])
    assert len(_visible(out)) == len(expected)
    _assert_recorded(out, "fetch-hla", len(expected))
    assert report["timing"]["per_page_s"] > 0 and report["timing"]["per_download_s"] > 0
    print("HLA CLI timing:", report["timing"])  # noqa: T201 - the measured figures, shown with -s


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
