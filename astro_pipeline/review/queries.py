"""The review app's view of the catalog: the queue, decisions, and image files by catalog id.

Everything goes through ``astro_pipeline.catalog``: frame selection, order and decision state
come from its queries (``select_frames``/``frame_views``, the same ones behind
``Catalog.flagged_frames``), decisions from ``add_review(s)``/``undo_review``/``current_decision``,
images from ``Catalog.product_file`` (by id), read only inside the output folder and typed by
their bytes (``review.files``). The only thing added here is the "open" queue (no decision yet,
or "needs another look"), built from two of the catalog's id queries.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

from astro_pipeline.catalog import FrameFilter, FrameView
from astro_pipeline.catalog import queries as cq
from astro_pipeline.memory import default_pixel_limit
from astro_pipeline.review.files import FileRefused, ServedImage, open_image, resolve_inside
from astro_pipeline.review.views import (
    DecisionView,
    FieldCard,
    FlagView,
    ImageView,
    QueueFilters,
    QueueItem,
    QueuePage,
)

__all__ = ["IMAGE_MEDIA_TYPES", "ImageNotFound", "ReviewQueries"]

#: Product suffixes the queue shows as an image. What is served is decided by the bytes (``review.files``).
IMAGE_MEDIA_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}
#: Product file kinds that may hold a browser image, in order of preference for a preview.
PREVIEW_KINDS: tuple[str, ...] = ("png", "preview", "jpeg", "jpg", "lupton", "colorized")
#: Field product kinds the fields page shows.
FIELD_PREVIEW_KINDS: tuple[str, ...] = ("png", "png_4x")
#: Longest side of a rendered input preview (pixels).
PREVIEW_MAX_SIDE = 1024


class ImageNotFound(LookupError):
    """No image to serve for that catalog id; the message says why."""


class ReviewQueries:
    """Queue queries and decisions over an ``astro_pipeline.catalog.Catalog``."""

    def __init__(self, catalog: Any, *, settings: Any = None) -> None:
        self.catalog = catalog
        self.settings = settings
        self._preview_cache: OrderedDict[tuple[int, str], bytes] = OrderedDict()
        self._cache_lock = threading.Lock()

    # ---- the queue ----------------------------------------------------------------------------
    def _frame_filter(self, filters: QueueFilters, decision: str | None) -> FrameFilter:
        return FrameFilter(flag=filters.flag or None, archive=filters.archive or None, run_id=filters.run or None,
                           ra=filters.ra, dec=filters.dec,
                           radius_deg=filters.radius if filters.has_region else None,
                           decision=decision, flagged_only=True)

    def _scope(self, filters: QueueFilters) -> tuple[list[int], set[int]]:
        """(ids matching the status filter, newest first; open ids in the flag/archive/run/region scope)."""

        def step(conn: Any) -> tuple[list[int], set[int]]:
            ids = lambda decision: cq.select_frames(conn, self._frame_filter(filters, decision))[0]  # noqa: E731
            open_ids = set(ids("undecided")) | set(ids("needs_look"))
            if filters.status == "open":
                return [i for i in ids(None) if i in open_ids], open_ids
            return ids(None if filters.status == "all" else filters.status), open_ids

        if filters.has_region and filters.radius == 0:
            return [], set()
        return self.catalog.read(step)

    def page(self, filters: QueueFilters, *, offset: int = 0, limit: int = 50) -> QueuePage:
        """One page of the queue, newest first, with counts and filter choices."""
        selected, open_ids = self._scope(filters)
        chosen = selected[offset:offset + limit]
        views: list[FrameView] = self.catalog.read(lambda c: cq.frame_views(c, chosen)) if chosen else []
        return QueuePage(items=[_item(v) for v in views], total=len(selected), left=len(open_ids),
                         offset=offset, limit=limit, facets=self.facets())

    def facets(self) -> dict[str, list[str]]:
        """Choices for the flag, archive and run filters."""
        stats = self.catalog.stats()
        return {
            "flags": sorted(stats.get("flags", {})),
            "archives": sorted(stats.get("records_by_archive", {})),
            "runs": [r.id for r in self.catalog.recent_runs(50)],
        }

    def matching_ids(self, filters: QueueFilters) -> list[int]:
        """Frame ids of every flagged frame passing ``filters`` (all pages), newest first."""
        return self._scope(filters)[0]

    def count_flagged(self) -> int:
        return int(self.catalog.count_frames(FrameFilter(flagged_only=True)))

    def count_open(self, filters: QueueFilters) -> int:
        """Flagged frames in the filters' scope with no decision yet or "needs another look"."""
        return len(self._scope(filters)[1])

    def has_frame(self, frame_id: int) -> bool:
        return self.catalog.frame(frame_id) is not None

    # ---- decisions ----------------------------------------------------------------------------
    def decide(self, frame_id: int, decision: str, note: str, reviewer: str) -> DecisionView | None:
        """Append a decision to the catalog's review history; the decision now in force."""
        self.catalog.add_review(frame_id, decision, note or None, reviewer)
        return self.current(frame_id)

    def decide_many(self, frame_ids: list[int], decision: str, note: str,
                    reviewer: str) -> dict[int, DecisionView | None]:
        """The same decision for many frames, all or none (the catalog's bulk write)."""
        self.catalog.add_reviews(frame_ids, decision, note or None, reviewer)
        return {fid: self.current(fid) for fid in frame_ids}

    def undo(self, frame_id: int, reviewer: str) -> DecisionView | None:
        """Undo the frame's latest decision (recorded as an undo entry); the decision now in force."""
        self.catalog.undo_review(frame_id, reviewer)
        return self.current(frame_id)

    def current(self, frame_id: int) -> DecisionView | None:
        return _decision_view(self.catalog.current_decision(frame_id))

    # ---- images -------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The output folder: the only place files are read from for the browser."""
        folder = getattr(self.settings, "output_dir", None)
        if folder is None:
            raise ImageNotFound("no output folder is configured, so no files are served")
        return Path(folder)

    def open_product_image(self, file_id: int, kind: str) -> ServedImage:
        """The product file with catalog id ``file_id`` (of ``kind``), opened and checked for serving:
        inside the output folder once symlinks are resolved, and an image by its bytes."""
        pf = self.catalog.product_file(file_id)
        if pf is None or pf.kind != kind:
            raise ImageNotFound(f"no {kind!r} product file with id {file_id} in the catalog")
        if pf.kind not in PREVIEW_KINDS:
            raise ImageNotFound(f"product file {file_id} ({kind}) is not a browser image")
        try:
            return open_image(pf.path, self.root, what=f"product file {file_id} ({kind})")
        except FileRefused as exc:
            raise ImageNotFound(str(exc)) from None

    def field_cards(self, *, limit: int = 50) -> list[FieldCard]:
        """The newest field products, each beside its member frames."""
        products = self.catalog.field_products(current=True)  # a superseded one's files were written again
        return [_field_card(v, self._frame_images(v)) for v in sorted(products, key=lambda v: -v.id)[:limit]]

    def _frame_images(self, view: Any) -> dict[int, str | None]:
        """Per member frame: the URL of its input preview, else of its own product's PNG."""
        frames = {f.frame_id: f for f in self.catalog.read(
            lambda c: cq.frame_views(c, [m.frame_id for m in view.field.members]))}
        out: dict[int, str | None] = {}
        for m in view.field.members:
            f = frames.get(m.frame_id)
            if f is not None and f.raw_path and f.raw_exists:
                out[m.frame_id] = f"/frame/{m.frame_id}/input.png"
                continue
            png = next((pf for p in (f.products if f else []) if p.status == "ok"
                        for k, pf in p.files.items() if k == "png"), None)
            out[m.frame_id] = f"/image/{png.id}/png" if png is not None else None
        return out

    def open_field_image(self, file_id: int, kind: str) -> ServedImage:
        """A field product's file by catalog id, checked as product files are (inside the output folder,
        an image by its bytes)."""
        pf = self.catalog.field_product_file(file_id)
        if pf is None or pf.kind != kind:
            raise ImageNotFound(f"no {kind!r} field product file with id {file_id} in the catalog")
        if kind not in FIELD_PREVIEW_KINDS:
            raise ImageNotFound(f"field product file {file_id} ({kind}) is not a browser image")
        try:
            return open_image(pf.path, self.root, what=f"field product file {file_id} ({kind})")
        except FileRefused as exc:
            raise ImageNotFound(str(exc)) from None

    def input_preview_png(self, frame_id: int) -> bytes:
        """The frame's input as a PNG for the browser: display stretch, at most 1024 px a side."""
        view = self.catalog.frame(frame_id)
        if view is None:
            raise ImageNotFound(f"no frame with id {frame_id} in the catalog")
        key = (frame_id, view.sha256)
        with self._cache_lock:
            if key in self._preview_cache:
                self._preview_cache.move_to_end(key)
                return self._preview_cache[key]
        if not view.raw_path:
            raise ImageNotFound(f"frame {frame_id}: no input file is recorded")
        try:
            path = resolve_inside(view.raw_path, self.root, what=f"frame {frame_id}: its input file")
        except FileRefused as exc:
            why = " (retention may have removed it)" if "no longer on disk" in str(exc) else ""
            raise ImageNotFound(f"{exc}{why}") from None
        limit = self.settings.pixel_limit if self.settings is not None else default_pixel_limit()
        png = _render_preview(path, view.hdu, view.plane, frame_id, max_image_pixels=limit)
        with self._cache_lock:
            self._preview_cache[key] = png
            while len(self._preview_cache) > 64:
                self._preview_cache.popitem(last=False)
        return png


