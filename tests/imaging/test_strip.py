"""Lossless metadata removal keeps the pixels and drops EXIF, XMP and text."""

from __future__ import annotations

import numpy as np
import pytest

from capability_service.imaging.strip import strip_metadata
from capability_service.imaging.types import ImageError
from tests.imaging.samples import XMP, exif_with_gps, pil, pixels, read, save


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_strip_keeps_pixels_and_drops_metadata(fmt: str) -> None:
    photo = pil(read("rocket.jpg")).convert("RGB")
    params: dict[str, object] = {"exif": exif_with_gps(), "xmp": XMP}
    if fmt == "PNG":
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "shot at home")
        params["pnginfo"] = info
    data = save(photo, fmt, **params)
    assert b"TestCam" in data
    stripped = strip_metadata(data, {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}[fmt])
    assert b"TestCam" not in stripped and XMP not in stripped and b"shot at home" not in stripped
    assert len(stripped) < len(data)
    assert np.array_equal(pixels(stripped), pixels(data))
    assert not pil(stripped).getexif()


def test_broken_structure_is_an_image_error() -> None:
    data = read("rocket.jpg")
    with pytest.raises(ImageError):
        strip_metadata(data[:30], "jpeg")
    with pytest.raises(ImageError):
        strip_metadata(read("chelsea.png")[:100], "png")
