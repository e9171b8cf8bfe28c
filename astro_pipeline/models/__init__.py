"""Network definitions (plain ``torch.nn``) and the safetensors weights registry.

``colorizer`` holds the pix2pix U-Net generator and PatchGAN discriminator, ``bandcolor`` the
band-aware colour model (any subset of the B, G, R slots or lightness alone, frozen VGG16 encoder,
frame context), ``superres`` the SRResNet generator and SRGAN discriminator, ``registry`` builds
and loads them by name.
Submodules import torch; import them directly (``from astro_pipeline.models import registry``).
"""

from __future__ import annotations

__all__ = ["bandcolor", "blocks", "colorizer", "registry", "superres"]