# ---- helpers ----------------------------------------------------------------------------------
def _item(v: FrameView) -> QueueItem:
    prov = v.provenance or {}
    return QueueItem(
        frame_id=v.frame_id, frame_key=v.frame_key, kind="color" if v.kind == "color" else "science",
        archive=v.archive or "local", obs_id=v.obs_id or v.archive_id or str(prov.get("obs_id") or ""),
        title=v.title or str(prov.get("title") or ""),
        target=v.target or str(prov.get("target") or prov.get("object") or ""),
        instrument=v.instrument or str(prov.get("instrument") or ""),
        filter=v.filter or str(prov.get("filter") or ""),
        ra=v.ra, dec=v.dec, date_obs=v.date_obs or str(prov.get("date_obs") or ""),
        credit=v.credit or "", license=v.license or "", run_id=v.last_run_id or "",
        flagged_at=_iso(v.updated_at),
        flags=[FlagView(name=str(f.get("name")), value=f.get("value"), threshold=f.get("threshold"),
                        comparison=str(f.get("comparison") or ""), message=str(f.get("message") or ""))
               for f in v.flags],
        images=_images(v), decision=_decision_view(v.decision),
    )


def _images(v: FrameView) -> list[ImageView]:
    """Input, colorized and 4x previews for one frame (the newest ok product of each operation)."""
    best: dict[str, tuple[Any, int, str]] = {}  # operation -> (rank, product file id, kind)
    for p in v.products:
        if p.status != "ok" or p.superseded_by is not None:  # a superseded product's files were replaced
            continue
        for kind, f in p.files.items():
            if kind not in PREVIEW_KINDS or kind == "colorized" or Path(f.path).suffix.lower() not in IMAGE_MEDIA_TYPES:
                continue
            rank = (p.updated_at, p.id, -PREVIEW_KINDS.index(kind))
            have = best.get(p.operation)
            if have is None or rank > have[0]:
                best[p.operation] = (rank, f.id, kind)

    def url(op: str) -> str | None:
        hit = best.get(op)
        return f"/image/{hit[1]}/{hit[2]}" if hit else None

    def colorized_url() -> str | None:
        """A colorize product, else a same-size colorized file kept beside an enhance (colorize + 4x) product."""
        if "colorize" in best:
            return url("colorize")
        for p in sorted(v.products, key=lambda p: (p.updated_at, p.id), reverse=True):
            f = p.files.get("colorized")
            if (p.status == "ok" and p.superseded_by is None and f is not None
                    and Path(f.path).suffix.lower() in IMAGE_MEDIA_TYPES):
                return f"/image/{f.id}/colorized"
        return None

    is_color = v.kind == "color"
    images = [ImageView(role="input", label="Input (colour original)" if is_color else "Input (grey, stretched)",
                        url=f"/frame/{v.frame_id}/input.png" if v.raw_path and v.raw_exists else None,
                        note="input file no longer on disk (retention)" if v.raw_path else "no input file recorded")]
    if is_color:
        images.append(ImageView(role="color", label="Colorized", url=None, note="colour original: not colorized"))
    else:
        note = ("made in one step with the 4× product (enhance); no same-size colorized file"
                if "enhance" in best else "no colorized product yet")
        images.append(ImageView(role="color", label="Colorized", url=colorized_url(), note=note))
    images.append(ImageView(role="sr", label="4× super-resolution", url=url("enhance") or url("upscale"),
                            note="no 4× product yet"))
    return images


