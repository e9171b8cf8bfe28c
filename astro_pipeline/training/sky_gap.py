"""The sky and histogram gap: does the colorizer see in use what it was trained on?

The colorizer trained on the lightness (CIE L*) of ESA/Hubble release images, whose skies are
near black. In the sweep it sees the pipeline's own stretch (ZScale + asinh) of raw frames. This
module measures both sides the same way:

- the **sky level** of an image: the median L* of its sky pixels, the valid pixels that survive
  iterative 3-sigma clipping about the median (astropy ``sigma_clip``, MAD-based sigma), which
  removes sources and keeps the background, as global background estimators do;
- the **dark fraction**: the share of valid pixels darker than L* 10 (near-black sky);
- the **L* histogram** of an image's valid pixels (100 bins over 0..100, each image weighing the
  same in a set's histogram), compared between sets by the earth mover's (Wasserstein-1) distance
  in L* units and by the total-variation distance.

:func:`measure_sky_gap` compares frame sets (the sample's science frames, the shared FITS frames)
with the training images. ``prepare`` says how a frame becomes the colorizer's input; the default,
:func:`colorizer_input`, is what the pipeline does today, so a new input preparation can pass its
own and show the gap closed. :func:`default_sky_gap` is the report's measurement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astro_pipeline.ingest.frame import Frame

__all__ = [
    "LightnessImage",
    "LightnessSummary",
    "SkyGap",
    "FramePrep",
    "colorizer_input",
    "sky_lightness",
    "lightness_histogram",
    "histogram_distance",
    "summarise_lightness",
    "frames_lightness",
    "colour_images_lightness",
    "default_frame_sets",
    "training_image_paths",
    "measure_sky_gap",
    "default_sky_gap",
]

log = logging.getLogger(__name__)

BINS = 100
#: Pixels darker than this L* count as near-black in the dark fraction.
DARK_L = 10.0
#: Frames smaller than this on a side (test stubs, PSFs) say nothing about a sky.
MIN_SIDE = 64
#: Auxiliary images in the shared FITS folder that are not science frames.
_AUX_MARKERS = ("_rms", "_psf", "psf.")


@dataclass(frozen=True)
class LightnessImage:
    """One image as the colorizer receives it: L* (H, W) in [0, 100] and where it is valid."""

    label: str
    lightness: np.ndarray
    valid: np.ndarray | None = None

    def values(self) -> np.ndarray:
        L = np.asarray(self.lightness, dtype=np.float64)
        return L[self.valid] if self.valid is not None else L.ravel()


FramePrep = Callable[[Frame], LightnessImage]


def colorizer_input(frame: Frame) -> LightnessImage:
    """Today's colorizer input for a frame: the pipeline's display stretch (ZScale + asinh for
    science frames, unchanged for display images), then L* (as ``products`` does before colorizing).
    Pixels off the footprint (zero weight, NaN) are not counted: they are no sky."""
    from astro_pipeline.color import lightness, lightness_from_grey
    from astro_pipeline.ingest.stretch import display_image

    disp, _ = display_image(frame)
    L = lightness(disp) if disp.ndim == 3 else lightness_from_grey(disp)
    valid = None if frame.is_display else np.asarray(frame.mask, dtype=bool)
    return LightnessImage(frame.key, np.asarray(L, dtype=np.float32), valid)


def sky_lightness(image: LightnessImage, *, sigma: float = 3.0, maxiters: int = 10, max_values: int = 250_000) -> float:
    """Median L* of the sky pixels: valid pixels kept by iterative ``sigma`` clipping (median centre,
    MAD standard deviation). Evenly subsampled to ``max_values`` pixels for speed."""
    from astropy.stats import sigma_clip

    v = image.values()
    if v.size == 0:
        return float("nan")
    if v.size > max_values:
        v = v[:: int(np.ceil(v.size / max_values))]
    kept = sigma_clip(v, sigma=sigma, maxiters=maxiters, cenfunc="median", stdfunc="mad_std", masked=False)
    return float(np.median(kept)) if kept.size else float(np.median(v))


def lightness_histogram(image: LightnessImage, *, bins: int = BINS) -> np.ndarray:
    """Normalised histogram of an image's valid L* over [0, 100] (``bins`` bins, sums to 1)."""
    h, _ = np.histogram(np.clip(image.values(), 0, 100), bins=bins, range=(0.0, 100.0))
    total = h.sum()
    return h / total if total else h.astype(np.float64)


