"""Bounded downloads (issue 21): hard byte caps counted on decoded bytes, a per-file deadline, free disk
watched while streaming; a cap or the deadline is a permanent error, never retried.

Hostile servers are the replica's fault modes (``oversize``, ``gzip``, ``drip``) on the shared
loopback file server of ``test_download``; peak memory of the download cases is measured in a child.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_inputs import run_measured
from test_download import FILES, FileServer, make_settings, no_partials, rec

from astro_pipeline.archives.download import (
    Downloader,
    PermanentDownloadError,
    TransientDownloadError,
    VerificationError,
)
from astro_pipeline.config import DownloadSettings

GiB = 2**30
MB = 1_000_000


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    with FileServer() as srv:
        yield srv


@pytest.fixture()
def fresh(server: FileServer) -> FileServer:
    server.set_faults("")
    server.stats.gets.clear()
    return server


def test_caps_and_deadline_defaults() -> None:
    cfg = DownloadSettings()
    assert cfg.max_file_bytes == 4 * GiB and cfg.file_deadline_s == 30 * 60


@pytest.mark.parametrize("length", ["true", "none"])
def test_body_past_the_declared_size_stops_at_the_cap_and_is_not_retried(fresh: FileServer, tmp_path: Path,
                                                                         length: str) -> None:
    """A record declaring 1,000 bytes whose server sends 40 MB: at most 1,010 bytes are taken, once."""
    plan = fresh.set_faults(f"oversize:/files/f1.fits:extra=40000000:length={length}")
    t0 = time.monotonic()
    with Downloader(make_settings(fresh.url)) as dl:
        with pytest.raises(PermanentDownloadError, match=r"cap of 1,010 bytes \(the declared size 1,000 \+ 1%\)") as err:
            dl.fetch(rec(fresh.url, "f1.fits", size=1000), tmp_path)
    assert type(err.value).__name__ == "DownloadLimitError" and not isinstance(err.value, VerificationError)
    assert err.value.attempts == 1 and fresh.stats.gets["f1.fits"] == 1  # not retried
    assert plan.bytes_sent() < 16 * MB and time.monotonic() - t0 < 10  # the transfer was cut, not finished
    assert list(tmp_path.iterdir()) == []


def test_body_without_a_declared_size_stops_at_the_per_file_maximum(fresh: FileServer, tmp_path: Path) -> None:
    plan = fresh.set_faults("oversize:/files/f2.fits:extra=40000000:length=none")
    with Downloader(make_settings(fresh.url, max_file_bytes=1_000_000)) as dl:
        with pytest.raises(PermanentDownloadError,
                           match=r"cap of 1,000,000 bytes \(the per-file maximum, download.max_file_bytes\)") as err:
            dl.fetch(rec(fresh.url, "f2.fits"), tmp_path)
    assert err.value.attempts == 1 and fresh.stats.gets["f2.fits"] == 1
    assert plan.bytes_sent() < 16 * MB and list(tmp_path.iterdir()) == []


def test_content_length_over_the_cap_is_refused_before_the_body(fresh: FileServer, tmp_path: Path) -> None:
    plan = fresh.set_faults("oversize:/files/f3.fits:extra=400000000")  # an honest Content-Length of 400 MB
    with Downloader(make_settings(fresh.url, max_file_bytes=1_000_000)) as dl:
        with pytest.raises(PermanentDownloadError, match=r"Content-Length 400,05\d,\d\d\d is over the cap of 1,000,000"):
            dl.fetch(rec(fresh.url, "f3.fits"), tmp_path)
    assert fresh.stats.gets["f3.fits"] == 1 and plan.bytes_sent() < 16 * MB


@pytest.mark.parametrize("declared", [True, False])
def test_gzip_content_encoding_counts_decoded_bytes(fresh: FileServer, tmp_path: Path, declared: bool) -> None:
    """A 0.2 MB gzip body that decodes to 200 MB meets the cap on its decoded bytes."""
    data = FILES["f4.fits"]
    fresh.set_faults("gzip:/files/f4.fits:extra=200000000")
    settings = make_settings(fresh.url, max_file_bytes=10_000_000)
    with Downloader(settings) as dl:
        with pytest.raises(PermanentDownloadError, match=r"decoded body is over the cap of") as err:
            dl.fetch(rec(fresh.url, "f4.fits", size=len(data) if declared else None), tmp_path)
    assert err.value.attempts == 1 and fresh.stats.gets["f4.fits"] == 1
    assert list(tmp_path.iterdir()) == []


def test_gzip_encoded_body_is_decoded_verified_and_length_checked(fresh: FileServer, tmp_path: Path) -> None:
    """An honest gzip-encoded reply is decoded and verified; a self-consistent reply whose gzip stream
    never ends (Content-Length of a cut stream) is a short read, retried, never accepted."""
    data = FILES["f5.fits"]
    fresh.set_faults("gzip:/files/f5.fits:1")
    with Downloader(make_settings(fresh.url)) as dl:
        got = dl.fetch(rec(fresh.url, "f5.fits", size=len(data)), tmp_path / "a")
        assert got.path.read_bytes() == data and got.verified_against == "size"
        plan = fresh.set_faults("gzip:/files/f5.fits:1:cut=0.6")
        again = dl.fetch(rec(fresh.url, "f5.fits"), tmp_path / "b")  # no declared size: only the stream tells
    assert [e.mode for e in plan.events] == ["gzip"] and again.path.read_bytes() == data
    assert fresh.stats.gets["f5.fits"] == 3
    fresh.set_faults("gzip:/files/f0.fits:cut=0.6")
    with Downloader(make_settings(fresh.url, retries=1)) as dl:
        with pytest.raises(TransientDownloadError, match=r"gzip stream ends early"):
            dl.fetch(rec(fresh.url, "f0.fits"), tmp_path / "c")
    assert no_partials(tmp_path / "c") == [] and not (tmp_path / "c" / "f0.fits").exists()


def test_slow_drip_stops_at_the_per_file_deadline(fresh: FileServer, tmp_path: Path) -> None:
    """Each piece beats the 1 s read timeout; the whole would take ~6 s; the 1.5 s deadline stops it."""
    fresh.set_faults("drip:/files/f1.fits:piece=2000:delay=0.2")  # 51,000 bytes in 26 pieces
    t0 = time.monotonic()
    with Downloader(make_settings(fresh.url, read_timeout_s=1.0, file_deadline_s=1.5)) as dl:
        with pytest.raises(PermanentDownloadError, match=r"deadline of 1.5 s \(download.file_deadline_s\)") as err:
            dl.fetch(rec(fresh.url, "f1.fits"), tmp_path)
    elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed < 1.5 + 1.0 + 1.0  # at most a read timeout past the deadline
    assert err.value.attempts == 1 and fresh.stats.gets["f1.fits"] == 1 and list(tmp_path.iterdir()) == []


def test_free_disk_is_checked_while_streaming(fresh: FileServer, tmp_path: Path) -> None:
    """The folder's free space is watched during the transfer, not only before it.

    The disk is simulated (50 MB free less what the folder holds): filling a real disk is not
    something a test may do on a shared machine. The downloader asks ``_free_bytes`` for free space."""
    fresh.set_faults("oversize:/files/f2.fits:extra=40000000:length=none")
    settings = make_settings(fresh.url).with_overrides(min_free_disk_bytes=45 * MB)

    def free(folder: Path) -> int:
        return 50 * MB - sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())

    with Downloader(settings) as dl:
        dl._free_bytes = free  # type: ignore[attr-defined]
        with pytest.raises(PermanentDownloadError, match=r"free disk .* fell below .*min_free_disk_bytes") as err:
            dl.fetch(rec(fresh.url, "f2.fits"), tmp_path)
    assert err.value.attempts == 1 and fresh.stats.gets["f2.fits"] == 1 and list(tmp_path.iterdir()) == []


_CHILD = """
import json, sys
from pathlib import Path
from astro_pipeline.archives.download import Downloader, DownloadError
from astro_pipeline.archives.records import ArchiveRecord
from astro_pipeline.config import DownloadSettings, Settings
args = json.loads(sys.argv[1])
cfg = DownloadSettings(retries=1, backoff_base_s=0.01, backoff_max_s=0.05, min_interval_s=0.0, **args["download"])
settings = Settings(mast_url=args["url"], min_free_disk_bytes=0, download=cfg)
record = ArchiveRecord(archive="mast", id="x", url=args["url"] + "/files/" + args["name"], filename=args["name"],
                       size=args["size"])
