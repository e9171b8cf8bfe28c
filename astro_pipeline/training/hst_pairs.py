"""HST-like super-resolution training pairs (issue 22): linear scenes degraded the way archive data
and the science evaluation are, then shown on the sweep's display stretch.

A pair is made from a linear high-resolution scene:

1. cosmic-ray hits are added to the scene (short streaks a few sky sigma to hundreds above the sky),
   so input and truth agree about them and the model learns to keep sharp features, not invent them;
   point sources of the scene's PSF are added at S/N 3 to 100 in the low-resolution input (the
   science evaluation's range, equal numbers per bin), so faint PSF-shaped bumps are learned as
   signal to keep at their flux, not as noise to smooth away;
2. the scene is block-averaged 4x (what a coarser detector pixel integrates; the science
   evaluation degrades the same way), then Poisson plus read noise is added;
3. the sweep's display stretch (ZScale + asinh, :func:`astro_pipeline.ingest.stretch.compute_stretch`)
   is computed on the noisy low-resolution region and applied to both images.

Scenes come from two places. ESA/Hubble colour images of training releases give noise-free scenes:
their grey level is taken back through the asinh stretch to linear flux and blurred by a PSF.
Held-in linear frames (the sample's synthetic ACS fields that the science evaluation does not use)
give scenes with real per-pixel noise; their low-resolution noise is brought back to the frame's own
per-pixel sky sigma, as the science evaluation does. Frames of the fields the evaluation measures on
are refused (:func:`astro_pipeline.training.source_eval.is_held_out`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from astro_pipeline.ingest.frame import Frame
from astro_pipeline.ingest.stretch import DEFAULT_ASINH_A, apply_stretch, compute_stretch
from astro_pipeline.sample import SampleIndex
from astro_pipeline.training.source_eval import MoffatPSF, block_mean, nea_at

__all__ = [
    "HSTPairConfig",
    "LinearScene",
    "HSTPairs",
    "add_cosmic_rays",
    "add_glow",
    "add_point_sources",
    "display_to_linear",
    "held_in_sample_frames",
    "hst_pair",
    "keep_block_noise",
    "load_linear_scene",
]


#: How a noise-keeping target upsamples the input's noise (see :func:`keep_block_noise`).
KEPT_NOISE = ("exact", "bicubic")


@dataclass(frozen=True)
class HSTPairConfig:
    """Ranges the degradation draws from (plain data; it goes into the training-data hash)."""

    scale: int = 4
    region_lr: int = 96  # the stretch is computed on a region this many LR pixels wide (as the sweep does on whole frames)
    psf_fwhm_hr: tuple[float, float] = (0.0, 2.5)  # extra Gaussian PSF for ESA scenes, HR px
    read_noise: tuple[float, float] = (0.002, 0.03)  # ESA scenes: LR sky sigma in linear units (peak ~1), log-uniform
    photons: tuple[float, float] = (300.0, 30000.0)  # ESA scenes: counts per unit linear flux, log-uniform
    frame_sigma: tuple[float, float] = (0.8, 1.3)  # frame scenes: LR sky sigma / the frame's own per-pixel sigma
    cr_fraction: float = 0.5  # share of pairs with cosmic-ray hits
    cr_per_kpx: tuple[float, float] = (0.2, 3.0)  # hits per 1000 LR pixels, when present
    cr_snr: tuple[float, float] = (5.0, 300.0)  # LR peak of a hit in LR sky sigma, log-uniform
    frame_share: float = 0.5  # share of pairs drawn from linear frames (when there are any)
    point_fraction: float = 0.0  # share of pairs with injected point sources
    point_per_kpx: tuple[float, float] = (1.0, 4.0)  # sources per 1000 LR pixels, when present (the evaluation: ~2.4)
    point_snr_edges: tuple[float, ...] = (3.0, 5.0, 10.0, 20.0, 50.0, 100.0)  # LR optimal S/N bins, equal counts
    point_fwhm_hr: tuple[float, float] = (1.5, 4.0)  # Moffat FWHM for ESA scenes, HR px
    point_beta: tuple[float, float] = (2.0, 4.5)  # Moffat beta for ESA scenes
    glow_fraction: float = 0.0  # share of pairs with a broad bright glow (widens the ZScale range many sky sigma)
    glow_snr: tuple[float, float] = (10.0, 300.0)  # glow peak in LR sky sigma, log-uniform
    glow_fwhm_hr: tuple[float, float] = (64.0, 400.0)  # glow FWHM, HR px
    keep_noise_fraction: float = 0.0  # share of pairs whose target keeps the input's noise at the block scale
    kept_noise: str = "exact"  # how the kept noise is upsampled: exact block means, or one bicubic pass (bicubic's spectrum)

    def __post_init__(self) -> None:
        if self.kept_noise not in KEPT_NOISE:
            raise ValueError(f"kept_noise must be one of {', '.join(KEPT_NOISE)}, got {self.kept_noise!r}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class LinearScene:
    """One linear high-resolution scene and, for real frames, its per-pixel sky sigma."""

    data: np.ndarray  # (H, W) float32, all finite
    name: str
    sigma: float | None = None  # per-pixel sky sigma of a noisy frame; None for a noise-free scene
    psf: MoffatPSF | None = None  # the frame's PSF (injected point sources use it); None: drawn per pair


def display_to_linear(display: np.ndarray, *, asinh_a: float = DEFAULT_ASINH_A) -> np.ndarray:
    """Undo the pipeline's asinh display stretch: display value in [0, 1] -> linear flux in [0, 1]."""
    v = np.clip(np.asarray(display, dtype=np.float32), 0.0, 1.0)
    return (asinh_a * np.sinh(v * math.asinh(1.0 / asinh_a))).astype(np.float32)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def add_cosmic_rays(image: np.ndarray, rng: np.random.Generator, *, n: int, lr_sigma: float, scale: int,
                    snr: tuple[float, float]) -> np.ndarray:
    """``n`` short streaks (1-6 HR px, random angle) whose block-averaged peak is ``snr`` x ``lr_sigma``."""
    out = image.copy()
    h, w = out.shape
    for _ in range(n):
        length = int(rng.integers(1, 7))
        ang = rng.uniform(0, math.pi)
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        ts = np.arange(length)
        ys = np.clip((y0 + ts * math.sin(ang)).astype(int), 0, h - 1)
        xs = np.clip((x0 + ts * math.cos(ang)).astype(int), 0, w - 1)
        # a hit of k HR pixels in one LR block raises the block mean by amp * k / scale^2
        amp = _log_uniform(rng, *snr) * lr_sigma * scale * scale / max(1, min(length, scale))
        out[ys, xs] += np.float32(amp)
    return out


