"""`optimize` on real photos: orientation, colour, metadata, alpha, animation, sizes and presets."""

from __future__ import annotations

import io

import numpy as np
import pytest
import pyvips
from PIL import Image, ImageCms

from capability_service.imaging.optimize import optimize
from capability_service.imaging.types import ImageError, OptimizeOptions
from tests.imaging.samples import (
    XMP,
    adobe_rgb_profile,
    animated,
    exif_with_gps,
    photo_with_gps,
    pil,
    pixels,
    read,
    save,
)

LOSSLESS = OptimizeOptions(format="png", quality="standard", max_size=10_000)


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_exif_orientation_is_applied_then_dropped() -> None:
    upright = pil(read("rocket.jpg")).convert("RGB")
    # Orientation 6: the camera stored the pixels turned left; viewers turn them 90 degrees clockwise.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    data = save(stored, "JPEG", quality=95, exif=exif_with_gps(orientation=6))
    result = optimize(data, OptimizeOptions(format="jpg", quality="high", max_size=10_000))
    assert (result.width, result.height) == upright.size
    out = pil(result.data)
    assert out.size == upright.size
    assert diff(np.asarray(out), np.asarray(upright)) < 4
    assert 0x0112 not in out.getexif()
    assert result.metadata["original_width"] == upright.width


def test_orientation_with_resize_and_cover_crop() -> None:
    upright = pil(read("rocket.jpg")).convert("RGB")
    data = save(upright.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=95, exif=exif_with_gps(8))
    fitted = optimize(data, OptimizeOptions(format="png", max_size=320))
    assert max(fitted.width, fitted.height) == 320
    assert (fitted.width > fitted.height) == (upright.width > upright.height)
    square = optimize(data, OptimizeOptions(format="png", max_size=200, maintain_aspect=False))
    assert pil(square.data).size == (200, 200)


@pytest.mark.parametrize("fmt", ["jpg", "webp", "png", "avif"])
def test_metadata_stripped_gps_never_leaks(fmt: str) -> None:
    data = photo_with_gps()
    assert b"GPS" in data or b"\x88\x25" in data or XMP in data
    result = optimize(data, OptimizeOptions(format=fmt, max_size=400))  # type: ignore[arg-type]
    out = result.data
    assert XMP not in out and b"ns.adobe.com" not in out
    assert b"Exif\0\0" not in out and b"TestCam" not in out
    assert not pil(out).getexif()


def test_adobe_rgb_is_converted_to_srgb_and_tagged() -> None:
    photo = pil(read("grace_hopper.jpg")).convert("RGB")
    profile = adobe_rgb_profile()
    data = save(photo, "PNG", icc_profile=profile)
    result = optimize(data, LOSSLESS)
    assert result.metadata["colour_converted_from"].startswith("Adobe RGB")
    expected = ImageCms.profileToProfile(
        photo,
        ImageCms.ImageCmsProfile(io.BytesIO(profile)),
        ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )
    assert expected is not None
    out = pil(result.data)
    # Converted like littlecms converts it, and visibly different from leaving the numbers alone.
    assert diff(np.asarray(out), np.asarray(expected)) < 1.5
    assert diff(np.asarray(out), np.asarray(photo)) > 4
    description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"])))
    assert "srgb" in description.lower()


def test_cmyk_jpeg_with_profile_becomes_srgb() -> None:
    photo = pyvips.Image.new_from_buffer(read("grace_hopper.jpg"), "")
    cmyk = photo.icc_transform("cmyk", input_profile="srgb", black_point_compensation=True)
    data = bytes(cmyk.jpegsave_buffer(Q=95))
    assert pyvips.Image.new_from_buffer(data, "").interpretation == "cmyk"
    result = optimize(data, LOSSLESS)
    out = pil(result.data)
    assert out.mode == "RGB"
    # A round trip through the same CMYK profile: close to the original, never inverted.
    original = pixels(read("grace_hopper.jpg"))
    assert diff(np.asarray(out), original) < 8
    assert diff(np.asarray(out), 255 - original) > 100


def test_cmyk_jpeg_without_profile_uses_a_generic_one() -> None:
    data = save(pil(read("rocket.jpg")).convert("CMYK"), "JPEG", quality=95)
    out = pil(optimize(data, LOSSLESS).data)
    assert out.mode == "RGB"
    assert diff(np.asarray(out), np.asarray(pil(read("rocket.jpg")).convert("RGB"))) < 40


