"""Band-aware colour model: any subset of the B, G, R slots (or lightness alone) in, full colour out.

One conditional generator for every colour case the pipeline meets:

- **bands given** (one or two of the three chromatic slots, display units): the missing slots are
  predicted as a residual over the naive fill (mean of R and B for G; the nearer given band for B or
  R; the lone band replicated), at full resolution; given slots are copied through exactly.
- **lightness alone** (PNG/JPEG/TIF, filter unknown): a distribution over quantised CIE ab bins is
  predicted at 1/8 resolution (Zhang et al. 2016) and read out as its annealed mean at
  ``temperature``; the caller recombines that ab with the product's own L*, so lightness is exact.

The encoder is ImageNet VGG16 (frozen, torchvision layout) up to relu4_3, run at 1/``encoder_scale``
resolution on the grey it can always have: the lightness, or the mean of the given bands. Its
relu3_3/relu4_3 maps feed a small trainable head, which also sees the given bands and their mask at
several scales. A **frame-level context** (pooled encoder features and band statistics of a
downsampled view of the whole frame, Iizuka et al. 2016 style global fusion) modulates the head
through FiLM, so every tile of one frame shares one palette; the engine computes it once per frame
via :meth:`BandColorizer.frame_context`. No BatchNorm and no batch statistics: a tile's output never
depends on its batch.

Channel order is RGB everywhere (R = the reddest slot); ``mask`` is (N, 3) in the same order.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from astro_pipeline.models.blocks import pad_to_multiple
from astro_pipeline.models.vgg import IMAGENET_MEAN, IMAGENET_STD, RELU_INDEX, vgg16_layers

__all__ = [
    "BandColorizer",
    "PlaneDiscriminator",
    "ab_bin_centers",
    "naive_fill",
    "masked_grey",
    "CONTEXT_STATS",
]

_RELU33, _RELU43 = RELU_INDEX["relu3_3"], RELU_INDEX["relu4_3"]  # the ReLU outputs tapped (torchvision numbering)
#: Per-frame plane statistics in the context vector: mean and std of R, G, B (masked) and grey.
CONTEXT_STATS = 8


def ab_bin_centers(grid: float = 10.0, limit: float = 110.0) -> torch.Tensor:
    """(Q, 2) centres of the square ab grid (spacing ``grid``, from -limit to +limit inclusive)."""
    n = int(round(2 * limit / grid)) + 1
    axis = torch.linspace(-limit, limit, n)
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)


def masked_grey(planes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The grey the encoder sees: mean of the given R, G, B planes, or plane 3 (L as grey) when none is given.

    ``planes`` (N, 4, H, W): R, G, B (anything where not given) and grey; ``mask`` (N, 3) in {0, 1}.
    """
    m = mask[:, :, None, None].to(planes.dtype)
    n = m.sum(1, keepdim=True)
    mean = (planes[:, :3] * m).sum(1, keepdim=True) / n.clamp_min(1.0)
    return torch.where(n > 0, mean, planes[:, 3:4])