with Downloader(settings) as dl:
    try:
        got = dl.fetch(record, Path(args["dest"]))
        print(json.dumps({"outcome": "ok", "size": got.size}))
    except DownloadError as exc:
        print(json.dumps({"outcome": type(exc).__name__, "reason": exc.reason, "attempts": exc.attempts}))
"""

_CASES = {
    "declared-size-40MB-body": ("oversize:/files/f1.fits:extra=40000000:length=none", 1000, {}),
    "no-size-40MB-body": ("oversize:/files/f1.fits:extra=40000000:length=none", None, {"max_file_bytes": 10_000_000}),
    "gzip-encoding-1GB-decoded": ("gzip:/files/f1.fits:extra=1000000000", None, {"max_file_bytes": 50_000_000}),
    "slow-drip": ("drip:/files/f1.fits:piece=100:delay=0.2", None, {"read_timeout_s": 1.0, "file_deadline_s": 1.0}),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_download_cases_stay_under_1_GB_in_a_child(fresh: FileServer, tmp_path: Path, case: str) -> None:
    spec, size, download = _CASES[case]
    fresh.set_faults(spec)
    args = {"url": fresh.url, "name": "f1.fits", "size": size, "dest": str(tmp_path / "dest"), "download": download}
    child = run_measured([sys.executable, "-c", _CHILD, json.dumps(args)], env=dict(os.environ), timeout=120,
                         workdir=tmp_path / "child")
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"{case}: peak {child.maxrss_mib:.0f} MiB, {result}")
    assert result["outcome"] == "DownloadLimitError" and result["attempts"] == 1, result
    assert child.maxrss_bytes < 1_000_000_000
    assert not (tmp_path / "dest" / "f1.fits").exists()

