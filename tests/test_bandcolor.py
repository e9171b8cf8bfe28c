"""Band-aware colour model: exact given slots and lightness, the naive fills, the engine's frame
context hook, the registry, the inference budget, and the colour measures it is judged by."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astro_pipeline.color import lightness, srgb_to_lab
from astro_pipeline.inference import Engine, colorize_lightness, complete_bands, frame_view, is_band_model
from astro_pipeline.models.bandcolor import BandColorizer, masked_grey, naive_fill
from astro_pipeline.models.colorizer import UNetColorizer
from astro_pipeline.models.cost import gmac_per_megapixel
from astro_pipeline.models.registry import WeightsMeta, build_model, load_weights, save_weights
from astro_pipeline.training.band_eval import hue_spread, kid, pooled_chroma_ratio
from astro_pipeline.training.bandtargets import rebalance_weights, splat_ab

TINY = {"width": 16, "mid_width": 8, "fine_width": 4, "context_dim": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(seed: int = 0, **kw) -> BandColorizer:
    torch.manual_seed(seed)
    m = BandColorizer(**{**TINY, **kw}).eval()
    with torch.no_grad():  # a visible residual and vivid ab, so the exactness checks can fail
        m.fine_out.weight.normal_(0, 0.5)
        m.affine.weight.normal_(0, 0.2)
        m.ab_logits.weight.mul_(300.0)
    return m


def _meta(**extra) -> WeightsMeta:
    return WeightsMeta(name="bandcolor", version="test", arch="BandColorizer", kwargs=dict(TINY), task="colorize",
                       color_space="bands+lab", tile_size=64, scale=1, extra=dict(extra))


def _scene(h: int = 96, w: int = 120, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / 17.0
    rng = np.random.default_rng(seed)
    r = 0.5 + 0.4 * np.sin(xx) * np.cos(yy)
    g = 0.4 + 0.3 * np.cos(xx * 1.3)
    b = 0.3 + 0.3 * np.sin(yy * 0.7)
    return np.clip(np.stack([r, g, b], -1) + 0.05 * rng.random((h, w, 3)), 0, 1).astype(np.float32)


def test_naive_fill_follows_the_wavelength_order():
    x = torch.tensor([0.8, 0.5, 0.2])[None, :, None, None].expand(1, 3, 2, 2)
    planes = torch.cat([x, torch.full((1, 1, 2, 2), 0.4)], 1)
    def fill(mask):
        return naive_fill(planes, torch.tensor([mask], dtype=torch.float32))[0, :, 0, 0].tolist()
    assert fill([1, 0, 1]) == pytest.approx([0.8, 0.5, 0.2])  # G = mean(R, B)
    assert fill([1, 1, 0]) == pytest.approx([0.8, 0.5, 0.5])  # B = G (the nearer band)
    assert fill([0, 1, 1]) == pytest.approx([0.5, 0.5, 0.2])  # R = G
    assert fill([0, 1, 0]) == pytest.approx([0.5, 0.5, 0.5])  # one band replicated
    assert fill([0, 0, 0]) == pytest.approx([0.4, 0.4, 0.4])  # grey-as-colour
    m = torch.tensor([[1.0, 0.0, 1.0]])
    assert masked_grey(planes, m)[0, 0, 0, 0].item() == pytest.approx(0.5)


@pytest.mark.parametrize("present", [(True, False, True), (True, True, False), (False, True, True), (False, True, False)])
def test_given_slots_come_back_exactly(present):
    eng = Engine(_model(), _meta(), device="cpu", precision="fp32", batch_size=2, tile_size=64)
    bands = _scene()
    out = complete_bands(eng, bands, present)
    assert out.shape == bands.shape and out.dtype == np.float32
    for i, p in enumerate(present):
        if p:
            assert np.array_equal(out[..., i], bands[..., i])
    missing = [i for i, p in enumerate(present) if not p]
    assert np.abs(out[..., missing] - bands[..., missing]).mean() > 1e-3  # something was inferred
    assert np.array_equal(complete_bands(eng, bands, (True, True, True)), bands)
    with pytest.raises(ValueError, match="no band given"):
        complete_bands(eng, bands, (False, False, False))


def test_lightness_alone_keeps_the_products_lightness():
    eng = Engine(_model(), _meta(sky_lightness=13.0), device="cpu", precision="fp32", batch_size=2, tile_size=64)
    L = lightness(_scene()).astype(np.float32)
    rgb = colorize_lightness(eng, L)
    assert is_band_model(eng)
    assert np.abs(lightness(rgb.astype(np.float64)) - L).max() < 0.05
    chroma = np.hypot(*np.moveaxis(srgb_to_lab(rgb.astype(np.float64))[..., 1:], -1, 0))
    assert chroma.mean() > 2  # a colour came out, with the lightness untouched


def test_one_case_per_call():
    m = _model()
    with pytest.raises(ValueError, match="one colour case"):
        m(torch.rand(2, 4, 64, 64), mask=torch.tensor([[1.0, 0, 1], [0, 0, 0]]))


def test_window_decode_matches_the_full_output():
    m = _model()
    x = torch.rand(2, 4, 128, 128)
    mask = torch.tensor([[1.0, 0, 1], [0, 1, 1]])
    with torch.no_grad():
        f3, f4 = m.encode(masked_grey(x, mask))
        ctx = torch.randn(2, 8)
        full = m.decode(x, mask, f3, f4, ctx, want_ab=False)["rgb"]
        part = m.decode(x, mask, f3, f4, ctx, want_ab=False, window=(40, 64, 48))["rgb"]
    assert torch.allclose(part, full[..., 40:88, 64:112], atol=1e-6)


def test_engine_feeds_one_frame_context_to_every_tile():
    calls = []
    m = _model()
    orig = m.frame_context

    def spy(view, **kw):
        calls.append(tuple(view.shape))
        return orig(view, **kw)

    m.frame_context = spy  # type: ignore[method-assign]
    eng = Engine(m, _meta(), device="cpu", precision="fp32", batch_size=2, tile_size=64)
    big = np.tile(_scene(), (8, 6, 1))  # 768 x 720: the view is block-averaged to <= 512
    complete_bands(eng, big, (True, False, True))
    assert len(calls) == 1 and eng.stats.tiles > 4
    assert max(calls[0][-2:]) <= 512
    assert frame_view(big, max_side=512).shape == (384, 360, 3)


def test_registry_round_trip_and_old_colorizer_still_loads(tmp_path):
    m = _model()
    p = save_weights(m, tmp_path / "bandcolor.safetensors", _meta())
    loaded, meta = load_weights(p)
    assert isinstance(loaded, BandColorizer) and meta.arch == "BandColorizer"
    x = torch.rand(1, 4, 64, 64)
    mask = torch.tensor([[0.0, 1, 0]])
    with torch.no_grad():
        assert torch.allclose(loaded(x, mask=mask), m.half().float()(x, mask=mask), atol=1e-5)
    old = build_model("UNetColorizer", base_channels=24, depth=4, chroma_scale=2, input_scale=4, global_context=True)
    assert isinstance(old, UNetColorizer)


def test_inference_cost_within_four_times_the_first_colorizer():
    """MACs per megapixel of the shipped configuration against UNetColorizer's (convolutions counted by torch)."""
    new = BandColorizer().eval()
    old = UNetColorizer(base_channels=24, depth=4, chroma_scale=2, input_scale=4, global_context=True).eval()
    base = gmac_per_megapixel(old, torch.rand(1, 1, 256, 256))
    for mask in ([0.0, 0, 0], [1.0, 0, 1]):
        cost = gmac_per_megapixel(new, torch.rand(1, 4, 256, 256), mask=torch.tensor([mask]))
        assert cost <= 4 * base, (mask, cost, base)