def test_grayscale_palette_and_16_bit_inputs() -> None:
    grey = save(pil(read("grace_hopper.jpg")).convert("L"), "JPEG", quality=90)
    out = pil(optimize(grey, OptimizeOptions(format="jpg", max_size=300)).data)
    assert out.mode == "L"

    palette = pil(read("chelsea.png")).convert("RGB").quantize(64)
    result = optimize(save(palette, "PNG"), LOSSLESS)
    assert np.array_equal(np.asarray(pil(result.data).convert("RGB")), np.asarray(palette.convert("RGB")))

    photo = pyvips.Image.new_from_buffer(read("chelsea.png"), "")
    deep = (photo.cast("ushort") * 257).copy(interpretation="rgb16").cast("ushort")
    data = bytes(deep.pngsave_buffer(bitdepth=16))
    assert pyvips.Image.new_from_buffer(data, "").format == "ushort"
    out16 = optimize(data, LOSSLESS)
    assert diff(pixels(out16.data), photo.numpy()) < 0.6


def test_alpha_kept_for_png_and_webp_flattened_for_jpg() -> None:
    data = read("Minduka_Present_Blue_Pack.png")
    source = np.asarray(pil(data).convert("RGBA"))
    transparent = source[:, :, 3] == 0
    assert transparent.any()
    for fmt in ("png", "webp"):
        out = np.asarray(pil(optimize(data, OptimizeOptions(format=fmt, max_size=10_000)).data).convert("RGBA"))
        assert (out[:, :, 3][transparent] < 8).mean() > 0.99
    jpg = np.asarray(pil(optimize(data, OptimizeOptions(format="jpg", max_size=10_000)).data))
    assert jpg.shape[2] == 3
    assert jpg[transparent].mean() > 245
    black = optimize(data, OptimizeOptions(format="jpg", max_size=10_000, background=(0, 0, 0)))
    assert np.asarray(pil(black.data))[transparent].mean() < 10


def test_opaque_alpha_is_dropped() -> None:
    rgba = save(pil(read("chelsea.png")).convert("RGBA"), "PNG")
    assert pil(optimize(rgba, OptimizeOptions(format="webp")).data).mode == "RGB"


@pytest.mark.parametrize("source_fmt", ["GIF", "WEBP"])
def test_animation_kept_for_webp_output(source_fmt: str) -> None:
    data = animated(source_fmt, 3)
    result = optimize(data, OptimizeOptions(format="webp", max_size=48))
    out = Image.open(io.BytesIO(result.data))
    assert getattr(out, "n_frames", 1) == 3
    assert out.size == (48, 48)
    assert result.metadata["frames"] == 3


@pytest.mark.parametrize(("source_fmt", "fmt"), [("GIF", "jpg"), ("WEBP", "png"), ("PNG", "webp"), ("PNG", "jpg")])
def test_animation_gives_first_frame_otherwise(source_fmt: str, fmt: str) -> None:
    data = animated(source_fmt, 3)
    result = optimize(data, OptimizeOptions(format=fmt, max_size=64))  # type: ignore[arg-type]
    out = Image.open(io.BytesIO(result.data))
    assert getattr(out, "n_frames", 1) == 1
    assert out.size == (64, 64)


def test_animation_over_the_frame_cap_is_refused() -> None:
    with pytest.raises(ImageError, match="frames"):
        optimize(animated("GIF", 5), OptimizeOptions(max_frames=4))


def test_longest_side_fits_and_is_never_upscaled() -> None:
    camera = read("camera_3648x2736.jpg")
    result = optimize(camera, OptimizeOptions(max_size=1000))
    assert (result.width, result.height) == (1000, 750)
    assert pil(result.data).size == (1000, 750)
    small = optimize(read("chelsea.png"), OptimizeOptions(max_size=1920))
    assert pil(small.data).size == (451, 300)


