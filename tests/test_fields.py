"""Fields: footprints, grouping across filters, alignment with reproject, and their catalog records.

Frames are real FITS files written per test (``field_helpers``): one synthetic star field observed
on several grids (scales, rotations, offsets), read back through the project's reader.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from field_helpers import frame_product, observe, star_field, tan_wcs, write_frame

from astro_pipeline.config import QualityThresholds
from astro_pipeline.fields.align import FieldRefused, align_field, check_field_memory, estimate_field_memory
from astro_pipeline.fields.geometry import FrameGeometry, NoFootprint, footprint_of, overlap_fraction
from astro_pipeline.fields.grouping import MemberRole, group_fields
from astro_pipeline.fields.result import FieldStatus
from astro_pipeline.ingest.readers import read_frames

MAX_PIXELS = 10**9


def _frame(tmp: Path, name: str, *, n: int, scale: float, filt: str, exptime: float = 500.0, orient: float = 0.0,
           offset: tuple[float, float] = (0.0, 0.0), stars=None, fwhm: float = 0.12, noise: float = 0.3,
           seed: int = 0, **kw) -> Path:
    wcs = tan_wcs(n, scale=scale, orient=orient, offset=offset)
    stars = stars if stars is not None else star_field(30, seed=7, radius_arcsec=5.0)
    data = observe(wcs, n, stars, fwhm_arcsec=fwhm, noise=noise, seed=seed)
    return write_frame(tmp / f"{name}.fits", data, wcs, filt=filt, exptime=exptime, **kw)


def _geometry(path: Path) -> FrameGeometry:
    (frame,) = read_frames(path, max_image_pixels=MAX_PIXELS)
    fp = footprint_of(frame)
    assert isinstance(fp, FrameGeometry), fp
    return fp


# --- footprints ---------------------------------------------------------------------------------


def test_overlap_is_intersection_over_the_smaller_footprint_and_counts_only_data(tmp_path: Path) -> None:
    a = _geometry(_frame(tmp_path, "a", n=100, scale=0.1, filt="F606W"))  # 10" x 10"
    half = _geometry(_frame(tmp_path, "b", n=100, scale=0.1, filt="F814W", offset=(5.0, 0.0)))  # shifted half a side
    assert overlap_fraction(a, half) == pytest.approx(0.5, abs=0.04)
    small = _geometry(_frame(tmp_path, "c", n=40, scale=0.1, filt="F814W", offset=(1.0, 1.0)))  # 4" inside a
    assert overlap_fraction(a, small) == pytest.approx(1.0, abs=0.01)
    assert overlap_fraction(small, a) == overlap_fraction(a, small)  # over the smaller, either way round
    far = _geometry(_frame(tmp_path, "d", n=100, scale=0.1, filt="F814W", offset=(30.0, 0.0)))
    assert overlap_fraction(a, far) == 0.0
    # a frame 5" east of a whose western half alone holds data (weight 0 elsewhere): only its data
    # counts, so it lies wholly inside a; with data only in its eastern half it lies wholly outside
    wcs = tan_wcs(100, scale=0.1, offset=(5.0, 0.0))  # x grows westwards (CD1_1 < 0)
    cover = {}
    for name, cols in (("west", slice(50, None)), ("east", slice(None, 50))):
        wht = np.zeros((100, 100), np.float32)
        wht[:, cols] = 1.0
        path = write_frame(tmp_path / f"{name}.fits", observe(wcs, 100, star_field(5, seed=1, radius_arcsec=4), fwhm_arcsec=0.2),
                           wcs, filt="F435W", exptime=100.0, wht=wht)
        cover[name] = e = _geometry(path)
        assert e.valid_fraction == pytest.approx(0.5, abs=0.02)
    assert overlap_fraction(a, cover["west"]) == pytest.approx(1.0, abs=0.02)
    assert overlap_fraction(a, cover["east"]) == pytest.approx(0.0, abs=0.02)
    e = cover["west"]
    round_trip = FrameGeometry.from_dict(e.as_dict())
    assert round_trip == e and (round_trip.coverage == e.coverage).all()


def test_frames_without_a_usable_celestial_wcs_stay_out_of_grouping_with_the_reason(tmp_path: Path) -> None:
    good = _frame(tmp_path, "good", n=60, scale=0.1, filt="F606W")
    none = write_frame(tmp_path / "nowcs.fits", np.ones((60, 60), np.float32), None, filt="F814W", exptime=300.0)
    broken = write_frame(tmp_path / "singular.fits", np.ones((60, 60), np.float32), None, filt="F435W",
                         exptime=300.0, extra={})
    from astropy.io import fits

    with fits.open(broken, mode="update") as hdul:
        hdul[1].header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.1, "CRVAL2": 2.2,
                               "CRPIX1": 30.0, "CRPIX2": 30.0, "CD1_1": 0.0, "CD1_2": 0.0, "CD2_1": 0.0,
                               "CD2_2": 0.0})
    products = [frame_product(p) for p in (good, none, broken)]
    assert isinstance(products[1].footprint, NoFootprint) and "no celestial WCS" in products[1].footprint.reason
    # a zero CD matrix, which WCSLIB reads as 1 degree per pixel: a footprint that would swallow the sky
    assert isinstance(products[2].footprint, NoFootprint) and "pixel scale" in products[2].footprint.reason
    grouping = group_fields(products, min_overlap=0.5)
    assert grouping.fields == []
    reasons = {Path(lo.product.source_path).name: lo.reason for lo in grouping.left_out}
    assert "kept out of field grouping" in reasons["nowcs.fits"] and "WCS" in reasons["nowcs.fits"]
    assert "WCS" in reasons["singular.fits"]
    assert "in no field" in reasons["good.fits"]  # one frame is not a field
    # display images have no footprint at all (they are never members): nothing to say about them
    from PIL import Image

    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "x.png")
    (png,) = read_frames(tmp_path / "x.png", max_image_pixels=MAX_PIXELS)
    assert footprint_of(png) is None


# --- grouping -----------------------------------------------------------------------------------


def test_fields_are_components_with_the_finest_reference_and_the_deepest_frame_per_filter(tmp_path: Path) -> None:
    paths = {
        "acs_f606w": _frame(tmp_path, "acs_f606w", n=200, scale=0.05, filt="F606W", orient=20.0, exptime=900.0),
        "acs_f814w": _frame(tmp_path, "acs_f814w", n=200, scale=0.05, filt="F814W", orient=65.0, exptime=1000.0,
                            offset=(0.5, -0.4)),
        "short_f814w": _frame(tmp_path, "short_f814w", n=200, scale=0.05, filt="F814W", orient=65.0,
                              exptime=300.0),
        "ir_f160w": _frame(tmp_path, "ir_f160w", n=90, scale=0.13, filt="F160W", orient=77.0, exptime=1400.0,
                           instrument="WFC3", detector="IR", fwhm=0.25),
        "flagged_f435w": _frame(tmp_path, "flagged_f435w", n=200, scale=0.05, filt="F435W", exptime=5000.0),
        "clean_f435w": _frame(tmp_path, "clean_f435w", n=200, scale=0.05, filt="F435W", exptime=600.0),
        "far_f606w": _frame(tmp_path, "far_f606w", n=100, scale=0.05, filt="F606W", offset=(120.0, 0.0)),
        "far_f814w": _frame(tmp_path, "far_f814w", n=100, scale=0.05, filt="F814W", offset=(300.0, 0.0)),
        "detection": _frame(tmp_path, "detection", n=100, scale=0.05, filt="DETECTION"),
    }
    products = {k: frame_product(p, flagged=k == "flagged_f435w") for k, p in paths.items()}
    grouping = group_fields(list(products.values()), min_overlap=0.5)
    (field,) = grouping.fields
    assert field.filters == ["F160W", "F435W", "F606W", "F814W"]
    names = {f: Path(m.product.source_path).stem for f, m in field.bands.items()}
    assert names == {"F160W": "ir_f160w", "F435W": "clean_f435w", "F606W": "acs_f606w", "F814W": "acs_f814w"}
    # the reference frame: finest scale (0.05"), largest area among those, then the deepest
    assert field.grid.pixel_scale_arcsec == pytest.approx(0.05, rel=1e-6) and field.grid.shape == (200, 200)
    roles = {Path(m.product.source_path).stem: m for m in field.members}
    assert roles["short_f814w"].role is MemberRole.SHALLOWER and "acs_f814w" in roles["short_f814w"].note
    assert roles["flagged_f435w"].role is MemberRole.SHALLOWER and "unflagged" in roles["flagged_f435w"].note
    # reference: the finest scale, largest area, unflagged, then deepest: the 1000 s F814W frame
    assert Path(field.reference.product.source_path).stem == "acs_f814w"
    assert field.grid.wcs_header == field.reference.geometry.wcs_header  # a plain TAN grid is used as it is
    left = {Path(lo.product.source_path).stem: lo.reason for lo in grouping.left_out}
    assert set(left) == {"far_f606w", "far_f814w", "detection"}
    assert "in no field" in left["far_f606w"] and "no filter name" in left["detection"]
    # the same products in another order give the same field, with the same key
    again = group_fields(list(reversed(list(products.values()))), min_overlap=0.5)
    assert [f.key for f in again.fields] == [field.key] and again.fields[0].name == field.name
    assert field.name.startswith("testfield-")


def test_min_overlap_decides_and_members_off_the_reference_are_left_out(tmp_path: Path) -> None:
    # 5" frames: b overlaps a by 40% of the smaller, c overlaps b by 70% but a by 10%, d overlaps c by 40%
    a = frame_product(_frame(tmp_path, "a", n=100, scale=0.05, filt="F606W", exptime=900.0))
    b = frame_product(_frame(tmp_path, "b", n=100, scale=0.05, filt="F814W", offset=(3.0, 0.0)))
    assert overlap_fraction(a.footprint, b.footprint) == pytest.approx(0.4, abs=0.04)
    assert group_fields([a, b], min_overlap=0.5).fields == []
    (field,) = group_fields([a, b], min_overlap=0.3).fields
    assert field.filters == ["F606W", "F814W"]
    c = frame_product(_frame(tmp_path, "c", n=100, scale=0.05, filt="F435W", offset=(4.5, 0.0)))
    d = frame_product(_frame(tmp_path, "d", n=100, scale=0.05, filt="F160W", offset=(7.5, 0.0)))
    (chain,) = group_fields([a, b, c, d], min_overlap=0.3).fields  # one component: a-b-c-d
    roles = {Path(m.product.source_path).stem: m for m in chain.members}
    assert len(chain.members) == 4 and Path(chain.reference.product.source_path).stem == "a"
    for off in ("c", "d"):  # too far from the reference frame to be a band of its product
        assert roles[off].role is MemberRole.OFF_REFERENCE and "overlaps the reference frame by" in roles[off].note
    assert chain.filters == ["F606W", "F814W"]


# --- alignment ----------------------------------------------------------------------------------


def _centroid_offsets(a: np.ndarray, b: np.ndarray, wcs, stars, *, box: int = 11, isolation_arcsec: float = 0.5,
                      edge: int = 10, method: str = "2dg") -> np.ndarray:
    """Per star, the distance (grid pixels) between its photutils centroids in ``a`` and ``b``: 2-D
    Gaussian fits (``2dg``), or the peak's quadratic fit (``quadratic``, over 5 x 5 pixels)."""
    from photutils.centroids import centroid_2dg, centroid_quadratic, centroid_sources

    x, y = wcs.world_to_pixel_values(stars.ra, stars.dec)
    h, w = a.shape
    sep = np.hypot(*(np.subtract.outer(v, v) for v in (stars.ra * math.cos(math.radians(stars.dec[0])),
                                                         stars.dec))) * 3600
    np.fill_diagonal(sep, np.inf)
    valid = np.isfinite(a) & np.isfinite(b)
    keep = []
    for i in range(len(x)):
        xi, yi = int(round(x[i])), int(round(y[i]))
        if not (edge <= xi < w - edge and edge <= yi < h - edge) or sep[i].min() < isolation_arcsec:
            continue
        if valid[yi - box // 2:yi + box // 2 + 1, xi - box // 2:xi + box // 2 + 1].all():
            keep.append(i)
    keep = np.array(keep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils' convergence notes on faint stars
        func, size = (centroid_2dg, box) if method == "2dg" else (centroid_quadratic, 5)
        a, b = (v / np.nanmax(v) for v in (a, b))  # fits on values near 1 (PHOTFLAM units are 1e-19)
        ax, ay = centroid_sources(np.nan_to_num(a), x[keep], y[keep], box_size=size, centroid_func=func)
        bx, by = centroid_sources(np.nan_to_num(b), x[keep], y[keep], box_size=size, centroid_func=func)
    d = np.hypot(ax - bx, ay - by)
    return d[np.isfinite(d)]


def _two_grid_field(tmp: Path, *, shift_b_arcsec: float = 0.0):
    stars = star_field(50, seed=11, radius_arcsec=4.5)
    a = _frame(tmp, "acs", n=200, scale=0.05, filt="F606W", orient=20.0, exptime=900.0, stars=stars, fwhm=0.12,
               noise=0.2, seed=1)
    b_path = _frame(tmp, "ir", n=90, scale=0.13, filt="F160W", orient=77.0, exptime=1400.0, stars=stars,
                    fwhm=0.25, noise=0.4, seed=2, offset=(0.4, -0.3), instrument="WFC3", detector="IR")
    if shift_b_arcsec:
        from astropy.io import fits

        with fits.open(b_path, mode="update") as hdul:  # a WCS that is wrong by this much: the test must see it
            hdul[1].header["CRVAL2"] += shift_b_arcsec / 3600.0
    (field,) = group_fields([frame_product(a), frame_product(b_path)], min_overlap=0.5).fields
    return field, stars


def test_two_grids_rotated_with_different_scales_align_to_a_tenth_of_a_pixel(tmp_path: Path) -> None:
    """The star field seen on ACS-like (0.05"/px) and WFC3/IR-like (0.13"/px, rotated 57 degrees,
    shifted) grids: after alignment, each star's centroid agrees between the bands."""
    field, stars = _two_grid_field(tmp_path)
    assert field.grid.pixel_scale_arcsec == pytest.approx(0.05, rel=1e-6)
    aligned = align_field(field, max_image_pixels=MAX_PIXELS, order="bicubic")
    assert not aligned.failed and set(aligned.bands) == {"F160W", "F606W"}
    a, b = aligned.bands["F606W"].data, aligned.bands["F160W"].data
    assert np.array_equal(np.isfinite(a), aligned.bands["F606W"].mask)
    d = _centroid_offsets(a, b, aligned.wcs, stars)
    assert len(d) >= 20, len(d)
    assert np.median(d) < 0.1 and np.percentile(d, 90) < 0.2, (np.median(d), np.percentile(d, 90))
    # flux is kept: the IR frame's total, counted on the finer grid, matches (pixel areas scaled)
    ir = aligned.bands["F160W"]
    assert ir.header["PIXAREAR"] == pytest.approx((0.05 / 0.13) ** 2, rel=1e-6)
    assert ir.header["FILTER"] == "F160W" and ir.header["BUNIT"] == "ELECTRONS/S" and "PHOTFLAM" in ir.header
    assert 0.5 < ir.coverage < 1.0


def test_the_centroid_measure_sees_a_wcs_wrong_by_a_third_of_a_pixel(tmp_path: Path) -> None:
    field, stars = _two_grid_field(tmp_path, shift_b_arcsec=0.015)  # 0.3 grid pixels north
    aligned = align_field(field, max_image_pixels=MAX_PIXELS)
    d = _centroid_offsets(aligned.bands["F606W"].data, aligned.bands["F160W"].data, aligned.wcs, stars)
    assert np.median(d) == pytest.approx(0.3, abs=0.06)


def test_masks_travel_with_the_pixels_and_a_failed_member_is_left_out(tmp_path: Path) -> None:
    stars = star_field(20, seed=3, radius_arcsec=4.0)
    ref = _frame(tmp_path, "ref", n=160, scale=0.05, filt="F606W", exptime=900.0, stars=stars)
    wcs = tan_wcs(80, scale=0.1, orient=33.0)
    data = observe(wcs, 80, stars, fwhm_arcsec=0.2)
    data[30:40, 10:20] = np.nan  # a hole on the sky
    holed = write_frame(tmp_path / "holed.fits", data, wcs, filt="F814W", exptime=800.0)
    gone = _frame(tmp_path, "gone", n=160, scale=0.05, filt="F435W", exptime=700.0, stars=stars, orient=10.0)
    (field,) = group_fields([frame_product(p) for p in (ref, holed, gone)], min_overlap=0.5).fields
    gone.unlink()  # retention deleted it after processing
    aligned = align_field(field, max_image_pixels=MAX_PIXELS)
    assert set(aligned.bands) == {"F606W", "F814W"}
    ((member, why),) = aligned.failed
    assert member.filter == "F435W" and "gone.fits" in why and "could not be read again" in why
    band = aligned.bands["F814W"]
    # the hole's centre lands on the grid as invalid pixels, at the same sky position
    hx, hy = (int(round(float(v))) for v in aligned.wcs.world_to_pixel_values(*wcs.pixel_to_world_values(14.5, 34.5)))
    assert not band.mask[hy - 6:hy + 7, hx - 6:hx + 7].any() and np.isnan(band.data[hy, hx])
    assert band.mask[hy - 20:hy + 21, hx - 20:hx + 21].mean() > 0.5  # only the hole and its rim are lost
    assert band.mask.mean() > 0.6 and np.isfinite(band.data[band.mask]).all()


def test_a_field_over_the_pixel_limit_is_refused_with_its_estimate(tmp_path: Path) -> None:
    a = frame_product(_frame(tmp_path, "a", n=120, scale=0.05, filt="F606W"))
    b = frame_product(_frame(tmp_path, "b", n=120, scale=0.05, filt="F814W", orient=30.0))
    (field,) = group_fields([a, b], min_overlap=0.5).fields
    est = estimate_field_memory(field, upscale=4)
    assert est.grid_pixels == 120 * 120 and est.parts["4x product"] == 25 * 16 * 120 * 120
    assert est.total >= est.parts["aligned bands"] + est.parts["colour product"]
    with pytest.raises(FieldRefused) as info:
        check_field_memory(field, max_grid_pixels=10_000, upscale=4)
    msg = str(info.value)
    assert "120 x 120" in msg and "14,400 pixels" in msg and "GiB" in msg
    assert "fields.max_grid_pixels" in msg and "ASTRO_PIPELINE_FIELDS__MAX_GRID_PIXELS" in msg
    assert check_field_memory(field, max_grid_pixels=14_400).grid_pixels == 14_400
    # the memory budget (issue 21's memory_budget) refuses a field whose estimate is over it
    with pytest.raises(FieldRefused) as info:
        check_field_memory(field, max_grid_pixels=10**9, upscale=4, budget_bytes=est.total - 1)
    msg = str(info.value)
    assert "120 x 120" in msg and "memory budget" in msg and "ASTRO_PIPELINE_MEMORY_BUDGET" in msg
    assert check_field_memory(field, max_grid_pixels=10**9, upscale=4, budget_bytes=est.total).total == est.total


# --- composing a field ---------------------------------------------------------------------------


def test_a_field_on_two_rotated_grids_composes_without_colour_fringes(tmp_path: Path) -> None:
    """Done when: the star field seen on two grids (rotated, 0.05" and 0.13"/px) composes into one
    colour image whose channels agree on every isolated star's centroid to better than 0.1 px."""
    from astro_pipeline.fields.compose import band_slots, channels_of, compose_field

    field, stars = _two_grid_field(tmp_path)
    composite = compose_field(align_field(field, max_image_pixels=MAX_PIXELS), quality=QualityThresholds())
    # F606W (606 nm) is G, F160W (WFC3/IR: 1600 nm) is R; B is the nearer band's (G) values
    assert channels_of(composite) == {"R": "F160W", "G": "F606W", "B": "inferred(nearer G)"}
    assert band_slots(composite) == {"F606W": "G", "F160W": "R"}
    img = composite.image
    assert img.shape == (*field.grid.shape, 3) and img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0
    # the channels' data (sky-subtracted, one flux unit): photutils 2-D Gaussian centroids agree
    d = _centroid_offsets(composite.linear[..., 0], composite.linear[..., 1], field.grid.wcs, stars)
    assert len(d) >= 20, len(d)
    assert np.median(d) < 0.1 and np.percentile(d, 90) < 0.2, (np.median(d), np.percentile(d, 90))
    # and the colour image itself: each star's peak (photutils quadratic centroid) is where it is in
    # the other channel (a Gaussian fit does not suit stars after the asinh stretch, so peaks are compared)
    red, green = (np.where(composite.valid, img[..., i], np.nan) for i in (0, 1))
    peaks = _centroid_offsets(red, green, field.grid.wcs, stars, method="quadratic")
    assert len(peaks) >= 20 and np.median(peaks) < 0.1 and np.percentile(peaks, 90) < 0.15, (
        len(peaks), np.median(peaks), np.percentile(peaks, 90))
    # the sky is neutral and near black: R and G agree on the sky, both low
    sky = composite.valid & (img[..., 1] < np.percentile(img[..., 1][composite.valid], 50))
    assert abs(float(np.median(img[..., 0][sky]) - np.median(img[..., 1][sky]))) < 0.03
    assert float(np.median(img[..., 1][sky])) < 0.1
    # off the IR frame the product is black in every channel, not a one-band colour
    assert composite.valid.mean() < 1.0 and not img[~composite.valid].any()


def test_a_wrong_wcs_shows_as_a_colour_fringe_in_the_composite(tmp_path: Path) -> None:
    from astro_pipeline.fields.compose import compose_field

    field, stars = _two_grid_field(tmp_path, shift_b_arcsec=0.015)  # 0.3 grid pixels
    composite = compose_field(align_field(field, max_image_pixels=MAX_PIXELS), quality=QualityThresholds())
    d = _centroid_offsets(composite.linear[..., 0], composite.linear[..., 1], field.grid.wcs, stars)
    assert np.median(d) == pytest.approx(0.3, abs=0.06)
    red, green = (np.where(composite.valid, composite.image[..., i], np.nan) for i in (0, 1))
    assert np.median(_centroid_offsets(red, green, field.grid.wcs, stars, method="quadratic")) > 0.2


def test_two_bands_in_red_and_blue_fill_green_with_their_mean_and_files_carry_the_channels(tmp_path: Path) -> None:
    from astropy.io import fits
    from astropy.wcs import WCS
    from PIL import Image

    from astro_pipeline.fields.compose import channels_of, compose_field
    from astro_pipeline.fields.products import write_field_product
    from astro_pipeline.products.types import Operation

    stars = star_field(20, seed=5, radius_arcsec=3.5)
    paths = [_frame(tmp_path, "b", n=100, scale=0.05, filt="F435W", stars=stars, exptime=900.0),
             _frame(tmp_path, "r", n=100, scale=0.05, filt="F814W", stars=stars, orient=46.0, exptime=800.0)]
    (field,) = group_fields([frame_product(p) for p in paths], min_overlap=0.5).fields
    aligned = align_field(field, max_image_pixels=MAX_PIXELS)
    composite = compose_field(aligned, quality=QualityThresholds())
    assert channels_of(composite) == {"R": "F814W", "G": "inferred(mean)", "B": "F435W"}
    img = composite.image
    np.testing.assert_allclose(img[..., 1], 0.5 * (img[..., 0] + img[..., 2]), atol=1e-6)
    assert composite.inferred == ["G"] and composite.visualisation
    assert {c.sources[0].flux for c in composite.channels if c.inferred is None} == {"PHOTFLAM"}
    product = write_field_product(aligned, composite, operation=Operation.COLORIZE, products_dir=tmp_path / "products",
                                  run_id="r1")
    assert set(product.files) == {"png", "tif", "fits"} and product.ok
    assert Path(product.files["png"].path).name == f"{field.name}_rgb.png"
    assert Path(product.files["png"].path).parent == tmp_path / "products" / "fields"
    assert np.asarray(Image.open(product.files["png"].path)).shape == (*field.grid.shape, 3)
    with fits.open(product.files["fits"].path) as hdul:
        h = hdul[0].header
        assert hdul[0].data.shape == (3, *field.grid.shape)
        assert h["CHANNELS"] == "R:F814W, G:inferred(mean), B:F435W" and h["CHAN_G"] == "inferred(mean)"
        assert h["VISUAL"] is True and h["CTYPE3"] == "RGB"
        w = WCS(h).celestial
        ra, dec = field.grid.wcs.pixel_to_world_values(10.0, 20.0)
        assert np.allclose(w.world_to_pixel_values(ra, dec), (10.0, 20.0), atol=1e-6)  # the reference WCS
    assert {b["filter"]: b["channel"] for b in product.bands} == {"F435W": "B", "F814W": "R"}


# --- catalog records ----------------------------------------------------------------------------


def test_the_catalog_records_fields_members_and_reference_wcs_and_grouping_reads_its_rows(tmp_path: Path) -> None:
    from astro_pipeline.catalog import Catalog
    from astro_pipeline.products.types import Operation

    paths = [_frame(tmp_path, "f606w", n=120, scale=0.05, filt="F606W", exptime=900.0),
             _frame(tmp_path, "f814w", n=120, scale=0.05, filt="F814W", orient=40.0, exptime=800.0),
             _frame(tmp_path, "f814w_short", n=120, scale=0.05, filt="F814W", orient=40.0, exptime=100.0),
             write_frame(tmp_path / "nowcs.fits", np.ones((50, 50), np.float32), None, filt="F435W", exptime=1.0)]
    products = [frame_product(p) for p in paths]
    with Catalog.for_output(tmp_path / "out") as cat:
        for p in products:
            cat.record_product(p, run_id="r1")
        # grouping works from the catalog's rows: the footprints come back with the products
        rows = cat.current_products([p.source_sha256 for p in products], operation=Operation.ENHANCE, models={})
        assert [type(r.footprint).__name__ for r in rows] == ["FrameGeometry"] * 3 + ["NoFootprint"]
        assert rows[0].footprint == products[0].footprint
        grouping = group_fields(rows, min_overlap=0.5)
        ids = cat.record_fields(grouping, run_id="r1")
        assert cat.record_fields(grouping, run_id="r2") == ids  # same frames, same field: one row
        (view,) = cat.fields()
        assert view.key == grouping.fields[0].key and view.filters == ["F606W", "F814W"] and view.status == "grouped"
        assert view.last_run_id == "r2" and len(view.members) == 3
        assert view.reference_wcs["CTYPE1"] == "RA---TAN" and view.grid["shape"] == [120, 120]
        assert view.members[0].reference and view.members[0].filter == "F606W"
        roles = {Path(m.raw_path).name: (m.role, m.note) for m in view.members}
        assert roles["f814w.fits"] == ("band", None)
        assert roles["f814w_short.fits"][0] == "shallower" and "f814w.fits" in roles["f814w_short.fits"][1]
        frames = {Path(f.raw_path).name: f for f in cat.flagged_frames(flagged_only=False)}
        assert cat.fields(frame_ids=[frames["f814w.fits"].frame_id])[0].id == view.id
        note = cat.read(lambda c: c.exec_driver_sql(
            "SELECT field_note FROM frames WHERE id = ?", (frames["nowcs.fits"].frame_id,)).scalar())
        assert "kept out of field grouping" in note and "WCS" in note
        cat.record_field_status(view.id, FieldStatus.REFUSED, "too big")
        assert cat.fields(field_ids=[view.id])[0].status == "refused"
        cat.record_fields(grouping, run_id="r3")  # grouping again keeps the field's state
        assert cat.fields()[0].note == "too big"


# --- the field step of the sweep ----------------------------------------------------------------


def _processed_sample_fields(tmp: Path, weights_dir: Path, names=("m83", "ngc4414")):
    """The mini sample's multi-grid fields processed (enhance, tiny weights) and recorded, as the sweep does."""
    import shutil

    from astro_pipeline.catalog import Catalog
    from astro_pipeline.config import Settings
    from astro_pipeline.engines import load_engines, model_versions
    from astro_pipeline.items import ItemResult, ItemStatus
    from astro_pipeline.processing import process_input
    from astro_pipeline.products.types import Operation
    from astro_pipeline.sample import build_sample

    settings = Settings(output_dir=tmp / "out", weights_dir=weights_dir)
    index = build_sample(mini=True, cache_dir=settings.cache_dir)
    raw = tmp / "out" / "raw" / "mast"
    raw.mkdir(parents=True)
    engines = load_engines(Operation.ENHANCE, settings)
    catalog = Catalog.for_output(tmp / "out")
    items = []
    for item in index.items:
        if item.field in names and item.archive == "mast":
            path = Path(shutil.copy(index.path_of(item), raw / Path(item.path).name))
            done = process_input(path, operation=Operation.ENHANCE, engines=engines, output_dir=tmp / "out" / "products",
                                 quality=settings.quality, max_image_pixels=settings.pixel_limit,
                                 memory_budget=settings.memory_budget_bytes, catalog=catalog, run_id="run-1",
                                 input_root=raw)
            items.append(ItemResult(key=item.id, archive="mast", record_id=item.id, region=item.field,
                                    status=ItemStatus.OK, operation=Operation.ENHANCE, sha256=done.sha256,
                                    raw_path=str(path)))
    return settings, catalog, items, model_versions(settings)


def test_the_field_step_composes_the_sample_fields_and_refuses_one_over_the_limit(tmp_path: Path,
                                                                                sweep_weights_dir: Path) -> None:
    from astropy.io import fits
    from PIL import Image

    from astro_pipeline import steps
    from astro_pipeline.products.types import Operation

    settings, catalog, items, versions = _processed_sample_fields(tmp_path, sweep_weights_dir)
    with catalog:
        results = steps.field_run(catalog, items, versions=versions, settings=settings, run_id="run-1")
        by_filters = {tuple(r.filters): r for r in results}
        assert set(by_filters) == {("F160W", "F435W", "F606W"), ("F606W", "F814W")}
        assert all(r.status is FieldStatus.COMPOSED and r.field_id is not None for r in results), results
        views = {tuple(v.filters): v for v in catalog.fields()}
        m83 = views[("F160W", "F435W", "F606W")]
        assert sorted(Path(m.raw_path).name.split("_")[4] for m in m83.members) == ["acs", "acs", "wfc3"]
        assert m83.pixel_scale_arcsec == pytest.approx(0.05, rel=1e-6) and m83.grid["shape"] == [96, 96]
        # m83: three real bands, no channel inferred; ngc4414: F606W (G) and F814W (R), B from the nearer band
        assert by_filters[("F160W", "F435W", "F606W")].channels == "R:F160W, G:F606W, B:F435W"
        assert by_filters[("F606W", "F814W")].channels == "R:F814W, G:F606W, B:inferred(nearer G)"
        for r in results:  # colour, 16-bit TIFF, RGB FITS cube with the reference WCS, and each at 4x (enhance)
            assert set(r.files) == {"png", "tif", "fits", "png_4x", "tif_4x", "fits_4x"}
            assert Path(r.files["png"].path).name == f"{r.name}_rgb.png"
            assert Path(r.files["png_4x"].path).name == f"{r.name}_rgb_x4.png"
            assert Image.open(r.files["png_4x"].path).size == (96 * 4, 96 * 4)
            with fits.open(r.files["fits_4x"].path) as hdul:
                assert hdul[0].data.shape == (3, 96 * 4, 96 * 4) and hdul[0].header["SCALE"] == 4
                assert hdul[0].header["CHANNELS"] == r.channels
        ups = {m["name"] for v in catalog.field_products() for m in v.models}
        assert ups == {"random-superres"} and "random-colorize" in versions[Operation.ENHANCE]  # the SR model only
        assert {v.field.status for v in catalog.field_products()} == {"composed"}
        # a rerun finds the products done: nothing is written again
        mtimes = {f.path: Path(f.path).stat().st_mtime_ns for r in results for f in r.files.values()}
        again = steps.field_run(catalog, items, versions=versions, settings=settings, run_id="run-2")
        assert {r.status for r in again} == {FieldStatus.COMPOSED}
        assert {f.path: Path(f.path).stat().st_mtime_ns for r in again for f in r.files.values()} == mtimes
        assert all(v.attempts == 1 for v in catalog.field_products())
        # over the pixel limit: refused, recorded with its estimate, and the other fields unaffected
        small = settings.model_copy(update={"fields": settings.fields.model_copy(update={"max_grid_pixels": 5000})})
        refused = steps.field_run(catalog, items, versions=versions, settings=small, run_id="run-3")
        assert {r.status for r in refused} == {FieldStatus.REFUSED}
        assert all("fields.max_grid_pixels" in (r.note or "") for r in refused)
        assert {v.status for v in catalog.fields()} == {"refused"}
        # over the memory budget: refused the same way, naming the budget's setting
        tight = settings.model_copy(update={"memory_budget": "1MB"})
        over = steps.field_run(catalog, items, versions=versions, settings=tight, run_id="run-4")
        assert {r.status for r in over} == {FieldStatus.REFUSED}
        assert all("memory_budget" in (r.note or "") and "field " in (r.note or "") for r in over)


def test_a_member_that_cannot_be_aligned_is_left_out_and_the_field_composed_from_the_rest(
        tmp_path: Path, sweep_weights_dir: Path) -> None:
    from astro_pipeline import steps

    settings, catalog, items, versions = _processed_sample_fields(tmp_path, sweep_weights_dir, names=("m83",))
    ir = next(it for it in items if "f160w" in str(it.raw_path))
    Path(ir.raw_path).unlink()  # gone before the field step (e.g. deleted by hand)
    with catalog:
        (result,) = steps.field_run(catalog, items, versions=versions, settings=settings, run_id="run-1")
        assert result.status is FieldStatus.COMPOSED and result.channels == "R:inferred(nearer G), G:F606W, B:F435W"
        assert any("f160w" in why and "could not be read again" in why for why in result.left_out)
        (view,) = catalog.field_products()
        assert any("could not be read again" in n for n in view.notes)
        roles = {m.filter: m.role for m in view.field.members}
        assert roles["F160W"] == "failed"
        # a rerun keeps the finished product (it is done), even now that a second band is gone too
        next(Path(it.raw_path) for it in items if "f435w" in str(it.raw_path)).unlink()
        (again,) = steps.field_run(catalog, items, versions=versions, settings=settings, run_id="run-2")
        assert again.status is FieldStatus.COMPOSED and catalog.field_products()[0].status == "ok"
    # with two bands gone before the first field step, the field fails with the reason
    settings, catalog, items, versions = _processed_sample_fields(tmp_path / "b", sweep_weights_dir, names=("m83",))
    for it in items:
        if "f606w" not in str(it.raw_path):
            Path(it.raw_path).unlink()
    with catalog:
        (failed,) = steps.field_run(catalog, items, versions=versions, settings=settings, run_id="run-1")
        assert failed.status is FieldStatus.FAILED and "a field product needs two" in (failed.note or "")
        assert catalog.fields()[0].status == "failed" and catalog.field_products()[0].status == "error"


def _two_band_products_and_png(tmp: Path) -> tuple[list, Path]:
    """Two overlapping frames' products (F606W, F814W rotated 30 degrees) and a field PNG under ``tmp/out``."""
    paths = [_frame(tmp, "f606w", n=80, scale=0.05, filt="F606W"),
             _frame(tmp, "f814w", n=80, scale=0.05, filt="F814W", orient=30.0)]
    png = tmp / "out" / "products" / "fields" / "x_rgb.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    return [frame_product(p, run_id="r1") for p in paths], png


def test_a_field_product_is_recorded_once_and_the_manifest_gives_it_a_row_with_channels(tmp_path: Path) -> None:
    import pandas as pd

    from astro_pipeline.catalog import Catalog, export_run_manifest
    from astro_pipeline.fields.result import FieldFileKind, FieldProduct
    from astro_pipeline.products.types import Operation, ProductFile, ProductStatus

    products, png = _two_band_products_and_png(tmp_path)
    with Catalog.for_output(tmp_path / "out") as cat:
        run = cat.start_run("sweep", {}, run_id="r1")
        for p in products:
            cat.record_product(p, run_id=run)
        grouping = group_fields(products, min_overlap=0.5)
        (field_id,) = cat.record_fields(grouping, run_id=run).values()
        plan = grouping.fields[0]
        fp = FieldProduct(key="k1", field_key=plan.key, field_name=plan.name, run_id=run, operation=Operation.ENHANCE,
                          status=ProductStatus.OK, channels={"R": "F814W", "G": "inferred(mean)", "B": "F606W"},
                          bands=[{"filter": m.filter, "frame_key": m.product.frame_key, "channel": c,
                                  "instrument": "ACS/WFC", "target": "TESTFIELD"}
                                 for m, c in zip(plan.bands.values(), ("B", "R"), strict=True)],
                          files={FieldFileKind.PNG: ProductFile(path=png, sha256="ab" * 32)})
        first = cat.record_field_product(field_id, fp)
        assert cat.record_field_product(field_id, fp) == first and cat.field_product_done("k1")
        (view,) = cat.field_products(run_id=run)
        assert view.attempts == 2 and view.channels_text == "R:F814W, G:inferred(mean), B:F606W"
        assert cat.fields()[0].status == "composed" and view.field.id == field_id
        parquet, _ = export_run_manifest(cat, run, output_dir=tmp_path / "out")
    df = pd.read_parquet(parquet)
    frames, fields = df[df["product_type"] == "frame"], df[df["product_type"] == "field"]
    assert len(frames) == 2 and len(fields) == 1
    row = fields.iloc[0]
    assert row["channels"] == "R:F814W, G:inferred(mean), B:F606W" and row["field_name"] == plan.name
    assert row["png_path"] == "products/fields/x_rgb.png" and row["filter"] == "F606W,F814W"
    import json

    members = json.loads(row["members"])
    assert {m["file"] for m in members} == {"f606w.fits", "f814w.fits"}
    assert {m["channel"] for m in members} == {"B", "R"}
    assert json.loads(row["reference_wcs"])["wcs"]["CTYPE1"] == "RA---TAN"
    assert set(frames["field_name"]) == {plan.name} and frames["field_id"].notna().all()


def test_the_review_page_shows_a_field_product_beside_its_member_frames(tmp_path: Path) -> None:
    import re

    import httpx
    from PIL import Image

    from astro_pipeline.catalog import Catalog
    from astro_pipeline.config import Settings
    from astro_pipeline.fields.result import FieldFileKind, FieldProduct
    from astro_pipeline.products.types import Operation, ProductFile, ProductStatus
    from astro_pipeline.products.writers import write_png
    from astro_pipeline.review.server import ReviewServer

    root = tmp_path / "out"
    raw = root / "raw"
    paths = [_frame(raw, "f606w", n=80, scale=0.05, filt="F606W"),
             _frame(raw, "f814w", n=80, scale=0.05, filt="F814W", orient=30.0),
             _frame(raw, "f814w_short", n=80, scale=0.05, filt="F814W", orient=30.0, exptime=50.0)]
    products = [frame_product(p, run_id="r1") for p in paths]
    rgb = np.zeros((80, 80, 3), np.float32)
    rgb[..., 0] = 1.0
    png = write_png(root / "products" / "fields" / "f_rgb.png", rgb, {}, "test")
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(outside)
    with Catalog.for_output(root) as cat:
        for p in products:
            cat.record_product(p, run_id="r1")
        grouping = group_fields(products, min_overlap=0.5)
        (field_id,) = cat.record_fields(grouping, run_id="r1").values()
        plan = grouping.fields[0]
        bands = [{"filter": m.filter, "frame_key": m.product.frame_key, "channel": c}
                 for m, c in zip(plan.bands.values(), ("B", "R"), strict=True)]
        fp = FieldProduct(key="k", field_key=plan.key, field_name=plan.name, run_id="r1", operation=Operation.ENHANCE,
                          status=ProductStatus.OK, channels={"R": "F814W", "G": "inferred(mean)", "B": "F606W"},
                          bands=bands, files={FieldFileKind.PNG: png,
                                              FieldFileKind.PNG_4X: ProductFile(path=outside, sha256="x")})
        cat.record_field_product(field_id, fp)
        (view,) = cat.field_products()
        settings = Settings(output_dir=root, review_tokens={"tok-0123456789abcdef": "ann"})
        with ReviewServer(catalog=cat, settings=settings) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
            page = client.get("/fields")
            assert page.status_code == 200
            html = page.text
            assert plan.name in html and "R:F814W, G:inferred(mean), B:F606W" in html
            product_url = f"/field-image/{view.files['png'].id}/png"
            assert product_url in html
            got = client.get(product_url)
            assert got.status_code == 200 and got.headers["content-type"] == "image/png" and got.content == png.path.read_bytes()
            # each member frame beside it, with its filter, channel and role
            members = re.findall(r'<img src="(/frame/\d+/input\.png)" alt="member frame ([^"]+)"', html)
            assert len(members) == 3
            labels = " | ".join(label for _, label in members)
            assert "F606W → B · band" in labels and "F814W → R · band" in labels and "not used: shallower" in labels
            for url, _ in members:
                img = client.get(url)
                assert img.status_code == 200 and img.content[:8] == b"\x89PNG\r\n\x1a\n"
            # a recorded file outside the output folder is never served, and other ids are refused
            assert client.get(f"/field-image/{view.files['png_4x'].id}/png_4x").status_code == 404
            assert client.get("/field-image/999/png").status_code == 404
            assert client.get(f"/field-image/{view.files['png'].id}/fits").status_code == 404
            assert "/fields" in client.get("/").text  # the queue links to the fields page


def test_a_field_product_of_a_new_model_version_supersedes_the_one_whose_files_it_replaced(tmp_path: Path) -> None:
    """A new SR model version gives a field product a new key but the same file names: the older row
    is marked superseded (it no longer describes those files), is not "done", and a rerun of the old
    version makes its row current again and supersedes the newer one."""
    import pandas as pd

    from astro_pipeline.catalog import Catalog, export_run_manifest
    from astro_pipeline.fields.result import FieldFileKind, FieldProduct
    from astro_pipeline.products.types import Operation, ProductFile, ProductStatus

    products, png = _two_band_products_and_png(tmp_path)

    def product(key: str, run: str, version: str, sha: str) -> FieldProduct:
        return FieldProduct(key=key, field_key=plan.key, field_name=plan.name, run_id=run, operation=Operation.ENHANCE,
                            status=ProductStatus.OK, channels={"R": "F814W", "G": "inferred(mean)", "B": "F606W"},
                            bands=[], models=(), params={"sr_version": version},
                            files={FieldFileKind.PNG: ProductFile(path=png, sha256=sha)})

    with Catalog.for_output(tmp_path / "out") as cat:
        r1 = cat.start_run("sweep", {}, run_id="r1")
        for p in products:
            cat.record_product(p, run_id=r1)
        grouping = group_fields(products, min_overlap=0.5)
        (field_id,) = cat.record_fields(grouping, run_id=r1).values()
        plan = grouping.fields[0]
        old = cat.record_field_product(field_id, product("k-v1", r1, "v1", "aa" * 32))
        r2 = cat.start_run("sweep", {}, run_id="r2")
        new = cat.record_field_product(field_id, product("k-v2", r2, "v2", "bb" * 32))
        views = {v.id: v for v in cat.field_products(field_ids=[field_id])}
        assert views[old].superseded_by == new and views[old].superseded_at is not None
        assert views[new].superseded_by is None
        assert not cat.field_product_done("k-v1") and cat.field_product_done("k-v2")
        assert [v.id for v in cat.field_products(field_ids=[field_id], current=True)] == [new]
        assert cat.superseded_runs(r2) == [r1]  # run r1's manifest changed: the sweep re-exports it
        parquet, _ = export_run_manifest(cat, r1, output_dir=tmp_path / "out")
        row = pd.read_parquet(parquet).query("product_type == 'field'").iloc[0]
        assert row["superseded_by"] == new
        # the old version run again writes the files again: its row is current, the newer one is not
        assert cat.record_field_product(field_id, product("k-v1", "r3", "v1", "cc" * 32)) == old
        views = {v.id: v for v in cat.field_products(field_ids=[field_id])}
        assert views[old].superseded_by is None and views[new].superseded_by == old
        assert cat.field_product_done("k-v1") and not cat.field_product_done("k-v2")
