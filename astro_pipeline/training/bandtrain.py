"""Training loop of the band-aware colour model on the feature cache (resumable, CPU-sized).

Each step draws cached crops (every crop has one colour case, fixed when it was cached), builds
the model planes, and runs only the trainable head on the cached encoder maps:

- lightness alone: cross-entropy between the predicted ab-bin distribution (1/8 resolution) and the
  block distribution of the truth's ab, each block weighted by Zhang's class rebalancing;
- bands given: log of the per-crop mean squared error of the missing slots (display units), the
  per-crop form of the PSNR the protocols average;
- an optional final GAN phase (``gan_from`` < 1): a PatchGAN on (grey, RGB) at 1/4 resolution adds
  ``lambda_adv`` times the non-saturating generator loss.

The frame context of a crop is, at random, its own pooled maps (the crop as a frame) or the pooled
view of its whole augmented image (the crop as a tile of a frame), as the engine gives at inference.
Weights (EMA) go to ``<run>/bandcolor.safetensors`` with metadata; ``dev.jsonl`` logs the dev-set
figures (TRAINING releases held out of fitting) that choose recipes and the read-out temperature.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from astro_pipeline.models.bandcolor import BandColorizer, PlaneDiscriminator, naive_fill
from astro_pipeline.models.registry import WeightsMeta, save_weights
from astro_pipeline.training import metrics as M
from astro_pipeline.training.bandcache import CASE_MASKS, CASES, Cache, load_encoder, open_cache
from astro_pipeline.training.bandtargets import rebalance_weights, splat_ab
from astro_pipeline.training.checkpoint import checkpoint_step, load_checkpoint, save_checkpoint
from astro_pipeline.training.colorspace import lab_to_srgb, srgb_to_lab
from astro_pipeline.training.losses import gan_loss

__all__ = ["BandRecipe", "train_bandcolor", "dev_metrics", "planes_torch"]

log = logging.getLogger(__name__)

_MASKS = torch.tensor([CASE_MASKS[c] for c in CASES], dtype=torch.float32)
_LUMA = torch.tensor([0.2126729, 0.7151522, 0.0721750])


@dataclass(frozen=True)
class BandRecipe:
    """Everything that defines a band-colour training run except the cache, steps and seed."""

    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    lambda_ce: float = 1.0
    lambda_band: float = 1.0
    band_eps: float = 1e-5  # log(MSE + eps): eps ~ 50 dB, so near-perfect crops do not dominate
    rebalance_lam: float = 0.5
    ctx_self_prob: float = 0.5
    fine_window: int = 64  # band crops: the full-resolution head and its loss on one square of this size
    case_weights: dict[str, float] | None = None  # draw crops by case with these weights (None: as cached)
    gan_from: float = 1.0  # fraction of the planned steps after which the GAN phase runs (1: none)
    lambda_adv: float = 0.0
    gan_temperature: float = 0.4
    disc_kwargs: dict[str, Any] = field(default_factory=lambda: {"in_channels": 4, "base_channels": 32, "n_layers": 3})
    disc_lr: float = 2e-4
    ema: float = 0.998
    warmup: int = 100
    decay_from: float = 0.6  # cosine decay to 5% of lr from this fraction of the planned steps
    checkpoint_every: int = 100
    log_every: int = 10
    dev_every: int = 500
    dev_limit: int = 40  # dev crops scored at each check (all 7 cases each)
    dev_temperatures: tuple[float, ...] = (0.3, 0.45, 0.6, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def planes_torch(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) truth and (N, 3) masks -> (N, 4, H, W) planes (given slots, grey), as ``case_planes``."""
    m = mask[:, :, None, None]
    given = rgb * m
    y = torch.einsum("nchw,c->nhw", _srgb_to_linear(rgb), _LUMA.to(rgb))[:, None]
    lgrey = _linear_to_srgb(y).clamp(0, 1)
    n = m.sum(1, keepdim=True)
    grey = torch.where(n > 0, given.sum(1, keepdim=True) / n.clamp_min(1), lgrey)
    return torch.cat([given, grey], 1)


