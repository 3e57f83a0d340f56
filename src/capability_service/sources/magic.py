"""Is it an image? Decided from the first bytes, before a download is allowed to go on."""

from __future__ import annotations

from capability_service.core.image_formats import HEADER_BYTES, detect_image_format

# Enough bytes to tell every format apart.
MAGIC_BYTES = HEADER_BYTES


def image_kind(head: bytes) -> str | None:
    """The image format the first bytes announce (`"jpeg"`, `"png"`...), or None if not an image."""
    return detect_image_format(head)


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
