"""What the edge of a picture looks like: how light its background is, for marketplace main-picture rules.

Measured on a small thumbnail (shrink-on-load, so a 10 MP photo costs a few milliseconds), over a
band along all four sides, after flattening any transparency onto white as a marketplace shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyvips

from capability_service.imaging.decode import probe, thumbnail_checked, vips_reason
from capability_service.imaging.types import DEFAULT_MAX_PIXELS, ImageError

# Side of the thumbnail measured, and the band along each side (as a share of the side).
_THUMB = 128
_BAND = 0.06
# A background pixel counts as light at this luma (0..255) or above: off-white studio paper passes.
LIGHT_LUMA = 200


@dataclass(frozen=True, slots=True)
class BorderStats:
    """The picture's format, size and alpha from its header, and the light of its border band."""

    format: str
    width: int
    height: int
    has_alpha: bool
    # Mean luma (0..255) of the border band, and the share of its pixels at LIGHT_LUMA or above.
    border_luma: float
    light_share: float
    # Spread of the border's luma: a plain backdrop is low, a room or a street is high.
    border_spread: float


def border_stats(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> BorderStats:
    """Header facts and the border's lightness of one encoded picture; raises `ImageError` if unreadable."""
    info = probe(data, max_pixels)
    width, height = info.upright_size
    try:
        # Checked above against the limits; `thumbnail` shrinks on load where the format allows it
        # (JPEG, WebP) and applies the EXIF orientation.
        small = thumbnail_checked(data, _THUMB, height=_THUMB)
        if small.hasalpha():
            small = small.flatten(background=[255] * (small.bands - 1))
        if small.interpretation not in ("srgb", "b-w"):
            small = small.colourspace("srgb")
        luma = small.colourspace("b-w")[0] if small.bands >= 3 else small[0]
        pixels = np.ndarray(
            buffer=luma.cast("uchar").write_to_memory(), dtype=np.uint8, shape=(luma.height, luma.width)
        ).astype(np.float32)
    except pyvips.Error as exc:
        raise ImageError(f"the picture could not be read: {vips_reason(exc)}") from None
    rows, cols = pixels.shape
    band_r, band_c = max(1, round(rows * _BAND)), max(1, round(cols * _BAND))
    mask = np.zeros_like(pixels, dtype=bool)
    mask[:band_r, :] = mask[-band_r:, :] = True
    mask[:, :band_c] = mask[:, -band_c:] = True
    border = pixels[mask]
    return BorderStats(
        format=info.format,
        width=width,
        height=height,
        has_alpha=info.has_alpha,
        border_luma=float(border.mean()),
        light_share=float((border >= LIGHT_LUMA).mean()),
        border_spread=float(border.std()),
    )
