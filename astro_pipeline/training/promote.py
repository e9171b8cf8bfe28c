"""Promotion gate: a candidate replaces the shipped weights only if it is better, and says why.

Primary metric per task (clean protocol): colorizer CIEDE76 (lower), SR PSNR RGB (higher). A
candidate is promoted when its primary metric improves and no other metric worsens by more than
2%. With no current weights the candidate is installed, and the card says whether it beats its
trivial baseline on the primary metric. Current weights that do not beat that baseline only hold
the place: a candidate that improves the primary metric *and* beats the baseline replaces them even
if other metrics worsen (issue 4: ship the best model that beats its baseline); the card lists them.
Candidate and installed weights are compared on the same crops only: the metrics name their crop
set (``eval_set``), and installed weights scored on another set are re-scored on the candidate's
(``promote_candidate(rescore=...)``, built by ``evaluate.installed_rescorer``) or not compared.
Either way the decision and both sets of metrics go into a model card ``weights/<name>.md``.

Science gate (issue 19), from the source-level evaluation
(:mod:`astro_pipeline.training.source_eval`, metrics ``sources`` and ``sources:bicubic``): a new
default SR model (``superres``) replaces installed weights only when its completeness is at least
bicubic's minus 2 points in every flux bin, its false detections at most bicubic's plus 10%, and
its median flux ratio within 5% of 1. ``superres-gan`` is a labelled visualisation model: the
gate is run and its card states the verdict and false-detection rate, but it does not block.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astro_pipeline.fileio import atomic_write_text
from astro_pipeline.models.registry import WeightsError, WeightsMeta, load_weights, read_meta, save_weights

__all__ = ["GateDecision", "ScienceVerdict", "gate", "promote_candidate", "record_science_gate", "science_gate",
           "science_card_lines", "write_model_card", "PRIMARY", "HIGHER_IS_BETTER", "SCIENCE_GATED", "VISUALISATION_ONLY"]

#: (protocol, metric) deciding promotion, per weights name.
PRIMARY = {
    "colorizer": ("colorize", "ciede76"),
    "superres": ("sr-clean", "psnr_rgb"),
    "superres-gan": ("sr-clean", "psnr_rgb"),
}
BASELINE = {"colorizer": "colorize:baseline-grey", "superres": "sr-clean:baseline-bicubic", "superres-gan": "sr-clean:baseline-bicubic"}
#: (protocol, metric) a candidate may not lose at all against the installed weights (no tolerance):
#: the default SR model must not get worse on archive-like input (issue 22).
NOT_WORSE = {"superres": (("sr-degraded", "psnr_rgb"),)}
HIGHER_IS_BETTER = {"psnr_rgb": True, "psnr_y": True, "ssim": True, "ciede76": False, "lpips": False, "lr_rmse": False}
TOLERANCE = 0.02

#: Models the science gate decides for (the default SR model) and models it only labels.
SCIENCE_GATED = ("superres",)
VISUALISATION_ONLY = ("superres-gan",)
SCIENCE_COMPLETENESS_DROP = 0.02  # completeness (fraction) may fall at most 2 points below bicubic's, per bin
SCIENCE_FALSE_EXCESS = 0.10  # false detections at most bicubic's + 10%
SCIENCE_FLUX_TOLERANCE = 0.05  # |median flux ratio - 1| at most 5%


@dataclass
class ScienceVerdict:
    """The science gate's checks on source-level metrics; ``passed`` None when not evaluated."""

    passed: bool | None
    checks: list[dict[str, Any]]
    reason: str
    false_per_arcmin2: float | None = None
    baseline_false_per_arcmin2: float | None = None

    def summary(self) -> str:
        if self.passed is None:
            return f"science gate not evaluated ({self.reason})"
        return f"science gate {'PASS' if self.passed else 'FAIL'}: {self.reason}"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(float(v))


