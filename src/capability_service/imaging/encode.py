"""Encoding to the output formats with per-quality settings."""

from __future__ import annotations

import pyvips

from capability_service.imaging.types import ImageError, OutputFormat, Quality

QUALITY_VALUES: dict[Quality, int] = {"low": 70, "standard": 85, "high": 95}


def to_srgb(image: pyvips.Image) -> pyvips.Image:
    if image.interpretation not in ("srgb", "b-w"):
        image = image.colourspace("srgb")
    return image


def flatten(image: pyvips.Image, background: tuple[int, int, int] = (255, 255, 255)) -> pyvips.Image:
    if image.hasalpha():
        image = image.flatten(background=list(background))
    return image


def encode(image: pyvips.Image, fmt: OutputFormat, quality: Quality) -> bytes:
    q = QUALITY_VALUES[quality]
    try:
        if fmt == "jpg":
            return bytes(flatten(image).jpegsave_buffer(Q=q, optimize_coding=True, interlace=True, keep="none"))
        if fmt == "webp":
            return bytes(image.webpsave_buffer(Q=q, effort=4, keep="none"))
        if fmt == "png":
            return bytes(image.pngsave_buffer(compression=6, keep="none"))
        if fmt == "avif":
            return bytes(image.heifsave_buffer(Q=q, compression="av1", effort=4, keep="none"))
    except pyvips.Error as exc:
        raise ImageError(f"the image could not be encoded as {fmt}: {str(exc).splitlines()[0]}") from None
    raise ImageError(f"unknown output format {fmt!r}")
