"""Format detection from magic bytes: real photos, re-encodings of them, and edge-case headers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import pyvips
from PIL import Image

from capability_service.core.image_formats import HEADER_BYTES, IMAGE_FORMATS, detect_image_format

DATA = Path(__file__).resolve().parent.parent / "data"


def _reencode(name: str, fmt: str) -> bytes:
    out = io.BytesIO()
    with Image.open(DATA / name) as image:
        image.convert("RGB").save(out, fmt)
    return out.getvalue()


def _ftyp(major: bytes, compatible: list[bytes], box_size: int | None = None) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    size = box_size if box_size is not None else 8 + len(body)
    # A `meta` box follows, as in a real file, so bytes after the ftyp box are not empty.
    return size.to_bytes(4, "big") + b"ftyp" + body + b"\x00\x00\x00\x21meta" + b"\x00" * 64


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("camera_3648x2736.jpg", "jpeg"),
        ("rocket.jpg", "jpeg"),
        ("grace_hopper.jpg", "jpeg"),
        ("chelsea.png", "png"),
        ("Minduka_Present_Blue_Pack.png", "png"),
    ],
)
def test_real_photos_are_recognised_from_the_whole_file_and_from_the_header(name: str, expected: str) -> None:
    data = (DATA / name).read_bytes()
    assert detect_image_format(data) == expected
    assert detect_image_format(data[:HEADER_BYTES]) == expected


@pytest.mark.parametrize(("fmt", "expected"), [("WEBP", "webp"), ("GIF", "gif"), ("TIFF", "tiff"), ("BMP", "bmp")])
def test_reencoded_photos_are_recognised(fmt: str, expected: str) -> None:
    data = _reencode("chelsea.png", fmt)
    assert detect_image_format(data) == expected
    # The download guard sees only the first HEADER_BYTES and must come to the same answer.
    assert detect_image_format(data[:HEADER_BYTES]) == expected


def test_avif_written_by_libvips_is_avif() -> None:
    photo = pyvips.Image.new_from_buffer((DATA / "rocket.jpg").read_bytes(), "")
    data = bytes(photo.heifsave_buffer(compression="av1"))
    assert detect_image_format(data) == "avif"
    assert detect_image_format(data[:HEADER_BYTES]) == "avif"


def test_big_endian_tiff_header() -> None:
    little = _reencode("rocket.jpg", "TIFF")
    assert little[:4] == b"II*\x00"
    assert detect_image_format(b"MM\x00*" + little[4:]) == "tiff"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (_ftyp(b"heic", [b"mif1", b"heic"]), "heic"),
        (_ftyp(b"heix", [b"mif1", b"heix"]), "heic"),
        (_ftyp(b"avif", [b"mif1", b"miaf"]), "avif"),
        (_ftyp(b"avis", [b"msf1", b"miaf"]), "avif"),
        # The major brand is generic; the compatible brands say it is AVIF.
        (_ftyp(b"mif1", [b"mif1", b"miaf", b"avif"]), "avif"),
        (_ftyp(b"msf1", [b"msf1", b"avis"]), "avif"),
        (_ftyp(b"mif1", [b"mif1", b"heic"]), "heic"),
        # A brand after the end the box declares belongs to the next box, not to this file's brands.
        (_ftyp(b"mif1", [b"mif1", b"miaf", b"avif"], box_size=24), "heic"),
    ],
)
def test_heif_brands_decide_between_avif_and_heic(header: bytes, expected: str) -> None:
    assert detect_image_format(header) == expected


def test_bmp_needs_the_header_up_to_width_and_height() -> None:
    data = _reencode("rocket.jpg", "BMP")
    assert detect_image_format(data[:26]) == "bmp"
    assert detect_image_format(data[:25]) is None
    assert detect_image_format(b"BM") is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b"<!DOCTYPE html><html><body>not found</body></html>",
        b'{"error": "not found"}',
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
        b"P6\n10 10\n255\n" + b"\0" * 300,
        b"\x00" * 100,
        # Near misses: the first bytes of a JPEG, a RIFF that is audio, an ISO media file that is video.
        b"\xff\xd8",
        b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32,
        _ftyp(b"isom", [b"isom", b"mp41"]),
        b"GIF90a" + b"\x00" * 32,
        b"\x89PNG\r\n" + b"\x00" * 32,
    ],
)
def test_other_content_is_not_an_image(data: bytes) -> None:
    assert detect_image_format(data) is None


def test_every_detected_format_is_in_the_allow_list() -> None:
    samples = [(DATA / "rocket.jpg").read_bytes(), (DATA / "chelsea.png").read_bytes()]
    samples += [_reencode("rocket.jpg", fmt) for fmt in ("WEBP", "GIF", "TIFF", "BMP")]
    samples += [_ftyp(b"heic", [b"mif1"]), _ftyp(b"avif", [b"mif1"])]
    found = {detect_image_format(data) for data in samples}
    assert found == set(IMAGE_FORMATS)
