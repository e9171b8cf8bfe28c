"""HST-like SR training pairs (issue 22): degradation, cosmic rays, held-in frames, batches, growth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from test_training import TINY_SR, make_folder

from astro_pipeline.ingest.frame import Frame, StretchParams
from astro_pipeline.ingest.stretch import apply_stretch, compute_stretch
from astro_pipeline.models.superres import SRResNet, grow_srresnet
from astro_pipeline.training.datasets import ImageBank, SRBatches
from astro_pipeline.training.hst_pairs import (
    HSTPairConfig,
    HSTPairs,
    LinearScene,
    add_cosmic_rays,
    add_glow,
    add_point_sources,
    display_to_linear,
    held_in_sample_frames,
    hst_pair,
    keep_block_noise,
    load_linear_scene,
)
from astro_pipeline.training.source_eval import MoffatPSF, nea_at
from astro_pipeline.training.sources import FolderSource, collect_items

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NO_CR = HSTPairConfig(cr_fraction=0.0)


def _frame(lr: np.ndarray) -> Frame:
    return Frame(data=lr, mask=np.ones(lr.shape, bool), source_path=Path("x"), source_sha256="", format="fits")


def test_display_to_linear_inverts_the_asinh_stretch():
    lin = np.linspace(0, 1, 101, dtype=np.float32)
    disp = apply_stretch(lin, StretchParams(method="zscale+asinh", vmin=0.0, vmax=1.0, asinh_a=0.1))
    np.testing.assert_allclose(display_to_linear(disp), lin, atol=2e-5)


def test_noise_free_pair_is_the_stretch_of_the_block_mean(monkeypatch):
    """Both images are shown on the one stretch computed on the LR; the LR is the HR's 4x block mean."""
    import astro_pipeline.training.hst_pairs as hp

    seen: list[Frame] = []
    fixed = StretchParams(method="zscale+asinh", vmin=0.0, vmax=1.2, asinh_a=0.1)
    monkeypatch.setattr(hp, "compute_stretch", lambda frame, method: seen.append(frame) or fixed)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128]
    scene = (0.02 + np.exp(-((yy - 60) ** 2 + (xx - 70) ** 2) / 50.0)).astype(np.float32)
    cfg = HSTPairConfig(cr_fraction=0.0, psf_fwhm_hr=(0.0, 0.0), read_noise=(1e-7, 1e-7), photons=(1e12, 1e12))
    lr, hr = hst_pair(scene, rng, cfg)
    assert lr.shape == (32, 32) and hr.shape == (128, 128)
    assert len(seen) == 1 and seen[0].data.shape == (32, 32)  # the stretch is computed on the LR
    np.testing.assert_allclose(hr, np.clip(apply_stretch(scene, fixed), 0, 1), atol=1e-5)
    lr_lin = scene.reshape(32, 4, 32, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(lr, np.clip(apply_stretch(lr_lin, fixed), 0, 1), atol=1e-4)


def test_frame_pairs_bring_the_lr_noise_back_to_the_frames_level(monkeypatch):
    """Block-averaging divides a frame's white noise by 4; the pair adds noise back to 0.8-1.3x the
    frame's own per-pixel sigma (read in linear units with the stretch patched out)."""
    import astro_pipeline.training.hst_pairs as hp

    monkeypatch.setattr(hp, "apply_stretch", lambda data, params: data)
    rng = np.random.default_rng(2)
    scene = (0.5 + rng.normal(0, 0.05, (384, 384))).astype(np.float32)
    sig = np.array([float(hst_pair(scene, rng, NO_CR, frame_sigma=0.05)[0].std()) for _ in range(20)])
    assert sig.min() >= 0.8 * 0.05 * 0.95 and sig.max() <= 1.3 * 0.05 * 1.05
    assert sig.max() - sig.min() > 0.005  # the level is drawn, not fixed


def test_cosmic_ray_raises_its_lr_block_by_the_requested_snr():
    img = np.zeros((64, 64), np.float32)
    rng = np.random.default_rng(3)
    hit = add_cosmic_rays(img, rng, n=1, lr_sigma=0.5, scale=4, snr=(40.0, 40.0))
    assert hit.sum() > 0 and (hit > 0).sum() <= 6
    lr = hit.reshape(16, 4, 16, 4).mean(axis=(1, 3))
    # the whole streak lies in one or two blocks; its brightest block is about snr x sigma = 20
    assert 8.0 <= lr.max() <= 21.0


def test_pairs_with_cosmic_rays_keep_them_in_both_images():
    rng = np.random.default_rng(4)
    scene = np.full((256, 256), 0.01, np.float32)
    cfg = HSTPairConfig(cr_fraction=1.0, cr_per_kpx=(3.0, 3.0), cr_snr=(200.0, 200.0), psf_fwhm_hr=(0.0, 0.0),
                        read_noise=(0.002, 0.002), photons=(1e9, 1e9))
    lr, hr = hst_pair(scene, rng, cfg)
    assert (hr > 0.9).sum() >= 1 and (lr > 0.9).sum() >= 1


def test_point_source_flux_is_set_by_its_lr_signal_to_noise():
    """F = snr x scale^2 x sigma x sqrt(NEA): the science evaluation's optimal S/N in the LR input."""
    psf = MoffatPSF(fwhm=2.5, beta=3.0)
    rng = np.random.default_rng(9)
    img = add_point_sources(np.zeros((512, 512), np.float32), rng, psf=psf, n=1, lr_sigma=0.1, scale=4,
                            snr_edges=(20.0, 20.0))
    nea = nea_at(psf, 4, (128, 128), 64.5, 64.5)
    expected = 20.0 * 16 * 0.1 * math.sqrt(nea)
    assert float(img.sum()) == pytest.approx(expected, rel=0.15)  # the NEA's sub-pixel phase moves it a little
    assert (img > 0.01 * img.max()).sum() < 400  # one compact source, not a wash


def test_point_source_snr_bins_get_equal_shares():
    psf = MoffatPSF(fwhm=2.0, beta=3.0)
    rng = np.random.default_rng(10)
    peaks = []
    for _ in range(200):  # one source per image: its total flux is proportional to its S/N
        peaks.append(float(add_point_sources(np.zeros((96, 96), np.float32), rng, psf=psf, n=1, lr_sigma=1.0, scale=4,
                                             snr_edges=(3.0, 10.0, 100.0)).sum()))
    f = np.asarray(peaks)
    unit = 16 * math.sqrt(nea_at(psf, 4, (128, 128), 64.5, 64.5))
    faint = ((f / unit) < 10.0).mean()
    assert 0.35 < faint < 0.65  # half in 3-10 although it is a tenth of the range


def test_pairs_with_point_sources_show_them_in_both_images(monkeypatch):
    import astro_pipeline.training.hst_pairs as hp

    monkeypatch.setattr(hp, "apply_stretch", lambda data, params: data)  # linear units
    scene = np.zeros((384, 384), np.float32)
    base = dict(cr_fraction=0.0, psf_fwhm_hr=(0.0, 0.0), read_noise=(0.01, 0.01), photons=(1e12, 1e12),
                point_per_kpx=(4.0, 4.0), point_snr_edges=(50.0, 100.0))
    psf = MoffatPSF(fwhm=2.2, beta=3.0)
    lr0, hr0 = hst_pair(scene, np.random.default_rng(11), HSTPairConfig(**base), psf=psf)
    lr1, hr1 = hst_pair(scene, np.random.default_rng(11), HSTPairConfig(**base, point_fraction=1.0), psf=psf)
    assert float(hr0.max()) == 0.0 and float(hr1.max()) > 0.1
    # 4 per 1000 LR px on 96 x 96 LR px: ~37 sources, each a >= 50 sigma peak in the LR (sigma 0.01)
    assert (lr0 > 0.1).sum() == 0 and 15 <= (lr1 > 0.1).sum()
    # every bright LR pixel lies on a source of the HR
    hr_block_max = hr1.reshape(96, 4, 96, 4).max(axis=(1, 3))
    assert (hr_block_max[lr1 > 0.1] > 0.1).all()


def test_frame_scene_carries_its_fitted_psf(tmp_path):
    rng = np.random.default_rng(12)
    psf = MoffatPSF(fwhm=3.0, beta=3.0)
    xs, ys = rng.uniform(30, 270, 12), rng.uniform(30, 270, 12)
    keep = [i for i in range(12) if all(np.hypot(xs[i] - xs[j], ys[i] - ys[j]) > 30 for j in range(12) if j != i)]
    data = 10.0 + rng.normal(0, 0.2, (300, 300)) + psf.render((300, 300), xs[keep], ys[keep], [400.0] * len(keep))
    sc = load_linear_scene(_write_frame(tmp_path / "stars.fits", data))
    assert sc.psf is not None and sc.psf.fwhm == pytest.approx(3.0, rel=0.15)


def _write_frame(path: Path, data: np.ndarray) -> Path:
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data.astype(np.float32), name="SCI")]).writeto(path)
    return path


