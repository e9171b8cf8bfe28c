"""Ingestion: archive files (FITS, TIF, PNG, JPEG) to masked float32 Frames, stretches and quality flags."""

from astro_pipeline.ingest.frame import Flag, Frame, IngestError, QualityReport, StretchParams

__all__ = ["Flag", "Frame", "IngestError", "QualityReport", "StretchParams"]
