"""Training: sources and release split, pair making, reproducibility, SIGKILL + resume, promotion gate."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from model_helpers import random_weights

from astro_pipeline.models.registry import load_weights, save_weights
from astro_pipeline.training.checkpoint import checkpoint_step
from astro_pipeline.training.datasets import ColorizerBatches, ImageBank, SRBatches, downscale_bicubic
from astro_pipeline.training.colorspace import lab_to_srgb
from astro_pipeline.training.sources import FolderSource, collect_items, split_by_group, training_data_hash

TINY_COL = {
    "arch_kwargs": {"base_channels": 4, "depth": 2, "chroma_scale": 2, "input_scale": 2},
    "disc_kwargs": {"in_channels": 3, "base_channels": 4, "n_layers": 2},
    "crop": 32, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "val_fraction": 0.3, "ema": 0.9, "disc_scale": 1,
}
TINY_SR = {
    "arch_kwargs": {"channels": 4, "blocks": 1, "scale": 4},
    "crop": 32, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "val_fraction": 0.3, "decay_from": 1.0,
}


def make_folder(root: Path, n_releases: int = 6, per_release: int = 2, size: int = 96) -> Path:
    """Synthetic 'Hubble' colour images (coloured blobs on dark sky) with a CREDITS.csv by release."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    rows = []
    for r in range(n_releases):
        for k in range(per_release):
            img = np.zeros((size, size, 3), np.float32)
            for _ in range(4):
                cy, cx, s = rng.uniform(0, size, 2).tolist() + [rng.uniform(5, 20)]
                colour = rng.uniform(0.2, 1.0, 3)
                img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))[..., None] * colour
            img += rng.normal(0, 0.02, img.shape)
            name = f"rel{r}{'abc'[k]}.png"
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / name)
            rows.append({"file": f"train/{name}", "release": f"rel{r}"})
    with open(root / "CREDITS.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "release"])
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("colour") / "train")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_split_is_by_release_and_deterministic(shared_data):
    items = FolderSource(shared_data / "hubble_color" / "train")()
    assert len(items) == 327
    train, val = split_by_group(items)
    train2, val2 = split_by_group(list(reversed(items)))
    assert {i.path for i in val} == {i.path for i in val2}
    assert not {i.group for i in train} & {i.group for i in val}  # no release on both sides
    assert 0.05 < len(val) / len(items) < 0.25
    multi = [g for g in {i.group for i in items} if sum(j.group == g for j in items) > 1]
    assert multi  # some releases really have several images, so the split matters


def test_folder_source_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        FolderSource(tmp_path / "missing")()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no training images"):
        FolderSource(tmp_path / "empty")()


def test_training_data_hash_covers_files_and_recipe(tiny_folder):
    items = collect_items([f"folder:{tiny_folder}"])
    h = training_data_hash(items, {"lr": 1})
    assert h == training_data_hash(list(reversed(items)), {"lr": 1})
    assert h != training_data_hash(items, {"lr": 2})
    assert h != training_data_hash(items[1:], {"lr": 1})


