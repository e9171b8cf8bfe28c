"""Honest evaluation on held-out ESA releases: every model next to its trivial baseline, same crops.

Protocols (crops of the validation releases, 256 px truth):
- ``colorize``: L of the truth -> model ab recombined with that L, against grey-as-colour (a = b = 0).
- ``sr-clean``: LR = Pillow antialiased bicubic 4x reduction; model against bicubic 4x upscaling.
- ``sr-degraded``: LR additionally blurred, noised and JPEG-compressed (fixed seed); same baselines.
- ``enhance``: 64 px grey (L* of the clean LR) -> colorizer -> superres, against bicubic-upscaled grey.
Metrics: PSNR (RGB, Y), SSIM, CIEDE76, LPIPS (VGG16 v0.1), chroma ratio, and for SR the RMSE of the
output reduced back to LR against the LR input. Outputs are quantised to 8 bits first, as products are.
A real-data check colorizes the Horseshoe F606W cut-out against the make_lupton_rgb composite.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from astro_pipeline.fileio import atomic_write_bytes as _atomic_bytes
from astro_pipeline.models.registry import WeightsMeta, load_weights
from astro_pipeline.training import metrics as M
from astro_pipeline.training.colorspace import lab_to_srgb, srgb_to_lab
from astro_pipeline.training.datasets import ImageBank, degrade_lr, downscale_bicubic
from astro_pipeline.training.sources import Source, collect_items, split_by_group

__all__ = ["EvalReport", "evaluate_models", "validation_crops", "TARGETS", "METRIC_COLUMNS"]

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["psnr_rgb", "psnr_y", "ssim", "ciede76", "lpips", "chroma_ratio", "lr_rmse"]

#: Issue 4 targets (clean protocol), checked and reported.
TARGETS = {
    "colorizer": "PSNR >= grey + 2.0 dB; CIEDE76 <= 0.7 x grey; chroma ratio >= 0.60",
    "superres": "PSNR(RGB) >= bicubic + 1.5 dB; LPIPS < bicubic",
    "superres-gan": "LPIPS < superres",
    "enhance": "PSNR >= bicubic-upscaled grey + 1.0 dB",
}

ModelSpec = str | Path | tuple[nn.Module, WeightsMeta] | None


@dataclass
class EvalReport:
    """Rows of (protocol, method) metrics, the real-data check, target verdicts and written files."""

    table: list[dict[str, Any]]
    horseshoe: dict[str, Any] | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_crops: int = 0
    crop: int = 256
    val_groups: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, protocol: str, method: str) -> dict[str, Any] | None:
        return next((r for r in self.table if r["protocol"] == protocol and r["method"] == method), None)

    def metrics_for(self, name: str) -> dict[str, Any]:
        """The metrics to store in a model's weights metadata: its rows and its baseline's rows."""
        out: dict[str, Any] = {"eval_crops": self.n_crops}
        for r in self.table:
            if r["method"] == name or (r["method"].startswith("baseline") and r["protocol"] in _PROTOCOLS_OF.get(name, ())):
                key = r["protocol"] if r["method"] == name else f"{r['protocol']}:{r['method']}"
                out[key] = {k: r[k] for k in METRIC_COLUMNS if r.get(k) is not None}
        return out


_PROTOCOLS_OF = {
    "colorizer": ("colorize",),
    "superres": ("sr-clean", "sr-degraded"),
    "superres-gan": ("sr-clean", "sr-degraded"),
}


def validation_crops(sources: list[str | Source], *, crop: int = 256, per_image: int = 1, seed: int = 0, val_fraction: float = 0.12) -> tuple[torch.Tensor, list[str]]:
    """Deterministic crops (N,3,crop,crop) in [0,1] of the validation releases, skipping empty sky."""
    items = collect_items(list(sources))
    _, val = split_by_group(items, val_fraction=val_fraction)
    val = [i for i in val if i.kind == "color"]
    if not val:
        raise ValueError("validation split is empty: need colour images from more than one release")
    bank = ImageBank.load(val, min_size=crop)
    rng = np.random.default_rng(seed)
    crops = []
    for img in bank.images:
        got, tries = 0, 0
        while got < per_image and tries < 50:
            tries += 1
            h, w = img.shape[:2]
            y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
            c = img[y : y + crop, x : x + crop]
            if c.mean() < 8 and c.std() < 4:
                continue
            crops.append(c)
            got += 1
    arr = np.stack(crops)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0, sorted({i.group for i in val})


def _load(spec: ModelSpec) -> tuple[nn.Module, WeightsMeta] | None:
    if spec is None:
        return None
    if isinstance(spec, tuple):
        return spec
    return load_weights(spec)


@torch.inference_mode()
def _run(model: nn.Module, x: torch.Tensor, batch: int = 4) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch]).float() for i in range(0, len(x), batch)])


def _colorize(model: nn.Module, rgb_or_grey_lab: torch.Tensor) -> torch.Tensor:
    """Lab (N,3,H,W) whose L is the input -> sRGB with the model's ab and the input's own L."""
    L = rgb_or_grey_lab[:, :1]
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


class _Scorer:
    def __init__(self, truth: torch.Tensor, lpips: nn.Module | None, chunk: int = 4) -> None:
        self.truth, self.lpips, self.chunk = truth, lpips, chunk
        self.rows: list[dict[str, Any]] = []
        self._truth_feats = None
        if lpips is not None:  # the truth's VGG features are computed once and reused for every method
            self._truth_feats = [lpips.features(truth[i : i + chunk]) for i in range(0, len(truth), chunk)]

    def add(self, protocol: str, method: str, out: torch.Tensor, *, lr: torch.Tensor | None = None) -> torch.Tensor:
        out = M.quantize8(out)
        t = self.truth
        row: dict[str, Any] = {
            "protocol": protocol, "method": method, "n": len(out),
            "psnr_rgb": float(M.psnr(out, t).mean()), "psnr_y": float(M.psnr_y(out, t).mean()),
            "ssim": float(M.ssim(out, t).mean()), "ciede76": float(M.ciede76(out, t).mean()),
            "chroma_ratio": M.chroma_ratio(out, t), "lpips": None, "lr_rmse": None,
        }
        if self.lpips is not None and self._truth_feats is not None:
            c = self.chunk
            d = [self.lpips.distance(self.lpips.features(out[i : i + c]), self._truth_feats[i // c]) for i in range(0, len(out), c)]
            row["lpips"] = float(torch.cat(d).mean())
        if lr is not None:
            row["lr_rmse"] = float(M.lr_consistency_rmse(out, lr).mean())
        self.rows.append(row)
        log.info("%s %s psnr=%.2f ciede=%.2f", protocol, method, row["psnr_rgb"], row["ciede76"])
        return out


def evaluate_models(
    *,
    colorizer: ModelSpec = "colorizer",
    superres: ModelSpec = "superres",
    superres_gan: ModelSpec = "superres-gan",
    sources: list[str | Source] | None = None,
    crop: int = 256,
    per_image: int = 1,
    seed: int = 0,
    use_lpips: bool = True,
    horseshoe: bool = True,
    output_dir: str | Path | None = None,
    log_dirs: dict[str, Path] | None = None,
    max_crops: int | None = None,
    val_fraction: float = 0.12,
    horseshoe_lpips: bool = False,
    notes: list[str] | None = None,
) -> EvalReport:
    """Evaluate the given models (names, paths, loaded pairs, or None to skip) on validation crops.

    With ``output_dir``, writes ``report.md``, ``report.csv``, ``contact_sheet.png`` and a loss-curve
    PNG per entry of ``log_dirs`` (model name -> folder holding ``log.jsonl``). ``notes`` (how the
    models were trained, known gaps) go into the report as written.
    """
    from astro_pipeline.config import get_settings
    from astro_pipeline.training.losses import LPIPS, load_vgg16

    sources = sources or ["hubble"]
    truth, groups = validation_crops(sources, crop=crop, per_image=per_image, seed=seed, val_fraction=val_fraction)
    if max_crops:
        truth = truth[:max_crops]
    lp = None
    if use_lpips:
        loaded = load_vgg16(get_settings().perceptual_weights)
        lp = LPIPS(*loaded) if loaded is not None else None
    col, sr, gan = _load(colorizer), _load(superres), _load(superres_gan)
    report = EvalReport(table=[], n_crops=len(truth), crop=crop, val_groups=groups, notes=list(notes or []))
    for name, pair in (("colorizer", col), ("superres", sr), ("superres-gan", gan)):
        if pair is not None:
            report.models[name] = {"version": pair[1].version, "sha256": pair[1].sha256, "arch": pair[1].arch,
                                   "kwargs": pair[1].kwargs, "steps": pair[1].steps}
    s = _Scorer(truth, lp)
    sheet: dict[str, list[torch.Tensor]] = {}
    lab = srgb_to_lab(truth)
    if col is not None:
        grey = s.add("colorize", "baseline-grey", _grey(lab))
        out = s.add("colorize", "colorizer", _colorize(col[0], lab))
        sheet["colorize"] = [grey, grey, out, truth]
    scale = 4
    lr_clean = M.quantize8(torch.stack([torch.from_numpy(downscale_bicubic((t.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), scale)) for t in truth]).permute(0, 3, 1, 2).float() / 255)
    rng = np.random.default_rng(seed + 1)
    lr_deg = torch.stack([torch.from_numpy(degrade_lr((t.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), rng, scale=scale)) for t in truth]).permute(0, 3, 1, 2).float() / 255
    if sr is not None or gan is not None:
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
    report.table = s.rows
    if horseshoe and col is not None:
        try:
            report.horseshoe = horseshoe_check(col[0], lpips=lp if horseshoe_lpips else None)
        except (OSError, ValueError) as exc:
            report.horseshoe = {"error": str(exc)}
    report.targets = check_targets(report)
    if output_dir is not None:
        out_dir = Path(output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report.files += write_report(report, out_dir)
        if sheet:
            report.files.append(write_contact_sheet(sheet, out_dir / "contact_sheet.png"))
        for name, d in (log_dirs or {}).items():
            p = plot_loss_curve(Path(d) / "log.jsonl", out_dir / f"loss_{name}.png", title=name)
            if p is not None:
                report.files.append(p)
    return report


def check_targets(report: EvalReport) -> list[dict[str, Any]]:
    """Issue 4's targets against the measured rows: value, threshold, met or not."""
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
        add("superres", "PSNR(RGB) gain over bicubic (dB) >= 1.5", sr["psnr_rgb"] - b["psnr_rgb"], 1.5, sr["psnr_rgb"] - b["psnr_rgb"] >= 1.5)
        if sr["lpips"] is not None and b["lpips"] is not None:
            add("superres", "LPIPS < bicubic's", sr["lpips"], b["lpips"], sr["lpips"] < b["lpips"])
    if sr and gan and sr["lpips"] is not None and gan["lpips"] is not None:
        add("superres-gan", "LPIPS < superres's", gan["lpips"], sr["lpips"], gan["lpips"] < sr["lpips"])
    eb, en = report.row("enhance", "baseline-bicubic-grey"), report.row("enhance", "enhance")
    if eb and en:
        add("enhance", "PSNR gain over bicubic grey (dB) >= 1.0", en["psnr_rgb"] - eb["psnr_rgb"], 1.0, en["psnr_rgb"] - eb["psnr_rgb"] >= 1.0)
    return out


