"""Plain data passed in and out of the pure image functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

OutputFormat = Literal["webp", "jpg", "png", "avif"]
Quality = Literal["low", "standard", "high"]
RGB = tuple[int, int, int]

CONTENT_TYPES: dict[str, str] = {
    "webp": "image/webp",
    "jpg": "image/jpeg",
    "png": "image/png",
    "avif": "image/avif",
}

# Defaults shared by every entry point; the service passes its settings instead.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_FRAMES = 300
DEFAULT_TIMEOUT_SECONDS = 120.0
WHITE: RGB = (255, 255, 255)


class ImageError(Exception):
    """The image cannot be processed (unsupported, broken, too large); the message is user-facing."""


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """An encoded result and what is known about it (see `optimize` for the metadata keys)."""

    data: bytes
    format: OutputFormat
    width: int
    height: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


@dataclass(frozen=True, slots=True)
class OptimizeOptions:
    """How `optimize` resizes and re-encodes one image.

    `png_palette` None means: by preset (quantised to a palette for `low`, lossless otherwise).
    `background` is what transparent pixels become when the output (jpg) has no alpha.
    """

    format: OutputFormat = "webp"
    quality: Quality = "standard"
    max_size: int = 1920
    maintain_aspect: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frames: int = DEFAULT_MAX_FRAMES
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    background: RGB = WHITE
    png_palette: bool | None = None
    keep_animation: bool = True


@dataclass(frozen=True, slots=True)
class EnhanceOptions:
    """How `enhance` improves one image; `level` 0 means no change at all (upscale aside)."""

    level: int = 5
    sharpen: bool = True
    denoise: bool = True
    upscale: bool = False
    format: OutputFormat = "png"
    max_pixels: int = DEFAULT_MAX_PIXELS
    # For PNG (lossless) the preset only sets how hard zlib works; "standard" is 3x faster than "high".
    quality: Quality = "standard"
    max_frames: int = DEFAULT_MAX_FRAMES
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    background: RGB = WHITE