def _lr_at(r: BandRecipe, step: int, planned: int) -> float:
    if step < r.warmup:
        return r.lr * (step + 1) / r.warmup
    start = r.decay_from * planned
    if step < start or planned <= start:
        return r.lr
    t = min(1.0, (step - start) / (planned - start))
    return r.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * t)))


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    d = min(decay, (1 + step) / (10 + step))
    for (n, pe), pm in zip(ema.named_parameters(), model.parameters(), strict=True):
        if not n.startswith("encoder"):
            pe.mul_(d).add_(pm.detach(), alpha=1 - d)


class _Batches:
    """Random cached crops with their case, maps and frame context inputs."""

    def __init__(self, cache: Cache, rng: np.random.Generator, batch_size: int, ctx_self_prob: float,
                 case_weights: dict[str, float] | None = None) -> None:
        self.cache, self.rng, self.bs, self.p_self = cache, rng, batch_size, ctx_self_prob
        self.p: np.ndarray | None = None
        if case_weights:  # crops drawn with probability by their case (the cache fixed each crop's case)
            cases = np.asarray(cache.variant_case[np.asarray(cache.crop_variant[: cache.n_ready])]).astype(np.int64)
            counts = np.bincount(cases, minlength=len(CASES)).astype(np.float64)
            per_case = np.array([case_weights.get(c, 0.0) for c in CASES]) / np.maximum(counts, 1)
            p = per_case[cases]
            self.p = p / p.sum()

    def next(self) -> dict[str, torch.Tensor]:
        c = self.cache
        idx = np.sort(self.rng.choice(c.n_ready, size=self.bs, replace=False, p=self.p))
        var = np.asarray(c.crop_variant[idx])
        case = torch.from_numpy(np.array(c.variant_case[var]).astype(np.int64))
        rgb = torch.from_numpy(np.array(c.crops[idx])).permute(0, 3, 1, 2).float() / 255.0
        return {
            "rgb": rgb,
            "case": case,
            "mask": _MASKS[case],
            "f3": torch.from_numpy(np.array(c.f3[idx])).float(),
            "f4": torch.from_numpy(np.array(c.f4[idx])).float(),
            "ctx_pooled": torch.from_numpy(np.array(c.ctx_pooled[var])).float(),
            "ctx_stats": torch.from_numpy(np.array(c.ctx_stats[var])).float(),
            "self_ctx": torch.from_numpy(self.rng.random(self.bs) < self.p_self),
        }


