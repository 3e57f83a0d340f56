"""The product's own pixels on a new background, at the marketplace's target size.

`cut_out` finds the product (the model and its refinement on a reduced copy of the photo, or the
photo's own alpha channel when it has one), decides where it goes on the canvas (centred, scaled to fit
inside the padding) and decodes only that: the product region at its final scale, straight from the
file (JPEG shrink-on-load), never the full-size photo. `compose` lays it on a background with an
optional soft contact shadow. Wherever the matte is opaque the result's pixels are the source's,
resampled only for scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

import cv2
import numpy as np
import numpy.typing as npt
import pyvips

from capability_service.imaging import segment
from capability_service.imaging.decode import load_checked, open_image, thumbnail_checked, vips_reason
from capability_service.imaging.encode import encode
from capability_service.imaging.types import EncodedImage, ImageError, OutputFormat, Quality

UInt8Array = npt.NDArray[np.uint8]
Float32Array = npt.NDArray[np.float32]

# Longer side of the copy the product is found on: the model sees 320 px, the refinement snaps the
# matte to the photo's edges at this size, and the fast guided filter carries it to full scale.
WORK_SIDE = 512
# Below this share of the photo the model found nothing worth placing.
MIN_COVERAGE = 0.002


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the product comes from and where it goes."""

    # x, y, width, height of the product's region in the (upright) source photo
    crop: tuple[int, int, int, int]
    # x, y, width, height of the same region on the canvas
    box: tuple[int, int, int, int]
    # canvas pixels per source pixel
    scale: float

    def as_dict(self) -> dict[str, Any]:
        return {"crop": list(self.crop), "box": list(self.box), "scale": round(self.scale, 6)}


@dataclass(frozen=True, slots=True)
class Cutout:
    """The product at its final scale, ready to be laid on any background of the canvas size."""

    rgb: UInt8Array
    alpha: Float32Array
    placement: Placement
    canvas: tuple[int, int]
    # share of the source photo that is product (0..1)
    coverage: float
    # "u2netp" (the model) or "source-alpha" (the photo came cut out)
    engine: str
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Found:
    """The product found and placed, before its matte is made at full scale (`finish`).

    Enough to show a remote model the layout (`layout`) while the full-scale matte is still to be made:
    the source region is decoded once, here, and both use it.
    """

    # The refined matte on the upright photo reduced to the working size (0..1), and what its rim is
    # made from (none when the photo brought its own alpha).
    work_alpha: Float32Array
    guides: MatteGuides | None
    # The product's region of the source (`placement.crop`), decoded at 1/`shrink` scale: RGB or RGBA.
    region: UInt8Array
    shrink: int
    # source pixels per working-copy pixel, along x and y
    factor: tuple[float, float]
    placement: Placement
    canvas: tuple[int, int]
    coverage: float
    engine: str
    timings: dict[str, float] = field(default_factory=dict)


def _to_rgb8(image: pyvips.Image) -> pyvips.Image:
    """sRGB, 8 bits, 3 bands plus alpha when present."""
    if image.interpretation not in ("srgb", "b-w") or image.format != "uchar":
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    if image.bands in (1, 2):
        image = image.colourspace("srgb")
    if image.bands > 4:
        image = image.extract_band(0, n=4)
    return image


def _decode(data: bytes, width: int, height: int) -> tuple[UInt8Array, Float32Array | None]:
    """The upright photo resampled to exactly width x height, and its alpha (0..1) if it has one."""
    try:
        image = thumbnail_checked(data, width, height=height, size="force")
        image = _to_rgb8(image)
        pixels = np.asarray(image.numpy(), dtype=np.uint8)
    except pyvips.Error as exc:
        raise ImageError(f"the image could not be read: {vips_reason(exc)}") from None
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    rgb = np.ascontiguousarray(pixels[..., :3])
    alpha = pixels[..., 3].astype(np.float32) / 255.0 if pixels.shape[2] == 4 else None
    return rgb, alpha


def _upright_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    image = open_image(data, max_pixels)
    width, height = image.width, image.height
    orientation = image.get("orientation") if image.get_typeof("orientation") else 1
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return width, height