def test_block_targets_are_distributions_and_rebalancing_is_normalised():
    ab = torch.randn(2, 2, 32, 32) * 40
    t = splat_ab(ab, block=8)
    assert t.shape == (2, 529, 4, 4)
    assert torch.allclose(t.sum(1), torch.ones(2, 4, 4), atol=1e-5)
    prior = np.random.default_rng(0).dirichlet(np.ones(529) * 0.1)
    w = rebalance_weights(prior, sigma_bins=0)  # unsmoothed: E_prior[w] = 1 exactly
    assert float((w.double() * torch.as_tensor(prior)).sum()) == pytest.approx(1.0, abs=1e-3)
    assert w[int(np.argmax(prior))] < w[int(np.argmin(prior))]
    smooth = rebalance_weights(prior)
    assert torch.isfinite(smooth).all() and smooth[int(np.argmax(prior))] < smooth.max()


def _lab_image(a: float, b: float, n: int = 32) -> torch.Tensor:
    from astro_pipeline.training.colorspace import lab_to_srgb

    lab = torch.zeros(1, 3, n, n, dtype=torch.float64)
    lab[:, 0], lab[:, 1], lab[:, 2] = 60.0, a, b
    return lab_to_srgb(lab).float()


def test_hue_spread_pooled_chroma_and_kid_on_constructed_images():
    tint = _lab_image(20.0, 15.0)
    spread, frac = hue_spread(tint)
    assert spread.item() < 1.0 and frac.item() == pytest.approx(1.0)
    two = torch.cat([_lab_image(30.0, 0.0)[..., :16], _lab_image(0.0, 30.0)[..., 16:]], -1)  # hues 0 and 90 deg
    expect = np.degrees(np.sqrt(-2 * np.log(np.cos(np.pi / 4))))  # circular std of two equal hues 90 deg apart
    assert hue_spread(two)[0].item() == pytest.approx(expect, abs=1.0)
    grey = _lab_image(0.0, 0.0)
    assert pooled_chroma_ratio(grey, tint) < 0.01 and pooled_chroma_ratio(tint, tint) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    fa = torch.from_numpy(rng.normal(size=(60, 16)))
    fb = torch.from_numpy(rng.normal(size=(60, 16)))
    shifted = fb + 1.5
    assert abs(kid(fa, fb)) < 0.05
    assert kid(fa, shifted) > 10 * max(abs(kid(fa, fb)), 1e-3)