def test_sr_pairs_use_pillow_antialiased_bicubic(tiny_folder):
    bank = ImageBank.load(collect_items([f"folder:{tiny_folder}"]))
    batches = SRBatches(bank, hr_crop=32, batch_size=4, rng=np.random.default_rng(0), degrade_fraction=0.5, empty_keep=1.0)
    lr, hr = batches.next()
    assert lr.shape == (4, 3, 8, 8) and hr.shape == (4, 3, 32, 32)
    hr8 = (hr.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    clean = [torch.from_numpy(downscale_bicubic(h)).permute(2, 0, 1).float() / 255 for h in hr8]
    torch.testing.assert_close(lr[2], clean[2])  # the clean half: exactly Pillow's reduction
    torch.testing.assert_close(lr[3], clean[3])
    assert (lr[0] - clean[0]).abs().mean() > 1e-3  # the degraded half differs
    antialias_free = hr[2:3, :, 1::4, 1::4]
    assert (antialias_free - lr[2:3]).abs().mean() > 0  # not a plain subsample


def test_colorizer_pairs_recombine_to_the_crop(tiny_folder):
    bank = ImageBank.load(collect_items([f"folder:{tiny_folder}"]))
    L, ab = ColorizerBatches(bank, crop=32, batch_size=3, rng=np.random.default_rng(1), empty_keep=1.0).next()
    assert L.shape == (3, 1, 32, 32) and ab.shape == (3, 2, 32, 32)
    assert L.min() >= -1 and L.max() <= 1 and ab.abs().max() <= 1
    rgb = lab_to_srgb(torch.cat([(L + 1) * 50, ab * 110], 1))
    assert rgb.std() > 0.01  # the crops are colour images, not empty


def _weights_equal(a: Path, b: Path) -> bool:
    ma, _ = load_weights(a)
    mb, _ = load_weights(b)
    sa, sb = ma.state_dict(), mb.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_colorizer_training_is_seeded_and_writes_weights(tiny_folder, tmp_path):
    from astro_pipeline.training import run_training

    kw = dict(model="colorizer", steps=3, sources=[f"folder:{tiny_folder}"], seed=7, overrides=TINY_COL, threads=1)
    a = run_training(output_dir=tmp_path / "a", **kw)
    b = run_training(output_dir=tmp_path / "b", **kw)
    c = run_training(output_dir=tmp_path / "c", **{**kw, "seed": 8})
    assert _weights_equal(a.weights_path, b.weights_path)
    assert not _weights_equal(a.weights_path, c.weights_path)
    model, meta = load_weights(a.weights_path)
    assert meta.steps == 3 and meta.task == "colorize" and len(meta.training_data_hash) == 64
    assert meta.extra["val_groups"] and meta.extra["train_images"] < 12  # some releases held out
    rows = [json.loads(x) for x in a.log_path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all("g_l1" in r and "d" in r for r in rows)
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


_CHILD = """
import sys, torch
torch.set_num_threads(1)
from astro_pipeline.training import run_training
run_training(model="superres", steps=100000, sources=[sys.argv[1]], output_dir=sys.argv[2], seed=3,
             overrides={overrides}, threads=1)
"""


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_folder, tmp_path):
    """A real subprocess is SIGKILLed mid-training; resuming gives the same weights as never stopping."""
    from astro_pipeline.training import run_training

    out = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(_CHILD.replace("{overrides}", repr(TINY_SR)))
    proc = subprocess.Popen([sys.executable, str(script), f"folder:{tiny_folder}", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpt = out / "superres" / "checkpoint"
    deadline = time.monotonic() + 120
    try:
        while (checkpoint_step(ckpt) or 0) < 4:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "child exited"
            assert time.monotonic() < deadline, "child made no checkpoint in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    k = checkpoint_step(ckpt)
    assert k is not None and k >= 4
    total = k + 4
    resumed = run_training(model="superres", steps=total, sources=[f"folder:{tiny_folder}"], output_dir=out, seed=3, overrides=TINY_SR, threads=1)
    assert resumed.resumed_from == k and resumed.steps == total
    straight = run_training(model="superres", steps=total, sources=[f"folder:{tiny_folder}"], output_dir=tmp_path / "straight", seed=3, overrides=TINY_SR, threads=1, resume=False)
    assert _weights_equal(resumed.weights_path, straight.weights_path)
    steps_logged = [json.loads(x)["step"] for x in resumed.log_path.read_text().splitlines()]
    assert steps_logged == list(range(1, total + 1))  # rows after the checkpoint were redone, not duplicated


def test_time_limit_stops_after_a_checkpoint(tiny_folder, tmp_path):
    from astro_pipeline.training import run_training

    r = run_training(model="superres", steps=1000, sources=[f"folder:{tiny_folder}"], output_dir=tmp_path, overrides=TINY_SR, time_limit_s=0.0)
    assert r.stopped_early and r.steps == 1 and checkpoint_step(tmp_path / "superres" / "checkpoint") == 1
    assert load_weights(r.weights_path)[1].steps == 1


def test_srgan_without_perceptual_weights_logs_and_skips(tiny_folder, tmp_path, monkeypatch, caplog):
    from astro_pipeline.training import run_training

    init, meta = random_weights("superres", seed=0)
    meta.kwargs = TINY_SR["arch_kwargs"]
    from astro_pipeline.models.superres import SRResNet

    init = SRResNet(**TINY_SR["arch_kwargs"])
    save_weights(init, tmp_path / "init.safetensors", meta)
    monkeypatch.setenv("ASTRO_PIPELINE_PERCEPTUAL_WEIGHTS", str(tmp_path / "absent.safetensors"))
    over = {**TINY_SR, "disc_kwargs": {"base_channels": 4, "n_stages": 2}}
    with caplog.at_level("WARNING"):
        r = run_training(model="superres-gan", steps=2, sources=[f"folder:{tiny_folder}"], output_dir=tmp_path, overrides=over, init_from=tmp_path / "init.safetensors")
    assert any("perceptual" in n and "skipped" in n for n in r.notes)
    assert "skipped" in caplog.text
    rows = [json.loads(x) for x in r.log_path.read_text().splitlines()]
    assert rows[-1]["g_percep"] == 0.0 and "g_adv" in rows[-1]


def test_srgan_uses_vgg_perceptual_when_present(tiny_folder, tmp_path, shared_data):
    from astro_pipeline.training import run_training
    from astro_pipeline.models.superres import SRResNet

    _, meta = random_weights("superres", seed=0)
    meta.kwargs = TINY_SR["arch_kwargs"]
    save_weights(SRResNet(**TINY_SR["arch_kwargs"]), tmp_path / "init.safetensors", meta)
    over = {**TINY_SR, "disc_kwargs": {"base_channels": 4, "n_stages": 2}, "batch_size": 1}
    r = run_training(model="superres-gan", steps=1, sources=[f"folder:{tiny_folder}"], output_dir=tmp_path, overrides=over, init_from=tmp_path / "init.safetensors")
    row = json.loads(r.log_path.read_text().splitlines()[-1])
    assert row["g_percep"] > 0


def test_perceptual_loss_averages_its_vgg_taps():
    from torch.nn import functional as F

    from astro_pipeline.training.losses import _IMAGENET_MEAN, _IMAGENET_STD, PerceptualLoss, VGG16Features

    torch.manual_seed(0)
    vgg = VGG16Features(last="relu3_3")
    taps = ("relu1_2", "relu2_2", "relu3_3")
    loss = PerceptualLoss(vgg, layers=taps)
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert loss(a, a).item() == 0.0
    norm = lambda x: (x - _IMAGENET_MEAN) / _IMAGENET_STD  # noqa: E731
    manual = sum(F.l1_loss(x, y) for x, y in zip(vgg(norm(a), taps), vgg(norm(b), taps))) / len(taps)
    assert abs(loss(a, b).item() - manual.item()) < 1e-6
    assert PerceptualLoss(vgg, layers=("relu3_3",))(a, b).item() != loss(a, b).item()
    with pytest.raises(ValueError, match="relu9_9"):
        PerceptualLoss(vgg, layers=("relu9_9",))
