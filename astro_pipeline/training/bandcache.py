"""Feature cache for the band-aware colour model: augmented crops with their frozen VGG16 maps.

The encoder is frozen, so its relu3_3/relu4_3 maps are computed once per augmented crop and stored
(fp16 ``.npy`` memmaps) beside the crop itself; training then runs only the small head. Each
*variant* of a training image is one draw of: a dihedral transform (flips, 90-degree rotations), a
small gamma and brightness change, and a colour case (lightness alone, one slot given, or two
given). A variant yields ``crops_per_variant`` random 256 px crops (mostly-empty sky is
down-weighted as elsewhere) and one frame context: the pooled encoder maps and plane statistics of
the whole augmented image seen at the engine's context resolution (long side <= 512 px).

A second, un-augmented *dev* set holds crops of a few TRAINING releases kept out of fitting, with
maps for every case, for choosing recipes and the read-out temperature; the validation releases of
``split_by_group`` never enter this module. Building is resumable: variants are written in order and
``progress.json`` records how many are done.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from astro_pipeline.models.bandcolor import BandColorizer
from astro_pipeline.training.colorspace import srgb_to_lab
from astro_pipeline.training.datasets import load_rgb_uint8
from astro_pipeline.training.sources import TrainingItem, collect_items, split_by_group

__all__ = [
    "CASES",
    "CASE_MASKS",
    "CacheSpec",
    "build_cache",
    "build_dev_set",
    "grey_from_rgb",
    "case_planes",
    "context_view",
    "dev_split",
    "load_encoder",
    "open_cache",
]

#: The colour cases: name -> presence mask over (R, G, B).
CASE_MASKS: dict[str, tuple[int, int, int]] = {
    "L": (0, 0, 0),
    "R": (1, 0, 0),
    "G": (0, 1, 0),
    "B": (0, 0, 1),
    "GR": (1, 1, 0),
    "RB": (1, 0, 1),
    "BG": (0, 1, 1),
}
CASES = tuple(CASE_MASKS)
#: Sampling weights of the cases in training variants.
CASE_WEIGHTS = {"L": 0.35, "R": 0.25 / 3, "G": 0.25 / 3, "B": 0.25 / 3, "GR": 0.4 / 3, "RB": 0.4 / 3, "BG": 0.4 / 3}
CONTEXT_MAX_SIDE = 512


@dataclass(frozen=True)
class CacheSpec:
    """What a cache holds (written to ``spec.json``; a cache built with another spec is refused)."""

    crop: int = 256
    variants_per_image: int = 8
    crops_per_variant: int = 10
    gamma_range: tuple[float, float] = (0.8, 1.25)
    gain_range: tuple[float, float] = (0.85, 1.15)
    empty_keep: float = 0.25
    dev_fraction: float = 0.1
    dev_crops_per_image: int = 4
    seed: int = 0


def grey_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """sRGB (H, W, 3) in [0, 1] -> the display grey with the same CIE L* (sRGB-encoded luminance)."""
    from astro_pipeline.color import linear_to_srgb, srgb_to_linear

    lin = srgb_to_linear(rgb.astype(np.float32))
    y = lin @ np.array([0.2126729, 0.7151522, 0.0721750], dtype=np.float32)
    return np.clip(linear_to_srgb(y.astype(np.float32)), 0.0, 1.0).astype(np.float32)


def case_planes(rgb: np.ndarray, case: str) -> np.ndarray:
    """(4, H, W) model planes for ``case``: R, G, B where given (else 0) and the grey (L as grey)."""
    mask = np.asarray(CASE_MASKS[case], dtype=np.float32)
    chw = np.moveaxis(rgb.astype(np.float32), -1, 0) * mask[:, None, None]
    grey = grey_from_rgb(rgb) if mask.sum() == 0 else chw.sum(0) / mask.sum()
    return np.concatenate([chw, grey[None]], 0).astype(np.float32)


def context_view(planes: torch.Tensor, max_side: int = CONTEXT_MAX_SIDE) -> torch.Tensor:
    """The engine's downsampled view of a whole frame: (N, C, H, W) area-averaged so the long side <= max_side."""
    h, w = planes.shape[-2:]
    f = int(np.ceil(max(h, w) / max_side))
    if f <= 1:
        return planes
    return F.adaptive_avg_pool2d(planes, (max(1, round(h / f)), max(1, round(w / f))))


