"""MAST client: unmodified astroquery ``Observations`` for queries, the shared Downloader for files.

astroquery computes its MAST URLs at import time from ``conf.server``; this client points its own
``ObservationsClass`` instance at ``Settings.mast_url`` by setting the four URL attributes on the
instance's ``PortalAPI`` connection (configuration, not a patch: the attributes are public and
documented in ENVIRONMENT.md). It also mounts a default-timeout adapter on astroquery's
``requests`` session, and retries what astroquery does not (5xx, timeouts, short reads, malformed
JSON, ``status: ERROR``) with exponential backoff and jitter.

Name lookup (``resolve``) asks ``Settings.mast_resolver_url`` (SANTA JSON) directly, because
astroquery's resolver host is hard-coded.
"""

from __future__ import annotations

import math
import random
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import requests

from astro_pipeline.archives.download import Downloader, DownloadError, ReplyTooLarge, _TimeoutAdapter, backoff_delay
from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
from astro_pipeline.config import Settings

__all__ = ["DEFAULT_PRODUCT_TYPES", "MastClient", "MastError", "product_url"]

T = TypeVar("T")

#: Product subgroups fetched by default: drizzled science images (plain and CTE-corrected).
DEFAULT_PRODUCT_TYPES: tuple[str, ...] = ("DRZ", "DRC")
MAST_CREDIT = "NASA/ESA Hubble Space Telescope; data from MAST (STScI)"
MAST_LICENSE = "public (NASA/MAST data policy: non-proprietary HST data, credit requested)"
_OBSID_CHUNK = 50  # long obsid lists time out on the real service (ARCHIVES.md section 4)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (requests -> urllib3 ``reason`` -> the socket error), breadth first."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 16:
        cur = todo.pop(0)
        if any(cur is s for s in seen):
            continue
        seen.append(cur)
        linked = [cur.__cause__, cur.__context__, getattr(cur, "reason", None), *cur.args[:1]]
        todo.extend(x for x in linked if isinstance(x, BaseException))
    return seen


def _connection_failure(exc: Exception, base_url: str, connect_s: float, read_s: float) -> str:
    """What went wrong with the connection, in words: refused, unresolvable, or no reply in time."""
    host = urlsplit(base_url).netloc or base_url
    causes = _causes(exc)
    text = " ".join(str(e) for e in causes).lower()
    if any(isinstance(e, ConnectionRefusedError) for e in causes) or "connection refused" in text:
        return f"connection refused by {host} (nothing is listening there)"
    if any(isinstance(e, socket.gaierror) for e in causes) or "name or service not known" in text:
        return f"cannot resolve the host name of {host}"
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection to {host} within {connect_s:g} s"
    if isinstance(exc, requests.Timeout):
        return f"{type(exc).__name__} (no complete reply within {read_s:g} s)"
    return f"connection to {host} failed ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"


class MastError(RuntimeError):
    """A MAST query that failed for good (after retries), with the reason."""


def product_url(mast_url: str, data_uri: str) -> str:
    """The download URL of a product, encoded the way astroquery encodes it."""
    return f"{mast_url.rstrip('/')}/api/v0.1/Download/file?uri={quote(data_uri, safe=':/')}"


def _val(row: Any, name: str) -> Any:
    """A table cell as a plain Python value; None when absent or masked."""
    import numpy as np

    if name not in row.colnames:
        return None
    value = row[name]
    if value is np.ma.masked or (hasattr(value, "mask") and bool(np.all(value.mask))):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bytes):
        value = value.decode()
    return value


def _mjd_to_iso(mjd: float | None) -> str | None:
    """An MJD (UTC) as ISO 8601 to the second, by ``astropy.time.Time``."""
    if mjd is None:
        return None
    from astropy.time import Time

    return str(Time(float(mjd), format="mjd", scale="utc", precision=0).isot)


