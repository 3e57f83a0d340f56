"""Background replacement: a remote image model when one is configured, a plain backdrop otherwise."""

from __future__ import annotations

import re
import time

from capability_service.imaging.canvas import fit_on_canvas
from capability_service.imaging.types import EncodedImage
from capability_service.plugins.ai_playground.configs import (
    TEMPERATURE_BY_QUALITY,
    BackgroundReplacementConfig,
)
from capability_service.plugins.base import PluginDeps, ProcessContext
from capability_service.providers.base import EditRequest

_HEX = re.compile(r"#([0-9a-f]{6})\b", re.I)
_NAMED = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "grey": (200, 200, 200),
    "gray": (200, 200, 200),
    "beige": (245, 245, 220),
    "blue": (200, 220, 245),
}


def backdrop_colour(prompt: str) -> tuple[tuple[int, int, int], bool]:
    """The backdrop colour a prompt names, and whether it named one we understood."""
    match = _HEX.search(prompt)
    if match:
        value = int(match.group(1), 16)
        return ((value >> 16) & 255, (value >> 8) & 255, value & 255), True
    for word, rgb in _NAMED.items():
        if word in prompt.lower():
            return rgb, True
    return (255, 255, 255), False


def aspect_ratio(width: int, height: int) -> str:
    from math import gcd

    divisor = gcd(width, height)
    return f"{width // divisor}:{height // divisor}"


async def replace_background(
    config: BackgroundReplacementConfig, source: bytes, ctx: ProcessContext, deps: PluginDeps
) -> EncodedImage:
    settings = deps.settings
    width, height = settings.ai_target_width, settings.ai_target_height
    started = time.perf_counter()
    if deps.provider is not None:
        result = await deps.provider.edit(
            EditRequest(
                image=source,
                mime_type="image/png",
                prompt=config.background_prompt,
                negative_prompt=config.negative_prompt,
                temperature=TEMPERATURE_BY_QUALITY[config.quality],
                aspect_ratio=aspect_ratio(width, height),
                seed=config.seed,
            )
        )
        out = await ctx.run_cpu(
            fit_on_canvas,
            result.image,
            width,
            height,
            (255, 255, 255),
            0.0,
            config.format,
            settings.max_image_pixels,
        )
        out.metadata.update({"engine": deps.provider.name, "mode": "generative", **result.details})
    else:
        colour, understood = backdrop_colour(config.background_prompt)
        out = await ctx.run_cpu(
            fit_on_canvas,
            source,
            width,
            height,
            colour,
            config.padding,
            config.format,
            settings.max_image_pixels,
        )
        out.metadata.update(
            {"engine": "offline", "mode": "composite", "background": "#{:02x}{:02x}{:02x}".format(*colour)}
        )
        if not understood:
            out.metadata["note"] = "the prompt names no colour the offline engine knows; used white"
    out.metadata["processing_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return out
