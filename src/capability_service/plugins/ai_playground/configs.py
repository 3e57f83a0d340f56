"""Config models of the three AI Playground job types, with the front end's camelCase names."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from capability_service.core.config import Settings
from capability_service.imaging.types import EnhanceOptions, OptimizeOptions, Quality
from capability_service.plugins.base import CamelModel, decode_limits


class JobType(StrEnum):
    # The product, unchanged, on a new background described by a prompt.
    background_replacement = "background_replacement"
    # Resized and re-encoded small.
    batch_optimization = "batch_optimization"
    # Sharper, cleaner, better contrast; optionally upscaled 2x.
    image_enhancement = "image_enhancement"


# Generation temperature per quality preset, relative to `AI_DEFAULT_TEMPERATURE` (the `standard` one):
# higher quality means a steadier, less inventive model. With the default 0.5: 0.7 / 0.5 / 0.3.
TEMPERATURE_OFFSET_BY_QUALITY: dict[str, float] = {"low": 0.2, "standard": 0.0, "high": -0.2}


def temperature_for(quality: str, default: float) -> float:
    """The generation temperature of a quality preset around the configured default, within 0..2."""
    return round(min(2.0, max(0.0, default + TEMPERATURE_OFFSET_BY_QUALITY[quality])), 3)


class BackgroundReplacementConfig(CamelModel):
    background_prompt: str = Field(min_length=1, max_length=2000)
    negative_prompt: str = Field("", max_length=2000)
    quality: Quality = "standard"
    format: Literal["png", "jpg", "webp"] = "png"
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    # composite: the product's own pixels on a new background (never altered);
    # generative: the model edits the whole photo (may alter the product).
    mode: Literal["composite", "generative"] = "composite"
    background_image_url: str | None = Field(None, max_length=8192)
    padding: float = Field(0.08, ge=0.0, le=0.4)
    shadow: bool = True


class BatchOptimizationConfig(CamelModel):
    quality: Quality = "standard"
    format: Literal["webp", "jpg", "png", "avif"] = "webp"
    max_size: int = Field(1920, ge=16, le=10_000)
    maintain_aspect: bool = True

    def options(self, settings: Settings) -> OptimizeOptions:
        return OptimizeOptions(
            format=self.format,
            quality=self.quality,
            max_size=self.max_size,
            maintain_aspect=self.maintain_aspect,
            **decode_limits(settings),
        )


class ImageEnhancementConfig(CamelModel):
    enhancement_level: int = Field(5, ge=0, le=10)
    sharpen: bool = True
    denoise: bool = True
    upscale: bool = False
    format: Literal["png", "jpg", "webp", "avif"] = "png"

    def options(self, settings: Settings) -> EnhanceOptions:
        return EnhanceOptions(
            level=self.enhancement_level,
            sharpen=self.sharpen,
            denoise=self.denoise,
            upscale=self.upscale,
            format=self.format,
            **decode_limits(settings),
        )
