"""Real-data check on the Cosmic Horseshoe: HST WFC3/UVIS F475W, F606W, F814W cut-outs (500 px).

Truth is the three-band composite ``make_lupton_rgb(F814W, F606W, F475W)`` (red, green, blue by
wavelength: F475W is B, F606W is G and F814W is R by the rule of issue 20). Two cases:

- ``G`` (F606W alone): the input is ``make_lupton_rgb(F606W x 3)`` with the same stretch, so the
  comparison isolates the colour a method infers; its naive answer is that grey.
- ``G+R`` (F606W + F814W): the given slots are the composite's own G and R channels, so only the
  missing B counts. (Lupton scales all channels by their mean intensity, so the blue band still
  sets the overall brightness of those two channels; their ratio is the bands' own.)

Every method that applies to a case is scored: CIEDE76, ab error, pooled chroma ratio, PSNR, hue spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from astro_pipeline.training import metrics as M
from astro_pipeline.training.colorspace import srgb_to_lab
from astro_pipeline.training.colour_cases import (
    ColourInput,
    ColourMethod,
    baseline_methods,
    case_by_name,
    colorizer_methods,
    methods_for,
)

__all__ = ["horseshoe_check", "horseshoe_bands", "HORSESHOE_CASES"]

HORSESHOE_CASES = ("G", "G+R")
_FILE = "trilogy__hst_mos_1020228_wfc3_uvis_{band}_drz_cutout_20asec.fits"


def horseshoe_bands(data_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Sky-subtracted (median) F475W, F606W, F814W science arrays of the shared cut-outs."""
    from astropy.io import fits

    from astro_pipeline.config import shared_dir

    d = data_dir or shared_dir() / "data" / "fits" / "hst"
    bands = {}
    for b in ("f475w", "f606w", "f814w"):
        with fits.open(d / _FILE.format(band=b)) as hdul:
            hdu = next(h for h in hdul if h.data is not None)
            arr = np.nan_to_num(np.asarray(hdu.data, dtype=np.float32))
        bands[b] = arr - np.median(arr)
    return bands


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255


def _measures(x: torch.Tensor, truth: torch.Tensor, lpips: nn.Module | None) -> dict[str, Any]:
    lab_x, lab_t = srgb_to_lab(x.double()), srgb_to_lab(truth.double())
    out: dict[str, Any] = {
        "ciede76": float(M.ciede76(x, truth).mean()),
        "ab_error": float((lab_x[:, 1:] - lab_t[:, 1:]).pow(2).sum(1).sqrt().mean()),
        "chroma_ratio": M.chroma_ratio(x, truth),
        "psnr_rgb": float(M.psnr(x, truth).mean()),
        "hue_spread": float(M.hue_spread_lab(lab_x)[0]),
    }
    if lpips is not None:
        with torch.inference_mode():
            out["lpips"] = float(lpips(x, truth).mean())
    return out


def horseshoe_check(model: nn.Module | None = None, *, methods: Sequence[ColourMethod] | None = None,
                    lpips: nn.Module | None = None, data_dir: Path | None = None) -> dict[str, Any]:
    """Score colour methods on the Horseshoe cases against the three-band Lupton composite.

    ``methods`` defaults to the naive baselines plus, when ``model`` is given, the L -> ab colorizer.
    Returns ``stretch``, ``Q``, ``size``, ``truth_hue_spread``, ``cases`` ({case: {method: measures}}),
    ``images`` ({case: [(label, image)]} plus ``lupton``) and, for the one-band case, the historical
    top-level ``baseline-grey`` and ``colorizer`` entries.
    """
    from astropy.visualization import make_lupton_rgb

    bands = horseshoe_bands(data_dir)
    stretch = float(np.percentile(bands["f606w"], 99.5)) / 2
    q = 8.0
    comp = make_lupton_rgb(bands["f814w"], bands["f606w"], bands["f475w"], stretch=stretch, Q=q, minimum=0.0)
    grey = make_lupton_rgb(bands["f606w"], bands["f606w"], bands["f606w"], stretch=stretch, Q=q, minimum=0.0)
    truth, grey_t = _t(comp), _t(grey)
    if methods is None:
        methods = [*baseline_methods(), *(colorizer_methods(model) if model is not None else [])]
    res: dict[str, Any] = {"stretch": stretch, "Q": q, "size": list(comp.shape[:2]), "cases": {}, "images": {"lupton": truth},
                           "truth_hue_spread": float(M.hue_spread(truth)[0])}
    for name in HORSESHOE_CASES:
        case = case_by_name(name)
        present = torch.zeros(1, 3, dtype=torch.bool)
        present[:, list(case.given)] = True
        slots = torch.zeros_like(truth)
        source = grey_t if name == "G" else truth
        for i in case.given:
            slots[:, i] = source[:, i]
        mean = slots[:, list(case.given)].mean(1, keepdim=True)
        lightness = srgb_to_lab(mean.double().expand(-1, 3, -1, -1))[:, :1].float()
        inp = ColourInput(slots=slots, present=present, lightness=lightness)
        scores: dict[str, Any] = {}
        shown: list[tuple[str, torch.Tensor]] = [("input", slots if name != "G" else grey_t)]
        for m in methods_for(case, methods):
            with torch.inference_mode():
                out = M.quantize8(m(inp).float().clamp(0, 1))
            scores[m.name] = _measures(out, truth, lpips)
            shown.append((m.name, out))
        shown.append(("truth", truth))
        res["cases"][name] = scores
        res["images"][name] = shown
    g = res["cases"]["G"]
    if "baseline-replicate" in g:
        res["baseline-grey"] = g["baseline-replicate"]  # F606W replicated is the grey input itself
    if "colorizer" in g:
        res["colorizer"] = g["colorizer"]
    return res