def test_a_model_that_fails_the_gate_is_not_installed_and_its_card_says_why(tmp_path):
    """The not-promoted path: no weights written, the default colorizer untouched, the card names each failed check."""
    from astro_pipeline.fileio import sha256_file
    from astro_pipeline.training.band_eval import band_gate, evaluate_band_model
    from astro_pipeline.training.bandrun import install

    cand = save_weights(_model(), tmp_path / "cand.safetensors", _meta(sky_lightness=12.0))
    wdir = tmp_path / "weights"
    wdir.mkdir()
    default = save_weights(UNetColorizer(base_channels=8, depth=2), wdir / "colorizer.safetensors",
                           WeightsMeta(name="colorizer", version="old", arch="UNetColorizer", kwargs={"base_channels": 8, "depth": 2},
                                       task="colorize", color_space="lab", tile_size=64, scale=1))
    before = sha256_file(default)
    truth = torch.from_numpy(np.stack([_scene(64, 64, seed=i) for i in range(4)])).permute(0, 3, 1, 2).contiguous()
    rep = evaluate_band_model(_model(), truth=truth, val_groups=["rel01", "rel02"], horseshoe_dir=tmp_path / "absent")
    assert {r["case"] for r in rep.rows} == {"L", "R", "G", "B", "GR", "RB", "BG"} and "error" in rep.horseshoe
    gate = band_gate(rep)
    assert not gate["promote"] and gate["failed"]
    res = install(cand, report=rep, gate=gate, weights_dir=wdir, notes=["dev figures here"], next_lever="a per-pixel LUT base", card_name="bandcolor")
    assert res == {"promoted": False, "weights": None, "card": str(wdir / "bandcolor.md")}
    assert sorted(p.name for p in wdir.iterdir()) == ["bandcolor.md", "colorizer.safetensors"]
    assert sha256_file(default) == before
    card = (wdir / "bandcolor.md").read_text()
    assert card.startswith("# bandcolor:") and "**Not promoted, not the default, no weights shipped.**" in card
    assert "a per-pixel LUT base" in card and "dev figures here" in card
    for c in gate["failed"]:
        assert c["check"] in card
    assert card.count("short by") == len(gate["failed"])


def test_compose_runs_a_band_model_only_when_asked_for(tmp_path):
    """compose's band-completion interface (composition.fill) on BandColorizer weights: the default colorizer
    is not a band model, so the rule fills; named weights complete the missing slot, given slots untouched."""
    import astro_pipeline as ap
    from astro_pipeline.composition.fill import EngineBandCompletion, find_band_completion
    from astro_pipeline.config import Settings

    p = save_weights(_model(), tmp_path / "bandcolor.safetensors", _meta())
    st = Settings(weights_dir=tmp_path)
    assert find_band_completion(st) is None  # no colorizer.safetensors here: nothing installed, nothing used
    found = find_band_completion(st, weights=p)
    assert isinstance(found, EngineBandCompletion) and found.model.arch == "BandColorizer"
    scene = (_scene(64, 64) * 255).astype(np.uint8)
    bands = {"red": scene[..., 0], "blue": scene[..., 2]}
    rule = ap.compose(bands, settings=st)
    res = ap.compose(bands, weights=p, settings=st)
    assert "G:inferred(mean)" in rule.channels_text and "G:inferred(bandcolor test)" in res.channels_text
    np.testing.assert_array_equal(res.image[..., 0], rule.image[..., 0])
    np.testing.assert_array_equal(res.image[..., 2], rule.image[..., 2])
    assert np.abs(res.image[..., 1] - rule.image[..., 1]).mean() > 1e-3  # the model, not the rule, filled G


def test_engine_batch_calibration_runs_a_band_model():
    """batch_size="auto" times the model on plain (N, 4, tile, tile) tiles with no mask: lightness alone."""
    eng = Engine(_model(), _meta(sky_lightness=12.0), device="cpu", precision="fp32", batch_size="auto", tile_size=64)
    assert eng.batch_size >= 1 and eng.choice is not None
    L = lightness(_scene()).astype(np.float32)
    assert colorize_lightness(eng, L).shape == L.shape + (3,)
