"""Fault injection: spec parsing, seeded determinism, and every mode as seen over real HTTP."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest
import requests
from mast_fixtures import faults, mast_index, replica  # noqa: F401

from astro_pipeline.archives.replica.faults import FaultPlan, FaultSpecError

URI = "mast:HST/product/jm101a_drz.fits"


def file_url(replica) -> str:  # noqa: F811
    return f"{replica.url}/api/v0.1/Download/file?uri={URI}"


def invoke_body(ra: float = 210.8) -> str:
    req = {"service": "Mast.Caom.Cone", "params": {"ra": ra, "dec": 54.35, "radius": 0.05}, "format": "json",
           "pagesize": 50000, "page": 1, "cacheBreaker": "abc"}
    return "request=" + quote(json.dumps(req), safe="/")


def test_spec_parsing() -> None:
    plan = FaultPlan.parse("503:/api/v0/invoke:3, truncate:/api/v0.1/Download/file,"
                           "slow:/x:1:delay=2.5,badlength:mast:HST/product/a.fits:delta=-10,"
                           "error:/api/v0/invoke:msg=busy,405:/Download/file:method=head,503:/y:p=0.25")
    r = plan.rules
    assert (r[0].mode, r[0].status, r[0].pattern, r[0].count) == ("status", 503, "/api/v0/invoke", 3)
    assert (r[1].mode, r[1].count) == ("truncate", None)
    assert (r[2].delay, r[2].count) == (2.5, 1)
    assert (r[3].pattern, r[3].delta) == ("mast:HST/product/a.fits", -10)  # ':' inside a pattern
    assert r[4].msg == "busy" and r[5].method == "HEAD" and r[6].p == 0.25
    assert FaultPlan.parse("").rules == [] and FaultPlan.parse(None).describe() == "no faults"
    for bad, why in [("boom:/x", "unknown mode"), ("503", "expected MODE"), ("200:/x", "not an HTTP error"),
                     ("slow:/x:p=2", "p must be"), ("truncate:/x:fraction=1.5", "fraction"),
                     ("badlength:/x:delta=0", "delta 0")]:
        with pytest.raises(FaultSpecError, match=why):
            FaultPlan.parse(bad)


def test_bursts_count_per_request_and_ignore_cache_breaker() -> None:
    plan = FaultPlan.parse("503:/api/v0/invoke:2")
    a1 = invoke_body().encode()
    a2 = a1.replace(b"abc", b"xyz")  # a retry by a client: new cacheBreaker, same query
    b = invoke_body(ra=10.0).encode()
    assert plan.decide("POST", "/api/v0/invoke", a1) is not None
    assert plan.decide("POST", "/api/v0/invoke", b) is not None  # another query: its own burst
    assert plan.decide("POST", "/api/v0/invoke", a2) is not None
    assert plan.decide("POST", "/api/v0/invoke", a1) is None  # burst of 2 over
    assert plan.decide("GET", "/healthz") is None
    assert [e.attempt for e in plan.events] == [1, 1, 2]


def test_probabilistic_faults_are_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[bool]:
        plan = FaultPlan.parse("503:/Download/file:p=0.5", seed=seed)
        return [plan.decide("GET", f"/api/v0.1/Download/file?uri=f{i}") is not None
                for i in range(40) for _ in range(2)]

    first = run(7)
    assert first == run(7) and first != run(8)
    assert 10 < sum(first) < 70


def test_status_modes_and_method_filter(replica, faults) -> None:  # noqa: F811
    faults.load("503:/api/v0.1/Download/file:1,405:/api/v0.1/Download/file:method=HEAD")
    first = requests.get(file_url(replica), timeout=5)
    assert first.status_code == 503 and "<html>" in first.text
    assert requests.get(file_url(replica), timeout=5).status_code == 200  # burst of one is over
    # HEAD is another request (its own burst of 503), then the HEAD-only rule fires every time
    assert [requests.head(file_url(replica), timeout=5).status_code for _ in range(3)] == [503, 405, 405]
    assert [e.mode for e in faults.events] == ["503", "503", "405", "405"]


def test_truncated_and_wrong_length_bodies(replica, faults) -> None:  # noqa: F811
    full = requests.get(file_url(replica), timeout=5).content
    faults.load("truncate:/api/v0.1/Download/file:1")
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        requests.get(file_url(replica), timeout=5).content  # noqa: B018
    faults.load("badlength:/api/v0.1/Download/file:1:delta=999")
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        requests.get(file_url(replica), timeout=5).content  # noqa: B018
    faults.load("badlength:/api/v0.1/Download/file:1:delta=-100")
    short = requests.get(file_url(replica), timeout=5)
    assert int(short.headers["Content-Length"]) == len(short.content) == len(full) - 100
    faults.load("nolength:/api/v0.1/Download/file:1")
    chunked = requests.get(file_url(replica), timeout=5)
    assert "Content-Length" not in chunked.headers and chunked.content == full
    faults.load("corrupt:/api/v0.1/Download/file:1")  # same length, one byte flipped: only a checksum tells
    bad = requests.get(file_url(replica), timeout=5)
    assert int(bad.headers["Content-Length"]) == len(bad.content) == len(full) and bad.content != full
    assert sum(a != b for a, b in zip(bad.content, full, strict=True)) == 1


def test_json_faults(replica, faults) -> None:  # noqa: F811
    url = f"{replica.url}/api/v0/invoke"
    headers = {"Content-type": "application/x-www-form-urlencoded"}
    faults.load("malformed:/api/v0/invoke:1")
    with pytest.raises(requests.exceptions.JSONDecodeError):
        requests.post(url, data=invoke_body(), headers=headers, timeout=5).json()
    assert requests.post(url, data=invoke_body(), headers=headers, timeout=5).json()["status"] == "COMPLETE"
    faults.load("error:/api/v0/invoke:1:msg=Database busy,executing:/api/v0/invoke:1")
    err = requests.post(url, data=invoke_body(), headers=headers, timeout=5).json()
    assert err["status"] == "ERROR" and err["msg"] == "Database busy"
    body2 = invoke_body(ra=11.0)
    assert requests.post(url, data=body2, headers=headers, timeout=5).json()["status"] == "ERROR"
    assert requests.post(url, data=body2, headers=headers, timeout=5).json()["status"] == "EXECUTING"


def test_slow_reply_passes_client_timeout(replica, faults) -> None:  # noqa: F811
    faults.load("slow:/api/v0.1/Download/file:1:delay=1.5")
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(file_url(replica), timeout=(2, 0.3))
    assert requests.get(file_url(replica), timeout=5).status_code == 200
    faults.load("slow:/api/v0.1/Download/file:1:delay=0.6")  # a patient client gets the reply, late
    t0 = time.monotonic()
    assert requests.get(file_url(replica), timeout=5).status_code == 200
    assert time.monotonic() - t0 >= 0.6


def test_peak_in_flight_counts_concurrent_requests_server_side(replica, faults) -> None:  # noqa: F811
    from concurrent.futures import ThreadPoolExecutor

    faults.load("slow:/api/v0.1/Download/file:delay=0.4")
    assert faults.peak_in_flight() == 0
    with ThreadPoolExecutor(3) as pool:
        codes = list(pool.map(lambda _: requests.get(file_url(replica), timeout=5).status_code, range(3)))
    assert codes == [200] * 3 and faults.peak_in_flight("/api/v0.1/Download/file") == 3
    requests.get(file_url(replica), timeout=5)
    assert faults.peak_in_flight() == 3  # a peak, not the current count
    faults.load("")
    assert faults.peak_in_flight() == 0


def test_streaming_modes_drip_oversize_gzip(replica, faults) -> None:  # noqa: F811
    """The hostile-server modes: a drip that beats read timeouts, bodies past their size, gzip encoding."""
    import gzip
    import zlib

    full = requests.get(file_url(replica), timeout=5).content
    faults.load(f"drip:/api/v0.1/Download/file:1:piece={len(full) // 4 + 1}:delay=0.25")
    t0 = time.monotonic()
    dripped = requests.get(file_url(replica), timeout=(2, 1.0))  # each piece comes within the read timeout
    assert dripped.content == full and int(dripped.headers["Content-Length"]) == len(full)
    assert time.monotonic() - t0 >= 3 * 0.25 and faults.bytes_sent() == len(full)
    faults.load("oversize:/api/v0.1/Download/file:1:extra=3000000")
    big = requests.get(file_url(replica), timeout=5)
    assert int(big.headers["Content-Length"]) == len(big.content) == len(full) + 3_000_000
    assert big.content[: len(full)] == full and not any(big.content[len(full):])
    faults.load("oversize:/api/v0.1/Download/file:1:extra=1000:length=none")
    open_ended = requests.get(file_url(replica), timeout=5)
    assert "Content-Length" not in open_ended.headers and len(open_ended.content) == len(full) + 1000
    faults.load("gzip:/api/v0.1/Download/file:1:extra=5000000")
    raw = requests.get(file_url(replica), timeout=5, stream=True)
    wire = raw.raw.read(decode_content=False)
    assert raw.headers["Content-Encoding"] == "gzip" and int(raw.headers["Content-Length"]) == len(wire)
    assert len(wire) < 100_000 and gzip.decompress(wire) == full + bytes(5_000_000)
    faults.load("gzip:/api/v0.1/Download/file:1:cut=0.5")
    cut = requests.get(file_url(replica), timeout=5, stream=True).raw.read(decode_content=False)
    decoder = zlib.decompressobj(31)
    assert full.startswith(decoder.decompress(cut)) and not decoder.eof  # self-consistent, never-ending stream
    with pytest.raises(FaultSpecError, match="cut must be"):
        FaultPlan.parse("gzip:/x:cut=1")


def test_streaming_modes_stop_when_the_client_leaves(replica, faults) -> None:  # noqa: F811
    faults.load("oversize:/api/v0.1/Download/file:1:extra=400000000")
    with requests.get(file_url(replica), timeout=5, stream=True) as resp:
        got = len(resp.raw.read(1 << 20))
    deadline = time.monotonic() + 5
    sent = -1
    while time.monotonic() < deadline and sent != faults.bytes_sent():  # settles once the server notices
        sent = faults.bytes_sent()
        time.sleep(0.3)
    assert got == 1 << 20 and sent < 100_000_000  # far less than the 400 MB it would have sent
