"""Band-colour training on a tiny folder: feature cache (resumable), head training, checkpoint resume,
weights that load through the registry, and the dev read-out tuning. Needs the shared VGG16 file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from astro_pipeline.config import shared_dir
from astro_pipeline.models.bandcolor import BandColorizer
from astro_pipeline.models.registry import load_weights
from astro_pipeline.training.bandcache import CASES, CacheSpec, build_cache, build_dev_set, open_cache
from astro_pipeline.training.bandrun import package, tune_readout
from astro_pipeline.training.bandtrain import BandRecipe, train_bandcolor

VGG = shared_dir() / "data" / "perceptual" / "vgg16_features_lpips.safetensors"
pytestmark = [pytest.mark.skipif(not VGG.is_file(), reason=f"shared VGG16 weights absent at {VGG}"),
              pytest.mark.usefixtures("one_torch_thread")]
TINY = {"width": 16, "mid_width": 8, "fine_width": 4, "context_dim": 8}
SPEC = CacheSpec(crop=64, variants_per_image=2, crops_per_variant=2, dev_fraction=0.5, dev_crops_per_image=1)


def _folder(root: Path, n: int = 10, size: int = 96) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    rows = []
    for i in range(n):
        img = np.zeros((size, size, 3))
        for _ in range(4):
            cy, cx, r = rng.uniform(10, size - 10, 2).tolist() + [rng.uniform(6, 20)]
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None] * rng.uniform(0.2, 1.0, 3)
        name = f"rel{i:02d}a.png"
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / name)
        rows.append({"file": name, "release": f"rel{i:02d}"})
    with open(root / "CREDITS.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "release"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_cache_train_resume_and_package(tmp_path):
    src = [f"folder:{_folder(tmp_path / 'imgs')}"]
    cache = tmp_path / "cache"
    assert build_dev_set(cache, vgg_path=VGG, sources=src, spec=SPEC) is not None
    build_cache(cache, vgg_path=VGG, sources=src, spec=SPEC)
    c = open_cache(cache)
    assert c.n_ready == len(c.spec["fit_images"]) * 2 * 2 and c.f3.shape[1:] == (256, 4, 4) and c.f4.shape[1:] == (512, 2, 2)
    assert c.ab_prior is not None and c.ab_prior.sum() == pytest.approx(1.0)
    assert set(c.spec["dev_groups"]).isdisjoint(c.spec["fit_groups"])
    assert build_cache(cache, vgg_path=VGG, sources=src, spec=SPEC) == cache  # complete: nothing redone
    with pytest.raises(ValueError, match="another spec"):
        build_cache(cache, vgg_path=VGG, sources=src, spec=CacheSpec(crop=64, variants_per_image=3))

    recipe = BandRecipe(arch_kwargs=dict(TINY), batch_size=4, checkpoint_every=2, log_every=1, dev_every=3, dev_limit=2,
                        fine_window=32, warmup=2, gan_from=0.5, lambda_adv=0.1, dev_temperatures=(0.5,),
                        disc_kwargs={"in_channels": 4, "base_channels": 8, "n_layers": 1})
    run = tmp_path / "run"
    train_bandcolor(cache_dir=cache, run_dir=run, steps=2, vgg_path=VGG, recipe=recipe, seed=3)
    p = train_bandcolor(cache_dir=cache, run_dir=run, steps=4, vgg_path=VGG, recipe=recipe, seed=3)  # resumes at 2
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and "adv" in rows[-1]  # the GAN phase ran
    dev = [json.loads(x) for x in (run / "dev.jsonl").read_text().splitlines()]
    assert set(dev[-1]) >= {"step", *CASES}
    model, meta = load_weights(p)
    assert isinstance(model, BandColorizer) and meta.steps == 4
    assert torch.count_nonzero(model.log_rebalance) > 0  # the rebalancing weights travel with the model

    choice = tune_readout(model, cache / "dev.npz", alphas=(0.0, 1.0), temperatures=(0.5, 1.0))
    cand = package(p, tmp_path / "cand.safetensors", choice=choice, sky_lightness=12.5)
    m2, meta2 = load_weights(cand)
    assert meta2.extra["sky_lightness"] == 12.5 and "VGG16" in meta2.extra["encoder_credit"]
    assert m2.temperature == choice.temperature and meta2.kwargs["prior_correction"] == choice.prior_correction
