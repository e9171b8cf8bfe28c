"""Verified, polite, resumable-by-rerun downloads shared by every archive client.

What a fetch guarantees:

* only hosts in ``Settings.allowed_hosts`` are contacted (redirects included);
* the body streams to a hidden temporary file in the destination folder, and is renamed onto
  its final name with ``os.replace`` only after verification, so a final name never holds a
  partial file;
* verification: the byte count must match ``Content-Length`` and the record's declared size;
  the sha256 must match the record's published checksum when there is one (otherwise it is
  computed and recorded);
* limits, checked while the body streams (:class:`DownloadLimitError`, permanent, never retried):
  a hard cap on the decoded bytes (the declared size + 1%, or ``download.max_file_bytes`` when
  no size is declared; a ``Content-Length`` over it is refused before the body), so that no
  ``Content-Encoding`` gets past it (gzip and deflate are decoded here, a bounded piece at a time);
  a per-file deadline (``download.file_deadline_s``) besides the read timeout, which a slow drip
  never trips; and free disk, watched every few MB against ``min_free_disk_bytes``;
* the downloader alone retries, each kind of failure as often as it can help: 5xx/429 replies,
  connection errors, timeouts and short reads up to ``Settings.download.retries`` times with
  exponential backoff and jitter, then :class:`TransientDownloadError`; a body that fails its size
  or sha256 check is fetched once more, then :class:`VerificationError`; anything retrying cannot
  mend (HTTP 4xx, a host off the allow-list, a bad name, no disk) is a
  :class:`PermanentDownloadError` at once. Callers (the sweep's tasks) never retry a download;
* one per-host concurrency limit and polite minimum interval between requests to one host for the
  whole process (:func:`host_gate`), however many ``Downloader`` objects the process makes;
* a verified file is skipped on rerun: a hidden sidecar ``.<name>.sha256`` (JSON) is written
  after verification and checked (size + sha256) on the next run;
* server-supplied names are sanitised to one plain file name (no traversal, no absolute path).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
from astro_pipeline.config import DownloadSettings, Settings
from astro_pipeline.fileio import atomic_write_text, create_temp, sha256_file

__all__ = [
    "DownloadError",
    "DownloadLimitError",
    "Downloader",
    "HostGate",
    "PermanentDownloadError",
    "PoliteSession",
    "ReplyTooLarge",
    "TransientDownloadError",
    "VerificationError",
    "backoff_delay",
    "host_gate",
    "safe_filename",
    "sidecar_path",
]

_CHUNK = 1024 * 256
#: free disk is checked again after every this many bytes written
_DISK_CHECK_BYTES = 4 * 1024 * 1024
#: Content-Encodings decoded here (anything else is refused: its decoded size could not be capped)
_DECODED_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 32 + zlib.MAX_WBITS}
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._+=-]+")


#: Transfers of one file whose body fails verification (size or sha256): one retry, for a body
#: damaged in transit; a second failure means the archive serves other bytes than it declares.
VERIFY_ATTEMPTS = 2


class DownloadError(Exception):
    """A download that failed after the downloader's own retries: ``url``, a human ``reason``, and
    ``attempts`` (transfers made). Its subclass says whether a later run may do better."""

    def __init__(self, url: str, reason: str, *, record: ArchiveRecord | None = None, attempts: int = 0) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.record = record
        self.attempts = attempts


class TransientDownloadError(DownloadError):
    """Network trouble (5xx, 429, timeouts, dropped connections) that outlasted the retries: a later
    run may succeed; nothing in this run retries it again."""


class PermanentDownloadError(DownloadError):
    """A failure retrying cannot mend (HTTP 4xx, a host or scheme off the allow-list, a bad file
    name, a folder that cannot be written, too little disk): never retried."""


class VerificationError(PermanentDownloadError):
    """The body failed its size or sha256 check on each of :data:`VERIFY_ATTEMPTS` transfers."""


class DownloadLimitError(PermanentDownloadError):
    """A transfer stopped at one of its limits: the byte cap, the per-file deadline or free disk.
    Never retried: a body past its cap or a server too slow for the deadline would do it again."""


class _Retryable(Exception):
    """Internal: an attempt failed in a way worth retrying (network trouble)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Mismatch(Exception):
    """Internal: a complete body that failed verification (retried once)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def safe_filename(name: str | None) -> str:
    """One plain, non-hidden file name from a server- or archive-supplied name.

    Keeps only the last path component (``/`` and ``\\`` both split), percent-decodes it,
    replaces anything outside ``[A-Za-z0-9._+=-]`` with ``_`` and strips leading dots, so
    ``../../etc/passwd`` becomes ``passwd`` and ``/abs/x.fits`` becomes ``x.fits``.
    Raises ``ValueError`` when nothing usable is left.
    """
    if not name:
        raise ValueError("empty file name")
    text = unquote(str(name)).replace("\\", "/")
    base = text.rstrip("/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable())
    base = _SAFE_CHARS.sub("_", base).strip(" _")
    base = base.lstrip(".")
    if len(base) > 200:
        stem, dot, ext = base.rpartition(".")
        base = (stem[: 200 - len(ext) - 1] + dot + ext) if dot and len(ext) < 16 else base[:200]
    if not base or base in {".", ".."}:
        raise ValueError(f"no usable file name in {name!r}")
    return base


def sidecar_path(path: Path) -> Path:
    """Where the verification record of ``path`` lives (hidden, beside it)."""
    return path.with_name(f".{path.name}.sha256")


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d] where d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2**attempt))
    r = (rng or random).uniform(0.5, 1.0)
    return d * r


def _content_disposition_name(value: str | None) -> str | None:
    if not value:
        return None
    msg = Message()
    msg["content-disposition"] = value
    name = msg.get_filename()
    return str(name) if name else None


class HostGate:
    """Per-host concurrency limit plus a minimum interval between request starts to one host.

    Get the process's own with :func:`host_gate`: politeness is owed per process, not per object.
    """

    def __init__(self, concurrency: int, min_interval_s: float) -> None:
        self.concurrency = max(1, int(concurrency))
        self.min_interval_s = max(0.0, float(min_interval_s))
        self._lock = threading.Lock()
        self._sems: dict[str, threading.BoundedSemaphore] = {}
        self._next_start: dict[str, float] = {}

    def _sem(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            sem = self._sems.get(host)
            if sem is None:
                sem = self._sems[host] = threading.BoundedSemaphore(self.concurrency)
            return sem

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        """Hold one of ``host``'s slots; start no sooner than ``min_interval_s`` after the last start."""
        sem = self._sem(host)
        sem.acquire()
        try:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next_start.get(host, 0.0))
                self._next_start[host] = start + self.min_interval_s
            if start > now:
                time.sleep(start - now)
            yield
        finally:
            sem.release()


