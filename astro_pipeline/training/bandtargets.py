"""Targets for the ab-bin read-out: soft block distributions and class-rebalancing weights.

Zhang et al. (2016) soft-encode each pixel's ab over nearby bins and reweight rare colours so the
model does not settle on the desaturated average. Here each pixel's ab is splatted bilinearly onto
the square bin grid and the splats are averaged over ``block`` x ``block`` pixels, so a target is
the distribution of colours inside the block the model predicts for.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["splat_ab", "rebalance_weights"]


def splat_ab(ab: torch.Tensor, *, grid: float = 10.0, limit: float = 110.0, block: int = 8) -> torch.Tensor:
    """(N, 2, H, W) CIE ab -> (N, Q, H/block, W/block) block distributions over the Q = n^2 grid bins."""
    n_axis = int(round(2 * limit / grid)) + 1
    q = n_axis * n_axis
    u = ((ab[:, 0] + limit) / grid).clamp(0, n_axis - 1 - 1e-4)
    v = ((ab[:, 1] + limit) / grid).clamp(0, n_axis - 1 - 1e-4)
    u0, v0 = u.floor(), v.floor()
    du, dv = u - u0, v - v0
    u0l, v0l = u0.long(), v0.long()
    n, h, w = u.shape
    hb, wb_ = h // block, w // block
    # each pixel adds into its own block's histogram: flat index (n, bin, block row, block col)
    rows = (torch.arange(hb * block, device=ab.device) // block)[:, None]
    cols = (torch.arange(wb_ * block, device=ab.device) // block)[None, :]
    cell = (rows * wb_ + cols).reshape(1, -1)
    u0l, v0l = u0l[:, : hb * block, : wb_ * block].reshape(n, -1), v0l[:, : hb * block, : wb_ * block].reshape(n, -1)
    du, dv = du[:, : hb * block, : wb_ * block].reshape(n, -1), dv[:, : hb * block, : wb_ * block].reshape(n, -1)
    out = torch.zeros(n, q * hb * wb_, dtype=ab.dtype, device=ab.device)
    for oa, wa in ((0, 1 - du), (1, du)):
        for ob, wgt in ((0, 1 - dv), (1, dv)):
            b = ((u0l + oa) * n_axis + (v0l + ob)).clamp_(0, q - 1)
            out.scatter_add_(1, b * (hb * wb_) + cell, wa * wgt)
    return out.reshape(n, q, hb, wb_) / float(block * block)


def rebalance_weights(prior: np.ndarray, *, lam: float = 0.5, sigma_bins: float = 0.5, grid_side: int | None = None) -> torch.Tensor:
    """Zhang's class weights: w proportional to 1 / ((1 - lam) * smoothed prior + lam / Q), E_prior[w] = 1."""
    p = torch.as_tensor(prior, dtype=torch.float64)
    q = p.numel()
    side = grid_side or int(round(q**0.5))
    if sigma_bins > 0:
        r = int(np.ceil(3 * sigma_bins))
        x = torch.arange(-r, r + 1, dtype=torch.float64)
        k1 = torch.exp(-0.5 * (x / sigma_bins) ** 2)
        k1 = k1 / k1.sum()
        img = p.reshape(1, 1, side, side)
        img = F.conv2d(F.pad(img, (r, r, 0, 0), mode="replicate"), k1.reshape(1, 1, 1, -1))
        img = F.conv2d(F.pad(img, (0, 0, r, r), mode="replicate"), k1.reshape(1, 1, -1, 1))
        p = (img.reshape(-1) / img.sum()).clamp_min(0)
    w = 1.0 / ((1 - lam) * p + lam / q)
    w = w / (w * p).sum()
    return w.float()
