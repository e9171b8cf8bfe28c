"""Per-case colour evaluation of the band-aware colour model, each case beside its naive baseline.

Protocol definitions follow the colour-evaluation issue (17); this is this model's own
implementation of them, used until that issue's shared protocols land:

- validation: ``per_image`` 256 px crops of every validation release image (``split_by_group``, the
  project's split by ESA release), skipping empty sky, fixed by ``seed``; each crop is its own frame;
- cases: lightness alone (against grey-as-colour); one slot given (against that slot replicated);
  two given (against the naive fill: the mean for R + B, the nearer band for G + R and B + G, and a
  global linear fit per pair fitted on training releases as a second baseline);
- measures: PSNR and CIEDE76 per crop (mean with a 95% bootstrap interval over crops), the pooled
  chroma ratio (sum of output chroma over sum of truth chroma), the hue spread (circular standard
  deviation of hue over pixels with chroma above 5, on crops where at least 1% of the truth's pixels
  qualify), and for lightness alone KID (cubic polynomial kernel on global-average-pooled VGG16
  relu5_3 features; outputs of one half of the crops against the truth of the other half, both ways,
  with a truth-against-truth figure beside it).

Outputs are quantised to 8 bits before scoring, as products are.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from astro_pipeline.models.bandcolor import BandColorizer, naive_fill
from astro_pipeline.training import metrics as M
from astro_pipeline.training.bandcache import CASE_MASKS, CASES
from astro_pipeline.training.colorspace import lab_to_srgb, srgb_to_lab

__all__ = [
    "BASELINE_NAMES",
    "BandEvalReport",
    "band_gate",
    "evaluate_band_model",
    "fit_linear_baselines",
    "hue_spread",
    "kid",
    "pooled_chroma_ratio",
    "run_case",
    "write_band_report",
]

BASELINE_NAMES = {"L": "grey", "R": "replicate", "G": "replicate", "B": "replicate", "GR": "naive (B = G)",
                  "RB": "naive (G = mean)", "BG": "naive (R = G)"}
PAIRS = ("GR", "RB", "BG")
CHROMA_MIN = 5.0


# ---------------------------------------------------------------------------------------------
# measures

def pooled_chroma_ratio(x: torch.Tensor, truth: torch.Tensor) -> float:
    """Sum of output chroma over sum of truth chroma, over every pixel of every crop."""
    cx = srgb_to_lab(x.double())[:, 1:].pow(2).sum(1).sqrt().sum()
    ct = srgb_to_lab(truth.double())[:, 1:].pow(2).sum(1).sqrt().sum()
    return float(cx / ct.clamp_min(1e-9))


def hue_spread(x: torch.Tensor, *, chroma_min: float = CHROMA_MIN) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: circular std of hue (degrees) over pixels with chroma > ``chroma_min``, and the
    fraction of pixels that qualify. Images with no qualifying pixel get a spread of 0."""
    lab = srgb_to_lab(x.double())
    a, b = lab[:, 1], lab[:, 2]
    c = torch.sqrt(a * a + b * b)
    keep = (c > chroma_min).double()
    n = keep.sum(dim=(1, 2))
    h = torch.atan2(b, a)
    cs = (torch.cos(h) * keep).sum(dim=(1, 2)) / n.clamp_min(1)
    sn = (torch.sin(h) * keep).sum(dim=(1, 2)) / n.clamp_min(1)
    r = torch.sqrt(cs * cs + sn * sn).clamp(1e-12, 1.0)
    spread = torch.rad2deg(torch.sqrt(-2 * torch.log(r)))
    spread = torch.where(n > 0, spread, torch.zeros_like(spread))
    return spread, n / (x.shape[-1] * x.shape[-2])


def kid(fx: torch.Tensor, fy: torch.Tensor) -> float:
    """Kernel inception distance: unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 between feature sets."""
    fx, fy = fx.double(), fy.double()
    d = fx.shape[1]
    kxx = (fx @ fx.T / d + 1) ** 3
    kyy = (fy @ fy.T / d + 1) ** 3
    kxy = (fx @ fy.T / d + 1) ** 3
    m, n = len(fx), len(fy)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def _bootstrap(values: torch.Tensor, *, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    v = values.double().numpy()
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n, len(v)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


class _KIDFeatures:
    """Global-average-pooled VGG16 relu5_3 features (ImageNet-normalised input)."""

    def __init__(self, vgg_path: Path | None) -> None:
        from astro_pipeline.training.losses import load_vgg16

        loaded = load_vgg16(vgg_path, last="relu5_3") if vgg_path is not None else None
        self.vgg = loaded[0] if loaded is not None else None

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, batch: int = 8) -> torch.Tensor | None:
        if self.vgg is None:
            return None
        m = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
        s = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
        out = [self.vgg((x[i : i + batch] - m) / s, ("relu5_3",))[0].mean(dim=(2, 3)) for i in range(0, len(x), batch)]
        return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# cases

