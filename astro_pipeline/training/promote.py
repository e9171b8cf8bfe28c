"""Promotion gate: a candidate replaces the shipped weights only if it is better, and says why.

Primary metric per task (clean protocol): colorizer CIEDE76 (lower), SR PSNR RGB (higher). A
candidate is promoted when its primary metric improves and no other metric worsens by more than
2%. With no current weights the candidate is installed, and the card says whether it beats its
trivial baseline on the primary metric. Current weights that do not beat that baseline only hold
the place: a candidate that improves the primary metric *and* beats the baseline replaces them even
if other metrics worsen (issue 4: ship the best model that beats its baseline); the card lists them.
Either way the decision and both sets of metrics go into a model card ``weights/<name>.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astro_pipeline.fileio import atomic_write_text
from astro_pipeline.models.registry import WeightsError, WeightsMeta, load_weights, read_meta, save_weights

__all__ = ["GateDecision", "gate", "promote_candidate", "write_model_card", "PRIMARY", "HIGHER_IS_BETTER"]

#: (protocol, metric) deciding promotion, per weights name.
PRIMARY = {
    "colorizer": ("colorize", "ciede76"),
    "superres": ("sr-clean", "psnr_rgb"),
    "superres-gan": ("sr-clean", "psnr_rgb"),
}
BASELINE = {"colorizer": "colorize:baseline-grey", "superres": "sr-clean:baseline-bicubic", "superres-gan": "sr-clean:baseline-bicubic"}
HIGHER_IS_BETTER = {"psnr_rgb": True, "psnr_y": True, "ssim": True, "ciede76": False, "lpips": False, "lr_rmse": False}
TOLERANCE = 0.02


@dataclass
class GateDecision:
    """Whether to promote, and the evidence."""

    promote: bool
    reason: str
    candidate: dict[str, Any]
    current: dict[str, Any] | None
    worsened: list[str] = field(default_factory=list)


def _better(metric: str, new: float, old: float) -> bool:
    return new > old if HIGHER_IS_BETTER.get(metric, True) else new < old


def _worse_by(metric: str, new: float, old: float) -> float:
    """Relative worsening (positive = worse), e.g. 0.03 = 3% worse."""
    if metric == "chroma_ratio":
        return abs(1 - new) - abs(1 - old)  # distance from the truth's chroma, absolute
    if old == 0:
        return 0.0
    rel = (new - old) / abs(old)
    return -rel if HIGHER_IS_BETTER.get(metric, True) else rel


def gate(name: str, candidate: dict[str, Any], current: dict[str, Any] | None, *, tolerance: float = TOLERANCE) -> GateDecision:
    """Decide promotion from metrics dicts as stored in weights metadata (``EvalReport.metrics_for``)."""
    proto, primary = PRIMARY[name]
    cand = candidate.get(proto, {})
    base = candidate.get(BASELINE[name], {})  # the trivial baseline, measured on the same crops
    if primary not in cand:
        return GateDecision(False, f"candidate has no {proto}/{primary} metric: not evaluated", candidate, current)
    if not current or primary not in current.get(proto, {}):
        # Nothing installed: the candidate is installed (the commands need default weights), and
        # the card says plainly whether it beats its trivial baseline.
        if primary in base and not _better(primary, cand[primary], base[primary]):
            return GateDecision(True, f"no current weights; installed, but {primary} {cand[primary]:.4f} does NOT beat the baseline's {base[primary]:.4f}", candidate, current)
        vs = f" (baseline {base[primary]:.4f})" if primary in base else ""
        return GateDecision(True, f"no current weights; {primary} {cand[primary]:.4f} beats the baseline{vs}", candidate, current)
    cur = current[proto]
    if not _better(primary, cand[primary], cur[primary]):
        return GateDecision(False, f"{primary} {cand[primary]:.4f} does not improve on current {cur[primary]:.4f}", candidate, current)
    worsened = []
    for p, vals in candidate.items():
        if not isinstance(vals, dict) or ":" in p:
            continue
        for m, v in vals.items():
            old = current.get(p, {}).get(m)
            if old is not None and _worse_by(m, v, old) > tolerance:
                worsened.append(f"{p}/{m}: {old:.4f} -> {v:.4f}")
    if worsened and primary in base and not _better(primary, cur[primary], base[primary]) and _better(primary, cand[primary], base[primary]):
        # The installed weights only hold the place (they came in with no weights installed and do
        # not beat their trivial baseline); issue 4 ships the best model that beats its baseline.
        return GateDecision(True, f"{primary} improves {cur[primary]:.4f} -> {cand[primary]:.4f} and beats the baseline's {base[primary]:.4f}, which the "
                            f"current weights do not; so other metrics may worsen (they do: {'; '.join(worsened)})", candidate, current, worsened)
    if worsened:
        return GateDecision(False, f"{primary} improves but other metrics worsen by more than {tolerance:.0%}: " + "; ".join(worsened), candidate, current, worsened)
    return GateDecision(True, f"{primary} improves {cur[primary]:.4f} -> {cand[primary]:.4f}; no other metric worsens by more than {tolerance:.0%}", candidate, current)


def promote_candidate(
    candidate_path: str | Path,
    *,
    name: str,
    metrics: dict[str, Any],
    weights_dir: str | Path | None = None,
    targets: list[dict[str, Any]] | None = None,
    notes: list[str] | None = None,
) -> GateDecision:
    """Run the gate for ``candidate_path`` against ``weights_dir/<name>.safetensors``; on success
    install the candidate (with ``metrics`` written into its metadata). Always writes the model card."""
    from astro_pipeline.config import get_settings

    wdir = Path(weights_dir) if weights_dir else Path(get_settings().weights_dir)
    wdir.mkdir(parents=True, exist_ok=True)
    target = wdir / f"{name}.safetensors"
    current_meta: WeightsMeta | None = None
    if target.is_file():
        try:
            current_meta = read_meta(target)
        except WeightsError:
            current_meta = None
    decision = gate(name, metrics, current_meta.metrics if current_meta else None)
    model, cand_meta = load_weights(candidate_path)
    cand_meta.metrics = metrics
    cand_meta.name = name
    if decision.promote:
        save_weights(model, target, cand_meta)
        installed = cand_meta
    else:
        installed = current_meta
    write_model_card(wdir / f"{name}.md", name=name, decision=decision, candidate=cand_meta, installed=installed,
                     targets=[t for t in (targets or []) if t["model"] in (name, "enhance")], notes=notes or [])
    return decision


def _taps(recipe: dict[str, Any]) -> str:
    """' (VGG16 relu1_2, ...)' for recipes with a perceptual term; older metadata names one layer."""
    if not recipe.get("lambda_percep"):
        return ""
    taps = recipe.get("perceptual_layers") or [recipe.get("perceptual_layer", "relu3_3")]
    return f" (VGG16 {', '.join(taps)})"


def _metric_table(metrics: dict[str, Any]) -> list[str]:
    cols = ["psnr_rgb", "psnr_y", "ssim", "ciede76", "lpips", "chroma_ratio", "lr_rmse"]
    lines = ["| protocol / method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key, vals in metrics.items():
        if isinstance(vals, dict):
            lines.append(f"| {key} | " + " | ".join("-" if vals.get(c) is None else f"{vals[c]:.4f}" for c in cols) + " |")
    return lines


def write_model_card(path: Path, *, name: str, decision: GateDecision, candidate: WeightsMeta, installed: WeightsMeta | None, targets: list[dict[str, Any]], notes: list[str]) -> Path:
    """Markdown model card: what the weights are, how they were trained, metrics, gate decision."""
    ex = (installed or candidate).extra
    recipe = ex.get("recipe", {})
    m = installed or candidate
    lines = [
        f"# {name}", "",
        f"- file: `{name}.safetensors` (safetensors, fp16 storage; metadata carries arch, kwargs, task, colour space, tile size, scale, data hash, steps, metrics)",
        f"- version: `{m.version}`",
        f"- architecture: `{m.arch}` `{json.dumps(m.kwargs, sort_keys=True)}`",
        f"- task: {m.task}; colour space: {m.color_space}; tile size: {m.tile_size} px input; scale: {m.scale}",
        f"- training: {m.steps} steps, recipe phase `{recipe.get('phase')}`, batch {recipe.get('batch_size')}, crop {recipe.get('crop')} px, "
        f"lr {recipe.get('lr')}, betas {recipe.get('betas')}, L1 {recipe.get('lambda_l1')}, adv {recipe.get('lambda_adv')}, perceptual {recipe.get('lambda_percep')}{_taps(recipe)}; "
        f"EMA weights: {ex.get('ema')}; precision {ex.get('precision')}; {ex.get('train_seconds')} s of CPU wall time; seed {ex.get('seed')}",
        f"- training data: {ex.get('train_images')} ESA/Hubble colour images (CC BY 4.0, credit ESA/Hubble & NASA; see ../shared/data/hubble_color/CREDITS.csv), "
        f"split by ESA release; validation releases: {len(ex.get('val_groups', []))}; data hash `{m.training_data_hash}`",
        "- intended use: AI-generated visualisation of Hubble images; not for photometry (use the flux-conserving product for that).",
        "", "## Promotion gate", "",
        f"Decision ({_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC): **{'promoted' if decision.promote else 'not promoted'}** - {decision.reason}", "",
        f"Candidate `{candidate.version}` metrics (validation, model and baseline on the same crops):", "",
        *_metric_table(decision.candidate), "",
    ]
    if decision.current:
        lines += ["Metrics of the weights it was compared with:", "", *_metric_table(decision.current), ""]
    if targets:
        lines += ["## Targets (issue 4)", "", "| check | value | threshold | met |", "|---|---|---|---|"]
        for t in targets:
            val = "-" if t["value"] is None else f"{t['value']:.4f}"
            thr = f"{t['threshold']:.4g}" if isinstance(t["threshold"], float) else t["threshold"]
            lines.append(f"| {t['model']}: {t['check']} | {val} | {thr} | {'yes' if t['met'] else 'NO'} |")
        lines.append("")
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return atomic_write_text(path, "\n".join(lines) + "\n")

