"""The storage interface: where result images are written and how their URLs are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class StorageError(Exception):
    """A write or read failed; the message says why in words a person can act on."""


class TransientStorageError(StorageError):
    """A failure the same call may not meet again shortly: the store unreachable, a 5xx, a full disk."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """Where one written object lives."""

    key: str
    url: str
    size: int
    content_type: str


class Storage(Protocol):
    """A place for result objects. Implementations must be safe to share between concurrent tasks."""

    backend: str

    async def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        """Write `data` under `key` (replacing any object there) and return where it can be fetched."""
        ...

    async def get(self, key: str) -> bytes:
        """Read an object back; raises `KeyError` when there is none and `StorageError` on failure."""
        ...

    async def url_for(self, key: str) -> str:
        """A URL a browser can fetch the object from (public or presigned)."""
        ...

    async def health(self) -> dict[str, Any]:
        """`{"healthy": bool, ...}` for `/api/v1/health`; never raises."""
        ...

    async def close(self) -> None:
        """Release connections and threads; called once at shutdown."""
        ...


@runtime_checkable
class KeyFromUrl(Protocol):
    """A storage that recognises its own result URLs, so sources can be read back without HTTP."""

    def key_from_url(self, url: str) -> str | None:
        """The key behind `url` if this storage handed it out, else None."""
        ...