def case_inputs(truth: torch.Tensor, case: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(planes (N, 4, H, W), mask (N, 3)) the model gets for ``case`` from truth crops."""
    from astro_pipeline.training.bandtrain import planes_torch

    mask = torch.tensor(CASE_MASKS[case], dtype=torch.float32)[None].expand(len(truth), -1)
    return planes_torch(truth, mask), mask


@torch.inference_mode()
def run_case(model: BandColorizer, truth: torch.Tensor, case: str, *, batch: int = 8, temperature: float | None = None) -> torch.Tensor:
    """The model's full-colour output for ``case`` (each crop its own frame), quantised to 8 bits."""
    planes, mask = case_inputs(truth, case)
    outs = []
    for i in range(0, len(truth), batch):
        p, m = planes[i : i + batch], mask[i : i + batch]
        if case == "L":
            from astro_pipeline.models.blocks import pad_to_multiple
            from astro_pipeline.models.bandcolor import masked_grey

            x, (h, w) = pad_to_multiple(p, model.multiple)
            f3, f4 = model.encode(masked_grey(x, m))
            ctx = model.context_from_pooled(model.pool_features(f3, f4), model.plane_stats(p, m), m)
            ab = model.decode(x, m, f3, f4, ctx, want_rgb=False, want_ab=True, temperature=temperature)["ab"][..., :h, :w]
            L = srgb_to_lab(truth[i : i + batch])[:, :1]
            outs.append(lab_to_srgb(torch.cat([L, ab.double() if L.dtype == torch.float64 else ab], 1)))
        else:
            outs.append(model(p, mask=m).clamp(0, 1))
    return M.quantize8(torch.cat(outs))


def baseline_output(truth: torch.Tensor, case: str) -> torch.Tensor:
    """Grey-as-colour for lightness alone, the naive fill otherwise (8-bit)."""
    if case == "L":
        lab = srgb_to_lab(truth)
        return M.quantize8(lab_to_srgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], 1)))
    planes, mask = case_inputs(truth, case)
    return M.quantize8(naive_fill(planes, mask).clamp(0, 1))


def fit_linear_baselines(train_crops: torch.Tensor, *, stride: int = 4) -> dict[str, list[float]]:
    """Least-squares fit per pair of the missing slot from the two given ones plus a constant."""
    px = train_crops[..., ::stride, ::stride].permute(1, 0, 2, 3).reshape(3, -1).double()
    out = {}
    for pair in PAIRS:
        m = CASE_MASKS[pair]
        given = [i for i in range(3) if m[i]]
        miss = next(i for i in range(3) if not m[i])
        a = torch.stack([px[given[0]], px[given[1]], torch.ones_like(px[0])], 1)
        coef = torch.linalg.lstsq(a, px[miss][:, None]).solution[:, 0]
        out[pair] = [float(c) for c in coef]
    return out


def linear_output(truth: torch.Tensor, pair: str, coef: list[float]) -> torch.Tensor:
    m = CASE_MASKS[pair]
    given = [i for i in range(3) if m[i]]
    miss = next(i for i in range(3) if not m[i])
    out = truth.clone()
    out[:, miss] = (coef[0] * truth[:, given[0]] + coef[1] * truth[:, given[1]] + coef[2]).clamp(0, 1)
    return M.quantize8(out)


# ---------------------------------------------------------------------------------------------
# report

