"""Pick the training device and precision: bf16 autocast + channels_last on CPUs with native bf16
(AMX / AVX512-BF16), fp32 elsewhere on CPU (emulated bf16 is several times slower), AMP on CUDA."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["cpu_has_native_bf16", "Precision", "choose_precision"]


def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists amx_bf16 or avx512_bf16 (Linux); False when unknown."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@dataclass(frozen=True)
class Precision:
    """Where and how a training step runs."""

    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    channels_last: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def choose_precision(device: str = "auto", precision: str = "auto") -> Precision:
    """Resolve ``device`` (auto|cpu|cuda[:N]) and ``precision`` (auto|fp32|bf16|fp16)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, "bad")
    if dtype == "bad":
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if dev.type == "cpu" and dtype is torch.float16:
        raise ValueError("fp16 autocast is for CUDA; use bf16 or fp32 on CPU")
    return Precision(device=dev, dtype=dtype, channels_last=dtype is not None)
