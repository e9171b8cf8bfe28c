"""Evaluation figures: labelled contact sheets per case, image strips and loss curves (PNG, atomic)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from astro_pipeline.fileio import atomic_write_bytes

__all__ = ["to_uint8", "write_strip", "write_contact_sheet", "write_labelled_sheet", "plot_loss_curve"]

_LABEL_H = 14


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) uint8."""
    return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def _png(arr: np.ndarray, path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return atomic_write_bytes(path, buf.getvalue())


def write_strip(images: list[torch.Tensor], path: Path) -> Path:
    """Side-by-side PNG of same-sized (1,3,H,W) images."""
    return _png(np.concatenate([to_uint8(x[0]) for x in images], axis=1), path)


def write_contact_sheet(sheet: dict[str, list[torch.Tensor]], path: Path, *, rows_per_task: int = 2) -> Path:
    """Rows of input | baseline | model | truth for the first crops of each task."""
    rows = []
    for _name, cols in sheet.items():
        n = min(rows_per_task, len(cols[0]))
        for i in range(n):
            rows.append(np.concatenate([to_uint8(c[i]) for c in cols], axis=1))
    return _png(np.concatenate(rows, axis=0), path)


def _thumb(x: torch.Tensor, size: int) -> np.ndarray:
    arr = to_uint8(x)
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.LANCZOS))


def write_labelled_sheet(columns: list[tuple[str, torch.Tensor]], indices: list[int], path: Path, *, thumb: int = 128,
                         title: str | None = None) -> Path:
    """A contact sheet: one column per (label, images (N, 3, H, W)), one row per index in ``indices``,
    a label above each column (and an optional title line). Thumbnails are ``thumb`` px squares."""
    gap = 2
    w = len(columns) * (thumb + gap) - gap
    top = _LABEL_H * (2 if title else 1)
    h = top + len(indices) * (thumb + gap) - gap
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((2, 1), title, fill=(0, 0, 0))
    for j, (label, imgs) in enumerate(columns):
        x0 = j * (thumb + gap)
        draw.text((x0 + 2, top - _LABEL_H + 1), label[: max(4, thumb // 6)], fill=(0, 0, 0))
        for r, i in enumerate(indices):
            canvas.paste(Image.fromarray(_thumb(imgs[i], thumb)), (x0, top + r * (thumb + gap)))
    return _png(np.asarray(canvas), path)


def plot_loss_curve(log_path: Path, out_path: Path, *, title: str) -> Path | None:
    """One PNG with each logged loss against step (log y where positive)."""
    if not log_path.is_file():
        return None
    rows = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln.strip()]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows[0] if k not in ("step", "lr", "seconds")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, k in zip(axes[0], keys, strict=True):
        ax.plot(steps, [r.get(k) for r in rows], lw=1)
        ax.set_title(f"{title}: {k}")
        ax.set_xlabel("step")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return atomic_write_bytes(out_path, buf.getvalue())
