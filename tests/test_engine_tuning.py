"""Batch size and memory format chosen by measurement, cached per machine and load class."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from astro_pipeline import engine_tuning
from astro_pipeline.inference import Engine


class _Timed(nn.Module):
    """Identity whose cost per call is ``fixed + per_tile * n**power`` seconds (a controllable 'model')."""

    def __init__(self, fixed: float, per_tile: float, power: float = 1.0) -> None:
        super().__init__()
        self.fixed, self.per_tile, self.power = fixed, per_tile, power
        self.conv = nn.Conv2d(3, 3, 1)  # a parameter, so memory formats and the cache key apply
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(self.fixed + self.per_tile * x.shape[0] ** self.power)
        return x


def _meta():
    return SimpleNamespace(task="superres", tile_size=8, scale=1, kwargs={"in_channels": 3}, name="t", version="0")


@pytest.fixture(autouse=True)
def _fresh_memo():
    engine_tuning._MEMO.clear()
    yield
    engine_tuning._MEMO.clear()


def _choose(model, cache=None):
    return engine_tuning.choose(model, in_channels=3, tile=8, device=torch.device("cpu"), precision="fp32",
                                batches=(1, 4, 16), cache=cache, rounds=2)


def test_per_call_overhead_makes_batching_win():
    # 20 ms per call, 0.2 ms per tile: one tile at a time is ~10x slower than batches of 16
    choice = _choose(_Timed(0.02, 0.0002))
    assert choice.batch_size == 16
    assert choice.tiles_per_s["b16/contiguous"] > 3 * choice.tiles_per_s["b1/contiguous"]
    assert choice.source == "measured"


def test_cost_growing_with_batch_makes_batch_one_win():
    # per-tile cost grows with the batch (like activations spilling out of cache): batch 1 is best.
    # Costs are milliseconds, well above sleep/scheduling latency on a loaded machine.
    choice = _choose(_Timed(0.0, 0.002, power=2.0))
    assert choice.batch_size == 1
    assert choice.gain_over(16, "contiguous") > 3


def test_choice_is_cached_per_machine_and_reused_without_measuring(tmp_path):
    cache = tmp_path / "calib" / engine_tuning.CALIBRATION_FILE
    model = _Timed(0.0, 0.002, power=2.0)
    first = _choose(model, cache)
    data = json.loads(cache.read_text())
    assert list(data) == [first.key]
    assert data[first.key]["batch_size"] == 1 and data[first.key]["load_class"] in ("quiet", "busy")
    engine_tuning._MEMO.clear()  # a new process: only the file remains
    calls = model.calls
    again = _choose(model, cache)
    assert model.calls == calls  # nothing was timed
    assert again.source == "cache" and again.label() == first.label()


def test_corrupt_cache_is_measured_again(tmp_path):
    cache = tmp_path / engine_tuning.CALIBRATION_FILE
    cache.write_text("{not json")
    model = _Timed(0.0, 0.002, power=2.0)
    choice = _choose(model, cache)
    assert choice.source == "measured" and model.calls > 0
    assert json.loads(cache.read_text())[choice.key]["batch_size"] == 1


def test_key_changes_with_the_model_and_the_load_class(monkeypatch):
    dev = torch.device("cpu")
    kw = dict(in_channels=3, tile=8, device=dev, precision="fp32", batches=(1, 4), formats=("contiguous",))
    a = engine_tuning._key(_Timed(0, 0), load="quiet", **kw)
    b = engine_tuning._key(nn.Sequential(nn.Conv2d(3, 5, 1)), load="quiet", **kw)
    c = engine_tuning._key(_Timed(0, 0), load="busy", **kw)
    assert len({a, b, c}) == 3
    monkeypatch.setattr(engine_tuning.os, "getloadavg", lambda: (99.0, 0.0, 0.0))
    assert engine_tuning.load_class(dev) == "busy"
    monkeypatch.setattr(engine_tuning.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert engine_tuning.load_class(dev) == "quiet"


def test_engine_auto_uses_the_calibrated_choice_and_records_it(tmp_path):
    cache = tmp_path / engine_tuning.CALIBRATION_FILE
    model = _Timed(0.02, 0.0002)
    eng = Engine(model, _meta(), device="cpu", precision="fp32", batch_size="auto", calibration_cache=cache)
    assert eng.batch_size == 16 and cache.is_file()
    out = eng.run(np.random.default_rng(0).random((40, 40, 3)).astype(np.float32))
    assert out.shape == (40, 40, 3)
    d = eng.describe()
    assert d["batch_size"] == 16 and d["calibration"]["choice"] == f"b16/{eng.memory_format}"
    assert eng.stats.as_dict()["memory_format"] == eng.memory_format


def test_engine_fixed_batch_is_respected_and_bad_values_refused():
    eng = Engine(_Timed(0, 0), _meta(), device="cpu", precision="fp32", batch_size=3)
    assert eng.batch_size == 3 and eng.choice is None and eng.memory_format == "channels_last"
    eng = Engine(_Timed(0, 0), _meta(), device="cpu", precision="fp32", batch_size=2, memory_format="contiguous")
    assert eng.memory_format == "contiguous" and not eng.channels_last
    with pytest.raises(ValueError, match="batch_size"):
        Engine(_Timed(0, 0), _meta(), device="cpu", batch_size="many")
    with pytest.raises(ValueError, match="memory_format"):
        Engine(_Timed(0, 0), _meta(), device="cpu", batch_size=1, memory_format="nhwc")


def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_inference.py"
    spec = importlib.util.spec_from_file_location("bench_inference_for_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _diag(total, threads, load):
    segs = ["body", "tail.0 Conv2d"]
    seg_ms = {c: {"body": v * 0.4, "tail.0 Conv2d": v * 0.6} for c, v in total.items()}
    return {"batches": (1, 4, 16), "formats": ("contiguous", "channels_last"), "total_ms": total, "seg_ms": seg_ms,
            "segments": segs, "thread_ms": threads, "load": load, "cores": 2, "l3": 32 * 2**20,
            "traffic": {"largest": 16 * 2**20, "largest_layer": "tail.0 Conv2d: (32, 256, 256) -> (32, 256, 256)"}}


def test_diagnosis_reading_follows_the_numbers():
    """Quiet machine (measured 2026-12-01, load ~1): batch 1 wins on memory; loaded (load ~9):
    batch 16 wins because more threads are slower. The words must follow the numbers."""
    bench = _bench()
    quiet = {(1, "contiguous"): 38.7, (4, "contiguous"): 59.6, (16, "contiguous"): 69.3,
             (1, "channels_last"): 32.9, (4, "channels_last"): 41.2, (16, "channels_last"): 42.2}
    text = bench.diagnosis_reading(_diag(quiet, {}, 1.0))
    assert "fastest is b1 CL" in text and "Batch 1 wins" in text and "from batch 3 up" in text
    assert "channels_last beats NCHW at every batch" in text
    loaded = {(1, "contiguous"): 1104.5, (4, "contiguous"): 605.9, (16, "contiguous"): 421.1,
              (1, "channels_last"): 655.3, (4, "channels_last"): 462.4, (16, "channels_last"): 238.3}
    threads = {(1, 1, "channels_last"): 271.1, (2, 1, "channels_last"): 916.7, (1, 16, "channels_last"): 244.1,
               (2, 16, "channels_last"): 388.3, (1, 1, "contiguous"): 211.1, (2, 1, "contiguous"): 1478.2,
               (1, 16, "contiguous"): 373.3, (2, 16, "contiguous"): 523.1}
    text = bench.diagnosis_reading(_diag(loaded, threads, 9.0))
    assert "fastest is b16 CL" in text and "more threads are slower" in text and "Batch 1 wins" not in text
    assert "1 thread(s) at b1 NCHW" in text