def _usable_alpha(alpha: Float32Array | None) -> bool:
    """A photo that arrives cut out: a real transparent area and a real opaque one."""
    if alpha is None:
        return False
    coverage = float(alpha.mean())
    return MIN_COVERAGE < coverage < 0.98 and float(alpha.min()) < 0.02


def _placement(
    bbox: tuple[int, int, int, int], source: tuple[int, int], canvas: tuple[int, int], padding: float
) -> Placement:
    _, _, w, h = bbox
    inner_w = max(1.0, canvas[0] * (1.0 - 2.0 * padding))
    inner_h = max(1.0, canvas[1] * (1.0 - 2.0 * padding))
    scale = min(inner_w / w, inner_h / h)
    box_w, box_h = max(1, round(w * scale)), max(1, round(h * scale))
    left = (canvas[0] - box_w) // 2
    top = (canvas[1] - box_h) // 2
    return Placement(crop=bbox, box=(left, top, box_w, box_h), scale=scale)


def _bbox(alpha: Float32Array, scale_x: float, scale_y: float, source: tuple[int, int]) -> tuple[int, int, int, int]:
    """The product's bounding box in source pixels, from its matte on the reduced copy."""
    ys, xs = np.nonzero(alpha > 0.02)
    x0 = max(0, int(np.floor(xs.min() * scale_x)))
    y0 = max(0, int(np.floor(ys.min() * scale_y)))
    x1 = min(source[0], int(np.ceil((xs.max() + 1) * scale_x)))
    y1 = min(source[1], int(np.ceil((ys.max() + 1) * scale_y)))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def _region(
    array: npt.NDArray[Any], crop: tuple[int, int, int, int], factor: tuple[float, float], size: tuple[int, int]
) -> npt.NDArray[Any]:
    """`array` (reduced-copy coordinates) cut to the source region `crop` and resized to `size`."""
    x, y, w, h = crop
    fx, fy = factor
    # Sub-pixel crop via an affine warp, so the reduced maps line up with the full-scale pixels.
    sx, sy = size[0] / w, size[1] / h
    matrix = np.array([[sx * fx, 0.0, -x * sx + 0.5 * sx * fx - 0.5], [0.0, sy * fy, -y * sy + 0.5 * sy * fy - 0.5]])
    warped = cv2.warpAffine(array, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(warped)


class FindOptions(TypedDict, total=False):
    """How `find` segments, besides what and for which canvas; `cut_out` passes them on unchanged."""

    grabcut: bool
    threads: int | None


def cut_out(
    data: bytes,
    canvas: tuple[int, int],
    padding: float,
    max_pixels: int,
    **options: Unpack[FindOptions],
) -> Cutout:
    """Find the product in a photo and prepare it at its final scale and place on the canvas."""
    return finish(find(data, canvas, padding, max_pixels, **options))


def find(
    data: bytes,
    canvas: tuple[int, int],
    padding: float,
    max_pixels: int,
    *,
    grabcut: bool = False,
    threads: int | None = None,
) -> Found:
    """Find the product in a photo, decide where it goes on the canvas and decode its region of the photo."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    source = _upright_size(data, max_pixels)
    work_scale = min(1.0, WORK_SIDE / max(source))
    work_size = (max(1, round(source[0] * work_scale)), max(1, round(source[1] * work_scale)))
    work_rgb, work_alpha = _decode(data, *work_size)
    timings["decode_ms"] = _ms(started)

    step = time.perf_counter()
    if _usable_alpha(work_alpha):
        assert work_alpha is not None
        engine = "source-alpha"
        alpha = work_alpha
    else:
        engine = segment.MODEL_NAME
        prob = segment.probability(work_rgb, threads)
        timings["model_ms"] = _ms(step)
        step = time.perf_counter()
        alpha = segment.refine_alpha(work_rgb, prob, segment.RefineOptions(grabcut=grabcut))
        timings["refine_ms"] = _ms(step)
    coverage = float(alpha.mean())
    if coverage < MIN_COVERAGE:
        raise ImageError("no product could be found in the photo; use a photo with the product clearly in front")

    step = time.perf_counter()
    factor = (source[0] / work_size[0], source[1] / work_size[1])
    bbox = _bbox(alpha, factor[0], factor[1], source)
    shrink = _jpeg_shrink(data, min(canvas[0] / bbox[2], canvas[1] / bbox[3]))
    bbox = _align(bbox, shrink, source)
    place = _placement(bbox, source, canvas, padding)
    region = _decode_region(data, bbox, shrink)
    timings["decode_product_ms"] = _ms(step)
    step = time.perf_counter()
    # Once per photo, for the layout's matte and the full-scale one alike.
    guides = None if engine == "source-alpha" else matte_guides(work_rgb, alpha)
    timings["matte_guides_ms"] = _ms(step)
    return Found(
        work_alpha=alpha,
        guides=guides,
        region=region,
        shrink=shrink,
        factor=factor,
        placement=place,
        canvas=canvas,
        coverage=coverage,
        engine=engine,
        timings=timings,
    )


def finish(found: Found) -> Cutout:
    """The product at its final scale with its full-scale matte, ready for `compose`."""
    timings = dict(found.timings)
    step = time.perf_counter()
    box_w, box_h = found.placement.box[2:]
    pixels = _resample_region(found.region, (box_w, box_h))
    timings["decode_product_ms"] = round(timings.get("decode_product_ms", 0.0) + _ms(step), 1)

    step = time.perf_counter()
    final_alpha, product_rgb = _product_matte(found, pixels)
    timings["matte_ms"] = _ms(step)
    return Cutout(
        rgb=product_rgb,
        alpha=final_alpha,
        placement=found.placement,
        canvas=found.canvas,
        coverage=found.coverage,
        engine=found.engine,
        timings=timings,
    )


def _product_matte(found: Found, pixels: UInt8Array) -> tuple[Float32Array, UInt8Array]:
    """The matte and the product's colours for the product's region resampled to any size (`pixels`)."""
    rgb = np.ascontiguousarray(pixels[..., :3])
    size = (pixels.shape[1], pixels.shape[0])
    if found.guides is None:
        if pixels.shape[2] == 4:
            alpha = pixels[..., 3].astype(np.float32) / 255.0
        else:
            alpha = _region(found.work_alpha, found.placement.crop, found.factor, size)
        # The photo's own colours at partly transparent pixels are already the product's.
        return alpha, rgb
    return _matte(found.guides, found.work_alpha, rgb, found.placement.crop, found.factor)


def layout(found: Found, backdrop: tuple[int, int, int], max_side: int = 1024) -> bytes:
    """The layout a remote model paints a scene around, as a JPEG of at most `max_side`: the product where it
    will be on a plain backdrop.

    Made at the JPEG's own size from the working matte and the decoded region, without waiting for the
    full-scale matte: a model shown this layout sees the same product at the same place as in the result.
    """
    scale = min(1.0, max_side / max(found.canvas))
    width, height = round(found.canvas[0] * scale), round(found.canvas[1] * scale)
    box_x, box_y, box_w, box_h = found.placement.box
    left, top = round(box_x * scale), round(box_y * scale)
    size = (max(1, min(width - left, round(box_w * scale))), max(1, min(height - top, round(box_h * scale))))
    # The same matte as the result's, made at the layout's scale.
    alpha, rgb = _product_matte(found, _resample_region(found.region, size))
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[...] = backdrop
    under = canvas[top : top + size[1], left : left + size[0]].astype(np.float32)
    a = alpha[..., None]
    blended = rgb.astype(np.float32) * a + under * (1.0 - a)
    canvas[top : top + size[1], left : left + size[0]] = np.rint(blended).astype(np.uint8)
    return encode_canvas(canvas, "jpg", "high").data


def _jpeg_shrink(data: bytes, scale: float) -> int:
    """The largest JPEG shrink-on-load factor (1, 2, 4, 8) that still decodes at least the final size."""
    if not data.startswith(b"\xff\xd8\xff"):
        return 1
    shrink = 1
    while shrink < 8 and scale * shrink * 2 <= 1.0:
        shrink *= 2
    return shrink


def _align(bbox: tuple[int, int, int, int], step: int, source: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box grown to multiples of `step`, so that it falls on whole pixels of a shrunk decode."""
    x, y, w, h = bbox
    x0, y0 = x - x % step, y - y % step
    x1 = min(source[0], -(-(x + w) // step) * step)
    y1 = min(source[1], -(-(y + h) // step) * step)
    return x0, y0, x1 - x0, y1 - y0


def _decode_region(data: bytes, crop: tuple[int, int, int, int], shrink: int) -> UInt8Array:
    """The source region `crop` (upright coordinates, multiples of `shrink`), decoded at 1/`shrink` scale.

    sRGB, 8 bits, 3 bands or 4 with alpha. Decoded once per photo: the layout and the product at its final
    scale are both resampled from it.
    """
    x, y, w, h = crop
    try:
        options: dict[str, Any] = {"shrink": shrink} if shrink > 1 else {}
        image = load_checked(data, fail=True, **options).autorot()
        if image.get_typeof("icc-profile-data"):
            image = image.icc_transform("srgb", embedded=True, intent="perceptual")
        image = _to_rgb8(image)
        left, top = x // shrink, y // shrink
        width = max(1, min(image.width - left, -(-w // shrink)))
        height = max(1, min(image.height - top, -(-h // shrink)))
        pixels = np.asarray(image.crop(left, top, width, height).numpy(), dtype=np.uint8)
    except pyvips.Error as exc:
        raise ImageError(f"the image could not be read: {vips_reason(exc)}") from None
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return np.ascontiguousarray(pixels)


def _resample_region(pixels: UInt8Array, size: tuple[int, int]) -> UInt8Array:
    """A decoded region resampled with Lanczos to exactly `size`.

    Only scale changes the pixels: the region was taken on whole source pixels and is resized on its
    own, so its pixel grid lines up with the source's.
    """
    height, width = pixels.shape[:2]
    interpretation = "srgb" if pixels.shape[2] >= 3 else "b-w"
    region = pyvips.Image.new_from_array(pixels, interpretation=interpretation)
    if region.bands in (2, 4):
        region = region.premultiply()
    if size[0] >= width and size[1] >= height:
        # OpenCV's Lanczos-4 (8x8 taps, the sharpest standard filter here) keeps the pixel-centre
        # convention when enlarging (libvips's affine path is half a pixel off), so enlarged pixels
        # line up with the source's.
        array = np.asarray(region.numpy(), dtype=np.float32)
        resized = cv2.resize(array, size, interpolation=cv2.INTER_LANCZOS4)
        region = pyvips.Image.new_from_array(np.asarray(resized, dtype=np.float32))
    else:
        region = region.reduce(width / size[0], height / size[1], kernel="lanczos3")
    if region.bands in (2, 4):
        region = region.unpremultiply()
    if region.width != size[0] or region.height != size[1]:
        region = region.gravity("north-west", size[0], size[1], extend="copy")
    out = np.asarray(region.numpy())
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return out


@dataclass(frozen=True, slots=True)
class MatteGuides:
    """What the rim of the matte is made from at any scale, computed once on the reduced copy: the fast
    guided filter's coefficients and the nearby background and product colours."""

    a: Float32Array
    b: Float32Array
    background: Float32Array
    foreground: Float32Array


def matte_guides(work_rgb: UInt8Array, work_alpha: Float32Array) -> MatteGuides:
    guide = work_rgb.astype(np.float32) / 255.0
    a, b = segment.guided_coefficients(guide, work_alpha, 2, 1e-4)
    background, foreground = segment.local_colours(work_rgb, work_alpha)
    return MatteGuides(a=a, b=b, background=background, foreground=foreground)


def _matte(
    guides: MatteGuides,
    work_alpha: Float32Array,
    rgb: UInt8Array,
    bbox: tuple[int, int, int, int],
    factor: tuple[float, float],
) -> tuple[Float32Array, UInt8Array]:
    """The matte at the product's final scale, and the product with its rim decontaminated.

    Opaque stays opaque and empty stays empty, as the refinement decided; only rim pixels get the
    fast guided filter's edge (coefficients from the reduced copy, applied to full-scale colour) and
    the old background's colour taken out. Both are computed on the rim pixels alone.
    """
    size = (rgb.shape[1], rgb.shape[0])
    smooth = _region(work_alpha, bbox, factor, size)
    alpha = np.where(smooth >= 0.999, 1.0, 0.0).astype(np.float32)
    rim = (smooth > 0.001) & (smooth < 0.999)
    if not rim.any():
        return alpha, rgb
    a, b, background, foreground = guides.a, guides.b, guides.background, guides.foreground
    ys, xs = np.nonzero(rim)
    x, y, w, h = bbox
    # Rim pixel centres in the reduced copy's pixel coordinates.
    count = len(ys)
    # remap takes 2-D maps below 32767 rows: lay the rim's coordinates out in rows of 1024.
    rows = -(-count // 1024)
    flat_x = np.zeros(rows * 1024, np.float32)
    flat_y = np.zeros(rows * 1024, np.float32)
    flat_x[:count] = (x + (xs + 0.5) * w / size[0]) / factor[0] - 0.5
    flat_y[:count] = (y + (ys + 0.5) * h / size[1]) / factor[1] - 0.5
    map_x, map_y = flat_x.reshape(rows, 1024), flat_y.reshape(rows, 1024)

    def sample(array: Float32Array) -> Float32Array:
        values = cv2.remap(array, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return np.asarray(values, dtype=np.float32).reshape(rows * 1024, -1)[:count]

    colour = rgb[ys, xs].astype(np.float32)
    edge = (sample(a) * (colour / 255.0)).sum(axis=1) + sample(b)[:, 0]
    alpha[ys, xs] = np.clip(edge, 0.0, 1.0)
    clean = segment.decontaminate(
        colour[:, None, :].astype(np.uint8),
        alpha[ys, xs][:, None],
        (sample(background)[:, None, :], sample(foreground)[:, None, :]),
    )
    product = rgb.copy()
    product[ys, xs] = clean[:, 0, :]
    return alpha, product


def contacts(alpha: Float32Array) -> list[tuple[int, int, int]]:
    """Where the product touches the ground: (left, right, row) of each touching part, in its own pixels.

    A touching part is a run of columns whose lowest opaque pixel is the lowest in its neighbourhood
    and lies near the bottom of the product: both wheels of a bike, every leg of a chair (the back legs
    stand a little higher in a three-quarter view), the whole base of a box. The underside of a seat or
    a rail between the legs is a local lowest point too, but wide or boxed in by lower feet, and is left out.
    """
    opaque = alpha > 0.5
    columns = np.flatnonzero(opaque.any(axis=0))
    if columns.size == 0:
        return []
    height, width = opaque.shape
    # Lowest opaque row per column (-1 where the column is empty).
    lowest = np.where(opaque.any(axis=0), height - 1 - np.argmax(opaque[::-1], axis=0), -1)
    rows = np.flatnonzero(opaque.any(axis=1))
    product_h = int(rows.max() - rows.min() + 1)
    bottom = int(lowest.max())
    window = max(1, round((columns.max() - columns.min() + 1) * 0.06))
    padded = np.pad(lowest.astype(np.float32), window, constant_values=-1.0)
    local = np.asarray(cv2.dilate(padded[None, :], np.ones((1, 2 * window + 1), np.uint8))[0, window:-window])
    tolerance = max(1.0, product_h * 0.01)
    touching = (lowest >= 0) & (lowest >= local - tolerance) & (lowest >= bottom - product_h * 0.2)
    found: list[tuple[int, int, int]] = []
    start = -1
    for x in range(width + 1):
        inside = x < width and bool(touching[x])
        if inside and start < 0:
            start = x
        elif not inside and start >= 0:
            if found and start - found[-1][1] <= window:
                # A part's foot seen as two runs (a tyre's tread, a leg's rounded end): one contact.
                start = found.pop()[0]
            found.append((start, x - 1, int(lowest[start:x].max())))
            start = -1
    # Near the bottom anything touches (a box's whole base). Higher up (a back wheel or back legs in
    # perspective) only a narrow foot does: a wide run there is a rail or a seat's underside.
    product_w = int(columns.max() - columns.min() + 1)
    return [
        (left, right, row)
        for left, right, row in found
        if row >= bottom - product_h * 0.06 or right - left + 1 <= product_w * 0.12
    ]


def _shadow(
    alpha: Float32Array, canvas: tuple[int, int], box: tuple[int, int, int, int]
) -> tuple[Float32Array, tuple[int, int]]:
    """A soft contact shadow under each part that touches the ground; and the layer's origin on the canvas.

    Each contact gets a dark, tight ellipse where it meets the floor and a fainter, wider one around it
    (the light the part itself blocks), so a bike stands on two wheels and a chair on its legs instead of
    hovering over one ellipse under its bounding box.
    """
    box_x, box_y = box[0], box[1]
    feet = contacts(alpha)
    if not feet:
        return np.zeros((1, 1), np.float32), (0, 0)
    rows = np.flatnonzero((alpha > 0.5).any(axis=1))
    product_h = int(rows.max() - rows.min() + 1)
    spread = max(2.0, product_h * 0.012)
    margin = round(spread * 12)
    x0 = max(0, box_x + min(f[0] for f in feet) - margin)
    x1 = min(canvas[0], box_x + max(f[1] for f in feet) + margin + 1)
    y0 = max(0, box_y + min(f[2] for f in feet) - margin)
    y1 = min(canvas[1], box_y + max(f[2] for f in feet) + margin + 1)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((1, 1), np.float32), (0, 0)
    core = np.zeros((y1 - y0, x1 - x0), np.float32)
    ambient = np.zeros_like(core)
    for left, right, row in feet:
        centre = (box_x + (left + right) // 2 - x0, box_y + row - y0)
        half = max(2, (right - left + 1) // 2)
        cv2.ellipse(core, centre, (round(half + spread), round(spread)), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
        cv2.ellipse(
            ambient, centre, (round(half * 1.3 + spread * 4), round(spread * 2.5)), 0, 0, 360, 1.0, -1, cv2.LINE_AA
        )
    core = np.asarray(cv2.GaussianBlur(core, (0, 0), spread), np.float32)
    ambient = np.asarray(cv2.GaussianBlur(ambient, (0, 0), spread * 3), np.float32)
    layer = np.clip(np.maximum(core, 0.45 * ambient), 0.0, 1.0).astype(np.float32)
    return layer, (x0, y0)


def compose(cutout: Cutout, background: UInt8Array, shadow: bool = True, shadow_strength: float = 0.35) -> UInt8Array:
    """The canvas: the background, an optional contact shadow, and the product on top."""
    width, height = cutout.canvas
    if background.shape != (height, width, 3):
        raise ImageError(f"the background is {background.shape[1]}x{background.shape[0]}, expected {width}x{height}")
    canvas = background.copy()
    box_x, box_y, box_w, box_h = cutout.placement.box
    if shadow:
        layer, (sx, sy) = _shadow(cutout.alpha, cutout.canvas, cutout.placement.box)
        region = canvas[sy : sy + layer.shape[0], sx : sx + layer.shape[1]].astype(np.float32)
        region *= 1.0 - shadow_strength * layer[..., None]
        canvas[sy : sy + layer.shape[0], sx : sx + layer.shape[1]] = np.rint(region).astype(np.uint8)
    x0, y0 = max(0, box_x), max(0, box_y)
    x1, y1 = min(width, box_x + box_w), min(height, box_y + box_h)
    alpha = cutout.alpha[y0 - box_y : y1 - box_y, x0 - box_x : x1 - box_x]
    product = cutout.rgb[y0 - box_y : y1 - box_y, x0 - box_x : x1 - box_x]
    under = canvas[y0:y1, x0:x1]
    opaque = alpha >= 1.0
    rim = (alpha > 0.0) & ~opaque
    # Opaque pixels are copied, not blended, so they are the source's bit for bit (copyto with a mask
    # writes in place, without the gathered copies that boolean indexing makes).
    np.copyto(under, product, where=opaque[..., None])
    a = alpha[rim][:, None]
    under[rim] = np.rint(product[rim] * a + under[rim] * (1.0 - a)).astype(np.uint8)
    return canvas


def encode_canvas(canvas: UInt8Array, fmt: OutputFormat, quality: Quality = "high") -> EncodedImage:
    started = time.perf_counter()
    image = pyvips.Image.new_from_array(np.ascontiguousarray(canvas), interpretation="srgb")
    data = encode(image, fmt, quality)
    return EncodedImage(
        data=data,
        format=fmt,
        width=canvas.shape[1],
        height=canvas.shape[0],
        metadata={"timings": {"encode_ms": _ms(started)}},
    )


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)
