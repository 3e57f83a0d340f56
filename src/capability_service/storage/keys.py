"""Object keys for results: `ai-playground/{user_id}/{job_id}/{index}.{ext}`, safe for any ids."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_segment(value: str, *, fallback: str = "anonymous") -> str:
    """One path segment from a caller-chosen id: no separators, dots or odd characters reach a key.

    Two different ids never map to the same segment: whenever anything had to be replaced, a short
    hash of the original id is appended.
    """
    if not value:
        return fallback
    cleaned = _UNSAFE.sub("-", value).strip("-")[:64]
    if not cleaned:
        cleaned = fallback
    if cleaned != value:
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:10]
        cleaned = f"{cleaned}-{digest}"
    return cleaned


def result_key(user_id: str | None, job_id: str, index: int, ext: str) -> str:
    ext = _UNSAFE.sub("", ext.lower()) or "bin"
    user = safe_segment(user_id or "", fallback="anonymous")
    return f"ai-playground/{user}/{safe_segment(job_id, fallback='job')}/{index}.{ext}"
