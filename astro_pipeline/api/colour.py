"""``astro_pipeline.compose``: colour from real bands of one field, in a notebook.

A thin layer over ``composition.compose_bands`` (the path ``astro-pipeline compose`` takes too):
the inputs become frames (``ingest.objects.frames_from``, the same display-vs-science rule as
``colorize``), bands are slotted by key or by filter (``composition.bands.assign_bands``), and
:meth:`ComposeResult.save` writes through ``products.composed.save_composed`` under the one naming
scheme's field-product names (``<field>_rgb.png`` / ``.tif`` / ``.fits``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from astro_pipeline.api.result import Result
from astro_pipeline.composition.rgb import Composed
from astro_pipeline.config import Settings
from astro_pipeline.products.types import ChannelRecord, Operation, Product, ProductFile, ProductStatus

if TYPE_CHECKING:  # pragma: no cover
    from astro_pipeline.composition.fill import BandCompletion
    from astro_pipeline.products.claims import Recorded
    from astro_pipeline.ingest.frame import Frame
    from astro_pipeline.ingest.objects import ImageInput

__all__ = ["BandsInput", "ComposeResult", "band_pairs", "compose", "frames_for_bands", "product_of"]


@dataclass(eq=False, kw_only=True)
class ComposeResult(Result):
    """A :class:`Result` composed from bands, plus ``channels``: each channel's filter(s), or how it was inferred.

    ``image`` (H, W, 3) float32 in [0, 1]; ``data`` each science slot's linear data, sky-subtracted on
    the common flux scale ((H, W, 3), NaN for inferred or display slots and invalid pixels); ``wcs``
    the reference band's; ``stretch`` the shared stretch; ``quality`` every band's metrics and flags.
    """

    channels: tuple[ChannelRecord, ...]
    composed: Composed
    field: str  # the product's name: the target, or ``name=``

    @property
    def channels_text(self) -> str:
        """``R:F814W, G:inferred(mean), B:F435W``."""
        return self.composed.channels_text

    @property
    def visualisation(self) -> bool:
        """True when a channel was inferred (the files say so too)."""
        return self.composed.visualisation

    def stem(self, folder: Path | str) -> Path:
        """``folder/<field>``: :meth:`save` writes ``<field>_rgb.*`` there (``naming.field_product_path``)."""
        from astro_pipeline.products.composed import field_stem

        return field_stem(folder, self.field)

    def save(self, path_or_dir: Path | str, *, recorded: Recorded | None = None) -> dict[str, ProductFile]:
        """Write the PNG, 16-bit TIFF and (science bands) RGB FITS cube with the channels' records.

        A folder gets ``<field>_rgb.png`` / ``.tif`` / ``.fits`` (what ``astro-pipeline compose``
        writes); a file name with an image extension gives the stem (``out/m101.png`` ->
        ``out/m101_rgb.png``, ...). Where another product or file owns a name, the stem takes a
        hash of the bands' inputs (``<field>-<hash>_rgb.*``); an input band is never written.
        ``recorded``: the catalog's owners of paths (``Catalog.file_owners``), as the CLI gives.
        Returns ``{kind: ProductFile}`` (path and sha256 of the bytes written).
        """
        from astro_pipeline.products.composed import save_composed

        return save_composed(self.composed, stem=self._stem_for(path_or_dir), recorded=recorded)

    def product(self, files: dict[str, ProductFile] | None = None) -> Product:
        """The typed catalog record: operation ``compose``, the reference band as source, every band in ``channels``."""
        return product_of(self.composed, files=files, run_id=None)


def product_of(composed: Composed, *, files: dict[str, ProductFile] | None, run_id: str | None) -> Product:
    """The :class:`Product` of a composite (what ``astro-pipeline compose`` records in the catalog)."""
    from astro_pipeline.filters import wavelength_order
    from astro_pipeline.jsondata import jsonable

    ref = composed.reference.frame
    filters = sorted({b.filter for b in composed.bands if b.filter}, key=wavelength_order)
    prov = jsonable(dict(ref.provenance or {}))
    prov.update(filter="/".join(filters) or None, filters=filters, channels=composed.channels_text,
                visualisation=composed.visualisation, label=composed.label)
    notes = tuple(dict.fromkeys(n for b in composed.bands for n in b.frame.notes))
    return Product(run_id=run_id, source_path=str(ref.source_path), source_sha256=ref.source_sha256, hdu=ref.hdu,
                   plane=ref.plane, frame_key=None, operation=Operation.COMPOSE, status=ProductStatus.OK,
                   provenance=prov, quality=composed.quality, stretch=composed.stretch, models=composed.models,
                   params=jsonable(composed.params), metrics=dict(composed.metrics), notes=notes,
                   files=dict(files or {}), channels=composed.channels)


BandsInput = Mapping[str, "ImageInput"] | Sequence["ImageInput | tuple[str | None, ImageInput]"]


def band_pairs(bands: BandsInput) -> list[tuple[str | None, ImageInput]]:
    """``(key, input)`` pairs from a mapping (key: slot or filter), or a sequence of inputs (key None:
    slotted by their own filter) and ``(key, input)`` pairs (``astro-pipeline compose --red F`` gives these)."""
    if isinstance(bands, Mapping):
        return [(str(k), v) for k, v in bands.items()]
    if isinstance(bands, str | Path) or not isinstance(bands, Sequence):
        raise TypeError("bands: give a mapping such as {'red': ..., 'F606W': ...} or a list of inputs")
    out: list[tuple[str | None, ImageInput]] = []
    for item in bands:
        if isinstance(item, tuple) and len(item) == 2 and (item[0] is None or isinstance(item[0], str)):
            out.append((item[0], item[1]))
        else:
            out.append((None, item))
    return out


def frames_for_bands(bands: BandsInput, *, max_image_pixels: int) -> list[tuple[str | None, Frame]]:
    """``(key, frame)`` pairs: one frame per input (a multi-frame input is refused, naming it)."""
    from astro_pipeline.ingest.objects import frames_from, select_frame

    items = band_pairs(bands)
    if not items:
        raise ValueError("compose needs at least one band")
    out: list[tuple[str | None, Frame]] = []
    for i, (key, value) in enumerate(items):
        label = key or f"band{i + 1}"
        name = None if isinstance(value, str | Path) else "".join(ch for ch in str(label) if ch.isalnum()) or None
        frames = frames_from(value, max_image_pixels=max_image_pixels, name=name)
        if len(frames) > 1:
            raise ValueError(f"{frames[0].source_path} holds {len(frames)} frames; compose takes one frame per band "
                             "(give the HDU, e.g. hdul['SCI', 1])")
        out.append((key, select_frame(frames, None)))
    return out


def compose(bands: BandsInput, *, stretch: str = "asinh", fill: str = "auto",
            band_model: BandCompletion | None = None, weights: str | Path | None = None, softening: float = 3.0,
            white_percentile: float = 99.8, name: str | None = None, device: str | None = None,
            batch_size: int | None = None, tile_size: int | None = None, precision: str | None = None,
            settings: Settings | None = None) -> ComposeResult:
    """Colour from real bands that share one pixel grid.

    ``bands`` maps ``"red"``, ``"green"``, ``"blue"`` (any input, a PNG included) or a filter name
    (``"F814W"``: slotted by its wavelength) to a path, a numpy array, an astropy HDU or a CCDData;
    a plain list of inputs is slotted by each one's own filter (FITS headers, file names). Slots by
    absolute wavelength: B below 500 nm, G to 650 nm, R beyond; two bands in one slot are averaged.
    A uint8 array or an 8-bit file is a display image and its channel is its own values; other
    inputs are science data, put on one flux scale (PHOTFNU/PHOTFLAM/BUNIT; unknown: each band
    normalised on its own, and ``channels`` say so), sky-subtracted, and stretched by one shared asinh.

    Missing channels: three slots given, none; two, ``band_model`` (default: the installed
    band-completion model, if any; ``fill="rule"`` skips it) else the mean of R and B for G, or the
    nearer band (G) for R or B; one, the colorizer (``weights``) keeps that band's lightness.
    ``stretch="lupton"`` uses ``make_lupton_rgb`` instead (channels then mix).

    Returns a :class:`ComposeResult`: ``image``, ``data``, ``wcs``, ``channels`` (``channels_text``
    like ``R:F814W, G:inferred(mean), B:F435W``), ``save(path_or_dir)``.
    """
    from astro_pipeline.api.operations import _settings, engines_for
    from astro_pipeline.composition.bands import assign_bands
    from astro_pipeline.composition.fill import find_band_completion
    from astro_pipeline.composition.rgb import compose_bands
    from astro_pipeline.ingest.objects import check_name

    st = _settings(settings, device=device, batch_size=batch_size, precision=precision)
    assigned = assign_bands(frames_for_bands(bands, max_image_pixels=st.pixel_limit))
    slots = {b.slot for b in assigned}
    engines = None
    if len(slots) == 1:
        engines = engines_for(Operation.COLORIZE, colorizer=weights, tile_size=tile_size, settings=st)
    elif len(slots) == 2 and band_model is None and fill in ("auto", "model") and stretch == "asinh":
        band_model = find_band_completion(st, weights=weights, tile_size=tile_size)
    composed = compose_bands(assigned, quality=st.quality, method=stretch, fill=fill, band_model=band_model,
                             engines=engines, softening=softening, white_percentile=white_percentile)
    ref = composed.reference.frame
    field = check_name(name) if name else _field_name(composed)
    source = Path(str(ref.source_path)) if Path(str(ref.source_path)).is_file() else None
    return ComposeResult(operation=Operation.COMPOSE, image=composed.image, data=composed.linear, wcs=composed.wcs,
                         quality=composed.quality, stretch=composed.stretch, models=composed.models, colorized=None,
                         metrics=dict(composed.metrics), params=dict(composed.params), frame=ref, source=source,
                         name=field, _rendered=None, channels=composed.channels, composed=composed, field=field)


def _field_name(composed: Composed) -> str:
    """The target of the bands (their TARGNAME), else ``compose``."""
    import re

    for b in (composed.reference, *composed.bands):
        target = (b.frame.provenance or {}).get("target")
        if target and str(target).strip().upper() not in ("ANY", "NONE"):
            return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(target).strip()).strip("._") or "compose"
    return "compose"
