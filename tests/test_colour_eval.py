"""Colour evaluation: hue spread, KID, bootstrap intervals, per-case protocols, sky gap, report sections."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from astropy.io import fits
from PIL import Image

from astro_pipeline.training import metrics as M
from astro_pipeline.training.colorspace import lab_to_srgb
from astro_pipeline.training.colour_cases import (
    CASES,
    ColourMethod,
    FunctionMethod,
    LinearFill,
    baseline_methods,
    case_by_name,
    colorizer_methods,
    fit_linear_fill,
    make_input,
    methods_for,
)
from astro_pipeline.training.evaluate import evaluate_models, training_crops, validation_set
from astro_pipeline.training.intervals import Bootstrap
from astro_pipeline.training.kid import kid, kid_interval, paired_kid, pooled_vgg_features
from astro_pipeline.training.scoring import kid_halves
from astro_pipeline.training.sky_gap import (
    LightnessImage,
    colorizer_input,
    measure_sky_gap,
    sky_lightness,
)
from model_helpers import random_weights
from test_training import make_folder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _lab_image(L: float, chroma: float, hues_deg: list[float], size: int = 32) -> torch.Tensor:
    """(1, 3, size, size) sRGB whose columns cycle through the given hues at one chroma and L*."""
    h = torch.tensor(hues_deg, dtype=torch.float64)[torch.arange(size) % len(hues_deg)]
    a, b = chroma * torch.cos(torch.deg2rad(h)), chroma * torch.sin(torch.deg2rad(h))
    lab = torch.stack([torch.full((size, size), L, dtype=torch.float64), a[None].expand(size, -1), b[None].expand(size, -1)])
    return lab_to_srgb(lab[None])


# -- hue spread ----------------------------------------------------------------------------------

def test_hue_spread_of_a_constant_tint_is_near_zero():
    tint = _lab_image(55, 20, [40.0])  # one pinkish-brown hue everywhere
    assert float(M.hue_spread(M.quantize8(tint))[0]) < 1.5
    grey = torch.full((1, 3, 16, 16), 0.4)
    assert float(M.hue_spread(grey)[0]) == 0.0  # no pixel with chroma > 5: no hue to spread


@pytest.mark.parametrize("sep", [60.0, 90.0, 150.0])
def test_hue_spread_of_two_hues_matches_the_circular_formula(sep):
    from scipy.stats import circstd

    img = _lab_image(60, 30, [10.0, 10.0 + sep])
    expected = math.degrees(math.sqrt(-2 * math.log(math.cos(math.radians(sep / 2)))))
    got = float(M.hue_spread(img)[0])
    assert got == pytest.approx(expected, abs=0.5)
    lab = M.srgb_to_lab(img.double())[0]
    hues = torch.atan2(lab[2], lab[1]).flatten().numpy()
    assert got == pytest.approx(math.degrees(circstd(hues, high=math.pi, low=-math.pi)), abs=1e-6)


def test_hue_spread_ignores_low_chroma_pixels_and_chroma_ratio_is_pooled():
    img = _lab_image(60, 30, [0.0, 120.0])
    faint = _lab_image(60, 2, [300.0])  # chroma 2 < 5: left out, spread unchanged
    mixed = torch.cat([img[..., :16], faint[..., 16:]], dim=-1)
    assert float(M.hue_spread(mixed)[0]) == pytest.approx(float(M.hue_spread(img)[0]), abs=0.5)
    # pooled ratio: sum over all pixels of all images, so a near-grey crop does not inflate it
    x = torch.cat([img, torch.full_like(img, 0.5)])
    half = lab_to_srgb(torch.cat([M.srgb_to_lab(x.double())[:, :1], M.srgb_to_lab(x.double())[:, 1:] * 0.5], 1))
    assert M.chroma_ratio(half, x) == pytest.approx(0.5, abs=0.01)


# -- KID -----------------------------------------------------------------------------------------

def test_kid_of_synthetic_features():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (80, 16))
    b = rng.normal(0, 1, (80, 16))
    shifted = rng.normal(0.8, 1, (80, 16))
    assert abs(kid(a, a)) < 0.2 * kid(a, shifted)
    assert abs(kid(a, b)) < 0.2 * kid(a, shifted)
    iv = kid_interval(a, shifted, n_boot=200)
    assert iv.lo < iv.value < iv.hi and iv.lo > 0
    # paired: outputs against the truth they came from; the truth itself scores exactly 0
    assert paired_kid(a, a).value == pytest.approx(0.0, abs=1e-12)
    noisy = a + rng.normal(0, 0.05, a.shape)  # near-identical outputs: near 0, far below a shifted set
    assert abs(paired_kid(noisy, a).value) < 0.05 * paired_kid(a + 0.8, a).value
    iv = paired_kid(a + 0.8, a, n_boot=200)
    assert iv.lo < iv.value < iv.hi and iv.lo > 0
    with pytest.raises(ValueError):
        kid(a[:1], b)
    with pytest.raises(ValueError):
        paired_kid(a, a[:10])


def _colourful_set(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for _ in range(n):
        img = torch.zeros(3, size, size)
        for _ in range(3):
            cy, cx = (torch.rand(2, generator=g) * size).tolist()
            s = 3 + 6 * float(torch.rand(1, generator=g))
            colour = torch.rand(3, generator=g)
            img += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)) * colour[:, None, None]
        out.append(img.clamp(0, 1))
    return torch.stack(out)


def test_kid_on_vgg_features_sees_grey_copies(shared_data):
    from astro_pipeline.training.losses import LPIPS, load_vgg16

    loaded = load_vgg16(shared_data / "perceptual" / "vgg16_features_lpips.safetensors")
    assert loaded is not None
    vgg, heads = loaded
    x = _colourful_set(24)
    grey = x.mean(1, keepdim=True).expand_as(x)
    f, fg = pooled_vgg_features(vgg, x), pooled_vgg_features(vgg, grey)
    assert f.shape == (24, 512)
    against_grey = kid(f, fg)
    assert against_grey > 0
    assert abs(kid(f, f)) < 0.1 * against_grey  # a set against itself: near 0
    paired_grey = paired_kid(fg, f).value
    assert paired_grey > 0 and paired_kid(f, f).value == pytest.approx(0.0, abs=1e-12)
    other = pooled_vgg_features(vgg, _colourful_set(24, seed=5))  # another colourful set: closer than grey copies
    assert kid(other, f) < against_grey
    # the LPIPS pass gives the same pooled features (its input scaling is ImageNet normalisation)
    _, pooled = LPIPS(vgg, heads).features_and_pooled(x[:4])
    assert torch.allclose(pooled.double(), f[:4], rtol=1e-4, atol=1e-5)


# -- bootstrap -----------------------------------------------------------------------------------

def test_bootstrap_intervals():
    rng = np.random.default_rng(1)
    v = rng.normal(10, 1, 200)
    b = Bootstrap(200, n_boot=500, seed=0)
    iv = b.mean(v)
    assert iv.lo < iv.value < iv.hi and iv.value == pytest.approx(v.mean())
    assert 0.1 < iv.hi - iv.lo < 0.5  # ~ 2 x 1.96 / sqrt(200)
    same = b.paired_difference(v, v)
    assert same.value == same.lo == same.hi == 0.0
    r = b.ratio(2 * np.ones(200), np.ones(200))
    assert r.value == r.lo == r.hi == 2.0
    where = np.arange(200) < 50
    assert b.mean(v, where=where).value == pytest.approx(v[:50].mean())
    with pytest.raises(ValueError):
        b.mean(v[:10])


# -- per-case protocols ----------------------------------------------------------------------------

def test_cases_inputs_and_naive_baselines():
    assert [c.name for c in CASES] == ["L", "B", "G", "R", "R+B", "G+R", "B+G"]
    assert case_by_name("B").given == (2,) and case_by_name("G+R").given == (0, 1)  # B is the blue channel
    assert case_by_name("L").protocol == "colorize" and case_by_name("R+B").protocol == "given-R+B"
    truth = torch.rand(3, 3, 8, 8)
    base = {m.name: m for m in baseline_methods()}
    inp = make_input(truth, case_by_name("B"))
    assert inp.present[:, 2].all() and not inp.present[:, :2].any() and (inp.slots[:, :2] == 0).all()
    assert torch.equal(base["baseline-replicate"](inp), truth[:, 2:3].expand(-1, 3, -1, -1))
    fill = base["baseline-fill"]
    rb = fill(make_input(truth, case_by_name("R+B")))
    assert torch.allclose(rb[:, 1], (truth[:, 0] + truth[:, 2]) / 2) and torch.equal(rb[:, [0, 2]], truth[:, [0, 2]])
    gr = fill(make_input(truth, case_by_name("G+R")))
    assert torch.equal(gr[:, 2], truth[:, 1])  # B filled from G, the nearer given band
    bg = fill(make_input(truth, case_by_name("B+G")))
    assert torch.equal(bg[:, 0], truth[:, 1])  # R filled from G
    L = make_input(truth, case_by_name("L"))
    grey = base["baseline-grey"](L)
    assert torch.allclose(M.srgb_to_lab(grey.double())[:, 0], M.srgb_to_lab(truth.double())[:, 0], atol=1e-3)
    assert [m.name for m in methods_for(case_by_name("G+R"), baseline_methods())] == ["baseline-fill"]


def test_linear_fill_recovers_a_linear_relation():
    rng = np.random.default_rng(0)
    crops = []
    for _ in range(4):
        r, b = rng.uniform(0, 1, (16, 16)), rng.uniform(0, 1, (16, 16))
        g = 0.3 * r + 0.6 * b + 0.05
        crops.append((np.stack([r, g, b], -1) * 255).round().astype(np.uint8))
    lf = fit_linear_fill(iter(crops), stride=1)
    assert lf.n_crops == 4 and lf.n_pixels == 4 * 256
    w0, w1, c = lf.coefficients["R+B"]
    assert (w0, w1, c) == pytest.approx((0.3, 0.6, 0.05), abs=0.01)
    truth = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    out = lf(make_input(truth, case_by_name("R+B")))
    assert float((out[:, 1] - truth[:, 1]).abs().max()) < 0.01
    assert isinstance(lf, ColourMethod) and not lf.applies(case_by_name("L"))
    with pytest.raises(ValueError):
        fit_linear_fill(iter([]))


def test_colorizer_method_keeps_the_given_lightness():
    model, _ = random_weights("colorize", seed=3)
    (m,) = colorizer_methods(model)
    assert m.applies(case_by_name("L")) and m.applies(case_by_name("G")) and not m.applies(case_by_name("R+B"))
    truth = torch.rand(2, 3, 32, 32)
    inp = make_input(truth, case_by_name("G"))
    out = m(inp)
    assert out.shape == truth.shape
    assert torch.allclose(M.srgb_to_lab(out.double())[:, :1], inp.lightness.double(), atol=0.05)  # L* of the G band's grey


def test_kid_halves_split_by_release():
    groups = ["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d"] * 2 + ["e"]
    h = kid_halves(groups)
    for g in set(groups):  # no release in both halves
        assert len({bool(x) for x, gg in zip(h, groups, strict=True) if gg == g}) == 1
    assert abs(int(h.sum()) - int((~h).sum())) <= 2


# -- evaluation end to end (tiny) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("colour_eval") / "train", n_releases=8, per_release=1, size=80)


def test_validation_set_keeps_the_release_split(folder):
    from astro_pipeline.training.sources import collect_items, split_by_group

    vs = validation_set([f"folder:{folder}"], crop=64, per_image=3, val_fraction=0.5)
    _, val = split_by_group(collect_items([f"folder:{folder}"]), val_fraction=0.5)
    assert set(vs.groups) == {i.group for i in val} and len(vs.crop_groups) == len(vs.crops) == 3 * vs.n_images
    train_groups = {g for g in {f"rel{i}" for i in range(8)}} - set(vs.groups)
    assert train_groups and next(training_crops([f"folder:{folder}"], crop=64, val_fraction=0.5)).shape == (64, 64, 3)


def test_evaluate_colour_cases_with_a_plugged_in_method(folder, tmp_path):
    col = random_weights("colorize", seed=1)
    calls: list[tuple[int, ...]] = []

    def fill_then_tint(inp):  # a stand-in band-aware model: keeps the given slots, fills the rest
        calls.append(inp.given)
        out = inp.slots.clone()
        for i in range(3):
            if not bool(inp.present[0, i]):
                out[:, i] = inp.slots.sum(1) / max(1, int(inp.present[0].sum())) if inp.given else inp.lightness[:, 0] / 100
        return out

    plug = FunctionMethod("band-model", fill_then_tint, frozenset(c.name for c in CASES))
    report = evaluate_models(colorizer=col, superres=None, superres_gan=None, colour_methods=[plug],
                             sources=[f"folder:{folder}"], crop=64, per_image=3, val_fraction=0.5, use_lpips=False,
                             horseshoe=False, output_dir=tmp_path / "ev", n_boot=200)
    protos = {r["protocol"] for r in report.table}
    assert protos == {"colorize", "given-B", "given-G", "given-R", "given-R+B", "given-G+R", "given-B+G"}
    assert len(calls) >= len(CASES)
    by = {(r["protocol"], r["method"]): r for r in report.table}
    assert ("colorize", "colorizer") in by and ("given-G", "colorizer") in by and ("given-R+B", "colorizer") not in by
    assert ("given-R+B", "baseline-linear") in by and ("given-R+B", "band-model") in by
    for r in report.table:
        lo, hi = r["ci"]["psnr_rgb"]
        assert lo <= r["psnr_rgb"] <= hi
        if r["protocol"] != "colorize" and r["method"] != "colorizer":
            assert r["given_err"] == 0  # these methods return the given slots exactly
    assert by[("given-G", "colorizer")]["given_err"] > 0  # the L -> ab colorizer keeps L*, not the band itself
    assert by[("colorize", "baseline-grey")]["chroma_ratio"] < 0.01 and by[("colorize", "baseline-grey")]["hue_spread"] == 0.0
    naive = by[("given-R+B", "band-model")]  # same answer as the naive fill: difference 0
    assert naive["baseline"] == "baseline-fill" and naive["delta"]["psnr_rgb"][0] == pytest.approx(0.0, abs=1e-9)
    assert by[("given-B", "baseline-replicate")]["delta"] == {}
    assert any(t["model"] == "band-model" and t["check"].startswith("R+B") for t in report.colour_targets)
    out = tmp_path / "ev"
    md = (out / "report.md").read_text()
    assert "## Colour, per case: accuracy" in md and "| R+B | band-model |" in md and "## Colour targets of issue 23" in md
    assert "PSNR - naive" in md and "[" in md
    for name in ("L", "B", "RB", "GR", "BG"):
        assert Image.open(out / f"colour_{name}.png").size[0] > 64
    rows = list(csv.DictReader(open(out / "report.csv")))
    assert len(rows) == len(report.table) and rows[0]["psnr_rgb_lo"]
    payload = json.loads((out / "report.json").read_text())
    assert payload["n_crops"] == report.n_crops and payload["linear_fill"]["n_crops"] > 0


def test_evaluate_kid_rows_and_floor(folder, tmp_path, shared_data):
    report = evaluate_models(colorizer=random_weights("colorize", seed=1), superres=None, superres_gan=None,
                             sources=[f"folder:{folder}"], crop=64, per_image=3, val_fraction=0.5, horseshoe=False,
                             cases=["L", "G+R"], n_boot=100)
    grey, col = report.row("colorize", "baseline-grey"), report.row("colorize", "colorizer")
    assert grey["kid"] is not None and col["kid"] is not None and grey["lpips"] is not None
    assert report.kid_truth_split is not None and report.kid_halves is not None and sum(report.kid_halves) == report.n_crops
    assert grey["kid"] > 0 and report.kid_truth_split[0] is not None


# -- sky gap -----------------------------------------------------------------------------------------

def test_sky_lightness_finds_the_background():
    rng = np.random.default_rng(0)
    L = 20 + rng.normal(0, 1.5, (128, 128))
    L[30:50, 30:50] = 90  # a bright source
    L[80:84, 10:120] = 70
    assert sky_lightness(LightnessImage("x", L)) == pytest.approx(20, abs=0.3)
    valid = np.ones_like(L, dtype=bool)
    valid[:, :64] = False
    L[:, :64] = 0  # off the footprint: not sky
    assert sky_lightness(LightnessImage("x", L, valid)) == pytest.approx(20, abs=0.5)


def _write_frame(path, sky, seed):
    rng = np.random.default_rng(seed)
    data = rng.normal(sky, 3.0, (96, 96)).astype(np.float32)
    yy, xx = np.mgrid[0:96, 0:96]
    data += 400 * np.exp(-((yy - 48) ** 2 + (xx - 40) ** 2) / 50.0).astype(np.float32)
    fits.PrimaryHDU(data).writeto(path)


def test_sky_gap_of_stretched_frames_against_black_sky_training_images(tmp_path):
    ref = []
    for k in range(3):  # ESA-like: black sky, one coloured blob
        img = np.zeros((96, 96, 3), np.uint8)
        img[30:60, 30:60] = (200, 120, 60 + 40 * k)
        p = tmp_path / f"train{k}.png"
        Image.fromarray(img).save(p)
        ref.append(p)
    frames = []
    for k in range(2):
        p = tmp_path / f"frame{k}.fits"
        _write_frame(p, 100.0, k)
        frames.append(p)
    (tmp_path / "tiny.fits").write_bytes(b"")  # unreadable: named, not fatal
    gap = measure_sky_gap({"frames": [*frames, tmp_path / "tiny.fits"]}, ref)
    assert gap.reference.sky_median < 1.0 and gap.reference.dark_fraction > 0.8
    assert gap.gap("frames") > 10  # ZScale + asinh puts the sky at a mid grey
    assert gap.sets[0].skipped and "tiny.fits" in gap.sets[0].skipped[0]
    rows = {r["set"]: r for r in gap.rows()}
    assert rows["training images"]["hist_emd"] == 0.0 and rows["frames"]["hist_emd"] > 5

    def black_sky(frame):  # an input preparation that moves the sky to black closes the gap
        im = colorizer_input(frame)
        return LightnessImage(im.label, np.clip(im.lightness - sky_lightness(im), 0, 100), im.valid)

    closed = measure_sky_gap({"frames": frames}, ref, prepare=black_sky)
    assert abs(closed.gap("frames")) < 3 and closed.prepare == "black_sky"


# -- the Horseshoe -----------------------------------------------------------------------------------

def test_horseshoe_cases(shared_data):
    from astro_pipeline.training.horseshoe import horseshoe_check

    lf = LinearFill({"G+R": (0.2, 0.7, 0.0), "R+B": (0.5, 0.5, 0.0), "B+G": (0.9, 0.0, 0.0)})
    model, _ = random_weights("colorize", seed=0)
    res = horseshoe_check(methods=[*baseline_methods(lf), *colorizer_methods(model)], data_dir=shared_data / "fits" / "hst")
    assert set(res["cases"]) == {"G", "G+R"}
    g, gr = res["cases"]["G"], res["cases"]["G+R"]
    assert set(g) == {"baseline-replicate", "colorizer"} and set(gr) == {"baseline-fill", "baseline-linear"}
    assert g["baseline-replicate"]["chroma_ratio"] < 0.01 and res["baseline-grey"] == g["baseline-replicate"]
    assert gr["baseline-fill"]["ciede76"] < g["baseline-replicate"]["ciede76"]  # two real bands beat one
    assert res["truth_hue_spread"] > 5
    labels = [lab for lab, _ in res["images"]["G+R"]]
    assert labels[0] == "input" and labels[-1] == "truth"


def test_cli_evaluate_then_rerender_with_notes(folder, tmp_path):
    from typer.testing import CliRunner

    from astro_pipeline.cli import app
    from astro_pipeline.models.registry import save_weights

    model, meta = random_weights("colorize", seed=2)
    meta.extra["val_groups"] = ["rel0"]  # pretend its own split held out one release only
    wpath = save_weights(model, tmp_path / "col.safetensors", meta)
    out = tmp_path / "ev"
    args = ["evaluate", "--output", str(out), "--colorizer", str(wpath), "--superres", "", "--superres-gan", "",
            "--source", f"folder:{folder}", "--crop", "64", "--per-image", "2", "--val-fraction", "0.5", "--no-lpips",
            "--no-sky-gap", "--n-boot", "100", "--case", "L", "--case", "R+B", "--threads", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "case L" in res.output and "baseline-grey" in res.output and "case R+B" in res.output
    md = (out / "report.md").read_text()
    assert "WARNING: trained on" in md  # the releases scored here were not all held out of this model's training
    assert "| L | colorizer |" in md and "| R+B | baseline-linear |" in md and "| B | " not in md
    notes = tmp_path / "notes.txt"
    notes.write_text("First note about the runs.\n\nSecond note,\nwrapped over two lines.\n")
    res2 = CliRunner().invoke(app, ["evaluate", "--output", str(out), "--rerender", "--notes", str(notes)])
    assert res2.exit_code == 0, res2.output
    md2 = (out / "report.md").read_text()
    assert "- First note about the runs." in md2 and "- Second note, wrapped over two lines." in md2
    def accuracy(text):
        return text.split("## Colour, per case: accuracy")[1].split("\n## ")[0]

    assert accuracy(md2) == accuracy(md)  # same figures, re-rendered from report.json
    bad = CliRunner().invoke(app, ["evaluate", "--output", str(tmp_path / "nothing"), "--rerender"])
    assert bad.exit_code == 2 and "cannot re-render" in bad.output
