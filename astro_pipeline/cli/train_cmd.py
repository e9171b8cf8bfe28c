"""``astro-pipeline train`` and ``astro-pipeline evaluate``: training without Prefect, and the report."""

from __future__ import annotations

from pathlib import Path

import typer

from astro_pipeline.cli._app import app


@app.command()
def train(
    model: str = typer.Option(..., "--model", "-m", help="colorizer | superres | superres-gan"),
    steps: int = typer.Option(1000, "--steps", help="Total optimisation steps (including any resumed ones)."),
    source: list[str] = typer.Option(["hubble"], "--source", "-s", help="Data source: hubble | folder:PATH | approved[:color|grey] (repeatable)."),
    output: Path = typer.Option(Path("training_runs"), "--output", "-o", help="Run folder: checkpoints, logs, candidate weights."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the last checkpoint in the run folder."),
    time_limit: float | None = typer.Option(None, "--time-limit", help="Stop (after a checkpoint) after this many seconds."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda[:N] (default: settings)"),
    precision: str | None = typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16 (default: settings)"),
    init_from: str | None = typer.Option(None, "--init-from", help="superres-gan: L1 weights to start from."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Override the recipe's batch size."),
    recipe_json: str | None = typer.Option(None, "--recipe-json", help='Recipe field overrides as JSON, e.g. \'{"crop": 64}\'.'),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Evaluate the candidate afterwards."),
    eval_crop: int = typer.Option(256, "--eval-crop", help="Validation crop size (truth px)."),
    promote: bool = typer.Option(False, "--promote/--no-promote", help="Run the promotion gate into weights/ (writes the model card)."),
) -> None:
    """Train one model from colour images (resumable; a killed run continues from its checkpoint)."""
    from astro_pipeline.cli._common import console
    from astro_pipeline.training import run_training

    import json

    overrides = json.loads(recipe_json) if recipe_json else {}
    if batch_size:
        overrides["batch_size"] = batch_size
    try:
        result = run_training(
            model=model, steps=steps, sources=list(source), output_dir=output, seed=seed, resume=resume,
            overrides=overrides, init_from=init_from, device=device, precision=precision, threads=threads,
            time_limit_s=time_limit,
            progress=lambda s, row: console.print(f"step {s}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "step")),
        )
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    for note in result.notes:
        console.print(note)
    console.print(f"{result.model}: {result.steps} steps ({result.precision}), candidate {result.weights_path}")
    if not evaluate:
        return
    from astro_pipeline.training.evaluate import evaluate_models

    spec = {"colorizer": None, "superres": None, "superres-gan": None}
    spec[result.model] = result.weights_path
    report = evaluate_models(colorizer=spec["colorizer"], superres=spec["superres"], superres_gan=spec["superres-gan"],
                             sources=list(source), output_dir=output / result.model / "evaluation",
                             crop=eval_crop, val_fraction=overrides.get("val_fraction", 0.12),
                             log_dirs={result.model: result.weights_path.parent})
    for row in report.table:
        console.print(f"{row['protocol']:12s} {row['method']:22s} PSNR {row['psnr_rgb']:.2f}  CIEDE76 {row['ciede76']:.2f}  LPIPS {row['lpips'] if row['lpips'] is None else round(row['lpips'], 4)}")
    if promote:
        from astro_pipeline.training.promote import promote_candidate

        decision = promote_candidate(result.weights_path, name=result.model, metrics=report.metrics_for(result.model),
                                     targets=report.targets, notes=result.notes)
        console.print(f"promotion: {'PROMOTED' if decision.promote else 'kept current'} - {decision.reason}")


@app.command("evaluate")
def evaluate_cmd(
    output: Path = typer.Option(Path("docs/evaluation"), "--output", "-o", help="Report folder (report.md, report.csv, figures)."),
    colorizer: str | None = typer.Option("colorizer", "--colorizer", help="Weights name or path ('' to skip)."),
    superres: str | None = typer.Option("superres", "--superres", help="Weights name or path ('' to skip)."),
    superres_gan: str | None = typer.Option("superres-gan", "--superres-gan", help="Weights name or path ('' to skip)."),
    source: list[str] = typer.Option(["hubble"], "--source", "-s", help="Data sources (validation releases are held out)."),
    logs: Path | None = typer.Option(None, "--logs", help="Training run folder with <model>/log.jsonl for loss curves."),
    per_image: int = typer.Option(1, "--per-image", help="Validation crops per held-out image."),
    lpips: bool = typer.Option(True, "--lpips/--no-lpips"),
    threads: int | None = typer.Option(None, "--threads"),
) -> None:
    """Evaluate models against baselines on held-out releases and write the report."""
    import torch

    from astro_pipeline.cli._common import console
    from astro_pipeline.models.registry import WeightsError
    from astro_pipeline.training.evaluate import evaluate_models

    if threads:
        torch.set_num_threads(threads)
    log_dirs = {}
    if logs is not None:
        log_dirs = {m: logs / m for m in ("colorizer", "superres", "superres-gan") if (logs / m / "log.jsonl").is_file()}
    try:
        report = evaluate_models(colorizer=colorizer or None, superres=superres or None, superres_gan=superres_gan or None,
                                 sources=list(source), per_image=per_image, use_lpips=lpips, output_dir=output, log_dirs=log_dirs)
    except (WeightsError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    for row in report.table:
        console.print(f"{row['protocol']:12s} {row['method']:22s} PSNR {row['psnr_rgb']:.2f}  CIEDE76 {row['ciede76']:.2f}")
    for t in report.targets:
        console.print(f"target {t['model']}: {t['check']}: {t['value']:.4f} -> {'met' if t['met'] else 'NOT met'}")
    console.print(f"report: {output / 'report.md'}")