class MastClient:
    """Query a sky region on MAST (or the replica), list and filter products, fetch them verified."""

    def __init__(self, settings: Settings, *, downloader: Downloader | None = None) -> None:
        self.settings = settings
        self.base_url = self.settings.mast_url.rstrip("/")
        self.downloader = downloader or Downloader(self.settings)
        self._rng = random.Random()
        self._obs = self._observations()

    # ------------------------------------------------------------------------ astroquery setup
    def _observations(self) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astroquery/astropy import-time deprecations
            from astroquery.mast import ObservationsClass

        obs = ObservationsClass()
        portal = obs._portal_api_connection
        portal.MAST_REQUEST_URL = f"{self.base_url}/api/v0/invoke"
        portal.COLUMNS_CONFIG_URL = f"{self.base_url}/portal/Mashup/Mashup.asmx/columnsconfig"
        portal.MAST_DOWNLOAD_URL = f"{self.base_url}/api/v0.1/Download/file"
        portal.MAST_BUNDLE_URL = f"{self.base_url}/api/v0.1/Download/bundle"
        cfg = self.settings.download
        adapter = _TimeoutAdapter((cfg.connect_timeout_s, cfg.read_timeout_s), max_reply_bytes=cfg.max_reply_bytes)
        obs._session.mount("http://", adapter)
        obs._session.mount("https://", adapter)
        return obs

    @property
    def observations_api(self) -> Any:
        """The configured astroquery ``ObservationsClass`` instance (for direct astroquery use)."""
        return self._obs

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """Run an astroquery call, retrying transient failures with backoff and jitter."""
        from astroquery.exceptions import NoResultsWarning, RemoteServiceError

        cfg = self.settings.download
        attempts = cfg.retries + 1
        last = ""
        for attempt in range(attempts):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NoResultsWarning)
                    return call()
            except requests.HTTPError as exc:
                code = exc.response.status_code if exc.response is not None else 0
                last = f"HTTP {code}"
                if code < 500 and code not in (408, 429):
                    raise MastError(f"{what}: {last} from {self.base_url}") from exc
            except ReplyTooLarge as exc:  # permanent: the archive would send it again
                raise MastError(f"{what}: {exc}") from exc
            except NoResultsWarning:  # raised, not warned, where another thread's filters say "error"
                from astropy.table import Table

                return Table()  # type: ignore[return-value]  # zero rows
            except requests.JSONDecodeError as exc:  # before RequestException: it is one too
                last = f"malformed reply (JSONDecodeError: {str(exc)[:120]})"
            except (requests.Timeout, requests.ConnectionError) as exc:
                last = _connection_failure(exc, self.base_url, cfg.connect_timeout_s, cfg.read_timeout_s)
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
            except RemoteServiceError as exc:
                last = f"MAST status ERROR: {exc}"
            except (ValueError, KeyError) as exc:  # JSONDecodeError is a ValueError
                last = f"malformed reply ({type(exc).__name__}: {str(exc)[:120]})"
            if attempt + 1 < attempts:
                time.sleep(backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s, self._rng))
        raise MastError(f"{what}: gave up after {attempts} attempts: {last}")

    # ------------------------------------------------------------------------ name lookup
    def resolve(self, name: str) -> tuple[float, float]:
        """(ra, dec) in degrees for a target name, from ``Settings.mast_resolver_url`` (SANTA JSON)."""
        url = self.settings.mast_resolver_url
        params = {"name": name, "outputFormat": "json", "resolveAll": "False"}

        def ask() -> dict[str, Any]:
            resp = self.downloader.session.get(url, params=params)
            resp.raise_for_status()
            return resp.json()

        try:
            reply = self._retrying(f"resolving {name!r}", ask)
        except DownloadError as exc:
            raise MastError(f"resolving {name!r}: {exc.reason}") from exc
        for entry in reply.get("resolvedCoordinate") or []:
            if str(entry.get("searchString", "")).lower() == name.lower():
                try:
                    return float(entry["ra"]), float(entry["decl"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise MastError(f"resolver reply for {name!r} has no usable ra/decl") from exc
        raise MastError(f'Could not resolve "{name}" to a sky position (resolver {url})')

    # ------------------------------------------------------------------------ queries
    def query_observations(
        self, ra: float, dec: float, radius_deg: float, *,
        instruments: Sequence[str] = (), filters: Sequence[str] = (), calib_level: int | None = 3,
    ) -> Any:
        """HST image observations within ``radius_deg`` of (ra, dec): an astropy Table (maybe empty)."""
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        from astro_pipeline.sky import ConeError, check_cone

        try:
            check_cone(ra, dec, radius_deg)
        except ConeError as exc:
            raise MastError(f"bad region: {exc}") from None
        criteria: dict[str, Any] = {"obs_collection": "HST", "dataproduct_type": "image"}
        if calib_level is not None:
            criteria["calib_level"] = [int(calib_level)]
        if instruments:
            criteria["instrument_name"] = list(instruments)
        if filters:
            criteria["filters"] = list(filters)
        coords = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
        return self._retrying(
            f"MAST query at ra={ra:g} dec={dec:g} r={radius_deg:g} deg",
            lambda: self._obs.query_criteria(coordinates=coords, radius=radius_deg * u.deg, **criteria),
        )

    def list_products(self, observations: Any, *, product_types: Sequence[str] = DEFAULT_PRODUCT_TYPES) -> Any:
        """Science products of ``observations`` whose subgroup (file suffix) is in ``product_types``."""
        from astropy.table import vstack

        if len(observations) == 0:
            return observations[:0]
        obsids = [str(x) for x in observations["obsid"] if str(x)]
        tables = []
        for start in range(0, len(obsids), _OBSID_CHUNK):
            chunk = obsids[start:start + _OBSID_CHUNK]
            table = self._retrying(f"MAST product list for {len(chunk)} observations",
                                   lambda chunk=chunk: self._obs.get_product_list(chunk))
            if len(table):
                tables.append(table)
        if not tables:
            return observations[:0]
        products = vstack(tables) if len(tables) > 1 else tables[0]
        kwargs: dict[str, Any] = {"productType": ["SCIENCE"]}
        if product_types:
            kwargs["productSubGroupDescription"] = [p.upper() for p in product_types]
        return self._obs.filter_products(products, **kwargs)

    def query_region(
        self, ra: float, dec: float, radius_deg: float, *,
        instruments: Sequence[str] = (), filters: Sequence[str] = (), calib_level: int | None = 3,
        product_types: Sequence[str] = DEFAULT_PRODUCT_TYPES,
    ) -> list[ArchiveRecord]:
        """Downloadable products (DRZ/DRC by default) of HST images in a region, as records."""
        obs = self.query_observations(ra, dec, radius_deg, instruments=instruments, filters=filters,
                                      calib_level=calib_level)
        if len(obs) == 0:
            return []
        products = self.list_products(obs, product_types=product_types)
        by_obsid = {str(_val(row, "obsid")): row for row in obs}
        records: list[ArchiveRecord] = []
        seen: set[str] = set()
        for prod in products:
            uri = _val(prod, "dataURI")
            if not uri or uri in seen:
                continue
            seen.add(uri)
            parent = _val(prod, "parent_obsid") or _val(prod, "obsID")
            row = by_obsid.get(str(parent)) or by_obsid.get(str(_val(prod, "obsID")))
            records.append(self._record(prod, row))
        records.sort(key=lambda r: (r.obs_id or "", r.id))
        return records

    def query_target(self, name: str, radius_deg: float, **kwargs: Any) -> list[ArchiveRecord]:
        """``query_region`` around a resolved target name."""
        ra, dec = self.resolve(name)
        return self.query_region(ra, dec, radius_deg, **kwargs)

    def _record(self, prod: Any, row: Any | None) -> ArchiveRecord:
        uri = str(_val(prod, "dataURI"))

        def obs(name: str) -> Any:
            return _val(row, name) if row is not None else None

        filters = obs("filters") or _val(prod, "filters") or ""
        size = _val(prod, "size")
        return ArchiveRecord(
            archive="mast", id=uri, obs_id=str(_val(prod, "obs_id") or obs("obs_id") or "") or None,
            title=obs("obs_title"), target=obs("target_name"), ra=obs("s_ra"), dec=obs("s_dec"),
            instrument=obs("instrument_name"),
            filters=[f for f in str(filters).split(";") if f],
            exposure_s=obs("t_exptime"), date_obs=_mjd_to_iso(obs("t_min")),
            url=product_url(self.base_url, uri), preview_url=obs("jpegURL") or None,
            filename=_val(prod, "productFilename") or uri.rsplit("/", 1)[-1],
            size=int(size) if size is not None and int(size) >= 0 else None,
            credit=MAST_CREDIT, license=MAST_LICENSE, kind="science",
            extra={k: v for k, v in {
                "obsid": str(_val(prod, "obsID") or obs("obsid") or ""),
                "proposal_id": _val(prod, "proposal_id") or obs("proposal_id"),
                "calib_level": _val(prod, "calib_level") or obs("calib_level"),
                "product_type": _val(prod, "productSubGroupDescription"),
                "obs_collection": _val(prod, "obs_collection"),
                "data_rights": _val(prod, "dataRights"),
            }.items() if v not in (None, "")},
        )

    # ------------------------------------------------------------------------ downloads
    def fetch(
        self, records: Iterable[ArchiveRecord], dest_dir: Path, *,
        on_done: Callable[[ArchiveRecord, DownloadedFile | DownloadError], None] | None = None,
    ) -> list[DownloadedFile | DownloadError]:
        """Download records through the shared Downloader (verified; failures returned, not raised)."""
        return self.downloader.fetch_many(list(records), Path(dest_dir), on_done=on_done)

    def close(self) -> None:
        self.downloader.close()
        self._obs._session.close()

    def __enter__(self) -> MastClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
