"""Is it an image? Decided from the first bytes, before a download is allowed to go on."""

from __future__ import annotations

# Enough bytes to tell every format below apart.
MAGIC_BYTES = 16

_HEIF_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"}


def image_kind(head: bytes) -> str | None:
    """The image format the first bytes announce (`"jpeg"`, `"png"`...), or None if not an image."""
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
    if head[:2] == b"BM" and len(head) >= 14:
        return "bmp"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "avif" if head[8:12] in (b"avif", b"avis") else "heic"
    return None


def describe(head: bytes) -> str:
    """A short hint at what a non-image body is (`"an HTML page"`), or "" when there is nothing to say."""
    stripped = head.lstrip()[:15].lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    if stripped.startswith((b"{", b"[")):
        return "JSON"
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<svg"):
        return "XML/SVG"
    if not head:
        return "empty"
    return ""
