"""``astro-pipeline train`` and ``astro-pipeline evaluate``: training without Prefect, and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from astro_pipeline.cli._app import app


@app.command()
def train(
    model: str = typer.Option(..., "--model", "-m", help="colorizer | superres | superres-gan | bandcolor"),
    steps: int = typer.Option(1000, "--steps", help="Total optimisation steps (including any resumed ones)."),
    source: list[str] = typer.Option(["hubble"], "--source", "-s", help="Data source: hubble | folder:PATH | approved[:color|grey] (repeatable)."),
    output: Path = typer.Option(Path("training_runs"), "--output", "-o", help="Run folder: checkpoints, logs, candidate weights."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the last checkpoint in the run folder."),
    time_limit: float | None = typer.Option(None, "--time-limit", help="Stop (after a checkpoint) after this many seconds."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda[:N] (default: settings)"),
    precision: str | None = typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16 (default: settings)"),
    init_from: str | None = typer.Option(None, "--init-from", help="Weights to start from: superres-gan its L1 weights; superres/colorizer the same architecture, or a shallower SRResNet of the same width to grow."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Override the recipe's batch size."),
    recipe_json: str | None = typer.Option(None, "--recipe-json", help='Recipe field overrides as JSON, e.g. \'{"crop": 64}\'.'),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Evaluate the candidate afterwards."),
    eval_crop: int = typer.Option(256, "--eval-crop", help="Validation crop size (truth px)."),
    promote: bool = typer.Option(False, "--promote/--no-promote", help="Run the promotion gate into weights/ (writes the model card)."),
    sources: bool = typer.Option(True, "--sources/--no-sources", help="SR: run the source-level evaluation for the science gate before promoting (minutes; without it a default SR model cannot replace installed weights)."),
) -> None:
    """Train one model from colour images (resumable; a killed run continues from its checkpoint)."""
    from astro_pipeline.cli._common import console
    from astro_pipeline.training import run_training

    import json

    overrides = json.loads(recipe_json) if recipe_json else {}
    if batch_size:
        overrides["batch_size"] = batch_size
    if model == "bandcolor":
        _train_bandcolor(steps=steps, sources=list(source), output=output, seed=seed, threads=threads, time_limit=time_limit,
                         overrides=overrides, evaluate=evaluate, promote=promote)
        return
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
    from astro_pipeline.training.evaluate import evaluate_models, installed_rescorer

    spec = {"colorizer": None, "superres": None, "superres-gan": None}
    spec[result.model] = result.weights_path
    on_crops = {"sources": list(source), "crop": eval_crop, "val_fraction": overrides.get("val_fraction", 0.12)}
    report = evaluate_models(colorizer=spec["colorizer"], superres=spec["superres"], superres_gan=spec["superres-gan"],
                             **on_crops, output_dir=output / result.model / "evaluation",
                             cases=("L", "B", "G", "R"),  # where the L -> ab colorizer applies
                             log_dirs={result.model: result.weights_path.parent})
    for row in report.table:
        console.print(f"{row['protocol']:12s} {row['method']:22s} PSNR {row['psnr_rgb']:.2f}  CIEDE76 {row['ciede76']:.2f}  LPIPS {row['lpips'] if row['lpips'] is None else round(row['lpips'], 4)}")
    if promote:
        from astro_pipeline.training.promote import promote_candidate

        metrics = report.metrics_for(result.model)
        if sources and result.model in ("superres", "superres-gan"):  # the science gate needs the source-level evaluation
            from astro_pipeline.config import get_settings
            from astro_pipeline.training.source_eval import candidate_source_metrics

            metrics |= candidate_source_metrics(result.model, result.weights_path, cache_dir=get_settings().cache_dir)
        decision = promote_candidate(result.weights_path, name=result.model, metrics=metrics,
                                     targets=report.targets, notes=result.notes,
                                     rescore=installed_rescorer(result.model, **on_crops))  # installed weights on these crops
        console.print(f"promotion: {'PROMOTED' if decision.promote else 'kept current'} - {decision.reason}")


def _train_bandcolor(*, steps: int, sources: list[str], output: Path, seed: int, threads: int | None, time_limit: float | None,
                     overrides: dict, evaluate: bool, promote: bool) -> None:
    """The band-aware colour model: feature cache, head training, read-out tuning, per-case evaluation, gate."""
    from astro_pipeline.cli._common import console
    from astro_pipeline.config import get_settings
    from astro_pipeline.training.bandrun import evaluate_candidate, install, package, run_bandcolor_training, tune_readout

    settings = get_settings()
    out = output / "bandcolor"
    try:
        weights = run_bandcolor_training(sources=sources, output_dir=out, steps=steps, vgg_path=settings.perceptual_weights,
                                         seed=seed, threads=threads, time_limit_s=time_limit, recipe_overrides=overrides)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"bandcolor: weights {weights}")
    if not evaluate:
        return
    import numpy as np

    from astro_pipeline.models.registry import load_weights
    from astro_pipeline.sky_level import sky_lightness
    from astro_pipeline.training.datasets import load_rgb_uint8
    from astro_pipeline.training.sources import collect_items, split_by_group

    model, _ = load_weights(weights)
    dev = out / "cache" / "dev.npz"
    choice = tune_readout(model, dev) if dev.is_file() else None
    train_items, _ = split_by_group(collect_items(sources))
    sky = float(np.nanmedian([sky_lightness(load_rgb_uint8(i.path)) for i in train_items if i.kind == "color"]))
    candidate = package(weights, out / "bandcolor-candidate.safetensors", choice=choice, sky_lightness=sky)
    report, gate = evaluate_candidate(candidate, sources=sources, vgg_path=settings.perceptual_weights)
    from astro_pipeline.training.band_eval import write_band_report

    write_band_report(report, out / "evaluation", gate=gate)
    console.print(f"bandcolor: gate {'PASSED' if gate['promote'] else 'failed'}; report {out / 'evaluation' / 'band_report.md'}")
    if promote:
        res = install(candidate, report=report, gate=gate, weights_dir=Path(settings.weights_dir), notes=[],
                      next_lever="see the failed checks", card_name="colorizer" if gate["promote"] else "bandcolor")
        console.print(f"promotion: {'PROMOTED as the default colour model' if res['promoted'] else 'not promoted'}; card {res['card']}")


@app.command("evaluate-bands")
def evaluate_bands_cmd(
    weights: str = typer.Option(..., "--weights", "-w", help="Band colour model weights (name or path); none is shipped (not promoted)."),
    output: Path = typer.Option(Path("docs/evaluation"), "--output", "-o", help="Folder for band_report.md/.json and contact sheets."),
    source: list[str] = typer.Option(["hubble"], "--source", "-s", help="Data sources (validation releases are held out)."),
    superres: str | None = typer.Option("superres", "--superres", help="Upscaler for the enhance check ('' to skip)."),
    per_image: int = typer.Option(4, "--per-image", help="Validation crops per held-out image."),
    threads: int | None = typer.Option(None, "--threads"),
) -> None:
    """Score a band-aware colour model on every colour case, each beside its baseline, and run its gate."""
    import torch

    from astro_pipeline.cli._common import console
    from astro_pipeline.config import get_settings
    from astro_pipeline.models.registry import WeightsError, resolve_weights_path
    from astro_pipeline.training.band_eval import write_band_report
    from astro_pipeline.training.bandrun import evaluate_candidate

    if threads:
        torch.set_num_threads(threads)
    try:
        path = resolve_weights_path(weights)
        report, gate = evaluate_candidate(path, sources=list(source), vgg_path=get_settings().perceptual_weights,
                                          superres=superres or None, per_image=per_image)
    except (WeightsError, ValueError, FileNotFoundError, AssertionError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    write_band_report(report, output, gate=gate)
    for r in report.rows:
        console.print(f"{r['case']:3s} {r['method']:18s} PSNR {r['psnr']:.2f}  CIEDE76 {r['ciede76']:.2f}  chroma {r['chroma_pooled']:.3f}")
    console.print(f"gate: {'promote' if gate['promote'] else 'do not promote'}; report {output / 'band_report.md'}")


@app.command("evaluate")
def evaluate_cmd(
    output: Path = typer.Option(Path("docs/evaluation"), "--output", "-o", help="Report folder (report.md, report.csv, report.json, figures)."),
    colorizer: str | None = typer.Option("colorizer", "--colorizer", help="Weights name or path ('' to skip)."),
    superres: str | None = typer.Option("superres", "--superres", help="Weights name or path ('' to skip)."),
    superres_gan: str | None = typer.Option("superres-gan", "--superres-gan", help="Weights name or path ('' to skip)."),
    source: list[str] = typer.Option(["hubble"], "--source", "-s", help="Data sources (validation releases are held out)."),
    logs: Path | None = typer.Option(None, "--logs", help="Training run folder with <model>/log.jsonl for loss curves."),
    per_image: int = typer.Option(4, "--per-image", help="Validation crops per held-out image (30 images x 4 = 120 crops)."),
    crop: int = typer.Option(256, "--crop", help="Validation crop size (truth px)."),
    case: list[str] = typer.Option([], "--case", help="Colour cases to run (repeatable): L, B, G, R, R+B, G+R, B+G (default: all)."),
    lpips: bool = typer.Option(True, "--lpips/--no-lpips", help="VGG16 measures: LPIPS and KID."),
    sky_gap: bool = typer.Option(True, "--sky-gap/--no-sky-gap", help="Measure the sky/histogram gap of the colorizer's input."),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples for the intervals."),
    val_fraction: float = typer.Option(0.12, "--val-fraction", help="Share of releases held out (keep 0.12: the split the shipped weights trained with)."),
    notes: Path | None = typer.Option(None, "--notes", help="Text file of report notes (training runs, gaps), one per paragraph."),
    rerender: bool = typer.Option(False, "--rerender", help="Only rewrite report.md/csv/json from OUTPUT/report.json (e.g. new --notes); no evaluation."),
    sources_only: bool = typer.Option(False, "--sources-only", help="Run only the source-level SR evaluation and put its section into OUTPUT/report.json (the rest re-rendered from it)."),
    threads: int | None = typer.Option(None, "--threads"),
    sources: bool = typer.Option(True, "--sources/--no-sources", help="Source-level SR evaluation (injected point sources) and the science gate."),
    realisations: int | None = typer.Option(None, "--realisations", min=1, help="Source-level realisations (default: the fixed protocol's 5)."),
    record_cards: bool = typer.Option(False, "--record-cards/--no-record-cards", help="Write the science-gate verdict into weights/<model>.md of the evaluated weights names."),
    dev_frames: bool = typer.Option(False, "--dev-frames", help="Source level on the dev frames (source_eval.DEV_REAL_FRAMES: for tuning a recipe) instead of the fixed held-out ones; never recorded in cards."),
) -> None:
    """Evaluate models against baselines on held-out releases and write the report."""
    import time

    import torch

    from astro_pipeline.cli._common import console
    from astro_pipeline.models.registry import WeightsError
    from astro_pipeline.training.evaluate import evaluate_models
    from astro_pipeline.training.report import case_of

    if threads:
        torch.set_num_threads(threads)
    if dev_frames and record_cards:
        console.print("[red]error:[/red] --dev-frames results are for tuning; they are never recorded in the cards (drop --record-cards)")
        raise typer.Exit(2)
    log_dirs = {}
    if logs is not None:
        log_dirs = {m: logs / m for m in ("colorizer", "superres", "superres-gan") if (logs / m / "log.jsonl").is_file()}
    note_lines: list[str] = []
    if notes is not None:
        try:
            note_lines = [" ".join(p.split()) for p in notes.read_text().split("\n\n") if p.strip()]
        except OSError as exc:
            console.print(f"[red]error:[/red] {notes}: cannot read notes ({exc.strerror or exc})")
            raise typer.Exit(2) from exc
    sr_models = {n: s for n, s in (("superres", superres), ("superres-gan", superres_gan)) if s}
    if rerender or sources_only:
        from astro_pipeline.training.report import load_report, write_report

        try:
            report = load_report(output / "report.json")
        except (OSError, ValueError, KeyError) as exc:
            console.print(f"[red]error:[/red] {output / 'report.json'}: cannot re-render ({exc})")
            raise typer.Exit(2) from exc
        if notes is not None:
            report.notes = note_lines
        if sources_only:
            if not sr_models:
                console.print("[red]error:[/red] --sources-only needs --superres and/or --superres-gan weights")
                raise typer.Exit(2)
            report.sources = _source_level(sr_models, output, realisations=realisations, record_cards=record_cards,
                                           dev=dev_frames)
        write_report(report, output)
        console.print(f"report: {output / 'report.md'} ({'source level added' if sources_only else 're-rendered'} from report.json)")
        return
    t0 = time.perf_counter()
    try:
        report = evaluate_models(colorizer=colorizer or None, superres=superres or None, superres_gan=superres_gan or None,
                                 sources=list(source), per_image=per_image, crop=crop, cases=list(case) or None,
                                 use_lpips=lpips, sky_gap=sky_gap, n_boot=n_boot, val_fraction=val_fraction,
                                 output_dir=output, log_dirs=log_dirs, notes=note_lines,
                                 progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except (WeightsError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    for row in report.table:
        c = case_of(row["protocol"])
        name = f"case {c}" if c else row["protocol"]
        lo, hi = row["ci"].get("psnr_rgb", (float("nan"), float("nan")))
        kid = "" if row.get("kid") is None else f"  KIDx1e3 {row['kid'] * 1e3:.2f}"
        console.print(f"{name:14s} {row['method']:22s} PSNR {row['psnr_rgb']:.2f} [{lo:.2f}, {hi:.2f}]  CIEDE76 {row['ciede76']:.2f}"
                      f"  chroma {row['chroma_ratio']:.3f}{kid}")
    if report.kid_truth_split:
        console.print(f"KID truth vs truth (split by release) x1e3: {report.kid_truth_split[0] * 1e3:.2f}")
    if report.sky_gap is not None:
        for r in report.sky_gap.rows():
            console.print(f"sky L* {r['set']:22s} median {r['sky_median']:.1f}  gap {r['sky_gap']:+.1f}  histogram EMD {r['hist_emd']:.1f}")
    for t in report.targets + report.colour_targets:
        console.print(f"target {t['model']}: {t['check']}: {t['value']:.4f} -> {'met' if t['met'] else 'NOT met'}")
    if sources and sr_models:
        from astro_pipeline.training.report import write_report

        report.sources = _source_level(sr_models, output, realisations=realisations, record_cards=record_cards,
                                       dev=dev_frames)
        write_report(report, output)  # the report again, with its source-level section
    console.print(f"report: {output / 'report.md'} ({(time.perf_counter() - t0) / 60:.1f} min)")


def _source_level(models: dict[str, str], output: Path, *, realisations: int | None, record_cards: bool,
                  dev: bool = False) -> dict[str, Any]:
    """Source-level evaluation of the SR weights and the science gate: ``sources.md/csv`` and the
    figure under ``output`` (and the cards); returns the summary the report's section is made from.
    ``dev``: on the dev frames (tuning), not the fixed ones."""
    import dataclasses

    from astro_pipeline.cli._common import console
    from astro_pipeline.config import get_settings
    from astro_pipeline.training import source_eval as se
    from astro_pipeline.training.promote import record_science_gate, science_gate

    cfg = se.SourceEvalConfig() if realisations is None else dataclasses.replace(se.SourceEvalConfig(), realisations=realisations)
    settings = get_settings()
    notes: list[str] = []
    frames = se.dev_frames(scale=cfg.scale, notes=notes) if dev else None
    for note in notes:
        console.print(note)
    rep = se.evaluate_sources(models, frames=frames, config=cfg, cache_dir=settings.cache_dir,
                              weights_dir=settings.weights_dir, notes=notes)
    verdicts = {n: science_gate(rep.metrics_for(n)) for n in models}
    files = se.write_source_report(rep, output, verdicts=verdicts)
    for n, v in verdicts.items():
        s = rep.summary(n)
        console.print(f"sources {n:13s} false/arcmin2 {s['false_per_arcmin2']:.1f} (bicubic {rep.summary('bicubic')['false_per_arcmin2']:.1f})"
                      f"  flux ratio {s['flux_ratio_median']:.3f}  -> {v.summary()}" + ("  (dev frames: not the gate)" if dev else ""))
        card = Path(settings.weights_dir) / f"{n}.md"
        if record_cards and models[n] == n:  # a weights name, not a path: its card is the shipped one
            record_science_gate(card, n, rep.metrics_for(n))
            console.print(f"card: {card}")
    return se.report_summary(rep, verdicts=verdicts, figure=files[-1].name)
