"""Network definitions (plain ``torch.nn``) and the safetensors weights registry.

``colorizer`` holds the pix2pix U-Net generator and PatchGAN discriminator, ``superres`` the
SRResNet generator and SRGAN discriminator, ``registry`` builds and loads them by name.
Submodules import torch; import them directly (``from astro_pipeline.models import registry``).
"""

from __future__ import annotations

__all__ = ["blocks", "colorizer", "registry", "superres"]
