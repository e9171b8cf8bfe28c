"""Network behaviour: shapes, batch/tile-order invariance, chroma at reduced resolution, flux conservation."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from model_helpers import random_weights

from astro_pipeline.models.colorizer import PatchDiscriminator, UNetColorizer
from astro_pipeline.models.superres import SRDiscriminator, SRResNet, flux_conserving


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_colorizer_shapes_and_range_any_size():
    torch.manual_seed(0)
    model = UNetColorizer(base_channels=8, depth=3, chroma_scale=4).eval()
    for h, w in [(64, 64), (50, 37), (7, 9)]:
        out = model(torch.rand(2, 1, h, w) * 2 - 1)
        assert out.shape == (2, 2, h, w)
        assert out.abs().max() <= 1.0


def test_colorizer_rejects_bad_chroma_scale():
    with pytest.raises(ValueError, match="chroma_scale"):
        UNetColorizer(depth=2, chroma_scale=8)
    with pytest.raises(ValueError, match="chroma_scale"):
        UNetColorizer(depth=3, chroma_scale=3)


@pytest.mark.parametrize("task", ["colorize", "superres"])
def test_output_independent_of_batch_size_and_tile_order(task):
    model, meta = random_weights(task, tiny=True, seed=3)
    g = torch.Generator().manual_seed(1)
    cin = 1 if task == "colorize" else 3
    tiles = torch.rand(6, cin, 32, 32, generator=g)
    with torch.inference_mode():
        batched = model(tiles)
        one_by_one = torch.cat([model(t[None]) for t in tiles])
        perm = torch.tensor([5, 2, 0, 4, 1, 3])
        shuffled = model(tiles[perm])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shuffled, batched[perm], atol=1e-5, rtol=1e-4)


def test_colorizer_dropout_inactive_at_inference():
    torch.manual_seed(0)
    model = UNetColorizer(base_channels=8, depth=3, chroma_scale=1, dropout=0.5)
    x = torch.rand(1, 1, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout is live in training ...
    model.eval()
    assert torch.equal(model(x), model(x))  # ... and off at inference


def test_reduced_resolution_chroma_is_smooth():
    torch.manual_seed(0)
    model = UNetColorizer(base_channels=8, depth=3, chroma_scale=4).eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.5)
        out = model(torch.rand(1, 1, 64, 64))
    # Predicted at 16x16 and upsampled bilinearly: re-sampling it at 16x16 and back changes little.
    round_trip = F.interpolate(F.interpolate(out, size=(16, 16), mode="area"), size=(64, 64), mode="bilinear")
    assert (round_trip - out).abs().mean() < 0.25 * out.abs().mean()


def test_patch_discriminator_is_70px_patchgan():
    d = PatchDiscriminator(in_channels=3, base_channels=8)
    out = d(torch.rand(2, 3, 256, 256))
    assert out.shape == (2, 1, 30, 30)  # pix2pix's 70x70 PatchGAN gives 30x30 on 256 px


def test_srresnet_scales_by_4_and_starts_near_bicubic():
    torch.manual_seed(0)
    model = SRResNet(channels=8, blocks=2, scale=4).eval()
    x = torch.rand(2, 3, 12, 10)
    out = model(x)
    assert out.shape == (2, 3, 48, 40)
    bicubic = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert (out - bicubic).abs().mean() < 0.1  # residual branch starts small (scaled init)


def test_srresnet_rejects_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        SRResNet(scale=3)


def test_flux_conserving_block_means_equal_input():
    torch.manual_seed(0)
    model = SRResNet(channels=8, blocks=2).eval()
    lr = torch.rand(2, 3, 16, 16) * 1000.0  # linear flux values, not [0,1]
    with torch.no_grad():
        sr = model(lr)
    assert (F.avg_pool2d(sr, 4) - lr).abs().max() > 1e-2  # the raw output does not conserve flux
    fixed = flux_conserving(sr, lr, scale=4)
    torch.testing.assert_close(F.avg_pool2d(fixed, 4), lr, atol=1e-3, rtol=1e-5)
    # detail is kept: the within-block structure is unchanged
    torch.testing.assert_close(fixed - F.interpolate(F.avg_pool2d(fixed, 4), scale_factor=4),
                               sr - F.interpolate(F.avg_pool2d(sr, 4), scale_factor=4), atol=1e-3, rtol=1e-4)


def test_flux_conserving_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="not 4x"):
        flux_conserving(torch.rand(1, 3, 30, 32), torch.rand(1, 3, 8, 8))


def test_sr_discriminator_any_size():
    d = SRDiscriminator(base_channels=8)
    assert d(torch.rand(2, 3, 64, 64)).shape == (2, 1)
    assert d(torch.rand(1, 3, 96, 80)).shape == (1, 1)


def test_colorizer_at_reduced_input_scale_keeps_full_size_output():
    torch.manual_seed(0)
    model = UNetColorizer(base_channels=8, depth=2, chroma_scale=2, input_scale=4).eval()
    for h, w in [(64, 64), (70, 45)]:
        out = model(torch.rand(3, 1, h, w) * 2 - 1)
        assert out.shape == (3, 2, h, w)
    with pytest.raises(ValueError, match="input_scale"):
        UNetColorizer(input_scale=0)
    # batch independence holds for the reduced-resolution path too
    x = torch.rand(4, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x)[2:3], model(x[2:3]), atol=1e-5, rtol=1e-4)


def test_default_superres_recipe_costs_at_most_twice_the_first_default():
    """Issue 22: the default SR architecture stays within 2x the GMAC per megapixel of SRResNet 32 x 8."""
    from astro_pipeline.models.cost import gmac_per_megapixel
    from astro_pipeline.models.registry import build_model
    from astro_pipeline.models.superres import SRResNet
    from astro_pipeline.training.recipes import get_recipe

    recipe = get_recipe("superres")
    x = torch.rand(1, 3, 64, 64)
    base = gmac_per_megapixel(SRResNet(channels=32, blocks=8, scale=4).eval(), x, scale=4)
    cost = gmac_per_megapixel(build_model(recipe.arch, **recipe.arch_kwargs).eval(), x, scale=4)
    assert base == pytest.approx(31.4, rel=0.02)  # counted, not assumed: 503 kMAC per input pixel
    assert cost <= 2 * base, (cost, base)


def test_detail_scales_the_learned_residual_over_the_bicubic_upsampling():
    """``detail`` (no parameters) scales what the network adds to its bicubic skip: 0 gives bicubic,
    0.5 the midpoint, 1 (the default, and every earlier weights file) the network as trained; the
    back-projection share acts after it."""
    from astro_pipeline.models.superres import SRResNet

    torch.manual_seed(0)
    full = SRResNet(channels=8, blocks=1, scale=4)
    for p in full.parameters():
        p.data.normal_(0, 0.1)
    x = torch.rand(1, 3, 16, 16)
    bic = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    outs = {}
    for d in (0.0, 0.5, 1.0):
        m = SRResNet(channels=8, blocks=1, scale=4, detail=d)
        m.load_state_dict(full.state_dict())
        with torch.no_grad():
            outs[d] = m(x)
    with torch.no_grad():
        assert torch.equal(outs[1.0], full(x))
    assert torch.allclose(outs[0.0], bic, atol=1e-6)
    assert torch.allclose(outs[0.5], 0.5 * (outs[0.0] + outs[1.0]), atol=1e-5)
    assert not torch.allclose(outs[0.5], outs[1.0], atol=1e-3)
    bp = SRResNet(channels=8, blocks=1, scale=4, detail=0.0, back_project=1.0)
    bp.load_state_dict(full.state_dict())
    with torch.no_grad():  # bicubic, then one back-projection step of bicubic's own block-mean error
        r = x - F.avg_pool2d(bic, 4)
        assert torch.allclose(bp(x), bic + F.interpolate(r, scale_factor=4, mode="bicubic", align_corners=False), atol=1e-5)
    assert SRResNet(channels=8, blocks=1, scale=4).detail == 1.0
    with pytest.raises(ValueError, match="detail"):
        SRResNet(channels=8, blocks=1, scale=4, detail=-0.1)
    with pytest.raises(ValueError, match="detail"):
        SRResNet(channels=8, blocks=1, scale=4, detail=1.5)


def test_the_noise_gate_keeps_detail_on_sources_and_gives_bicubic_on_empty_sky():
    """``noise_gate`` (no parameters): where the input's local structure is within its own noise the
    output is the bicubic skip (no sky peak is sharpened into a source), on a bright star it is the
    network's; the weight depends on significance, not on the image's units."""
    from astro_pipeline.models.superres import SRResNet, structure_weight

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    star = torch.exp(-((yy - 40) ** 2 + (xx - 40) ** 2) / (2 * 1.1**2))
    x = (0.3 + 0.02 * torch.randn(1, 1, 64, 64, generator=g) + 0.3 * star).expand(1, 3, 64, 64).contiguous()
    w = structure_weight(x, threshold=3.0, scale=4)
    assert w.shape == (1, 1, 256, 256)
    sky = w[..., :96, :96]
    assert float((sky == 0).float().mean()) > 0.97 and float(sky.mean()) < 0.005  # noise only: off almost everywhere
    assert float(w[..., 160, 160]) == 1.0  # the star's core
    scaled = structure_weight(0.5 * x + 0.1, threshold=3.0, scale=4)
    assert torch.allclose(w, scaled, atol=1e-4)
    torch.manual_seed(0)
    full = SRResNet(channels=8, blocks=1, scale=4)
    for p in full.parameters():
        p.data.normal_(0, 0.1)
    gated = SRResNet(channels=8, blocks=1, scale=4, noise_gate=3.0)
    gated.load_state_dict(full.state_dict())
    bic = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    with torch.no_grad():
        out, ref = gated(x), full(x)
    off = (w == 0).expand_as(out)
    assert torch.allclose(out[off], bic[off], atol=1e-6)
    on = (w == 1).expand_as(out)
    assert int(on.sum()) >= 3 * 16 and torch.allclose(out[on], ref[on], atol=1e-6)  # the star keeps the network's detail
    assert not torch.allclose(ref[..., :96, :96], bic[..., :96, :96], atol=1e-3)  # the gate is what made them equal
    assert SRResNet(channels=8, blocks=1, scale=4).noise_gate == 0.0
    with pytest.raises(ValueError, match="noise_gate"):
        SRResNet(channels=8, blocks=1, scale=4, noise_gate=-1.0)
    with pytest.raises(ValueError, match="noise_gate"):
        SRResNet(channels=8, blocks=1, scale=4, noise_gate=2.0, global_skip="none")


def test_back_projection_brings_block_means_back_to_the_input():
    """One step of back-projection pulls the output's 4x4 block means toward the input; off by default."""
    from astro_pipeline.models.superres import SRResNet

    torch.manual_seed(0)
    plain = SRResNet(channels=8, blocks=1, scale=4)
    for p in plain.parameters():
        p.data.normal_(0, 0.1)  # an output far from consistent with its input
    bp = SRResNet(channels=8, blocks=1, scale=4, back_project=1.0)
    bp.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        e_plain = (F.avg_pool2d(plain(x), 4) - x).abs().mean()
        e_bp = (F.avg_pool2d(bp(x), 4) - x).abs().mean()
    assert e_bp < 0.5 * e_plain
    assert SRResNet(channels=8, blocks=1, scale=4).back_project == 0.0
    with pytest.raises(ValueError, match="back_project"):
        SRResNet(channels=8, blocks=1, scale=4, back_project=1.5)
