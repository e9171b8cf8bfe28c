"""MastClient (astroquery queries + shared Downloader) against the replica, with and without faults."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from mast_fixtures import client_settings, faults, mast_index, replica  # noqa: F401

from astro_pipeline.config import Settings
from astro_pipeline.archives.download import DownloadError
from astro_pipeline.archives.mast import MastClient, MastError
from astro_pipeline.archives.records import DownloadedFile
from astro_pipeline.sky import separation_deg

RA, DEC = 210.80243, 54.34875


@pytest.fixture()
def client(replica):  # noqa: F811
    with MastClient(client_settings(replica.url)) as c:
        yield c


def sample_bytes(index, name: str) -> bytes:
    item = next(it for it in index.items if Path(it.path).name == name)
    return (index.root / item.path).read_bytes()


def test_query_region_returns_drizzled_product_records(client, mast_index, replica) -> None:  # noqa: F811
    records = client.query_region(RA, DEC, 0.05)
    assert [r.filename for r in records] == ["jm101a_drz.fits", "jm101b_drz.fits", "jm101c_drc.fits"]
    r = records[0]
    assert r.archive == "mast" and r.id == "mast:HST/product/jm101a_drz.fits" and r.obs_id == "hst_m101_acs_f435w"
    assert r.url == f"{replica.url}/api/v0.1/Download/file?uri=mast:HST/product/jm101a_drz.fits"
    assert (r.instrument, r.filters, r.exposure_s, r.target) == ("ACS/WFC", ["F435W"], 900.0, "M101")
    assert r.ra == pytest.approx(RA) and r.date_obs == "2006-02-10T00:00:00"
    assert r.size == len(sample_bytes(mast_index, "jm101a_drz.fits")) and r.extra["product_type"] == "DRZ"
    assert r.credit and r.license and r.kind == "science"
    # criteria narrow the query; other product types and calibration levels are selectable
    assert [x.filename for x in client.query_region(RA, DEC, 0.05, filters=["F814W"])] == ["jm101c_drc.fits"]
    assert client.query_region(RA, DEC, 0.05, instruments=["WFC3/UVIS"]) == []
    flt = client.query_region(RA, DEC, 0.05, calib_level=2, product_types=["FLT"])
    assert [x.filename for x in flt] == ["jm101x01q_flt.fits"]
    everywhere = client.query_region(200.0, 55.0, 30.0)
    assert len(everywhere) == 6  # every level-3 drizzled product in the sample
    assert client.query_region(10.0, -30.0, 0.1) == []  # nothing there: no warning, no error


def test_resolve_target_names(client) -> None:
    ra, dec = client.resolve("M 101")
    assert separation_deg(ra, dec, RA, DEC) < 0.01
    assert len(client.query_target("ngc5194", 0.05)) == 2
    with pytest.raises(MastError, match='Could not resolve "Nowhere"'):
        client.resolve("Nowhere")


def test_fetch_verifies_and_rerun_skips(client, mast_index, tmp_path: Path) -> None:  # noqa: F811
    records = client.query_region(RA, DEC, 0.05)
    first = client.fetch(records, tmp_path)
    assert all(isinstance(f, DownloadedFile) and f.verified_against == "size" and not f.skipped for f in first)
    for f in first:
        assert f.path.read_bytes() == sample_bytes(mast_index, f.path.name)
        assert f.sha256 == hashlib.sha256(f.path.read_bytes()).hexdigest()
    again = client.fetch(records, tmp_path)
    assert all(isinstance(f, DownloadedFile) and f.skipped for f in again)


@pytest.mark.parametrize("spec, events", [
    ("503:/api/v0/invoke:2", ["503", "503"]),
    ("slow:/api/v0/invoke:1:delay=4", ["slow"]),
    ("truncate:/api/v0/invoke:1", ["truncate"]),
    ("badlength:/api/v0/invoke:1:delta=-40", ["badlength"]),
    ("malformed:/api/v0/invoke:1", ["malformed"]),
    ("error:/api/v0/invoke:1:msg=Database busy", ["error"]),
    ("executing:/api/v0/invoke:2", ["executing", "executing"]),
    ("nolength:/api/v0/invoke", ["nolength"]),
])
def test_query_survives_transient_faults(replica, faults, spec: str, events: list[str]) -> None:  # noqa: F811
    faults.load(spec)
    with MastClient(client_settings(replica.url, read_timeout_s=0.5)) as c:
        t0 = time.monotonic()
        records = c.query_region(RA, DEC, 0.05)
        elapsed = time.monotonic() - t0
    assert len(records) == 3
    # the faults really happened, to both invoke requests (observations, then products)
    assert [e.mode for e in faults.events] == events * 2
    assert elapsed < 6.0  # a slow reply (4 s, twice) is abandoned at the 0.5 s read timeout


@pytest.mark.parametrize("spec, reason", [
    ("503:/api/v0/invoke", "gave up after 3 attempts: HTTP 503"),
    ("error:/api/v0/invoke:msg=Database busy", "status ERROR: Database busy"),
    ("malformed:/api/v0/invoke", "malformed reply"),
    ("404:/api/v0/invoke", "HTTP 404"),
])
def test_persistent_query_faults_fail_clearly(replica, faults, spec: str, reason: str) -> None:  # noqa: F811
    faults.load(spec)
    with MastClient(client_settings(replica.url, retries=2)) as c:
        with pytest.raises(MastError, match=reason):
            c.query_region(RA, DEC, 0.05)


@pytest.mark.parametrize("spec", [
    "oversize:/api/v0/invoke:extra=40000000",  # an honest Content-Length over the cap: refused before the body
    "oversize:/api/v0/invoke:extra=40000000:length=none",  # no length: refused once the cap is read
    "gzip:/api/v0/invoke:extra=1000000000",  # 1 GB of zeros in 1 MB of gzip: refused as decoded bytes
])
def test_a_query_reply_over_the_reply_cap_is_refused_without_retries(replica, faults, spec: str) -> None:  # noqa: F811
    faults.load(spec)
    with MastClient(client_settings(replica.url, retries=2, max_reply_bytes=1_000_000)) as c:
        with pytest.raises(MastError, match=r"over the reply cap of 1,000,000 bytes \(download.max_reply_bytes\)"):
            c.query_region(RA, DEC, 0.05)
    assert len(faults.events) == 1  # a permanent refusal: not asked again
    assert faults.bytes_sent() < 20_000_000  # the rest of the reply was never read


def test_resolver_replies_are_capped_too(replica, faults) -> None:  # noqa: F811
    faults.load("oversize:/Santa-war/query:extra=3000000")
    with MastClient(client_settings(replica.url, retries=2, max_reply_bytes=1_000_000)) as c:
        with pytest.raises(MastError, match="over the reply cap"):
            c.resolve("M101")


def test_a_refused_connection_is_called_refused_and_a_slow_reply_a_timeout(replica, faults) -> None:  # noqa: F811
    from astro_pipeline.webserver import free_port

    port = free_port()  # nothing listens there
    with MastClient(client_settings(f"http://127.0.0.1:{port}", retries=1)) as c:
        with pytest.raises(MastError) as err:
            c.query_region(RA, DEC, 0.05)
    msg = str(err.value)
    assert f"connection refused by 127.0.0.1:{port}" in msg and "no complete reply" not in msg
    faults.load("slow:/api/v0/invoke:delay=2")
    with MastClient(client_settings(replica.url, retries=1, read_timeout_s=0.3)) as c:
        with pytest.raises(MastError, match=r"no complete reply within 0.3 s"):
            c.query_region(RA, DEC, 0.05)


def test_region_fetch_under_503_bursts_and_truncation(replica, faults, mast_index, tmp_path: Path) -> None:  # noqa: F811
    """Every file ends verified or recorded failed with a reason; no partial file under a final name."""
    faults.load("503:/api/v0/invoke:2,503:/api/v0.1/Download/file:p=0.5,truncate:/api/v0.1/Download/file:p=0.5",
                seed=3)
    with MastClient(client_settings(replica.url, retries=2)) as c:
        records = c.query_region(200.0, 55.0, 30.0)
        results = c.fetch(records, tmp_path)
    assert len(results) == len(records) == 6
    ok = [r for r in results if isinstance(r, DownloadedFile)]
    failed = [r for r in results if isinstance(r, DownloadError)]
    assert ok and failed  # this seed gives both outcomes
    for f in ok:
        assert f.path.read_bytes() == sample_bytes(mast_index, f.path.name) and f.verified_against == "size"
    for e in failed:
        assert e.record is not None and ("HTTP 503" in e.reason or "short read" in e.reason)
        assert not (tmp_path / e.record.filename).exists()
    on_disk = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert on_disk == sorted(f.path.name for f in ok)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    modes = {e.mode for e in faults.events}
    assert {"503", "truncate"} <= modes


def test_cli_fetch_by_target(replica, mast_index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from astro_pipeline.cli import app

    monkeypatch.setenv("ASTRO_PIPELINE_MAST_URL", replica.url)
    monkeypatch.setenv("ASTRO_PIPELINE_MAST_RESOLVER_URL", f"{replica.url}/Santa-war/query")
    monkeypatch.setenv("ASTRO_PIPELINE_MIN_FREE_DISK_BYTES", "0")
    monkeypatch.setenv("ASTRO_PIPELINE_DOWNLOAD__MIN_INTERVAL_S", "0")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["fetch", "mast", "--target", "NGC5194", "--radius", "0.05",
                                      "--filter", "F814W", "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert [Path(f["file"]).name for f in payload["files"]] == ["im51b_drz.fits"]
    assert (out / "im51b_drz.fits").read_bytes() == sample_bytes(mast_index, "im51b_drz.fits")
    # the fetch is recorded as a run in the catalog under --output
    from astro_pipeline.catalog import Catalog

    cat = Catalog.for_output(out)
    try:
        runs = cat.recent_runs(5)
        assert [r.flow for r in runs] == ["fetch-mast"] and runs[0].status == "completed"
        assert runs[0].counts.get("downloaded") == 1
    finally:
        cat.close()
    bad = CliRunner().invoke(app, ["fetch", "mast", "--ra", "1", "--radius", "0.1", "--output", str(out)])
    assert bad.exit_code == 2 and "--target" in bad.output


def test_built_in_sample_region(tmp_path: Path) -> None:
    """The replica serving the real (mini) sample, fetched with faults: every file verified by size and sha256."""
    from astro_pipeline.archives.replica.faults import FaultPlan
    from astro_pipeline.archives.replica.server import ReplicaServer
    from astro_pipeline.sample import build_sample, load_sample

    plan = FaultPlan.parse("503:/api/v0/invoke:1,truncate:/api/v0.1/Download/file:1")
    with ReplicaServer(None, faults=plan, mini=True, cache_dir=Settings().cache_dir) as srv:
        index = load_sample(srv.state.sample_root)
        drz = [it for it in index.items if it.archive == "mast" and it.path.endswith("_drz.fits")]
        centre = drz[0]
        t0 = time.monotonic()
        with MastClient(client_settings(srv.url)) as c:
            records = c.query_region(centre.ra, centre.dec, 0.05)
            results = c.fetch(records, tmp_path)
        elapsed = time.monotonic() - t0
    want = {Path(it.path).name: it for it in drz if separation_deg(centre.ra, centre.dec, it.ra, it.dec) <= 0.05}
    assert sorted(r.filename for r in records) == sorted(want) and want
    for res in results:
        assert isinstance(res, DownloadedFile), res
        assert res.sha256 == want[res.path.name].sha256 and res.size == want[res.path.name].size
    assert {e.mode for e in plan.events} == {"503", "truncate"}
    print(f"\nsample region ({len(results)} files, 1x503 + truncation of each file) fetched in {elapsed:.2f} s")
    assert build_sample  # imported from the sample module the replica serves
