"""Which way should a field's colour product go through the 4x SR model: per channel, or as one RGB image?

A field product is an RGB image composed from real bands. The SR model was trained on colour
images, so it can take the RGB at once; or each channel can go through it alone, as a grey
image (the model replicates grey to its three inputs, and the three outputs are averaged back
to one channel). This measures which keeps colour better, on validation crops of the held-out
ESA releases (the model never trained on them), beside bicubic 4x on the same crops:

* LR = the truth reduced 4x (Pillow antialiased bicubic, as in ``training/evaluate.py``);
* outputs through the product path (``inference.upscale_display`` on the shipped engine),
  quantised to 8 bits as products are;
* CIEDE76 against the truth (colour and lightness), the a*b* error alone (colour only), the
  chroma ratio (1 = as colourful as the truth) and PSNR (RGB).

    python benchmarks/field_sr_colour.py [--weights weights/superres.safetensors] [--per-image 2] [--out DIR]

Writes ``field_sr_colour.csv`` and ``field_sr_colour.md`` to ``--out`` (default ``docs/evaluation``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from astro_pipeline.config import Settings  # noqa: E402
from astro_pipeline.engines import load_engine  # noqa: E402
from astro_pipeline.inference import upscale_display  # noqa: E402
from astro_pipeline.training import metrics as M  # noqa: E402
from astro_pipeline.training.colorspace import srgb_to_lab  # noqa: E402
from astro_pipeline.training.datasets import downscale_bicubic  # noqa: E402
from astro_pipeline.training.evaluate import validation_crops  # noqa: E402


def _bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    from PIL import Image

    h, w = lr.shape[:2]
    arr = (np.clip(lr, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.asarray(Image.fromarray(arr).resize((w * scale, h * scale), Image.Resampling.BICUBIC),
                      dtype=np.float32) / 255.0


def _ab_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (srgb_to_lab(x.double())[:, 1:] - srgb_to_lab(y.double())[:, 1:]).pow(2).sum(1).sqrt().mean(dim=(1, 2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=ROOT / "weights" / "superres.safetensors")
    ap.add_argument("--per-image", type=int, default=2, help="crops per validation image")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "evaluation")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    truth, groups = validation_crops(["hubble"], crop=args.crop, per_image=args.per_image, seed=0)
    hr8 = (truth.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    lr = np.stack([downscale_bicubic(h, 4) for h in hr8]).astype(np.float32) / 255.0
    engine = load_engine(args.weights, task="superres", settings=Settings())
    outs: dict[str, list[np.ndarray]] = {"bicubic": [], "sr_rgb": [], "sr_per_channel": []}
    seconds = {k: 0.0 for k in outs}
    for img in lr:
        t0 = time.perf_counter()
        outs["bicubic"].append(_bicubic_up(img, 4))
        t1 = time.perf_counter()
        outs["sr_rgb"].append(upscale_display(engine, img))
        t2 = time.perf_counter()
        outs["sr_per_channel"].append(np.stack([upscale_display(engine, img[..., c]).mean(axis=-1)
                                                for c in range(3)], axis=-1))
        t3 = time.perf_counter()
        seconds["bicubic"] += t1 - t0
        seconds["sr_rgb"] += t2 - t1
        seconds["sr_per_channel"] += t3 - t2
    rows = []
    for name, images in outs.items():
        x = M.quantize8(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float())
        rows.append({"method": name, "ciede76": float(M.ciede76(x, truth).mean()),
                     "ab_error": float(_ab_error(x, truth).mean()), "chroma_ratio": M.chroma_ratio(x, truth),
                     "psnr_rgb": float(M.psnr(x, truth).mean()), "seconds": seconds[name]})
    args.out.mkdir(parents=True, exist_ok=True)
    cols = ["method", "ciede76", "ab_error", "chroma_ratio", "psnr_rgb", "seconds"]
    csv = "\n".join([",".join(cols)] + [",".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c])
                                                  for c in cols) for r in rows]) + "\n"
    (args.out / "field_sr_colour.csv").write_text(csv)
    cpu = platform.processor() or platform.machine()
    md = [f"# SR of a colour product: per channel or on the RGB ({len(truth)} validation crops of {args.crop} px, "
          f"{len(groups)} held-out releases)", "",
          f"Weights: `{args.weights.name}`; CPU: {cpu}, {torch.get_num_threads()} threads (shared machine).", "",
          "| method | CIEDE76 | a*b* error | chroma ratio | PSNR RGB (dB) | seconds |", "|---|---|---|---|---|---|"]
    md += [f"| {r['method']} | {r['ciede76']:.3f} | {r['ab_error']:.3f} | {r['chroma_ratio']:.3f} | "
           f"{r['psnr_rgb']:.2f} | {r['seconds']:.1f} |" for r in rows]
    (args.out / "field_sr_colour.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
