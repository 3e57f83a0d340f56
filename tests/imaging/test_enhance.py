"""`enhance` on real photos: identity at level 0, monotonic levels, denoise, tone, sharpen, upscale."""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest
import pyvips
from PIL import Image

from capability_service.imaging import enhance as enhancing
from capability_service.imaging.enhance import enhance
from capability_service.imaging.types import EnhanceOptions, ImageError
from tests.imaging.samples import exif_with_gps, pil, pixels, read, save

U8 = npt.NDArray[np.uint8]


def clean_photo() -> U8:
    """The 10 MP camera photo reduced 4x: its own sensor noise averages out, its edges stay crisp."""
    image = pyvips.Image.new_from_buffer(read("camera_3648x2736.jpg"), "").resize(0.25, kernel="lanczos3")
    return np.asarray(image.numpy(), dtype=np.uint8)


def to_png(array: U8) -> bytes:
    return save(Image.fromarray(array), "PNG")


def mean_diff(a: U8, b: U8) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def psnr(a: U8, b: U8) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * math.log10(255**2 / mse)


def edge_strength(array: U8, mask: npt.NDArray[np.bool_]) -> float:
    grey = array.astype(np.float32).mean(axis=2)
    gy, gx = np.gradient(grey)
    return float(np.hypot(gx, gy)[mask].mean())


@pytest.mark.parametrize("name", ["camera_3648x2736.jpg", "Minduka_Present_Blue_Pack.png", "chelsea.png"])
def test_level_zero_with_switches_off_is_the_identity(name: str) -> None:
    data = read(name)
    result = enhance(data, EnhanceOptions(level=0, sharpen=False, denoise=False, upscale=False))
    assert np.array_equal(pixels(result.data), pixels(data))
    assert (result.width, result.height) == (result.metadata["original_width"], result.metadata["original_height"])


def test_levels_change_the_photo_monotonically() -> None:
    data = to_png(clean_photo())
    source = pixels(data)
    changes = [mean_diff(pixels(enhance(data, EnhanceOptions(level=level)).data), source) for level in range(0, 11, 2)]
    assert changes[0] == 0
    assert all(later > earlier for earlier, later in itertools.pairwise(changes)), changes


def test_orientation_applied_and_metadata_gone() -> None:
    upright = pil(read("rocket.jpg")).convert("RGB")
    data = save(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif_with_gps(6))
    result = enhance(data, EnhanceOptions(level=3, format="jpg"))
    out = pil(result.data)
    assert out.size == upright.size
    assert not out.getexif()
    assert mean_diff(np.asarray(out), np.asarray(upright)) < 12


