"""Colour normalisation and encoding to the output formats with per-preset settings.

Encoder settings per quality preset were chosen by measuring bytes and time on real photos resized
to 1920 px (see the README's performance section):

- WebP: effort 2 gives files within 2-5 % of effort 4 in well under half the time, and above Q90
  more effort buys nothing, so `low` (where bytes are the point) uses 4, `standard` 2, `high` 1.
- PNG: libvips writes no row filter by default, which doubles the size of photos; the `up` filter
  at zlib level 3 is smaller than Pillow's level 6 adaptive output and several times faster.
"""

from __future__ import annotations

import io
import time
from typing import Any

import pyvips
from PIL import ImageCms

from capability_service.imaging.decode import Deadline, ImageInfo, vips_error
from capability_service.imaging.types import RGB, WHITE, EncodedImage, ImageError, OutputFormat, Quality

QUALITY_VALUES: dict[Quality, int] = {"low": 70, "standard": 85, "high": 95}
# AVIF's Q scale is harsher than JPEG's: these give about the same look as jpg 70/85/95.
AVIF_QUALITY: dict[Quality, int] = {"low": 45, "standard": 60, "high": 75}
WEBP_EFFORT: dict[Quality, int] = {"low": 4, "standard": 2, "high": 1}
AVIF_EFFORT: dict[Quality, int] = {"low": 4, "standard": 3, "high": 3}
# libpng row filter flags.
PNG_FILTER_UP = 0x20
PNG_FILTER_ALL = 0xF8
PNG_SETTINGS: dict[Quality, dict[str, int]] = {
    "low": {"compression": 6, "filter": PNG_FILTER_ALL},
    "standard": {"compression": 3, "filter": PNG_FILTER_UP},
    "high": {"compression": 6, "filter": PNG_FILTER_ALL},
}
PALETTE_QUALITY = 80


def quality_value(fmt: OutputFormat, quality: Quality, png_palette: bool = False) -> int | None:
    """The encoder's quality number for a preset (None for lossless PNG)."""
    if fmt == "avif":
        return AVIF_QUALITY[quality]
    if fmt == "png":
        return PALETTE_QUALITY if png_palette else None
    return QUALITY_VALUES[quality]


def _profile_description(profile: bytes) -> str:
    try:
        return str(ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile)))).strip()
    except (OSError, ImageCms.PyCMSError, TypeError, ValueError):
        return ""


def _strip_profile(image: pyvips.Image) -> pyvips.Image:
    if image.get_typeof("icc-profile-data"):
        image = image.copy()
        image.remove("icc-profile-data")
    return image


def to_srgb(image: pyvips.Image, notes: dict[str, Any] | None = None) -> pyvips.Image:
    """8-bit sRGB (or 8-bit grey), converted through the embedded ICC profile when there is one.

    A converted image carries libvips' compact sRGB profile so colour-managed viewers keep showing
    the right colours; an image without a profile is assumed sRGB and stays untagged.
    """
    notes = {} if notes is None else notes
    profile = bytes(image.get("icc-profile-data")) if image.get_typeof("icc-profile-data") else None
    colour_bands = image.bands - (1 if image.hasalpha() else 0)
    interpretation = image.interpretation
    try:
        if interpretation == "cmyk" or colour_bands == 4:
            description = _profile_description(profile) if profile else "generic CMYK"
            # Black point compensation maps the ink black to sRGB black, as Photoshop does by default.
            image = image.icc_transform(
                "srgb", embedded=profile is not None, input_profile="cmyk", black_point_compensation=True
            )
            notes["colour_converted_from"] = description or "CMYK"
        elif colour_bands <= 2 and interpretation in ("b-w", "grey16", "multiband"):
            image = _strip_profile(image)
            if image.format != "uchar":
                image = image.colourspace("b-w")
        elif profile is not None:
            description = _profile_description(profile)
            if description and "srgb" not in description.lower():
                image = image.icc_transform("srgb", embedded=True, intent="relative")
                notes["colour_converted_from"] = description
            elif not description:
                # An unreadable profile would make lcms fail later; treat the pixels as sRGB.
                image = _strip_profile(image)
                notes["icc_ignored"] = "the embedded colour profile is unreadable"
        if image.interpretation not in ("srgb", "b-w"):
            image = image.colourspace("srgb")
        if image.format != "uchar":
            image = image.cast("uchar")
    except pyvips.Error as exc:
        raise ImageError(f"the colours could not be converted to sRGB: {exc}") from None
    return image


