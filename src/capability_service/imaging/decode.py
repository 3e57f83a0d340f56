"""Guarded decoding: the format is read from the bytes and dimensions are checked before decoding.

Only the loaders of the allowed formats can run: libvips' untrusted loaders and every loader not on
the allow-list are blocked process-wide when this module is imported, and each format is opened by
its own loader rather than by libvips' content sniffing. Decoding is lazy and sequential, so memory
stays bounded by the strip being processed, and a `Deadline` stops a computation that runs too long.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyvips
from PIL import Image as PILImage

from capability_service.core.image_formats import IMAGE_FORMATS, detect_image_format
from capability_service.imaging.types import DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS, ImageError

ALLOWED_FORMATS = IMAGE_FORMATS

_LOADERS: dict[str, str] = {
    "jpeg": "jpegload_buffer",
    "png": "pngload_buffer",
    "webp": "webpload_buffer",
    "gif": "gifload_buffer",
    "tiff": "tiffload_buffer",
    "avif": "heifload_buffer",
    "heic": "heifload_buffer",
}
_ALLOWED_LOADER_CLASSES = (
    "VipsForeignLoadJpeg",
    "VipsForeignLoadPng",
    "VipsForeignLoadWebp",
    "VipsForeignLoadNsgif",
    "VipsForeignLoadTiff",
    "VipsForeignLoadHeif",
)


def harden_libvips() -> None:
    """Block untrusted and non-allowed loaders, and turn off libvips' operation cache.

    The cache would keep recent source buffers and decoded images alive between unrelated requests;
    a service that sees every image once gains nothing from it and pays in memory.
    """
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for name in _ALLOWED_LOADER_CLASSES:
        pyvips.operation_block_set(name, False)
    pyvips.cache_set_max(0)


harden_libvips()


def sniff_format(data: bytes) -> str:
    """The image format decided from the magic bytes alone; raises `ImageError` if it is not allowed."""
    if not data:
        raise ImageError("the source is empty (0 bytes)")
    fmt = detect_image_format(data)
    if fmt is None:
        raise ImageError("not a supported image (allowed: JPEG, PNG, WebP, GIF, TIFF, AVIF/HEIC, BMP)")
    return fmt


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header says, read before any pixel is decoded."""

    format: str
    width: int
    height: int
    frames: int
    orientation: int
    has_alpha: bool
    has_icc: bool

    @property
    def upright_size(self) -> tuple[int, int]:
        """Width and height once the EXIF orientation is applied."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def vips_reason(exc: Exception) -> str:
    """The line of a libvips error that says what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # libvips puts a generic "unable to call X" / "unable to write to memory" first and the actual
    # reason (the decoder's) after it.
    useful = [line for line in lines if not line.startswith("unable to ")]
    return (useful or lines or ["unknown error"])[0]