@dataclass
class BandEvalReport:
    """Rows of (case, method) figures, KID, the real-data and enhance checks, and the gate."""

    rows: list[dict[str, Any]]
    n_crops: int
    val_groups: list[str]
    crop: int = 256
    kid: dict[str, Any] = field(default_factory=dict)
    horseshoe: dict[str, Any] = field(default_factory=dict)
    enhance: dict[str, Any] = field(default_factory=dict)
    linear_fit: dict[str, list[float]] = field(default_factory=dict)
    temperature: float | None = None
    notes: list[str] = field(default_factory=list)
    sheets: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def row(self, case: str, method: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["case"] == case and r["method"] == method), None)

    def metrics(self) -> dict[str, Any]:
        """JSON-safe figures for the weights metadata and the card."""
        return {"eval_crops": self.n_crops, "rows": self.rows, "kid": self.kid, "horseshoe": self.horseshoe,
                "enhance": self.enhance, "temperature": self.temperature}


def _score(case: str, method: str, out: torch.Tensor, truth: torch.Tensor, seed: int) -> dict[str, Any]:
    psnr = M.psnr(out, truth)
    ciede = M.ciede76(out, truth)
    hs_out, _ = hue_spread(out)
    hs_truth, frac = hue_spread(truth)
    q = frac >= 0.01
    row = {
        "case": case, "method": method, "n": len(out),
        "psnr": float(psnr.mean()), "psnr_ci": _bootstrap(psnr, seed=seed),
        "ciede76": float(ciede.mean()), "ciede76_ci": _bootstrap(ciede, seed=seed),
        "chroma_pooled": pooled_chroma_ratio(out, truth),
        "hue_spread": float(hs_out[q].mean()) if q.any() else None,
        "hue_spread_truth": float(hs_truth[q].mean()) if q.any() else None,
        "hue_crops": int(q.sum()),
    }
    return row


def evaluate_band_model(
    model: BandColorizer,
    *,
    truth: torch.Tensor,
    val_groups: list[str],
    train_crops: torch.Tensor | None = None,
    vgg_path: Path | None = None,
    temperature: float | None = None,
    superres: nn.Module | None = None,
    horseshoe_dir: Path | None = None,
    seed: int = 0,
) -> BandEvalReport:
    """Score every case on ``truth`` crops, model beside its baselines, plus KID, Horseshoe and enhance."""
    model.eval()
    rep = BandEvalReport(rows=[], n_crops=len(truth), val_groups=val_groups, crop=int(truth.shape[-1]),
                         temperature=temperature if temperature is not None else model.temperature)
    if train_crops is not None:
        rep.linear_fit = fit_linear_baselines(train_crops)
    outputs: dict[str, torch.Tensor] = {}
    for case in CASES:
        base = baseline_output(truth, case)
        out = run_case(model, truth, case, temperature=temperature)
        rep.rows.append(_score(case, BASELINE_NAMES[case], base, truth, seed))
        if case in rep.linear_fit:
            rep.rows.append(_score(case, "linear fit", linear_output(truth, case, rep.linear_fit[case]), truth, seed))
        rep.rows.append(_score(case, "model", out, truth, seed))
        outputs[case] = out
        inp = base if case == "L" else case_inputs(truth, case)[0][:, :3]
        rep.sheets[case] = [inp, base, out, truth]
    feats = _KIDFeatures(vgg_path)
    ft = feats(truth)
    if ft is not None:
        half = len(truth) // 2
        a, b = slice(0, half), slice(half, 2 * half)
        res: dict[str, Any] = {"truth": kid(ft[a], ft[b])}
        for name, x in (("grey", baseline_output(truth, "L")), ("model", outputs["L"])):
            fx = feats(x)
            assert fx is not None
            res[name] = 0.5 * (kid(fx[a], ft[b]) + kid(fx[b], ft[a]))
        rep.kid = res
    if superres is not None:
        rep.enhance = enhance_check(model, superres, truth, temperature=temperature)
    try:
        rep.horseshoe = horseshoe_band_check(model, data_dir=horseshoe_dir, temperature=temperature)
    except (OSError, ValueError, StopIteration) as exc:
        rep.horseshoe = {"error": str(exc)}
    return rep