def horseshoe_check(model: nn.Module, *, lpips: nn.Module | None = None, data_dir: Path | None = None) -> dict[str, Any]:
    """Colorize the Horseshoe F606W cut-out and compare with make_lupton_rgb(F814W, F606W, F475W).

    Both use the same Lupton asinh stretch: the grey input is make_lupton_rgb(F606W x 3), so the
    comparison isolates the colour the model infers from structure alone.
    """
    from astropy.io import fits
    from astropy.visualization import make_lupton_rgb

    from astro_pipeline.config import shared_dir

    d = data_dir or shared_dir() / "data" / "fits" / "hst"
    bands = {}
    for b in ("f475w", "f606w", "f814w"):
        p = d / f"trilogy__hst_mos_1020228_wfc3_uvis_{b}_drz_cutout_20asec.fits"
        with fits.open(p) as hdul:
            hdu = next(h for h in hdul if h.data is not None)
            arr = np.nan_to_num(np.asarray(hdu.data, dtype=np.float32))
        bands[b] = arr - np.median(arr)
    stretch = float(np.percentile(bands["f606w"], 99.5)) / 2
    q = 8.0
    comp = make_lupton_rgb(bands["f814w"], bands["f606w"], bands["f475w"], stretch=stretch, Q=q, minimum=0.0)
    grey = make_lupton_rgb(bands["f606w"], bands["f606w"], bands["f606w"], stretch=stretch, Q=q, minimum=0.0)
    truth = torch.from_numpy(comp.copy()).permute(2, 0, 1)[None].float() / 255
    grey_t = torch.from_numpy(grey.copy()).permute(2, 0, 1)[None].float() / 255
    lab = srgb_to_lab(grey_t)
    with torch.inference_mode():
        ab = model(lab[:, :1] / 50 - 1).float() * 110
    out = M.quantize8(lab_to_srgb(torch.cat([lab[:, :1], ab], 1)))
    base = M.quantize8(_grey(lab))
    res: dict[str, Any] = {"stretch": stretch, "Q": q, "size": list(comp.shape[:2])}
    for name, x in (("baseline-grey", base), ("colorizer", out)):
        lab_x, lab_t = srgb_to_lab(x.double()), srgb_to_lab(truth.double())
        res[name] = {
            "ciede76": float(M.ciede76(x, truth).mean()),
            "ab_error": float((lab_x[:, 1:] - lab_t[:, 1:]).pow(2).sum(1).sqrt().mean()),
            "chroma_ratio": M.chroma_ratio(x, truth),
            "psnr_rgb": float(M.psnr(x, truth).mean()),
        }
        if lpips is not None:
            with torch.inference_mode():
                res[name]["lpips"] = float(lpips(x, truth).mean())
    res["images"] = {"input": grey_t, "model": out, "lupton": truth}
    return res


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def write_report(report: EvalReport, out_dir: Path) -> list[Path]:
    """``report.csv`` (one row per protocol x method) and ``report.md`` (tables, targets, real-data check)."""
    buf = io.StringIO()
    cols = ["protocol", "method", "n", *METRIC_COLUMNS]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in report.table:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in cols})
    csv_path = _atomic_bytes(out_dir / "report.csv", buf.getvalue().encode())
    lines = ["# Evaluation report", "",
             f"Validation: {report.n_crops} crops of {report.crop} px from {len(report.val_groups)} held-out ESA releases "
             "(split by release, never by file). Outputs quantised to 8 bits before scoring.", "",
             "Models:", ""]
    for name, m in report.models.items():
        lines.append(f"- `{name}`: {m['arch']} {json.dumps(m['kwargs'])}, version {m['version']}, {m['steps']} steps, sha256 {m['sha256'][:12]}")
    for proto in dict.fromkeys(r["protocol"] for r in report.table):
        lines += ["", f"## {proto}", "", "| method | " + " | ".join(METRIC_COLUMNS) + " |", "|---" * (len(METRIC_COLUMNS) + 1) + "|"]
        for r in report.table:
            if r["protocol"] == proto:
                lines.append(f"| {r['method']} | " + " | ".join(_fmt(r.get(k)) for k in METRIC_COLUMNS) + " |")
    lines += ["", "Lower is better for ciede76, lpips and lr_rmse; chroma_ratio should be near 1.", "",
              "## Targets (issue 4, clean protocol)", "", "| model | check | value | threshold | met |", "|---|---|---|---|---|"]
    for t in report.targets:
        lines.append(f"| {t['model']} | {t['check']} | {_fmt(t['value'])} | {_fmt(t['threshold'])} | {'yes' if t['met'] else 'NO'} |")
    if report.horseshoe:
        hs = report.horseshoe
        lines += ["", "## Real data: Cosmic Horseshoe F606W vs make_lupton_rgb(F814W, F606W, F475W)", ""]
        if "error" in hs:
            lines.append(f"Not run: {hs['error']}")
        else:
            lines += [f"Same Lupton asinh stretch (stretch={hs['stretch']:.4g}, Q={hs['Q']}) for the grey input and the composite; "
                      f"{hs['size'][0]}x{hs['size'][1]} px.", "",
                      "| method | ciede76 | ab_error | chroma_ratio | psnr_rgb | lpips |", "|---|---|---|---|---|---|"]
            for name in ("baseline-grey", "colorizer"):
                m = hs[name]
                lines.append(f"| {name} | {_fmt(m['ciede76'])} | {_fmt(m['ab_error'])} | {_fmt(m['chroma_ratio'])} | {_fmt(m['psnr_rgb'])} | {_fmt(m.get('lpips'))} |")
            if "images" in hs:
                p = write_strip([hs["images"]["input"], hs["images"]["model"], hs["images"]["lupton"]], out_dir / "horseshoe.png")
                report.files.append(p)
                lines += ["", "![horseshoe: input | colorizer | Lupton](horseshoe.png)"]
    if report.notes:
        lines += ["", "## Training runs and gaps", "", *[f"- {n}" for n in report.notes]]
    lines += ["", "Figures: `contact_sheet.png` (rows: colorize, superres, superres-gan; columns: input | baseline | model | truth), "
              "`loss_<model>.png` (training losses).", ""]
    md_path = _atomic_bytes(out_dir / "report.md", "\n".join(lines).encode())
    return [csv_path, md_path]


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def write_strip(images: list[torch.Tensor], path: Path) -> Path:
    """Side-by-side PNG of same-sized (1,3,H,W) images."""
    arr = np.concatenate([_to_uint8(x[0]) for x in images], axis=1)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return _atomic_bytes(path, buf.getvalue())


def write_contact_sheet(sheet: dict[str, list[torch.Tensor]], path: Path, *, rows_per_task: int = 2) -> Path:
    """Rows of input | baseline | model | truth for the first crops of each task."""
    rows = []
    for _name, cols in sheet.items():
        n = min(rows_per_task, len(cols[0]))
        for i in range(n):
            rows.append(np.concatenate([_to_uint8(c[i]) for c in cols], axis=1))
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(rows, axis=0)).save(buf, format="PNG", optimize=True)
    return _atomic_bytes(path, buf.getvalue())


def plot_loss_curve(log_path: Path, out_path: Path, *, title: str) -> Path | None:
    """One PNG with each logged loss against step (log y where positive)."""
    if not log_path.is_file():
        return None
    rows = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln.strip()]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows[0] if k not in ("step", "lr", "seconds")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, k in zip(axes[0], keys, strict=True):
        ax.plot(steps, [r.get(k) for r in rows], lw=1)
        ax.set_title(f"{title}: {k}")
        ax.set_xlabel("step")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return _atomic_bytes(out_path, buf.getvalue())
