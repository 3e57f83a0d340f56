"""Lossless removal of metadata (EXIF, XMP, IPTC, comments) from JPEG, PNG and WebP bytes.

Used when the source itself is smaller than any re-encode: the seller gets the original pixels, but
never the original's GPS position or camera details.
"""

from __future__ import annotations

import struct

from capability_service.imaging.types import ImageError

# JPEG markers kept: APP0 (JFIF), APP2 (ICC profile) and APP14 (Adobe colour transform) change how
# the pixels decode; every other APPn and COM only describe the photo.
_JPEG_KEEP_APP = {0xE0, 0xE2, 0xEE}
_PNG_DROP = {b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"}
_WEBP_DROP = {b"EXIF", b"XMP "}


def strip_metadata(data: bytes, fmt: str) -> bytes:
    """The same image without descriptive metadata; raises `ImageError` if the structure is broken."""
    try:
        if fmt == "jpeg":
            return _strip_jpeg(data)
        if fmt == "png":
            return _strip_png(data)
        if fmt == "webp":
            return _strip_webp(data)
    except (IndexError, struct.error):
        raise ImageError(f"the {fmt} structure is broken") from None
    raise ImageError(f"cannot strip metadata from {fmt}")


def _strip_jpeg(data: bytes) -> bytes:
    out = bytearray(data[:2])
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise ImageError("the jpeg structure is broken")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xDA:
            # Start of scan: entropy-coded data and everything after it is kept as is.
            out += data[pos:]
            return bytes(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out += data[pos : pos + 2]
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if end > len(data):
            raise ImageError("the jpeg structure is broken")
        is_app = 0xE0 <= marker <= 0xEF
        if not (marker == 0xFE or (is_app and marker not in _JPEG_KEEP_APP)):
            out += data[pos:end]
        pos = end
    raise ImageError("the jpeg has no image data")


def _strip_png(data: bytes) -> bytes:
    out = bytearray(data[:8])
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ImageError("the png structure is broken")
        if kind not in _PNG_DROP:
            out += data[pos:end]
        pos = end
        if kind == b"IEND":
            return bytes(out)
    raise ImageError("the png has no end chunk")


def _strip_webp(data: bytes) -> bytes:
    chunks = bytearray()
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        end = pos + 8 + length + (length & 1)
        if end > len(data):
            raise ImageError("the webp structure is broken")
        chunk = bytearray(data[pos:end])
        if kind == b"VP8X":
            # Clear the EXIF (0x08) and XMP (0x04) flags of the extended header.
            chunk[8] &= ~0x0C & 0xFF
        if kind not in _WEBP_DROP:
            chunks += chunk
        pos = end
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + bytes(chunks)
