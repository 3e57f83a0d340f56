"""Batch optimization: resize so the longest side fits, then re-encode small.

Behaviour worth knowing:

- The EXIF orientation is applied (the result is upright) and every metadata block is dropped;
  only an sRGB colour profile is kept when the source carried a profile (see `encode.to_srgb`).
- Never upscaled. With `maintain_aspect=False` the result is a centre cover-crop of exactly
  `max_size x max_size`, or of the shorter side when the source is smaller than that.
- Animated GIF and WebP stay animated when the output is WebP (each frame resized); every other
  case, and animated PNG, gives the first frame. `metadata["frames"]` says which happened.
- When the output format is the source's and the size is unchanged, the source (with its metadata
  removed losslessly) is returned if it is smaller than the re-encode: `metadata["kept_source"]`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pyvips

from capability_service.imaging.decode import Deadline, ImageInfo, open_image, probe, vips_error
from capability_service.imaging.encode import drop_opaque_alpha, encode, encoded_result, quality_value, to_srgb
from capability_service.imaging.strip import strip_metadata
from capability_service.imaging.types import EncodedImage, ImageError, OptimizeOptions

# Downscaling kernel: Catmull-Rom cubic, as sharp as Pillow's bicubic thumbnail; lanczos3 looks no
# better at these ratios and makes every lossy encoder spend 6-10 % more bytes on ringing.
KERNEL = "cubic"
SAME_FORMAT = {"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif"}


def _target(info: ImageInfo, options: OptimizeOptions) -> tuple[int, int, int, int]:
    """Upright (resize width, resize height, final width, final height)."""
    width, height = info.upright_size
    if options.maintain_aspect:
        scale = min(1.0, options.max_size / max(width, height))
        out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
        return out_w, out_h, out_w, out_h
    side = min(options.max_size, width, height)
    scale = side / min(width, height)
    return max(side, math.ceil(width * scale)), max(side, math.ceil(height * scale)), side, side


def _load_options(info: ImageInfo, stored_w: int, animated: bool) -> dict[str, Any]:
    if animated:
        return {"n": -1}
    factor = info.width / stored_w
    if info.format == "jpeg":
        # DCT-domain shrink on load: the decoder does most of the reduction almost for free.
        for shrink in (8, 4, 2):
            if factor >= shrink:
                return {"shrink": shrink}
    return {}


def _resize(image: pyvips.Image, width: int, height: int) -> pyvips.Image:
    if image.width == width and image.height == height:
        return image
    hscale, vscale = width / image.width, height / image.height
    if image.hasalpha():
        # Premultiplied, so transparent pixels' colours do not bleed into the visible edge.
        original = image.format
        return image.premultiply().resize(hscale, vscale=vscale, kernel=KERNEL).unpremultiply().cast(original)
    return image.resize(hscale, vscale=vscale, kernel=KERNEL)


def _crop(image: pyvips.Image, width: int, height: int) -> pyvips.Image:
    if image.width == width and image.height == height:
        return image
    return image.crop((image.width - width) // 2, (image.height - height) // 2, width, height)


def _animated(data: bytes, info: ImageInfo, options: OptimizeOptions, size: tuple[int, int, int, int]) -> pyvips.Image:
    resize_w, resize_h, out_w, out_h = size
    image = open_image(data, options.max_pixels, max_frames=options.max_frames, n=-1)
    page_height = image.get_page_height()
    frames = [
        _crop(_resize(image.crop(0, top, image.width, page_height), resize_w, resize_h), out_w, out_h)
        for top in range(0, image.height, page_height)
    ]
    joined = pyvips.Image.arrayjoin(frames, across=1).copy()
    joined.set_type(pyvips.GValue.gint_type, "page-height", out_h)
    return joined


def optimize(data: bytes, options: OptimizeOptions) -> EncodedImage:
    """Resize and re-encode one image; raises `ImageError` with a user-facing reason."""
    started = time.perf_counter()
    deadline = Deadline(options.timeout_seconds)
    info = probe(data, options.max_pixels, options.max_frames)
    size = _target(info, options)
    resize_w, resize_h, out_w, out_h = size
    notes: dict[str, Any] = {}
    animated = (
        info.frames > 1
        and info.format in ("gif", "webp")
        and options.format == "webp"
        and options.keep_animation
        and info.width * info.height * info.frames <= options.max_pixels
    )
    if info.frames > 1:
        notes["frames"] = info.frames if animated else 1
        notes["source_frames"] = info.frames
    swapped = info.orientation in (5, 6, 7, 8)
    stored_w, stored_h = (resize_h, resize_w) if swapped else (resize_w, resize_h)
    try:
        if animated:
            image = _animated(data, info, options, size)
        else:
            image = open_image(
                data, options.max_pixels, max_frames=options.max_frames, **_load_options(info, stored_w, False)
            )
            image = _resize(image, stored_w, stored_h)
            if info.orientation != 1:
                # Turning needs random access; the resized image is small enough to hold.
                image = deadline.watch(image).copy_memory().autorot()
            image = _crop(image, out_w, out_h)
        image = to_srgb(image, notes)
        if image.hasalpha() and options.format != "jpg" and not animated:
            # The result is small: computing it once and checking the alpha costs little.
            image = drop_opaque_alpha(deadline.watch(image).copy_memory())
    except pyvips.Error as exc:
        raise vips_error(exc, "resized", deadline) from None
    # libvips streams: the decode and resize above run inside this call, as the encoder pulls pixels.
    encoding = time.perf_counter()
    out = encode(
        image,
        options.format,
        options.quality,
        background=options.background,
        png_palette=options.png_palette,
        deadline=deadline,
    )
    encode_ms = round((time.perf_counter() - encoding) * 1000, 1)
    kept_source = False
    source_w, source_h = info.upright_size
    if (
        SAME_FORMAT.get(info.format) == options.format
        and (out_w, out_h) == (source_w, source_h)
        and info.orientation == 1
        and "colour_converted_from" not in notes
        and (info.frames == 1 or animated)
        and len(data) <= len(out)
        and info.format != "avif"
    ):
        try:
            stripped = strip_metadata(data, info.format)
        except ImageError:
            stripped = b""
        if stripped and len(stripped) < len(out):
            out, kept_source = stripped, True
            notes["note"] = "re-encoding made the image larger; the source is returned with its metadata removed"
    png_palette = options.quality == "low" if options.png_palette is None else options.png_palette
    return encoded_result(
        data,
        info,
        out,
        options.format,
        (out_w, out_h),
        quality_value(options.format, options.quality, png_palette),
        {"quality_preset": options.quality, "kept_source": kept_source, **notes},
        started,
        {"encode_ms": encode_ms},
    )
