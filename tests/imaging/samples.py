"""Test inputs derived at run time from the real photos in tests/data (never synthetic noise fields)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyvips
from PIL import Image

DATA = Path(__file__).resolve().parent.parent / "data"
GPS_LATITUDE = (55, 45, 21)


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def pil(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixels(data: bytes) -> npt.NDArray[np.uint8]:
    """Decoded pixels, as libvips sees them (no orientation applied)."""
    return np.asarray(pyvips.Image.new_from_buffer(data, "").numpy(), dtype=np.uint8)


def save(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0112] = orientation
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = tuple(float(v) for v in GPS_LATITUDE)
    gps[3] = "E"
    gps[4] = (37.0, 37.0, 6.0)
    return exif


XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="55,45.35N"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def photo_with_gps(name: str = "grace_hopper.jpg", quality: int = 90) -> bytes:
    image = pil(read(name)).convert("RGB")
    return save(image, "JPEG", quality=quality, exif=exif_with_gps(), xmp=XMP)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _tag_xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _tag_desc(text: str) -> bytes:
    ascii_text = text.encode() + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + b"\0" * 12 + b"\0" * 67


def adobe_rgb_profile() -> bytes:
    """An ICC v2 profile with the published Adobe RGB (1998) primaries (D50-adapted) and gamma 2.2."""
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0233) + b"\0\0"
    tags = [
        (b"desc", _tag_desc("Adobe RGB (1998) compatible")),
        (b"cprt", b"text\0\0\0\0" + b"No copyright, test profile\0"),
        (b"wtpt", _tag_xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _tag_xyz(0.60974, 0.31111, 0.01947)),
        (b"gXYZ", _tag_xyz(0.20528, 0.62567, 0.06087)),
        (b"bXYZ", _tag_xyz(0.14919, 0.06322, 0.74457)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, payload in tags:
        padded = payload + b"\0" * (-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(payload))
        body += padded
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def png_header_only(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A PNG that declares `width x height` but carries (almost) no image data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr)
    if idat is not None:
        body += chunk(b"IDAT", idat)
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def jpeg_with_declared_size(width: int, height: int) -> bytes:
    """A real JPEG whose SOF header is rewritten to declare another size (the data stays tiny)."""
    data = bytearray(read("rocket.jpg"))
    index = data.find(b"\xff\xc0")
    if index < 0:
        index = data.find(b"\xff\xc2")
    struct.pack_into(">HH", data, index + 5, height, width)
    return bytes(data)


def frames_of(name: str, count: int, size: int = 96) -> list[Image.Image]:
    """`count` distinct crops of a real photo, as RGB frames."""
    image = pil(read(name)).convert("RGB")
    step = max(1, (min(image.size) - size) // max(1, count))
    return [image.crop((i * step, i * step, i * step + size, i * step + size)) for i in range(count)]


def animated(fmt: str, count: int = 3) -> bytes:
    frames = frames_of("chelsea.png", count)
    params: dict[str, object] = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "PNG":
        params["default_image"] = False
    return save(frames[0], fmt, **params)