def test_linear_scene_is_cropped_to_valid_pixels_with_its_sigma(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.normal(10.0, 0.5, (200, 220)).astype(np.float32)
    data[:20] = np.nan
    sc = load_linear_scene(_write_frame(tmp_path / "f.fits", data))
    assert np.isfinite(sc.data).all() and sc.data.shape[0] <= 180
    assert sc.sigma == pytest.approx(0.5, rel=0.1)


def test_linear_scene_refuses_a_frame_without_science_data(tmp_path):
    p = tmp_path / "tiny.fits"
    fits.HDUList([fits.PrimaryHDU(np.ones((20, 20), np.float32))]).writeto(p)
    with pytest.raises(ValueError, match="tiny.fits"):
        load_linear_scene(p)


def test_held_in_frames_leave_out_the_science_evaluation_fields(tmp_path):
    from astro_pipeline.sample import SampleIndex, SampleItem

    def item(path: str, field: str, kind: str = "science", flags: list[str] | None = None) -> SampleItem:
        return SampleItem(archive="mast", id=path, path=path, kind=kind, field=field, ra=0, dec=0, target="", instrument="",
                          filter="", exptime=0, date_obs="", proposal_id="", obsid="", title="", credit="", license="",
                          release="", expected_flags=flags or [])

    idx = SampleIndex(root=tmp_path, items=[
        item("mast/m101/hst_sample_m101_acs_wfc_f606w_drz.fits", "m101"),
        item("mast/ngc1300/hst_sample_ngc1300_acs_wfc_f606w_drz.fits", "ngc1300"),
        item("mast/hdf/hst_sample_hdf_wfpc2_f814w_drz.fits", "hdf"),
        item("mast/qa/j9qa01nsq_drz.fits", "qa", flags=["noisy"]),
        item("esa/x.jpg", "m101", kind="color"),
    ])
    assert [p.name for p in held_in_sample_frames(idx)] == ["hst_sample_m101_acs_wfc_f606w_drz.fits"]


def test_sr_batches_mix_hst_like_degraded_and_clean_pairs(tmp_path):
    bank = ImageBank.load(collect_items([FolderSource(make_folder(tmp_path / "imgs", size=128))]), min_size=64)
    rng = np.random.default_rng(6)
    frame = LinearScene(data=np.random.default_rng(7).normal(1, 0.1, (256, 256)).astype(np.float32), name="f", sigma=0.1)
    pairs = HSTPairs(esa_images=bank.images, frames=[frame], cfg=HSTPairConfig(region_lr=32), rng=rng)
    batches = SRBatches(bank, hr_crop=32, batch_size=8, rng=rng, degrade_fraction=0.25, hst=pairs, hst_fraction=0.5)
    lr, hr = batches.next()
    assert lr.shape == (8, 3, 8, 8) and hr.shape == (8, 3, 32, 32)
    assert lr.dtype == torch.float32 and 0 <= float(lr.min()) and float(hr.max()) <= 1
    # the HST-like half is grey (one band replicated), the clean colour crops are not all grey
    assert torch.equal(lr[:4, 0], lr[:4, 1]) and torch.equal(hr[:4, 0], hr[:4, 2])
    with pytest.raises(ValueError, match="HSTPairs"):
        SRBatches(bank, hr_crop=32, batch_size=8, rng=rng, hst_fraction=0.5)
    with pytest.raises(ValueError, match="exceed"):
        SRBatches(bank, hr_crop=32, batch_size=8, rng=rng, degrade_fraction=0.6, hst=pairs, hst_fraction=0.5)


def test_grown_srresnet_computes_what_the_shallow_one_did():
    torch.manual_seed(0)
    small = SRResNet(channels=8, blocks=2, scale=4)
    for p in small.parameters():  # trained-looking weights, not the near-identity init
        p.data.normal_(0, 0.05)
    big = grow_srresnet(SRResNet(channels=8, blocks=5, scale=4), small)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="cannot grow"):
        grow_srresnet(SRResNet(channels=16, blocks=5, scale=4), small)


