"""Source-level SR evaluation (injection, degradation, detection, scoring) and the science gate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from model_helpers import random_weights

from astro_pipeline.config import shared_dir
from astro_pipeline.inference import Engine
from astro_pipeline.models.registry import save_weights
from astro_pipeline.training import source_eval as se
from astro_pipeline.training.promote import gate, promote_candidate, record_science_gate, science_gate

PSF = se.MoffatPSF(fwhm=2.4, beta=3.0, source="test")
CFG = se.SourceEvalConfig(per_bin=3, realisations=2, seed=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _star_field(size=256, n_stars=0, seed=0, sigma=1.0, psf=PSF):
    """Sky noise plus ``n_stars`` bright isolated Moffat stars on a grid (and a smooth gradient)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, sigma, (size, size)) + np.linspace(0, 2 * sigma, size)[None, :]
    if n_stars:
        g = int(math.ceil(math.sqrt(n_stars)))
        pos = [(24 + i * (size - 48) / max(g - 1, 1) + rng.uniform(-0.5, 0.5),
                24 + j * (size - 48) / max(g - 1, 1) + rng.uniform(-0.5, 0.5)) for i in range(g) for j in range(g)][:n_stars]
        xs, ys = zip(*pos, strict=True)
        img += psf.render(img.shape, xs, ys, rng.uniform(400, 1500, len(xs)) * sigma)
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def frame():
    return se.frame_from_array(_star_field(seed=1), name="test field", pixel_scale=0.05, psf=PSF)


def test_fit_psf_recovers_the_moffat_width_and_falls_back_to_the_table():
    img = _star_field(n_stars=25, seed=2)
    fit = se.fit_psf(img, sigma=1.0, pixel_scale=0.05)
    assert "Moffat fit" in fit.source
    assert fit.fwhm == pytest.approx(PSF.fwhm, rel=0.1)
    blank = _star_field(seed=3)
    tab = se.fit_psf(blank, sigma=1.0, pixel_scale=0.05, instrument="ACS", detector="WFC")
    assert tab.source.startswith("tabulated") and tab.fwhm == pytest.approx(0.10 / 0.05)
    assert se.fit_psf(blank, sigma=1.0, pixel_scale=0.05).source.startswith("default")


