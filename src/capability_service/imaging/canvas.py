"""Fitting a whole image to the marketplace's target canvas, and preparing a photo to send to a model."""

from __future__ import annotations

import time

import numpy as np
import pyvips

from capability_service.imaging.decode import open_image, thumbnail_checked, vips_reason
from capability_service.imaging.encode import encode, to_srgb
from capability_service.imaging.types import EncodedImage, ImageError, OutputFormat, Quality


def _read(data: bytes, width: int, height: int, size: str) -> pyvips.Image:
    image = to_srgb(thumbnail_checked(data, width, height=height, size=size))
    if image.format != "uchar":
        image = image.cast("uchar")
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    if image.bands == 1:
        image = image.colourspace("srgb")
    return image


def fit_to_target(
    data: bytes, width: int, height: int, fmt: OutputFormat, max_pixels: int, quality: Quality = "high"
) -> EncodedImage:
    """The image scaled to fit (width, height), centred, padded with the mean colour of its own border.

    Padding with the picture's own edge colour makes a near-3:4 answer look framed, not letterboxed.
    """
    started = time.perf_counter()
    source = open_image(data, max_pixels)
    try:
        # Read once into memory: the border colour and the encoder both need the pixels.
        image = _read(data, width, height, "both").copy_memory()
        pixels = np.asarray(image.numpy(), dtype=np.uint8)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).mean(axis=0)
        fill = [round(float(value)) for value in border[:3]]
        canvas = image.gravity("centre", width, height, extend="background", background=fill)
    except pyvips.Error as exc:
        raise ImageError(f"the image could not be placed on the canvas: {vips_reason(exc)}") from None
    decoded = time.perf_counter()
    out = encode(canvas, fmt, quality)
    timings = {"decode_ms": _ms(started, decoded), "encode_ms": _ms(decoded, time.perf_counter())}
    return EncodedImage(
        data=out,
        format=fmt,
        width=canvas.width,
        height=canvas.height,
        metadata={"original_width": source.width, "original_height": source.height, "timings": timings},
    )


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 1)


def upright_jpeg(data: bytes, max_pixels: int, max_side: int = 2048) -> bytes:
    """The photo upright, sRGB, at most `max_side` pixels long, as a JPEG small enough to send."""
    open_image(data, max_pixels)
    try:
        image = _read(data, max_side, max_side, "down")
        return bytes(image.jpegsave_buffer(Q=92, keep="none"))
    except pyvips.Error as exc:
        raise ImageError(f"the image could not be read: {vips_reason(exc)}") from None