def test_training_with_hst_pairs_grows_from_shallower_weights(tmp_path):
    from astro_pipeline.models.registry import WeightsMeta, load_weights, save_weights
    from astro_pipeline.training.loop import run_training

    folder = make_folder(tmp_path / "imgs", size=128)
    small = SRResNet(channels=4, blocks=1, scale=4)
    init = save_weights(small, tmp_path / "init.safetensors", WeightsMeta(
        name="superres", version="t-1", arch="SRResNet", kwargs={"channels": 4, "blocks": 1, "scale": 4},
        task="superres", color_space="srgb", tile_size=16, scale=4, training_data_hash="x", steps=3, metrics={}, extra={}))
    frame = _write_frame(tmp_path / "frame.fits", np.random.default_rng(8).normal(5, 0.3, (160, 160)))
    res = run_training(model="superres", steps=2, sources=[f"folder:{folder}"], output_dir=tmp_path / "run",
                       overrides={**TINY_SR, "arch_kwargs": {"channels": 4, "blocks": 3, "scale": 4}, "hst_fraction": 0.5,
                                  "degrade_fraction": 0.0},
                       init_from=init, hst_frames=[frame])
    assert any("grown from" in n for n in res.notes) and any("frame.fits" in n for n in res.notes)
    # the default recipe's block-mean term is logged beside the pixel L1
    rows = [json.loads(line) for line in res.log_path.read_text().splitlines()]
    assert all(0 < r["block_l1"] < 1 and r["l1"] > 0 for r in rows)
    model, meta = load_weights(res.weights_path)
    assert meta.kwargs["blocks"] == 3 and len(model.body) == 3
    assert math.isfinite(float(model(torch.rand(1, 3, 8, 8)).mean()))


