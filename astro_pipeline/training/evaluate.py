"""Honest evaluation on held-out ESA releases: every model next to its trivial baseline, same crops.

Protocols (crops of the validation releases, 256 px truth, 4 per image by default):
- colour cases (``colour_cases``): lightness alone (protocol ``colorize``) against grey-as-colour;
  one chromatic slot given (``given-B``/``-G``/``-R``) against that slot replicated; two slots
  given (``given-R+B``/``-G+R``/``-B+G``) against the naive fill and a linear fit fitted on
  training releases. Colour methods are pluggable (:class:`~astro_pipeline.training.colour_cases.ColourMethod`).
- ``sr-clean``: LR = Pillow antialiased bicubic 4x reduction; model against bicubic 4x upscaling.
- ``sr-degraded``: LR additionally blurred, noised and JPEG-compressed (fixed seed); same baselines.
- ``enhance``: 64 px grey (L* of the clean LR) -> colorizer -> superres, against bicubic-upscaled grey.
Measures (``scoring``): PSNR (RGB, Y), SSIM, CIEDE76, LPIPS (VGG16 v0.1), pooled chroma ratio, hue
spread, KID (VGG16 relu5_3), LR consistency; means with bootstrap intervals over crops. Outputs are
quantised to 8 bits first, as products are. Real-data checks: the Horseshoe (``horseshoe``) and the
sky/histogram gap of the colorizer's input (``sky_gap``). The report is built by ``report``.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from astro_pipeline.models.registry import WeightsMeta, load_weights
from astro_pipeline.training import metrics as M
from astro_pipeline.training.colorspace import lab_to_srgb, srgb_to_lab
from astro_pipeline.training.colour_cases import (
    CASES,
    ColourMethod,
    LinearFill,
    baseline_methods,
    case_by_name,
    colorizer_methods,
    fit_linear_fill,
    make_input,
    methods_for,
)
from astro_pipeline.training.colour_targets import colour_targets
from astro_pipeline.training.datasets import TrainingDataError, degrade_lr, downscale_bicubic, load_rgb_uint8
from astro_pipeline.training.figures import plot_loss_curve, write_contact_sheet, write_labelled_sheet
from astro_pipeline.training.horseshoe import horseshoe_check
from astro_pipeline.training.intervals import Bootstrap
from astro_pipeline.training.report import METRIC_COLUMNS, EvalReport, sky_gap_summary, write_report
from astro_pipeline.training.scoring import Scorer, kid_halves
from astro_pipeline.training.sky_gap import SkyGap
from astro_pipeline.training.sources import Source, TrainingItem, collect_items, split_by_group

__all__ = [
    "EvalReport",
    "ValidationSet",
    "evaluate_models",
    "crop_set_fingerprint",
    "installed_rescorer",
    "validation_set",
    "validation_crops",
    "training_crops",
    "check_targets",
    "horseshoe_check",
    "write_report",
    "TARGETS",
    "METRIC_COLUMNS",
    "DEFAULT_PER_IMAGE",
]

log = logging.getLogger(__name__)

#: Validation crops per held-out image: 30 images of 25 releases give 120 crops.
DEFAULT_PER_IMAGE = 4

#: Issue 4 targets (clean protocol), checked and reported.
TARGETS = {
    "colorizer": "PSNR >= grey + 2.0 dB; CIEDE76 <= 0.7 x grey; chroma ratio >= 0.60",
    "superres": "PSNR(RGB) >= bicubic + 1.0 dB (issue 22; 1.5 the aim); LPIPS < bicubic",
    "superres-gan": "LPIPS < superres",
    "enhance": "PSNR >= bicubic-upscaled grey + 1.0 dB",
}

ModelSpec = str | Path | tuple[nn.Module, WeightsMeta] | None


@dataclass(frozen=True)
class ValidationSet:
    """Validation crops (N, 3, crop, crop) in [0, 1], the release and image of each crop, and the releases."""

    crops: torch.Tensor
    crop_groups: list[str]
    crop_images: list[str]
    groups: list[str]

    @property
    def n_images(self) -> int:
        return len(set(self.crop_images))


def _crops_of(img: np.ndarray, rng: np.random.Generator, crop: int, per_image: int) -> list[np.ndarray]:
    """Up to ``per_image`` random crops of one image, skipping empty sky (50 tries)."""
    out: list[np.ndarray] = []
    tries = 0
    h, w = img.shape[:2]
    while len(out) < per_image and tries < 50:
        tries += 1
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        c = img[y : y + crop, x : x + crop]
        if c.mean() < 8 and c.std() < 4:
            continue
        out.append(c)
    return out


def _colour_items(sources: Sequence[str | Source], val_fraction: float, *, validation: bool) -> list[TrainingItem]:
    train, val = split_by_group(collect_items(list(sources)), val_fraction=val_fraction)
    return [i for i in (val if validation else train) if i.kind == "color"]


def validation_set(sources: Sequence[str | Source], *, crop: int = 256, per_image: int = DEFAULT_PER_IMAGE, seed: int = 0,
                   val_fraction: float = 0.12) -> ValidationSet:
    """Deterministic crops of the validation releases (the split the models were trained with)."""
    val = _colour_items(sources, val_fraction, validation=True)
    if not val:
        raise ValueError("validation split is empty: need colour images from more than one release")
    rng = np.random.default_rng(seed)
    crops: list[np.ndarray] = []
    crop_groups: list[str] = []
    crop_images: list[str] = []
    for item in val:
        img = load_rgb_uint8(item.path, kind=item.kind)
        if min(img.shape[:2]) < crop:
            continue
        got = _crops_of(img, rng, crop, per_image)
        crops += got
        crop_groups += [item.group] * len(got)
        crop_images += [item.path.name] * len(got)
    if not crops:
        raise TrainingDataError(f"no validation image of at least {crop} px among {len(val)} items")
    arr = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
    return ValidationSet(arr, crop_groups, crop_images, sorted(set(crop_groups)))


def validation_crops(sources: list[str | Source], *, crop: int = 256, per_image: int = 1, seed: int = 0,
                     val_fraction: float = 0.12) -> tuple[torch.Tensor, list[str]]:
    """Deterministic crops (N,3,crop,crop) in [0,1] of the validation releases, skipping empty sky."""
    vs = validation_set(sources, crop=crop, per_image=per_image, seed=seed, val_fraction=val_fraction)
    return vs.crops, vs.groups


def training_crops(sources: Sequence[str | Source], *, crop: int = 256, per_image: int = 2, seed: int = 0,
                   val_fraction: float = 0.12) -> Iterator[np.ndarray]:
    """Random (crop, crop, 3) uint8 crops of the TRAINING releases, one image decoded at a time."""
    rng = np.random.default_rng(seed)
    for item in _colour_items(sources, val_fraction, validation=False):
        img = load_rgb_uint8(item.path, kind=item.kind)
        if min(img.shape[:2]) >= crop:
            yield from _crops_of(img, rng, crop, per_image)


def crop_set_fingerprint(crops: torch.Tensor) -> str:
    """A short digest of the validation crops themselves (8-bit, shape included): two evaluations
    compare only when their fingerprints match (the promotion gate checks this)."""
    import hashlib

    q = (crops.clamp(0, 1) * 255 + 0.5).to(torch.uint8).contiguous().numpy()
    h = hashlib.sha256(repr(tuple(q.shape)).encode())
    h.update(q.tobytes())
    return f"{len(q)}x{q.shape[-1]}px:{h.hexdigest()[:16]}"


def _load(spec: ModelSpec) -> tuple[nn.Module, WeightsMeta] | None:
    if spec is None:
        return None
    if isinstance(spec, tuple):
        return spec
    return load_weights(spec)


@torch.inference_mode()
def _run(model: nn.Module, x: torch.Tensor, batch: int = 4) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch]).float() for i in range(0, len(x), batch)])


def _colorize(model: nn.Module, lab: torch.Tensor) -> torch.Tensor:
    """Lab (N,3,H,W) whose L is the input -> sRGB with the model's ab and the input's own L."""
    L = lab[:, :1]
    ab = _run(model, L / 50.0 - 1.0) * 110.0
    return lab_to_srgb(torch.cat([L, ab], 1))


def _grey(lab: torch.Tensor) -> torch.Tensor:
    return lab_to_srgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], 1))


def _pil_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    out = []
    for a in x:
        arr = (a.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        out.append(np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BICUBIC)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def machine_description() -> str:
    """CPU model, CPU count, torch threads and the load at the start, for the timing line of the report."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = f", load average {os.getloadavg()[0]:.1f} at the start"
    except OSError:
        load = ""
    return f"{model}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads{load}"


