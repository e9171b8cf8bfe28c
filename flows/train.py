"""Prefect flow ``train_models``: train, evaluate and (through the promotion gate) ship weights.

Thin wrapper of :mod:`astro_pipeline.training` (``run_training`` / ``evaluate_models``), the same
functions ``astro-pipeline train`` and ``astro-pipeline evaluate`` call without Prefect. The
evaluation table is published as a Prefect table artifact.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from astro_pipeline.config import Settings, get_settings

__all__ = ["train_models"]

MODELS: tuple[str, ...] = ("colorizer", "superres", "superres-gan")


def _call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call ``fn`` with the keyword arguments it accepts (the training API owns its signature)."""
    sig = inspect.signature(fn)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return fn(**{k: v for k, v in kwargs.items() if v is not None})
    return fn(**{k: v for k, v in kwargs.items() if k in sig.parameters and v is not None})


@task(name="train", cache_policy=NO_CACHE)
def train_task(model: str, steps: int | None, sources: list[str] | None, settings: Settings,
               options: dict[str, Any]) -> Any:
    """Train one model (resumes from its last checkpoint)."""
    from astro_pipeline.training import run_training

    return _call(run_training, model=model, steps=steps, sources=sources, settings=settings, **options)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(models: list[str], settings: Settings, options: dict[str, Any]) -> Any:
    """Evaluate models against their baselines (grey-as-colour, bicubic) on validation crops."""
    from astro_pipeline.training import evaluate_models

    return _call(evaluate_models, models=models, settings=settings, **options)


def _table(evaluation: Any) -> list[dict[str, Any]]:
    """The evaluation result as table rows (a DataFrame, a list of dicts, or an object with ``rows``)."""
    if evaluation is None:
        return []
    if hasattr(evaluation, "to_dict"):
        try:
            return list(evaluation.to_dict(orient="records"))
        except TypeError:
            pass
    rows = getattr(evaluation, "rows", evaluation)
    if isinstance(rows, dict):
        rows = [{"metric": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in rows.items()]
    return [dict(r) if not isinstance(r, dict) else r for r in rows] if isinstance(rows, list) else []


@flow(name="train-models", log_prints=True)
def train_models(
    models: list[str] | None = None,
    steps: int | None = None,
    sources: list[str] | None = None,
    evaluate: bool = True,
    options: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the named models (default: all three), then evaluate them and publish the table.

    ``sources``: training data sources, e.g. a folder of colour images or ``approved`` (the
    curator-approved catalog items); ``options``: passed through to the training API.
    """
    from prefect.artifacts import create_table_artifact

    base = get_settings()
    settings = base.with_overrides(**overrides) if overrides else base
    chosen = list(models or MODELS)
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected some of {list(MODELS)}")
    opts = dict(options or {})
    trained = {m: train_task(m, steps, sources, settings, opts) for m in chosen}
    result: dict[str, Any] = {"trained": {m: str(v) for m, v in trained.items()}}
    if evaluate:
        evaluation = evaluate_task(chosen, settings, opts)
        rows = _table(evaluation)
        if rows:
            create_table_artifact(table=rows, key="model-evaluation", description="Validation metrics vs baselines")
        result["evaluation"] = rows
    get_run_logger().info("trained %s", ", ".join(chosen))
    return result