def load_encoder(vgg_path: Path) -> BandColorizer:
    """A BandColorizer whose encoder holds the shared VGG16 weights rounded through fp16 (as shipped)."""
    from safetensors.torch import load_file

    model = BandColorizer()
    state = load_file(str(vgg_path))
    enc = {k[len("features."):]: v.to(torch.float16).to(torch.float32) for k, v in state.items()
           if k.startswith("features.") and int(k.split(".")[1]) < len(model.encoder)}
    model.encoder.load_state_dict(enc, strict=True)
    return model.eval()


def dev_split(items: list[TrainingItem], fraction: float) -> tuple[list[TrainingItem], list[TrainingItem]]:
    """Split TRAINING items by release into (fit, dev) with a salt of its own."""
    return split_by_group(items, val_fraction=fraction, salt="astro-bandcolor-dev-v1")


def _dihedral(img: np.ndarray, d: int) -> np.ndarray:
    if d & 1:
        img = img[:, ::-1]
    if d & 2:
        img = img[::-1]
    if d & 4:
        img = img.transpose(1, 0, 2)
    return np.ascontiguousarray(img)


def _augment(img8: np.ndarray, rng: np.random.Generator, spec: CacheSpec) -> tuple[np.ndarray, dict[str, float]]:
    d = int(rng.integers(8))
    lo, hi = spec.gamma_range
    gamma = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    gain = float(rng.uniform(*spec.gain_range))
    x = _dihedral(img8, d).astype(np.float32) / 255.0
    x = np.clip(gain * np.power(x, gamma), 0.0, 1.0)
    return (x * 255.0 + 0.5).astype(np.uint8), {"dihedral": d, "gamma": gamma, "gain": gain}