@torch.inference_mode()
def enhance_check(model: BandColorizer, superres: nn.Module, truth: torch.Tensor, *, temperature: float | None = None) -> dict[str, Any]:
    """64 px grey (L* of the clean 4x-reduced crop) -> colour (lightness alone) -> 4x, against bicubic-upscaled grey."""
    from astro_pipeline.training.datasets import downscale_bicubic
    from astro_pipeline.training.evaluate import _pil_resize

    lr = torch.stack([torch.from_numpy(downscale_bicubic((t.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), 4))
                      for t in truth]).permute(0, 3, 1, 2).float() / 255
    lr = M.quantize8(lr)
    grey = baseline_output(lr, "L")
    size = truth.shape[-1]
    base = M.quantize8(_pil_resize(grey, size))
    coloured = run_case(model, lr, "L", temperature=temperature)
    out = M.quantize8(torch.cat([superres(coloured[i : i + 4]).float() for i in range(0, len(coloured), 4)]).clamp(0, 1))
    return {"bicubic_grey": {"psnr": float(M.psnr(base, truth).mean()), "ciede76": float(M.ciede76(base, truth).mean())},
            "enhance": {"psnr": float(M.psnr(out, truth).mean()), "ciede76": float(M.ciede76(out, truth).mean()),
                        "chroma_pooled": pooled_chroma_ratio(out, truth)}}


def _horseshoe_bands(data_dir: Path | None) -> dict[str, np.ndarray]:
    from astropy.io import fits

    from astro_pipeline.config import shared_dir

    d = data_dir or shared_dir() / "data" / "fits" / "hst"
    bands = {}
    for b in ("f475w", "f606w", "f814w"):
        p = d / f"trilogy__hst_mos_1020228_wfc3_uvis_{b}_drz_cutout_20asec.fits"
        with fits.open(p) as hdul:
            hdu = next(h for h in hdul if h.data is not None)
            arr = np.nan_to_num(np.asarray(hdu.data, dtype=np.float32))
        bands[b] = arr - np.median(arr)
    return bands