def science_gate(metrics: Mapping[str, Any], *, baseline: str = "bicubic") -> ScienceVerdict:
    """Completeness per bin, false detections and median flux ratio of ``metrics["sources"]``
    against ``metrics["sources:<baseline>"]`` (as :meth:`SourceEvalReport.metrics_for` makes them)."""
    model, base = metrics.get("sources"), metrics.get(f"sources:{baseline}")
    if not isinstance(model, Mapping) or not isinstance(base, Mapping):
        return ScienceVerdict(None, [], "no source-level evaluation in the metrics")
    checks: list[dict[str, Any]] = []

    def add(what: str, value: Any, threshold: Any, ok: bool) -> None:
        checks.append({"check": what, "value": float(value) if _finite(value) else None,
                       "threshold": float(threshold) if _finite(threshold) else None, "met": bool(ok)})

    bins = [k for k in model if k.startswith("completeness_")]
    if not bins:
        return ScienceVerdict(None, [], "source-level metrics carry no completeness bins")
    for k in bins:
        v, b = model.get(k), base.get(k)
        thr = b - SCIENCE_COMPLETENESS_DROP if _finite(b) else None
        add(f"completeness {k.removeprefix('completeness_')} >= {baseline}'s - {SCIENCE_COMPLETENESS_DROP:.2f}", v, thr,
            _finite(v) and thr is not None and v >= thr - 1e-12)
    fv, fb = model.get("false_per_arcmin2"), base.get("false_per_arcmin2")
    fthr = fb * (1 + SCIENCE_FALSE_EXCESS) if _finite(fb) else None
    add(f"false detections / arcmin^2 <= {baseline}'s x {1 + SCIENCE_FALSE_EXCESS:.2f}", fv, fthr,
        _finite(fv) and fthr is not None and fv <= fthr + 1e-12)
    fr = model.get("flux_ratio_median")
    add(f"abs(median flux ratio - 1) <= {SCIENCE_FLUX_TOLERANCE:.2f}", abs(fr - 1) if _finite(fr) else None,
        SCIENCE_FLUX_TOLERANCE, _finite(fr) and abs(fr - 1) <= SCIENCE_FLUX_TOLERANCE + 1e-12)
    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    failed = [f"{c['check']} ({num(c['value'])} vs {num(c['threshold'])})" for c in checks if not c["met"]]
    reason = "all checks met" if not failed else "fails: " + "; ".join(failed)
    return ScienceVerdict(not failed, checks, reason, float(fv) if _finite(fv) else None, float(fb) if _finite(fb) else None)


@dataclass
class GateDecision:
    """Whether to promote, and the evidence."""

    promote: bool
    reason: str
    candidate: dict[str, Any]
    current: dict[str, Any] | None
    worsened: list[str] = field(default_factory=list)
    science: ScienceVerdict | None = None
    current_rescored: bool = False  # the installed weights were re-scored on the candidate's crops


def _other_eval_set(candidate: Mapping[str, Any], current: Mapping[str, Any] | None, name: str) -> str | None:
    """Why ``current``'s metrics cannot be compared with ``candidate``'s (None: they can): the
    candidate names its crop set (``eval_set``) and the installed metrics come from another, or
    name none (scored before fingerprints, e.g. the 30-crop set of issue 4)."""
    want = candidate.get("eval_set")
    if not want or not current:
        return None
    proto, primary = PRIMARY[name]
    if primary not in current.get(proto, {}):
        return None  # nothing to compare with
    have = current.get("eval_set")
    if have == want:
        return None
    return (f"the installed weights' metrics come from another validation set ({have or 'not fingerprinted'}, "
            f"{current.get('eval_crops', '?')} crops) than the candidate's ({want})")


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
    """Decide promotion from metrics dicts as stored in weights metadata (``EvalReport.metrics_for``,
    plus ``SourceEvalReport.metrics_for`` for SR models): the metric gate, then the science gate.
    Metrics from different crop sets (``eval_set``) are not compared: the candidate is refused
    until the installed weights are re-scored on its crops (``promote_candidate(rescore=...)``)."""
    other = _other_eval_set(candidate, current, name)
    if other:
        return GateDecision(False, f"not compared: {other}; re-score them on the candidate's crops", candidate, current)
    decision = _metric_gate(name, candidate, current, tolerance=tolerance)
    if name not in SCIENCE_GATED + VISUALISATION_ONLY:
        return decision
    sci = science_gate(candidate)
    decision.science = sci
    proto, primary = PRIMARY[name]
    first = not current or primary not in current.get(proto, {})
    if name in SCIENCE_GATED and decision.promote and not first and sci.passed is not True:
        return GateDecision(False, f"{decision.reason}; but refused: {sci.summary()}", candidate, current,
                            decision.worsened, sci)
    tail = " (visualisation model: recorded, does not block)" if name in VISUALISATION_ONLY else ""
    decision.reason = f"{decision.reason}; {sci.summary()}{tail}"
    return decision


