"""Shared fixtures for the MAST tests: a small sample (real FITS files) and a running replica.

The sample is a real ``SampleIndex`` of ``SampleItem`` s, so the replica serves it exactly as it
serves the built-in sample. Import the fixtures into a test module
with ``from mast_fixtures import mast_index, replica  # noqa: F401``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from astro_pipeline.archives.replica.faults import FaultPlan
from astro_pipeline.archives.replica.server import ReplicaServer
from astro_pipeline.config import DownloadSettings, Settings
from astro_pipeline.sample import SampleIndex, SampleItem

CREDIT, LICENSE = "NASA, ESA", "public domain"

# (obs_id, file, field, target, ra, dec, instrument, filter, exptime, date)
ROWS = [
    ("hst_m101_acs_f435w", "m101/jm101a_drz.fits", "m101", "M101", 210.80243, 54.34875, "ACS/WFC", "F435W", 900.0, "2006-02-10"),
    ("hst_m101_acs_f606w", "m101/jm101b_drz.fits", "m101", "M101", 210.81000, 54.35500, "ACS/WFC", "F606W", 1200.0, "2006-02-10"),
    ("hst_m101_acs_f814w", "m101/jm101c_drc.fits", "m101", "M101", 210.79500, 54.34200, "ACS/WFC", "F814W", 1500.0, "2006-02-11"),
    ("jm101x01q", "m101/jm101x01q_flt.fits", "m101", "M101", 210.80243, 54.34875, "ACS/WFC", "F814W", 500.0, "2006-02-11"),
    ("hst_m51_wfc3_f555w", "m51/im51a_drz.fits", "m51", "NGC5194", 202.46958, 47.19526, "WFC3/UVIS", "F555W", 700.0, "2012-05-01"),
    ("hst_m51_wfc3_f814w", "m51/im51b_drz.fits", "m51", "NGC5194", 202.47500, 47.20000, "WFC3/UVIS", "F814W", 400.0, "2012-05-01"),
    ("hst_hdf_wfpc2_f606w", "hdf/uhdf1_drz.fits", "hdf", "HDF", 189.20000, 62.21667, "WFPC2", "F606W", 5000.0, "1995-12-20"),
]


def _write_fits(path: Path, ra: float, dec: float, seed: int) -> None:
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    hdr = fits.Header()
    for k, v in {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec,
                 "CRPIX1": 32.5, "CRPIX2": 32.5, "CD1_1": -1.4e-5, "CD1_2": 0.0, "CD2_1": 0.0,
                 "CD2_2": 1.4e-5}.items():
        hdr[k] = v
    sci = fits.ImageHDU(rng.normal(1.0, 0.1, (64, 64)).astype(np.float32), header=hdr, name="SCI")
    wht = fits.ImageHDU(np.ones((64, 64), np.float32), header=hdr, name="WHT")
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), sci, wht]).writeto(path)


def build_index(root: Path) -> SampleIndex:
    items = []
    for n, (obs_id, rel, fld, target, ra, dec, inst, flt, exp, day) in enumerate(ROWS):
        path = root / "mast" / rel
        _write_fits(path, ra, dec, n)
        data = path.read_bytes()
        items.append(SampleItem(archive="mast", id=obs_id, path=f"mast/{rel}", kind="science", field=fld, ra=ra,
                                dec=dec, target=target, instrument=inst, filter=flt, exptime=exp, date_obs=day,
                                proposal_id=str(10000 + n), obsid=str(2_100_000_000 + n), title=f"{target} {flt}",
                                credit=CREDIT, license=LICENSE, release="", size=len(data),
                                sha256=hashlib.sha256(data).hexdigest()))
    items.append(SampleItem(archive="esahubble", id="heic0000a", path="esahubble/heic0000a.jpg", kind="color",
                            field="m101", ra=210.8, dec=54.35, target="M101", instrument="ACS/WFC", filter="",
                            exptime=0.0, date_obs="2006-02-28", proposal_id="", obsid="9", title="", credit=CREDIT,
                            license=LICENSE, release=""))
    return SampleIndex(root=root, items=items)


@pytest.fixture(scope="session")
def mast_index(tmp_path_factory: pytest.TempPathFactory) -> SampleIndex:
    return build_index(tmp_path_factory.mktemp("mast-sample"))


@pytest.fixture(scope="module")
def replica(mast_index: SampleIndex) -> Iterator[ReplicaServer]:
    """The replica on 127.0.0.1 serving ``mast_index``; ``replica.state.faults`` is an empty FaultPlan."""
    srv = ReplicaServer(mast_index.root, faults=FaultPlan(rules=[]))
    srv.state.extra["sample_index"] = mast_index
    with srv:
        yield srv


@pytest.fixture()
def faults(replica: ReplicaServer) -> Iterator[FaultPlan]:
    """The replica's fault plan, emptied before and after the test."""
    plan: FaultPlan = replica.state.faults
    plan.load("")
    yield plan
    plan.load("")


def client_settings(url: str, **download: object) -> Settings:
    """Settings pointing every archive at the replica, with fast retries for tests."""
    cfg = dict(retries=3, backoff_base_s=0.01, backoff_max_s=0.05, connect_timeout_s=2.0,
               read_timeout_s=3.0, min_interval_s=0.0, per_host_concurrency=2)
    cfg.update(download)
    return Settings(mast_url=url, mast_resolver_url=f"{url}/Santa-war/query", min_free_disk_bytes=0,
                    download=DownloadSettings(**cfg))
