"""Prefect flow ``train_models``: train, evaluate and (through the promotion gate) ship weights.

Thin wrapper of :mod:`astro_pipeline.training` (``run_training``, ``evaluate_models``,
``promote_candidate``): the same steps ``astro-pipeline train --promote`` runs without Prefect.
Each model is trained (resuming from its last checkpoint), evaluated next to its baseline on the
validation split, and promoted into ``weights/`` only when the gate passes. The evaluation table
and the gate decisions are published as artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

__all__ = ["MODELS", "train_models"]

MODELS: tuple[str, ...] = ("colorizer", "superres", "superres-gan")


@task(name="train", cache_policy=NO_CACHE)
def train_task(model: str, steps: int, sources: list[str], output_dir: str, seed: int,
               time_limit_s: float | None, recipe: dict[str, Any]) -> Any:
    """Train one model; a killed run resumes from its checkpoint in ``output_dir/<model>``."""
    from astro_pipeline.training import run_training

    result = run_training(model=model, steps=steps, sources=list(sources), output_dir=output_dir, seed=seed,
                          resume=True, overrides=dict(recipe), time_limit_s=time_limit_s)
    for note in result.notes:
        get_run_logger().info("%s: %s", model, note)
    return result


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(result: Any, sources: list[str], output_dir: str, crop: int) -> Any:
    """Evaluate a candidate next to its baseline (grey-as-colour or bicubic) on validation crops."""
    from astro_pipeline.training.evaluate import evaluate_models

    spec: dict[str, Any] = {"colorizer": None, "superres": None, "superres_gan": None}
    spec[result.model.replace("-", "_")] = result.weights_path
    return evaluate_models(**spec, sources=list(sources), crop=crop, cases=("L", "B", "G", "R"),  # where the colorizer applies
                           output_dir=Path(output_dir) / result.model / "evaluation",
                           log_dirs={result.model: Path(result.weights_path).parent})


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(result: Any, report: Any, sources: list[str]) -> Any:
    """The promotion gate: install the candidate only if its primary metric improves (installed
    weights scored on other crops are re-scored on the candidate's)."""
    from astro_pipeline.training.evaluate import installed_rescorer
    from astro_pipeline.training.promote import promote_candidate

    metrics = report.metrics_for(result.model)
    if result.model in ("superres", "superres-gan"):  # the science gate needs the source-level evaluation
        from astro_pipeline.config import get_settings
        from astro_pipeline.training.source_eval import candidate_source_metrics

        metrics |= candidate_source_metrics(result.model, result.weights_path, cache_dir=get_settings().cache_dir)
    rescore = installed_rescorer(result.model, sources=list(sources), crop=report.crop, per_image=report.per_image,
                                 seed=report.seed, val_fraction=report.val_fraction)
    return promote_candidate(result.weights_path, name=result.model, metrics=metrics,
                             targets=report.targets, notes=result.notes, rescore=rescore)


@flow(name="train-models", log_prints=True)
def train_models(
    models: list[str] | None = None,
    steps: int = 1000,
    sources: list[str] | None = None,
    output_dir: str = "training_runs",
    seed: int = 0,
    time_limit_s: float | None = None,
    evaluate: bool = True,
    promote: bool = True,
    eval_crop: int = 256,
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the named models (default: all three, colorizer first, SRGAN after SRResNet).

    ``sources``: ``hubble`` (the shared colour images), ``folder:PATH`` or ``approved`` (curator-
    approved catalog items); ``recipe``: recipe field overrides passed to the trainer.
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    chosen = list(models or MODELS)
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected some of {list(MODELS)}")
    srcs = list(sources or ["hubble"])
    summary: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    decisions: list[str] = []
    for name in [m for m in MODELS if m in chosen]:  # superres-gan starts from the superres candidate
        result = train_task(name, steps, srcs, output_dir, seed, time_limit_s, dict(recipe or {}))
        entry: dict[str, Any] = {"weights": str(result.weights_path), "steps": result.steps}
        if evaluate:
            report = evaluate_task(result, srcs, output_dir, eval_crop)
            rows.extend({"model": name, **{k: v for k, v in r.items() if not isinstance(v, dict | list)}}
                        for r in report.table)
            if promote:
                decision = promote_task(result, report, srcs)
                entry["promoted"] = bool(decision.promote)
                decisions.append(f"- **{name}**: {'promoted' if decision.promote else 'kept current'}: "
                                 f"{decision.reason}")
        summary[name] = entry
    if rows:
        create_table_artifact(table=rows, key="model-evaluation",
                              description="Validation metrics of each candidate next to its baseline")
    if decisions:
        create_markdown_artifact(markdown="# Promotion gate\n\n" + "\n".join(decisions) + "\n",
                                 key="model-promotion")
    return summary