def naive_fill(planes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The issue's naive baseline for the missing slots (N, 3, H, W), given slots copied.

    Two given: R + B -> G is their mean; G + R -> B is G; B + G -> R is G (the nearer band). One given:
    replicated. None given: the grey plane replicated (grey-as-colour).
    """
    m = mask[:, :, None, None].to(planes.dtype)
    rgb = planes[:, :3] * m
    n = m.sum(1, keepdim=True)
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    mr, mg, mb = m[:, 0:1], m[:, 1:2], m[:, 2:3]
    # nearest given neighbour of each slot on the wavelength axis (R - G - B), ties -> mean
    fill_r = torch.where(mg > 0, g, torch.where(mb > 0, b, 0 * g))
    fill_b = torch.where(mg > 0, g, torch.where(mr > 0, r, 0 * g))
    fill_g = torch.where((mr > 0) & (mb > 0), 0.5 * (r + b), torch.where(mr > 0, r, b))
    filled = torch.cat([torch.where(mr > 0, r, fill_r), torch.where(mg > 0, g, fill_g), torch.where(mb > 0, b, fill_b)], 1)
    grey = planes[:, 3:4].expand_as(filled)
    return torch.where(n > 0, filled, grey)


class _FiLM(nn.Module):
    """Feature-wise affine modulation from the frame context: y * (1 + gamma) + beta."""

    def __init__(self, context_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(context_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, y: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(ctx).chunk(2, dim=1)
        return y * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


class BandColorizer(nn.Module):
    """Frozen VGG16 (to relu4_3) at 1/``encoder_scale`` resolution plus a small FiLM-conditioned head.

    The engine reads ``in_channels`` (4 planes per tile) and ``context_side`` (long side of the
    frame view :meth:`frame_context` is given).

    Args:
        encoder_scale: the encoder sees the grey average-pooled by this factor (4: VGG at 1/4).
        width: channels of the 1/16-resolution trunk (relu3_3 and relu4_3 fused).
        mid_width: channels of the 1/8-resolution trunk (where the ab bins are predicted).
        fine_width: channels of the full-resolution residual head (band completion).
        context_dim: size of the frame context vector fed to the FiLM layers.
        ab_grid, ab_limit: the quantised ab bins (square grid, CIE ab units).
        temperature: annealed-mean temperature of the ab read-out (1: the mean; -> 0: the mode).
        prior_correction: how much of the training's class rebalancing the read-out undoes (0: none,
            the rebalanced distribution; 1: all, the model's estimate of the true colour distribution).
            Rebalanced cross-entropy learns p(q|x) * w_q; dividing by ``w_q ** prior_correction``
            moves the read-out from vivid to conservative. The weights are the buffer ``log_rebalance``.
        feature_dropout: channel dropout on the encoder maps and pooled context (train mode only).
        band_affine: the band residual includes a spatially varying affine colour model: per output
            slot, weights on the given slots plus an offset, predicted at 1/8 resolution and upsampled
            (locally the bands of one region are nearly linear in each other, globally they are not).
    """

    in_channels = 4
    context_side = 512

    def __init__(
        self,
        *,
        encoder_scale: int = 4,
        width: int = 128,
        mid_width: int = 64,
        fine_width: int = 16,
        context_dim: int = 128,
        ab_grid: float = 10.0,
        ab_limit: float = 110.0,
        temperature: float = 0.4,
        prior_correction: float = 0.0,
        feature_dropout: float = 0.1,
        band_affine: bool = True,
    ) -> None:
        super().__init__()
        if encoder_scale < 1 or encoder_scale & (encoder_scale - 1):
            raise ValueError(f"encoder_scale must be a power of two, got {encoder_scale}")
        if not 0 < temperature <= 1:
            raise ValueError(f"temperature must be in (0, 1], got {temperature}")
        self.encoder_scale = encoder_scale
        self.temperature = float(temperature)
        self.prior_correction = float(prior_correction)
        self.multiple = 8 * encoder_scale  # relu4_3 is at 1/8 of the encoder input
        self.encoder = nn.Sequential(*vgg16_layers("relu4_3"))  # keys features.N as in torchvision, prefixed 'encoder.'
        self.encoder.requires_grad_(False)
        self.register_buffer("img_mean", torch.tensor(IMAGENET_MEAN)[None, :, None, None], persistent=False)
        self.register_buffer("img_std", torch.tensor(IMAGENET_STD)[None, :, None, None], persistent=False)
        self.register_buffer("ab_centers", ab_bin_centers(ab_grid, ab_limit), persistent=False)
        q = self.ab_centers.shape[0]
        self.n_bins = q
        self.register_buffer("log_rebalance", torch.zeros(q))  # log of the training's class weights (saved)

        self.drop = nn.Dropout2d(feature_dropout) if feature_dropout > 0 else nn.Identity()
        self.ctx_drop = nn.Dropout(feature_dropout) if feature_dropout > 0 else nn.Identity()
        ctx_in = 512 + 256 + CONTEXT_STATS + 3
        self.context_mlp = nn.Sequential(
            nn.Linear(ctx_in, 256), nn.LeakyReLU(0.2, inplace=True), nn.Linear(256, context_dim), nn.LeakyReLU(0.2, inplace=True)
        )
        planes = 7  # R, G, B (masked), mask R, G, B, grey
        self.shallow4 = _conv(planes, 24)
        self.shallow8 = _conv(24, 48, stride=2)
        self.proj4 = _conv(512, width, 1)
        self.proj3 = _conv(256, width, 1)
        self.t16a = _conv(width + planes, width)
        self.t16b = _conv(width, width)
        self.film16 = _FiLM(context_dim, width)
        self.t8a = _conv(width + 48, mid_width)
        self.t8b = _conv(mid_width, mid_width)
        self.film8 = _FiLM(context_dim, mid_width)
        self.ab_logits = _conv(mid_width, q, 1)
        self.fine_ctx = _conv(mid_width, fine_width, 1)
        self.fine_local = _conv(planes + 3, 12)
        self.fine_mix = _conv(12 + fine_width, fine_width, 1)
        self.fine_out = _conv(fine_width, 3, 1)
        self.band_affine = band_affine
        if band_affine:
            self.affine = _conv(mid_width, 12, 1)  # per output slot: 3 weights on the given slots + offset
        self.act = nn.LeakyReLU(0.2, inplace=True)
        for name, m in self.named_modules():
            if name.startswith("encoder") or isinstance(m, _FiLM):
                continue
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not any(m is f.proj for f in (self.film16, self.film8)):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.fine_out.weight, std=1e-3)
        if band_affine:
            nn.init.zeros_(self.affine.weight)
            nn.init.zeros_(self.affine.bias)
        nn.init.normal_(self.ab_logits.weight, std=1e-2)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        # files and checkpoints written before the rebalancing weights were stored read as "no correction"
        state_dict.setdefault(prefix + "log_rebalance", torch.zeros_like(self.log_rebalance))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    # -- encoder ------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> BandColorizer:
        super().train(mode)
        self.encoder.eval()  # frozen, no dropout/BN anyway; keep it out of train mode
        return self

    def encode(self, grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, H, W) grey in [0, 1] (H, W multiples of ``multiple``) -> relu3_3 (1/16) and relu4_3 (1/32) maps."""
        x = F.avg_pool2d(grey, self.encoder_scale) if self.encoder_scale > 1 else grey
        x = (x.expand(-1, 3, -1, -1) - self.img_mean.to(x.dtype)) / self.img_std.to(x.dtype)
        f3 = None
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i == _RELU33:
                f3 = x
        assert f3 is not None
        return f3, x

    # -- frame context --------------------------------------------------------------------------
    @staticmethod
    def plane_stats(planes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, 8): mean and std over the frame of the given R, G, B (0 where missing) and of the grey."""
        m = mask.to(planes.dtype)
        grey = masked_grey(planes, mask)
        x = torch.cat([planes[:, :3] * m[:, :, None, None], grey], 1)
        mean = x.mean(dim=(2, 3))
        std = x.std(dim=(2, 3), unbiased=False) if x.shape[-1] * x.shape[-2] > 1 else torch.zeros_like(mean)
        return torch.stack([mean, std], dim=2).reshape(x.shape[0], -1)

    def context_from_pooled(self, pooled: torch.Tensor, stats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Context vector from pooled relu4_3 + relu3_3 means (N, 768), plane stats (N, 8) and mask (N, 3)."""
        return self.context_mlp(torch.cat([self.ctx_drop(pooled), stats, mask.to(pooled.dtype)], 1))

    @staticmethod
    def pool_features(f3: torch.Tensor, f4: torch.Tensor) -> torch.Tensor:
        """(N, 768): spatial means of relu4_3 and relu3_3."""
        return torch.cat([f4.mean(dim=(2, 3)), f3.mean(dim=(2, 3))], 1)

    def frame_context(self, view: torch.Tensor, *, mask: torch.Tensor) -> torch.Tensor:
        """Context of a whole frame from a downsampled view of it: (1, 4, h, w) planes -> (1, context_dim).

        The engine calls this once per frame (the view's long side at most 512 px, as in training)
        and passes the result to every tile's :meth:`forward`.
        """
        mask = mask.to(view.dtype).expand(view.shape[0], -1)
        padded, _ = pad_to_multiple(view, self.multiple)
        f3, f4 = self.encode(masked_grey(padded, mask))
        return self.context_from_pooled(self.pool_features(f3, f4), self.plane_stats(view, mask), mask)

    # -- head ---------------------------------------------------------------------------------
    def decode(
        self,
        planes: torch.Tensor,
        mask: torch.Tensor,
        f3: torch.Tensor,
        f4: torch.Tensor,
        context: torch.Tensor,
        *,
        want_rgb: bool = True,
        want_ab: bool = True,
        temperature: float | None = None,
        window: tuple[int, int, int] | None = None,
        full_ab: bool = True,
    ) -> dict[str, torch.Tensor]:
        """The trainable head on precomputed encoder maps (training caches them).

        Returns ``rgb`` (N, 3, H, W: completion, given slots copied) and/or ``logits`` (N, Q, H/8, W/8)
        and ``ab`` (N, 2, H, W: annealed mean in CIE ab units, upsampled bilinearly). With ``window``
        ``(y0, x0, size)`` (multiples of 8) the full-resolution outputs cover only that square, exactly
        as the same pixels of the full output (training runs the costly full-resolution head on a window).
        """
        m = mask.to(planes.dtype)
        mm = m[:, :, None, None]
        grey = masked_grey(planes, mask)
        given = planes[:, :3] * mm
        p = torch.cat([given, mm.expand_as(given), grey], 1)
        s = self.encoder_scale
        p16 = F.avg_pool2d(p, 4 * s)
        s4 = self.act(self.shallow4(F.avg_pool2d(p, s)))
        s8 = self.act(self.shallow8(s4))
        y = self.proj4(self.drop(f4))
        y = F.interpolate(y, size=f3.shape[-2:], mode="bilinear", align_corners=False) + self.proj3(self.drop(f3))
        y = self.act(y)
        y = self.act(self.film16(self.t16a(torch.cat([y, p16], 1)), context))
        y = self.act(self.t16b(y))
        y = F.interpolate(y, size=s8.shape[-2:], mode="bilinear", align_corners=False)
        y = self.act(self.film8(self.t8a(torch.cat([y, s8], 1)), context))
        y = self.act(self.t8b(y))
        out: dict[str, torch.Tensor] = {}
        full = planes.shape[-2:]
        if want_ab:
            logits = self.ab_logits(y)
            t = self.temperature if temperature is None else float(temperature)
            adj = logits.float()
            if self.prior_correction:
                adj = adj - self.prior_correction * self.log_rebalance.to(adj.dtype)[None, :, None, None]
            prob = torch.softmax(adj / t, dim=1)
            ab = torch.einsum("nqhw,qc->nchw", prob, self.ab_centers.to(prob.dtype))
            out["logits"] = logits
            out["ab_low"] = ab
            if full_ab:
                out["ab"] = F.interpolate(ab, size=full, mode="bilinear", align_corners=False)
        if want_rgb:
            g = _upsample_window(self.fine_ctx(y), 8, window, full)
            if window is not None:
                y0, x0, size = window
                lo_y, lo_x = max(y0 - 1, 0), max(x0 - 1, 0)  # one pixel of margin for the 3x3 conv
                hi_y, hi_x = min(y0 + size + 1, full[0]), min(x0 + size + 1, full[1])
                planes, p, given = (t[..., lo_y:hi_y, lo_x:hi_x] for t in (planes, p, given))
                crop = (slice(y0 - lo_y, y0 - lo_y + size), slice(x0 - lo_x, x0 - lo_x + size))
            base = naive_fill(planes, mask)
            h = self.act(self.fine_local(torch.cat([p, base], 1)))
            if window is not None:
                h, base, given = (t[..., crop[0], crop[1]] for t in (h, base, given))
            h = self.act(self.fine_mix(torch.cat([h, g], 1)))
            rgb = base + self.fine_out(h)
            if self.band_affine:
                coef = _upsample_window(self.affine(y), 8, window, full)  # (N, 12, h, w)
                n = coef.shape[0]
                coef = coef.reshape(n, 3, 4, *coef.shape[-2:])
                rgb = rgb + (coef[:, :, :3] * given[:, None]).sum(2) + coef[:, :, 3]
            out["rgb"] = torch.where(mm > 0, given, rgb)
        return out

    def forward(self, planes: torch.Tensor, *, mask: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 4, H, W) planes (R, G, B, grey; display units) -> the completion for one case per call.

        Any slot given (``mask`` non-zero): (N, 3, H, W) RGB, given slots exact. No slot given: (N, 2, H, W)
        ab / 110 of the annealed-mean read-out, to be recombined with the input's own L*. ``mask`` is (N, 3)
        or (1, 3); ``context`` (N or 1, context_dim), else computed from the input itself (tile = frame).

        Called like the first colorizer, with one plane ``L / 50 - 1`` and no mask, it answers like it:
        lightness alone, ab / 110 (so code written for ``UNetColorizer`` can run this model). Four planes
        and no mask are lightness alone too (plane 3 the grey), as the engine's batch calibration calls it.
        """
        if mask is None:
            if planes.shape[1] == 1:
                grey = _grey_from_lnorm(planes)
                planes = torch.cat([grey.expand(-1, 3, -1, -1), grey], 1)
            elif planes.shape[1] != 4:
                raise ValueError(f"expected 4 planes (R, G, B, grey) or one L/50-1 plane, got {planes.shape[1]}")
            mask = torch.zeros(1, 3, dtype=planes.dtype, device=planes.device)
        n = planes.shape[0]
        mask = mask.to(planes.dtype).expand(n, -1)
        given = mask.sum(1) > 0
        if bool(given.any()) != bool(given.all()):
            raise ValueError("one colour case per call: every sample needs the same kind of mask (bands given or none)")
        x, (h, w) = pad_to_multiple(planes, self.multiple)
        f3, f4 = self.encode(masked_grey(x, mask))
        if context is None:
            context = self.context_from_pooled(self.pool_features(f3, f4), self.plane_stats(planes, mask), mask)
        context = context.to(x.dtype).expand(n, -1)
        any_given = bool(given.all())
        out = self.decode(x, mask, f3, f4, context, want_rgb=any_given, want_ab=not any_given)
        y = out["rgb"] if any_given else out["ab"] / 110.0
        return y[..., :h, :w]


def _grey_from_lnorm(lnorm: torch.Tensor) -> torch.Tensor:
    """L / 50 - 1 -> the sRGB-encoded grey with that L* (the first colorizer's input convention)."""
    f = ((lnorm.float() + 1) * 50 + 16) / 116
    y = torch.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)).clamp(0, 1)
    return torch.where(y <= 0.0031308, 12.92 * y, 1.055 * y.clamp_min(0.0031308) ** (1 / 2.4) - 0.055).clamp(0, 1)


