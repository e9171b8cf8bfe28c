"""Weights registry: safetensors files whose header metadata says how to rebuild the network.

Like torchvision's weight enums, each file carries its architecture and keyword arguments, task,
colour space, tile size, scale, training-data hash, steps and validation metrics. Loading is by
name (``Settings.weights_dir/<name>.safetensors``) or by path. Pickle-based formats (.pt, .pth,
.ckpt, .pkl, .bin) are refused: ``torch.load`` is never called.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from astro_pipeline.fileio import atomic_write, sha256_file
from astro_pipeline.models.bandcolor import BandColorizer, PlaneDiscriminator
from astro_pipeline.models.colorizer import PatchDiscriminator, UNetColorizer
from astro_pipeline.models.superres import SRDiscriminator, SRResNet

__all__ = [
    "ARCHITECTURES",
    "WeightsMeta",
    "WeightsError",
    "WeightsNotFoundError",
    "WeightsFormatError",
    "build_model",
    "load_weights",
    "read_meta",
    "save_weights",
    "resolve_weights_path",
]

#: Architecture name -> class. A new network is one new module plus one entry here.
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "UNetColorizer": UNetColorizer,  # the first colorizer: catalog records name it, so it stays loadable
    "PatchDiscriminator": PatchDiscriminator,
    "BandColorizer": BandColorizer,
    "PlaneDiscriminator": PlaneDiscriminator,
    "SRResNet": SRResNet,
    "SRDiscriminator": SRDiscriminator,
}

_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar"}
_META_FORMAT = "astro-pipeline-weights/1"


class WeightsError(Exception):
    """A weights file could not be used (message names the file and the problem)."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No weights at the given name or path."""


class WeightsFormatError(WeightsError, ValueError):
    """The file is not a safetensors file with astro-pipeline metadata (e.g. a pickle)."""