def _metric_gate(name: str, candidate: dict[str, Any], current: dict[str, Any] | None, *, tolerance: float) -> GateDecision:
    """Primary metric must improve; those in ``NOT_WORSE`` may not worsen at all; others may not
    worsen by more than ``tolerance``."""
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
    for p, m in NOT_WORSE.get(name, ()):
        new, old = candidate.get(p, {}).get(m), current.get(p, {}).get(m)
        if new is not None and old is not None and _better(m, old, new):
            return GateDecision(False, f"{primary} improves but {p}/{m} gets worse: {old:.4f} -> {new:.4f} (no tolerance)",
                                candidate, current, [f"{p}/{m}: {old:.4f} -> {new:.4f}"])
    worsened = []
    for p, vals in candidate.items():
        if not isinstance(vals, dict) or ":" in p or p.startswith("sources"):
            continue  # baselines; source-level metrics have their own (science) gate
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
    rescore: Callable[[Path], dict[str, Any]] | None = None,
) -> GateDecision:
    """Run the gate for ``candidate_path`` against ``weights_dir/<name>.safetensors``; on success
    install the candidate (with ``metrics`` written into its metadata). Always writes the model card.

    The installed weights' stored metrics are used only when they were scored on the candidate's
    crops (same ``eval_set``); otherwise ``rescore(installed_path)`` scores them on those crops
    (``evaluate.installed_rescorer``), and without it the candidate is refused, not compared."""
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
    current = current_meta.metrics if current_meta else None
    rescored = False
    if current_meta is not None and rescore is not None and _other_eval_set(metrics, current, name):
        current = rescore(target)
        rescored = True
    decision = gate(name, metrics, current)
    decision.current_rescored = rescored
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
        if isinstance(vals, dict) and not key.startswith("sources"):
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
        how = f" (re-scored on the candidate's crops, {decision.current.get('eval_set')})" if decision.current_rescored else ""
        lines += [f"Metrics of the weights it was compared with{how}:", "", *_metric_table(decision.current), ""]
    if decision.science is not None:
        lines += science_card_lines(name, decision.science, decision.candidate)
    if targets:
        lines += ["## Targets", "", "| check | value | threshold | met |", "|---|---|---|---|"]
        for t in targets:
            val = "-" if t["value"] is None else f"{t['value']:.4f}"
            thr = f"{t['threshold']:.4g}" if isinstance(t["threshold"], float) else t["threshold"]
            lines.append(f"| {t['model']}: {t['check']} | {val} | {thr} | {'yes' if t['met'] else 'NO'} |")
        lines.append("")
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return atomic_write_text(path, "\n".join(lines) + "\n")


_SCIENCE_BEGIN = "<!-- science-gate: begin -->"
_SCIENCE_END = "<!-- science-gate: end -->"


def science_card_lines(name: str, verdict: ScienceVerdict, metrics: Mapping[str, Any], *,
                       notes: Sequence[str] = ()) -> list[str]:
    """The card's science-gate section (between markers, so it can be re-recorded in place)."""
    src = metrics.get("sources") if isinstance(metrics.get("sources"), Mapping) else {}
    proto = (f"{src.get('frames')} frames x {src.get('realisations')} realisations, {src.get('per_bin')} sources per bin, "
             f"detection at {src.get('threshold_sigma')} sky sigma") if src else "not evaluated"
    role = ("the default SR model: promotion requires this gate" if name in SCIENCE_GATED
            else "a labelled visualisation model: the gate is recorded, it does not block" if name in VISUALISATION_ONLY
            else "informational")
    head = "PASS" if verdict.passed else "not evaluated" if verdict.passed is None else "FAIL"
    lines = [_SCIENCE_BEGIN, "## Science gate (source level, issue 19)", "",
             f"**{head}** ({role}). Protocol: point sources injected into linear frames, 4x block-averaged with noise at the "
             f"frame's level, reconstructed on the sweep's display stretch and detected beside bicubic ({proto}; "
             "docs/evaluation/sources.md).", ""]
    if verdict.false_per_arcmin2 is not None:
        ratio = (f", {verdict.false_per_arcmin2 / verdict.baseline_false_per_arcmin2:.2f}x bicubic's "
                 f"{verdict.baseline_false_per_arcmin2:.1f}") if verdict.baseline_false_per_arcmin2 else ""
        lines += [f"False detections: **{verdict.false_per_arcmin2:.1f} per square arcminute**{ratio}.", ""]
    if verdict.checks:
        lines += ["| check | value | threshold | met |", "|---|---|---|---|"]
        for c in verdict.checks:
            v = "-" if c["value"] is None else f"{c['value']:.4f}"
            t = "-" if c["threshold"] is None else f"{c['threshold']:.4f}"
            lines.append(f"| {c['check']} | {v} | {t} | {'yes' if c['met'] else 'NO'} |")
        lines.append("")
    if verdict.passed is False:
        lines += [f"Where it fails: {verdict.reason.removeprefix('fails: ')}.", ""]
    if name in VISUALISATION_ONLY:
        lines += ["Use: visualisation only. Its detail is generated, not measured: do not detect or measure sources on it.", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    return [*lines, _SCIENCE_END, ""]


def record_science_gate(card_path: str | Path, name: str, metrics: Mapping[str, Any], *,
                        notes: Sequence[str] = ()) -> ScienceVerdict:
    """Run the science gate on ``metrics`` and write its section (with ``notes``) into an existing
    model card, replacing an earlier one, leaving the rest of the card and the weights untouched."""
    path = Path(card_path)
    verdict = science_gate(metrics)
    text = path.read_text() if path.is_file() else f"# {name}\n"
    section = "\n".join(science_card_lines(name, verdict, metrics, notes=notes))
    if _SCIENCE_BEGIN in text and _SCIENCE_END in text:
        pre, rest = text.split(_SCIENCE_BEGIN, 1)
        post = rest.split(_SCIENCE_END, 1)[1].lstrip("\n")
        text = pre + section + "\n" + post
    else:
        marker = "\n## Targets"
        text = (text.replace(marker, "\n" + section + "\n" + marker.lstrip("\n"), 1) if marker in text
                else text.rstrip("\n") + "\n\n" + section)
    atomic_write_text(path, text)
    return verdict
