"""A small demonstration catalog for the review page: real catalog rows, real image files.

Used by the review tests, the README screenshot and ``astro-pipeline review demo``. Frames
are crops of the Hubble Deep Field bundled with scikit-image (NASA, public domain): the grey
input is the crop's lightness (with added noise for "noisy" frames), the "colorized" product
is the original colour crop, and the "4x" product is a bicubic 4x enlargement. They are
stand-ins for pipeline products, labelled as such in their provenance; every row goes in
through the Catalog API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astro_pipeline.fileio import atomic_write, sha256_file

__all__ = ["DemoCatalog", "DemoFrame", "build_demo_catalog"]

#: (archive, obs id, title, target, instrument, filter, ra, dec, flags) of each demo frame, oldest first.
_FRAMES: tuple[tuple[str, str, str, str, str, str, float, float, tuple[tuple[str, float, float, str], ...]], ...] = (
    ("mast", "hst_demo_hdf_wfpc2_f606w", "Hubble Deep Field, WFPC2 F606W", "HDF", "WFPC2", "F606W",
     189.2058, 62.2161, (("noisy", 2.1, 3.0, "<"),)),
    ("mast", "hst_demo_m101_acs_wfc_f814w", "M101 outer disk, ACS/WFC F814W", "M101", "ACS/WFC", "F814W",
     210.8023, 54.3490, (("cosmic_rays", 0.0042, 0.001, ">"),)),
    ("hla", "hst_demo_m51_acs_f435w", "M51 spiral arm, ACS F435W", "NGC5194", "ACS/WFC", "F435W",
     202.4696, 47.1952, (("low_signal", 3.2, 5.0, "<"), ("noisy", 2.7, 3.0, "<"))),
    ("mast", "hst_demo_m101_wfc3_f555w", "M101 nucleus, WFC3/UVIS F555W", "M101", "WFC3/UVIS", "F555W",
     210.8030, 54.3510, (("saturated", 0.031, 0.01, ">"),)),
    ("esahubble", "heic_demo_01a", "Deep field <script>alert('x')</script> & friends", "HDF", "WFPC2", "",
     189.2100, 62.2200, (("mostly_blank", 0.63, 0.5, ">"),)),
    ("hla", "hst_demo_hdf_acs_f775w", "Hubble Deep Field, ACS F775W", "HDF", "ACS/WFC", "F775W",
     189.2000, 62.2100, (("noisy", 1.4, 3.0, "<"), ("cosmic_rays", 0.0021, 0.001, ">"))),
    ("mast", "hst_demo_hdf_acs_f850lp", "Hubble Deep Field, ACS F850LP (clean)", "HDF", "ACS/WFC", "F850LP",
     189.2040, 62.2150, ()),
)


@dataclass
class DemoFrame:
    """One demo frame and the catalog ids the tests need."""

    frame_id: int
    obs_id: str
    title: str
    archive: str
    flags: list[str]
    product_ids: dict[str, int] = field(default_factory=dict)  # operation -> product id


@dataclass
class DemoCatalog:
    """The catalog, its run id and frames (newest first, like the queue)."""

    catalog: Any
    url: str
    run_id: str
    frames: list[DemoFrame]
    root: Path


def _atomic_png(arr: np.ndarray, path: Path) -> str:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))
    return sha256_file(path)


def _crops(n: int, size: int, seed: int) -> list[np.ndarray]:
    from skimage import data

    field_rgb = data.hubble_deep_field()  # (872, 1000, 3) uint8, bundled with scikit-image
    rng = np.random.default_rng(seed)
    h, w = field_rgb.shape[:2]
    out = []
    for _ in range(n):
        y, x = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
        out.append(np.ascontiguousarray(field_rgb[y:y + size, x:x + size]))
    return out


def build_demo_catalog(root: Path, *, n: int | None = None, size: int = 160, seed: int = 4,
                       settings: Any = None) -> DemoCatalog:
    """Write demo images under ``root`` and record them in a SQLite catalog at ``root/catalog.sqlite``."""
    from PIL import Image

    from astro_pipeline.catalog import Catalog

    root = Path(root)
    specs = _FRAMES[: n or len(_FRAMES)]
    url = f"sqlite:///{(root / 'catalog.sqlite').resolve()}"
    catalog = Catalog(url, settings=settings)
    run_id = catalog.start_run("review-demo", {"frames": len(specs), "seed": seed})
    rng = np.random.default_rng(seed)
    frames: list[DemoFrame] = []
    for (archive, obs_id, title, target, instrument, filt, ra, dec, flags), rgb in zip(
        specs, _crops(len(specs), size, seed), strict=True
    ):
        grey = (0.2126 * rgb[..., 0] + 0.7152 * rgb[..., 1] + 0.0722 * rgb[..., 2]).astype(np.float32)
        if any(f[0] == "noisy" for f in flags):
            grey = grey + rng.normal(0.0, 22.0, grey.shape).astype(np.float32)
        grey_u8 = np.clip(grey, 0, 255).astype(np.uint8)
        big = np.asarray(Image.fromarray(rgb).resize((size * 4, size * 4), Image.Resampling.BICUBIC))
        raw = root / "raw" / archive / f"{obs_id}.png"
        raw_sha = _atomic_png(grey_u8, raw)
        prod_dir = root / "products" / obs_id
        files = {
            "colorize": (prod_dir / f"{obs_id}_color.png", rgb),
            "enhance": (prod_dir / f"{obs_id}_color_x4.png", big),
        }
        record = _record(archive=archive, obs_id=obs_id, title=title, target=target, instrument=instrument,
                         filt=filt, ra=ra, dec=dec, raw=raw)
        frame_id, product_ids = _record_in_catalog(
            catalog, run_id=run_id, record=record, raw=raw, raw_sha=raw_sha, flags=flags,
            ra=ra, dec=dec, files={op: (p, _atomic_png(arr, p)) for op, (p, arr) in files.items()},
        )
        frames.append(DemoFrame(frame_id=frame_id, obs_id=obs_id, title=title, archive=archive,
                                flags=[f[0] for f in flags], product_ids=product_ids))
    catalog.finish_run(run_id, "ok", {"frames": len(frames)})
    frames.reverse()  # the queue shows the newest first
    return DemoCatalog(catalog=catalog, url=url, run_id=run_id, frames=frames, root=root)


def _record(*, archive: str, obs_id: str, title: str, target: str, instrument: str, filt: str,
            ra: float, dec: float, raw: Path) -> Any:
    from astro_pipeline.archives.records import ArchiveRecord

    return ArchiveRecord(
        archive=archive, id=f"demo:{obs_id}", obs_id=obs_id, title=title, target=target, ra=ra, dec=dec,
        instrument=instrument, filters=[filt] if filt else [], exposure_s=1200.0, date_obs="2004-03-09",
        url=f"https://demo.invalid/{archive}/{obs_id}.png", filename=raw.name,
        credit="NASA, ESA, and the Hubble Deep Field team (demo crop via scikit-image)", license="public domain",
        kind="science",
    )


def _record_in_catalog(catalog: Any, *, run_id: str, record: Any, raw: Path, raw_sha: str,
                       flags: tuple[tuple[str, float, float, str], ...], ra: float, dec: float,
                       files: dict[str, tuple[Path, str]]) -> tuple[int, dict[str, int]]:
    """Record the archive record, the input file and one product per operation (with the frame's flags)."""
    from datetime import UTC, datetime

    from astro_pipeline.archives.records import DownloadedFile
    from astro_pipeline.catalog import FrameFilter
    from astro_pipeline.ingest.frame import Flag, QualityReport, StretchParams
    from astro_pipeline.products.types import FileKind, ModelRecord, Operation, Product, ProductFile, ProductStatus

    catalog.upsert_record(record)
    catalog.upsert_file(DownloadedFile(record=record, path=raw, size=raw.stat().st_size, sha256=raw_sha,
                                       verified_against="none", downloaded_at=datetime.now(UTC)))
    quality = QualityReport(metrics={"snr": next((v for n, v, _, _ in flags if n == "noisy"), 12.5)},
                            flags=[Flag(name=name, value=value, threshold=thr, comparison=cmp,
                                        message=f"{name}: {value:g} {cmp} {thr:g}") for name, value, thr, cmp in flags])
    product_ids: dict[str, int] = {}
    for operation, (path, sha) in files.items():
        product = Product(
            run_id=run_id, source_path=str(raw), source_sha256=raw_sha, hdu=None, plane=None,
            frame_key=str(raw), operation=Operation(operation), status=ProductStatus.OK,
            provenance={"ra": ra, "dec": dec, "demo": "stand-in product from a scikit-image crop"},
            quality=quality, stretch=StretchParams(method="none", vmin=0.0, vmax=1.0),
            models=(ModelRecord(name=f"demo-{operation}", version="0", sha256="0" * 64, arch="demo"),),
            params={"demo": True}, tile_count=1, files={FileKind.PNG: ProductFile(path=path, sha256=sha)},
        )
        product_ids[operation] = int(catalog.record_product(product))
    frame_id = next(v.frame_id for v in catalog.flagged_frames(FrameFilter(flagged_only=False)) if v.sha256 == raw_sha)
    return int(frame_id), product_ids