_ROLE_LABELS = {"band": "band", "shallower": "not used: shallower", "off_reference": "not used: off the field",
                "failed": "not used: alignment failed"}


def _field_card(v: Any, frame_urls: dict[int, str | None]) -> FieldCard:
    """A field product's card: its image, and each member with filter, channel and role."""
    f = v.field
    channel_of = {b.get("frame_key"): b.get("channel") for b in v.bands}
    members = []
    for m in f.members:
        channel = channel_of.get(m.frame_key)
        label = f"{m.filter}" + (f" → {channel}" if channel else "") + f" · {_ROLE_LABELS.get(m.role, m.role)}"
        if m.reference:
            label += " · reference grid"
        members.append(ImageView(role=f"member-{m.role}", label=f"{label} · {Path(m.raw_path).name}",
                                 url=frame_urls.get(m.frame_id), note=m.note or "no preview of this frame"))

    def image(kind: str, label: str) -> ImageView | None:
        pf = v.files.get(kind)
        if pf is None:
            return None
        return ImageView(role=f"field-{kind}", label=label, url=f"/field-image/{pf.id}/{kind}")

    shape = (f.grid or {}).get("shape") or [0, 0]
    scale = f"{f.pixel_scale_arcsec:.3f}\"/px" if f.pixel_scale_arcsec else ""
    main = image("png", f"{f.name}: {v.channels_text}") or ImageView(role="field-png", label=f.name, url=None,
                                                                    note=v.error or "no colour image")
    return FieldCard(product_id=v.id, name=f.name, filters=list(f.filters), channels=v.channels_text,
                     status=v.status, run_id=v.run_id or "",
                     position=f"RA {f.ra:.5f}°, Dec {f.dec:+.5f}°" if f.ra is not None and f.dec is not None else "",
                     grid=f"{shape[1]} × {shape[0]} px at {scale}", image=main,
                     image_4x=image("png_4x", "4× super-resolution"), members=members, notes=list(v.notes))


