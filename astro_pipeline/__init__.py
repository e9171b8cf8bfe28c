"""astro_pipeline: Hubble archive sweeps to colour, 4x super-resolved, manifest-tracked products.

Data path, top to bottom: ``archives`` (find, fetch) -> ``ingest`` (read, mask, stretch, flag)
-> ``tiles`` (cut, stitch) -> ``models`` + ``inference`` (colorize, 4x SR) -> ``products``
(PNG/TIFF/FITS with WCS) -> ``catalog`` + ``manifest`` (what came from where, made by which model).
"""

__version__ = "0.1.0"