def _context(model: BandColorizer, b: dict[str, torch.Tensor], planes: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    mask = b["mask"][sel]
    own_pooled = model.pool_features(b["f3"][sel], b["f4"][sel])
    own_stats = model.plane_stats(planes, mask)
    use = b["self_ctx"][sel][:, None]
    pooled = torch.where(use, own_pooled, b["ctx_pooled"][sel])
    stats = torch.where(use, own_stats, b["ctx_stats"][sel])
    return model.context_from_pooled(pooled, stats, mask)


def _lab4(lab: torch.Tensor) -> torch.Tensor:
    """Lab at 1/4 resolution (pooled in Lab, so truth and fake go through one conversion)."""
    return F.avg_pool2d(lab, 4)


def _forward_losses(
    model: BandColorizer, b: dict[str, torch.Tensor], recipe: BandRecipe, w_bins: torch.Tensor, *, want_gan: bool,
    rng: np.random.Generator,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Losses of one batch and, in the GAN phase, the discriminator's (grey, RGB) inputs at 1/4 resolution.

    Band crops run the full-resolution head on one random ``fine_window`` square (aligned to 8 px);
    the GAN term applies to the lightness-only crops, whose palette is the open question.
    """
    lonly = b["mask"].sum(1) == 0
    losses: dict[str, torch.Tensor] = {}
    gan: dict[str, torch.Tensor] = {}
    size = b["rgb"].shape[-1]
    for sel, is_l in ((lonly, True), (~lonly, False)):
        if not bool(sel.any()):
            continue
        rgb = b["rgb"][sel]
        mask = b["mask"][sel]
        planes = planes_torch(rgb, mask)
        ctx = _context(model, b, planes, sel)
        if is_l:
            out = model.decode(planes, mask, b["f3"][sel], b["f4"][sel], ctx, want_rgb=False, want_ab=True,
                               temperature=recipe.gan_temperature, full_ab=False)
            # the block distribution from every other pixel in each direction (16 of the 64 in a block)
            lab_sub = srgb_to_lab(rgb[..., ::2, ::2])
            target = splat_ab(lab_sub[:, 1:], block=model.encoder_scale)
            logp = torch.log_softmax(out["logits"].float(), dim=1)
            weight = torch.einsum("nqhw,q->nhw", target, w_bins)
            losses["ce"] = (-(target * logp).sum(1) * weight).mean()
            if want_gan:
                lab4 = _lab4(srgb_to_lab(rgb))
                ab4 = F.interpolate(out["ab_low"], size=lab4.shape[-2:], mode="bilinear", align_corners=False)
                grey4 = F.avg_pool2d(planes[:, 3:4], 4)
                gan["fake"] = torch.cat([grey4, lab_to_srgb(torch.cat([lab4[:, :1], ab4], 1))], 1)
                gan["real"] = torch.cat([grey4, lab_to_srgb(lab4)], 1)
        else:
            win = recipe.fine_window if recipe.fine_window and recipe.fine_window < size else size
            y0 = int(rng.integers(0, (size - win) // 8 + 1)) * 8
            x0 = int(rng.integers(0, (size - win) // 8 + 1)) * 8
            out = model.decode(planes, mask, b["f3"][sel], b["f4"][sel], ctx, want_rgb=True, want_ab=False,
                               window=(y0, x0, win) if win < size else None)
            truth = rgb[..., y0 : y0 + win, x0 : x0 + win]
            base = naive_fill(planes, mask)[..., y0 : y0 + win, x0 : x0 + win]
            miss = (1 - mask)[:, :, None, None]
            denom = miss.sum(dim=(1, 2, 3)) * win * win
            err = ((out["rgb"] - truth) ** 2 * miss).sum(dim=(1, 2, 3)) / denom
            err0 = ((base - truth) ** 2 * miss).sum(dim=(1, 2, 3)) / denom
            losses["band"] = torch.log(err + recipe.band_eps).mean()
            losses["band_gain_db"] = (10 * torch.log10((err0 + 1e-12) / (err + 1e-12))).mean().detach()
    return losses, gan


def _save_weights(model: BandColorizer, path: Path, *, recipe: BandRecipe, step: int, extra: dict[str, Any]) -> WeightsMeta:
    cpu = copy.deepcopy(model).to("cpu").eval()
    data_hash = extra.get("items_hash", "")
    meta = WeightsMeta(
        name="bandcolor",
        version=f"{_dt.datetime.now(_dt.UTC):%Y.%m.%d}-{str(data_hash)[:8]}-s{step}",
        arch="BandColorizer",
        kwargs=dict(recipe.arch_kwargs),
        task="colorize",
        color_space="bands+lab",
        tile_size=256,
        scale=1,
        training_data_hash=str(data_hash),
        steps=step,
        metrics={},
        extra={"recipe": recipe.to_dict(), **{k: v for k, v in extra.items() if k != "items_hash"}},
    )
    save_weights(cpu, path, meta)
    return meta


def train_bandcolor(
    *,
    cache_dir: Path,
    run_dir: Path,
    steps: int,
    vgg_path: Path,
    recipe: BandRecipe | None = None,
    seed: int = 0,
    threads: int | None = None,
    time_limit_s: float | None = None,
    init_from: Path | None = None,
) -> Path:
    """Train (or resume) in ``run_dir`` up to ``steps`` steps; returns the weights path."""
    recipe = recipe or BandRecipe()
    if threads:
        torch.set_num_threads(threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1))
    ckpt_dir = run_dir / "checkpoint"
    log_path = run_dir / "log.jsonl"
    t0 = time.monotonic()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc = load_encoder(vgg_path)
    gen = BandColorizer(**recipe.arch_kwargs)
    gen.encoder.load_state_dict(enc.encoder.state_dict())
    if init_from is not None:
        from astro_pipeline.models.registry import load_weights

        init, _ = load_weights(init_from, strict=False)
        missing, unexpected = gen.load_state_dict(init.state_dict(), strict=False)
        if unexpected:
            raise ValueError(f"{init_from}: tensors this architecture does not have: {unexpected}")
        log.info("warm start from %s; new (untrained) tensors: %s", init_from, missing)
    gen.encoder.requires_grad_(False)
    ema = copy.deepcopy(gen).requires_grad_(False)
    disc = PlaneDiscriminator(**recipe.disc_kwargs) if recipe.gan_from < 1.0 else None
    params = [p for n, p in gen.named_parameters() if not n.startswith("encoder")]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=recipe.lr, betas=recipe.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=recipe.disc_lr, betas=(0.5, 0.999)) if disc is not None else None
    modules: dict[str, nn.Module] = {"gen": gen, "ema": ema}
    optimizers: dict[str, torch.optim.Optimizer] = {"gen": opt}
    if disc is not None and opt_d is not None:
        modules["disc"], optimizers["disc"] = disc, opt_d
    start, prior = 0, 0.0
    if checkpoint_step(ckpt_dir) is not None:
        start, extra = load_checkpoint(ckpt_dir, modules=modules, optimizers=optimizers, np_rng=rng)
        prior = float(extra.get("seconds", 0.0))
        keep = [ln for ln in log_path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= start] if log_path.is_file() else []
        log_path.write_text("".join(ln + "\n" for ln in keep))
    else:
        log_path.unlink(missing_ok=True)
    cache = open_cache(cache_dir)
    prior_ab = cache.ab_prior
    if prior_ab is None:  # the build is still running: the prior of the crops ready so far
        from astro_pipeline.training.bandcache import ab_prior

        prior_ab = ab_prior(cache.crops[: cache.n_ready])
    w_bins = rebalance_weights(prior_ab, lam=recipe.rebalance_lam)
    for m in (gen, ema):  # the weights travel with the model: its read-out can undo them
        m.log_rebalance.copy_(torch.log(w_bins))
    batches = _Batches(cache, rng, recipe.batch_size, recipe.ctx_self_prob, recipe.case_weights)
    dev_path = cache_dir / "dev.npz"
    gen.train()
    acc: dict[str, float] = {}
    n_acc = 0
    step = start
    extra_meta = {"items_hash": cache.spec.get("items_hash", ""), "fit_images": len(cache.spec["fit_images"]),
                  "dev_groups": cache.spec["dev_groups"], "cache_crops": cache.n_ready, "seed": seed}
    with open(log_path, "a") as logf:
        while step < steps:
            lr = _lr_at(recipe, step, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            in_gan = disc is not None and step >= recipe.gan_from * steps
            b = batches.next()
            losses, g_in = _forward_losses(gen, b, recipe, w_bins, want_gan=in_gan, rng=rng)
            loss = recipe.lambda_ce * losses.get("ce", torch.zeros(())) + recipe.lambda_band * losses.get("band", torch.zeros(()))
            if in_gan and disc is not None and opt_d is not None and "fake" in g_in:
                d_loss = 0.5 * (gan_loss(disc(g_in["real"]), real=True) + gan_loss(disc(g_in["fake"].detach()), real=False))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                disc.requires_grad_(False)
                adv = gan_loss(disc(g_in["fake"]), real=True)
                disc.requires_grad_(True)
                loss = loss + recipe.lambda_adv * adv
                losses["adv"], losses["d"] = adv.detach(), d_loss.detach()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            _ema_update(ema, gen, recipe.ema, step)
            step += 1
            for k, v in losses.items():
                acc[k] = acc.get(k, 0.0) + float(v.detach())
            n_acc += 1
            if step % recipe.log_every == 0 or step == steps:
                row = {"step": step, "lr": lr, "seconds": round(prior + time.monotonic() - t0, 1)}
                row.update({k: round(v / n_acc, 5) for k, v in acc.items()})
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                acc, n_acc = {}, 0
            over = time_limit_s is not None and time.monotonic() - t0 > time_limit_s
            if step % recipe.checkpoint_every == 0 or step == steps or over:
                save_checkpoint(ckpt_dir, step=step, modules=modules, optimizers=optimizers, np_rng=rng,
                                extra={"seconds": prior + time.monotonic() - t0})
            if dev_path.is_file() and (step % recipe.dev_every == 0 or step == steps or over):
                res = dev_metrics(ema, dev_path, limit=recipe.dev_limit, temperatures=recipe.dev_temperatures)
                with open(run_dir / "dev.jsonl", "a") as fh:
                    fh.write(json.dumps({"step": step, **res}) + "\n")
                _save_weights(ema, run_dir / "bandcolor.safetensors", recipe=recipe, step=step,
                              extra={**extra_meta, "train_seconds": round(prior + time.monotonic() - t0, 1)})
                gen.train()
            if over:
                break
    path = run_dir / "bandcolor.safetensors"
    _save_weights(ema, path, recipe=recipe, step=step, extra={**extra_meta, "train_seconds": round(prior + time.monotonic() - t0, 1)})
    return path


@torch.inference_mode()
def dev_metrics(model: BandColorizer, dev_path: Path, *, temperatures: tuple[float, ...] = (0.3, 0.4, 0.5, 0.7, 1.0), limit: int | None = None) -> dict[str, Any]:
    """Per-case figures on the dev crops (each crop its own frame), model beside the naive baseline."""
    model.eval()
    d = np.load(dev_path)
    imgs = torch.from_numpy(d["crops"][:limit]).permute(0, 3, 1, 2).float() / 255.0
    out: dict[str, Any] = {}
    for ci, case in enumerate(CASES):
        mask = _MASKS[ci][None].expand(len(imgs), -1)
        f3 = torch.from_numpy(d["f3"][ci][:limit]).float()
        f4 = torch.from_numpy(d["f4"][ci][:limit]).float()
        planes = planes_torch(imgs, mask)
        ctx = model.context_from_pooled(model.pool_features(f3, f4), model.plane_stats(planes, mask), mask)
        if case == "L":
            lab = srgb_to_lab(imgs)
            grey = M.quantize8(lab_to_srgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], 1)))
            row = {"grey": _scores(grey, imgs)}
            for t in temperatures:
                res = model.decode(planes, mask, f3, f4, ctx, want_rgb=False, want_ab=True, temperature=t)
                pred = M.quantize8(lab_to_srgb(torch.cat([lab[:, :1], res["ab"]], 1)))
                row[f"T{t}"] = _scores(pred, imgs)
        else:
            res = model.decode(planes, mask, f3, f4, ctx, want_rgb=True, want_ab=False)
            row = {"naive": _scores(M.quantize8(naive_fill(planes, mask).clamp(0, 1)), imgs),
                   "model": _scores(M.quantize8(res["rgb"].clamp(0, 1)), imgs)}
        out[case] = row
    return out


def _scores(x: torch.Tensor, t: torch.Tensor) -> dict[str, float]:
    return {"psnr": round(float(M.psnr(x, t).mean()), 3), "ciede": round(float(M.ciede76(x, t).mean()), 3),
            "chroma": round(M.chroma_ratio(x, t), 3)}


def recipe_with(base: BandRecipe, **kw: Any) -> BandRecipe:
    """A copy of ``base`` with fields replaced."""
    return replace(base, **kw)