_GATES: dict[tuple[int, float], HostGate] = {}
_GATES_LOCK = threading.Lock()


def host_gate(cfg: DownloadSettings) -> HostGate:
    """The one :class:`HostGate` of this process for ``cfg``'s concurrency and interval.

    Every ``Downloader`` (one per sweep task, one per client) shares it, so concurrent tasks
    together never exceed ``per_host_concurrency`` requests to one host, nor start requests to it
    closer than ``min_interval_s`` apart.
    """
    key = (max(1, int(cfg.per_host_concurrency)), max(0.0, float(cfg.min_interval_s)))
    with _GATES_LOCK:
        gate = _GATES.get(key)
        if gate is None:
            gate = _GATES[key] = HostGate(*key)
        return gate


class ReplyTooLarge(requests.RequestException):
    """A reply read whole (a query's JSON, a resolver answer) over ``download.max_reply_bytes``:
    refused after reading at most the cap, and never retried (the archive would send it again)."""


_REPLY_CHUNK = 16 * 1024  # raw bytes per read: bounds what one gzip chunk can decode to at once


class _TimeoutAdapter(HTTPAdapter):
    """An adapter that applies a default (connect, read) timeout when the caller gives none, and
    caps the decoded size of replies read whole (``max_reply_bytes``; streamed reads are the caller's)."""

    def __init__(self, timeout: tuple[float, float], *, max_reply_bytes: int | None = None, **kwargs: Any) -> None:
        self._timeout = timeout
        self._max_reply_bytes = max_reply_bytes
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        cap = self._max_reply_bytes
        if cap is None or kwargs.get("stream"):
            return super().send(request, **kwargs)
        kwargs["stream"] = True
        return _read_capped(super().send(request, **kwargs), cap)