def test_denoise_raises_psnr_without_smearing_edges() -> None:
    clean = clean_photo()
    rng = np.random.default_rng(7)
    noisy = np.clip(clean.astype(np.float32) + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    denoised = enhancing.denoise(noisy, 0.5)
    assert psnr(denoised, clean) > psnr(noisy, clean) + 3
    # Strong edges of the clean photo keep at least 85 % of their gradient; a blur of the same
    # noise reduction would flatten them far more.
    grey = clean.astype(np.float32).mean(axis=2)
    gy, gx = np.gradient(grey)
    edges = np.hypot(gx, gy) > 40
    assert edges.mean() > 0.005
    assert edge_strength(denoised, edges) > 0.85 * edge_strength(clean, edges)
    blurred = np.asarray(pyvips.Image.new_from_array(noisy).gaussblur(1.5).numpy(), dtype=np.uint8)
    assert edge_strength(denoised, edges) > edge_strength(blurred, edges)
    # Through the public entry point too, tone adjustment included.
    result = pixels(enhance(to_png(noisy), EnhanceOptions(level=5, sharpen=False)).data)
    assert psnr(result, clean) > psnr(noisy, clean)


def test_denoise_leaves_a_clean_photo_almost_alone() -> None:
    clean = clean_photo()
    assert mean_diff(enhancing.denoise(clean, 1.0), clean) < 1.5


@pytest.mark.parametrize("name", ["camera_3648x2736.jpg", "grace_hopper.jpg", "rocket.jpg", "chelsea.png"])
def test_contrast_and_brightness_clip_few_pixels(name: str) -> None:
    # The reference is the photo as enhancement sees it: upright and in sRGB (rocket.jpg is a real
    # Adobe RGB photo, and converting it alone clips some of its deep blues).
    source = pixels(enhance(read(name), EnhanceOptions(level=0, sharpen=False, denoise=False)).data)[..., :3]
    out = pixels(enhance(read(name), EnhanceOptions(level=10, sharpen=False, denoise=False)).data)

    def clipped(array: U8) -> float:
        return float(((array == 0) | (array == 255)).any(axis=2).mean())

    assert clipped(out) - clipped(source) < 0.01
    assert mean_diff(out, source) > 1


def test_dark_photo_gets_brighter_and_flat_photo_more_contrast() -> None:
    photo = clean_photo()
    dark = (photo * 0.45).astype(np.uint8)
    out = pixels(enhance(to_png(dark), EnhanceOptions(level=8, sharpen=False, denoise=False)).data)
    assert out.mean() > dark.mean() + 10
    flat = (photo * 0.5 + 64).astype(np.uint8)
    out = pixels(enhance(to_png(flat), EnhanceOptions(level=8, sharpen=False, denoise=False)).data)
    assert out.std() > flat.std() * 1.2


def test_unsharp_mask_radius_scales_with_image_size() -> None:
    assert (
        enhancing.sharpen_radius(512, 384) < enhancing.sharpen_radius(3648, 2736) < enhancing.sharpen_radius(8000, 6000)
    )
    clean = clean_photo()
    sharpened = enhancing.sharpen(clean.copy(), 1.0)
    grey = clean.astype(np.float32).mean(axis=2)
    gy, gx = np.gradient(grey)
    edges = np.hypot(gx, gy) > 40
    assert edge_strength(sharpened, edges) > 1.15 * edge_strength(clean, edges)


def test_upscale_doubles_each_side_with_a_smooth_kernel() -> None:
    data = read("chelsea.png")
    result = enhance(data, EnhanceOptions(level=0, sharpen=False, denoise=False, upscale=True))
    out = pixels(result.data)
    source = pixels(data)
    assert out.shape[:2] == (source.shape[0] * 2, source.shape[1] * 2)
    back = np.asarray(pyvips.Image.new_from_array(out).resize(0.5, kernel="lanczos3").numpy(), dtype=np.uint8)
    assert mean_diff(back, source) < 2.5
    nearest = np.repeat(np.repeat(source, 2, axis=0), 2, axis=1)
    assert mean_diff(out, nearest) > 0.5


def test_upscale_beyond_the_pixel_limit_is_skipped_with_a_note() -> None:
    result = enhance(read("chelsea.png"), EnhanceOptions(level=0, upscale=True, max_pixels=300_000))
    assert (result.width, result.height) == (451, 300)
    assert "upscale_skipped" in result.metadata


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "avif"])
def test_output_format_and_metadata(fmt: str) -> None:
    data = read("grace_hopper.jpg")
    result = enhance(data, EnhanceOptions(level=5, format=fmt))  # type: ignore[arg-type]
    assert result.format == fmt
    decoded = pyvips.Image.new_from_buffer(result.data, "")
    assert (decoded.width, decoded.height) == (result.width, result.height) == (512, 600)
    meta = result.metadata
    for key in (
        "original_width",
        "original_height",
        "original_bytes",
        "original_format",
        "result_width",
        "result_height",
        "result_bytes",
        "result_format",
        "compression_ratio",
        "quality",
        "processing_ms",
    ):
        assert key in meta
    assert meta["result_bytes"] == len(result.data)


def test_alpha_survives_enhancement() -> None:
    data = read("Minduka_Present_Blue_Pack.png")
    source = np.asarray(pil(data).convert("RGBA"))
    out = np.asarray(pil(enhance(data, EnhanceOptions(level=7)).data).convert("RGBA"))
    assert np.array_equal(out[..., 3], source[..., 3])


def test_strips_give_the_same_result_as_one_pass() -> None:
    clean = clean_photo()
    assert clean.shape[0] > 2 * enhancing.STRIP_ROWS
    noisy = np.clip(clean.astype(np.int16) + np.random.default_rng(3).normal(0, 8, clean.shape), 0, 255)
    photo = noisy.astype(np.uint8)
    strips = enhancing.filter_pixels(photo, 0.7, denoise_on=True, sharpen_on=True)
    lut = enhancing.tone_curve(photo, 0.7)
    whole = enhancing.sharpen(np.take(lut, enhancing.denoise(photo, 0.7)), 0.7)
    assert np.array_equal(strips, whole)


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (1, 600), (600, 2)])
def test_images_a_few_pixels_across_are_enhanced(size: tuple[int, int]) -> None:
    # The tone curve is measured on a subsampled copy, which must not shrink a narrow side to nothing.
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    result = enhance(to_png(source), EnhanceOptions(level=5, upscale=True))
    assert (result.width, result.height) == (size[0] * 2, size[1] * 2)


def test_a_truncated_photo_names_the_decoder_reason() -> None:
    data = read("rocket.jpg")
    with pytest.raises(ImageError, match="broken or truncated: VipsJpeg: premature end of JPEG image"):
        enhance(data[: len(data) // 3], EnhanceOptions(level=5))