def test_a_warm_start_may_change_parameter_free_settings_only(tmp_path):
    """Weights of the same architecture start a recipe that sets a share of back-projection (no
    parameters) as they are; a different width is still refused."""
    from astro_pipeline.models.registry import WeightsMeta, load_weights, save_weights
    from astro_pipeline.training.loop import run_training

    folder = make_folder(tmp_path / "imgs", size=128)
    kw = {"channels": 4, "blocks": 1, "scale": 4}
    init = save_weights(SRResNet(**kw), tmp_path / "init.safetensors", WeightsMeta(
        name="superres", version="t-1", arch="SRResNet", kwargs=kw, task="superres", color_space="srgb", tile_size=16,
        scale=4, training_data_hash="x", steps=3, metrics={}, extra={}))
    over = {**TINY_SR, "arch_kwargs": {**kw, "back_project": 0.25}, "hst_fraction": 0.0, "degrade_fraction": 0.0}
    res = run_training(model="superres", steps=1, sources=[f"folder:{folder}"], output_dir=tmp_path / "run",
                       overrides=over, init_from=init)
    note = next(n for n in res.notes if n.startswith("initialised from"))
    assert "back_project 0.25" in note and not any("grown from" in n for n in res.notes)
    model, meta = load_weights(res.weights_path)
    assert meta.kwargs["back_project"] == 0.25 and model.back_project == 0.25
    with pytest.raises(ValueError, match="cannot grow"):
        run_training(model="superres", steps=1, sources=[f"folder:{folder}"], output_dir=tmp_path / "run2",
                     overrides={**over, "arch_kwargs": {"channels": 8, "blocks": 1, "scale": 4}}, init_from=init)


def test_the_shipped_back_projection_share_is_set_after_training(tmp_path):
    """A back-projection share the network trains with is learned away (it pre-compensates), so the
    recipe's ``shipped_back_project`` is written into the candidate only: training runs without it."""
    from astro_pipeline.models.registry import load_weights
    from astro_pipeline.training.loop import run_training

    folder = make_folder(tmp_path / "imgs", size=128)
    over = {**TINY_SR, "arch_kwargs": {"channels": 4, "blocks": 1, "scale": 4}, "hst_fraction": 0.0,
            "degrade_fraction": 0.0, "shipped_back_project": 0.25}
    res = run_training(model="superres", steps=1, sources=[f"folder:{folder}"], output_dir=tmp_path / "run", overrides=over)
    model, meta = load_weights(res.weights_path)
    assert meta.kwargs["back_project"] == 0.25 and model.back_project == 0.25
    assert "back_project" not in meta.extra["recipe"]["arch_kwargs"]
    assert any("back_project 0.25" in n and "after training" in n for n in res.notes)
    with pytest.raises(ValueError, match="shipped_back_project"):
        run_training(model="superres", steps=1, sources=[f"folder:{folder}"], output_dir=tmp_path / "run2",
                     overrides={**over, "shipped_back_project": 1.5})