def add_glow(image: np.ndarray, rng: np.random.Generator, *, lr_sigma: float, snr: tuple[float, float],
             fwhm: tuple[float, float]) -> np.ndarray:
    """A broad Gaussian glow (nebula, galaxy halo) peaking at ``snr`` x ``lr_sigma`` somewhere in the
    image: the sweep's ZScale range then spans tens of sky sigma, so faint sources and wings are small
    steps in display units, as in frames with bright extended emission."""
    h, w = image.shape
    y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
    sig = float(rng.uniform(*fwhm)) / 2.3548
    yy, xx = np.ogrid[:h, :w]
    glow = np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * sig * sig))
    return (image + _log_uniform(rng, *snr) * lr_sigma * glow).astype(np.float32)


def add_point_sources(image: np.ndarray, rng: np.random.Generator, *, psf: MoffatPSF, n: int, lr_sigma: float,
                      scale: int, snr_edges: tuple[float, ...]) -> np.ndarray:
    """``n`` point sources of ``psf`` at random sub-pixel positions, their fluxes log-uniform in a
    bin of ``snr_edges`` drawn uniformly: the low-resolution optimal S/N ``F / (scale^2 sigma sqrt(NEA))``
    of the science evaluation (NEA taken once, at a random sub-pixel phase)."""
    h, w = image.shape
    bins = rng.integers(0, len(snr_edges) - 1, n)
    lo, hi = np.asarray(snr_edges[:-1])[bins], np.asarray(snr_edges[1:])[bins]
    snr = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    c = 16 * scale
    nea = nea_at(psf, scale, (2 * c, 2 * c), c + rng.uniform(0, scale), c + rng.uniform(0, scale))
    flux = snr * scale * scale * lr_sigma * math.sqrt(nea)
    xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
    return (image + psf.render(image.shape, xs, ys, flux, oversample=3)).astype(np.float32)


def keep_block_noise(hr: np.ndarray, lr: np.ndarray, scale: int, *, upsample: str = "exact") -> np.ndarray:
    """``hr`` plus the input's noise ``lr - block_mean(hr)``, upsampled (linear units).

    ``exact``: iterated bicubic back-projection of the residual, then an exact per-block shift, so
    every ``scale x scale`` block mean equals ``lr``. ``bicubic``: one bicubic pass, so the kept noise
    has a bicubic upsampling's spectrum (block means close to ``lr`` but not exact): the exact mode's
    iterations sharpen the noise, and a model that learns to reproduce that roughness sharpens sky
    noise into peaks a detector takes for sources. Either way a model trained on such targets adds
    detail without denoising, so faint sources keep their flux (a noise-free target teaches a
    denoiser, which pulls faint sources towards the sky)."""
    import torch
    from torch.nn import functional as F

    from astro_pipeline.models.superres import flux_conserving

    if upsample not in KEPT_NOISE:
        raise ValueError(f"upsample must be one of {', '.join(KEPT_NOISE)}, got {upsample!r}")
    x = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32))[None, None]
    y = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))[None, None]
    for _ in range(4 if upsample == "exact" else 1):  # each pass removes most of the block-mean error bicubic leaves
        x = x + F.interpolate(y - F.avg_pool2d(x, scale), scale_factor=scale, mode="bicubic", align_corners=False)
    if upsample == "exact":
        x = flux_conserving(x, y, scale)
    return x[0, 0].numpy().astype(np.float32)


