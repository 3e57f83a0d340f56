"""Guarded decoding: the format is read from the bytes and dimensions are checked before decoding."""

from __future__ import annotations

import pyvips

from capability_service.imaging.types import ImageError


def sniff_format(data: bytes) -> str:
    """The image format decided from the magic bytes alone; raises `ImageError` if it is not allowed."""
    if not data:
        raise ImageError("the source is empty (0 bytes)")
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM":
        return "bmp"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "avif" if head[8:12] in (b"avif", b"avis") else "heic"
    raise ImageError("not a supported image (allowed: JPEG, PNG, WebP, GIF, TIFF, AVIF/HEIC, BMP)")


_HEIF_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"}


def open_image(data: bytes, max_pixels: int, **options: object) -> pyvips.Image:
    """Open lazily from memory after checking format and declared size against `max_pixels`."""
    sniff_format(data)
    try:
        image = pyvips.Image.new_from_buffer(data, "", access="sequential", fail=True, **options)
    except pyvips.Error as exc:
        raise ImageError(f"the image could not be read: {str(exc).splitlines()[0]}") from None
    if image.width <= 0 or image.height <= 0:
        raise ImageError("the image has no pixels (zero width or height)")
    if image.width * image.height > max_pixels:
        raise ImageError(
            f"the image is {image.width}x{image.height} "
            f"({image.width * image.height / 1e6:.1f} MP), above the {max_pixels / 1e6:.0f} MP limit"
        )
    return image
