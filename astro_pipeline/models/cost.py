"""Inference cost of a network in multiply-accumulates per megapixel, counted by torch itself.

``torch.utils.flop_counter.FlopCounterMode`` counts the FLOPs of every matmul and convolution a
forward pass runs; a multiply-accumulate is two of them. Per megapixel of the INPUT for colour
models (output = input size) and of the OUTPUT for super-resolution, as the model cards state.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["gmac_per_megapixel"]


def gmac_per_megapixel(model: nn.Module, x: torch.Tensor, *, scale: int = 1, **kwargs: object) -> float:
    """GMAC of ``model(x, **kwargs)`` per megapixel of the output (``scale`` x the input's side)."""
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x, **kwargs)
    out_px = x.shape[-1] * x.shape[-2] * scale * scale
    return fc.get_total_flops() / 2 / (out_px / 1e6) / 1e9