def hst_pair(region: np.ndarray, rng: np.random.Generator, cfg: HSTPairConfig, *,
             frame_sigma: float | None = None, psf: MoffatPSF | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(LR display (h, w), HR display (4h, 4w)) float32 in [0, 1] from a finite linear ``region``.

    ``frame_sigma`` is the region's per-pixel sky sigma when it is a real (noisy) frame; otherwise the
    region is a noise-free scene: it gets a PSF, and noise is drawn from the config's ranges.
    Injected point sources (``cfg.point_fraction`` of pairs) use ``psf``, else a Moffat drawn from
    the config's ranges.
    """
    s = cfg.scale
    hr = np.asarray(region, dtype=np.float32)
    if hr.shape[0] % s or hr.shape[1] % s:
        raise ValueError(f"region {hr.shape} is not a multiple of the scale {s}")
    if frame_sigma is None:
        fwhm = rng.uniform(*cfg.psf_fwhm_hr)
        if fwhm > 0.3:
            hr = gaussian_filter(hr, fwhm / 2.3548, mode="reflect").astype(np.float32)
        lr_sigma = _log_uniform(rng, *cfg.read_noise)
        photons = _log_uniform(rng, *cfg.photons)
    else:
        lr_sigma = float(frame_sigma) * rng.uniform(*cfg.frame_sigma)
        photons = 0.0  # the frame already carries its own shot noise
    if cfg.glow_fraction > 0 and rng.random() < cfg.glow_fraction:
        hr = add_glow(hr, rng, lr_sigma=lr_sigma, snr=cfg.glow_snr, fwhm=cfg.glow_fwhm_hr)
    if rng.random() < cfg.cr_fraction:
        rate = rng.uniform(*cfg.cr_per_kpx) / 1000.0
        n = int(rng.poisson(rate * hr.size / (s * s)))
        if n:
            hr = add_cosmic_rays(hr, rng, n=n, lr_sigma=lr_sigma, scale=s, snr=cfg.cr_snr)
    if cfg.point_fraction > 0 and rng.random() < cfg.point_fraction:
        n = int(rng.poisson(rng.uniform(*cfg.point_per_kpx) / 1000.0 * hr.size / (s * s)))
        if n:
            src_psf = psf or MoffatPSF(fwhm=float(rng.uniform(*cfg.point_fwhm_hr)), beta=float(rng.uniform(*cfg.point_beta)))
            hr = add_point_sources(hr, rng, psf=src_psf, n=n, lr_sigma=lr_sigma, scale=s, snr_edges=cfg.point_snr_edges)
    lr = block_mean(hr, s).astype(np.float32)
    if frame_sigma is None:
        shot = np.sqrt(np.clip(lr, 0, None) / photons).astype(np.float32)
        lr = lr + rng.standard_normal(lr.shape, dtype=np.float32) * np.sqrt(shot**2 + lr_sigma**2).astype(np.float32)
    else:
        have = float(frame_sigma) / s  # block-averaging white noise divides its sigma by the scale
        add = math.sqrt(max(lr_sigma**2 - have**2, 0.0))
        lr = lr + rng.standard_normal(lr.shape, dtype=np.float32) * np.float32(add)
    if cfg.keep_noise_fraction > 0 and rng.random() < cfg.keep_noise_fraction:
        hr = keep_block_noise(hr, lr, s, upsample=cfg.kept_noise)
    frame = Frame(data=lr, mask=np.ones(lr.shape, bool), source_path=Path("hst-pair"), source_sha256="", format="fits")
    params = compute_stretch(frame, "zscale+asinh")
    lr_disp = np.clip(apply_stretch(lr, params), 0.0, 1.0).astype(np.float32)
    hr_disp = np.clip(apply_stretch(hr, params), 0.0, 1.0).astype(np.float32)
    return lr_disp, hr_disp


def load_linear_scene(path: str | Path, *, name: str | None = None) -> LinearScene:
    """The largest science frame of a FITS file (the pipeline's reader), with its sky sigma and PSF
    (a Moffat fitted to its isolated stars, as the science evaluation does)."""
    from astro_pipeline.memory import default_pixel_limit
    from astro_pipeline.training.source_eval import _valid_crop, fit_psf, largest_science_frame, sky_sigma

    path = Path(path)
    try:
        fr = largest_science_frame(path, max_image_pixels=default_pixel_limit())
    except ValueError as exc:
        raise ValueError(f"{exc} for HST-like training pairs") from exc
    ok = np.asarray(fr.mask, bool) & np.isfinite(fr.data)
    ys, xs = _valid_crop(ok, 4, None)  # the largest centred window of valid pixels
    data = np.ascontiguousarray(fr.data[ys, xs], dtype=np.float32)
    if min(data.shape) < 64 or not np.isfinite(data).all():
        raise ValueError(f"{path}: valid area {data.shape} too small for HST-like training pairs")
    sig = sky_sigma(data)
    if not sig > 0:
        raise ValueError(f"{path}: no measurable sky noise")
    return LinearScene(data=data, name=name or path.name, sigma=sig, psf=fit_psf(data, sigma=sig))


def held_in_sample_frames(idx: SampleIndex) -> list[Path]:
    """Science frames of the sample's synthetic fields that the science evaluation does not use
    (every band of its fields is refused), excluding the deliberately bad QA frames."""
    from astro_pipeline.training.source_eval import is_held_out

    out = []
    for item in idx.items:
        if item.kind != "science" or item.field in ("qa", None) or item.expected_flags:
            continue
        p = idx.root / item.path
        if is_held_out(p, field=item.field):
            continue
        out.append(p)
    return sorted(out)


class HSTPairs:
    """Draws HST-like pairs from a bank of noise-free ESA scenes and noisy held-in linear frames."""

    def __init__(self, *, esa_images: list[np.ndarray], frames: list[LinearScene], cfg: HSTPairConfig,
                 rng: np.random.Generator) -> None:
        if not esa_images and not frames:
            raise ValueError("HST-like pairs need at least one ESA image or linear frame")
        self.esa = esa_images  # (H, W, 3) uint8 display images
        self.frames = frames
        self.cfg, self.rng = cfg, rng

    def _region(self, arr: np.ndarray, hr_crop: int) -> tuple[int, int, int] | None:
        """(y, x, size): a random square of the region size, or of the whole (smaller) image."""
        s = self.cfg.scale
        h, w = arr.shape[:2]
        size = min(self.cfg.region_lr * s, (min(h, w) // s) * s)
        if size < hr_crop:
            return None
        return int(self.rng.integers(0, h - size + 1)), int(self.rng.integers(0, w - size + 1)), size

    def next(self, hr_crop: int) -> tuple[np.ndarray, np.ndarray]:
        """One (LR (h, w, 3), HR (H, W, 3)) float32 pair in [0, 1] of an ``hr_crop`` px HR crop:
        one band, replicated to 3 planes."""
        cfg, s = self.cfg, self.cfg.scale
        for _ in range(50):
            use_frame = bool(self.frames) and (not self.esa or self.rng.random() < cfg.frame_share)
            if use_frame:
                sc = self.frames[int(self.rng.integers(len(self.frames)))]
                pos = self._region(sc.data, hr_crop)
                if pos is None:
                    continue
                y, x, size = pos
                region = sc.data[y : y + size, x : x + size]
                if not np.isfinite(region).all():
                    continue
                sigma, psf = sc.sigma, sc.psf
            else:
                img = self.esa[int(self.rng.integers(len(self.esa)))]
                pos = self._region(img, hr_crop)
                if pos is None:
                    continue
                y, x, size = pos
                grey = img[y : y + size, x : x + size].mean(axis=2) / 255.0
                region = display_to_linear(grey)
                sigma, psf = None, None
            region = np.rot90(region, int(self.rng.integers(4)))
            if self.rng.random() < 0.5:
                region = region[:, ::-1]
            lr, hr = hst_pair(np.ascontiguousarray(region), self.rng, cfg, frame_sigma=sigma, psf=psf)
            # the training crop: an aligned window of the region whose stretch was computed as a whole
            c = hr_crop // s
            y = int(self.rng.integers(0, lr.shape[0] - c + 1))
            x = int(self.rng.integers(0, lr.shape[1] - c + 1))
            lr_c = lr[y : y + c, x : x + c]
            hr_c = hr[y * s : (y + c) * s, x * s : (x + c) * s]
            return np.repeat(lr_c[..., None], 3, axis=2), np.repeat(hr_c[..., None], 3, axis=2)
        raise ValueError(f"no scene of at least {hr_crop} px with finite pixels after 50 draws")
