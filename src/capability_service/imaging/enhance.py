"""Image enhancement: denoise, sharpen, contrast and brightness, optional 2x upscale."""

from __future__ import annotations

import time

import pyvips

from capability_service.imaging.decode import open_image, sniff_format
from capability_service.imaging.encode import encode, to_srgb
from capability_service.imaging.types import EncodedImage, EnhanceOptions, ImageError


def enhance(data: bytes, options: EnhanceOptions) -> EncodedImage:
    started = time.perf_counter()
    source_format = sniff_format(data)
    image = open_image(data, options.max_pixels)
    original_width, original_height = image.width, image.height
    strength = options.level / 10
    try:
        image = to_srgb(image.autorot())
        if options.denoise and strength > 0:
            image = image.median(3)
        if options.sharpen and strength > 0:
            image = image.sharpen(sigma=1.0, m2=2.0 * strength)
        if strength > 0:
            # Gentle linear contrast stretch around mid-grey, scaled by the level.
            gain = 1 + 0.1 * strength
            image = (image * gain + 128 * (1 - gain)).cast("uchar")
        if options.upscale:
            image = image.resize(2, kernel="lanczos3")
    except pyvips.Error as exc:
        raise ImageError(f"the image could not be enhanced: {str(exc).splitlines()[0]}") from None
    out = encode(image, options.format, "high")
    return EncodedImage(
        data=out,
        format=options.format,
        width=image.width,
        height=image.height,
        metadata={
            "original_width": original_width,
            "original_height": original_height,
            "original_bytes": len(data),
            "original_format": source_format,
            "result_bytes": len(out),
            "compression_ratio": round(len(data) / len(out), 3) if out else None,
            "processing_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
