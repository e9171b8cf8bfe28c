"""What each archive offers for a sky region: one dispatch over the MAST, HLA and ESA/Hubble clients.

MAST answers a cone query, the HLA a position search; ESA/Hubble has no position query, so its
whole image list is one listing (``region=None``) that the planner splits by region. A region's
instrument/filter criteria apply to the science frames of every archive.
"""

from __future__ import annotations

from astro_pipeline.archives.records import ArchiveRecord
from astro_pipeline.config import Region, Settings
from astro_pipeline.sky import in_cone

__all__ = ["ARCHIVES", "WHOLE_LIST_ARCHIVES", "in_region", "is_archive_failure", "is_retryable", "list_archive",
           "matches_criteria"]

ARCHIVES: tuple[str, ...] = ("mast", "hla", "esahubble")

#: Archives without a position query: listed once per run, whole.
WHOLE_LIST_ARCHIVES: frozenset[str] = frozenset({"esahubble"})


def list_archive(archive: str, region: Region | None, settings: Settings) -> list[ArchiveRecord]:
    """What ``archive`` offers for ``region`` (None: its whole list), matching the region's criteria."""
    if archive == "mast":
        from astro_pipeline.archives.mast import MastClient

        assert region is not None, "MAST is listed per region"
        with MastClient(settings) as client:
            records = client.query_region(region.ra, region.dec, region.radius_deg,
                                          instruments=tuple(region.instruments), filters=tuple(region.filters))
    elif archive == "hla":
        from astro_pipeline.archives.hla import HlaClient

        assert region is not None, "the HLA is listed per region"
        records = HlaClient(settings).search(region.ra, region.dec, region.radius_deg, cutout_px=settings.hla_cutout_px)
    elif archive == "esahubble":
        from astro_pipeline.archives.esahubble import EsaHubbleClient

        records = EsaHubbleClient(settings).list_images()
        if region is not None:
            records = [r for r in records if in_region(r, region)]
    else:
        raise ValueError(f"unknown archive {archive!r}; expected one of {', '.join(ARCHIVES)}")
    return [r for r in records if region is None or matches_criteria(r, region)]


def matches_criteria(record: ArchiveRecord, region: Region) -> bool:
    """The region's instrument/filter criteria, applied to science frames of any archive.

    Instruments match by prefix (``ACS`` matches ``ACS/WFC``), filters by name, both ignoring
    case. Colour release images are composites of several filters, so criteria never drop them.
    """
    if record.kind == "color":
        return True
    if region.instruments:
        inst = (record.instrument or "").upper()
        if not any(inst.startswith(i.upper()) for i in region.instruments):
            return False
    if region.filters:
        wanted = {f.upper() for f in region.filters}
        if not wanted & {f.upper() for f in record.filters}:
            return False
    return True


def in_region(record: ArchiveRecord, region: Region) -> bool:
    """True when the record's position lies inside the region's cone (or it has no position)."""
    if record.ra is None or record.dec is None:
        return True
    return in_cone(record.ra, record.dec, region.ra, region.dec, region.radius_deg)


def is_archive_failure(exc: BaseException) -> bool:
    """An archive that could not be listed (a sweep reports it and goes on), not a bug in this code."""
    from astro_pipeline.archives.browser import BrowserNotFoundError, ScrapeError
    from astro_pipeline.archives.download import DownloadError
    from astro_pipeline.archives.mast import MastError

    return isinstance(exc, MastError | ScrapeError | BrowserNotFoundError | DownloadError)


def is_retryable(exc: BaseException) -> bool:
    """A listing failure worth another attempt: a page that stalled or changed mid-walk.

    The scrapers do not retry a page themselves; the MAST client already retried its queries
    (a ``MastError`` is final), and a missing browser or a bad argument will not mend.
    """
    from astro_pipeline.archives.browser import ScrapeError

    return isinstance(exc, ScrapeError)