def _decision_view(value: Any) -> DecisionView | None:
    """The catalog's ``Decision`` (or None) as a view."""
    if value is None:
        return None
    return DecisionView(decision=str(value.decision), note=str(value.note or ""), reviewer=str(value.reviewer or ""),
                        at=_iso(value.at))


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value or "")


def _render_preview(path: Path, hdu: int | None, plane: int | None, frame_id: int, *, max_image_pixels: int) -> bytes:
    """Render one frame of ``path`` as a display PNG (browser images are re-encoded as they are).

    What the file is comes from its first bytes, not its name; anything but an image is refused.
    """
    from PIL import Image

    from astro_pipeline.ingest.readers import detect_content

    try:
        with open(path, "rb") as fh:
            content = detect_content(fh.read(2880))
    except OSError as exc:
        raise ImageNotFound(f"frame {frame_id}: its input file cannot be read ({exc.strerror})") from None
    if content is None:
        raise ImageNotFound(f"frame {frame_id}: its input file is not an image (not FITS, TIFF, PNG or JPEG)")
    if content in ("png", "jpeg"):
        try:
            with Image.open(path, formats=["PNG" if content == "png" else "JPEG"]) as im:
                im.load()
                img = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageNotFound(f"frame {frame_id}: its input file is not a readable {content.upper()} "
                                f"({type(exc).__name__})") from None
    else:
        try:
            import numpy as np

            from astro_pipeline.ingest.readers import read_frames
            from astro_pipeline.ingest.stretch import display_image
        except ImportError as exc:  # ingestion not installed: say so instead of failing obscurely
            raise ImageNotFound(f"frame {frame_id}: cannot render {path.suffix} input ({exc})") from None
        from astro_pipeline.ingest.frame import IngestError

        try:
            frames = read_frames(path, max_image_pixels=max_image_pixels)
        except IngestError as exc:
            raise ImageNotFound(f"frame {frame_id}: {exc}") from None
        match = [fr for fr in frames if fr.hdu == hdu and fr.plane == plane] or frames[:1]
        if not match:
            raise ImageNotFound(f"frame {frame_id}: {path.name} holds no image frames")
        disp, _ = display_image(match[0])
        arr = (np.clip(disp, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        img = Image.fromarray(arr)
    if max(img.size) > PREVIEW_MAX_SIDE:
        img.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