def _hash_items(items: list[TrainingItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(it.sha256.encode())
    return h.hexdigest()


@torch.inference_mode()
def _encode(model: BandColorizer, planes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(planes)
    m = torch.from_numpy(masks)
    from astro_pipeline.models.bandcolor import masked_grey

    f3, f4 = model.encode(masked_grey(x, m))
    return f3.to(torch.float16).numpy(), f4.to(torch.float16).numpy()


@torch.inference_mode()
def _frame_pooled(model: BandColorizer, planes: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from astro_pipeline.models.blocks import pad_to_multiple
    from astro_pipeline.models.bandcolor import masked_grey

    view = context_view(torch.from_numpy(planes[None]))
    m = torch.from_numpy(mask[None])
    padded, _ = pad_to_multiple(view, model.multiple)
    f3, f4 = model.encode(masked_grey(padded, m))
    return model.pool_features(f3, f4)[0].numpy(), model.plane_stats(view, m)[0].numpy()


def _pick_crops(img8: np.ndarray, rng: np.random.Generator, n: int, size: int, empty_keep: float) -> list[tuple[int, int]]:
    h, w = img8.shape[:2]
    out: list[tuple[int, int]] = []
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        c = img8[y : y + size, x : x + size]
        if c.mean() < 8 and c.std() < 4 and rng.random() > empty_keep:
            continue
        out.append((y, x))
    while len(out) < n:  # a nearly empty image: take what it has
        out.append((int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))))
    return out


def _atomic_json(path: Path, obj: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def build_cache(
    out_dir: Path,
    *,
    vgg_path: Path,
    sources: list[str] | None = None,
    spec: CacheSpec | None = None,
    progress: Callable[[str], None] | None = None,
    max_images: int | None = None,
) -> Path:
    """Build (or resume) the training cache in ``out_dir``; returns it."""
    spec = spec or CacheSpec()
    out_dir.mkdir(parents=True, exist_ok=True)
    items = collect_items(list(sources or ["hubble"]))
    train, _val = split_by_group(items)
    train = [i for i in train if i.kind == "color"]
    fit, dev = dev_split(train, spec.dev_fraction)
    if max_images:
        fit = fit[:max_images]
    n_var = len(fit) * spec.variants_per_image
    n = n_var * spec.crops_per_variant
    c = spec.crop
    header = {"spec": asdict(spec), "fit_images": [str(i.path.name) for i in fit], "dev_images": [str(i.path.name) for i in dev],
              "fit_groups": sorted({i.group for i in fit}), "dev_groups": sorted({i.group for i in dev}),
              "items_hash": _hash_items(fit), "n_variants": n_var, "n_crops": n, "cases": list(CASES)}
    spec_path = out_dir / "spec.json"
    fresh = not spec_path.is_file()
    if not fresh:
        old = json.loads(spec_path.read_text())
        if old != json.loads(json.dumps(header, default=str)):
            raise ValueError(f"{out_dir}: a cache with another spec or image set is there; use a new folder")
    else:
        _atomic_json(spec_path, header)

    def arr(name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        path = out_dir / f"{name}.npy"
        if path.is_file():
            return np.load(path, mmap_mode="r+")
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    imgs = arr("crops", "uint8", (n, c, c, 3))
    f3s = arr("f3", "float16", (n, 256, c // 16, c // 16))
    f4s = arr("f4", "float16", (n, 512, c // 32, c // 32))
    crop_var = arr("crop_variant", "int32", (n,))
    ctx_pooled = arr("ctx_pooled", "float32", (n_var, 768))
    ctx_stats = arr("ctx_stats", "float32", (n_var, 8))
    var_case = arr("variant_case", "int8", (n_var,))
    prog_path = out_dir / "progress.json"
    done = json.loads(prog_path.read_text())["variants_done"] if prog_path.is_file() else 0
    model = load_encoder(vgg_path)
    cases, weights = list(CASE_WEIGHTS), np.array(list(CASE_WEIGHTS.values()))
    weights = weights / weights.sum()
    t0 = time.monotonic()
    cur_img, cur_idx = None, -1
    k = spec.crops_per_variant
    for v in range(done, n_var):
        j, i = divmod(v, len(fit))  # variant-major: a partial cache already covers every image
        if i != cur_idx:
            cur_img, cur_idx = load_rgb_uint8(fit[i].path), i
        assert cur_img is not None
        rng = np.random.default_rng([spec.seed, i, j])
        aug8, _info = _augment(cur_img, rng, spec)
        case = cases[int(rng.choice(len(cases), p=weights))]
        mask = np.asarray(CASE_MASKS[case], dtype=np.float32)
        rgb = aug8.astype(np.float32) / 255.0
        full = case_planes(rgb, case)
        pooled, stats = _frame_pooled(model, full, mask)
        ctx_pooled[v], ctx_stats[v], var_case[v] = pooled, stats, CASES.index(case)
        pos = _pick_crops(aug8, rng, k, c, spec.empty_keep)
        planes = np.stack([full[:, y : y + c, x : x + c] for y, x in pos])
        f3, f4 = _encode(model, planes, np.repeat(mask[None], k, 0))
        sl = slice(v * k, (v + 1) * k)
        imgs[sl] = np.stack([aug8[y : y + c, x : x + c] for y, x in pos])
        f3s[sl], f4s[sl], crop_var[sl] = f3, f4, v
        if (v + 1) % 16 == 0 or v + 1 == n_var:
            for a in (imgs, f3s, f4s, crop_var, ctx_pooled, ctx_stats, var_case):
                a.flush()
            _atomic_json(prog_path, {"variants_done": v + 1, "seconds": round(time.monotonic() - t0, 1)})
            if progress:
                progress(f"variant {v + 1}/{n_var} ({time.monotonic() - t0:.0f} s)")
    if not (out_dir / "ab_prior.npy").is_file():
        np.save(out_dir / "ab_prior.npy", ab_prior(imgs))
    return out_dir


def ab_prior(imgs: np.ndarray, *, grid: float = 10.0, limit: float = 110.0, chunk: int = 64, stride: int = 4) -> np.ndarray:
    """Empirical distribution of training ab over the bin grid (bilinear splat; every ``stride``-th pixel)."""
    n_axis = int(round(2 * limit / grid)) + 1
    q = n_axis * n_axis
    hist = np.zeros(q, dtype=np.float64)
    for s in range(0, len(imgs), chunk):
        x = torch.from_numpy(np.array(imgs[s : s + chunk, ::stride, ::stride])).permute(0, 3, 1, 2).float() / 255.0
        ab = srgb_to_lab(x)[:, 1:].permute(1, 0, 2, 3).reshape(2, -1).numpy()
        u = np.clip((ab[0] + limit) / grid, 0, n_axis - 1 - 1e-4)
        v = np.clip((ab[1] + limit) / grid, 0, n_axis - 1 - 1e-4)
        u0, v0 = np.floor(u), np.floor(v)
        du, dv = u - u0, v - v0
        for oa, wa in ((0, 1 - du), (1, du)):
            for ob, wb in ((0, 1 - dv), (1, dv)):
                idx = ((u0 + oa) * n_axis + (v0 + ob)).astype(np.int64).clip(0, q - 1)
                hist += np.bincount(idx, weights=wa * wb, minlength=q)
    return hist / hist.sum()


def build_dev_set(out_dir: Path, *, vgg_path: Path, sources: list[str] | None = None, spec: CacheSpec | None = None) -> Path | None:
    """Un-augmented crops of the dev releases (TRAINING releases kept out of fitting), maps for every case
    (None when the split leaves no dev release)."""
    spec = spec or CacheSpec()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "dev.npz"
    if path.is_file():
        return path
    items = collect_items(list(sources or ["hubble"]))
    train, _val = split_by_group(items)
    _fit, dev = dev_split([i for i in train if i.kind == "color"], spec.dev_fraction)
    if not dev:
        return None
    model = load_encoder(vgg_path)
    rng = np.random.default_rng(spec.seed + 12345)
    c = spec.crop
    crops = []
    for it in dev:
        img = load_rgb_uint8(it.path)
        for y, x in _pick_crops(img, rng, spec.dev_crops_per_image, c, 0.0):
            crops.append(img[y : y + c, x : x + c])
    imgs = np.stack(crops)
    rgb = imgs.astype(np.float32) / 255.0
    f3 = np.zeros((len(CASES), len(imgs), 256, c // 16, c // 16), np.float16)
    f4 = np.zeros((len(CASES), len(imgs), 512, c // 32, c // 32), np.float16)
    for ci, case in enumerate(CASES):
        planes = np.stack([case_planes(r, case) for r in rgb])
        masks = np.repeat(np.asarray(CASE_MASKS[case], np.float32)[None], len(imgs), 0)
        for s in range(0, len(imgs), 16):
            a, b = _encode(model, planes[s : s + 16], masks[s : s + 16])
            f3[ci, s : s + 16], f4[ci, s : s + 16] = a, b
    tmp = out_dir / "dev.tmp.npz"
    np.savez(tmp, crops=imgs, f3=f3, f4=f4, groups=np.array(sorted({i.group for i in dev})))
    os.replace(tmp, path)
    return path


@dataclass
class Cache:
    """An opened training cache (memmaps)."""

    crops: np.ndarray
    f3: np.ndarray
    f4: np.ndarray
    crop_variant: np.ndarray
    ctx_pooled: np.ndarray
    ctx_stats: np.ndarray
    variant_case: np.ndarray
    n_ready: int
    spec: dict
    ab_prior: np.ndarray | None


def open_cache(out_dir: Path) -> Cache:
    """Open a (possibly still growing) cache read-only; ``n_ready`` crops are complete."""
    spec = json.loads((out_dir / "spec.json").read_text())
    done = json.loads((out_dir / "progress.json").read_text())["variants_done"]
    k = spec["spec"]["crops_per_variant"]

    def ld(name: str) -> np.ndarray:
        return np.load(out_dir / f"{name}.npy", mmap_mode="r")

    prior = np.load(out_dir / "ab_prior.npy") if (out_dir / "ab_prior.npy").is_file() else None
    return Cache(ld("crops"), ld("f3"), ld("f4"), ld("crop_variant"), ld("ctx_pooled"), ld("ctx_stats"), ld("variant_case"),
                 done * k, spec, prior)
