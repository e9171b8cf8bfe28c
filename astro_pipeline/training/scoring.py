"""Score many methods' outputs against one set of truth crops, with intervals over crops.

Outputs are collected first (quantised to 8 bits, as products are) and scored afterwards chunk by
chunk, so the truth's VGG16 features are computed once per chunk and never held for the whole set.
Per crop: PSNR (RGB, Y), SSIM, CIEDE76, LPIPS, LR consistency, chroma sum, hue spread and the
error on the channels that were given. Per row: means with bootstrap intervals, the pooled chroma
ratio, the hue spread against the truth's on crops with enough colour, the paired difference from
the protocol's first baseline, and (for colour rows) KID against the truth crops, with the KID of one
half of the releases' truth against the other as a scale.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from astro_pipeline.training import metrics as M
from astro_pipeline.training.colorspace import srgb_to_lab
from astro_pipeline.training.intervals import Bootstrap, Interval
from astro_pipeline.training.kid import kid_interval, paired_kid
from astro_pipeline.training.losses import LPIPS

__all__ = ["Scorer", "HUE_MIN_FRACTION", "MEAN_COLUMNS", "kid_halves"]

log = logging.getLogger(__name__)

#: A crop enters the hue-spread mean when at least this fraction of its truth pixels has chroma > 5.
HUE_MIN_FRACTION = 0.01
#: Per-crop metrics whose mean (with an interval) each row reports.
MEAN_COLUMNS = ("psnr_rgb", "psnr_y", "ssim", "ciede76", "lpips", "lr_rmse")
#: Metrics whose paired difference from the protocol's baseline each row reports.
DELTA_COLUMNS = ("psnr_rgb", "ciede76")


def _u8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.detach().float().clamp(0, 1) * 255).to(torch.uint8)


def _f(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0


def kid_halves(crop_groups: list[str]) -> np.ndarray:
    """Split crops in two halves by release (no release in both), balancing crop counts: releases in
    sorted order go to the half with fewer crops so far. Returns a bool mask of half A."""
    counts: dict[str, int] = {}
    for g in crop_groups:
        counts[g] = counts.get(g, 0) + 1
    in_a: dict[str, bool] = {}
    na = nb = 0
    for g in sorted(counts, key=lambda g: (-counts[g], g)):
        in_a[g] = na <= nb
        na, nb = (na + counts[g], nb) if in_a[g] else (na, nb + counts[g])
    return np.array([in_a[g] for g in crop_groups], dtype=bool)


@dataclass
class _Entry:
    protocol: str
    method: str
    out: torch.Tensor  # (N, 3, H, W) uint8
    lr: torch.Tensor | None
    given: tuple[int, ...]
    kid: bool
    baseline: bool


@dataclass
class Scorer:
    """Collects (protocol, method, output) entries for fixed truth crops; :meth:`score` makes the rows."""

    truth: torch.Tensor
    lpips: LPIPS | None = None
    chunk: int = 4
    entries: list[_Entry] = field(default_factory=list)
    per_crop: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    features: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    truth_features: np.ndarray | None = None
    truth_hue: np.ndarray | None = None
    hue_eligible: np.ndarray | None = None
    kid_truth_split: Interval | None = None

    def add(self, protocol: str, method: str, out: torch.Tensor, *, lr: torch.Tensor | None = None,
            given: tuple[int, ...] = (), kid: bool = False, baseline: bool | None = None) -> torch.Tensor:
        """Queue an output (N, 3, H, W) in [0, 1] for scoring; returns it quantised to 8 bits."""
        if out.shape != self.truth.shape:
            raise ValueError(f"{protocol}/{method}: output shape {tuple(out.shape)} != truth {tuple(self.truth.shape)}")
        q = _u8(out)
        self.entries.append(_Entry(protocol, method, q, lr, tuple(given), kid,
                                   method.startswith("baseline") if baseline is None else baseline))
        return _f(q)

    def _score_chunks(self, progress: Callable[[str], None] | None) -> None:
        n = len(self.truth)
        truth_q = _u8(self.truth)
        need_feats = self.lpips is not None
        want_kid = need_feats and any(e.kid for e in self.entries)
        vals: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {(e.protocol, e.method): {} for e in self.entries}
        feats: dict[tuple[str, str], list[np.ndarray]] = {(e.protocol, e.method): [] for e in self.entries if e.kid}
        t_feats, t_hue, t_frac = [], [], []
        for i0 in range(0, n, self.chunk):
            t = _f(truth_q[i0 : i0 + self.chunk])
            t_lab = srgb_to_lab(t.double())
            t_hue.append(M.hue_spread_lab(t_lab).numpy())
            t_frac.append(M.chromatic_fraction_lab(t_lab).numpy())
            t_chroma = M.chroma_sum_lab(t_lab).numpy()
            tf = None
            if need_feats:
                assert self.lpips is not None
                tf, t_pool = self.lpips.features_and_pooled(t)
                if want_kid:
                    t_feats.append(t_pool.double().numpy())
            for e in self.entries:
                o = _f(e.out[i0 : i0 + self.chunk])
                o_lab = srgb_to_lab(o.double())
                v = vals[(e.protocol, e.method)]
                parts = {
                    "psnr_rgb": M.psnr(o, t), "psnr_y": M.psnr_y(o, t), "ssim": M.ssim(o, t),
                    "ciede76": (o_lab - t_lab).pow(2).sum(1).sqrt().mean(dim=(1, 2)),
                    "hue_spread": M.hue_spread_lab(o_lab), "chroma_sum": M.chroma_sum_lab(o_lab),
                }
                for k, a in parts.items():
                    v.setdefault(k, []).append(a.double().numpy())
                v.setdefault("truth_chroma_sum", []).append(t_chroma)
                if e.given:
                    d = (e.out[i0 : i0 + self.chunk, list(e.given)].int() - truth_q[i0 : i0 + self.chunk, list(e.given)].int()).abs()
                    v.setdefault("given_err", []).append(d.flatten(1).max(1).values.double().numpy())
                if e.lr is not None:
                    v.setdefault("lr_rmse", []).append(M.lr_consistency_rmse(o, e.lr[i0 : i0 + self.chunk]).double().numpy())
                if tf is not None:
                    assert self.lpips is not None
                    of, o_pool = self.lpips.features_and_pooled(o)
                    v.setdefault("lpips", []).append(self.lpips.distance(of, tf).double().numpy())
                    if e.kid and want_kid:
                        feats[(e.protocol, e.method)].append(o_pool.double().numpy())
            if progress:
                progress(f"scored crops {min(i0 + self.chunk, n)}/{n} for {len(self.entries)} outputs")
        self.per_crop = {k: {m: np.concatenate(a) for m, a in v.items()} for k, v in vals.items()}
        self.features = {k: np.concatenate(v) for k, v in feats.items() if v}
        self.truth_features = np.concatenate(t_feats) if t_feats else None
        self.truth_hue = np.concatenate(t_hue)
        self.hue_eligible = np.concatenate(t_frac) >= HUE_MIN_FRACTION

    def score(self, *, bootstrap: Bootstrap | None = None, kid_half: np.ndarray | None = None, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
        """Score every queued entry; rows in the order they were added."""
        boot = bootstrap or Bootstrap(len(self.truth), seed=seed)
        self._score_chunks(progress)
        assert self.truth_hue is not None and self.hue_eligible is not None
        if self.truth_features is not None and kid_half is not None:
            tf = self.truth_features
            self.kid_truth_split = kid_interval(tf[kid_half], tf[~kid_half], seed=seed)
        reference: dict[str, tuple[str, str]] = {}
        for e in self.entries:
            if e.baseline:
                reference.setdefault(e.protocol, (e.protocol, e.method))
        rows = []
        for e in self.entries:
            key = (e.protocol, e.method)
            v = self.per_crop[key]
            row: dict[str, Any] = {"protocol": e.protocol, "method": e.method, "n": len(self.truth), "ci": {}, "delta": {}}
            for k in MEAN_COLUMNS:
                if k in v:
                    iv = boot.mean(v[k])
                    row[k], row["ci"][k] = iv.value, [iv.lo, iv.hi]
                else:
                    row[k] = None
            cr = boot.ratio(v["chroma_sum"], v["truth_chroma_sum"])
            row["chroma_ratio"], row["ci"]["chroma_ratio"] = cr.value, [cr.lo, cr.hi]
            el = self.hue_eligible
            row["hue_crops"] = int(el.sum())
            if el.any():
                hs, ht = boot.mean(v["hue_spread"], where=el), boot.mean(self.truth_hue, where=el)
                row["hue_spread"], row["ci"]["hue_spread"] = hs.value, [hs.lo, hs.hi]
                row["hue_spread_truth"], row["ci"]["hue_spread_truth"] = ht.value, [ht.lo, ht.hi]
            else:
                row["hue_spread"] = row["hue_spread_truth"] = None
            row["given_err"] = int(v["given_err"].max()) if "given_err" in v else None
            row["kid"] = None
            if key in self.features and self.truth_features is not None and len(self.truth) >= 2:
                k_iv = paired_kid(self.features[key], self.truth_features, seed=seed)
                row["kid"], row["ci"]["kid"] = k_iv.value, [k_iv.lo, k_iv.hi]
            ref = reference.get(e.protocol)
            if ref is not None and ref != key:
                row["baseline"] = ref[1]
                rv = self.per_crop[ref]
                for k in DELTA_COLUMNS:
                    d = boot.paired_difference(v[k], rv[k])
                    row["delta"][k] = d.as_list()
            rows.append(row)
            log.info("%s %s psnr=%.2f ciede=%.2f chroma=%.3f", e.protocol, e.method, row["psnr_rgb"], row["ciede76"], row["chroma_ratio"])
        return rows