def histogram_distance(p: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """(earth mover's distance in L* units, total-variation distance in [0, 1]) of two L* histograms."""
    from scipy.stats import wasserstein_distance

    centres = (np.arange(len(p)) + 0.5) * (100.0 / len(p))
    return float(wasserstein_distance(centres, centres, p, q)), float(0.5 * np.abs(p - q).sum())


@dataclass
class LightnessSummary:
    """A set of images: per-image sky levels, their median and quartiles, and the set's histogram."""

    name: str
    n_images: int
    sky_median: float
    sky_q25: float
    sky_q75: float
    mean_lightness: float
    dark_fraction: float
    histogram: np.ndarray
    per_image: list[tuple[str, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def summarise_lightness(name: str, images: Iterable[LightnessImage], *, bins: int = BINS, skipped: list[str] | None = None) -> LightnessSummary:
    """Sky level of each image, and the set's histogram (mean of per-image histograms)."""
    skies: list[tuple[str, float]] = []
    hist = np.zeros(bins)
    means, dark = [], []
    for im in images:
        skies.append((im.label, sky_lightness(im)))
        hist += lightness_histogram(im, bins=bins)
        v = im.values()
        means.append(float(v.mean()) if v.size else float("nan"))
        dark.append(float((v < DARK_L).mean()) if v.size else float("nan"))
    if not skies:
        raise ValueError(f"{name}: no images to measure")
    s = np.array([v for _, v in skies])
    q25, med, q75 = np.nanpercentile(s, [25, 50, 75])
    return LightnessSummary(name=name, n_images=len(skies), sky_median=float(med), sky_q25=float(q25), sky_q75=float(q75),
                            mean_lightness=float(np.nanmean(means)), dark_fraction=float(np.nanmean(dark)), histogram=hist / len(skies), per_image=skies,
                            skipped=list(skipped or []))


@dataclass
class SkyGap:
    """Frame sets against the reference (training images): sky-level difference and histogram distances."""

    reference: LightnessSummary
    sets: list[LightnessSummary]
    prepare: str = "colorizer_input"

    def rows(self) -> list[dict[str, Any]]:
        """One row per set (the reference first): sky median, quartiles, and the gap to the reference."""
        out = []
        for s in [self.reference, *self.sets]:
            w1, tv = histogram_distance(s.histogram, self.reference.histogram)
            out.append({"set": s.name, "n_images": s.n_images, "sky_median": s.sky_median, "sky_q25": s.sky_q25,
                        "sky_q75": s.sky_q75, "mean_lightness": s.mean_lightness, "dark_fraction": s.dark_fraction,
                        "sky_gap": s.sky_median - self.reference.sky_median, "hist_emd": w1, "hist_tv": tv})
        return out

    def gap(self, name: str) -> float:
        """Median sky L* of set ``name`` minus the training images' (issue 23's target: |gap| <= 3)."""
        s = next(s for s in self.sets if s.name == name)
        return s.sky_median - self.reference.sky_median


def _is_aux(path: Path) -> bool:
    n = path.name.lower()
    return any(m in n for m in _AUX_MARKERS)


def frames_lightness(paths: Iterable[Path], *, prepare: FramePrep = colorizer_input, min_side: int = MIN_SIDE,
                     skipped: list[str] | None = None, max_image_pixels: int | None = None) -> Iterator[LightnessImage]:
    """Every frame of every file, prepared as the colorizer receives it. Unreadable files and
    frames under ``min_side`` px are skipped and named in ``skipped`` (never an exception).
    ``max_image_pixels`` defaults to the default memory budget's pixel limit on this machine."""
    from astro_pipeline.ingest.frame import IngestError
    from astro_pipeline.ingest.readers import read_frames
    from astro_pipeline.memory import default_pixel_limit

    if max_image_pixels is None:
        max_image_pixels = default_pixel_limit()

    for path in paths:
        try:
            frames = read_frames(path, max_image_pixels=max_image_pixels)
        except IngestError as exc:
            if skipped is not None:
                skipped.append(str(exc))
            continue
        for fr in frames:
            if min(fr.shape) < min_side:
                if skipped is not None:
                    skipped.append(f"{fr.key}: {fr.shape[0]}x{fr.shape[1]} px, under {min_side}")
                continue
            im = prepare(fr)
            yield LightnessImage(fr.key.replace(str(fr.source_path), Path(path).name), im.lightness, im.valid)


def colour_images_lightness(paths: Iterable[Path]) -> Iterator[LightnessImage]:
    """L* of colour training images, as the colorizer's training pairs take it (sRGB -> Lab L)."""
    from astro_pipeline.color import lightness
    from astro_pipeline.training.datasets import load_rgb_uint8

    for p in paths:
        rgb = load_rgb_uint8(Path(p))
        yield LightnessImage(Path(p).name, lightness(rgb.astype(np.float32) / np.float32(255.0)))


def default_frame_sets(*, cache_dir: Path | None = None, sample_root: Path | None = None, shared: Path | None = None) -> dict[str, list[Path]]:
    """The frames the report measures: the built-in sample's science frames of its fields (not the
    QA frames, which are deliberately broken; built under ``sample_root``, or reused from the cache
    ``cache_dir``), and the shared FITS frames (``../shared/data/fits``, auxiliary RMS and PSF images
    left out). A set whose folder is absent is left out."""
    from astro_pipeline.config import shared_dir
    from astro_pipeline.sample import build_sample

    if sample_root is None and cache_dir is None:
        raise TypeError("default_frame_sets needs the sample's root or the cache folder (Settings.cache_dir)")
    out: dict[str, list[Path]] = {}
    idx = build_sample(sample_root, cache_dir=cache_dir)
    sample = [idx.path_of(i) for i in idx.items if i.archive == "mast" and i.kind == "science" and not i.expected_flags]
    if sample:
        out["sample science frames"] = sample
    fits_dir = (shared or shared_dir()) / "data" / "fits"
    if fits_dir.is_dir():
        files = sorted(p for p in fits_dir.rglob("*") if p.is_file() and ".fit" in p.name.lower() and not _is_aux(p))
        if files:
            out["shared FITS frames"] = files
    return out


def training_image_paths(sources: Sequence[str] = ("hubble",), *, val_fraction: float = 0.12) -> list[Path]:
    """The colour images of the TRAINING releases (the split the models were trained on)."""
    from astro_pipeline.training.sources import collect_items, split_by_group

    train, _ = split_by_group(collect_items(list(sources)), val_fraction=val_fraction)
    return [i.path for i in train if i.kind == "color"]


def measure_sky_gap(frame_sets: Mapping[str, Sequence[Path]], reference: Sequence[Path], *,
                    prepare: FramePrep = colorizer_input, reference_name: str = "training images") -> SkyGap:
    """Sky level and L* histogram of each frame set, prepared by ``prepare``, against the reference
    colour images (their own L*, as the colorizer trained on them)."""
    ref = summarise_lightness(reference_name, colour_images_lightness(reference))
    sets = []
    for name, paths in frame_sets.items():
        skipped: list[str] = []
        images = list(frames_lightness(paths, prepare=prepare, skipped=skipped))
        if not images:
            log.warning("sky gap: no usable frames in %s (%s)", name, "; ".join(skipped))
            continue
        sets.append(summarise_lightness(name, images, skipped=skipped))
    return SkyGap(reference=ref, sets=sets, prepare=getattr(prepare, "__name__", str(prepare)))


def default_sky_gap(*, cache_dir: Path | None = None, sample_root: Path | None = None, sources: Sequence[str] = ("hubble",),
                    prepare: FramePrep = colorizer_input, shared: Path | None = None, val_fraction: float = 0.12) -> SkyGap:
    """The report's measurement: the sample and shared FITS frames against the training images.
    ``cache_dir`` (``Settings.cache_dir``) or ``sample_root``: where the built-in sample is."""
    return measure_sky_gap(default_frame_sets(cache_dir=cache_dir, sample_root=sample_root, shared=shared),
                           training_image_paths(sources, val_fraction=val_fraction), prepare=prepare)
