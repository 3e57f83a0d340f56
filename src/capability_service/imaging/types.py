"""Plain data passed in and out of the pure image functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

OutputFormat = Literal["webp", "jpg", "png", "avif"]
Quality = Literal["low", "standard", "high"]

CONTENT_TYPES: dict[str, str] = {
    "webp": "image/webp",
    "jpg": "image/jpeg",
    "png": "image/png",
    "avif": "image/avif",
}


class ImageError(Exception):
    """The image cannot be processed (unsupported, broken, too large); the message is user-facing."""


@dataclass(frozen=True, slots=True)
class EncodedImage:
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
    format: OutputFormat = "webp"
    quality: Quality = "standard"
    max_size: int = 1920
    maintain_aspect: bool = True
    max_pixels: int = 50_000_000


@dataclass(frozen=True, slots=True)
class EnhanceOptions:
    level: int = 5
    sharpen: bool = True
    denoise: bool = True
    upscale: bool = False
    format: OutputFormat = "png"
    max_pixels: int = 50_000_000