def test_injected_fluxes_have_the_requested_low_resolution_snr_and_degrade_keeps_the_noise(frame):
    rng = np.random.default_rng(0)
    inj = se.inject(frame, rng, CFG)
    n_bins = len(CFG.snr_edges) - 1
    assert len(inj.x) == n_bins * CFG.per_bin and np.bincount(inj.bin).tolist() == [CFG.per_bin] * n_bins
    lo, hi = np.asarray(CFG.snr_edges[:-1])[inj.bin], np.asarray(CFG.snr_edges[1:])[inj.bin]
    assert np.all((inj.snr >= lo) & (inj.snr < hi))
    assert np.all(np.abs(inj.x - np.round(inj.x)) > 0) or len(set(np.round(inj.x % 1, 3))) > 3  # sub-pixel positions
    # the optimal (PSF-weighted) S/N of each noiseless source in the 4x-binned image
    s = CFG.scale
    binned = inj.sources.reshape(frame.data.shape[0] // s, s, frame.data.shape[1] // s, s).sum(axis=(1, 3))
    for i in range(0, len(inj.x), 4):
        one = PSF.render(frame.data.shape, [inj.x[i]], [inj.y[i]], [inj.flux[i]])
        b = one.reshape(binned.shape[0], s, binned.shape[1], s).sum(axis=(1, 3)) / (s * s)  # block means
        snr = float(np.sqrt((b**2).sum()) / frame.sigma)  # matched filter: sum(b^2) / (sigma sqrt(sum b^2))
        assert snr == pytest.approx(inj.snr[i], rel=0.08)
    lr = se.degrade(inj.truth, frame.sigma, rng)
    assert lr.shape == (frame.data.shape[0] // 4, frame.data.shape[1] // 4)
    assert se.sky_sigma(lr, box=8) == pytest.approx(frame.sigma, rel=0.1)


def test_detect_finds_bright_sources_at_their_positions(frame):
    src = PSF.render(frame.data.shape, [60.3, 150.7], [80.2, 170.9], [200.0, 400.0])
    det = se.detect(frame.data + src, fwhm=PSF.fwhm, threshold_sigma=3.0)
    d = np.hypot(det.x[:, None] - np.array([60.3, 150.7]), det.y[:, None] - np.array([80.2, 170.9])).min(axis=0)
    assert np.all(d < 0.5)
    empty = se.detect(np.zeros((64, 64)), fwhm=2.0, threshold_sigma=3.0)
    assert len(empty.x) == 0


def _bicubic(d):
    return se._bicubic(d, 4)


def _speckle(d):
    """Bicubic plus sharp positive speckle: what a source finder reads as faint detections."""
    out = _bicubic(d)
    rng = np.random.default_rng(int(d.sum() * 1e3) % 2**31)
    ys, xs = rng.integers(4, out.shape[0] - 4, 300), rng.integers(4, out.shape[1] - 4, 300)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out[ys + dy, xs + dx] += 0.25 if dx == dy == 0 else 0.12
    return np.clip(out, 0, 1)


def _dim(d):
    return _bicubic(d) * 0.85


@pytest.fixture(scope="module")
def report(frame):
    return se.evaluate_sources({"same": _bicubic, "speckle": _speckle, "dim": _dim}, frames=[frame], config=CFG)


def test_an_sr_equal_to_bicubic_scores_like_bicubic_and_passes(report):
    same, bic = report.summary("same"), report.summary("bicubic")
    for k, v in bic.items():
        assert (math.isnan(v) and math.isnan(same[k])) or same[k] == pytest.approx(v)
    truth = report.summary("truth")
    assert truth["completeness_50-100"] == 1.0 and bic["completeness_50-100"] >= 0.8
    assert bic["completeness_3-5"] <= truth["completeness_3-5"]
    verdict = science_gate(report.metrics_for("same"))
    assert all(c["met"] for c in verdict.checks if not c["check"].startswith("abs(median flux"))
    assert report.per_realisation["truth"][0]["false_per_arcmin2"] == 0


def test_speckle_is_counted_as_false_detections_and_fails_the_gate(report):
    assert report.summary("speckle")["false_per_arcmin2"] > 3 * report.summary("bicubic")["false_per_arcmin2"] + 50
    verdict = science_gate(report.metrics_for("speckle"))
    assert verdict.passed is False and "false detections" in verdict.reason


@pytest.fixture(scope="module")
def nebula_report():
    """A field whose bright smooth nebula widens the stretch, so some sources stay unclipped (on the sky-only
    field a 4x product's cores pass the stretch's upper limit at every S/N)."""
    yy, xx = np.mgrid[:256, :256]
    neb = 30.0 * np.exp(-((xx - 128.0) ** 2 + (yy - 128.0) ** 2) / (2 * 70.0**2))
    fr = se.frame_from_array((_star_field(seed=1) + neb).astype(np.float32), name="nebula field", pixel_scale=0.05, psf=PSF)
    return se.evaluate_sources({"dim": _dim}, frames=[fr], config=CFG, flux_products=False)


def test_dimming_changes_the_flux_ratio_and_fails_the_gate(nebula_report):
    dim, bic = nebula_report.summary("dim"), nebula_report.summary("bicubic")
    assert dim["flux_ratio_median"] < bic["flux_ratio_median"] - 0.1
    verdict = science_gate(nebula_report.metrics_for("dim"))
    flux = next(c for c in verdict.checks if c["check"].startswith("abs(median flux"))
    assert not flux["met"] and verdict.passed is False


def test_the_flux_ratio_counts_only_sources_a_perfect_display_product_can_carry(nebula_report, report):
    """``display-truth`` (the truth stretched with the input's limits, clipped, inverted) is the best any
    display product can do. On the sources the flux ratio counts it must measure what the truth measures,
    or the check would fault a perfect product for the display's ceiling; it is a reference, not evidence."""
    for rep in (nebula_report, report):
        assert rep.methods[:3] == ["truth", "display-truth", "bicubic"]
        assert not any(r["evidence"] for r in rep.rows() if r["method"] in ("truth", "display-truth"))
    rec = {(r["realisation"], r["snr"]): r for r in nebula_report.sources if r["method"] == "truth"}
    kept = [(r, rec[r["realisation"], r["snr"]]) for r in nebula_report.sources
            if r["method"] == "display-truth" and r["recovered"] and not r["clipped"]]
    assert len(kept) >= 5
    for disp, truth in kept:
        assert disp["measured"] == pytest.approx(truth["measured"], abs=0.02 * truth["expected"])
    assert nebula_report.summary("display-truth")["flux_ratio_median"] == pytest.approx(
        nebula_report.summary("truth")["flux_ratio_median"], abs=0.01)
    # on the sky-only field the stretch is a few sky sigma wide: the display cuts every source's 4x core
    assert report.summary("display-truth")["clipped_fraction"] > 0.9


def test_flux_products_keep_block_means_and_are_marked_not_evidence(report):
    assert "same+flux" in report.methods
    rows = {(r["method"], r["metric"]): r for r in report.rows()}
    assert rows[("same+flux", "flux_ratio_median")]["evidence"] is False
    assert rows[("same", "flux_ratio_median")]["evidence"] is True
    assert report.summary("dim+flux")["flux_ratio_median_all"] == pytest.approx(1.0, abs=0.1)  # restored by construction


def test_report_section_and_files(report, tmp_path):
    files = se.write_source_report(report, tmp_path, verdicts={"speckle": science_gate(report.metrics_for("speckle"))})
    names = sorted(p.name for p in files)
    assert names == ["sources.csv", "sources.md", "sources_injected_recovered.png"]
    md = (tmp_path / "sources.md").read_text()
    assert "| bicubic |" in md and "completeness 3-5 (%)" in md and "**FAIL**" in md and "not evidence" in md
    csv_lines = (tmp_path / "sources.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(report.methods) * len(report.metric_names())
    assert (tmp_path / "sources_injected_recovered.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_source_level_is_one_section_of_the_evaluation_report_and_survives_report_json(report, tmp_path):
    from astro_pipeline.training.report import SECTIONS, EvalReport, load_report, section_sources, write_report

    verdicts = {n: science_gate(report.metrics_for(n)) for n in ("same", "speckle")}
    ev = EvalReport(table=[{"protocol": "sr-clean", "method": "baseline-bicubic", "n": 1, "psnr_rgb": 30.0, "ci": {}}],
                    n_crops=1, sources=se.report_summary(report, verdicts=verdicts, figure="sources_injected_recovered.png"))
    assert section_sources in SECTIONS and SECTIONS.index(section_sources) > SECTIONS.index(
        next(s for s in SECTIONS if s.__name__ == "section_super_resolution"))
    write_report(ev, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.count("## Source level") == 1 and md.index("## Source level") > md.index("## sr-clean")
    assert "| speckle | **verdict** | | | **FAIL** |" in md and "![injected against recovered](sources_injected_recovered.png)" in md
    back = load_report(tmp_path / "report.json")
    assert back.sources is not None and back.sources["verdicts"]["speckle"]["passed"] is False
    again = se.SourceEvalReport.from_dict(back.sources)
    assert again.config == report.config and again.summary("speckle") == pytest.approx(report.summary("speckle"), nan_ok=True)
    write_report(back, tmp_path / "again")
    assert (tmp_path / "again" / "report.md").read_text() == md
    # a summary saved before the clipped rule counted the truth's clipped flux re-renders as what it was
    old = {**back.sources, "config": {k: v for k, v in back.sources["config"].items() if k != "clip_loss"}}
    assert se.SourceEvalReport.from_dict(old).config.clip_loss == math.inf
    old_md = "\n".join(se.summary_section(old))
    assert "whose low-resolution peak is below" in old_md and "of the truth's own flux" not in old_md


def test_engine_and_weights_are_accepted_as_sr_methods(frame, tmp_path):
    model, meta = random_weights("superres", tiny=True, seed=0)
    path = save_weights(model, tmp_path / "sr.safetensors", meta)
    eng = Engine(model, meta, device="cpu", precision="fp32", batch_size=2)
    small = se.frame_from_array(frame.data[:128, :128], name="small", psf=PSF)
    cfg = se.SourceEvalConfig(per_bin=1, realisations=1, snr_edges=(20.0, 100.0))
    rep = se.evaluate_sources({"engine": eng, "weights": path}, frames=[small], config=cfg, flux_products=False)
    assert rep.methods == ["truth", "display-truth", "bicubic", "engine", "weights"]
    assert rep.summary("engine") == pytest.approx(rep.summary("weights"), nan_ok=True)
    with pytest.raises(ValueError, match="reserved"):
        se.evaluate_sources({"bicubic": _bicubic}, frames=[small], config=cfg)
    col, col_meta = random_weights("colorize", tiny=True, seed=0)
    with pytest.raises(ValueError, match="not superres"):
        se.as_sr_function(save_weights(col, tmp_path / "col.safetensors", col_meta))


def test_frame_errors_are_clear():
    with pytest.raises(ValueError, match="single-band"):
        se.frame_from_array(np.zeros((64, 64, 3)), name="rgb.fits")
    with pytest.raises(ValueError, match="too small"):
        se.frame_from_array(np.random.default_rng(0).normal(size=(40, 40)), name="tiny.fits")


def test_held_out_frames_are_named_for_training():
    assert se.is_held_out("hst_sample_ngc1300_acs_wfc_f435w_drz.fits")
    assert se.is_held_out("x/trilogy__hst_mos_1020228_wfc3_uvis_f475w_drz_cutout_20asec.fits")
    assert se.is_held_out("anything.fits", field="hdf")
    assert not se.is_held_out("hst_sample_m101_acs_wfc_f606w_drz.fits")
    assert not se.is_held_out("petrofit__abell_2744_dwarf_galaxy_f105w.fits.gz")


def test_dev_frames_are_real_frames_the_evaluation_and_training_never_use():
    assert all(not se.is_held_out(rel) for rel in se.DEV_REAL_FRAMES)
    assert not set(se.DEV_REAL_FRAMES) & set(se.DEFAULT_REAL_FRAMES)
    base = shared_dir() / "data" / "fits"
    if not all((base / rel).is_file() for rel in se.DEV_REAL_FRAMES):
        pytest.skip(f"shared dev frames absent under {base}")
    notes: list[str] = []
    frames = se.dev_frames(notes=notes, max_size=256)
    assert [f.name for f in frames][:2] == ["HorseHead", "M51"] and not notes
    assert all(f.data.shape[0] % 4 == 0 and f.sigma > 0 for f in frames)
    missing: list[str] = []
    assert se.dev_frames(shared=base / "nowhere", notes=missing) == [] and len(missing) == len(se.DEV_REAL_FRAMES)


def test_real_frame_loads_with_its_pixel_scale():
    path = shared_dir() / "data" / "fits" / se.DEFAULT_REAL_FRAMES[0]
    if not path.is_file():
        pytest.skip(f"shared real frame absent: {path}")
    fr = se.load_frame(path)
    assert fr.pixel_scale == pytest.approx(0.04, rel=0.05)
    assert fr.data.shape[0] % 4 == 0 and fr.data.shape[1] % 4 == 0 and np.isfinite(fr.data).all()
    assert fr.sigma > 0 and 1.0 < fr.psf.fwhm < 6.0


# ---- the science gate --------------------------------------------------------------------------

def _src(c=(0.2, 0.7, 0.98, 1.0, 1.0), false=200.0, flux=1.0):
    labels = ["3-5", "5-10", "10-20", "20-50", "50-100"]
    return {**{f"completeness_{b}": v for b, v in zip(labels, c, strict=True)}, "false_per_arcmin2": false,
            "flux_ratio_median": flux, "realisations": 5, "frames": 7, "per_bin": 8, "threshold_sigma": 3.0}


def test_science_gate_rules():
    base = _src()
    assert science_gate({"sources": _src(), "sources:bicubic": base}).passed is True
    assert science_gate({"sources": _src(c=(0.185, 0.7, 0.98, 1.0, 1.0)), "sources:bicubic": base}).passed is True  # -1.5 pt
    drop = science_gate({"sources": _src(c=(0.5, 0.9, 0.95, 1.0, 1.0)), "sources:bicubic": base})  # -3 points in 10-20
    assert drop.passed is False and "completeness 10-20" in drop.reason
    assert science_gate({"sources": _src(false=219.0), "sources:bicubic": base}).passed is True
    assert science_gate({"sources": _src(false=221.0), "sources:bicubic": base}).passed is False
    assert science_gate({"sources": _src(flux=1.049), "sources:bicubic": base}).passed is True
    assert science_gate({"sources": _src(flux=0.94), "sources:bicubic": base}).passed is False
    assert science_gate({"sources": _src(flux=float("nan")), "sources:bicubic": base}).passed is False
    assert science_gate({"sr-clean": {}}).passed is None


def _metrics(psnr, **src):
    return {"sr-clean": {"psnr_rgb": psnr}, "sr-clean:baseline-bicubic": {"psnr_rgb": 29.0},
            "sources": _src(**src), "sources:bicubic": _src()}


def test_gate_requires_the_science_gate_for_the_default_sr_model_only():
    current = _metrics(30.0)
    ok = gate("superres", _metrics(30.5), current)
    assert ok.promote and ok.science.passed
    speckly = gate("superres", _metrics(30.5, false=900.0), current)
    assert not speckly.promote and "science gate FAIL" in speckly.reason
    missing = gate("superres", {"sr-clean": {"psnr_rgb": 30.5}, "sr-clean:baseline-bicubic": {"psnr_rgb": 29.0}}, current)
    assert not missing.promote and "not evaluated" in missing.reason
    gan = gate("superres-gan", _metrics(30.5, false=900.0), current)
    assert gan.promote and gan.science.passed is False and "does not block" in gan.reason
    first = gate("superres", _metrics(30.5, false=900.0), None)  # nothing installed: installed, the card says FAIL
    assert first.promote and first.science.passed is False


def test_promote_card_carries_the_science_section_and_recording_is_idempotent(tmp_path):
    model, meta = random_weights("superres", seed=0)
    cand = save_weights(model, tmp_path / "cand.safetensors", meta)
    wdir = tmp_path / "weights"
    promote_candidate(cand, name="superres-gan", metrics=_metrics(30.0, false=900.0), weights_dir=wdir)
    card = (wdir / "superres-gan.md").read_text()
    assert "## Science gate (source level, issue 19)" in card and "900.0 per square arcminute" in card
    assert "visualisation only" in card
    before = card.split("<!-- science-gate: begin -->")[0]
    v1 = record_science_gate(wdir / "superres-gan.md", "superres-gan", _metrics(30.0, false=100.0))
    v2 = record_science_gate(wdir / "superres-gan.md", "superres-gan", _metrics(30.0, false=100.0))
    card2 = (wdir / "superres-gan.md").read_text()
    assert v1.passed and v2.passed and card2.count("## Science gate") == 1 and "100.0 per square arcminute" in card2
    assert card2.startswith(before) and "## Promotion gate" in card2


@pytest.mark.slow
def test_cli_evaluate_writes_the_source_section_and_records_the_card(tmp_path):
    """``astro-pipeline evaluate`` on the fixed frames (1 realisation here): sources.md, the figure,
    the section in report.md, the verdict printed, and the science section written into the card."""
    from typer.testing import CliRunner

    from astro_pipeline.cli import app

    if not (shared_dir() / "data" / "hubble_color").is_dir():
        pytest.skip("evaluate needs the shared ESA validation images (../shared/data/hubble_color)")
    wdir = tmp_path / "w"
    model, meta = random_weights("superres", tiny=True, seed=0)
    meta.name = "superres"
    save_weights(model, wdir / "superres.safetensors", meta)
    (wdir / "superres.md").write_text("# superres\n\n## Promotion gate\n\nkept as written\n")
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["evaluate", "--output", str(out), "--colorizer", "", "--superres-gan", "",
                                   "--superres", "superres", "--no-lpips", "--realisations", "1", "--record-cards",
                                   "--threads", "1", "--per-image", "1", "--n-boot", "200", "--no-sky-gap"],  # the colour/SR part kept small
                             env={"ASTRO_PIPELINE_WEIGHTS_DIR": str(wdir)})
    assert res.exit_code == 0, res.output
    assert "sources superres" in res.output and "science gate" in res.output
    report = (out / "report.md").read_text()
    assert "## Source level" in report and "| bicubic |" in report and "sources_injected_recovered.png" in report
    assert (out / "sources.md").is_file() and (out / "sources_injected_recovered.png").is_file()
    assert report.index("## Source level") > report.index("## sr-clean")  # one section of the report, in its place
    card = (wdir / "superres.md").read_text()
    assert "kept as written" in card and "## Science gate (source level, issue 19)" in card
    # the section lives in report.json: a re-render keeps it
    (out / "report.md").write_text("stale\n")
    res = CliRunner().invoke(app, ["evaluate", "--output", str(out), "--rerender"], env={"ASTRO_PIPELINE_WEIGHTS_DIR": str(wdir)})
    assert res.exit_code == 0, res.output
    assert (out / "report.md").read_text() == report


def test_cli_source_level_on_dev_frames_is_labelled_and_never_recorded(tmp_path):
    from typer.testing import CliRunner

    from astro_pipeline.cli import app
    from astro_pipeline.cli.train_cmd import _source_level

    res = CliRunner().invoke(app, ["evaluate", "--output", str(tmp_path / "e"), "--dev-frames", "--record-cards"])
    assert res.exit_code == 2 and "never recorded in the cards" in res.output
    base = shared_dir() / "data" / "fits"
    if not all((base / rel).is_file() for rel in se.DEV_REAL_FRAMES):
        pytest.skip(f"shared dev frames absent under {base}")
    wdir = tmp_path / "w"
    model, meta = random_weights("superres", tiny=True, seed=0)
    save_weights(model, wdir / "tiny.safetensors", meta)
    summary = _source_level({"tiny": str(wdir / "tiny.safetensors")}, tmp_path / "dev", realisations=1,
                            record_cards=False, dev=True)
    names = {f["name"] for f in summary["frames"]}
    assert "HorseHead" in names and not any(se.is_held_out(f["origin"]) for f in summary["frames"])
    assert (tmp_path / "dev" / "sources.md").is_file()
