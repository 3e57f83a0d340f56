"""Fitting images into a remote model's request limits."""

from __future__ import annotations

import io

import pytest
import pyvips
from PIL import Image

from capability_service.imaging.fit_request import MIN_SIDE, RequestLimits, base64_size, fit_for_request
from capability_service.imaging.types import ImageError
from tests.support.data import read_image

LIMITS = RequestLimits(max_bytes=7_000_000, max_side=3072)


def noise(width: int, height: int, bands: int) -> pyvips.Image:
    planes = [pyvips.Image.gaussnoise(width, height, sigma=60, mean=128) for _ in range(bands)]
    return planes[0].bandjoin(planes[1:]).cast("uchar").copy(interpretation="srgb")


def test_an_image_that_fits_is_sent_unchanged() -> None:
    data = read_image("rocket.jpg")
    fitted = fit_for_request(data, LIMITS)
    assert fitted.data is data and not fitted.changed
    assert fitted.mime_type == "image/jpeg" and (fitted.width, fitted.height) == (640, 427)


def test_a_large_photo_is_scaled_to_the_longest_side() -> None:
    data = read_image("camera_3648x2736.jpg")
    fitted = fit_for_request(data, RequestLimits(max_bytes=7_000_000, max_side=2048))
    assert fitted.changed and fitted.mime_type == "image/jpeg"
    assert (fitted.width, fitted.height) == (2048, 1536)
    assert pyvips.Image.new_from_buffer(fitted.data, "").width == 2048


def test_a_heavy_opaque_image_becomes_a_jpeg_under_the_limit() -> None:
    data = bytes(noise(2400, 2400, 3).pngsave_buffer(compression=1))
    assert len(data) > 7_000_000
    fitted = fit_for_request(data, LIMITS)
    assert fitted.mime_type == "image/jpeg" and len(fitted.data) <= 7_000_000
    assert fitted.width == fitted.height and fitted.width >= 1000  # shrunk no more than needed, roughly


def test_transparency_is_kept_png_first_then_webp() -> None:
    small = read_image("Minduka_Present_Blue_Pack.png")
    gif_like = bytes(pyvips.Image.new_from_buffer(small, "").tiffsave_buffer())
    fitted = fit_for_request(gif_like, LIMITS)
    assert fitted.mime_type == "image/png" and pyvips.Image.new_from_buffer(fitted.data, "").hasalpha()

    heavy = bytes(noise(1600, 1600, 4).pngsave_buffer(compression=1))
    fitted = fit_for_request(heavy, RequestLimits(max_bytes=3_000_000, max_side=3072))
    decoded = pyvips.Image.new_from_buffer(fitted.data, "")
    assert fitted.mime_type == "image/webp" and decoded.hasalpha()
    assert len(fitted.data) <= 3_000_000


def test_exif_orientation_is_applied_when_re_encoding() -> None:
    image = pyvips.Image.new_from_buffer(read_image("rocket.jpg"), "").copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    data = bytes(image.tiffsave_buffer())  # TIFF is not accepted, so it is re-encoded
    fitted = fit_for_request(data, LIMITS)
    assert (fitted.width, fitted.height) == (427, 640)


def test_a_limit_no_image_can_meet_is_a_clear_error() -> None:
    data = bytes(noise(1200, 1200, 3).pngsave_buffer(compression=1))
    with pytest.raises(ImageError, match=f"below {MIN_SIDE} px"):
        fit_for_request(data, RequestLimits(max_bytes=20_000, max_side=3072))


def test_not_an_image_is_an_image_error() -> None:
    with pytest.raises(ImageError):
        fit_for_request(b"hello", LIMITS)


def test_base64_size() -> None:
    assert [base64_size(n) for n in (0, 1, 2, 3, 4, 7_000_000)] == [0, 4, 4, 4, 8, 9_333_336]


def test_a_bmp_photo_is_re_encoded_for_the_model() -> None:
    # BMP is an allowed source format the endpoints do not take: it is always re-encoded.
    data = _bmp(read_image("rocket.jpg"))
    fitted = fit_for_request(data, LIMITS)
    assert fitted.changed and fitted.mime_type == "image/jpeg"
    assert (fitted.width, fitted.height) == (640, 427)


def _bmp(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGB").save(buffer, "BMP")
    return buffer.getvalue()
