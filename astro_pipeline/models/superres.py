"""4x super-resolution: an SRResNet generator, an SRGAN discriminator and the flux-conserving fix.

Works on 3-channel display values in [0, 1] (grey input is replicated by the caller). No
BatchNorm in the generator (as EDSR/BasicSR's MSRResNet), so outputs are batch-independent. The
network learns a residual over a bicubic upsampling of its input.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from astro_pipeline.models.blocks import ResidualBlock, conv3x3, default_init

__all__ = ["SRResNet", "SRDiscriminator", "flux_conserving", "grow_srresnet", "structure_weight"]


class SRResNet(nn.Module):
    """SRResNet (Ledig et al. 2017) without BN: head conv, residual blocks, PixelShuffle x2 stages.

    Args:
        channels: feature width.
        blocks: number of residual blocks.
        scale: upscaling factor, a power of two (one PixelShuffle x2 stage per factor of 2).
        in_channels: image planes in and out (3: RGB).
        global_skip: add a bicubic upsampling of the input to the output ("bicubic") or not ("none").
        back_project: share of the low-resolution residual added back (one step of iterative
            back-projection, Irani & Peleg 1991): ``out += b * bicubic_up(x - block_mean(out))``.
            At 1 the output's block means come close to the input again, so a network that learned
            to denoise cannot also take the flux of faint sources with the noise; 0 (the default,
            and every earlier weights file) leaves the network's output as it is.
        detail: scale of what the network adds to its bicubic skip (no parameters): 1 (the default,
            and every earlier weights file) as trained, 0 bicubic. Below 1, faint noise bumps are
            sharpened less into source-like peaks, at a cost in PSNR that grows as ``(1 - detail)^2``
            near a well-trained network. Needs ``global_skip``; back-projection acts after it.
        noise_gate: keep the network's detail only where the input has structure the noise cannot
            explain (no parameters): the local energy of the input's high-pass, over 3 x 3 pixels,
            in units of its robust (MAD) level over the image, must pass ``noise_gate``; the detail
            ramps in between ``noise_gate`` and twice it. Below, the output is the bicubic skip, so
            empty sky is never sharpened into source-like peaks. 0 (the default, and every earlier
            weights file) keeps the detail everywhere. Needs ``global_skip``.
    """

    def __init__(
        self,
        *,
        channels: int = 32,
        blocks: int = 8,
        scale: int = 4,
        in_channels: int = 3,
        global_skip: str = "bicubic",
        back_project: float = 0.0,
        detail: float = 1.0,
        noise_gate: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= back_project <= 1.0:
            raise ValueError(f"back_project must be in [0, 1], got {back_project}")
        if not 0.0 <= detail <= 1.0:
            raise ValueError(f"detail must be in [0, 1], got {detail}")
        if detail != 1.0 and global_skip == "none":
            raise ValueError("detail below 1 needs a global skip to lean towards")
        if noise_gate < 0.0:
            raise ValueError(f"noise_gate must be >= 0, got {noise_gate}")
        if noise_gate and global_skip == "none":
            raise ValueError("noise_gate needs a global skip to fall back on")
        self.back_project = float(back_project)
        self.detail = float(detail)
        self.noise_gate = float(noise_gate)
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, got {scale}")
        if global_skip not in ("bicubic", "bilinear", "none"):
            raise ValueError(f"global_skip must be bicubic, bilinear or none, got {global_skip!r}")
        self.scale = scale
        self.global_skip = global_skip
        self.head = nn.Sequential(conv3x3(in_channels, channels), nn.LeakyReLU(0.1, inplace=True))
        self.body = nn.Sequential(*(ResidualBlock(channels=channels) for _ in range(blocks)))
        self.body_tail = conv3x3(channels, channels)
        ups: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            ups += [conv3x3(channels, channels * 4), nn.PixelShuffle(2), nn.LeakyReLU(0.1, inplace=True)]
        self.upsample = nn.Sequential(*ups)
        self.tail = nn.Sequential(conv3x3(channels, channels), nn.LeakyReLU(0.1, inplace=True), conv3x3(channels, in_channels))
        default_init(self, scale=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,h,w) in [0,1] -> (N,3,scale*h,scale*w), approximately in [0,1] (clamp downstream)."""
        feat = self.head(x)
        feat = feat + self.body_tail(self.body(feat))
        out = self.tail(self.upsample(feat))
        if self.detail != 1.0:
            out = self.detail * out
        if self.noise_gate:
            out = out * structure_weight(x, threshold=self.noise_gate, scale=self.scale)
        if self.global_skip != "none":
            out = out + F.interpolate(x, scale_factor=self.scale, mode=self.global_skip, align_corners=False)
        if self.back_project:
            resid = x - F.avg_pool2d(out, self.scale)
            out = out + self.back_project * F.interpolate(resid, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


def _box3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def structure_weight(x: torch.Tensor, *, threshold: float, scale: int) -> torch.Tensor:
    """(N,1,scale*h,scale*w) in [0,1]: 0 where the input's local structure is consistent with its
    noise, 1 where it is significant (see ``SRResNet(noise_gate=...)``).

    The high-pass is the luminance minus its 3 x 3 mean; its noise level is 1.4826 x its median
    absolute deviation over each image, so it needs no sky region and no noise model. The
    significance is the 3 x 3 mean of the squared high-pass over that level squared (about 1 on
    pure noise); the weight ramps from 0 at ``threshold`` to 1 at twice it, then is upsampled."""
    lum = x.mean(dim=1, keepdim=True)
    hp = lum - _box3(lum)
    flat = hp.flatten(1)
    mad = (flat - flat.median(dim=1, keepdim=True).values).abs().median(dim=1).values * 1.4826
    level = mad.clamp_min(1e-3).square().view(-1, 1, 1, 1)  # 8-bit quantisation sets the floor
    energy = _box3(hp.square()) / level
    weight = ((energy - threshold) / threshold).clamp(0.0, 1.0)
    return F.interpolate(weight, scale_factor=scale, mode="bilinear", align_corners=False).clamp(0.0, 1.0)


@torch.no_grad()
def grow_srresnet(big: SRResNet, small: SRResNet) -> SRResNet:
    """Start ``big`` from a trained ``small`` of the same width with fewer residual blocks.

    The small model's layers are copied; the extra blocks go after its blocks with their last conv
    zeroed, so each is the identity and ``big`` computes exactly what ``small`` did (a warm start that
    training can only improve from)."""
    n_small, n_big = len(small.body), len(big.body)
    if n_big < n_small or small.head[0].out_channels != big.head[0].out_channels or small.scale != big.scale:
        raise ValueError(f"cannot grow SRResNet of {n_small} blocks x {small.head[0].out_channels} ch (x{small.scale}) "
                         f"into {n_big} blocks x {big.head[0].out_channels} ch (x{big.scale})")
    big_state = big.state_dict()
    for key, value in small.state_dict().items():
        big_state[key] = value.clone()
    big.load_state_dict(big_state)
    for block in list(big.body)[n_small:]:
        assert isinstance(block, ResidualBlock)
        nn.init.zeros_(block.conv2.weight)
        nn.init.zeros_(block.conv2.bias)
    big.global_skip = small.global_skip
    return big


def flux_conserving(sr_out: torch.Tensor, lr_in: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """Shift each ``scale x scale`` block of ``sr_out`` so its mean equals the matching ``lr_in`` pixel.

    The correction is additive and constant per block, so the super-resolved detail is kept and
    averaging the result over blocks gives back the input exactly (up to float rounding).
    """
    if sr_out.shape[-2] != lr_in.shape[-2] * scale or sr_out.shape[-1] != lr_in.shape[-1] * scale:
        raise ValueError(
            f"flux_conserving: output {tuple(sr_out.shape[-2:])} is not {scale}x input {tuple(lr_in.shape[-2:])}"
        )
    sr = sr_out.to(torch.float32)
    lr = lr_in.to(torch.float32)
    residual = lr - F.avg_pool2d(sr, scale)
    return sr + F.interpolate(residual, scale_factor=scale, mode="nearest")


class SRDiscriminator(nn.Module):
    """SRGAN discriminator: strided conv stack, then global pooling and a small dense head.

    Global average pooling (instead of SRGAN's fixed 96x96 dense layer) accepts any crop size.
    No normalisation layers (spectral tricks are unnecessary at this size); used only in training.
    """

    def __init__(self, *, in_channels: int = 3, base_channels: int = 32, n_stages: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv3x3(in_channels, base_channels), nn.LeakyReLU(0.2, inplace=True)]
        ch = base_channels
        for i in range(n_stages):
            out = base_channels * min(2**i, 8)
            layers += [
                nn.Conv2d(ch, out, 4, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                conv3x3(out, out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(ch, ch * 2), nn.LeakyReLU(0.2, inplace=True), nn.Linear(ch * 2, 1))
        default_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) in [0,1] -> (N,1) real/fake logits."""
        return self.head(self.features(x).mean(dim=(2, 3)))
