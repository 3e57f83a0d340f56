"""The product's own pixels on a new background: placement, preservation, shadow and bad input."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from capability_service.imaging import background, composite
from capability_service.imaging.types import ImageError
from tests.imaging.test_segment_quality import backdrops, place_product

CANVAS = (600, 800)


def png(pixels: npt.NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def scene(
    name: str = "texture-rocket", size: tuple[int, int] = (640, 480)
) -> tuple[bytes, npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    backdrop = dict(backdrops(size))[name]
    pixels, alpha = place_product(backdrop, 0.6, (0.45, 0.55), 6.0)
    return png(pixels), pixels, alpha


def expected_product(source: npt.NDArray[np.uint8], placement: composite.Placement) -> npt.NDArray[np.uint8]:
    """The source region resampled to its box by an independent resampler (Pillow's Lanczos)."""
    x, y, w, h = placement.crop
    _, _, box_w, box_h = placement.box
    region = Image.fromarray(source[y : y + h, x : x + w])
    return np.asarray(region.resize((box_w, box_h), Image.Resampling.LANCZOS))


def product_interior(
    alpha: npt.NDArray[np.float32], placement: composite.Placement, margin: int = 4
) -> npt.NDArray[np.bool_]:
    """Where the true alpha is opaque, mapped to the box and kept `margin` pixels away from its edge."""
    x, y, w, h = placement.crop
    _, _, box_w, box_h = placement.box
    truth = cv2.resize(
        (alpha[y : y + h, x : x + w] >= 0.999).astype(np.uint8), (box_w, box_h), interpolation=cv2.INTER_NEAREST
    )
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    return np.asarray(cv2.erode(truth, kernel), dtype=bool)


def assert_product_preserved(
    result: npt.NDArray[np.uint8],
    source: npt.NDArray[np.uint8],
    alpha: npt.NDArray[np.float32],
    placement: composite.Placement,
) -> None:
    """Inside the product the result is the source resampled for scale, and the cut covers the product."""
    box_x, box_y, box_w, box_h = placement.box
    got = result[box_y : box_y + box_h, box_x : box_x + box_w].astype(np.int16)
    want = expected_product(source, placement).astype(np.int16)
    inside = product_interior(alpha, placement)
    assert inside.sum() > 0.3 * box_w * box_h
    diff = np.abs(got - want).max(axis=2)
    # Where the cut missed a piece of the product the new background shows: allowed for a sliver
    # only (segmentation quality has its own tests); everywhere else the pixels are the source's.
    kept = inside & (diff <= 24)
    assert kept.sum() >= 0.97 * inside.sum(), kept.sum() / inside.sum()
    # Two Lanczos implementations differ by a few levels at sharp detail, never more.
    assert float(diff[kept].mean()) < 1.0, float(diff[kept].mean())
    assert float(np.percentile(diff[kept], 99)) <= 8


def test_the_product_keeps_its_source_pixels_on_an_offline_background() -> None:
    data, pixels, alpha = scene()
    cut = composite.cut_out(data, CANVAS, 0.08, 50_000_000)
    assert cut.engine == "u2netp"
    bg = background.render(background.parse_prompt("soft blue gradient"), *CANVAS)
    result = composite.compose(cut, bg, shadow=True)
    assert result.shape == (CANVAS[1], CANVAS[0], 3)
    assert_product_preserved(result, pixels, alpha, cut.placement)
    # Opaque matte pixels are copied bit for bit from the cut-out, never blended.
    box_x, box_y, box_w, box_h = cut.placement.box
    opaque = cut.alpha >= 1.0
    assert np.array_equal(result[box_y : box_y + box_h, box_x : box_x + box_w][opaque], cut.rgb[opaque])
    # Far from the product the canvas is the new background.
    assert np.array_equal(result[:10, :10], bg[:10, :10])


def test_the_product_is_centred_inside_the_padding() -> None:
    data, _, _ = scene("plain-white")
    for padding in (0.0, 0.08, 0.2):
        cut = composite.cut_out(data, CANVAS, padding, 50_000_000)
        x, y, w, h = cut.placement.box
        inner_w, inner_h = CANVAS[0] * (1 - 2 * padding), CANVAS[1] * (1 - 2 * padding)
        # Fits inside the padded area and fills it along one side.
        assert w <= inner_w + 1 and h <= inner_h + 1
        assert max(w / inner_w, h / inner_h) > 0.99
        assert abs((x + w / 2) - CANVAS[0] / 2) <= 1 and abs((y + h / 2) - CANVAS[1] / 2) <= 1
        assert cut.rgb.shape[:2] == (h, w) and cut.alpha.shape == (h, w)


def test_the_cut_leaves_no_old_background_around_the_product() -> None:
    data, _, alpha = scene("plain-white")
    cut = composite.cut_out(data, CANVAS, 0.08, 50_000_000)
    black = np.zeros((CANVAS[1], CANVAS[0], 3), np.uint8)
    result = composite.compose(cut, black, shadow=False)
    # On black, a halo of the old white backdrop would show as bright pixels outside the product.
    box_x, box_y, box_w, box_h = cut.placement.box
    x, y, w, h = cut.placement.crop
    truth = cv2.resize(alpha[y : y + h, x : x + w], (box_w, box_h), interpolation=cv2.INTER_LINEAR)
    outside = cv2.dilate((truth > 0.01).astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
    region = result[box_y : box_y + box_h, box_x : box_x + box_w]
    assert float(region[outside].mean()) < 6.0
    # The soft rim exists (anti-aliased) and carries no white fringe: rim pixels are no brighter
    # than the product colours next to them.
    rim = (cut.alpha > 0.05) & (cut.alpha < 0.95)
    assert rim.sum() > 50
    assert float(cut.rgb[rim].mean()) < 200


def test_a_photo_that_arrives_cut_out_uses_its_own_alpha(data_dir: Path) -> None:
    cut = composite.cut_out((data_dir / "Minduka_Present_Blue_Pack.png").read_bytes(), CANVAS, 0.1, 50_000_000)
    assert cut.engine == "source-alpha"
    assert ((cut.alpha > 0) & (cut.alpha < 1)).any()
    assert cut.placement.box[2] <= CANVAS[0] * 0.8 + 1


def test_contact_shadow_darkens_only_below_the_product() -> None:
    data, _, _ = scene("plain-white")
    cut = composite.cut_out(data, CANVAS, 0.1, 50_000_000)
    white = np.full((CANVAS[1], CANVAS[0], 3), 255, np.uint8)
    with_shadow = composite.compose(cut, white, shadow=True).astype(np.int16)
    without = composite.compose(cut, white, shadow=False).astype(np.int16)
    darker = (without - with_shadow).sum(axis=2) > 0
    ys, _ = np.nonzero(darker)
    _, box_y, _, box_h = cut.placement.box
    assert ys.size > 100
    assert ys.min() > box_y + box_h * 0.7
    assert int((without - with_shadow).max()) <= 0.35 * 255 + 1


def test_no_product_and_bad_input_are_clear_errors() -> None:
    flat = png(np.full((300, 400, 3), 128, np.uint8))
    with pytest.raises(ImageError, match="no product"):
        composite.cut_out(flat, CANVAS, 0.08, 50_000_000)
    with pytest.raises(ImageError):
        composite.cut_out(b"not an image at all", CANVAS, 0.08, 50_000_000)
    data, _, _ = scene()
    with pytest.raises(ImageError, match="MP limit"):
        composite.cut_out(data, CANVAS, 0.08, 1000)
    truncated = data[: len(data) // 2]
    with pytest.raises(ImageError):
        composite.cut_out(truncated, CANVAS, 0.08, 50_000_000)


def test_a_truncated_jpeg_names_the_decoder_reason(data_dir: Path) -> None:
    # libvips puts a generic "unable to write to memory" first; the reason is the line after it.
    data = (data_dir / "rocket.jpg").read_bytes()
    with pytest.raises(ImageError, match="VipsJpeg: premature end of JPEG image"):
        composite.cut_out(data[: len(data) // 3], CANVAS, 0.08, 50_000_000)


def test_encoded_canvas_has_the_target_size() -> None:
    data, _, _ = scene()
    cut = composite.cut_out(data, CANVAS, 0.08, 50_000_000)
    bg = background.render(background.parse_prompt("white"), *CANVAS)
    for fmt in ("png", "jpg", "webp"):
        out = composite.encode_canvas(composite.compose(cut, bg), fmt)
        with Image.open(io.BytesIO(out.data)) as image:
            assert image.size == CANVAS
            assert image.format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[fmt]


def test_the_contact_shadow_sits_under_each_wheel_and_each_leg() -> None:
    from tests.imaging import openings

    bike = openings.make(openings.kind("bicycle"), "plain-grey", "wood")
    feet = composite.contacts(bike.alpha)
    width = bike.alpha.shape[1]
    # Two wheels touch the ground: one contact under each, none under the frame between them.
    assert len(feet) == 2
    centres = sorted((left + right) / 2 for left, right, _ in feet)
    assert abs(centres[0] - 0.26 * width) < 0.03 * width and abs(centres[1] - 0.74 * width) < 0.03 * width
    chair = openings.make(openings.kind("chair"), "plain-white", "wood")
    # Four legs, the back ones standing higher in the three-quarter view; not the seat's underside.
    legs = composite.contacts(chair.alpha)
    assert len(legs) == 4
    seat_bottom = 0.6 * chair.alpha.shape[0]
    assert all(row > seat_bottom for _, _, row in legs)

    cut = composite.Cutout(
        rgb=bike.rgb,
        alpha=bike.alpha,
        placement=composite.Placement(crop=(0, 0, width, bike.alpha.shape[0]), box=(0, 0, width, 480), scale=1.0),
        canvas=(width, 560),
        coverage=float(bike.alpha.mean()),
        engine="test",
    )
    white = np.full((560, width, 3), 255, np.uint8)
    darkening = (
        composite.compose(cut, white, shadow=False).astype(np.int16)
        - composite.compose(cut, white, shadow=True).astype(np.int16)
    ).sum(axis=2)
    ground = round(0.8 * 480)
    below = darkening[ground + 1 : ground + 6]
    under_wheels = [below[:, round(c) - 3 : round(c) + 4].mean() for c in centres]
    between = below[:, round(0.5 * width) - 3 : round(0.5 * width) + 4].mean()
    assert min(under_wheels) > 60
    assert between < 0.25 * min(under_wheels)


def test_a_bmp_photo_is_cut_out_like_the_same_photo_as_png() -> None:
    # BMP is an allowed source format; libvips cannot load it here, so every decode must go through Pillow.
    data, pixels, _alpha = scene()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "BMP")
    from_bmp = composite.cut_out(buffer.getvalue(), CANVAS, 0.08, 50_000_000)
    from_png = composite.cut_out(data, CANVAS, 0.08, 50_000_000)
    assert from_bmp.placement == from_png.placement
    assert np.array_equal(from_bmp.rgb, from_png.rgb)
