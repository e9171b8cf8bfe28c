"""Losses: L1, GAN (BCE with logits), VGG16 perceptual (taps up to relu3_3) and LPIPS (VGG16 v0.1 heads).

The VGG16 features and LPIPS heads come from one safetensors file (``Settings.perceptual_weights``).
When it is absent, :func:`load_vgg16` returns None, the caller logs that the perceptual term is
skipped, and training goes on without it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from astro_pipeline.models.vgg import IMAGENET_MEAN, IMAGENET_STD, RELU_INDEX, vgg16_layers

__all__ = ["VGG16Features", "PerceptualLoss", "LPIPS", "load_vgg16", "gan_loss", "RELU_INDEX"]

log = logging.getLogger(__name__)

_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


class VGG16Features(nn.Module):
    """torchvision-layout VGG16 ``features`` truncated after ``last`` (a relu name); frozen."""

    def __init__(self, *, last: str = "relu5_3") -> None:
        super().__init__()
        self.features = nn.Sequential(*vgg16_layers(last))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, taps: tuple[str, ...]) -> list[torch.Tensor]:
        want = {RELU_INDEX[t]: t for t in taps}
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in want:
                out[want[i]] = x
                if len(out) == len(want):
                    break
        return [out[t] for t in taps]


def load_vgg16(path: Path | None, *, last: str = "relu5_3") -> tuple[VGG16Features, dict[str, torch.Tensor]] | None:
    """VGG16 features (and the LPIPS head weights) from the shared safetensors file, or None if absent."""
    if path is None or not Path(path).is_file():
        log.warning("perceptual weights not found at %s: perceptual/LPIPS terms are skipped", path)
        return None
    from safetensors.torch import load_file

    state = load_file(str(path))
    model = VGG16Features(last=last)
    own = {k: v.float() for k, v in state.items() if k.startswith("features.") and int(k.split(".")[1]) < len(model.features)}
    model.load_state_dict(own, strict=True)
    heads = {k: v.float() for k, v in state.items() if k.startswith("lpips.")}
    return model, heads


_IMAGENET_MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
_IMAGENET_STD = torch.tensor(IMAGENET_STD)[:, None, None]


class PerceptualLoss(nn.Module):
    """Mean L1 distance of VGG16 features at ``layers`` of ImageNet-normalised [0,1] RGB.

    SRGAN/BasicSR use one deep tap (relu3_3 here); adding the shallower relu1_2/relu2_2 taps
    ("features up to relu3_3") also penalises the fine-texture loss that blurs SR output.
    """

    def __init__(self, vgg: VGG16Features, *, layers: tuple[str, ...] = ("relu3_3",)) -> None:
        super().__init__()
        unknown = [t for t in layers if t not in RELU_INDEX]
        if not layers or unknown:
            raise ValueError(f"perceptual layers must be among {sorted(RELU_INDEX)}, got {layers!r}")
        self.vgg, self.layers = vgg, tuple(layers)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        m, s = _IMAGENET_MEAN.to(sr), _IMAGENET_STD.to(sr)
        f_sr = self.vgg((sr - m) / s, self.layers)
        with torch.no_grad():
            f_hr = self.vgg((hr - m) / s, self.layers)
        return torch.stack([F.l1_loss(a, b) for a, b in zip(f_sr, f_hr, strict=True)]).mean()


class LPIPS(nn.Module):
    """LPIPS v0.1 (VGG16): unit-normalised features at five ReLUs, weighted by the learnt 1x1 heads."""

    _SHIFT = torch.tensor([-0.030, -0.088, -0.188])[:, None, None]
    _SCALE = torch.tensor([0.458, 0.448, 0.450])[:, None, None]
    TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")

    def __init__(self, vgg: VGG16Features, heads: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.vgg = vgg
        self.heads = [heads[f"lpips.lin{i}.weight"] for i in range(5)]

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised VGG features of (N,3,H,W) RGB in [0,1] (cache the truth's once)."""
        sh, sc = self._SHIFT.to(x), self._SCALE.to(x)
        feats = self.vgg(((x * 2 - 1) - sh) / sc, self.TAPS)
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in feats]

    @torch.no_grad()
    def features_and_pooled(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """:meth:`features` plus the raw relu5_3 activations global-average-pooled (N, 512), from
        one VGG pass. LPIPS's input scaling is ImageNet normalisation, so the pooled features are
        the usual VGG16 ones (KID uses them)."""
        sh, sc = self._SHIFT.to(x), self._SCALE.to(x)
        feats = self.vgg(((x * 2 - 1) - sh) / sc, self.TAPS)
        unit = [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in feats]
        return unit, feats[-1].mean(dim=(2, 3))

    @torch.no_grad()
    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS between two sets of :meth:`features` -> (N,) distances."""
        total = torch.zeros(fx[0].shape[0], dtype=fx[0].dtype, device=fx[0].device)
        for a, b, w in zip(fx, fy, self.heads, strict=True):
            total = total + F.conv2d((a - b) ** 2, w.to(a)).mean(dim=(1, 2, 3))
        return total

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) RGB in [0,1] each -> (N,) distances."""
        return self.distance(self.features(x), self.features(y))


def gan_loss(logits: torch.Tensor, *, real: bool) -> torch.Tensor:
    """Vanilla GAN loss (pix2pix/SRGAN): BCE with logits against all-real or all-fake labels."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)