def test_the_shipped_detail_strength_is_set_after_training_and_a_finished_run_is_repackaged_at_another(tmp_path):
    """``shipped_detail`` scales the learned residual of the candidate only (the network trains at full
    strength, or it would learn to pre-compensate). Running the finished run folder again with another
    setting resumes at its last step, takes no step, and writes the same trained weights under a new
    version (a gate re-run at a setting tuned on the dev frames needs no retraining)."""
    from astro_pipeline.models.registry import load_weights
    from astro_pipeline.training.loop import run_training

    folder = make_folder(tmp_path / "imgs", size=128)
    over = {**TINY_SR, "arch_kwargs": {"channels": 4, "blocks": 1, "scale": 4}, "hst_fraction": 0.0,
            "degrade_fraction": 0.0, "shipped_detail": 0.75, "shipped_back_project": 0.25, "shipped_noise_gate": 3.0}
    first = run_training(model="superres", steps=2, sources=[f"folder:{folder}"], output_dir=tmp_path / "run", overrides=over)
    m1, meta1 = load_weights(first.weights_path)
    assert meta1.kwargs["detail"] == 0.75 and m1.detail == 0.75 and meta1.kwargs["back_project"] == 0.25
    assert meta1.kwargs["noise_gate"] == 3.0 and m1.noise_gate == 3.0
    assert "detail" not in meta1.extra["recipe"]["arch_kwargs"]
    assert any("detail 0.75" in n and "after training" in n for n in first.notes)
    again = run_training(model="superres", steps=2, sources=[f"folder:{folder}"], output_dir=tmp_path / "run",
                         overrides={**over, "shipped_detail": 0.5})
    m2, meta2 = load_weights(again.weights_path)
    assert again.resumed_from == 2 and again.steps == 2 and meta2.steps == meta1.steps
    assert m2.detail == 0.5 and meta2.kwargs["detail"] == 0.5
    assert meta2.version != meta1.version  # products name what made them
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="shipped_detail"):
        run_training(model="superres", steps=1, sources=[f"folder:{folder}"], output_dir=tmp_path / "run3",
                     overrides={**over, "shipped_detail": 1.5})
    with pytest.raises(ValueError, match="shipped_noise_gate"):
        run_training(model="superres", steps=1, sources=[f"folder:{folder}"], output_dir=tmp_path / "run4",
                     overrides={**over, "shipped_noise_gate": -1.0})


def test_the_block_mean_term_can_be_a_mean_squared_error_and_a_wrong_name_is_refused(tmp_path):
    from astro_pipeline.training.loop import run_training

    folder = make_folder(tmp_path / "imgs", size=128)
    over = {**TINY_SR, "hst_fraction": 0.0, "degrade_fraction": 0.0, "lambda_block": 50.0, "block_loss": "mse"}
    res = run_training(model="superres", steps=2, sources=[f"folder:{folder}"], output_dir=tmp_path / "run", overrides=over)
    rows = [json.loads(line) for line in res.log_path.read_text().splitlines()]
    assert all(0 < r["block_mse"] < r["l1"] for r in rows) and not any("block_l1" in r for r in rows)
    with pytest.raises(ValueError, match="block_loss must be l1 or mse"):
        run_training(model="superres", steps=1, sources=[f"folder:{folder}"], output_dir=tmp_path / "run2",
                     overrides={**over, "block_loss": "huber"})


def test_a_glow_widens_the_zscale_range_to_tens_of_sky_sigma(monkeypatch):
    """Pairs with a broad bright glow are shown on a stretch many sky sigma wide (as frames with bright
    extended emission are), so faint structure is a small display step; without it, a few sigma."""
    import astro_pipeline.training.hst_pairs as hp

    seen: list[StretchParams] = []
    real = hp.compute_stretch
    monkeypatch.setattr(hp, "compute_stretch", lambda frame, method: seen.append(real(frame, method)) or seen[-1])
    base = dict(cr_fraction=0.0, read_noise=(0.01, 0.01), photons=(1e12, 1e12))
    rng = np.random.default_rng(13)
    widths = {}
    for glow in (0.0, 1.0):
        seen.clear()
        for _ in range(8):
            hst_pair(np.full((384, 384), 0.02, np.float32), rng, HSTPairConfig(**base, glow_fraction=glow))
        widths[glow] = float(np.median([(p.vmax - p.vmin) / 0.01 for p in seen]))
    assert widths[0.0] < 10 and widths[1.0] > 20
    img = add_glow(np.zeros((256, 256), np.float32), rng, lr_sigma=0.5, snr=(40.0, 40.0), fwhm=(100.0, 100.0))
    assert float(img.max()) == pytest.approx(20.0, rel=0.05) and float(img.min()) >= 0


