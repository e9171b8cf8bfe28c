"""Inference engine: lightness kept, batch/tile-order invariance, precision choice and fallbacks, OOM halving."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from model_helpers import random_weights

from astro_pipeline.color import lightness, lightness_from_grey, srgb_to_lab
from astro_pipeline.inference import (
    Engine,
    colorize_display,
    colorize_lightness,
    cpu_supports_bf16,
    lab_to_srgb_keep_lightness,
    resolve_device,
    resolve_precision,
    upscale_display,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _grey(h=70, w=90, seed=0):
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    img = 0.5 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + 0.1 * rng.random((h, w))
    return np.clip(img, 0, 1).astype(np.float32)


def _engine(task, **kw):
    model, meta = random_weights(task, tiny=True, seed=1)
    return Engine(model, meta, device="cpu", precision=kw.pop("precision", "fp32"), **kw)


def test_colorize_keeps_input_lightness():
    grey = _grey()
    model, meta = random_weights("colorize", tiny=True, seed=1)
    with torch.no_grad():  # random heads predict almost no chroma: make it vivid, to test the gamut path
        model.head.weight.mul_(3000.0)
    eng = Engine(model, meta, device="cpu", precision="fp32", batch_size=3)
    rgb = colorize_display(eng, grey)
    chroma = np.hypot(*np.moveaxis(srgb_to_lab(rgb.astype(np.float64))[..., 1:], -1, 0))
    assert np.median(chroma) > 5
    assert rgb.shape == (70, 90, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0 and rgb.max() <= 1
    err = np.abs(lightness(rgb.astype(np.float64)) - lightness_from_grey(grey.astype(np.float64)))
    assert err.max() < 0.5


def test_gamut_mapping_keeps_lightness_for_extreme_chroma():
    rng = np.random.default_rng(2)
    L = rng.uniform(0, 100, (40, 50))
    ab = rng.uniform(-128, 128, (40, 50, 2))
    rgb = lab_to_srgb_keep_lightness(L, ab)
    assert np.abs(lightness(rgb.astype(np.float64)) - L).max() < 0.5
    lab = srgb_to_lab(rgb.astype(np.float64))
    # chroma survives (reduced, not zeroed) and the hue is kept where chroma is visible
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    assert np.median(chroma) > 10
    strong = chroma > 20
    hue_in = np.arctan2(ab[..., 1], ab[..., 0])[strong]
    hue_out = np.arctan2(lab[..., 2], lab[..., 1])[strong]
    dh = np.angle(np.exp(1j * (hue_out - hue_in)))
    assert np.median(np.abs(dh)) < 0.15


def test_colorize_from_colour_lightness_and_scale_check():
    eng = _engine("colorize")
    L = np.linspace(0, 100, 64 * 40).reshape(40, 64)
    rgb = colorize_lightness(eng, L)
    assert np.abs(lightness(rgb.astype(np.float64)) - L).max() < 0.5
    up = _engine("superres")
    with pytest.raises(ValueError, match="scale 1"):
        colorize_lightness(up, L)


@pytest.mark.parametrize("task", ["colorize", "superres"])
def test_batch_size_and_tile_order_invariance(task):
    img = _grey(83, 101, seed=3) if task == "superres" else _grey(150, 170, seed=3) * 2 - 1
    ref = _engine(task, batch_size=1).run(img)
    big = _engine(task, batch_size=7)
    out_b = big.run(img)
    order = np.random.default_rng(4).permutation(big.stats.tiles)
    out_o = big.run(img, order=order)
    assert big.stats.tiles == len(order) > 4
    np.testing.assert_allclose(out_b, ref, atol=2e-5)
    np.testing.assert_allclose(out_o, ref, atol=2e-5)
    assert big.stats.batches == -(-big.stats.tiles // 7)


def test_upscale_shapes_tiny_and_odd_images_and_memmap(tmp_path):
    eng = _engine("superres", batch_size=4)
    for shape in [(1, 1), (5, 3), (33, 47), (20, 20, 3)]:
        img = np.random.default_rng(5).random(shape).astype(np.float32)
        out = upscale_display(eng, img)
        assert out.shape == (shape[0] * 4, shape[1] * 4, 3)
        assert out.min() >= 0 and out.max() <= 1
    img = _grey(40, 52)
    mm = np.lib.format.open_memmap(tmp_path / "o.npy", mode="w+", dtype=np.float32, shape=(160, 208, 3))
    np.save(tmp_path / "i.npy", img)
    src = np.load(tmp_path / "i.npy", mmap_mode="r")  # read-only memmapped input, pages released as rows finish
    res = upscale_display(eng, src, out=mm)
    assert res is mm
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), upscale_display(eng, img), atol=1e-6)
    assert np.array_equal(np.asarray(src), img)


def test_upscale_roughly_follows_input():
    # SRResNet has a bicubic global skip and tiny random residuals: output ~ bicubic upsampling
    img = _grey(32, 32)
    out = upscale_display(_engine("superres"), img)
    blocks = out.mean(axis=2).reshape(32, 4, 32, 4).mean(axis=(1, 3))
    assert np.abs(blocks - img).mean() < 0.05


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_supports_bf16() else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", cpu)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_bf16_path_close_to_fp32():
    img = _grey(48, 48)
    ref = _engine("superres").run(img)
    eng = _engine("superres", precision="bf16")
    assert eng.precision == "bf16" and eng.channels_last
    out = eng.run(img)
    assert np.abs(out - ref).max() < 0.05


class _NanInLowPrecision(nn.Module):
    """A stand-in whose low-precision path overflows (like fp16 NaN/black-image reports)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.conv(x)
        if y.dtype != torch.float32:
            y = y * float("nan")
        return y


