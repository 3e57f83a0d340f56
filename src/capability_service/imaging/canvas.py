"""Placing an image on a plain canvas of the marketplace's target size."""

from __future__ import annotations

import pyvips

from capability_service.imaging.decode import open_image
from capability_service.imaging.encode import encode, to_srgb
from capability_service.imaging.types import EncodedImage, ImageError, OutputFormat


def fit_on_canvas(
    data: bytes,
    width: int,
    height: int,
    background: tuple[int, int, int],
    padding: float,
    fmt: OutputFormat,
    max_pixels: int = 50_000_000,
) -> EncodedImage:
    """Scale the image to fit inside the canvas less `padding` on each side, centred, and encode it."""
    source = open_image(data, max_pixels)
    inner_w = max(1, round(width * (1 - 2 * padding)))
    inner_h = max(1, round(height * (1 - 2 * padding)))
    try:
        image = pyvips.Image.thumbnail_buffer(data, inner_w, height=inner_h, size="both")
        image = to_srgb(image)
        if image.bands == 1:
            image = image.colourspace("srgb")
        if image.hasalpha():
            image = image.flatten(background=list(background))
        canvas = image.gravity("centre", width, height, extend="background", background=list(background))
    except pyvips.Error as exc:
        raise ImageError(f"the image could not be placed on the background: {str(exc).splitlines()[0]}") from None
    out = encode(canvas, fmt, "high")
    return EncodedImage(
        data=out,
        format=fmt,
        width=canvas.width,
        height=canvas.height,
        metadata={"original_width": source.width, "original_height": source.height, "result_bytes": len(out)},
    )
