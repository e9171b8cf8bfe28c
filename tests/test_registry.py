"""Weights registry: safetensors round trip with metadata, name/path lookup, refusal of pickles."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from model_helpers import random_weights

from astro_pipeline.models import registry
from astro_pipeline.models.registry import (
    WeightsFormatError,
    WeightsNotFoundError,
    build_model,
    load_weights,
    read_meta,
    save_weights,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("task,scale", [("colorize", 1), ("superres", 4)])
def test_round_trip_by_path_keeps_metadata_and_outputs(tmp_path, task, scale):
    model, meta = random_weights(task, tiny=True, seed=1)
    meta.metrics = {"psnr": 30.5}
    meta.training_data_hash = "ab" * 32
    meta.steps = 123
    path = save_weights(model, tmp_path / "m.safetensors", meta, dtype=torch.float32)
    loaded, meta2 = load_weights(path)
    assert meta2.arch == meta.arch and meta2.kwargs == meta.kwargs and meta2.task == task
    assert meta2.scale == scale and meta2.metrics == {"psnr": 30.5} and meta2.steps == 123
    assert meta2.training_data_hash == "ab" * 32
    assert len(meta2.sha256) == 64 and meta2.sha256 == meta.sha256
    assert not loaded.training
    x = torch.rand(1, 1 if task == "colorize" else 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temp file


def test_fp16_storage_is_smaller_and_close(tmp_path):
    model, meta = random_weights("superres", tiny=False, seed=0)
    p16 = save_weights(model, tmp_path / "a.safetensors", meta)
    p32 = save_weights(model, tmp_path / "b.safetensors", meta, dtype=torch.float32)
    assert p16.stat().st_size < 0.6 * p32.stat().st_size
    m16, _ = load_weights(p16)
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(m16(x), model(x), atol=5e-3, rtol=0)


def test_load_by_name_from_weights_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTRO_PIPELINE_WEIGHTS_DIR", str(tmp_path))
    model, meta = random_weights("colorize")
    save_weights(model, tmp_path / "mycolor.safetensors", meta)
    loaded, meta2 = load_weights("mycolor")
    assert meta2.name == meta.name and isinstance(loaded, type(model))


def test_missing_default_names_weights_option(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTRO_PIPELINE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="--weights"):
        load_weights("colorizer")
    with pytest.raises(WeightsNotFoundError, match="nothere.safetensors"):
        load_weights(tmp_path / "nothere.safetensors")


def test_refuses_pickles_and_torch_checkpoints(tmp_path):
    model, _ = random_weights("superres")
    pt = tmp_path / "m.pt"
    torch.save(model.state_dict(), pt)
    with pytest.raises(WeightsFormatError, match="pickle"):
        load_weights(pt)
    disguised = tmp_path / "evil.safetensors"
    disguised.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(WeightsFormatError, match=str(disguised.name)):
        load_weights(disguised)
    zipped = tmp_path / "zip.safetensors"
    zipped.write_bytes(pt.read_bytes())
    with pytest.raises(WeightsFormatError, match="pickle"):
        load_weights(zipped)


def test_loads_safetensors_whose_header_length_starts_with_a_pickle_byte(tmp_path):
    """The first byte of a safetensors file is the low byte of its header length: 0x80 (pickle's
    protocol marker) or b"PK" happen by chance; such weights are real and must load."""
    import struct

    model, meta = random_weights("superres")
    for pad in range(300):
        meta.extra = {"pad": "x" * pad}
        p = save_weights(model, tmp_path / f"w{pad}.safetensors", meta)
        if p.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length with low byte 0x80")
    assert struct.unpack("<Q", p.read_bytes()[:8])[0] % 256 == 0x80
    loaded, meta2 = load_weights(p)
    assert meta2.extra["pad"] == meta.extra["pad"] and isinstance(loaded, type(model))


def test_refuses_safetensors_without_metadata(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(WeightsFormatError, match="no astro-pipeline metadata"):
        read_meta(p)


def test_mismatched_tensors_are_a_clear_error(tmp_path):
    model, meta = random_weights("superres")
    meta.kwargs = {**meta.kwargs, "channels": 16}
    p = save_weights(model, tmp_path / "bad.safetensors", meta)
    with pytest.raises(WeightsFormatError, match="do not match SRResNet"):
        load_weights(p)


def test_build_model_unknown_arch():
    with pytest.raises(registry.WeightsError, match="unknown architecture"):
        build_model("Nope")
    meta = registry.default_meta("superres", name="x")
    back = registry.WeightsMeta.from_header(meta.to_header(), source=Path("x.safetensors"))
    assert back.kwargs == meta.kwargs == {"channels": 32, "blocks": 8, "scale": 4}  # survive the string header
    assert (back.arch, back.scale, back.tile_size) == ("SRResNet", 4, 64)
    assert json.loads(meta.to_header()["kwargs"]) == meta.kwargs


def test_random_weights_are_seeded():
    a, _ = random_weights("colorize", seed=5)
    b, _ = random_weights("colorize", seed=5)
    c, _ = random_weights("colorize", seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