@torch.inference_mode()
def horseshoe_band_check(model: BandColorizer, *, data_dir: Path | None = None, temperature: float | None = None) -> dict[str, Any]:
    """The Cosmic Horseshoe: F606W alone (the G slot) and F606W + F814W (G, R) against the
    make_lupton_rgb(F814W, F606W, F475W) composite, beside grey and the naive fill, same stretch."""
    from astropy.visualization import make_lupton_rgb

    bands = _horseshoe_bands(data_dir)
    stretch = float(np.percentile(bands["f606w"], 99.5)) / 2
    q = 8.0

    def lupton(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> torch.Tensor:
        img = make_lupton_rgb(r, g, b, stretch=stretch, Q=q, minimum=0.0)
        return torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255

    truth = lupton(bands["f814w"], bands["f606w"], bands["f475w"])
    one = lupton(bands["f606w"], bands["f606w"], bands["f606w"])  # F606W alone: grey
    two = lupton(bands["f814w"], bands["f606w"], bands["f606w"])  # F814W -> R, F606W -> G; B naive (= G)
    res: dict[str, Any] = {"stretch": stretch, "Q": q, "size": list(truth.shape[-2:])}

    def run(planes_rgb: torch.Tensor, mask: tuple[int, int, int]) -> torch.Tensor:
        m = torch.tensor([mask], dtype=torch.float32)
        p = torch.cat([planes_rgb * m[:, :, None, None], planes_rgb.mean(1, keepdim=True)], 1)
        return M.quantize8(model(p, mask=m).clamp(0, 1))

    lab1 = srgb_to_lab(one)
    g_only = run(one, (0, 1, 0))
    x, (h, w) = _pad(torch.cat([one, one[:, :1]], 1), model.multiple)
    m0 = torch.zeros(1, 3)
    f3, f4 = model.encode(x[:, 3:4])
    ctx = model.context_from_pooled(model.pool_features(f3, f4), model.plane_stats(x[..., :h, :w], m0), m0)
    ab = model.decode(x, m0, f3, f4, ctx, want_rgb=False, temperature=temperature)["ab"][..., :h, :w]
    l_only = M.quantize8(lab_to_srgb(torch.cat([lab1[:, :1], ab], 1)))
    pair = run(two, (1, 1, 0))
    outs = {"one band: grey (F606W replicated)": M.quantize8(one), "one band: model (F606W as G)": g_only,
            "one band: model (lightness alone)": l_only, "two bands: naive (B = G)": M.quantize8(two),
            "two bands: model (F814W R, F606W G)": pair}
    for name, img in outs.items():
        res[name] = {"ciede76": float(M.ciede76(img, truth).mean()), "psnr": float(M.psnr(img, truth).mean()),
                     "chroma_pooled": pooled_chroma_ratio(img, truth)}
    res["images"] = {"grey": M.quantize8(one), "model_one": g_only, "naive_two": M.quantize8(two), "model_two": pair, "truth": truth}
    return res


def _pad(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    from astro_pipeline.models.blocks import pad_to_multiple

    return pad_to_multiple(x, multiple)


# ---------------------------------------------------------------------------------------------
# gate

def band_gate(rep: BandEvalReport, *, pair_gain_db: float = 1.0, l_psnr_slack: float = 0.5) -> dict[str, Any]:
    """Promote when every pair beats its naive fill by ``pair_gain_db`` in PSNR with lower CIEDE76 and
    lightness alone passes its guard (CIEDE76 at or below grey's, PSNR within ``l_psnr_slack`` of grey's).
    Returns the decision, each check with its value, and the colour targets (reported, not gating)."""
    checks: list[dict[str, Any]] = []

    def add(what: str, value: float | None, threshold: float | None, ok: bool, gating: bool) -> None:
        checks.append({"check": what, "value": value, "threshold": threshold, "met": bool(ok), "gating": gating})

    for pair in PAIRS:
        b, m = rep.row(pair, BASELINE_NAMES[pair]), rep.row(pair, "model")
        if b and m:
            gain = m["psnr"] - b["psnr"]
            add(f"{pair}: PSNR gain over naive (dB) >= {pair_gain_db}", gain, pair_gain_db, gain >= pair_gain_db, True)
            add(f"{pair}: CIEDE76 below naive's", m["ciede76"], b["ciede76"], m["ciede76"] < b["ciede76"], True)
    g, m = rep.row("L", "grey"), rep.row("L", "model")
    if g and m:
        add("L: CIEDE76 <= grey's", m["ciede76"], g["ciede76"], m["ciede76"] <= g["ciede76"], True)
        add(f"L: PSNR >= grey's - {l_psnr_slack} dB", m["psnr"], g["psnr"] - l_psnr_slack, m["psnr"] >= g["psnr"] - l_psnr_slack, True)
        add("L: pooled chroma ratio >= 0.6", m["chroma_pooled"], 0.6, m["chroma_pooled"] >= 0.6, False)
        if m["hue_spread"] is not None and m["hue_spread_truth"] is not None:
            add("L: hue spread >= half the truth's", m["hue_spread"], 0.5 * m["hue_spread_truth"], m["hue_spread"] >= 0.5 * m["hue_spread_truth"], False)
    if rep.kid:
        add("L: KID <= half grey's", rep.kid["model"], 0.5 * rep.kid["grey"], rep.kid["model"] <= 0.5 * rep.kid["grey"], False)
    hs = rep.horseshoe
    if hs and "error" not in hs:
        one, grey = hs["one band: model (F606W as G)"]["ciede76"], hs["one band: grey (F606W replicated)"]["ciede76"]
        add("Horseshoe F606W alone: CIEDE76 below grey's", one, grey, one < grey, False)
        two, naive = hs["two bands: model (F814W R, F606W G)"]["ciede76"], hs["two bands: naive (B = G)"]["ciede76"]
        add("Horseshoe F606W + F814W: CIEDE76 below the naive fill's", two, naive, two < naive, False)
    if rep.enhance:
        e, bg = rep.enhance["enhance"]["psnr"], rep.enhance["bicubic_grey"]["psnr"]
        add("enhance: PSNR not below bicubic-upscaled grey", e, bg, e >= bg, False)
    gating = [c for c in checks if c["gating"]]
    promote = bool(gating) and all(c["met"] for c in gating)
    failed = [c for c in gating if not c["met"]]
    return {"promote": promote, "checks": checks, "failed": failed}


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_fmt(x, nd) for x in v) + "]"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def write_band_report(rep: BandEvalReport, out_dir: Path, *, gate: dict[str, Any] | None = None, title: str = "Band-aware colour model: per-case validation",
                      sheet_rows: int = 3) -> list[Path]:
    """``band_report.md``, ``band_report.json`` and one contact sheet per case (input | baseline | model | truth)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    lines = [f"# {title}", "",
             f"{rep.n_crops} crops of {rep.crop} px from {len(rep.val_groups)} held-out ESA releases (split by release); "
             "each crop is its own frame; outputs quantised to 8 bits; [95% bootstrap intervals over crops].", "",
             f"Read-out temperature (lightness alone): {_fmt(rep.temperature)}", "",
             "| case | method | PSNR (dB) | CIEDE76 | pooled chroma | hue spread (deg) | truth hue spread |", "|---|---|---|---|---|---|---|"]
    for r in rep.rows:
        lines.append(f"| {r['case']} | {r['method']} | {_fmt(r['psnr'])} {_fmt(r['psnr_ci'])} | {_fmt(r['ciede76'])} {_fmt(r['ciede76_ci'])} | "
                     f"{_fmt(r['chroma_pooled'], 3)} | {_fmt(r['hue_spread'], 1)} | {_fmt(r['hue_spread_truth'], 1)} |")
    if rep.linear_fit:
        lines += ["", "Global linear fit per pair (fitted on training releases): " +
                  "; ".join(f"{k}: {', '.join(f'{c:.3f}' for c in v)}" for k, v in rep.linear_fit.items())]
    if rep.kid:
        lines += ["", f"KID (lightness alone; VGG16 relu5_3, cubic kernel, half against half): model {rep.kid['model']:.4f}, "
                  f"grey {rep.kid['grey']:.4f}, truth against truth {rep.kid['truth']:.4f}"]
    if rep.enhance:
        e = rep.enhance
        lines += ["", f"enhance (64 px grey -> colour -> 4x): PSNR {e['enhance']['psnr']:.2f} dB, CIEDE76 {e['enhance']['ciede76']:.2f}, "
                  f"pooled chroma {e['enhance']['chroma_pooled']:.3f}; bicubic-upscaled grey PSNR {e['bicubic_grey']['psnr']:.2f} dB, CIEDE76 {e['bicubic_grey']['ciede76']:.2f}"]
    hs = rep.horseshoe
    if hs:
        lines += ["", "## Cosmic Horseshoe against make_lupton_rgb(F814W, F606W, F475W)", ""]
        if "error" in hs:
            lines.append(f"Not run: {hs['error']}")
        else:
            lines += ["| input / method | CIEDE76 | PSNR (dB) | pooled chroma |", "|---|---|---|---|"]
            for k, v in hs.items():
                if isinstance(v, dict) and "ciede76" in v:
                    lines.append(f"| {k} | {v['ciede76']:.2f} | {v['psnr']:.2f} | {v['chroma_pooled']:.3f} |")
            im = hs.get("images")
            if im:
                arr = np.concatenate([_u8(im[k][0]) for k in ("grey", "model_one", "naive_two", "model_two", "truth")], axis=1)
                files.append(_png(out_dir / "band_horseshoe.png", arr))
                lines += ["", "![Horseshoe: F606W grey | model from F606W | naive F606W+F814W | model from F606W+F814W | three-band composite](band_horseshoe.png)"]
    if gate is not None:
        lines += ["", "## Gate", "", f"Decision: **{'promote' if gate['promote'] else 'do not promote'}**", "",
                  "| check | value | threshold | met | gating |", "|---|---|---|---|---|"]
        for c in gate["checks"]:
            lines.append(f"| {c['check']} | {_fmt(c['value'], 3)} | {_fmt(c['threshold'], 3)} | {'yes' if c['met'] else 'NO'} | {'yes' if c['gating'] else 'no'} |")
    if rep.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in rep.notes]]
    lines += ["", "Contact sheets: `band_sheet_<case>.png` (columns: input | baseline | model | truth; input shows the given slots, missing ones black)."]
    for case, cols in rep.sheets.items():
        n = min(sheet_rows, len(cols[0]))
        arr = np.concatenate([np.concatenate([_u8(c[i]) for c in cols], axis=1) for i in range(n)], axis=0)
        files.append(_png(out_dir / f"band_sheet_{case}.png", arr))
    md = out_dir / "band_report.md"
    md.write_text("\n".join(lines) + "\n")
    js = out_dir / "band_report.json"
    js.write_text(json.dumps({**rep.metrics(), "horseshoe": {k: v for k, v in rep.horseshoe.items() if k != "images"},
                              "gate": gate, "val_groups": rep.val_groups, "linear_fit": rep.linear_fit}, indent=1, default=str))
    return [md, js, *files]


def _png(path: Path, arr: np.ndarray) -> Path:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    path.write_bytes(buf.getvalue())
    return path

