"""Shrinking an image so a remote model's request accepts it (size per image, pixels, formats)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyvips

from capability_service.imaging.decode import load_checked, open_image, sniff_format, vips_reason
from capability_service.imaging.encode import to_srgb
from capability_service.imaging.types import ImageError

MIME_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
    "avif": "image/avif",
    "heic": "image/heic",
}

# Below this longest side a product photo is no use to a model; refuse rather than send a smudge.
MIN_SIDE = 256
# Each shrink step aims this far under the byte budget, since encoded size is not linear in area.
_SAFETY = 0.9
_MAX_STEPS = 8


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one model endpoint accepts for one input image."""

    max_bytes: int
    max_side: int
    formats: frozenset[str] = frozenset({"jpeg", "png", "webp"})


@dataclass(frozen=True, slots=True)
class FittedImage:
    data: bytes
    mime_type: str
    width: int
    height: int
    # False when the original bytes are sent unchanged.
    changed: bool
    original_bytes: int


def base64_size(n: int) -> int:
    """Bytes of the base64 text of `n` bytes (padding included)."""
    return 4 * math.ceil(n / 3)


def fit_for_request(data: bytes, limits: RequestLimits, max_pixels: int = 50_000_000) -> FittedImage:
    """The image as the endpoint accepts it: unchanged when it already fits, else re-encoded smaller.

    Opaque images become JPEG (quality 90, then smaller), images with transparency PNG then lossy
    WebP, so a cut-out keeps its alpha. Orientation from EXIF is applied before re-encoding, since
    metadata is dropped. Raises `ImageError` when even a `MIN_SIDE` version is too large.
    """
    source_format = sniff_format(data)
    image = open_image(data, max_pixels)
    longest = max(image.width, image.height)
    if source_format in limits.formats and len(data) <= limits.max_bytes and longest <= limits.max_side:
        return FittedImage(
            data=data,
            mime_type=MIME_TYPES[source_format],
            width=image.width,
            height=image.height,
            changed=False,
            original_bytes=len(data),
        )
    try:
        full = load_checked(data, access="random", fail=True)
        full = to_srgb(full.autorot())
        if full.bands == 1 or (full.bands == 2 and full.hasalpha()):
            full = full.colourspace("srgb")
        if full.format != "uchar":
            full = full.cast("uchar")
    except pyvips.Error as exc:
        raise ImageError(f"the image could not be prepared for the model: {vips_reason(exc)}") from None
    alpha = full.hasalpha()
    side = min(limits.max_side, max(full.width, full.height))
    for step in range(_MAX_STEPS):
        scaled = _scale_to(full, side)
        encoded, mime = _encode(scaled, alpha, step, limits.formats)
        if len(encoded) <= limits.max_bytes:
            return FittedImage(
                data=encoded,
                mime_type=mime,
                width=scaled.width,
                height=scaled.height,
                changed=True,
                original_bytes=len(data),
            )
        if side <= MIN_SIDE:
            break
        side = max(MIN_SIDE, int(side * math.sqrt(limits.max_bytes / len(encoded)) * _SAFETY))
    raise ImageError(
        f"the image cannot be made smaller than {limits.max_bytes / 1e6:.1f} MB for the model "
        f"without shrinking it below {MIN_SIDE} px"
    )


def _scale_to(image: pyvips.Image, side: int) -> pyvips.Image:
    longest = max(image.width, image.height)
    if longest <= side:
        return image
    return image.resize(side / longest, kernel="lanczos3")


def _encode(image: pyvips.Image, alpha: bool, step: int, formats: frozenset[str]) -> tuple[bytes, str]:
    try:
        if alpha:
            # Lossless first: a cut-out's edges matter; lossy WebP only when PNG will not fit.
            if step == 0 and "png" in formats:
                return bytes(image.pngsave_buffer(compression=9, keep="none")), "image/png"
            if "webp" in formats:
                return bytes(image.webpsave_buffer(Q=90, effort=4, keep="none")), "image/webp"
            return bytes(image.pngsave_buffer(compression=9, keep="none")), "image/png"
        opaque = image.flatten(background=[255, 255, 255]) if image.hasalpha() else image
        if "jpeg" in formats:
            return bytes(opaque.jpegsave_buffer(Q=90, optimize_coding=True, keep="none")), "image/jpeg"
        return bytes(opaque.pngsave_buffer(compression=9, keep="none")), "image/png"
    except pyvips.Error as exc:
        raise ImageError(f"the image could not be encoded for the model: {vips_reason(exc)}") from None
