"""Batch optimization: resize so the longest side fits, then re-encode small."""

from __future__ import annotations

import time

import pyvips

from capability_service.imaging.decode import open_image, sniff_format
from capability_service.imaging.encode import QUALITY_VALUES, encode, to_srgb
from capability_service.imaging.types import EncodedImage, ImageError, OptimizeOptions


def optimize(data: bytes, options: OptimizeOptions) -> EncodedImage:
    started = time.perf_counter()
    source_format = sniff_format(data)
    original = open_image(data, options.max_pixels)
    try:
        if options.maintain_aspect:
            size = min(options.max_size, max(original.width, original.height))
            image = pyvips.Image.thumbnail_buffer(data, size, height=size, size="down")
        else:
            image = pyvips.Image.thumbnail_buffer(data, options.max_size, height=options.max_size, crop="centre")
        image = to_srgb(image)
    except pyvips.Error as exc:
        raise ImageError(f"the image could not be resized: {str(exc).splitlines()[0]}") from None
    out = encode(image, options.format, options.quality)
    return EncodedImage(
        data=out,
        format=options.format,
        width=image.width,
        height=image.height,
        metadata={
            "original_width": original.width,
            "original_height": original.height,
            "original_bytes": len(data),
            "original_format": source_format,
            "result_bytes": len(out),
            "compression_ratio": round(len(data) / len(out), 3) if out else None,
            "quality": QUALITY_VALUES[options.quality],
            "processing_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