def _check_size(width: int, height: int, frames: int, max_pixels: int, max_frames: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError("the image has no pixels (zero width or height)")
    if width * height > max_pixels:
        raise ImageError(
            f"the image is {width}x{height} ({width * height / 1e6:.1f} MP), above the {max_pixels / 1e6:g} MP limit"
        )
    if frames > max_frames:
        raise ImageError(f"the image has {frames} frames, above the limit of {max_frames}")


def _load(data: bytes, fmt: str, options: dict[str, Any]) -> pyvips.Image:
    if fmt == "bmp":
        raise AssertionError("bmp is decoded by Pillow")
    try:
        image: pyvips.Image = pyvips.Operation.call(
            _LOADERS[fmt], data, access="sequential", fail_on="warning", **options
        )
    except pyvips.Error as exc:
        reason = vips_reason(exc)
        if reason.startswith("unable to call"):
            # libvips' PNG loader says nothing more of a file cut inside its header.
            reason = "the data is broken or truncated"
        if fmt == "heic":
            reason += " (HEIC/HEVC images are not supported by this build; send JPEG or AVIF)"
        raise ImageError(f"the image could not be read: {reason}") from None
    return image


def _frames(image: pyvips.Image) -> int:
    if image.get_typeof("n-pages"):
        return max(1, int(image.get("n-pages")))
    return 1


def declared_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height read straight from the header bytes for formats where that is trivial.

    Checked before libvips or Pillow see the file, so an absurd size gets our message, not a
    decoder's.
    """
    if fmt == "png" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if fmt == "gif" and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if fmt == "bmp" and len(data) >= 26:
        # Negative heights mean top-down rows, not a smaller image.
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)
        return abs(width), abs(height)
    return None


def _precheck(data: bytes, fmt: str, max_pixels: int) -> None:
    size = declared_size(data, fmt)
    if size is not None:
        _check_size(size[0], size[1], 1, max_pixels, 1)


def probe(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_frames: int = DEFAULT_MAX_FRAMES) -> ImageInfo:
    """Read and check the header: format, size, frames, orientation; nothing is decoded."""
    fmt = sniff_format(data)
    _precheck(data, fmt, max_pixels)
    if fmt == "bmp":
        width, height, alpha = _bmp_header(data)
        _check_size(width, height, 1, max_pixels, max_frames)
        return ImageInfo(fmt, width, height, 1, 1, alpha, False)
    image = _load(data, fmt, {})
    frames = _frames(image)
    _check_size(image.width, image.height, frames, max_pixels, max_frames)
    orientation = int(image.get("orientation")) if image.get_typeof("orientation") else 1
    return ImageInfo(
        format=fmt,
        width=image.width,
        height=image.height,
        frames=frames,
        orientation=orientation if 1 <= orientation <= 8 else 1,
        has_alpha=bool(image.hasalpha()),
        has_icc=bool(image.get_typeof("icc-profile-data")),
    )


def open_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    max_frames: int = DEFAULT_MAX_FRAMES,
    **options: Any,
) -> pyvips.Image:
    """Open lazily from memory after checking format, size and frame count against the limits.

    `options` go to the format's own loader (`shrink` for JPEG, `n` for animations, ...). The
    pixels are decoded only when the returned image is computed, strip by strip.
    """
    fmt = sniff_format(data)
    _precheck(data, fmt, max_pixels)
    if fmt == "bmp":
        return _open_bmp(data, max_pixels)
    image = _load(data, fmt, options)
    frames = _frames(image)
    page_height = image.get_page_height() or image.height
    _check_size(image.width, page_height, frames, max_pixels, max_frames)
    if image.width * image.height > max_pixels:
        # Several frames were asked for: all of them are decoded, so all of them count.
        raise ImageError(
            f"the animation holds {image.width * image.height / 1e6:.1f} MP over its frames, "
            f"above the {max_pixels / 1e6:g} MP limit"
        )
    return image


def _bmp_header(data: bytes) -> tuple[int, int, bool]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data), formats=["BMP", "DIB"]) as im:
                return im.width, im.height, "A" in im.getbands()
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        raise ImageError(f"the image could not be read: {exc}") from None


def _open_bmp(data: bytes, max_pixels: int) -> pyvips.Image:
    # libvips reads BMP only through ImageMagick, which is not allowed; Pillow's reader is small and
    # the size is checked from the header before a pixel is decoded.
    width, height, _alpha = _bmp_header(data)
    _check_size(width, height, 1, max_pixels, 1)
    return _bmp_pixels(data)


def load_checked(data: bytes, **options: Any) -> pyvips.Image:
    """`pyvips.Image.new_from_buffer` for bytes that `open_image` or `probe` has already accepted.

    BMP, which libvips cannot load here, comes from Pillow (already decoded; `options` do not apply).
    """
    if detect_image_format(data) == "bmp":
        return _bmp_pixels(data)
    return pyvips.Image.new_from_buffer(data, "", **options)


def thumbnail_checked(data: bytes, width: int, **options: Any) -> pyvips.Image:
    """`pyvips.Image.thumbnail_buffer` for bytes that `open_image` or `probe` has already accepted (BMP too)."""
    if detect_image_format(data) == "bmp":
        return _bmp_pixels(data).thumbnail_image(width, **options)
    return pyvips.Image.thumbnail_buffer(data, width, **options)


def _bmp_pixels(data: bytes) -> pyvips.Image:
    _width, _height, alpha = _bmp_header(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data), formats=["BMP", "DIB"]) as im:
                array = np.asarray(im.convert("RGBA" if alpha else "RGB"))
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        raise ImageError(f"the image could not be read: {exc}") from None
    return pyvips.Image.new_from_array(array, interpretation="srgb")


class Deadline:
    """Stops libvips computations of an image once `seconds` have passed since creation."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self._handlers: list[Callable[[pyvips.Image, Any], None]] = []

    @property
    def expired(self) -> bool:
        return time.monotonic() > self.expires

    def watch(self, image: pyvips.Image) -> pyvips.Image:
        """Attach the deadline to the image about to be computed; returns it for chaining."""

        def on_eval(target: pyvips.Image, _progress: Any) -> None:
            if time.monotonic() > self.expires:
                target.set_kill(True)

        image.set_progress(True)
        image.signal_connect("eval", on_eval)
        self._handlers.append(on_eval)
        return image

    def check(self) -> None:
        if self.expired:
            raise self.error()

    def error(self) -> ImageError:
        return ImageError(f"processing took longer than the {self.seconds:g} s limit for one image")


def vips_error(exc: pyvips.Error, doing: str, deadline: Deadline | None = None) -> ImageError:
    """The user-facing error for a libvips failure while `doing` something."""
    if deadline is not None and (deadline.expired or "killed" in str(exc)):
        return deadline.error()
    reason = vips_reason(exc)
    # Decoding is lazy, so a broken file often fails only while the result is being written.
    if any(word in reason.lower() for word in _DECODE_WORDS):
        return ImageError(f"the image data is broken or truncated: {reason}")
    return ImageError(f"the image could not be {doing}: {reason}")


_DECODE_WORDS = ("corrupt", "premature", "truncat", "read error", "out of order read", "load", "decode", "crc")
