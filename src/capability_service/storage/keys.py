"""Object keys for results: `ai-playground/{tenant}/{user_id}/{job_id}/{index}.{ext}`, safe for any ids.

Each tenant's results live under their own segment, each user's under theirs inside it; a job without
a user writes under `-anonymous`, which no user id can produce (segments made from ids never start
with `-`), so no user can reach those results by calling themselves "anonymous".
"""

from __future__ import annotations

import hashlib
import re

# Every result key starts with this; a source naming a key outside it is not one of ours.
RESULT_PREFIX = "ai-playground"

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_HASHED = re.compile(r"-[0-9a-f]{10}$")
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def safe_segment(value: str, *, fallback: str = "anonymous") -> str:
    """One path segment from a caller-chosen id: no separators, dots or odd characters reach a key.

    Two different ids never map to the same segment: whenever anything had to be replaced, a short
    hash of the original id is appended, and an id that already ends like such a hash is hashed too,
    so a kept id can never equal a hashed one.
    """
    if not value:
        return fallback
    cleaned = _UNSAFE.sub("-", value).strip("-")[:64]
    if not cleaned:
        cleaned = fallback
    if cleaned != value or _HASHED.search(value):
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:10]
        cleaned = f"{cleaned}-{digest}"
    return cleaned


# The user segment of jobs without a user: `safe_segment` strips leading dashes, so no id maps to it.
NO_USER_SEGMENT = "-anonymous"


def user_segment(user_id: str | None) -> str:
    """The key segment of a user's results (`-anonymous` for jobs without a user)."""
    return safe_segment(user_id, fallback="user") if user_id else NO_USER_SEGMENT


def owner_prefix(tenant: str, user_id: str | None) -> str:
    """Where the results of one tenant's user (or its jobs without a user) live, ending in `/`."""
    return f"{RESULT_PREFIX}/{safe_segment(tenant, fallback='tenant')}/{user_segment(user_id)}/"


def result_key(tenant: str, user_id: str | None, job_id: str, index: int, ext: str) -> str:
    """The key of result `index` of a job; `ext` is the file extension without the dot."""
    if index < 0:
        raise ValueError("a result index is never negative")
    ext = re.sub(r"[^a-z0-9]", "", ext.lower())[:8] or "bin"
    return f"{owner_prefix(tenant, user_id)}{safe_segment(job_id, fallback='job')}/{index}.{ext}"


def is_result_key(key: str) -> bool:
    """True when `key` has the shape of a result key: our prefix, plain segments, no `..`."""
    if len(key) > 512:
        return False
    parts = key.split("/")
    if len(parts) < 2 or parts[0] != RESULT_PREFIX:
        return False
    return all(_KEY_SEGMENT.match(part) and ".." not in part for part in parts[1:])