def _read_capped(resp: requests.Response, cap: int) -> requests.Response:
    """``resp`` with its body read (decoded) into ``resp.content``, or ``ReplyTooLarge`` once it passes ``cap``."""
    def refuse(what: str) -> ReplyTooLarge:
        resp.close()
        return ReplyTooLarge(f"{resp.url}: {what} over the reply cap of {cap:,} bytes (download.max_reply_bytes)",
                             response=resp, request=resp.request)

    declared = _int_or_none(resp.headers.get("Content-Length"))
    if declared is not None and declared > cap:
        raise refuse(f"a reply of {declared:,} bytes (Content-Length) is")
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in resp.raw.stream(_REPLY_CHUNK, decode_content=True):
            total += len(chunk)
            if total > cap:
                raise refuse("the reply is")
            chunks.append(chunk)
    except urllib3.exceptions.ProtocolError as exc:  # as requests' own read maps them
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.ConnectionError(exc) from exc
    resp._content = b"".join(chunks)  # what requests' own non-streamed read would have stored
    resp._content_consumed = True
    resp.raw.release_conn()
    return resp


class PoliteSession(requests.Session):
    """A ``requests.Session`` that refuses hosts outside the allow-list (redirects included),
    applies default timeouts, and passes every request through the per-host gate."""

    def __init__(
        self,
        allowed_hosts: Iterable[str],
        gate: HostGate,
        cfg: DownloadSettings,
        *,
        status_retries: bool = True,
    ) -> None:
        super().__init__()
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.gate = gate
        self.headers["User-Agent"] = cfg.user_agent
        retry = Retry(
            total=cfg.retries if status_retries else 0,
            connect=cfg.retries if status_retries else 0,
            read=cfg.retries if status_retries else 0,
            status=cfg.retries if status_retries else 0,
            backoff_factor=cfg.backoff_base_s,
            backoff_max=cfg.backoff_max_s,
            backoff_jitter=cfg.backoff_base_s / 2,
            status_forcelist=sorted(_RETRY_STATUS),
            allowed_methods=frozenset({"GET", "HEAD", "OPTIONS"}),
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = _TimeoutAdapter((cfg.connect_timeout_s, cfg.read_timeout_s), max_retries=retry,
                                  pool_maxsize=max(4, gate.concurrency * 2), max_reply_bytes=cfg.max_reply_bytes)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def check_url(self, url: str) -> str:
        """The URL's host, or ``DownloadError`` when it is not an allowed archive host."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https"):
            raise PermanentDownloadError(url, f"scheme {parts.scheme or '(none)'!r} is not fetched (http/https only)")
        if host not in self.allowed_hosts:
            raise PermanentDownloadError(
                url, f"host {host or '(none)'!r} is not a configured archive host "
                f"(allowed: {', '.join(sorted(self.allowed_hosts)) or 'none'})"
            )
        return host

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        # Every hop (the first request and each redirect) passes here: check the host, then gate.
        host = self.check_url(str(request.url))
        if getattr(_gate_bypass, "active", False):
            return super().send(request, **kwargs)
        with self.gate.slot(host):
            return super().send(request, **kwargs)


_gate_bypass = threading.local()


class Downloader:
    """Fetch ``ArchiveRecord`` URLs into a folder, verified; see the module docstring.

    ``settings.download`` gives timeouts, retries, backoff, per-host concurrency and the
    polite interval; ``settings.allowed_hosts`` the hosts that may be contacted. Close it (or use
    it as a context manager) to close its HTTP sessions; the host gate outlives it.
    """

    def __init__(self, settings: Settings, *, seed: int | None = None) -> None:
        self.settings = settings
        self.cfg: DownloadSettings = settings.download
        self.gate = host_gate(self.cfg)
        hosts = self.settings.allowed_hosts
        #: for callers (scrapers, clients): retries 5xx on GET/HEAD, default timeouts, gated.
        self.session = PoliteSession(hosts, self.gate, self.cfg)
        # fetch() does its own whole-transfer retries, so its session retries nothing itself.
        self._raw = PoliteSession(hosts, self.gate, self.cfg, status_retries=False)
        self._raw.headers["Accept-Encoding"] = "gzip, deflate"  # those decoded (and capped) here
        self._rng = random.Random(seed)
        self._sleep: Callable[[float], None] = time.sleep
        self._free_bytes: Callable[[Path], int] = _disk_free

    # ------------------------------------------------------------------------------------------
    def fetch(self, record: ArchiveRecord, dest_dir: Path, *, filename: str | None = None) -> DownloadedFile:
        """Download ``record.url`` into ``dest_dir``; return the verified file or raise ``DownloadError``."""
        url = record.url
        host = self._raw.check_url(url)
        dest_dir = Path(dest_dir)
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentDownloadError(url, f"cannot create folder {dest_dir}: {exc}", record=record) from exc
        name: str | None = None
        given = filename or record.filename
        if given:
            try:
                name = safe_filename(given)
            except ValueError as exc:
                raise PermanentDownloadError(url, f"bad file name: {exc}", record=record) from exc
            reused = self._reuse(record, dest_dir / name)
            if reused is not None:
                return reused
        self._check_disk(dest_dir, record)

        budget = self.cfg.retries + 1  # transfers that network trouble may take
        transfers = mismatches = 0
        while True:
            transfers += 1
            try:
                return self._attempt(record, dest_dir, name, host)
            except _Mismatch as exc:
                mismatches += 1
                if mismatches >= VERIFY_ATTEMPTS:
                    raise VerificationError(url, f"{exc.reason} (on {mismatches} transfers)", record=record,
                                            attempts=transfers) from None
                delay, retry_after = backoff_delay(0, self.cfg.backoff_base_s, self.cfg.backoff_max_s, self._rng), None
            except _Retryable as exc:
                if transfers - mismatches >= budget:
                    raise TransientDownloadError(url, f"gave up after {transfers} attempts: {exc.reason}",
                                                 record=record, attempts=transfers) from None
                delay = backoff_delay(transfers - mismatches - 1, self.cfg.backoff_base_s, self.cfg.backoff_max_s,
                                      self._rng)
                retry_after = exc.retry_after
            except DownloadError as exc:
                exc.record = record
                exc.attempts = transfers
                raise
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.cfg.backoff_max_s))
            self._sleep(delay)

    def fetch_many(
        self,
        records: Iterable[ArchiveRecord],
        dest_dir: Path,
        *,
        on_done: Callable[[ArchiveRecord, DownloadedFile | DownloadError], None] | None = None,
        max_workers: int | None = None,
    ) -> list[DownloadedFile | DownloadError]:
        """Fetch many records concurrently (bounded per host); results in input order.

        A failure is returned as its ``DownloadError`` (never raised). ``on_done`` is called once
        per record as it finishes (for progress bars).
        """
        items = list(records)
        if not items:
            return []
        hosts = {urlsplit(r.url).hostname for r in items}
        workers = max_workers or min(16, max(1, self.cfg.per_host_concurrency * len(hosts)))

        def one(rec: ArchiveRecord) -> DownloadedFile | DownloadError:
            try:
                result: DownloadedFile | DownloadError = self.fetch(rec, dest_dir)
            except DownloadError as exc:
                result = exc
            except Exception as exc:  # noqa: BLE001 - report, never crash a batch
                result = PermanentDownloadError(rec.url, f"unexpected {type(exc).__name__}: {exc}", record=rec)
            if on_done is not None:
                on_done(rec, result)
            return result

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download") as pool:
            return list(pool.map(one, items))

    def close(self) -> None:
        self.session.close()
        self._raw.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------
    def _reuse(self, record: ArchiveRecord, path: Path) -> DownloadedFile | None:
        """The already-verified file at ``path`` when its sidecar, size and sha256 still agree."""
        side = sidecar_path(path)
        if not (path.is_file() and side.is_file()):
            return None
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
            size = int(meta["size"])
            sha = str(meta["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if path.stat().st_size != size:
            return None
        if record.size is not None and record.size != size:
            return None
        if record.sha256 and record.sha256.lower() != sha.lower():
            return None
        if sha256_file(path) != sha:
            return None
        return DownloadedFile(
            record=record, path=path, size=size, sha256=sha,
            verified_against=str(meta.get("verified_against", "none")),
            downloaded_at=datetime.now(UTC), skipped=True,
        )

    def _check_disk(self, dest_dir: Path, record: ArchiveRecord) -> None:
        need = (record.size or 0) + int(self.settings.min_free_disk_bytes)
        try:
            free = self._free_bytes(dest_dir)
        except OSError:
            return
        if free < need:
            raise PermanentDownloadError(
                record.url,
                f"not enough free disk in {dest_dir}: {free} bytes free, need {need} "
                "(file size + min_free_disk_bytes)",
                record=record,
            )

    def _cap(self, record: ArchiveRecord) -> tuple[int, str]:
        """The most decoded bytes this record's body may have, and why."""
        if record.size is not None:
            return record.size + math.ceil(record.size / 100), f"the declared size {record.size:,} + 1%"
        return int(self.cfg.max_file_bytes), "the per-file maximum, download.max_file_bytes"

    def _attempt(self, record: ArchiveRecord, dest_dir: Path, name: str | None, host: str) -> DownloadedFile:
        url = record.url
        timeout = (self.cfg.connect_timeout_s, self.cfg.read_timeout_s)
        deadline = time.monotonic() + float(self.cfg.file_deadline_s)
        tmp_path: Path | None = None
        with self.gate.slot(host):
            _gate_bypass.active = True
            try:
                try:
                    resp = self._raw.get(url, stream=True, timeout=timeout)
                except DownloadError:
                    raise
                except (requests.Timeout, requests.ConnectionError) as exc:
                    raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
                except requests.RequestException as exc:
                    raise PermanentDownloadError(url, f"{type(exc).__name__}: {exc}") from exc
                with resp:
                    if resp.status_code in _RETRY_STATUS or resp.status_code >= 500:
                        raise _Retryable(f"HTTP {resp.status_code} {resp.reason}", _retry_after(resp))
                    if resp.status_code >= 400:
                        raise PermanentDownloadError(url, f"HTTP {resp.status_code} {resp.reason}")
                    if name is None:
                        raw_name = _content_disposition_name(resp.headers.get("Content-Disposition")) or \
                            urlsplit(resp.url).path
                        try:
                            name = safe_filename(raw_name)
                        except ValueError as exc:
                            raise PermanentDownloadError(url, f"bad file name from server: {exc}") from exc
                        reused = self._reuse(record, dest_dir / name)
                        if reused is not None:
                            return reused
                    cap, why = self._cap(record)
                    declared = _int_or_none(resp.headers.get("Content-Length"))  # of the encoded body
                    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
                    if encoding != "identity" and encoding not in _DECODED_ENCODINGS:
                        raise PermanentDownloadError(url, f"Content-Encoding {encoding!r} is not one this "
                                                          f"downloader decodes ({', '.join(_DECODED_ENCODINGS)})")
                    if encoding == "identity" and declared is not None and declared > cap:
                        raise DownloadLimitError(url, f"Content-Length {declared:,} is over the cap of {cap:,} "
                                                      f"bytes ({why})")
                    tmp_path = create_temp(dest_dir, name, ".part")
                    body = _Body(resp, encoding, cap=cap, why=why, deadline=deadline,
                                 deadline_s=float(self.cfg.file_deadline_s), url=url)
                    size = 0
                    try:
                        with open(tmp_path, "wb") as fh:
                            next_disk_check = _DISK_CHECK_BYTES
                            for chunk in body.pieces():
                                fh.write(chunk)
                                size += len(chunk)
                                if size >= next_disk_check:
                                    next_disk_check = size + _DISK_CHECK_BYTES
                                    fh.flush()
                                    self._check_disk_streaming(dest_dir, size, url)
                            fh.flush()
                            os.fsync(fh.fileno())
                    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:  # before OSError
                        raise _Retryable(f"short read after {size} bytes: {type(exc).__name__}") from exc
                    except OSError as exc:
                        if isinstance(exc, (TimeoutError, ConnectionError)):
                            raise _Retryable(f"short read after {size} bytes: {type(exc).__name__}") from exc
                        raise PermanentDownloadError(url, f"cannot write {tmp_path}: {exc}") from exc
                    sha = body.digest.hexdigest()
                    verified = "none"
                    if declared is not None and body.raw_bytes != declared:
                        raise _Retryable(f"short read: got {body.raw_bytes} bytes, Content-Length says {declared}")
                    if record.size is not None and size != record.size:
                        raise _Mismatch(f"size mismatch: got {size} bytes, archive declares {record.size}")
                    if record.size is not None or (declared is not None and encoding == "identity"):
                        verified = "size"
                    if record.sha256:
                        if sha.lower() != record.sha256.lower():
                            raise _Mismatch(f"sha256 mismatch: got {sha}, archive publishes {record.sha256}")
                        verified = "sha256"
                    final = dest_dir / name
                    os.replace(tmp_path, final)
                    tmp_path = None
                    now = datetime.now(UTC)
                    _write_sidecar(final, size=size, sha256=sha, url=url, verified_against=verified, when=now)
                    return DownloadedFile(record=record, path=final, size=size, sha256=sha,
                                          verified_against=verified, downloaded_at=now)
            finally:
                _gate_bypass.active = False
                if tmp_path is not None:
                    tmp_path.unlink(missing_ok=True)

    def _check_disk_streaming(self, dest_dir: Path, written: int, url: str) -> None:
        minimum = int(self.settings.min_free_disk_bytes)
        try:
            free = self._free_bytes(dest_dir)
        except OSError:
            return
        if free < minimum:
            raise DownloadLimitError(url, f"free disk in {dest_dir} fell below {minimum:,} bytes "
                                          f"(min_free_disk_bytes) while streaming: {free:,} bytes free after "
                                          f"{written:,} bytes of this file")


class _Body:
    """A response body read a socket read at a time (``read1``: a drip cannot hold a read past the
    deadline check), decoded here when it has a Content-Encoding, a bounded piece at a time, and
    stopped at its cap (on decoded bytes) or the deadline. ``digest`` is the decoded bytes' sha256."""

    def __init__(self, resp: requests.Response, encoding: str, *, cap: int, why: str, deadline: float,
                 deadline_s: float, url: str) -> None:
        self.resp = resp
        self.encoding = encoding
        self.cap, self.why, self.deadline, self.deadline_s, self.url = cap, why, deadline, deadline_s, url
        self.raw_bytes = 0
        self.decoded = 0
        self.digest = hashlib.sha256()
        wbits = _DECODED_ENCODINGS.get(encoding)
        self._wbits = wbits
        self._inflate = zlib.decompressobj(wbits) if wbits is not None else None
        # an encoded body may not be much larger than its decoded cap (empty gzip members decode to nothing)
        self._raw_cap = cap + cap // 100 + (1 << 20) if wbits is not None else cap

    def _check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise DownloadLimitError(self.url, f"transfer passed the per-file deadline of {self.deadline_s:g} s "
                                               f"(download.file_deadline_s) after {self.decoded:,} bytes")

    def _take(self, piece: bytes) -> bytes:
        if self.decoded + len(piece) > self.cap:
            what = "decoded body" if self._wbits is not None else "body"
            raise DownloadLimitError(self.url, f"{what} is over the cap of {self.cap:,} bytes ({self.why}): "
                                               f"stopped with {self.decoded + len(piece):,} bytes received")
        self.decoded += len(piece)
        self.digest.update(piece)
        return piece

    def _inflated(self, data: bytes) -> Iterator[bytes]:
        """Decoded pieces of at most ``_CHUNK`` bytes of ``data`` (gzip members may follow one another)."""
        assert self._inflate is not None and self._wbits is not None
        pending = False
        while data or pending:
            if self._inflate.eof:
                self._inflate = zlib.decompressobj(self._wbits)  # the next gzip member
            try:
                out = self._inflate.decompress(data, _CHUNK)
            except zlib.error as exc:
                raise _Mismatch(f"{self.encoding}-encoded body is corrupt after {self.decoded:,} bytes: {exc}") from exc
            if out:
                yield out
            pending = len(out) == _CHUNK and not self._inflate.eof
            data = self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail

    def pieces(self) -> Iterator[bytes]:
        raw = self.resp.raw
        self._check_deadline()
        while True:
            data = raw.read1(_CHUNK, decode_content=False)
            self._check_deadline()
            if not data:
                break
            self.raw_bytes += len(data)
            if self._inflate is None:
                yield self._take(data)
                continue
            for out in self._inflated(data):
                yield self._take(out)
            if self.raw_bytes > self._raw_cap:
                raise DownloadLimitError(self.url, f"encoded body is over {self._raw_cap:,} bytes, more than its "
                                                   f"decoded cap of {self.cap:,} bytes ({self.why}) allows")
        if self._inflate is not None and not self._inflate.eof:
            raise _Retryable(f"{self.encoding} stream ends early after {self.raw_bytes:,} encoded bytes "
                             f"({self.decoded:,} decoded)")


def _disk_free(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _write_sidecar(path: Path, *, size: int, sha256: str, url: str, verified_against: str, when: datetime) -> None:
    """Atomically record that ``path`` was verified (the rerun skip check reads it)."""
    payload = {"file": path.name, "size": size, "sha256": sha256, "url": url,
               "verified_against": verified_against, "verified_at": when.isoformat()}
    atomic_write_text(sidecar_path(path), json.dumps(payload))