def _sheet_indices(truth: torch.Tensor, n: int = 3) -> list[int]:
    """Crops from the middle to the top of the truth's mean chroma (colour worth looking at)."""
    chroma = M.chroma_sum_lab(srgb_to_lab(truth.double())).numpy()
    order = np.argsort(chroma)
    picks = [order[min(len(order) - 1, int(q * len(order)))] for q in (0.5, 0.8, 0.95)[:n]]
    return list(dict.fromkeys(int(i) for i in picks))


def _run_colour_method(method: ColourMethod, inp: Any, batch: int = 8) -> torch.Tensor:
    outs = []
    for i in range(0, len(inp), batch):
        with torch.inference_mode():
            o = method(inp.chunk(i, i + batch)).float().clamp(0, 1)
        outs.append(o)
    return torch.cat(outs)


def _input_view(inp: Any, case_name: str) -> torch.Tensor:
    """What a contact sheet shows as the input: grey L for ``L``, else the given slots in their channels."""
    if case_name == "L":
        from astro_pipeline.training.colour_cases import grey_from_lightness

        return grey_from_lightness(inp.lightness)
    return inp.slots


def evaluate_models(
    *,
    colorizer: ModelSpec = "colorizer",
    superres: ModelSpec = "superres",
    superres_gan: ModelSpec = "superres-gan",
    colour_methods: Sequence[ColourMethod] = (),
    cases: Sequence[str] | None = None,
    sources: list[str | Source] | None = None,
    crop: int = 256,
    per_image: int = DEFAULT_PER_IMAGE,
    seed: int = 0,
    use_lpips: bool = True,
    horseshoe: bool = True,
    output_dir: str | Path | None = None,
    log_dirs: dict[str, Path] | None = None,
    max_crops: int | None = None,
    val_fraction: float = 0.12,
    horseshoe_lpips: bool = False,
    notes: list[str] | None = None,
    linear_fit: bool = True,
    sky_gap: bool | SkyGap = False,
    n_boot: int = 2000,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Evaluate the given models (names, paths, loaded pairs, or None to skip) on validation crops.

    Colour cases run when a colorizer or ``colour_methods`` (extra :class:`ColourMethod` rows, e.g.
    a band-aware model) are given; ``cases`` restricts them (names as in ``colour_cases.CASES``).
    ``linear_fit`` fits the pair baseline on training releases. ``sky_gap``: True measures it here
    (``sky_gap.default_sky_gap``), or pass one measured already. ``use_lpips`` also enables KID
    (same VGG16). With ``output_dir``, writes ``report.md``, ``report.csv``, ``report.json``, the
    contact sheets and a loss-curve PNG per entry of ``log_dirs`` (model name -> folder holding
    ``log.jsonl``). ``notes`` (how the models were trained, known gaps) go into the report as written.
    """
    from astro_pipeline.config import get_settings
    from astro_pipeline.training.losses import LPIPS, load_vgg16

    say = progress or (lambda msg: log.info("%s", msg))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sources = sources or ["hubble"]
    vs = validation_set(sources, crop=crop, per_image=per_image, seed=seed, val_fraction=val_fraction)
    if max_crops:
        vs = ValidationSet(vs.crops[:max_crops], vs.crop_groups[:max_crops], vs.crop_images[:max_crops], sorted(set(vs.crop_groups[:max_crops])))
    truth, crop_groups = vs.crops, vs.crop_groups
    lp = None
    if use_lpips:
        loaded = load_vgg16(get_settings().perceptual_weights)
        lp = LPIPS(*loaded) if loaded is not None else None
    col, sr, gan = _load(colorizer), _load(superres), _load(superres_gan)
    report = EvalReport(table=[], n_crops=len(truth), crop=crop, val_groups=sorted(set(crop_groups)), n_images=vs.n_images,
                        per_image=per_image, seed=seed, n_boot=n_boot, val_fraction=val_fraction, notes=list(notes or []), machine=machine_description(),
                        eval_set=crop_set_fingerprint(truth))
    for name, pair in (("colorizer", col), ("superres", sr), ("superres-gan", gan)):
        if pair is not None:
            held = pair[1].extra.get("val_groups")
            report.models[name] = {"version": pair[1].version, "sha256": pair[1].sha256, "arch": pair[1].arch,
                                   "kwargs": pair[1].kwargs, "steps": pair[1].steps,
                                   # releases scored here that the model's own split did not hold out (None: not recorded)
                                   "trained_on_eval": None if held is None else sorted(set(report.val_groups) - set(held))}
    timings["crops"] = time.perf_counter() - t0
    say(f"{len(truth)} validation crops from {len(report.val_groups)} releases")
    s = Scorer(truth, lpips=lp)
    sheet: dict[str, list[torch.Tensor]] = {}
    case_columns: dict[str, list[tuple[str, torch.Tensor]]] = {}
    methods: list[ColourMethod] = []
    if col is not None or colour_methods:
        t1 = time.perf_counter()
        chosen = [case_by_name(c) for c in cases] if cases is not None else list(CASES)
        linear: LinearFill | None = None
        if linear_fit and any(len(c.given) == 2 for c in chosen):
            linear = fit_linear_fill(training_crops(sources, crop=crop, seed=seed, val_fraction=val_fraction))
            report.linear_fill = {"coefficients": {k: list(v) for k, v in linear.coefficients.items()},
                                  "n_pixels": linear.n_pixels, "n_crops": linear.n_crops}
            timings["linear fit"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        methods = [*baseline_methods(linear), *(colorizer_methods(col[0]) if col is not None else []), *colour_methods]
        for case in chosen:
            inp = make_input(truth, case)
            cols: list[tuple[str, torch.Tensor]] = [("input", _input_view(inp, case.name))]
            for m in methods_for(case, methods):
                out = s.add(case.protocol, m.name, _run_colour_method(m, inp), given=case.given, kid=True,
                            baseline=bool(getattr(m, "baseline", False)))
                cols.append((m.name, out))
            cols.append(("truth", truth))
            case_columns[case.name] = cols
            say(f"colour case {case.name}: {', '.join(c[0] for c in cols[1:-1])}")
        if col is not None and "L" in case_columns:
            grey = dict(case_columns["L"])["baseline-grey"]
            sheet["colorize"] = [grey, grey, dict(case_columns["L"])["colorizer"], truth]
        timings["colour methods"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    scale = 4
    if sr is not None or gan is not None or col is not None:
        lr_clean = M.quantize8(torch.stack([torch.from_numpy(downscale_bicubic((t.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), scale)) for t in truth]).permute(0, 3, 1, 2).float() / 255)
    if sr is not None or gan is not None:
        rng = np.random.default_rng(seed + 1)
        lr_deg = torch.stack([torch.from_numpy(degrade_lr((t.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), rng, scale=scale)) for t in truth]).permute(0, 3, 1, 2).float() / 255
        for proto, lr in (("sr-clean", lr_clean), ("sr-degraded", lr_deg)):
            bic = s.add(proto, "baseline-bicubic", _pil_resize(lr, crop), lr=lr)
            for name, pair in (("superres", sr), ("superres-gan", gan)):
                if pair is not None:
                    out = s.add(proto, name, _run(pair[0], lr).clamp(0, 1), lr=lr)
                    if proto == "sr-clean":
                        sheet[name] = [torch.nn.functional.interpolate(lr, scale_factor=scale, mode="nearest"), bic, out, truth]
    if col is not None and sr is not None:
        small_lab = srgb_to_lab(lr_clean)
        grey_small = M.quantize8(_grey(small_lab))
        s.add("enhance", "baseline-bicubic-grey", _pil_resize(grey_small, crop))
        coloured = M.quantize8(_colorize(col[0], small_lab))
        s.add("enhance", "enhance", _run(sr[0], coloured).clamp(0, 1))
    timings["super-resolution"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    halves = kid_halves(crop_groups) if len(set(crop_groups)) >= 2 else None
    if halves is not None and (halves.sum() < 2 or (~halves).sum() < 2):
        halves = None
    report.table = s.score(bootstrap=Bootstrap(len(truth), n_boot=n_boot, seed=seed), kid_half=halves, seed=seed, progress=say)
    if s.kid_truth_split is not None and halves is not None:
        report.kid_truth_split = [s.kid_truth_split.value, s.kid_truth_split.lo, s.kid_truth_split.hi]
        report.kid_halves = (int(halves.sum()), int((~halves).sum()))
    timings["scoring"] = time.perf_counter() - t1
    if horseshoe and methods:
        t1 = time.perf_counter()
        try:
            report.horseshoe = horseshoe_check(methods=methods, lpips=lp if horseshoe_lpips else None)
        except (OSError, ValueError) as exc:
            report.horseshoe = {"error": str(exc)}
        timings["horseshoe"] = time.perf_counter() - t1
    if sky_gap is not False:
        t1 = time.perf_counter()
        if isinstance(sky_gap, SkyGap):
            report.sky_gap = sky_gap
        else:
            from astro_pipeline.training.sky_gap import default_sky_gap

            report.sky_gap = default_sky_gap(cache_dir=Path(get_settings().cache_dir), val_fraction=val_fraction,
                                             sources=[str(x) for x in sources if isinstance(x, str)] or ["hubble"])
            timings["sky gap"] = time.perf_counter() - t1
        report.sky_gap_summary = sky_gap_summary(report.sky_gap)
    report.targets = check_targets(report)
    colour_models = [m.name for m in methods if not getattr(m, "baseline", False)]
    for name in colour_models:
        report.colour_targets += colour_targets(report.table, name, horseshoe=report.horseshoe)
    report.timings = timings
    if output_dir is not None:
        _write_outputs(report, Path(output_dir), sheet=sheet, case_columns=case_columns, truth=truth, log_dirs=log_dirs or {})
    return report


#: evaluate_models' keyword for each weights name.
_SLOT = {"colorizer": "colorizer", "superres": "superres", "superres-gan": "superres_gan"}


def installed_rescorer(name: str, **evaluate_kwargs: Any) -> Callable[[Path], dict[str, Any]]:
    """For the promotion gate: a function scoring installed weights of ``name`` with the same
    ``evaluate_models`` arguments (so the same crops) as the candidate, returning
    ``metrics_for(name)``. Only the protocols the gate reads run (no figures, Horseshoe, sky gap)."""
    if name not in _SLOT:
        raise ValueError(f"unknown model {name!r} (one of {', '.join(_SLOT)})")
    kwargs = {k: v for k, v in evaluate_kwargs.items() if k not in ("output_dir", "log_dirs", "notes", "progress", *_SLOT.values())}

    def rescore(weights_path: Path) -> dict[str, Any]:
        spec: dict[str, Any] = dict.fromkeys(_SLOT.values())
        spec[_SLOT[name]] = weights_path
        only = {"cases": ("L",)} if name == "colorizer" else {}  # the gate reads the colorize protocol (case L) only
        report = evaluate_models(**spec, **{**kwargs, **only, "horseshoe": False, "sky_gap": False, "linear_fit": False,
                                            "output_dir": None})
        return report.metrics_for(name)

    return rescore


def _case_file(name: str) -> str:
    return f"colour_{name.replace('+', '')}.png"


def _write_outputs(report: EvalReport, out_dir: Path, *, sheet: dict[str, list[torch.Tensor]],
                   case_columns: dict[str, list[tuple[str, torch.Tensor]]], truth: torch.Tensor, log_dirs: dict[str, Path]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if sheet:
        report.files.append(write_contact_sheet(sheet, out_dir / "contact_sheet.png"))
        report.figures["contact_sheet"] = "contact_sheet.png"
    if case_columns:
        idx = _sheet_indices(truth)
        for name, cols in case_columns.items():
            fn = _case_file(name)
            report.files.append(write_labelled_sheet(cols, idx, out_dir / fn, title=f"case {name}"))
            report.figures[f"case:{name}"] = fn
    hs = report.horseshoe or {}
    if "images" in hs:
        rows = [hs["images"][c] for c in ("G", "G+R") if c in hs["images"]]
        width = max(len(r) for r in rows)
        blank = torch.ones_like(hs["images"]["lupton"])
        rows = [[*r[:-1], *[("", blank)] * (width - len(r)), r[-1]] for r in rows]  # truth stays last
        cols = []
        for j in range(width):  # one labelled sheet: column j holds the j-th entry of every row
            labels = [r[j][0] for r in rows if r[j][0]]
            cols.append((" / ".join(dict.fromkeys(labels)), torch.cat([r[j][1] for r in rows])))
        report.files.append(write_labelled_sheet(cols, list(range(len(rows))), out_dir / "horseshoe.png", thumb=250,
                                                 title="Horseshoe: row 1 F606W alone (G), row 2 F606W + F814W (G+R)"))
        report.figures["horseshoe"] = "horseshoe.png"
    for name, d in log_dirs.items():
        p = plot_loss_curve(Path(d) / "log.jsonl", out_dir / f"loss_{name}.png", title=name)
        if p is not None:
            report.files.append(p)
            report.figures[f"loss:{name}"] = p.name
    for p in sorted(out_dir.glob("loss_*.png")):  # curves of earlier training runs stay listed
        report.figures.setdefault(f"loss:{p.stem[5:]}", p.name)
    report.files += write_report(report, out_dir)


def check_targets(report: EvalReport) -> list[dict[str, Any]]:
    """The targets (issue 4; issue 22 for the default SR model) against the measured rows: value,
    threshold, met or not."""
    out: list[dict[str, Any]] = []

    def add(model: str, what: str, value: float | None, threshold: float | None, ok: bool | None) -> None:
        out.append({"model": model, "check": what, "value": value, "threshold": threshold, "met": ok})

    g, c = report.row("colorize", "baseline-grey"), report.row("colorize", "colorizer")
    if g and c:
        add("colorizer", "PSNR gain over grey (dB) >= 2.0", c["psnr_rgb"] - g["psnr_rgb"], 2.0, c["psnr_rgb"] - g["psnr_rgb"] >= 2.0)
        add("colorizer", "CIEDE76 / grey's <= 0.7", c["ciede76"] / g["ciede76"], 0.7, c["ciede76"] / g["ciede76"] <= 0.7)
        add("colorizer", "chroma ratio >= 0.60", c["chroma_ratio"], 0.6, c["chroma_ratio"] >= 0.6)
    b, sr, gan = report.row("sr-clean", "baseline-bicubic"), report.row("sr-clean", "superres"), report.row("sr-clean", "superres-gan")
    if b and sr:
        gain = sr["psnr_rgb"] - b["psnr_rgb"]
        add("superres", "PSNR(RGB) gain over bicubic (dB) >= 1.0 (issue 22)", gain, 1.0, gain >= 1.0)
        add("superres", "PSNR(RGB) gain over bicubic (dB) >= 1.5 (issue 4; issue 22's aim)", gain, 1.5, gain >= 1.5)
        if sr["lpips"] is not None and b["lpips"] is not None:
            add("superres", "LPIPS < bicubic's", sr["lpips"], b["lpips"], sr["lpips"] < b["lpips"])
    if sr and gan and sr["lpips"] is not None and gan["lpips"] is not None:
        add("superres-gan", "LPIPS < superres's", gan["lpips"], sr["lpips"], gan["lpips"] < sr["lpips"])
    eb, en = report.row("enhance", "baseline-bicubic-grey"), report.row("enhance", "enhance")
    if eb and en:
        add("enhance", "PSNR gain over bicubic grey (dB) >= 1.0", en["psnr_rgb"] - eb["psnr_rgb"], 1.0, en["psnr_rgb"] - eb["psnr_rgb"] >= 1.0)
    return out
