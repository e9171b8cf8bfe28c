"""Products of colorize / upscale / enhance: the typed contract, names, writers, processing, composites.

* ``types``: :class:`Product` (with its quality, stretch, model records and reader notes),
  :class:`Operation`, :class:`ProductStatus`, :class:`FileKind`, :class:`ProductFile`;
* ``naming``: where a product's files go and what they are called (operation and scale in every name);
* ``claims``: who owns a path, so that no product replaces another's file;
* ``writers``: PNG / 16-bit TIFF / FITS cube with the 4x WCS / flux-conserving FITS;
* ``process``: one frame rendered in memory, its files named and written (``save_products``), one file processed;
* ``composites``: same-grid ``make_lupton_rgb`` composites of three filters.
"""

from astro_pipeline.products.composites import Composite, write_lupton_composites
from astro_pipeline.products.naming import field_product_path, output_stem, product_path
from astro_pipeline.products.process import (
    ProcessedInput,
    Rendered,
    frame_product,
    process_file,
    render_frame,
    save_products,
    write_products,
)
from astro_pipeline.products.types import FileKind, ModelRecord, Operation, Product, ProductFile, ProductStatus
from astro_pipeline.products.writers import AI_LABEL, FLUX_LABEL, PNG_MAX_SIDE, scale_wcs

__all__ = [
    "AI_LABEL",
    "FLUX_LABEL",
    "PNG_MAX_SIDE",
    "Composite",
    "FileKind",
    "ModelRecord",
    "Operation",
    "ProcessedInput",
    "Product",
    "ProductFile",
    "ProductStatus",
    "Rendered",
    "field_product_path",
    "frame_product",
    "output_stem",
    "process_file",
    "product_path",
    "render_frame",
    "save_products",
    "scale_wcs",
    "write_lupton_composites",
    "write_products",
]
