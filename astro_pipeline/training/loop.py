"""The training loop: pix2pix colorizer, SRResNet L1 pre-training and SRGAN fine-tuning.

One function, :func:`run_training`, drives all three recipes. It checkpoints every few steps
(model, optimizer, step, RNG), resumes from the last checkpoint, logs losses to JSON lines and
writes the candidate weights (with metadata) to ``output_dir/<model>/<model>.safetensors``. The
promotion gate (``promote.py``) decides whether they replace the shipped ones.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from astro_pipeline.models.registry import WeightsMeta, build_model, load_weights, save_weights
from astro_pipeline.training.checkpoint import checkpoint_step, load_checkpoint, save_checkpoint
from astro_pipeline.training.datasets import ColorizerBatches, ImageBank, SRBatches
from astro_pipeline.training.hst_pairs import HSTPairConfig, LinearScene
from astro_pipeline.training.losses import RELU_INDEX, PerceptualLoss, gan_loss, load_vgg16
from astro_pipeline.training.precision import Precision, choose_precision
from astro_pipeline.training.recipes import Recipe, get_recipe
from astro_pipeline.training.sources import Source, collect_items, split_by_group, training_data_hash

__all__ = ["TrainingResult", "run_training"]

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """What a training run produced."""

    model: str
    weights_path: Path
    meta: WeightsMeta
    steps: int  # steps completed in total (including before a resume)
    planned_steps: int
    seconds: float  # wall time of this invocation
    log_path: Path
    resumed_from: int | None
    stopped_early: bool
    precision: str
    train_images: int
    val_images: int
    notes: list[str] = field(default_factory=list)


def _lr_at(recipe: Recipe, step: int, planned: int) -> float:
    start = recipe.decay_from * planned
    if step < start or planned <= start:
        return recipe.lr
    return recipe.lr * max(0.0, (planned - step) / (planned - start))


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.mul_(d).add_(pm.detach(), alpha=1 - d)


def _default_init_weights(output_dir: Path) -> Path:
    from astro_pipeline.config import get_settings

    cand = output_dir / "superres" / "superres.safetensors"
    return cand if cand.is_file() else Path(get_settings().weights_dir) / "superres.safetensors"


def run_training(
    *,
    model: str,
    steps: int,
    sources: list[str | Source],
    output_dir: str | Path,
    seed: int = 0,
    resume: bool = True,
    overrides: dict[str, Any] | None = None,
    init_from: str | Path | None = None,
    device: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    time_limit_s: float | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    hst_frames: list[Path] | None = None,
) -> TrainingResult:
    """Train ``model`` (colorizer | superres | superres-gan) for ``steps`` steps in total.

    ``sources`` are source specs (``hubble``, ``folder:PATH``, ``approved``) or callables. With
    ``resume`` a checkpoint in ``output_dir/<model>/checkpoint`` is continued; otherwise training
    starts afresh. ``time_limit_s`` stops early (after a checkpoint) so a run fits a time budget;
    the weights then record the steps actually done. ``device``/``precision`` default to the
    settings (``auto``: CUDA with AMP, else bf16 autocast + channels_last only on CPUs with native
    bf16, else fp32). ``superres-gan`` starts from ``init_from``
    (default: this output's ``superres`` candidate, else the shipped ``weights/superres``); the
    other recipes start from ``init_from`` when given (same architecture, or a shallower SRResNet to
    grow). A recipe with ``hst_fraction`` draws HST-like pairs from ``hst_frames`` (linear FITS
    frames; default: the built-in sample's held-in frames) and the ESA training images.
    """
    t0 = time.monotonic()
    recipe = get_recipe(model, overrides)
    if threads:
        torch.set_num_threads(threads)
    from astro_pipeline.config import get_settings

    settings = get_settings()
    prec = choose_precision(device or settings.device, precision or settings.precision)
    output_dir = Path(output_dir)
    run_dir = output_dir / model
    ckpt_dir = run_dir / "checkpoint"
    log_path = run_dir / "log.jsonl"
    run_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    items = collect_items(list(sources))
    train_items, val_items = split_by_group(items, val_fraction=recipe.val_fraction)
    if recipe.task == "colorize":
        train_items = [i for i in train_items if i.kind == "color"]
    if not train_items:
        raise ValueError(f"no training images for {model} in sources {sources!r}")
    hst = _hst_pairs(recipe, settings.cache_dir, notes, hst_frames) if recipe.hst_fraction > 0 else None
    hashed = recipe.to_dict() if hst is None else {**recipe.to_dict(), "hst_pairs": hst.hashed}
    data_hash = training_data_hash(train_items, hashed)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    for field_name, _, (lo, hi), _ in SHIPPED_SETTINGS:
        value = getattr(recipe, field_name)
        if value is not None and not lo <= value <= hi:
            raise ValueError(f"{field_name} must be in [{lo:g}, {hi:g}], got {value}")
    gen = build_model(recipe.arch, **recipe.arch_kwargs)
    if recipe.phase == "srgan":
        init_path = Path(init_from) if init_from else _default_init_weights(output_dir)
        init_model, init_meta = load_weights(init_path)
        if init_meta.arch != recipe.arch or _with_parameters(init_meta.kwargs) != _with_parameters(recipe.arch_kwargs):
            raise ValueError(f"{init_path}: SRGAN init weights are {init_meta.arch}({init_meta.kwargs}), recipe wants {recipe.arch}({recipe.arch_kwargs})")
        gen.load_state_dict(init_model.state_dict())
        notes.append(f"initialised from {init_path} ({init_meta.steps} L1 steps)")
    elif init_from is not None and not (resume and checkpoint_step(ckpt_dir) is not None):
        notes.append(_warm_start(gen, recipe, Path(init_from)))
    disc = build_model(recipe.disc_arch, **recipe.disc_kwargs) if recipe.disc_arch else None
    ema = copy.deepcopy(gen).requires_grad_(False) if recipe.ema > 0 else None
    gen.to(prec.device)
    if disc is not None:
        disc.to(prec.device)
    if ema is not None:
        ema.to(prec.device)
    if prec.channels_last:
        for m in (gen, disc, ema):
            if m is not None:
                m.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(gen.parameters(), lr=recipe.lr, betas=recipe.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=recipe.lr, betas=recipe.betas) if disc is not None else None
    modules: dict[str, nn.Module] = {"gen": gen}
    optimizers: dict[str, torch.optim.Optimizer] = {"gen": opt_g}
    if disc is not None and opt_d is not None:
        modules["disc"], optimizers["disc"] = disc, opt_d
    if ema is not None:
        modules["ema"] = ema

    start, resumed_from = 0, None
    prior_seconds = 0.0
    if resume and checkpoint_step(ckpt_dir) is not None:
        start, extra = load_checkpoint(ckpt_dir, modules=modules, optimizers=optimizers, np_rng=rng)
        resumed_from = start
        prior_seconds = float(extra.get("seconds", 0.0))
        notes.append(f"resumed from checkpoint at step {start}")
        _truncate_log(log_path, start)
    else:
        log_path.unlink(missing_ok=True)
        if ckpt_dir.exists():
            for f in ckpt_dir.iterdir():
                f.unlink()

    perceptual = None
    if recipe.lambda_percep > 0:
        deepest = max(recipe.perceptual_layers, key=RELU_INDEX.__getitem__)
        loaded = load_vgg16(settings.perceptual_weights, last=deepest)
        if loaded is None:
            notes.append(f"perceptual weights absent at {settings.perceptual_weights}: perceptual loss skipped")
            log.warning(notes[-1])
        else:
            perceptual = PerceptualLoss(loaded[0].to(prec.device), layers=tuple(recipe.perceptual_layers))

    bank = ImageBank.load(train_items, min_size=recipe.crop)
    if recipe.task == "colorize":
        batches: ColorizerBatches | SRBatches = ColorizerBatches(bank, crop=recipe.crop, batch_size=recipe.batch_size, rng=rng)
    else:
        pairs = None
        if hst is not None:
            from astro_pipeline.training.hst_pairs import HSTPairs

            pairs = HSTPairs(esa_images=[im for im, k in zip(bank.images, bank.kinds, strict=True) if k == "color"],
                             frames=hst.frames, cfg=hst.config, rng=rng)
        batches = SRBatches(bank, hr_crop=recipe.crop, batch_size=recipe.batch_size, rng=rng,
                            scale=recipe.arch_kwargs.get("scale", 4), degrade_fraction=recipe.degrade_fraction,
                            hst=pairs, hst_fraction=recipe.hst_fraction)

    scaler = torch.amp.GradScaler("cuda", enabled=prec.device.type == "cuda" and prec.dtype is torch.float16)
    step_fn = _make_step(recipe, gen, disc, opt_g, opt_d, perceptual, prec, scaler)
    gen.train()
    if disc is not None:
        disc.train()
    acc: dict[str, float] = {}
    n_acc = 0
    step = start
    stopped_early = False
    with open(log_path, "a") as logf:
        while step < steps:
            lr = _lr_at(recipe, step, steps)
            for opt in optimizers.values():
                for g in opt.param_groups:
                    g["lr"] = lr
            batch = batches.next()
            batch = tuple(
                b.to(prec.device, memory_format=torch.channels_last) if prec.channels_last else b.to(prec.device) for b in batch
            )
            losses = step_fn(*batch)
            if ema is not None:
                _ema_update(ema, gen, recipe.ema, step)
            step += 1
            for k, v in losses.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            if step % recipe.log_every == 0 or step == steps:
                row = {"step": step, "lr": lr, "seconds": round(prior_seconds + time.monotonic() - t0, 2)}
                row.update({k: round(v / n_acc, 6) for k, v in acc.items()})
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                if progress is not None:
                    progress(step, row)
                acc, n_acc = {}, 0
            over_time = time_limit_s is not None and time.monotonic() - t0 > time_limit_s
            if step % recipe.checkpoint_every == 0 or step == steps or over_time:
                save_checkpoint(ckpt_dir, step=step, modules=modules, optimizers=optimizers, np_rng=rng,
                                extra={"seconds": prior_seconds + time.monotonic() - t0, "model": model})
            if over_time and step < steps:
                stopped_early = True
                notes.append(f"stopped at step {step} of {steps}: time limit {time_limit_s:.0f} s reached")
                break

    final = ema if ema is not None else gen
    final = final.to("cpu", memory_format=torch.contiguous_format)
    shipped_kwargs = dict(recipe.arch_kwargs)
    for field_name, kwarg, _, why in SHIPPED_SETTINGS:
        value = getattr(recipe, field_name)
        if value is None:
            continue
        if not hasattr(final, kwarg):
            raise ValueError(f"{field_name}: {recipe.arch} has no {kwarg} setting")
        setattr(final, kwarg, float(value))
        shipped_kwargs[kwarg] = float(value)
        notes.append(f"{kwarg} {value:g} set after training ({why})")
    meta = WeightsMeta(
        name=model,
        version=f"{_dt.datetime.now(_dt.UTC):%Y.%m.%d}-{data_hash[:8]}-s{step}",
        arch=recipe.arch,
        kwargs=shipped_kwargs,
        task=recipe.task,
        color_space="lab" if recipe.task == "colorize" else "srgb",
        tile_size=recipe.tile_size,
        scale=1 if recipe.task == "colorize" else int(recipe.arch_kwargs.get("scale", 4)),
        training_data_hash=data_hash,
        steps=step,
        metrics={},
        extra={
            "recipe": recipe.to_dict(),
            "seed": seed,
            "precision": prec.name,
            "train_images": len(train_items),
            "val_groups": sorted({i.group for i in val_items}),
            "train_seconds": round(prior_seconds + time.monotonic() - t0, 1),
            "ema": recipe.ema > 0,
        },
    )
    weights_path = save_weights(final, run_dir / f"{model}.safetensors", meta)
    return TrainingResult(
        model=model, weights_path=weights_path, meta=meta, steps=step, planned_steps=steps,
        seconds=time.monotonic() - t0, log_path=log_path, resumed_from=resumed_from,
        stopped_early=stopped_early, precision=prec.name, train_images=len(train_items),
        val_images=len(val_items), notes=notes,
    )


@dataclass(frozen=True)
class _HSTSetup:
    """What a recipe with HST-like pairs draws from, and what of it goes into the data hash."""

    frames: list[LinearScene]
    config: HSTPairConfig
    hashed: dict[str, Any]


def _hst_pairs(recipe: Recipe, cache_dir: Path, notes: list[str], paths: list[Path] | None = None) -> _HSTSetup:
    """The linear frames (``paths``, default the built-in sample's held-in frames, built under
    ``cache_dir`` if needed) and the degradation config for HST-like SR pairs."""
    from astro_pipeline.sample import build_sample
    from astro_pipeline.training.hst_pairs import held_in_sample_frames, load_linear_scene

    cfg = HSTPairConfig(**{**recipe.hst_config, "scale": int(recipe.arch_kwargs.get("scale", 4))})
    if paths is None:
        paths = held_in_sample_frames(build_sample(cache_dir=Path(cache_dir)))
    frames = [load_linear_scene(p) for p in paths]
    notes.append(f"HST-like pairs: {recipe.hst_fraction:.0%} of each batch, from the ESA training images and "
                 f"{len(frames)} linear frames ({', '.join(sorted(p.name for p in paths))})")
    return _HSTSetup(frames=frames, config=cfg, hashed={"config": cfg.to_dict(), "frames": sorted(p.name for p in paths)})


#: Recipe fields written into the candidate after training (field, SRResNet kwarg, allowed range, why not during it).
SHIPPED_SETTINGS: tuple[tuple[str, str, tuple[float, float], str], ...] = (
    ("shipped_back_project", "back_project", (0.0, 1.0), "the network trained without it"),
    ("shipped_detail", "detail", (0.0, 1.0), "the network trained at full strength"),
    ("shipped_noise_gate", "noise_gate", (0.0, math.inf), "the network trained on every pixel"),
)
#: Architecture settings that hold no parameters: weights trained without them start a recipe that sets them.
PARAMETER_FREE_KWARGS = tuple(kwarg for _, kwarg, _, _ in SHIPPED_SETTINGS)


def _with_parameters(kwargs: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in kwargs.items() if k not in PARAMETER_FREE_KWARGS}


def _warm_start(gen: nn.Module, recipe: Recipe, init_path: Path) -> str:
    """Load trained weights into a fresh generator: the same architecture, or an SRResNet grown
    from a shallower one (extra blocks start as the identity)."""
    from astro_pipeline.models.superres import SRResNet, grow_srresnet

    init_model, init_meta = load_weights(init_path)
    if init_meta.arch == recipe.arch and _with_parameters(init_meta.kwargs) == _with_parameters(recipe.arch_kwargs):
        gen.load_state_dict(init_model.state_dict())
        changed = [f"{k} {recipe.arch_kwargs.get(k, 'off')}" for k in PARAMETER_FREE_KWARGS
                   if init_meta.kwargs.get(k) != recipe.arch_kwargs.get(k)]
        return (f"initialised from {init_path} ({init_meta.version}, {init_meta.steps} steps)"
                + (f"; {', '.join(changed)} set by the recipe" if changed else ""))
    if isinstance(gen, SRResNet) and isinstance(init_model, SRResNet):
        grow_srresnet(gen, init_model)
        return (f"grown from {init_path} ({init_meta.version}: {init_meta.arch}{init_meta.kwargs}, {init_meta.steps} steps)"
                f" to {recipe.arch}{recipe.arch_kwargs}; the extra blocks start as the identity")
    raise ValueError(f"{init_path}: {init_meta.arch}({init_meta.kwargs}) cannot start {recipe.arch}({recipe.arch_kwargs})")


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (they will be redone)."""
    if not log_path.is_file():
        return
    keep = [ln for ln in log_path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    log_path.write_text("".join(ln + "\n" for ln in keep))


def _make_step(
    recipe: Recipe,
    gen: nn.Module,
    disc: nn.Module | None,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer | None,
    perceptual: PerceptualLoss | None,
    prec: Precision,
    scaler: torch.amp.GradScaler,
) -> Callable[..., dict[str, float]]:
    """One optimisation step for the recipe's phase; returns its losses as floats."""

    def _opt_step(loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    block_fn = {"l1": F.l1_loss, "mse": F.mse_loss}.get(recipe.block_loss)
    if block_fn is None:
        raise ValueError(f"block_loss must be l1 or mse, got {recipe.block_loss!r}")

    def _pool(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, recipe.disc_scale) if recipe.disc_scale > 1 else x

    def pix2pix(lightness: torch.Tensor, ab: torch.Tensor) -> dict[str, float]:
        assert disc is not None and opt_d is not None
        with prec.autocast():
            fake = gen(lightness)
            small_l = _pool(lightness)
            d_real = disc(torch.cat([small_l, _pool(ab)], 1))
            d_fake = disc(torch.cat([small_l, _pool(fake.detach())], 1))
            loss_d = 0.5 * (gan_loss(d_real.float(), real=True) + gan_loss(d_fake.float(), real=False))
        _opt_step(loss_d, opt_d)
        disc.requires_grad_(False)
        with prec.autocast():
            g_adv = gan_loss(disc(torch.cat([small_l, _pool(fake)], 1)).float(), real=True)
            g_l1 = F.l1_loss(fake.float(), ab)
            loss_g = recipe.lambda_adv * g_adv + recipe.lambda_l1 * g_l1
        _opt_step(loss_g, opt_g)
        disc.requires_grad_(True)
        return {"g_l1": g_l1.item(), "g_adv": g_adv.item(), "d": loss_d.item()}

    def l1(lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        with prec.autocast():
            sr = gen(lr).float()
            pix = F.l1_loss(sr, hr)
            if recipe.lambda_block > 0:
                s = int(recipe.arch_kwargs.get("scale", 4))
                block = block_fn(F.avg_pool2d(sr, s), F.avg_pool2d(hr, s))
                loss = pix + recipe.lambda_block * block
            else:
                loss = pix
        _opt_step(loss, opt_g)
        out = {"l1": pix.item()}
        if recipe.lambda_block > 0:
            out[f"block_{recipe.block_loss}"] = block.item()
        return out

    def srgan(lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        assert disc is not None and opt_d is not None
        with prec.autocast():
            sr = gen(lr)
            d_real = disc(hr)
            d_fake = disc(sr.detach())
            loss_d = 0.5 * (gan_loss(d_real.float(), real=True) + gan_loss(d_fake.float(), real=False))
        _opt_step(loss_d, opt_d)
        disc.requires_grad_(False)
        with prec.autocast():
            srf = sr.float()
            g_adv = gan_loss(disc(sr).float(), real=True)
            g_l1 = F.l1_loss(srf, hr)
            g_per = perceptual(srf.clamp(0, 1), hr) if perceptual is not None else torch.zeros((), device=hr.device)
            loss_g = recipe.lambda_percep * g_per + recipe.lambda_adv * g_adv + recipe.lambda_l1 * g_l1
        _opt_step(loss_g, opt_g)
        disc.requires_grad_(True)
        return {"g_percep": float(g_per.item()), "g_adv": g_adv.item(), "g_l1": g_l1.item(), "d": loss_d.item()}

    return {"pix2pix": pix2pix, "l1": l1, "srgan": srgan}[recipe.phase]
