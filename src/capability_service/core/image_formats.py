"""Which image format a file is, told from its first bytes (magic numbers) without decoding anything.

Pure and dependency-free, so the download guard (`sources`) and the decoder (`imaging`) judge a file
by the same rules: a body the download lets through is one the decoder will try to open.
"""

from __future__ import annotations

IMAGE_FORMATS = ("jpeg", "png", "webp", "gif", "tiff", "avif", "heic", "bmp")
"""Every format `detect_image_format` can name, which is the service's allow-list of inputs."""

HEADER_BYTES = 32
"""Enough leading bytes for `detect_image_format` to tell every format apart (BMP needs 26)."""

# Major brands of the ISO base media `ftyp` box that announce a HEIF still image or sequence.
HEIF_BRANDS = frozenset({b"avif", b"avis", b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"})
_AVIF_BRANDS = (b"avif", b"avis")
# The `ftyp` box lists its brands near the start; a longer claimed size is not worth reading.
_FTYP_SCAN_LIMIT = 256
# A BMP file header (14 bytes) plus the start of the info header up to width and height.
_BMP_MIN_HEADER = 26


def detect_image_format(data: bytes) -> str | None:
    """The format the leading bytes of `data` announce (`"jpeg"`, `"png"`, ...), or None if none of ours.

    `data` may be the whole file or just its first bytes; `HEADER_BYTES` of them are enough. A HEIF
    file is `"avif"` when its `ftyp` box lists an AVIF brand (as major or compatible brand within the
    bytes given), `"heic"` otherwise.
    """
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= _BMP_MIN_HEADER:
        return "bmp"
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        box_size = int.from_bytes(head[0:4], "big")
        brands = data[8 : min(box_size, _FTYP_SCAN_LIMIT)]
        return "avif" if any(brand in brands for brand in _AVIF_BRANDS) else "heic"
    return None