def _upsample_window(t: torch.Tensor, scale: int, window: tuple[int, int, int] | None, full: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear x``scale`` upsampling of ``t`` to ``full``, or only its ``window`` (same values, less work)."""
    if window is None:
        return F.interpolate(t, size=tuple(full), mode="bilinear", align_corners=False)
    y0, x0, size = window
    if y0 % scale or x0 % scale or size % scale:
        raise ValueError(f"window {window} must be aligned to multiples of {scale}")
    r0, c0 = max(y0 // scale - 1, 0), max(x0 // scale - 1, 0)
    r1, c1 = min((y0 + size) // scale + 1, t.shape[-2]), min((x0 + size) // scale + 1, t.shape[-1])
    # a sub-grid touching the true border clamps there as the full interpolation does; inner edges have a cell of margin
    sub = t[..., r0:r1, c0:c1]
    up = F.interpolate(sub, size=((r1 - r0) * scale, (c1 - c0) * scale), mode="bilinear", align_corners=False)
    oy, ox = y0 - r0 * scale, x0 - c0 * scale
    return up[..., oy : oy + size, ox : ox + size]


class PlaneDiscriminator(nn.Module):
    """PatchGAN (pix2pix) on (condition grey, RGB) pairs at reduced resolution, for the short GAN phase.

    Input (N, 4, H, W): the grey the generator saw and its RGB output (or the truth). Training only.
    """

    def __init__(self, *, in_channels: int = 4, base_channels: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        ch = base_channels
        for i in range(1, n_layers + 1):
            out = base_channels * min(2**i, 8)
            layers += [
                nn.Conv2d(ch, out, 4, stride=2 if i < n_layers else 1, padding=1, bias=False),
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

