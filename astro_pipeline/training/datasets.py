"""On-the-fly training pairs from colour images: random crops and flips, decoded once into RAM.

Colorizer pairs are (L/50-1, ab/110) in CIE Lab. SR pairs are (LR, HR) where LR is the HR crop
reduced 4x by Pillow's antialiased bicubic resize (torch's default bicubic does not antialias);
a fraction of each SR batch is degraded like archive data (blur, Poisson + Gaussian noise, mild
JPEG), and a fraction can be HST-like pairs of linear scenes on the sweep's stretch (``hst_pairs``).
All randomness comes from one ``numpy.random.Generator`` whose state is checkpointed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageFilter

from astro_pipeline.training.colorspace import srgb_to_lab
from astro_pipeline.training.sources import TrainingItem

if TYPE_CHECKING:
    from astro_pipeline.training.hst_pairs import HSTPairs

__all__ = [
    "ImageBank",
    "load_rgb_uint8",
    "downscale_bicubic",
    "degrade_lr",
    "ColorizerBatches",
    "SRBatches",
    "lab_pair",
]

_FITS_SUFFIXES = {".fits", ".fit", ".fts", ".gz"}


class TrainingDataError(ValueError):
    """A training image could not be read (message names the file)."""


def load_rgb_uint8(path: Path, *, kind: str = "color") -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 sRGB. Grey FITS frames go through the ingest stretch."""
    path = Path(path)
    if path.suffix.lower() in _FITS_SUFFIXES:
        from astro_pipeline.ingest.readers import read_frames  # lazy: only for grey archive frames
        from astro_pipeline.ingest.stretch import display_image
        from astro_pipeline.memory import default_pixel_limit

        frame = read_frames(path, max_image_pixels=default_pixel_limit())[0]
        disp, _ = display_image(frame)
        disp = np.asarray(disp, dtype=np.float32)
        if disp.ndim == 2:
            disp = np.repeat(disp[..., None], 3, axis=2)
        return (np.clip(disp, 0, 1) * 255 + 0.5).astype(np.uint8)
    try:
        with Image.open(path) as im:
            rgb = np.array(im.convert("L" if kind == "grey" else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise TrainingDataError(f"{path}: cannot read training image ({exc})") from exc
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    return np.ascontiguousarray(rgb)


@dataclass
class ImageBank:
    """Decoded training images held in RAM (uint8), with their kinds."""

    images: list[np.ndarray]
    kinds: list[str]

    @classmethod
    def load(cls, items: list[TrainingItem], *, min_size: int = 0) -> ImageBank:
        imgs, kinds = [], []
        for item in items:
            arr = load_rgb_uint8(item.path, kind=item.kind)
            if min(arr.shape[:2]) >= min_size:
                imgs.append(arr)
                kinds.append(item.kind)
        if not imgs:
            raise TrainingDataError(f"no training images of at least {min_size} px among {len(items)} items")
        return cls(imgs, kinds)

    def random_crop(self, rng: np.random.Generator, size: int, *, kinds: tuple[str, ...] = ("color", "grey")) -> np.ndarray:
        """A random crop (size x size x 3 uint8) with random flips and 90-degree rotation."""
        choices = [i for i, k in enumerate(self.kinds) if k in kinds]
        img = self.images[choices[int(rng.integers(len(choices)))]]
        h, w = img.shape[:2]
        y = int(rng.integers(0, h - size + 1))
        x = int(rng.integers(0, w - size + 1))
        crop = img[y : y + size, x : x + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.5:
            crop = crop[::-1]
        crop = np.rot90(crop, int(rng.integers(4)))
        return np.ascontiguousarray(crop)


def downscale_bicubic(hr: np.ndarray, scale: int = 4) -> np.ndarray:
    """Pillow's antialiased bicubic reduction of an (H, W, 3) uint8 image by ``scale``."""
    h, w = hr.shape[:2]
    return np.array(Image.fromarray(hr).resize((w // scale, h // scale), Image.Resampling.BICUBIC))


def degrade_lr(hr: np.ndarray, rng: np.random.Generator, *, scale: int = 4) -> np.ndarray:
    """Archive-like LR: Gaussian blur of the HR, 4x bicubic reduction, Poisson + Gaussian noise,
    then mild JPEG. Returns (h, w, 3) uint8."""
    im = Image.fromarray(hr)
    sigma = float(rng.uniform(0.3, 1.5))
    im = im.filter(ImageFilter.GaussianBlur(sigma))
    lr = np.asarray(im.resize((hr.shape[1] // scale, hr.shape[0] // scale), Image.Resampling.BICUBIC)).astype(np.float32) / 255
    photons = float(rng.uniform(80, 800))  # counts per unit display value
    lr = rng.poisson(lr * photons).astype(np.float32) / photons
    lr = lr + rng.normal(0, rng.uniform(0.002, 0.015), size=lr.shape).astype(np.float32)
    lr8 = (np.clip(lr, 0, 1) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(lr8).save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
    buf.seek(0)
    with Image.open(buf) as j:
        return np.array(j.convert("RGB"))


def _to_tensor(batch: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)


def _float_tensor(batch: list[np.ndarray]) -> torch.Tensor:
    """(N, 3, H, W) float32 from (H, W, 3) float arrays in [0, 1]."""
    return torch.from_numpy(np.stack(batch).astype(np.float32, copy=False)).permute(0, 3, 1, 2).contiguous()


def lab_pair(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,3,H,W) sRGB [0,1] -> (L/50-1 of shape (N,1,H,W), ab/110 of shape (N,2,H,W))."""
    lab = srgb_to_lab(rgb)
    return lab[:, :1] / 50.0 - 1.0, lab[:, 1:] / 110.0


class ColorizerBatches:
    """Infinite (L, ab) batches of random colour crops. Mostly-empty sky crops are down-weighted."""

    def __init__(self, bank: ImageBank, *, crop: int, batch_size: int, rng: np.random.Generator, empty_keep: float = 0.25) -> None:
        self.bank, self.crop, self.batch_size, self.rng, self.empty_keep = bank, crop, batch_size, rng, empty_keep

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        crops = []
        while len(crops) < self.batch_size:
            c = self.bank.random_crop(self.rng, self.crop, kinds=("color",))
            if c.mean() < 8 and c.std() < 4 and self.rng.random() > self.empty_keep:
                continue  # nearly black background teaches no colour
            crops.append(c)
        return lab_pair(_to_tensor(crops))


class SRBatches:
    """Infinite (LR, HR) batches in [0,1]: ``hst_fraction`` of each batch are HST-like pairs
    (:mod:`astro_pipeline.training.hst_pairs`), ``degrade_fraction`` get archive-like LR from the
    colour crops, the rest are clean bicubic reductions."""

    def __init__(self, bank: ImageBank, *, hr_crop: int, batch_size: int, rng: np.random.Generator, scale: int = 4,
                 degrade_fraction: float = 0.5, empty_keep: float = 0.25, hst: HSTPairs | None = None,
                 hst_fraction: float = 0.0) -> None:
        if hr_crop % scale:
            raise ValueError(f"hr_crop {hr_crop} must be a multiple of scale {scale}")
        if hst_fraction > 0 and hst is None:
            raise ValueError("hst_fraction > 0 needs an HSTPairs generator")
        if hst_fraction + degrade_fraction > 1:
            raise ValueError(f"hst_fraction {hst_fraction} + degrade_fraction {degrade_fraction} exceed the batch")
        self.bank, self.hr_crop, self.batch_size, self.rng = bank, hr_crop, batch_size, rng
        self.scale, self.degrade_fraction, self.empty_keep = scale, degrade_fraction, empty_keep
        self.hst, self.hst_fraction = hst, hst_fraction

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        n_hst = int(round(self.batch_size * self.hst_fraction))
        n_degraded = int(round(self.batch_size * self.degrade_fraction))
        lrs: list[np.ndarray] = []
        hrs: list[np.ndarray] = []
        for _ in range(n_hst):  # float32 display values already
            assert self.hst is not None
            lr, hr = self.hst.next(self.hr_crop)
            lrs.append(lr)
            hrs.append(hr)
        while len(hrs) < self.batch_size:
            hr8 = self.bank.random_crop(self.rng, self.hr_crop)
            if hr8.mean() < 8 and hr8.std() < 4 and self.rng.random() > self.empty_keep:
                continue
            degraded = len(hrs) < n_hst + n_degraded
            lr8 = degrade_lr(hr8, self.rng, scale=self.scale) if degraded else downscale_bicubic(hr8, self.scale)
            hrs.append(hr8.astype(np.float32) / 255.0)
            lrs.append(lr8.astype(np.float32) / 255.0)
        return _float_tensor(lrs), _float_tensor(hrs)
