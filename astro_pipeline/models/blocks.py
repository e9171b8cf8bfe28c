"""Small building blocks shared by the generators and discriminators (BasicSR style).

No BatchNorm anywhere in the generators: every output pixel depends only on its own sample,
so results do not change with batch size or tile order.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["conv3x3", "ConvAct", "ResidualBlock", "DownBlock", "UpBlock", "pad_to_multiple", "default_init"]


def conv3x3(in_channels: int, out_channels: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """3x3 convolution with 'same' padding."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class ConvAct(nn.Sequential):
    """Conv 3x3 followed by LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__(conv3x3(in_channels, out_channels, stride=stride), nn.LeakyReLU(0.2, inplace=True))


class ResidualBlock(nn.Module):
    """EDSR/SRResNet residual block without BatchNorm: x + s * conv(relu(conv(x)))."""

    def __init__(self, *, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x)))


class DownBlock(nn.Module):
    """U-Net encoder step: strided 4x4 conv (halves H, W), LeakyReLU, then a 3x3 conv + LeakyReLU."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.conv = ConvAct(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.down(x)))


class UpBlock(nn.Module):
    """U-Net decoder step: bilinear x2 (no checkerboard), concat the skip, two 3x3 conv + LeakyReLU.

    Dropout (pix2pix's noise source) is an ``nn.Dropout``, active only in train mode.
    """

    def __init__(self, *, in_channels: int, skip_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = ConvAct(in_channels + skip_channels, out_channels)
        self.conv2 = ConvAct(out_channels, out_channels)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.drop(self.conv2(self.conv1(torch.cat([x, skip], dim=1))))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad H and W up to a multiple (replicate when the input is too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def default_init(module: nn.Module, *, scale: float = 1.0) -> None:
    """Kaiming-normal init for convs (scaled down, as BasicSR does for residual nets), zero bias."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
            m.weight.data.mul_(scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