def test_a_noise_keeping_target_has_the_inputs_block_means_and_smooth_noise(monkeypatch):
    """With ``keep_noise_fraction`` the target is the scene plus the input's noise, upsampled so that each
    4x4 block mean is the noisy input pixel (linear units): a model trained on it cannot learn to pull a
    faint source to the sky. Without it the target is the noise-free scene."""
    import astro_pipeline.training.hst_pairs as hp

    fixed = StretchParams(method="zscale+asinh", vmin=-0.05, vmax=0.3, asinh_a=0.1)
    monkeypatch.setattr(hp, "compute_stretch", lambda frame, method: fixed)
    scene = np.full((128, 128), 0.02, np.float32)
    scene = add_point_sources(scene, np.random.default_rng(1), psf=MoffatPSF(fwhm=2.5, beta=3.0), n=6, lr_sigma=0.01,
                              scale=4, snr_edges=(3.0, 5.0))
    base = dict(cr_fraction=0.0, psf_fwhm_hr=(0.0, 0.0), read_noise=(0.01, 0.01), photons=(1e12, 1e12))
    lr, hr = hst_pair(scene, np.random.default_rng(5), HSTPairConfig(**base, keep_noise_fraction=1.0))
    lr0, hr0 = hst_pair(scene, np.random.default_rng(5), HSTPairConfig(**base))
    np.testing.assert_allclose(lr, lr0)  # the input is the same draw either way
    lin = fixed.vmin + (fixed.vmax - fixed.vmin) * display_to_linear(hr)  # display -> linear on [vmin, vmax]
    lr_lin = fixed.vmin + (fixed.vmax - fixed.vmin) * display_to_linear(lr)
    np.testing.assert_allclose(lin.reshape(32, 4, 32, 4).mean(axis=(1, 3)), lr_lin, atol=2e-4)
    assert not np.allclose(hr, hr0, atol=1e-3)  # the default target stays noise-free
    np.testing.assert_allclose(hr0, np.clip(apply_stretch(scene, fixed), 0, 1), atol=1e-5)
    # the kept noise is smooth (bicubic back-projection): block edges step about as a bicubic upsampling does, not 4x4 tiles
    k = keep_block_noise(np.zeros((64, 64), np.float32), np.random.default_rng(2).normal(0, 1, (16, 16)).astype(np.float32), 4)
    np.testing.assert_allclose(k.reshape(16, 4, 16, 4).mean(axis=(1, 3)), np.random.default_rng(2).normal(0, 1, (16, 16)), atol=1e-5)
    steps = np.abs(np.diff(k, axis=1))
    assert steps[:, 3::4].mean() < 2.0 * np.delete(steps, np.s_[3::4], axis=1).mean()


def test_bicubic_kept_noise_has_a_bicubic_upsamplings_spectrum():
    """``kept_noise="bicubic"``: the kept noise is one bicubic upsampling of the input's noise, smoother
    at the highest frequencies than the exact mode's (whose iterations sharpen it), with the same
    noise at the block scale."""
    import torch
    from torch.nn import functional as F

    noise = np.random.default_rng(2).normal(0, 1, (32, 32)).astype(np.float32)
    zero = np.zeros((128, 128), np.float32)
    bic = keep_block_noise(zero, noise, 4, upsample="bicubic")
    exact = keep_block_noise(zero, noise, 4)
    ref = F.interpolate(torch.from_numpy(noise)[None, None], scale_factor=4, mode="bicubic", align_corners=False)[0, 0]
    np.testing.assert_allclose(bic, ref.numpy(), atol=1e-6)
    rough = {k: float(np.abs(np.diff(v, axis=1)).mean()) for k, v in (("bicubic", bic), ("exact", exact))}
    assert rough["bicubic"] < 0.85 * rough["exact"]
    corr = np.corrcoef(bic.reshape(32, 4, 32, 4).mean(axis=(1, 3)).ravel(), noise.ravel())[0, 1]
    assert corr > 0.9  # the block-scale noise is the input's
    with pytest.raises(ValueError, match="kept_noise"):
        HSTPairConfig(kept_noise="nearest")
