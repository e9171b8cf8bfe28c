"""What ``colorize`` / ``upscale`` / ``enhance`` give back in a notebook: the image, its linear data and WCS.

A :class:`Result` wraps one rendered frame (``products.process.Rendered``) and the frame it came
from. Nothing is written until :meth:`Result.save`, which calls the same writer as the CLI and the
sweep (``products.process.save_products``), which names the files (``products.naming``) and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from astro_pipeline.ingest.frame import Frame, QualityReport, StretchParams
from astro_pipeline.products.process import Rendered
from astro_pipeline.products.types import ModelRecord, Operation, Product, ProductFile, ProductStatus

if TYPE_CHECKING:  # pragma: no cover
    from astropy.wcs import WCS

__all__ = ["Result"]


@dataclass(eq=False, kw_only=True)
class Result:
    """One processed frame, in memory.

    * ``image``: the display result, (H, W, 3) float32 in [0, 1] (4x larger for upscale/enhance);
    * ``data``: the linear result where one exists, the flux-conserving 4x image of an ``upscale``
      of science data (each 4x4 block's mean is the input pixel; NaN where the input was masked),
      else None;
    * ``wcs``: the input's celestial WCS scaled to ``image`` (CD/4, CRPIX' = 4 CRPIX - 1.5 for 4x),
      else None;
    * ``quality`` (metrics and flags with values and thresholds), ``stretch`` (the recorded display
      stretch of the input), ``models`` (name, version, sha256, architecture of each model run);
    * ``save(path_or_dir)``: the CLI's product files; returns them by kind with their sha256.
    """

    operation: Operation
    image: np.ndarray
    data: np.ndarray | None
    wcs: WCS | None
    quality: QualityReport
    stretch: StretchParams
    models: tuple[ModelRecord, ...]
    colorized: np.ndarray | None  # enhance: the same-size colour step
    metrics: dict[str, float]
    params: dict[str, Any]
    frame: Frame  # the input frame (data, mask, header, provenance)
    source: Path | None  # the input file, None for in-memory data
    name: str  # product name for in-memory data (``array``, ``hdu``, ... or ``name=``)
    _rendered: Rendered | None  # None for results not rendered from one frame (compose)

    @classmethod
    def of(cls, rendered: Rendered, frame: Frame, *, source: Path | None, name: str) -> Result:
        from astro_pipeline.products.writers import scale_wcs

        return cls(operation=rendered.operation, image=rendered.image, data=rendered.flux,
                   wcs=scale_wcs(frame.wcs, rendered.scale) if frame.wcs is not None else None,
                   quality=rendered.quality, stretch=rendered.stretch, models=rendered.models,
                   colorized=rendered.colorized, metrics=dict(rendered.metrics), params=dict(rendered.params),
                   frame=frame, source=source, name=name, _rendered=rendered)

    @property
    def scale(self) -> int:
        """Output pixels per input pixel, per axis (1 for colorize, 4 for upscale and enhance)."""
        return self._rendered.scale if self._rendered is not None else 1

    @property
    def flags(self) -> list[str]:
        """Names of the quality flags the input raised."""
        return self.quality.flag_names

    def stem(self, folder: Path | str) -> Path:
        """Where :meth:`save` puts the products in ``folder``: the CLI's stem for a file, ``folder/name`` else."""
        from astro_pipeline.products.naming import output_stem

        if self.source is not None:
            return output_stem(self.source, input_root=self.source.parent, output_dir=Path(folder),
                               suffix=self.frame.suffix)
        return output_stem(Path(self.name), input_root=None, output_dir=Path(folder), suffix=self.frame.suffix)

    def _stem_for(self, path_or_dir: Path | str) -> Path:
        """A folder -> :meth:`stem` in it; a file name with an image extension -> that name's stem."""
        from astro_pipeline.ingest.readers import is_image_name
        from astro_pipeline.products.naming import strip_image_suffix

        dest = Path(path_or_dir).expanduser()
        if dest.is_dir() or not is_image_name(dest):
            return self.stem(dest)
        return dest.with_name(strip_image_suffix(dest.name))

    def save(self, path_or_dir: Path | str) -> dict[str, ProductFile]:
        """Write the products: PNG, 16-bit TIFF, and for science data the RGB FITS cube with the scaled
        WCS and (upscale) the flux-conserving FITS; enhance adds the same-size colour step PNG.

        Names come from ``products.save_products``, the one call the CLI and the sweep use too, so a
        folder (existing, or a name without an image extension) gets exactly what ``--output`` that
        folder gets (``m101_x4.png``, ``m101_flux_x4.fits``, ...). A file name such as
        ``out/m101.png`` gives the stem ``out/m101`` (``out/m101_x4.png``, ...). Where another product
        or file owns a name, the stem takes the input's hash (``<stem>-<sha256[:8]>``); nothing is
        overwritten but this result's own earlier files, and never the input. Returns
        ``{kind: ProductFile}`` (absolute path and sha256 of the bytes written).
        """
        from astro_pipeline.products.process import save_products

        if self._rendered is None:
            raise TypeError(f"{type(self).__name__} has no rendered frame to save")
        protect = {self.source} if self.source is not None else set()
        return save_products(self._rendered, self.frame, stem=self._stem_for(path_or_dir), protect=protect)

    def product(self, files: dict[str, ProductFile] | None = None) -> Product:
        """The typed catalog record of this result (``products.types.Product``), with ``files`` if saved."""
        from astro_pipeline.products.process import frame_product

        assert self._rendered is not None
        return frame_product(self.frame, self.operation, None, status=ProductStatus.OK, rendered=self._rendered,
                             files=files)

    def _repr_png_(self) -> bytes:
        """Jupyter shows the image (an 8-bit preview at most 1024 px on a side)."""
        import io

        from PIL import Image

        from astro_pipeline.products.writers import preview

        buf = io.BytesIO()
        Image.fromarray(preview(self.image, max_side=1024)).save(buf, format="PNG")
        return buf.getvalue()

    def __repr__(self) -> str:
        h, w = self.image.shape[:2]
        models = ", ".join(f"{m.name} {m.version}" for m in self.models) or "none"
        return (f"Result({self.operation}, {self.frame.key}: {w}x{h} image, data={'yes' if self.data is not None else 'no'}, "
                f"wcs={'yes' if self.wcs is not None else 'no'}, flags={self.flags}, models: {models})")