def flatten(image: pyvips.Image, background: RGB = WHITE) -> pyvips.Image:
    """Composite transparent pixels onto `background` and drop the alpha band."""
    if image.hasalpha():
        colour = list(background) if image.bands > 2 else [sum(background) / 3]
        image = image.flatten(background=colour)
        if image.format != "uchar":
            image = image.cast("uchar")
    return image


def drop_opaque_alpha(image: pyvips.Image) -> pyvips.Image:
    """Remove an alpha band that is fully opaque everywhere (the image must be in memory)."""
    if image.hasalpha() and image.extract_band(image.bands - 1).min() >= 255:
        return image.extract_band(0, n=image.bands - 1)
    return image


def encode(
    image: pyvips.Image,
    fmt: OutputFormat,
    quality: Quality,
    *,
    background: RGB = WHITE,
    png_palette: bool | None = None,
    deadline: Deadline | None = None,
) -> bytes:
    """Encode with the preset's settings; metadata is stripped except an sRGB colour profile."""
    keep = "icc"
    try:
        if fmt == "jpg":
            image = flatten(image, background)
            if deadline:
                deadline.watch(image)
            return bytes(
                image.jpegsave_buffer(Q=QUALITY_VALUES[quality], optimize_coding=True, interlace=True, keep=keep)
            )
        if deadline:
            deadline.watch(image)
        if fmt == "webp":
            return bytes(
                image.webpsave_buffer(
                    Q=QUALITY_VALUES[quality], effort=WEBP_EFFORT[quality], keep=keep, smart_deblock=False
                )
            )
        if fmt == "png":
            palette = quality == "low" if png_palette is None else png_palette
            if palette:
                return bytes(
                    image.pngsave_buffer(
                        palette=True, Q=PALETTE_QUALITY, effort=4, dither=1.0, compression=6, keep=keep
                    )
                )
            return bytes(image.pngsave_buffer(keep=keep, **PNG_SETTINGS[quality]))
        if fmt == "avif":
            return bytes(
                image.heifsave_buffer(
                    Q=AVIF_QUALITY[quality], compression="av1", effort=AVIF_EFFORT[quality], keep=keep
                )
            )
    except pyvips.Error as exc:
        raise vips_error(exc, f"encoded as {fmt}", deadline) from None
    raise ImageError(f"unknown output format {fmt!r}")


def encoded_result(
    source: bytes,
    info: ImageInfo,
    out: bytes,
    fmt: OutputFormat,
    size: tuple[int, int],
    quality: int | None,
    details: dict[str, Any],
    started: float,
    timings: dict[str, float],
) -> EncodedImage:
    """`out` as a result of `source`, with the metadata every re-encoding reports.

    Source and result facts come first, then the operation's own `details`, then the time since
    `started` (a `time.perf_counter()` reading) and the `timings` of its steps.
    """
    source_w, source_h = info.upright_size
    width, height = size
    return EncodedImage(
        data=out,
        format=fmt,
        width=width,
        height=height,
        metadata={
            "original_width": source_w,
            "original_height": source_h,
            "original_bytes": len(source),
            "original_format": info.format,
            "result_width": width,
            "result_height": height,
            "result_bytes": len(out),
            "result_format": fmt,
            "compression_ratio": round(len(source) / len(out), 3),
            "quality": quality,
            **details,
            "processing_ms": round((time.perf_counter() - started) * 1000, 1),
            "timings": timings,
        },
    )
