"""pix2pix colorizer: a U-Net generator predicting CIE Lab chroma from lightness, and a PatchGAN.

The generator maps L (scaled ``L/50 - 1`` into [-1, 1]) to ab (scaled ``ab/110``). Chroma is
smooth, so the decoder may stop at ``1/chroma_scale`` of the input resolution and the ab map is
upsampled bilinearly; the product recombines it with the input's own L, so colorization never
changes the brightness structure. No BatchNorm and no active dropout at inference: the output for a
tile does not depend on the batch it was run in or on the order of tiles.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from astro_pipeline.models.blocks import ConvAct, DownBlock, UpBlock, default_init, pad_to_multiple

__all__ = ["UNetColorizer", "PatchDiscriminator"]


class UNetColorizer(nn.Module):
    """U-Net generator (pix2pix) for L -> ab, optionally predicting ab at reduced resolution.

    Args:
        in_channels: input planes (1: L).
        out_channels: output planes (2: a, b).
        base_channels: width of the first level; doubles per level up to ``8 * base_channels``.
        depth: number of stride-2 levels (input is reflect-padded to a multiple of ``2**depth``).
        chroma_scale: ab is predicted at ``1/chroma_scale`` resolution (1, 2, 4 ...) and upsampled.
        global_context: add the tile-wide mean of the bottleneck features (per sample) to every
            bottleneck position, so the palette can depend on the whole tile's structure.
        dropout: pix2pix-style dropout in the deepest decoder steps (train mode only).
        input_scale: average-pool L by this factor first and run the whole U-Net at that
            resolution (chroma is smooth; 16x cheaper at 4); ab is upsampled back to full size.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 2,
        base_channels: int = 32,
        depth: int = 4,
        chroma_scale: int = 2,
        global_context: bool = True,
        dropout: float = 0.0,
        input_scale: int = 1,
    ) -> None:
        super().__init__()
        if input_scale < 1:
            raise ValueError(f"input_scale must be >= 1, got {input_scale}")
        self.input_scale = input_scale
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if chroma_scale < 1 or chroma_scale & (chroma_scale - 1) or chroma_scale > 2**depth:
            raise ValueError(f"chroma_scale must be a power of two <= 2**depth, got {chroma_scale}")
        self.depth = depth
        self.chroma_scale = chroma_scale
        self.global_context = global_context
        widths = [min(base_channels * 2**i, base_channels * 8) for i in range(depth + 1)]
        self.stem = nn.Sequential(ConvAct(in_channels, widths[0]), ConvAct(widths[0], widths[0]))
        self.downs = nn.ModuleList(
            DownBlock(in_channels=widths[i], out_channels=widths[i + 1]) for i in range(depth)
        )
        if global_context:
            self.context = nn.Sequential(nn.Linear(widths[-1], widths[-1]), nn.LeakyReLU(0.2, inplace=True))
        stop = chroma_scale.bit_length() - 1  # decoder ends at level log2(chroma_scale)
        self.ups = nn.ModuleList()
        ch = widths[-1]
        for level in range(depth - 1, stop - 1, -1):
            drop = dropout if level >= depth - 2 else 0.0
            self.ups.append(
                UpBlock(in_channels=ch, skip_channels=widths[level], out_channels=widths[level], dropout=drop)
            )
            ch = widths[level]
        self.head = nn.Conv2d(ch, out_channels, 3, padding=1)
        default_init(self)
        nn.init.normal_(self.head.weight, std=1e-3)

    def forward(self, lightness: torch.Tensor) -> torch.Tensor:
        """(N,1,H,W) L/50-1 in [-1,1] -> (N,2,H,W) ab/110 in [-1,1]."""
        x, (h, w) = pad_to_multiple(lightness, self.input_scale * 2**self.depth)
        full = x.shape[-2:]
        if self.input_scale > 1:
            x = F.avg_pool2d(x, self.input_scale)
        feats = [self.stem(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        y = feats[-1]
        if self.global_context:
            g = self.context(y.mean(dim=(2, 3)))
            y = y + g[:, :, None, None]
        for up, skip in zip(self.ups, reversed(feats[:-1]), strict=False):
            y = up(y, skip)
        ab = torch.tanh(self.head(y))
        if ab.shape[-2:] != full:
            ab = F.interpolate(ab, size=full, mode="bilinear", align_corners=False)
        return ab[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN (pix2pix): C64-C128-C256-C512(s1)-1, InstanceNorm after the first layer.

    Input is the conditional pair concatenated on channels (L and ab: 3 planes); output is a map of
    real/fake logits, one per 70x70 receptive field. Used only in training.
    """

    def __init__(self, *, in_channels: int = 3, base_channels: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        ch = base_channels
        for i in range(1, n_layers + 1):
            out = base_channels * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(ch, out, 4, stride=stride, padding=1, bias=False),
                nn.InstanceNorm2d(out, affine=True),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
