"""Guarded decoding: allow-list by magic bytes, header checks, hostile files, blocked loaders, deadlines."""

from __future__ import annotations

import time

import pytest
import pyvips

from capability_service.imaging.decode import open_image, probe, sniff_format
from capability_service.imaging.enhance import enhance
from capability_service.imaging.optimize import optimize
from capability_service.imaging.types import EnhanceOptions, ImageError, OptimizeOptions
from tests.imaging.samples import animated, jpeg_with_declared_size, pil, png_header_only, read, save

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("camera_3648x2736.jpg", "jpeg"), ("chelsea.png", "png"), ("rocket.jpg", "jpeg")],
)
def test_format_comes_from_the_bytes(name: str, fmt: str) -> None:
    assert sniff_format(read(name)) == fmt


def test_every_allowed_format_is_recognised_and_opens() -> None:
    photo = pil(read("chelsea.png")).convert("RGB")
    for fmt, expected in (("WEBP", "webp"), ("GIF", "gif"), ("TIFF", "tiff"), ("BMP", "bmp")):
        data = save(photo, fmt)
        assert sniff_format(data) == expected
        result = optimize(data, OptimizeOptions(format="png", max_size=100))
        assert (result.width, result.height) == (100, 67)
    avif = bytes(pyvips.Image.new_from_buffer(read("rocket.jpg"), "").heifsave_buffer(compression="av1"))
    assert sniff_format(avif) == "avif"
    assert optimize(avif, OptimizeOptions(max_size=64)).width <= 64


@pytest.mark.parametrize(
    "data",
    [SVG, b"%PDF-1.7\n...", b"hello world, not an image", b"\x00" * 100, b"P6\n10 10\n255\n" + b"\0" * 300],
)
def test_formats_outside_the_allow_list_are_refused(data: bytes) -> None:
    with pytest.raises(ImageError, match="not a supported image"):
        optimize(data, OptimizeOptions())


def test_untrusted_and_unlisted_loaders_are_blocked_in_libvips() -> None:
    with pytest.raises(pyvips.Error):
        pyvips.Image.svgload_buffer(SVG)
    with pytest.raises(pyvips.Error):
        pyvips.Image.new_from_buffer(SVG, "")


def test_empty_and_zero_sized() -> None:
    with pytest.raises(ImageError, match="empty"):
        optimize(b"", OptimizeOptions())
    with pytest.raises(ImageError):
        optimize(png_header_only(0, 10), OptimizeOptions())


def test_huge_declared_size_in_a_tiny_file_is_refused_from_the_header() -> None:
    for data in (png_header_only(100_000, 100_000), jpeg_with_declared_size(60_000, 60_000)):
        assert len(data) < 200_000
        started = time.monotonic()
        with pytest.raises(ImageError, match="MP limit"):
            probe(data)
        with pytest.raises(ImageError, match="MP limit"):
            enhance(data, EnhanceOptions())
        assert time.monotonic() - started < 1


def test_declared_size_under_the_limit_but_no_data_is_a_clear_error() -> None:
    data = jpeg_with_declared_size(6000, 6000)
    started = time.monotonic()
    with pytest.raises(ImageError, match="broken or truncated"):
        optimize(data, OptimizeOptions())
    with pytest.raises(ImageError, match="broken or truncated"):
        optimize(png_header_only(5000, 5000, idat=b"\x78\x9c\x03\x00"), OptimizeOptions())
    assert time.monotonic() - started < 10


def test_decompression_bomb_is_refused_by_the_pixel_limit() -> None:
    # A real PNG: 6000x6000 of one colour compresses to a few tens of kB.
    bomb = bytes(pyvips.Image.black(6000, 6000, bands=3).pngsave_buffer(compression=9))
    assert len(bomb) < 200_000
    with pytest.raises(ImageError, match="above the 20 MP limit"):
        optimize(bomb, OptimizeOptions(max_pixels=20_000_000))
    with pytest.raises(ImageError, match="above the 20 MP limit"):
        enhance(bomb, EnhanceOptions(max_pixels=20_000_000))


@pytest.mark.parametrize("name", ["camera_3648x2736.jpg", "chelsea.png"])
def test_truncated_files_are_a_clear_error(name: str) -> None:
    data = read(name)
    for cut in (len(data) // 2, 200):
        with pytest.raises(ImageError):
            optimize(data[:cut], OptimizeOptions(format="png", max_size=400))
        with pytest.raises(ImageError):
            enhance(data[:cut], EnhanceOptions(level=3))


def test_frame_cap_counts_from_the_header() -> None:
    data = animated("GIF", 6)
    assert probe(data).frames == 6
    with pytest.raises(ImageError, match="6 frames, above the limit of 5"):
        probe(data, max_frames=5)
    with pytest.raises(ImageError, match="frames"):
        enhance(data, EnhanceOptions(max_frames=5))


def test_heic_without_a_decoder_is_a_clear_error() -> None:
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    assert sniff_format(data) == "heic"
    with pytest.raises(ImageError, match="could not be read"):
        optimize(data, OptimizeOptions())


def test_bmp_header_checked_before_decoding() -> None:
    data = bytearray(save(pil(read("rocket.jpg")).convert("RGB"), "BMP"))
    data[18:22] = (50_000).to_bytes(4, "little")
    data[22:26] = (50_000).to_bytes(4, "little")
    with pytest.raises(ImageError, match="MP limit"):
        open_image(bytes(data))


def test_deadline_stops_a_long_computation() -> None:
    camera = read("camera_3648x2736.jpg")
    started = time.monotonic()
    with pytest.raises(ImageError, match="took longer than"):
        enhance(camera, EnhanceOptions(level=5, upscale=True, timeout_seconds=0.05))
    with pytest.raises(ImageError, match="took longer than"):
        optimize(camera, OptimizeOptions(format="png", quality="high", max_size=4000, timeout_seconds=0.05))
    assert time.monotonic() - started < 5


def test_a_png_cut_inside_its_header_is_called_broken() -> None:
    # libvips gives no reason of its own here, only "unable to call pngload_buffer".
    data = save(pil(read("rocket.jpg")).convert("RGB"), "PNG")[:20]
    with pytest.raises(ImageError) as caught:
        open_image(data)
    assert str(caught.value) == "the image could not be read: the data is broken or truncated"