def test_maintain_aspect_false_is_a_cover_crop_not_a_squash() -> None:
    camera = read("camera_3648x2736.jpg")
    result = optimize(camera, OptimizeOptions(format="png", max_size=300, maintain_aspect=False))
    out = np.asarray(pil(result.data))
    assert out.shape[:2] == (300, 300)
    source = pil(camera)
    cover = source.resize((400, 300), Image.Resampling.BICUBIC).crop((50, 0, 350, 300))
    squash = source.resize((300, 300), Image.Resampling.BICUBIC)
    assert diff(out, np.asarray(cover)) < 3
    assert diff(out, np.asarray(squash)) > 2 * diff(out, np.asarray(cover))
    small = optimize(read("chelsea.png"), OptimizeOptions(max_size=1000, maintain_aspect=False))
    assert (small.width, small.height) == (300, 300)


def test_jpeg_presets_progressive_and_ordered_by_size() -> None:
    camera = read("camera_3648x2736.jpg")
    sizes = {}
    for quality in ("low", "standard", "high"):
        result = optimize(camera, OptimizeOptions(format="jpg", quality=quality, max_size=800))
        out = pil(result.data)
        assert out.info.get("progressive") or out.info.get("progression")
        sizes[quality] = len(result.data)
        assert result.metadata["quality"] == {"low": 70, "standard": 85, "high": 95}[quality]
    assert sizes["low"] < sizes["standard"] < sizes["high"]


def test_webp_and_avif_presets_ordered_by_size() -> None:
    camera = read("camera_3648x2736.jpg")
    for fmt in ("webp", "avif"):
        sizes = [
            len(optimize(camera, OptimizeOptions(format=fmt, quality=q, max_size=640)).data)
            for q in ("low", "standard", "high")
        ]
        assert sizes[0] < sizes[1] < sizes[2]
    avif = optimize(camera, OptimizeOptions(format="avif", max_size=640))
    assert avif.data[4:12] == b"ftypavif"
    assert pyvips.Image.new_from_buffer(avif.data, "").width == 640


def test_png_lossless_levels_and_palette_quantisation() -> None:
    data = read("chelsea.png")
    source = np.asarray(pil(data).convert("RGB"))
    standard = optimize(data, OptimizeOptions(format="png", quality="standard"))
    high = optimize(data, OptimizeOptions(format="png", quality="high"))
    for result in (standard, high):
        assert np.array_equal(np.asarray(pil(result.data).convert("RGB")), source)
    low = optimize(data, OptimizeOptions(format="png", quality="low"))
    assert pil(low.data).mode == "P"
    assert len(low.data) < len(standard.data) / 2
    assert diff(np.asarray(pil(low.data).convert("RGB")), source) < 6
    forced = optimize(data, OptimizeOptions(format="png", quality="high", png_palette=True))
    assert pil(forced.data).mode == "P"


def test_smaller_source_is_returned_without_its_metadata() -> None:
    data = photo_with_gps(quality=60)
    result = optimize(data, OptimizeOptions(format="jpg", quality="high", max_size=10_000))
    assert result.metadata["kept_source"] is True
    assert "note" in result.metadata
    assert len(result.data) < len(data)
    assert b"TestCam" not in result.data and XMP not in result.data
    assert np.array_equal(pixels(result.data), pixels(data))


def test_metadata_fields() -> None:
    camera = read("camera_3648x2736.jpg")
    meta = optimize(camera, OptimizeOptions(max_size=800)).metadata
    assert meta["original_width"] == 3648 and meta["original_height"] == 2736
    assert meta["original_bytes"] == len(camera) and meta["original_format"] == "jpeg"
    assert (meta["result_width"], meta["result_height"], meta["result_format"]) == (800, 600, "webp")
    assert meta["compression_ratio"] == round(len(camera) / meta["result_bytes"], 3)
    assert meta["quality"] == 85 and meta["processing_ms"] > 0


def test_real_adobe_rgb_photo_is_converted() -> None:
    # rocket.jpg, as published, carries an Adobe RGB (1998) profile.
    data = read("rocket.jpg")
    result = optimize(data, OptimizeOptions(format="png", max_size=10_000))
    assert result.metadata["colour_converted_from"].startswith("Adobe RGB")
    assert diff(pixels(result.data), pixels(data)) > 2
    description = ImageCms.getProfileDescription(
        ImageCms.ImageCmsProfile(io.BytesIO(pil(result.data).info["icc_profile"]))
    )
    assert "srgb" in description.lower()
