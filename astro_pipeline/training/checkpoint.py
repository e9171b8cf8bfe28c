"""Training checkpoints without pickles: tensors in safetensors, everything else in JSON.

A checkpoint holds the networks, the optimizers (tensor state in safetensors, hyper-parameters in
JSON), the step, and the torch and numpy RNG states, so a run killed at any moment (even with
SIGKILL) resumes from its last checkpoint and continues exactly as an uninterrupted run would.
Writes are atomic: the tensors file is written under a new name, then ``state.json`` is replaced
to point at it, then older tensor files are removed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from astro_pipeline.fileio import atomic_write, atomic_write_text

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_step"]


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    sd = opt.state_dict()
    plain: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        entry = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                entry[k] = v
        plain[str(idx)] = entry
    return {"param_groups": sd["param_groups"], "plain_state": plain, "indices": [str(i) for i in sd["state"]]}


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for idx in info["indices"]:
        st: dict[str, Any] = dict(info["plain_state"].get(idx, {}))
        for key, val in tensors.items():
            if key.startswith(f"{prefix}.{idx}."):
                st[key[len(prefix) + len(idx) + 2 :]] = val
        state[int(idx)] = st
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def save_checkpoint(
    directory: Path,
    *,
    step: int,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    np_rng: np.random.Generator,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint for ``step`` into ``directory`` (atomic; keeps only the newest)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        for k, v in mod.state_dict().items():
            tensors[f"module.{name}.{k}"] = v.detach().cpu().contiguous()
    opt_info = {name: _flatten_optimizer(f"optim.{name}", opt, tensors) for name, opt in optimizers.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    fname = f"state-{step:08d}.safetensors"
    atomic_write(directory / fname, lambda tmp: save_file(tensors, tmp), durable=True)
    state = {
        "step": step,
        "tensors": fname,
        "optimizers": opt_info,
        "numpy_rng": np_rng.bit_generator.state,
        "extra": extra or {},
    }
    atomic_write_text(directory / "state.json", json.dumps(state, default=str), durable=True)
    for old in directory.glob("state-*.safetensors"):
        if old.name != fname:
            old.unlink(missing_ok=True)
    return directory / "state.json"


def checkpoint_step(directory: Path) -> int | None:
    """Step of the checkpoint in ``directory``, or None when there is none."""
    path = directory / "state.json"
    if not path.is_file():
        return None
    return int(json.loads(path.read_text())["step"])


def load_checkpoint(
    directory: Path,
    *,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    np_rng: np.random.Generator,
) -> tuple[int, dict[str, Any]]:
    """Restore modules, optimizers and RNGs in place; returns (step, extra)."""
    from safetensors.torch import load_file

    state = json.loads((directory / "state.json").read_text())
    tensors = load_file(str(directory / state["tensors"]))
    for name, mod in modules.items():
        pre = f"module.{name}."
        mod.load_state_dict({k[len(pre) :]: v for k, v in tensors.items() if k.startswith(pre)}, strict=True)
    for name, opt in optimizers.items():
        _restore_optimizer(f"optim.{name}", opt, state["optimizers"][name], tensors)
    torch.set_rng_state(tensors["rng.torch"])
    np_rng.bit_generator.state = state["numpy_rng"]
    return int(state["step"]), state.get("extra", {})
