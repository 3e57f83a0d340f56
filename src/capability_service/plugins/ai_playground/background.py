"""Background replacement: the product, exactly as photographed, on a new background.

Mode `composite` (the default) never changes the product. The product is cut out locally (a
segmentation model on the CPU), the background is made separately, and the product's own pixels are
placed on it at the target size, centred within the padding:

- with `backgroundImageUrl`, the background is that image (scaled to cover the canvas);
- with a remote image model configured, the model is shown the layout (the product already where it
  will be, on a neutral backdrop) and asked to paint the scene described by the prompt around it;
  whatever it does to the product is covered by the original pixels;
- otherwise the offline engine draws what the prompt names (colours, hex codes, gradients, studio
  sweeps), white with a note when it understands nothing.

Mode `generative` lets the remote model edit the whole photo (re-lit, re-posed): the one mode that may
alter the product. Its answer is fitted to the target size and padded with its own edge colour.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from capability_service.imaging import background as backgrounds
from capability_service.imaging import canvas, composite
from capability_service.imaging.types import EncodedImage, ImageError, OutputFormat, Quality
from capability_service.plugins.ai_playground.configs import BackgroundReplacementConfig, temperature_for
from capability_service.plugins.base import ImageWarning, PluginDeps, ProcessContext
from capability_service.providers.base import EditRequest

# What the remote model is shown behind the product while it paints the scene.
NEUTRAL_BACKDROP = backgrounds.BackgroundSpec(kind="solid", colours=((236, 236, 236),), description="neutral")

SCENE_PROMPT = (
    "This is a product photo layout: the product is already placed on a plain neutral backdrop. "
    "Replace only the backdrop with this scene: {prompt}. Keep the product exactly where it is, at the "
    "same size and angle, and do not change, redraw, recolour or add text to it. Light the scene so it "
    "suits the product, with a natural contact shadow. Photorealistic, e-commerce marketplace main image."
)
GENERATIVE_PROMPT = (
    "Edit this product photo: {prompt}. Keep the product recognisably the same product. "
    "E-commerce marketplace main image, photorealistic."
)


def aspect_ratio(width: int, height: int) -> str:
    divisor = math.gcd(width, height)
    return f"{width // divisor}:{height // divisor}"


def model_request(
    config: BackgroundReplacementConfig, jpeg: bytes, template: str, width: int, height: int, temperature: float
) -> EditRequest:
    """What the remote model is sent: a JPEG, the seller's prompt in `template`, the target's shape."""
    return EditRequest(
        image=jpeg,
        mime_type="image/jpeg",
        prompt=template.format(prompt=config.background_prompt),
        negative_prompt=config.negative_prompt,
        temperature=temperature_for(config.quality, temperature),
        aspect_ratio=aspect_ratio(width, height),
        seed=config.seed,
    )


def upscale_warnings(placement: composite.Placement, limit: float) -> list[ImageWarning]:
    """A `product_upscaled` warning when the product had to be enlarged more than `limit` times."""
    if placement.scale <= limit:
        return []
    _, _, crop_w, crop_h = placement.crop
    _, _, box_w, box_h = placement.box
    # The source size at which the product would need no more than `limit` times enlarging.
    wanted_w, wanted_h = math.ceil(box_w / limit), math.ceil(box_h / limit)
    message = (
        f"the product is {crop_w}x{crop_h} px in the photo and was enlarged {placement.scale:.1f}x to fill the "
        f"canvas, so it looks soft; use a photo in which the product is at least {wanted_w}x{wanted_h} px"
    )
    return [
        ImageWarning(code="product_upscaled", message=message, product_scale=round(placement.scale, 2), limit=limit)
    ]


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


async def replace_background(
    config: BackgroundReplacementConfig, source: bytes, ctx: ProcessContext, deps: PluginDeps
) -> EncodedImage:
    """One photo with its background replaced; per-image errors are `ImageError`/`ProviderError`."""
    if config.mode == "generative":
        return await _generative(config, source, ctx, deps)
    return await _composite(config, source, ctx, deps)


async def _composite(
    config: BackgroundReplacementConfig, source: bytes, ctx: ProcessContext, deps: PluginDeps
) -> EncodedImage:
    settings = deps.settings
    width, height = settings.ai_target_width, settings.ai_target_height
    started = time.perf_counter()
    timings: dict[str, float] = {}
    note: str | None = None
    details: dict[str, Any] = {}
    shadow = config.shadow
    if deps.provider is not None and not config.background_image_url:
        out, cutout, remote_timings, details = await _on_remote_scene(config, source, ctx, deps)
        timings.update(remote_timings)
        engine = deps.provider.name
        description = f"scene painted by the remote model: {config.background_prompt}"
        # The painted scene brings its own light and shadow around the product.
        shadow = False
    else:
        cutout = await ctx.run_cpu(
            composite.cut_out, source, (width, height), config.padding, settings.max_image_pixels
        )
        timings["segment_ms"] = _ms(started)
        step = time.perf_counter()
        if config.background_image_url:
            data = await ctx.read_source(config.background_image_url)
            canvas_bg = await ctx.run_cpu(backgrounds.from_image, data, width, height, settings.max_image_pixels)
            engine = "offline"
            description = "the image at backgroundImageUrl, scaled to cover"
        else:
            spec = backgrounds.parse_prompt(config.background_prompt)
            canvas_bg = await ctx.run_cpu(backgrounds.render, spec, width, height)
            engine = "offline"
            description = spec.description
            note = spec.note
        timings["background_ms"] = _ms(step)
        step = time.perf_counter()
        out = await ctx.run_cpu(_compose_and_encode, cutout, canvas_bg, shadow, config.format)
        timings["composite_ms"] = _ms(step)
    timings.update({f"segment_{key}": value for key, value in cutout.timings.items()})
    timings["processing_ms"] = _ms(started)
    # The stages the service's metrics follow: decoding the photo (for the model, then at full scale
    # for the product) and encoding the canvas.
    timings["decode_ms"] = round(cutout.timings.get("decode_ms", 0.0) + cutout.timings.get("decode_product_ms", 0.0), 1)
    timings["encode_ms"] = out.metadata.pop("timings", {}).get("encode_ms", 0.0)
    out.metadata.update(
        {
            "engine": engine,
            "mode": "composite",
            "segmentation": cutout.engine,
            "mask_coverage": round(cutout.coverage, 4),
            "background": description,
            "shadow": shadow,
            "placement": cutout.placement.as_dict(),
            # Canvas pixels per source pixel: above 1 the product was enlarged (see `warnings`).
            "product_scale": round(cutout.placement.scale, 3),
            "warnings": [
                warning.as_metadata() for warning in upscale_warnings(cutout.placement, settings.product_scale_warning)
            ],
            "product_preserved": True,
            **({"note": note} if note else {}),
            "timings": timings,
            **details,
        }
    )
    return out


async def _on_remote_scene(
    config: BackgroundReplacementConfig, source: bytes, ctx: ProcessContext, deps: PluginDeps
) -> tuple[EncodedImage, composite.Cutout, dict[str, float], dict[str, Any]]:
    """The product on a scene the remote model paints around its layout.

    The model's wait is the longest part, so the CPU work is arranged around it: the product is found
    and the layout made in one step, the model is called at once, and the full-scale matte is made
    while it paints (the call itself holds no CPU slot). Decoding its answer, composing and encoding
    are one step after it.
    """
    assert deps.provider is not None
    settings = deps.settings
    width, height = settings.ai_target_width, settings.ai_target_height
    timings: dict[str, float] = {}
    started = time.perf_counter()
    found, layout = await ctx.run_cpu(
        _find_and_lay_out, source, (width, height), config.padding, settings.max_image_pixels
    )
    timings["segment_ms"] = _ms(started)
    step = time.perf_counter()
    finishing = asyncio.ensure_future(ctx.run_cpu(composite.finish, found))
    try:
        result = await deps.provider.edit(
            model_request(config, layout, SCENE_PROMPT, width, height, settings.ai_default_temperature)
        )
    except BaseException:
        finishing.cancel()
        await asyncio.gather(finishing, return_exceptions=True)
        raise
    timings["remote_ms"] = _ms(step)
    cutout = await finishing
    timings["background_ms"] = _ms(step)
    step = time.perf_counter()
    out = await ctx.run_cpu(_paint_compose_and_encode, result.image, cutout, config.format, settings.max_image_pixels)
    timings["composite_ms"] = _ms(step)
    return out, cutout, timings, {f"model_{key}": value for key, value in result.details.items()}


def _find_and_lay_out(
    source: bytes, canvas: tuple[int, int], padding: float, max_pixels: int
) -> tuple[composite.Found, bytes]:
    # One CPU step, so the layout follows the segmentation at once instead of queueing behind other images.
    found = composite.find(source, canvas, padding, max_pixels)
    return found, composite.layout(found, NEUTRAL_BACKDROP.colours[0])


def _paint_compose_and_encode(
    scene: bytes, cutout: composite.Cutout, fmt: OutputFormat, max_pixels: int
) -> EncodedImage:
    width, height = cutout.canvas
    return _compose_and_encode(cutout, backgrounds.from_image(scene, width, height, max_pixels), False, fmt)


def _compose_and_encode(
    cutout: composite.Cutout, canvas_bg: npt.NDArray[np.uint8], shadow: bool, fmt: OutputFormat
) -> EncodedImage:
    return composite.encode_canvas(composite.compose(cutout, canvas_bg, shadow), fmt, result_quality(fmt))


def result_quality(fmt: OutputFormat) -> Quality:
    """The encoder preset of a result: the same pixels whatever the preset for PNG, the best for lossy formats.

    PNG is lossless at every setting: zlib 3 with the "up" filter encodes a 1500x2000 canvas in ~40 ms
    against ~150 ms for zlib 6 with adaptive filters, for ~6 % more bytes.
    """
    return "standard" if fmt == "png" else "high"


async def _generative(
    config: BackgroundReplacementConfig, source: bytes, ctx: ProcessContext, deps: PluginDeps
) -> EncodedImage:
    provider = deps.provider
    if provider is None:
        raise ImageError("generative background replacement needs a remote image model: set AI_API_KEY")
    settings = deps.settings
    width, height = settings.ai_target_width, settings.ai_target_height
    started = time.perf_counter()
    upright = await ctx.run_cpu(canvas.upright_jpeg, source, settings.max_image_pixels)
    remote = time.perf_counter()
    result = await provider.edit(
        model_request(config, upright, GENERATIVE_PROMPT, width, height, settings.ai_default_temperature)
    )
    remote_ms = _ms(remote)
    out = await ctx.run_cpu(
        canvas.fit_to_target,
        result.image,
        width,
        height,
        config.format,
        settings.max_image_pixels,
        result_quality(config.format),
    )
    fitted = out.metadata.pop("timings", {})
    out.metadata.update(
        {
            "engine": provider.name,
            "mode": "generative",
            "background": f"whole photo edited by the remote model: {config.background_prompt}",
            "product_preserved": False,
            "note": "generative mode lets the model redraw the whole photo; the product may differ",
            "timings": {**fitted, "remote_ms": remote_ms, "processing_ms": _ms(started)},
            **{f"model_{key}": value for key, value in result.details.items()},
        }
    )
    return out