class _OomAboveTwo(nn.Module):
    """Raises CUDA OOM for batches larger than two (the engine must halve and retry)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return x * 2


def _meta(**kw):
    base = {"task": "superres", "tile_size": 16, "scale": 1, "kwargs": {"in_channels": 3}}
    base.update(kw)
    return SimpleNamespace(**base)


def test_nan_in_low_precision_falls_back_to_fp32():
    eng = Engine(_NanInLowPrecision(), _meta(), device="cpu", precision="bf16", batch_size=4)
    out = eng.run(np.random.default_rng(0).random((30, 30, 3)).astype(np.float32))
    assert np.isfinite(out).all()
    assert eng.precision == "fp32"
    assert any("switched to fp32" in f for f in eng.stats.fallbacks)


def test_out_of_memory_halves_batch():
    model = _OomAboveTwo()
    eng = Engine(model, _meta(), device="cpu", precision="fp32", batch_size=8)
    img = np.random.default_rng(0).random((50, 50, 3)).astype(np.float32)
    out = eng.run(img)
    np.testing.assert_allclose(out, img * 2, atol=1e-6)
    assert eng.batch_size == 2
    assert max(model.seen[1:]) <= 4
    assert any("halved" in f for f in eng.stats.fallbacks)


def test_bad_inputs():
    eng = _engine("superres")
    with pytest.raises(ValueError, match="expected an"):
        eng.run(np.zeros((4,), np.float32))
    with pytest.raises(ValueError, match="channels"):
        eng.run(np.zeros((8, 8, 2), np.float32))
    with pytest.raises(ValueError, match="permutation"):
        eng.run(np.zeros((8, 8), np.float32), order=[0, 0])


def test_benchmark_imports_without_astropy_prefect_playwright(tmp_path):
    """benchmarks/bench_inference.py must run on a bare GPU box: only torch, numpy and our engine modules."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_inference.py"
    code = f"""
import sys
for name in ("astropy", "prefect", "playwright", "pandas", "pydantic_settings"):
    sys.modules[name] = None  # any import of these now fails
import importlib.util, json
spec = importlib.util.spec_from_file_location("bench", {str(bench)!r})
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
import torch
torch.set_num_threads(1)
from astro_pipeline.models.registry import build_model
flops = bench.model_flops_per_tile(build_model("SRResNet", channels=4, blocks=1, scale=4), 3, 16)
child = bench.rss_child(48, {str(tmp_path)!r}, 16, 4)
print(json.dumps({{"flops": flops, "check": child["check"], "tiles": child["tiles"]}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["flops"] > 0 and out["check"] is True and out["tiles"] >= 4