@dataclass
class WeightsMeta:
    """What a weights file says about itself (stored as strings in the safetensors header)."""

    name: str
    version: str
    arch: str
    kwargs: dict[str, Any]
    task: str  # "colorize" | "superres"
    color_space: str  # "lab" (L/50-1 -> ab/110) | "srgb" (display values in [0, 1]) | "bands+lab" (BandColorizer)
    tile_size: int  # input pixels per tile side
    scale: int  # 1 (colorize) or 4 (superres)
    training_data_hash: str = ""
    steps: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""  # of the file; filled in on load (a file cannot contain its own hash)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_header(self) -> dict[str, str]:
        """Flatten to the str -> str mapping safetensors stores."""
        d = asdict(self)
        d.pop("sha256")
        out = {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)) for k, v in d.items()}
        out["format"] = _META_FORMAT
        return out

    @classmethod
    def from_header(cls, header: dict[str, str], *, source: Path, sha256: str = "") -> WeightsMeta:
        """Parse a safetensors header written by :meth:`to_header`."""
        if header.get("format") != _META_FORMAT:
            raise WeightsFormatError(
                f"{source}: safetensors file has no astro-pipeline metadata (format={header.get('format')!r})"
            )
        try:
            return cls(
                name=header["name"],
                version=header["version"],
                arch=header["arch"],
                kwargs=json.loads(header["kwargs"]),
                task=header["task"],
                color_space=header["color_space"],
                tile_size=int(header["tile_size"]),
                scale=int(header["scale"]),
                training_data_hash=header.get("training_data_hash", ""),
                steps=int(header.get("steps", "0")),
                metrics=json.loads(header.get("metrics", "{}")),
                extra=json.loads(header.get("extra", "{}")),
                sha256=sha256,
            )
        except (KeyError, ValueError) as exc:
            raise WeightsFormatError(f"{source}: bad weights metadata ({exc})") from exc


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Instantiate a registered architecture with keyword arguments."""
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise WeightsError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}") from None
    return cls(**kwargs)


def resolve_weights_path(name_or_path: str | Path, *, weights_dir: str | Path | None = None) -> Path:
    """A weights name (``colorizer``) -> ``weights_dir/colorizer.safetensors``; a path -> itself.

    ``weights_dir`` defaults to the process settings' (kept for the training commands, which pass names).
    """
    text = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or "/" in text or os.sep in text or "." in Path(text).name
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.exists():
            raise WeightsNotFoundError(f"{path}: weights file not found (pass an existing file with --weights)")
        return path
    if weights_dir is None:
        from astro_pipeline.config import get_settings

        weights_dir = get_settings().weights_dir
    path = Path(weights_dir) / f"{text}.safetensors"
    if not path.exists():
        raise WeightsNotFoundError(
            f"{path}: default weights {text!r} are not installed; train them (`astro-pipeline train`) "
            f"or pass --weights NAME|PATH"
        )
    return path


def _check_safetensors(path: Path) -> None:
    """Refuse pickles and anything that is not a safetensors file, before parsing it."""
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise WeightsFormatError(
            f"{path}: refusing to load a pickle-based checkpoint ({path.suffix}); "
            "only .safetensors weights are accepted (pickles can run arbitrary code)"
        )
    with open(path, "rb") as fh:
        head = fh.read(16)
    # safetensors: a little-endian u64 header length, then the JSON header. Its first byte is the
    # length's low byte, so it can be 0x80 or b"P" by chance: test the layout before the magic.
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size:
        return
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
        raise WeightsFormatError(f"{path}: this is a pickle/zip torch checkpoint; only .safetensors weights are accepted")
    raise WeightsFormatError(f"{path}: not a safetensors file")


def read_meta(path: str | Path, *, weights_dir: str | Path | None = None) -> WeightsMeta:
    """Read only the metadata of a weights file or name (fast; no tensors loaded)."""
    from safetensors import SafetensorError, safe_open

    path = resolve_weights_path(path, weights_dir=weights_dir)
    _check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsFormatError(f"{path}: unreadable safetensors file ({exc})") from exc
    return WeightsMeta.from_header(header, source=path, sha256=sha256_file(path))


def load_weights(name_or_path: str | Path, *, device: str | torch.device = "cpu",
                 weights_dir: str | Path | None = None, strict: bool = True) -> tuple[nn.Module, WeightsMeta]:
    """Build the network named in the file's metadata and load its tensors (as float32, eval mode).

    ``strict=False`` leaves tensors the file lacks at their initial values (a warm start into a
    grown architecture).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_weights_path(name_or_path, weights_dir=weights_dir)
    meta = read_meta(path)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsFormatError(f"{path}: unreadable safetensors file ({exc})") from exc
    model = build_model(meta.arch, **meta.kwargs)
    state = {k: v.to(torch.float32) for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise WeightsFormatError(f"{path}: tensors do not match {meta.arch}({meta.kwargs}): {exc}") from exc
    model.eval()
    model.requires_grad_(False)
    return model.to(device), meta


def save_weights(model: nn.Module, path: str | Path, meta: WeightsMeta, *, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``model``'s state dict (stored as ``dtype``) with ``meta`` in the header, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta.to_header()))
    meta.sha256 = sha256_file(path)
    return path


#: Shipping configurations (what `astro-pipeline train` builds by default).
_FULL = {
    "colorize": ("UNetColorizer", {"base_channels": 32, "depth": 4, "chroma_scale": 1, "input_scale": 4}, 256),
    "superres": ("SRResNet", {"channels": 32, "blocks": 8, "scale": 4}, 64),
}


def default_meta(task: str, *, name: str, version: str = "0.0.0") -> WeightsMeta:
    """The metadata (arch, kwargs, colour space, tile, scale) of a task's shipping configuration."""
    if task not in _FULL:
        raise WeightsError(f"unknown task {task!r}; known: {sorted(_FULL)}")
    arch, kwargs, tile = _FULL[task]
    return WeightsMeta(
        name=name,
        version=version,
        arch=arch,
        kwargs=dict(kwargs),
        task=task,
        color_space="lab" if task == "colorize" else "srgb",
        tile_size=tile,
        scale=1 if task == "colorize" else int(kwargs["scale"]),
    )
