"""The built-in sample as a watch list: the regions and settings with which ``sweep --sample`` runs it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from astro_pipeline.archives.listing import ARCHIVES
from astro_pipeline.config import Region, Settings
from astro_pipeline.sample import SampleIndex, SampleItem
from astro_pipeline.sky import in_cone, mean_position, separation_deg

__all__ = ["SAMPLE_HLA_CUTOUT_PX", "sample_overrides", "sample_watch_list"]

#: The HLA lists ~50 datasets per sample field, all views of the MAST fields: the sample sweep
#: fetches them as fitscut cutouts around the field centre (as curators browsing the HLA do), which
#: keeps it within its 10-minute budget on 2 cores.
SAMPLE_HLA_CUTOUT_PX = 128


def sample_watch_list(index: SampleIndex, *, archives: Iterable[str] = ARCHIVES, margin_deg: float = 0.01,
                      match_science: bool = True) -> list[Region]:
    """One region per sample field, centre and radius covering its items.

    A field whose items all lie inside an earlier field's cone is merged into it (one listing of
    that sky, not two). With ``match_science`` each region asks for the instruments and filters of
    its field's science frames, as an operator's criteria would (HLA otherwise offers every band
    of every instrument on the field, which is most of the sample's work and little of its value).
    """
    regions: list[Region] = []
    covered: dict[str, list[SampleItem]] = {}
    for name, items in sorted(index.fields().items(), key=lambda kv: (-len(kv[1]), kv[0])):
        host = next((r for r in regions
                     if all(in_cone(float(i.ra), float(i.dec), r.ra, r.dec, r.radius_deg) for i in items)), None)
        if host is not None:
            covered[host.name].extend(items)
            continue
        ra, dec = mean_position((float(i.ra), float(i.dec)) for i in items)
        radius = max(separation_deg(ra, dec, float(i.ra), float(i.dec)) for i in items) + margin_deg
        regions.append(Region(name=name, ra=ra, dec=dec, radius_deg=round(max(radius, 0.02), 4),
                              archives=list(archives)))
        covered[name] = list(items)
    if match_science:
        for i, region in enumerate(regions):
            science = [it for it in covered[region.name] if it.kind == "science"]
            if science:
                regions[i] = region.model_copy(update={
                    "instruments": sorted({it.instrument for it in science if it.instrument}),
                    "filters": sorted({it.filter for it in science if it.filter}),
                })
    return sorted(regions, key=lambda r: r.name)


def sample_overrides(replica_url: str, settings: Settings) -> dict[str, Any]:
    """Settings overrides for sweeping the built-in sample: every archive at the replica, and HLA
    cutouts of :data:`SAMPLE_HLA_CUTOUT_PX` unless the settings already size them."""
    overrides: dict[str, Any] = {"mast_url": replica_url, "hla_url": replica_url, "esahubble_url": replica_url}
    if settings.hla_cutout_px is None:
        overrides["hla_cutout_px"] = SAMPLE_HLA_CUTOUT_PX
    return overrides
